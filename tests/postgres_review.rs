//! Review of the PostgreSQL store (issue 16) from outside: hostile or extreme input that
//! reaches its SQL through the real nginx and program, and failures around a commit. Each test
//! here failed before the fix it stands for (see the commit that added it).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use common::web::{self, Flavour, SECRET, Settings, Stack, curl, put_file_raw};

/// One host (nginx + program) on a new database of the shared cluster; `None`: nginx or
/// PostgreSQL missing (skip; a failure under CI=true).
fn host(rules: &'static str) -> Option<Stack> {
    if !web::available(Flavour::Nginx) {
        return None;
    }
    let cluster = common::postgres::shared()?;
    let settings = Settings {
        rules,
        database: Some(cluster.database("review")),
        ..Settings::default()
    };
    Some(Stack::start_with(Flavour::Nginx, &settings))
}

/// `len` lower-case letters and digits that do not compress (a fixed pseudo-random sequence).
fn incompressible(len: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            b"abcdefghijklmnopqrstuvwxyz0123456789"[(state >> 33) as usize % 36] as char
        })
        .collect()
}

/// A JID as long as the program accepts (a bare JID of up to 3071 bytes), made of characters
/// that do not compress, is a slot like any other: PostgreSQL's B-tree keys hold at most
/// about 2700 bytes, and a JID in one made the INSERT fail (500) where SQLite said yes.
#[test]
fn a_jid_as_long_as_accepted_gets_its_slot_and_its_quota() {
    let Some(host) = host("[[rules]]\nmatch = '.*'\nmax_total_size = 1000\n") else {
        return;
    };
    let jid = format!(
        "{}@example.org",
        incompressible(3071 - "@example.org".len())
    );
    assert_eq!(jid.len(), 3071);
    let (status, text) = host.ask_slot(&jid, "long.txt", 600);
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    // Its usage is found again by its JID: the quota holds for it too.
    let (status, text) = host.ask_slot(&jid, "more.txt", 600);
    assert_eq!(status, 403, "{text}");
    let (status, text) = host.ask_slot(&jid, "fits.txt", 400);
    assert_eq!(status, 200, "{text}");
}

/// What `CommitCutter` does to the next COMMIT of a transaction that wrote.
const PASS: u8 = 0;
/// Forward it, then cut the connection before the answer comes back: the server commits,
/// the program never hears so.
const CUT_AFTER: u8 = 1;
/// Cut the connection instead of forwarding it: the server rolls back.
const CUT_BEFORE: u8 = 2;

/// A TCP relay between the program and PostgreSQL that, once armed, cuts the connection at the
/// COMMIT of the next transaction that wrote a row (a `CommandComplete` of `INSERT 0 1` or
/// `UPDATE 1` came back since the last COMMIT): the connection dying between the decision and
/// its commit, or with the commit done and its answer lost.
struct CommitCutter {
    port: u16,
    armed: Arc<AtomicU8>,
}

