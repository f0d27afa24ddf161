//! A real PostgreSQL for tests: Debian's `postgresql` server binaries, a cluster made by
//! `initdb` in a temporary directory and run as an unprivileged user (PostgreSQL refuses to run
//! as root, and CI is root: then the cluster belongs to `nobody`), listening on a loopback port
//! with `trust` authentication. `shared()` is one cluster per test process (each test makes a
//! database of its own in it); `Postgres::start()` a cluster of the caller's own, for tests that
//! stop or restart it. The server is killed on drop, and with its test process (PDEATHSIG).
//! With CI=true a missing PostgreSQL is a failure; elsewhere the tests that need it skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The superuser of the test clusters.
pub const USER: &str = "xhu";

/// One PostgreSQL cluster.
pub struct Postgres {
    /// The cluster's directory (data in `data/`, its log in `log`).
    pub dir: PathBuf,
    /// Its loopback TCP port.
    pub port: u16,
    bin: PathBuf,
    child: std::sync::Mutex<Option<Child>>,
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The newest installed `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// True when PostgreSQL is installed. Without it: a failure under CI=true, else false (skip).
pub fn available() -> bool {
    if bin_dir().is_some() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("PostgreSQL is not installed (apt-get install postgresql) and CI=true");
    }
    eprintln!("skipped: PostgreSQL is not installed (/usr/lib/postgresql/*/bin/postgres)");
    false
}

/// The shared cluster of this test process, started on first use; `None`: not installed (skip).
pub fn shared() -> Option<&'static Postgres> {
    static SHARED: OnceLock<Option<Postgres>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if !available() {
                return None;
            }
            remove_stale_clusters();
            Some(on_lasting_thread(Postgres::start))
        })
        .as_ref()
}

/// `start()` run on a thread that lives as long as the test process, for a cluster shared by
/// the process's tests: PDEATHSIG stops the server when the thread that spawned it ends, and
/// a test's own thread ends with the test.
pub fn on_lasting_thread<T: Send + 'static>(start: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(start());
        loop {
            std::thread::park();
        }
    });
    receiver
        .recv()
        .expect("start a cluster on a lasting thread")
}

/// The shared cluster of a test process is never dropped (its server dies with the process):
/// removes the directories of clusters whose process is gone.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("xhu-pg-"))
            .and_then(|n| n.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `command` run as the cluster's owner: `nobody` when we are root, else ourselves; killed with
/// SIGKILL when the thread that started it ends.
fn as_owner(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    if nix::unistd::geteuid().is_root() {
        command.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    }
    command.args(["--pdeathsig=KILL", "--"]).arg(program);
    command
}

impl Postgres {
    /// A new cluster of the caller's own (panics when PostgreSQL is missing: check
    /// `available()` first).
    pub fn start() -> Postgres {
        let bin = bin_dir().expect("PostgreSQL installed");
        let n = DATABASES.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("xhu-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::User::from_name("nobody")
                .ok()
                .flatten()
                .expect("user nobody");
            nix::unistd::chown(&dir, Some(nobody.uid), Some(nobody.gid)).expect("chown");
        }
        let init = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .stdout(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = super::free_port();
        let postgres = Postgres {
            dir,
            port,
            bin,
            child: std::sync::Mutex::new(None),
        };
        postgres.resume();
        postgres
    }

    /// Starts the server (again) on the same data and port, and waits until it answers.
    pub fn resume(&self) {
        let log = std::fs::File::create(self.dir.join("log")).expect("log file");
        if nix::unistd::geteuid().is_root() {
            let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
            if let Some(nobody) = nobody {
                let _ = nix::unistd::chown(&self.dir.join("log"), Some(nobody.uid), None);
            }
        }
        // Durability is not under test here: no fsync (the bench runs with the defaults).
        let child = as_owner(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if postgres::Client::connect(&self.url("postgres"), postgres::NoTls).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: open connections are closed) and waits for it.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            // setpriv execs postgres: the child is the postmaster itself.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = child.wait();
        }
    }

    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// A new empty database; its URL.
    pub fn database(&self, tag: &str) -> String {
        let n = DATABASES.fetch_add(1, Ordering::SeqCst);
        let name = format!("{tag}_{n}");
        self.sql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs `sql` in the `postgres` database as the superuser; the rows, tab-separated text.
    pub fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        self.sql_in(&self.url("postgres"), sql)
    }

    /// Runs `sql` in the database at `url`; the rows as text (simple query protocol).
    pub fn sql_in(&self, url: &str, sql: &str) -> Vec<Vec<String>> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        client
            .simple_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("").to_string())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // Immediate shutdown: the postmaster takes its backends with it.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JID's quota lock, held by the test as another host would hold it: the same
/// `pg_advisory_xact_lock` key the PostgreSQL store takes (src/store/postgres.rs), inside an
/// open transaction, until `release`.
pub struct HeldJidLock {
    client: ::postgres::Client,
}

impl HeldJidLock {
    /// Takes `jid`'s lock on a connection of its own to `url`.
    pub fn take(url: &str, jid: &str) -> HeldJidLock {
        let mut client =
            ::postgres::Client::connect(url, ::postgres::NoTls).expect("connect to PostgreSQL");
        client.batch_execute("BEGIN").expect("begin");
        client
            .execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&jid],
            )
            .expect("take the JID's lock");
        HeldJidLock { client }
    }

    /// Ends the transaction, and with it the lock.
    pub fn release(mut self) {
        self.client.batch_execute("ROLLBACK").expect("rollback");
    }
}

/// Serves `env` with its upload root and `body` (the rest of a configuration, e.g. from
/// `standard_config`) on the PostgreSQL database at `url`; the file is `<name>.toml` in the
/// test directory.
pub fn serve_on(env: &super::Env, url: &str, name: &str, body: &str) -> super::Server {
    let config = env.dir.path.join(format!("{name}.toml"));
    let upload_root = env.upload_root.to_str().expect("a UTF-8 upload root");
    std::fs::write(
        &config,
        format!("upload_root = {upload_root:?}\ndatabase = {url:?}\n{body}"),
    )
    .expect("write the configuration");
    env.serve_with(&config)
}

// `check-config` on PostgreSQL (tests/postgres_check_config.rs, tests/postgres_tls.rs).

/// A config on `url` in `env`'s test directory.
pub fn config_on(env: &super::Env, url: &str) -> std::path::PathBuf {
    let path = env.dir.path.join("pg.toml");
    std::fs::write(
        &path,
        format!(
            "upload_root = {:?}\ndatabase = {url:?}\n{}",
            env.upload_root.to_str().expect("a UTF-8 upload root"),
            super::standard_config(super::ALLOW_ALL)
        ),
    )
    .expect("write the configuration");
    path
}

/// `check-config` on a config on `url` (`config_on`).
pub fn check_config(env: &super::Env, url: &str) -> std::process::Output {
    let config = config_on(env, url);
    env.run(&[
        "check-config",
        "--config",
        config.to_str().expect("a UTF-8 path"),
    ])
}

/// The one line check-config wrote on stderr, asserting it failed with status 1 and nothing
/// else went wrong.
pub fn refusal(output: &std::process::Output) -> String {
    let text = super::output_text(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

/// Its OK line, asserting it succeeded.
pub fn ok_line(output: &std::process::Output) -> String {
    let text = super::output_text(output);
    assert!(output.status.success(), "{text}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|l| l.contains(": OK ("))
        .unwrap_or_else(|| panic!("no OK line: {text}"))
        .to_string()
}