impl CommitCutter {
    fn start(upstream: u16) -> CommitCutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicU8::new(PASS));
        let shared = armed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let wrote = Arc::new(AtomicBool::new(false));
                // Set once the connection is being cut: nothing more reaches the program.
                let cut = Arc::new(AtomicBool::new(false));
                let cutting = cut.clone();
                let ends = || (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (c, s) = ends();
                let (c2, s2) = ends();
                let flag = wrote.clone();
                // Server to program: notes the writes.
                std::thread::spawn(move || {
                    pump(s, c, |chunk| {
                        if contains(chunk, b"INSERT 0 1\0") || contains(chunk, b"UPDATE 1\0") {
                            flag.store(true, Ordering::SeqCst);
                        }
                        !cut.load(Ordering::SeqCst)
                    })
                });
                // Program to server: cuts at the COMMIT if armed.
                let armed = shared.clone();
                let (cut_client, cut_server) = ends();
                std::thread::spawn(move || {
                    pump(c2, s2.try_clone().unwrap(), |chunk| {
                        if !contains(chunk, b"Q\0\0\0\x0bCOMMIT\0") {
                            return true;
                        }
                        if !wrote.swap(false, Ordering::SeqCst) {
                            return true;
                        }
                        let mode = armed.swap(PASS, Ordering::SeqCst);
                        if mode != PASS {
                            cutting.store(true, Ordering::SeqCst);
                        }
                        if mode == CUT_AFTER {
                            let _ = (&s2).write_all(chunk);
                            // Give the server the time to commit before the connection ends
                            // (it reads the COMMIT before it could see the end anyway).
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        if mode != PASS {
                            let _ = cut_client.shutdown(Shutdown::Both);
                            let _ = cut_server.shutdown(Shutdown::Both);
                            return false;
                        }
                        true
                    })
                });
            }
        });
        CommitCutter { port, armed }
    }

    fn arm(&self, mode: u8) {
        self.armed.store(mode, Ordering::SeqCst);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Copies `from` to `to`, each chunk forwarded only while `look` says so.
fn pump(mut from: TcpStream, mut to: TcpStream, mut look: impl FnMut(&[u8]) -> bool) {
    let mut buffer = [0u8; 65536];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !look(&buffer[..n]) || to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// One host whose program reaches PostgreSQL through a `CommitCutter`; also the database's own
/// URL, for the test to look.
fn host_behind_cutter() -> Option<(Stack, CommitCutter, String)> {
    host_behind_cutter_on(Flavour::Nginx)
}

/// `host_behind_cutter` with the web server `flavour`.
fn host_behind_cutter_on(flavour: Flavour) -> Option<(Stack, CommitCutter, String)> {
    if !web::available(flavour) {
        return None;
    }
    let cluster = common::postgres::shared()?;
    let direct = cluster.database("cut");
    let cutter = CommitCutter::start(cluster.port);
    let settings = Settings {
        database: Some(direct.replace(
            &format!(":{}/", cluster.port),
            &format!(":{}/", cutter.port),
        )),
        ..Settings::default()
    };
    let host = Stack::start_with(flavour, &settings);
    // Every process of the program up and its schema checked before the cutter is armed
    // (mod_fcgid starts the access checker at the first PUT): one slot, uploaded.
    let warm = host.slot("warm@example.org", "warm.txt", 4, "text/plain");
    let file = host.scratch_file("warm.txt", b"warm");
    let put = put_file_raw(&warm.put_url, &file, &["-H", "Content-Type: text/plain"]);
    assert_eq!(put.status, 201, "warming up: {put:?}\n{}", host.logs());
    Some((host, cutter, direct))
}

/// The slots of the JID the tests cut the connection for.
const ALICE_SLOTS: &str = "SELECT token FROM slot WHERE jid = 'alice@example.org'";

fn rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    common::postgres::shared().unwrap().sql_in(url, sql)
}

/// The connection dies after PostgreSQL committed the PUT's authorization but before the
/// program heard so. The slot's one PUT is spent: answering 503 would leave a client whose
/// retry gets 409 forever ("refused and recorded"). The program asks the server what became of
/// the transaction, and says yes: nginx stores the body.
#[test]
fn a_put_whose_commit_answer_is_lost_is_allowed_not_spent() {
    let Some((host, cutter, direct)) = host_behind_cutter() else {
        return;
    };
    let body = b"hello";
    let slot = host.slot("alice@example.org", "a.txt", 5, "text/plain");
    let file = host.scratch_file("a.txt", body);
    cutter.arm(CUT_AFTER);
    let put = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    let authorized = rows(
        &direct,
        &format!(
            "SELECT authorized IS NOT NULL FROM slot WHERE token = '{}'",
            slot.token
        ),
    );
    assert_eq!(authorized, [["t".to_string()]], "the server committed");
    assert_eq!(put.status, 201, "{put:?}\n{}", host.logs());
    assert_eq!(
        std::fs::read(host.stored(&slot.token, &slot.name)).unwrap(),
        body
    );
}

/// The same for a slot request: the slot recorded, so the client gets it (not a 503 for a slot
/// that counts in its quota until `put_timeout`).
#[test]
fn a_slot_whose_commit_answer_is_lost_is_handed_out() {
    let Some((host, cutter, direct)) = host_behind_cutter() else {
        return;
    };
    cutter.arm(CUT_AFTER);
    let (status, text) = host.ask_slot("alice@example.org", "b.txt", 5);
    let recorded = rows(&direct, ALICE_SLOTS);
    assert_eq!(recorded.len(), 1, "the server committed");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    assert!(text.contains(&recorded[0][0]), "{text}");
}

/// The connection dies before the COMMIT of a slot reached the server: it rolls back, the
/// client gets a 503, and nothing is recorded (the program, unsure, asked the server).
#[test]
fn a_slot_whose_commit_never_arrived_is_a_503_and_nothing_is_recorded() {
    let Some((host, cutter, direct)) = host_behind_cutter() else {
        return;
    };
    cutter.arm(CUT_BEFORE);
    let (status, text) = host.ask_slot("alice@example.org", "d.txt", 5);
    assert_eq!(
        (status, text.as_str()),
        (503, "database unavailable, try again\n")
    );
    assert!(rows(&direct, ALICE_SLOTS).is_empty());
    let (status, text) = host.ask_slot("alice@example.org", "d.txt", 5);
    assert_eq!(status, 200, "{text}");
}

/// The connection dies before the COMMIT of a PUT's authorization reached the server: it rolls
/// back, the client gets the 503 and its line (not nginx's HTML 500 for a subrequest that
/// answered 503, nor mod_fcgid's 401), nothing is stored, and the slot's PUT may be retried.
fn a_put_whose_commit_never_arrived_is_a_503_and_may_be_retried(flavour: Flavour) {
    let Some((host, cutter, direct)) = host_behind_cutter_on(flavour) else {
        return;
    };
    let slot = host.slot("alice@example.org", "c.txt", 5, "text/plain");
    let file = host.scratch_file("c.txt", b"hello");
    cutter.arm(CUT_BEFORE);
    let put = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    assert_eq!(put.status, 503, "{put:?}\n{}", host.logs());
    assert_eq!(
        String::from_utf8_lossy(&put.body).trim_end(),
        "database unavailable, try again"
    );
    let authorized = rows(
        &direct,
        &format!(
            "SELECT authorized IS NULL FROM slot WHERE token = '{}'",
            slot.token
        ),
    );
    assert_eq!(authorized, [["t".to_string()]], "rolled back");
    assert!(!host.stored(&slot.token, &slot.name).exists());
    let again = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    assert_eq!(again.status, 201, "{again:?}\n{}", host.logs());
}

#[test]
fn nginx_a_put_whose_commit_never_arrived_is_a_503_and_may_be_retried() {
    a_put_whose_commit_never_arrived_is_a_503_and_may_be_retried(Flavour::Nginx);
}

#[test]
fn apache_a_put_whose_commit_never_arrived_is_a_503_and_may_be_retried() {
    a_put_whose_commit_never_arrived_is_a_503_and_may_be_retried(Flavour::ApacheDav);
}

/// Eight processes (here: eight stores, each with its own pool and its own "migrated" flag, as
/// separate processes have) opening one empty database at once: one migrates, the others wait
/// for its lock and find the schema current; none fails.
#[test]
fn hosts_starting_at_once_on_an_empty_database_migrate_it_once() {
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let url = cluster.database("migrate");
    let location = xmpp_http_upload::store::Location::Postgres(url.clone());
    let start = Arc::new(std::sync::Barrier::new(8));
    let opened: Vec<_> = (0..8)
        .map(|_| {
            let (location, start) = (location.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                xmpp_http_upload::store::Store::open(&location).map(|_| ())
            })
        })
        .collect();
    for handle in opened {
        if let Err(e) = handle.join().unwrap() {
            panic!("a host failed to start: {e}");
        }
    }
    assert_eq!(
        rows(&url, "SELECT version FROM schema_version"),
        [["2".to_string()]]
    );
}

/// `cleanup` run on two hosts at the same moment (both timers left enabled): both succeed,
/// neither reports a failure, and every file both hosts stored goes.
#[test]
fn cleanup_on_two_hosts_at_once_removes_everything_without_errors() {
    if !web::available(Flavour::Nginx) {
        return;
    }
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let files = common::TempDir::new();
    let settings = Settings {
        retention: "1s",
        database: Some(cluster.database("cleanups")),
        upload_root: Some(files.path.clone()),
        ..Settings::default()
    };
    let a = Stack::start_with(Flavour::Nginx, &settings);
    let b = Stack::start_with(Flavour::Nginx, &settings);
    let mut stored = Vec::new();
    for i in 0..20 {
        let host = if i % 2 == 0 { &a } else { &b };
        let name = format!("f{i}.txt");
        let slot = host.slot("alice@example.org", &name, 5, "text/plain");
        let file = host.scratch_file(&name, b"hello");
        let put = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
        assert_eq!(put.status, 201, "{put:?}");
        stored.push(host.stored(&slot.token, &slot.name));
    }
    let gone = common::wait_until(Duration::from_secs(30), || {
        let outputs = std::thread::scope(|scope| {
            let runs = [&a, &b].map(|host| scope.spawn(|| host.run_program("cleanup")));
            runs.map(|run| run.join().unwrap())
        });
        for output in outputs {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(output.status.success(), "cleanup failed: {said}");
            assert!(
                !said.contains("ERROR") && !said.contains("WARN") && !said.contains("NOTICE"),
                "cleanup complained: {said}"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        stored.iter().all(|p| !p.exists())
    });
    assert!(gone, "left: {stored:?}");
    let left: Vec<_> = std::fs::read_dir(&files.path).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in the shared directory: {left:?}");
}

/// A PostgreSQL that answers slowly (here: every INSERT of a slot sleeps an hour, as a server
/// stuck on its disk would): the request gets a 503 within the program's bounded wait, instead
/// of holding one of the program's few workers for as long as the server takes.
#[test]
fn a_postgres_that_does_not_answer_is_a_503_not_a_hang() {
    let Some(host) = host("") else {
        return;
    };
    let url = database_of(&host);
    rows(
        &url,
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(3600); RETURN NEW; END $$;
         CREATE TRIGGER stall BEFORE INSERT ON slot FOR EACH ROW EXECUTE FUNCTION stall();",
    );
    let answer = curl(&[
        "--max-time",
        "50",
        &format!(
            "{}/http_upload/slot/?jid=alice%40example.org&name=slow.txt&size=5&secret={SECRET}",
            host.slot_api
        ),
    ]);
    assert_eq!(answer.status, 503, "{answer:?}\n{}", host.logs());
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        "server busy, try again\n"
    );
    rows(&url, "DROP TRIGGER stall ON slot");
    let (status, text) = host.ask_slot("alice@example.org", "fast.txt", 5);
    assert_eq!(status, 200, "{text}");
}

/// The `database` URL of `host`'s program, read back from its configuration.
fn database_of(host: &Stack) -> String {
    let config = std::fs::read_to_string(&host.config).unwrap();
    config
        .lines()
        .find_map(|line| line.strip_prefix("database = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no database in {config}"))
}

/// The admin commands on PostgreSQL, as an admin runs them next to a serving host: `usage`,
/// `files`, `check` and `purge` of a JID find what was uploaded through nginx, and `purge`
/// removes its file.
#[test]
fn admin_commands_work_on_postgres() {
    let Some(host) = host("") else {
        return;
    };
    let slot = host.slot("bob@example.org", "report.txt", 5, "text/plain");
    let file = host.scratch_file("report.txt", b"hello");
    let put = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    assert_eq!(put.status, 201, "{put:?}");
    let run = |args: &[&str]| {
        let output = host.run_program_with(args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{args:?}: {said}");
        said
    };
    let usage = run(&["usage"]);
    assert!(usage.contains("bob@example.org"), "{usage}");
    let files = run(&["files", "--jid", "Bob@Example.org"]);
    assert!(files.contains("report.txt"), "{files}");
    // (nginx wrote the file: cleanup confirms the upload, else `check` reports it unconfirmed)
    host.cleanup();
    let check = run(&["check"]);
    assert!(!check.contains("ERROR"), "{check}");
    let purged = run(&["purge", "--jid", "bob@example.org"]);
    assert!(purged.contains("report.txt"), "{purged}");
    assert!(!host.stored(&slot.token, &slot.name).exists());
    let files = run(&["files", "--jid", "bob@example.org"]);
    assert!(!files.contains("report.txt"), "{files}");
}

/// NUL bytes, quotes and backslashes from outside never reach PostgreSQL as text it refuses
/// (it takes no NUL in `text`: that would be a 500): a JID with one is a 400, a name with one
/// is made safe, a token with one is no slot (404, or nginx's own 400); quotes are parameters like any character.
#[test]
fn nul_bytes_and_quotes_from_outside_are_clear_answers() {
    let Some(host) = host("") else {
        return;
    };
    let slot_api = |query: &str| {
        let answer = curl(&[&format!(
            "{}/http_upload/slot/?{query}&size=5&secret={SECRET}",
            host.slot_api
        )]);
        (
            answer.status,
            String::from_utf8_lossy(&answer.body).into_owned(),
        )
    };
    let (status, text) = slot_api("jid=a%00b%40example.org&name=x.txt");
    assert_eq!(status, 400, "{text}");
    let (status, text) = slot_api("jid=o%27brien%40example.org&name=a%00b%27%5C.txt");
    assert_eq!(status, 200, "{text}\n{}", host.logs());
    assert!(text.contains("/a_b__.txt"), "{text}");
    let file = host.scratch_file("x.txt", b"hello");
    for path in ["%00", "abc%00def", "%27%3B--"] {
        let put = put_file_raw(
            &format!("{}/upload/{path}/x.txt", host.public),
            &file,
            &["-H", "Content-Type: text/plain"],
        );
        // (nginx itself answers 400 to a `%00` in a path; the rest is no slot: 404)
        assert!(matches!(put.status, 400 | 404), "{path}: {put:?}");
    }
    assert!(!host.logs().contains("ERROR"), "{}", host.logs());
}

/// More workers than the pool has connections (`workers = 40`, 16 connections), all asking
/// for one JID whose advisory lock another host holds for longer than the program waits: 16
/// requests wait on the lock, the others for a connection. Every request ends with a slot or
/// a one-line 503 (the lock not had within `lock_timeout`, or no connection free within the
/// pool's wait), never a 500 or a hang; once the lock is free, the next request gets its slot.
#[test]
fn an_exhausted_pool_is_a_bounded_503() {
    let Some(cluster) = common::postgres::shared() else {
        return;
    };
    let url = cluster.database("pool");
    let env = common::Env::new(&common::standard_config(common::ALLOW_ALL));
    let server = common::postgres::serve_on(
        &env,
        &url,
        "pool",
        &common::standard_config_with(
            "workers = 40",
            "[[rules]]\nmatch = '.*'\nmax_total_size = \"1 GiB\"\n",
        ),
    );
    let lock = common::postgres::HeldJidLock::take(&url, "user@example.org");
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..24)
            .map(|i| {
                let address = server.address.clone();
                scope.spawn(move || {
                    let params = common::fcgi::request_params(
                        "GET",
                        &format!("/http_upload/slot/?jid=user%40example.org&name=f{i}.txt&size=5"),
                        &[],
                    );
                    let answer = common::fcgi::request(
                        &address,
                        common::fcgi::Role::Responder,
                        &params,
                        common::fcgi::Body::Empty,
                    )
                    .unwrap();
                    (answer.status, answer.text())
                })
            })
            .collect();
        // Held past the program's wait for the lock, then let go.
        std::thread::sleep(Duration::from_secs(12));
        lock.release();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (status, text) in &answers {
        assert!(
            *status == 200 || (*status == 503 && text == "server busy, try again\n"),
            "{status} {text:?}\n{}",
            server.log()
        );
    }
    assert!(
        answers.iter().any(|(status, _)| *status == 503),
        "some waited past the bound: {answers:?}"
    );
    let next = server.slot_request("jid=user%40example.org&name=next.txt&size=5");
    assert_eq!(next.status, 200, "{next}");
}
