//! Real web servers for the tests that go through them (`common::web`): nginx and Apache (mod_fcgid + mod_dav, and the
//! shared-hosting CGI variant) started on loopback high ports from the configurations shipped in
//! `nginx/` and `apache/`, with only their paths and ports templated, and the built program
//! behind them. Requests are made with `curl`, as a client would.
//!
//! What this module deliberately does not do: write its own web-server configuration beyond the
//! process-level frame (pid file, logs, modules, temp directories) that the packaged
//! `nginx.conf` / `apache2.conf` would give; everything that decides about a request comes from
//! the shipped files.
//!
//! Each `Stack` owns a temporary directory, its ports and its processes; dropping it stops the
//! processes and removes the directory (kept, with its logs printed, when the test panicked).
//! The pieces every test shares (`TempDir`, `wait_until`, `peak_rss`, `Slot`, `BIN`) are the
//! ones of `tests/common/mod.rs`.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{BIN, Slot, TempDir, peak_rss, url_path, wait_until};

/// The repository, where the shipped configurations live.
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The slot API secret of every test config.
pub const SECRET: &str = "web-test-secret-0123456789";
/// The `[[external]]` (HMAC) secret of every test config, for the prefix [`HMAC_PREFIX`].
pub const HMAC_SECRET: &str = "web-test-hmac-secret-äöü-0123456789";
/// The `[[external]]` prefix: the one the shipped web-server configs route (`/share/`).
pub const HMAC_PREFIX: &str = "/share";
/// The `max_file_size` of the `[[external]]` prefix in every test config.
pub const HMAC_MAX: u64 = 1024 * 1024;
/// The `[[file_share]]` (JWT) secret of every test config, for the prefix [`JWT_PREFIX`].
pub const JWT_SECRET: &str = "web-test-jwt-secret-0123456789";
/// The `[[file_share]]` prefix: the one the shipped web-server configs route (`/file_share/`).
pub const JWT_PREFIX: &str = "/file_share";
/// Debian's Apache modules.
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";

/// Which web server and mode a stack runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// nginx: `auth_request` to the program on a Unix socket, `dav_methods PUT` writes.
    Nginx,
    /// Apache: mod_fcgid runs the program as access checker and slot API, mod_dav writes.
    ApacheDav,
    /// Apache with only `.htaccess` and CGI: the program receives PUTs itself.
    ApacheCgi,
}

/// What a refused PUT looks like from the client, per flavour.
#[derive(Clone, Copy, Debug)]
pub enum Refused {
    /// The slot is unknown.
    Unknown,
    /// The file is there already (reused slot, overwrite attempt).
    Exists,
    /// The slot is older than `put_timeout`.
    Expired,
    /// Content-Length larger than the slot's size.
    TooLarge,
    /// Content-Type other than the slot's.
    WrongType,
}

impl Flavour {
    /// The status a client sees for a refused PUT: the program's own, through every flavour
    /// (issue 11, item 9). nginx answers it from the program's XHU-Status header
    /// (`@xmpp_http_upload_refused`), Apache through its ErrorDocument for mod_fcgid's 401
    /// (`/_xmpp_http_upload_refused/`); the CGI program answers for itself.
    pub fn refused_status(self, why: Refused) -> u16 {
        match why {
            Refused::Unknown => 404,
            Refused::Exists => 409,
            Refused::Expired => 410,
            Refused::TooLarge => 413,
            Refused::WrongType => 415,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Flavour::Nginx => "nginx",
            Flavour::ApacheDav => "apache-dav",
            Flavour::ApacheCgi => "apache-cgi",
        }
    }
}

/// Finds the external programs a flavour needs. When one is missing: with `CI=true` the test
/// fails, otherwise it is skipped with a message (returns `false`).
pub fn available(flavour: Flavour) -> bool {
    let mut missing = Vec::new();
    for tool in ["curl", "openssl"] {
        if which(tool).is_none() {
            missing.push(tool.to_string());
        }
    }
    match flavour {
        Flavour::Nginx => {
            if nginx_binary().is_none() {
                missing.push("nginx".into());
            }
        }
        Flavour::ApacheDav | Flavour::ApacheCgi => {
            if apache_binary().is_none() {
                missing.push("apache2".into());
            }
            let modules: &[&str] = if flavour == Flavour::ApacheDav {
                &["mod_fcgid.so", "mod_dav.so", "mod_dav_fs.so", "mod_ssl.so"]
            } else {
                &["mod_cgid.so"]
            };
            for module in modules {
                if !Path::new(APACHE_MODULES).join(module).exists() {
                    missing.push(format!("{APACHE_MODULES}/{module}"));
                }
            }
        }
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{}: missing {} (Debian: apt-get install nginx-light apache2 libapache2-mod-fcgid curl openssl)",
        flavour.label(),
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("SKIPPED {message}");
    false
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

fn nginx_binary() -> Option<PathBuf> {
    which("nginx")
}

fn apache_binary() -> Option<PathBuf> {
    which("apache2").or_else(|| which("httpd"))
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// uid and gid of a user from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == user)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

/// A child process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    /// Takes charge of a process the test started itself.
    pub fn adopt(name: &'static str, child: Child) -> Process {
        Process { name, child }
    }

    fn spawn(name: &'static str, command: &mut Command, log: &Path) -> Process {
        Process::spawn_with_stdin(name, command, log, Stdio::null())
    }

    fn spawn_with_stdin(
        name: &'static str,
        command: &mut Command,
        log: &Path,
        stdin: Stdio,
    ) -> Process {
        let log = File::create(log).expect("create log file");
        let child = command
            .stdin(stdin)
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { name, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 for a web server (`super::free_port`).
pub fn unused_port() -> u16 {
    super::free_port()
}

/// True when something accepts connections on 127.0.0.1:`port`.
pub fn port_is_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// `text` with each `from` replaced by its `to`; a `from` that is missing fails the test, so
/// that a changed shipped file cannot silently escape the templating.
pub fn template(text: &str, what: &str, replacements: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (from, to) in replacements {
        assert!(
            out.contains(from),
            "{what}: expected {from:?} in the shipped file (templating anchor)"
        );
        out = out.replace(from, to);
    }
    out
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent dir");
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read_shipped(relative: &str) -> String {
    let path = Path::new(REPO).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Settings of the program's config that tests vary.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `put_timeout`, e.g. `"360s"`.
    pub put_timeout: &'static str,
    /// `retention`, e.g. `"30d"`.
    pub retention: &'static str,
    /// `[[rules]]` placed before the default ones (`@example.org` allowed, the rest denied).
    pub rules: &'static str,
    /// What the admin's web server has beside our site (none by default).
    pub around: Surroundings,
    /// `ApacheCgi` only: how the host runs CGI programs (mod_cgid under mpm_event by default).
    pub cgi: CgiRunner,
    /// `database` instead of the stack's own SQLite file (e.g. a `postgres://` URL shared by
    /// several stacks standing in for several hosts).
    pub database: Option<String>,
    /// An upload root outside the stack's directory (shared by several stacks, as a shared
    /// file system is by several hosts); nginx only.
    pub upload_root: Option<PathBuf>,
}

/// How a shared host's Apache runs CGI programs (`Flavour::ApacheCgi`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgiRunner {
    /// mod_cgid under mpm_event: a CGI daemon forks the programs (Debian's default).
    #[default]
    Cgid,
    /// mod_cgi under mpm_prefork: each Apache child forks the program itself (hosts with
    /// mod_php, which needs prefork).
    PreforkCgi,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            put_timeout: "360s",
            retention: "30d",
            rules: "",
            around: Surroundings::default(),
            cgi: CgiRunner::default(),
            database: None,
            upload_root: None,
        }
    }
}

/// What an admin's web server may hold beside the shipped site, for tests that show the site
/// holds its ground against it (PHP handlers, a `location ~ \.php$`...).
#[derive(Clone, Debug, Default)]
pub struct Surroundings {
    /// Apache: more modules to load, as (module name, file in Debian's modules directory).
    pub apache_modules: Vec<(&'static str, &'static str)>,
    /// Apache: server-level configuration, read before the site (as conf-enabled/ is);
    /// `@ROOT@` stands for the stack's directory (the document root of `ApacheCgi` is
    /// `@ROOT@/htdocs`).
    pub apache_server: String,
    /// nginx: lines put into the site's public `server` block, before its locations.
    pub nginx_server: String,
}

/// A running web server with the program behind it, in its own directory.
pub struct Stack {
    /// Which one.
    pub flavour: Flavour,
    /// The test directory (kept on panic).
    pub dir: TempDir,
    /// The upload root.
    pub upload_root: PathBuf,
    /// `https://127.0.0.1:<port>` (nginx, Apache+DAV) or `http://...` (CGI): uploads, downloads,
    /// and the slot API for remote XMPP servers.
    pub public: String,
    /// The slot API for an XMPP server on the same machine (loopback listener).
    pub slot_api: String,
    /// The program's config file.
    pub config: PathBuf,
    /// The user Apache runs the program as, when the tests run as root.
    web_user: Option<&'static str>,
    /// The program's own process, when it is not started by the web server.
    program: Option<Process>,
    server: Option<Process>,
    logs: Vec<PathBuf>,
    /// What the admin's server has beside the site.
    around: Surroundings,
}

impl Stack {
    /// Starts `flavour` with the default settings.
    pub fn start(flavour: Flavour) -> Stack {
        Stack::start_with(flavour, &Settings::default())
    }

    /// Starts `flavour`: writes the program's config, templates the shipped web-server files,
    /// starts the program (nginx only) and the web server, and waits until they answer.
    pub fn start_with(flavour: Flavour, settings: &Settings) -> Stack {
        let dir = TempDir::labelled(flavour.label());
        let root = dir.path.clone();
        let public_port = unused_port();
        let slot_port = unused_port();
        let upload_root = match (flavour, &settings.upload_root) {
            (Flavour::Nginx, Some(shared)) => shared.clone(),
            (Flavour::ApacheCgi, _) => root.join("htdocs/upload"),
            _ => root.join("files"),
        };
        let scheme = if flavour == Flavour::ApacheCgi {
            "http"
        } else {
            "https"
        };
        let public = format!("{scheme}://127.0.0.1:{public_port}");
        let slot_api = match flavour {
            // One host for everything on shared hosting.
            Flavour::ApacheCgi => public.clone(),
            _ => format!("http://127.0.0.1:{slot_port}"),
        };
        let mut stack = Stack {
            flavour,
            dir,
            upload_root: upload_root.clone(),
            public: public.clone(),
            slot_api,
            config: root.join("config.toml"),
            web_user: None,
            program: None,
            server: None,
            logs: Vec::new(),
            around: settings.around.clone(),
        };
        fs::create_dir_all(&upload_root).expect("create upload root");
        fs::create_dir_all(root.join("db")).expect("create db dir");
        let config = root.join("config.toml");
        write(
            &config,
            &program_config(&upload_root, &root, &public, settings),
        );
        if flavour != Flavour::ApacheCgi {
            make_certificate(&root);
        }
        match flavour {
            Flavour::Nginx => stack.start_nginx(&config, public_port, slot_port),
            Flavour::ApacheDav => stack.start_apache_dav(&config, public_port, slot_port),
            Flavour::ApacheCgi => stack.start_apache_cgi(&config, public_port, settings.cgi),
        }
        stack
    }

    fn start_nginx(&mut self, config: &Path, public_port: u16, slot_port: u16) {
        let root = self.dir.path.clone();
        let socket = root.join("fcgi.sock");
        let program_log = root.join("program.log");
        // As nginx/systemd/xmpp-http-upload.socket does it: the listening socket is made
        // before the program starts and handed over as fd 0 (`StandardInput=socket`).
        let listener = UnixListener::bind(&socket).expect("bind the FastCGI socket");
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID");
        self.program = Some(Process::spawn_with_stdin(
            "xmpp-http-upload",
            &mut command,
            &program_log,
            Stdio::from(OwnedFd::from(listener)),
        ));
        self.logs.push(program_log);

        for snippet in fs::read_dir(Path::new(REPO).join("nginx/snippets")).expect("nginx/snippets")
        {
            let snippet = snippet.expect("snippet entry").path();
            let name = snippet.file_name().expect("snippet name");
            fs::create_dir_all(root.join("snippets")).expect("create snippets dir");
            fs::copy(&snippet, root.join("snippets").join(name)).expect("copy snippet");
        }
        let site = template(
            &read_shipped("nginx/xmpp-http-upload.conf"),
            "nginx/xmpp-http-upload.conf",
            &[
                (
                    "listen 443 ssl http2;",
                    format!("listen 127.0.0.1:{public_port} ssl http2;"),
                ),
                ("    listen [::]:443 ssl http2;\n", String::new()),
                (
                    "listen 127.0.0.1:9363;",
                    format!("listen 127.0.0.1:{slot_port};"),
                ),
                (
                    "/etc/letsencrypt/live/upload.example.org/fullchain.pem",
                    root.join("cert.pem").display().to_string(),
                ),
                (
                    "/etc/letsencrypt/live/upload.example.org/privkey.pem",
                    root.join("key.pem").display().to_string(),
                ),
                (
                    "unix:/run/xmpp-http-upload/fcgi.sock",
                    format!("unix:{}", socket.display()),
                ),
                (
                    "/var/lib/xmpp-http-upload/files/",
                    format!("{}/", self.upload_root.display()),
                ),
                (
                    "    disable_symlinks on;\n",
                    format!("    disable_symlinks on;\n{}\n", self.around.nginx_server),
                ),
            ],
        );
        write(&root.join("site.conf"), &site);
        // What Debian's /etc/nginx/nginx.conf gives a site, minus the system paths. One process
        // (`master_process off`): nothing survives a kill, and no `user` switch is needed.
        let r = root.display();
        let main = format!(
            "daemon off;\nmaster_process off;\npid {r}/nginx.pid;\nerror_log {r}/nginx-error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  \
             sendfile on;\n  access_log {r}/nginx-access.log;\n  \
             client_body_temp_path {r}/nginx-body;\n  fastcgi_temp_path {r}/nginx-fastcgi;\n  \
             proxy_temp_path {r}/nginx-proxy;\n  scgi_temp_path {r}/nginx-scgi;\n  \
             uwsgi_temp_path {r}/nginx-uwsgi;\n  include {r}/site.conf;\n}}\n"
        );
        write(&root.join("nginx.conf"), &main);
        let nginx = nginx_binary().expect("nginx was found before");
        self.logs.push(root.join("nginx-error.log"));
        self.logs.push(root.join("nginx.out"));
        let check = Command::new(&nginx)
            .arg("-t")
            .arg("-p")
            .arg(format!("{r}/"))
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .output()
            .expect("run nginx -t");
        if !check.status.success() {
            self.fail(&format!(
                "nginx -t refused the shipped config:\n{}",
                String::from_utf8_lossy(&check.stderr)
            ));
        }
        let mut command = Command::new(&nginx);
        command
            .arg("-p")
            .arg(format!("{r}/"))
            .arg("-c")
            .arg(root.join("nginx.conf"));
        self.server = Some(Process::spawn(
            "nginx",
            &mut command,
            &root.join("nginx.out"),
        ));
        self.wait_for_ports(&[public_port, slot_port]);
    }

    fn start_apache_dav(&mut self, config: &Path, public_port: u16, slot_port: u16) {
        let root = self.dir.path.clone();
        // mod_fcgid runs the program as Apache's user: give it a copy it can execute.
        let program = root.join("bin/xmpp-http-upload");
        install_binary(&program);
        let site = template(
            &read_shipped("apache/xmpp-http-upload.conf"),
            "apache/xmpp-http-upload.conf",
            &[
                ("*:443", format!("*:{public_port}")),
                ("127.0.0.1:9363", format!("127.0.0.1:{slot_port}")),
                (
                    "/etc/letsencrypt/live/upload.example.org/fullchain.pem",
                    root.join("cert.pem").display().to_string(),
                ),
                (
                    "/etc/letsencrypt/live/upload.example.org/privkey.pem",
                    root.join("key.pem").display().to_string(),
                ),
                (
                    "/etc/xmpp-http-upload/config.toml",
                    config.display().to_string(),
                ),
                ("/usr/bin/xmpp-http-upload", program.display().to_string()),
                (
                    "/var/lib/xmpp-http-upload/files/",
                    format!("{}/", self.upload_root.display()),
                ),
                ("RUST_LOG info", "RUST_LOG debug".to_string()),
            ],
        );
        write(&root.join("site.conf"), &site);
        let modules = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("authz_host_module", "mod_authz_host.so"),
            ("mime_module", "mod_mime.so"),
            ("headers_module", "mod_headers.so"),
            ("rewrite_module", "mod_rewrite.so"),
            ("alias_module", "mod_alias.so"),
            ("allowmethods_module", "mod_allowmethods.so"),
            ("setenvif_module", "mod_setenvif.so"),
            ("socache_shmcb_module", "mod_socache_shmcb.so"),
            ("ssl_module", "mod_ssl.so"),
            ("dav_module", "mod_dav.so"),
            ("dav_fs_module", "mod_dav_fs.so"),
            ("fcgid_module", "mod_fcgid.so"),
        ];
        let r = root.display();
        // What Debian's apache2.conf, ports.conf and the modules' .conf files give a site.
        let extra = format!(
            "Listen 127.0.0.1:{public_port}\n\
             DavLockDB {r}/lock/DAVLock\n\
             FcgidIPCDir {r}/fcgid\n\
             FcgidProcessTableFile {r}/run/fcgid_shm\n"
        );
        self.start_apache(&modules, &extra, &[public_port, slot_port]);
    }

    fn start_apache_cgi(&mut self, config: &Path, public_port: u16, cgi: CgiRunner) {
        let root = self.dir.path.clone();
        let htdocs = root.join("htdocs");
        let shipped = Path::new(REPO).join("apache/shared-hosting");
        for file in [".htaccess", "upload/.htaccess"] {
            fs::create_dir_all(htdocs.join(file).parent().expect("parent")).expect("create htdocs");
            fs::copy(shipped.join(file), htdocs.join(file)).expect("copy .htaccess");
        }
        let program_htaccess = template(
            &read_shipped("apache/shared-hosting/xmpp-http-upload/.htaccess"),
            "apache/shared-hosting/xmpp-http-upload/.htaccess",
            &[
                (
                    "/home/USER/xmpp-http-upload/config.toml",
                    config.display().to_string(),
                ),
                ("RUST_LOG info", "RUST_LOG debug".to_string()),
            ],
        );
        write(
            &htdocs.join("xmpp-http-upload/.htaccess"),
            &program_htaccess,
        );
        install_binary(&htdocs.join("xmpp-http-upload/xmpp-http-upload.cgi"));
        let (mpm, cgi_module) = match cgi {
            CgiRunner::Cgid => (
                ("mpm_event_module", "mod_mpm_event.so"),
                ("cgid_module", "mod_cgid.so"),
            ),
            CgiRunner::PreforkCgi => (
                ("mpm_prefork_module", "mod_mpm_prefork.so"),
                ("cgi_module", "mod_cgi.so"),
            ),
        };
        let modules = [
            mpm,
            ("authz_core_module", "mod_authz_core.so"),
            ("authz_host_module", "mod_authz_host.so"),
            ("mime_module", "mod_mime.so"),
            ("headers_module", "mod_headers.so"),
            ("rewrite_module", "mod_rewrite.so"),
            ("alias_module", "mod_alias.so"),
            ("env_module", "mod_env.so"),
            ("dir_module", "mod_dir.so"),
            cgi_module,
        ];
        let h = htdocs.display();
        let r = root.display();
        // mod_cgid's daemon listens on a socket; mod_cgi has none (the directive is unknown).
        let script_sock = match cgi {
            CgiRunner::Cgid => format!("ScriptSock {r}/run/cgid.sock\n"),
            CgiRunner::PreforkCgi => String::new(),
        };
        // A shared host: the customer controls only .htaccess files in the document root.
        let extra = format!(
            "Listen 127.0.0.1:{public_port}\n\
             {script_sock}\
             DocumentRoot {h}\n\
             <Directory {h}>\n    Require all granted\n    Options FollowSymLinks\n    \
             AllowOverride FileInfo Options AuthConfig Indexes Limit\n</Directory>\n"
        );
        self.start_apache(&modules, &extra, &[public_port]);
    }

    fn start_apache(&mut self, modules: &[(&str, &str)], extra: &str, ports: &[u16]) {
        let root = self.dir.path.clone();
        for sub in ["run", "lock", "fcgid", "logs"] {
            fs::create_dir_all(root.join(sub)).expect("create apache dir");
        }
        let as_root = running_as_root();
        let user = if as_root {
            let (uid, gid) = user_ids("www-data")
                .or_else(|| user_ids("nobody"))
                .expect("a www-data or nobody user to run Apache's children as");
            // What Apache's children and the program (run by them) must be able to write.
            for writable in [
                self.upload_root.clone(),
                root.join("db"),
                root.join("lock"),
                root.join("fcgid"),
            ] {
                chown_tree(&writable, uid, gid);
            }
            let name = if user_ids("www-data").is_some() {
                "www-data"
            } else {
                "nobody"
            };
            self.web_user = Some(name);
            format!("User {name}\nGroup #{gid}\n")
        } else {
            String::new()
        };
        let r = root.display();
        let mut main = format!(
            "ServerRoot {r}\nServerName 127.0.0.1\nPidFile {r}/run/httpd.pid\n\
             DefaultRuntimeDir {r}/run\nMutex file:{r}/lock default\n\
             ErrorLog {r}/logs/error.log\nLogLevel info\n{user}"
        );
        let around_modules = self.around.apache_modules.iter().map(|(n, f)| (*n, *f));
        for (name, file) in modules.iter().copied().chain(around_modules) {
            main.push_str(&format!("LoadModule {name} {APACHE_MODULES}/{file}\n"));
        }
        let around = self.around.apache_server.replace("@ROOT@", &r.to_string());
        main.push_str(&format!(
            "TypesConfig /etc/mime.types\n\
             <Directory />\n    Require all denied\n    AllowOverride None\n</Directory>\n\
             {extra}{around}\nIncludeOptional {r}/site.conf\n"
        ));
        write(&root.join("httpd.conf"), &main);
        self.logs.push(root.join("logs/error.log"));
        self.logs.push(root.join("apache.out"));
        let apache = apache_binary().expect("apache2 was found before");
        let check = Command::new(&apache)
            .arg("-t")
            .arg("-f")
            .arg(root.join("httpd.conf"))
            .output()
            .expect("run apache2 -t");
        if !check.status.success() {
            self.fail(&format!(
                "apache2 -t refused the config:\n{}",
                String::from_utf8_lossy(&check.stderr)
            ));
        }
        let mut command = Command::new(&apache);
        command
            .arg("-f")
            .arg(root.join("httpd.conf"))
            .arg("-DFOREGROUND");
        if modules
            .iter()
            .any(|(name, _)| *name == "mpm_prefork_module")
        {
            // mpm_prefork ends its children with a SIGTERM to its whole process group, which
            // under -DFOREGROUND is the test's (and cargo's): give it a group of its own.
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        self.server = Some(Process::spawn(
            "apache2",
            &mut command,
            &root.join("apache.out"),
        ));
        self.wait_for_ports(ports);
    }

    fn wait_for_ports(&mut self, ports: &[u16]) {
        let ready = wait_until(Duration::from_secs(15), || {
            ports.iter().all(|&p| port_is_open(p))
        });
        let died = self.server.as_mut().and_then(Process::exited);
        if !ready || died.is_some() {
            self.fail(&format!("web server did not come up (exit: {died:?})"));
        }
    }

    /// Fails the test with `message` and every log of the stack.
    pub fn fail(&self, message: &str) -> ! {
        panic!("{message}\n{}", self.logs());
    }

    /// Every log of the stack (program, web server), for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for log in &self.logs {
            let text = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            out.push_str(&format!("----- {} (last lines)\n", log.display()));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Pids of the program's processes right now: our own child for nginx; for Apache the
    /// processes mod_fcgid or mod_cgid started from the binary copied into the test directory.
    pub fn program_pids(&self) -> Vec<u32> {
        if let Some(program) = &self.program {
            return vec![program.pid()];
        }
        pids_with_exe_under(&self.dir.path)
    }

    /// Runs `xmpp-http-upload <command> --config <config>` as the user the web server runs
    /// the program as (so that SQLite's files keep their owner), and returns its output.
    pub fn run_program(&self, command: &str) -> std::process::Output {
        self.run_program_with(&[command])
    }

    /// Like [`Stack::run_program`], with arguments: `xmpp-http-upload <args...> --config <config>`.
    pub fn run_program_with(&self, args: &[&str]) -> std::process::Output {
        let program = match self.flavour {
            Flavour::Nginx => PathBuf::from(BIN),
            Flavour::ApacheDav => self.dir.path.join("bin/xmpp-http-upload"),
            Flavour::ApacheCgi => self
                .dir
                .path
                .join("htdocs/xmpp-http-upload/xmpp-http-upload.cgi"),
        };
        let mut cmd = match self.web_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env_remove("GATEWAY_INTERFACE")
            .output()
            .expect("run the program")
    }

    /// The path of a stored file.
    pub fn stored(&self, token: &str, name: &str) -> PathBuf {
        self.upload_root.join(token).join(name)
    }

    /// A `text/plain` slot request to the slot API, whatever the answer: its status and body
    /// (for tests that expect refusals; [`Stack::slot`] expects a slot).
    pub fn ask_slot(&self, jid: &str, name: &str, size: u64) -> (u16, String) {
        let answer = curl(&[&format!(
            "{}/http_upload/slot/?jid={}&name={name}&size={size}&content_type=text%2Fplain&secret={SECRET}",
            self.slot_api,
            ejabberd_encode(jid)
        )]);
        (
            answer.status,
            String::from_utf8_lossy(&answer.body).into_owned(),
        )
    }

    /// Asks for a slot through the local slot API listener, with the secret, the way ejabberd
    /// asks (its query shape; ejabberd itself cannot send a secret, see INSTALL.md).
    pub fn slot(&self, jid: &str, name: &str, size: u64, content_type: &str) -> Slot {
        let query = format!(
            "jid={}&name={}&size={size}&content_type={}&secret={SECRET}",
            ejabberd_encode(jid),
            ejabberd_encode(name),
            ejabberd_encode(content_type)
        );
        let answer = curl(&[&format!("{}/http_upload/slot/?{query}", self.slot_api)]);
        if answer.status != 200 {
            self.fail(&format!("slot request refused: {answer:?}"));
        }
        let text = String::from_utf8_lossy(&answer.body).to_string();
        let mut lines = text.split('\n');
        let (Some(put), Some(get)) = (lines.next(), lines.next()) else {
            self.fail(&format!("slot answer is not PUT\\nGET: {text:?}"));
        };
        let rest = put
            .strip_prefix(&format!("{}/upload/", self.public))
            .unwrap_or_else(|| self.fail(&format!("PUT URL {put:?} not under {}", self.public)));
        let (token, file_name) = rest
            .split_once('/')
            .unwrap_or_else(|| self.fail(&format!("PUT URL {put:?} has no token")));
        // The URLs as ejabberd passes them on to the client: percent-encoded.
        let (put_url, get_url) = (ejabberd_encode(put), ejabberd_encode(get));
        Slot {
            put_path: url_path(&put_url),
            get_path: url_path(&get_url),
            put_url,
            get_url,
            token: token.to_string(),
            name: file_name.to_string(),
        }
    }

    /// Peak resident memory (VmHWM, bytes) over the program's processes alive right now.
    pub fn program_peak_rss(&self) -> Option<u64> {
        self.program_pids().into_iter().filter_map(peak_rss).max()
    }
}

/// Pids of the processes whose executable lies under `dir`.
pub fn pids_with_exe_under(dir: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.starts_with(dir))
        })
        .collect()
}

/// Samples the peak memory of short-lived processes (CGI) while a request runs.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Samples `pids()` every 10 ms until `finish`.
    pub fn start(pids: impl Fn() -> Vec<u32> + Send + 'static) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (stop2, peak2) = (stop.clone(), peak.clone());
        let handle = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                for pid in pids() {
                    if let Some(rss) = peak_rss(pid) {
                        peak2.fetch_max(rss, Ordering::SeqCst);
                    }
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler {
            stop,
            peak,
            handle: Some(handle),
        }
    }

    /// Stops sampling; the highest VmHWM seen, if any process was seen.
    pub fn finish(mut self) -> Option<u64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        Some(self.peak.load(Ordering::SeqCst)).filter(|&p| p > 0)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Percent-encodes like ejabberd does with the URLs it passes on: every byte outside
/// `[A-Za-z0-9_.-/:~]`. Also used for query values (where `/` and `:` may stay raw).
pub fn ejabberd_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'/' | b':' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn install_binary(target: &Path) {
    fs::create_dir_all(target.parent().expect("binary dir")).expect("create binary dir");
    fs::copy(BIN, target).expect("copy the program");
    fs::set_permissions(target, fs::Permissions::from_mode(0o755)).expect("chmod program");
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            chown_tree(&entry.path(), uid, gid);
        }
    }
}

fn program_config(upload_root: &Path, root: &Path, public: &str, settings: &Settings) -> String {
    format!(
        r#"upload_root = "{upload}"
database = "{db}"
base_url = "{public}"
slot_prefix = "/http_upload"
put_prefix = "/upload"
get_prefix = "/upload"
put_timeout = "{timeout}"
retention = "{retention}"
webserver_download = true

[slot_api]
allow_from = ["127.0.0.1", "::1"]
secret = "{SECRET}"

{rules}
[[rules]]
match = '@example\.org$'
max_file_size = "200 MiB"

[[rules]]
match = '.*'
deny = true

# The external-upload protocols, on the prefixes the shipped configs route.
[[external]]
prefix = "{HMAC_PREFIX}"
secret = "{HMAC_SECRET}"
max_file_size = {HMAC_MAX}

[[file_share]]
prefix = "{JWT_PREFIX}"
secret = "{JWT_SECRET}"
"#,
        upload = upload_root.display(),
        db = settings
            .database
            .clone()
            .unwrap_or_else(|| root.join("db/uploads.sqlite3").display().to_string()),
        timeout = settings.put_timeout,
        retention = settings.retention,
        rules = settings.rules,
    )
}

fn make_certificate(root: &Path) {
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(root.join("key.pem"))
        .arg("-out")
        .arg(root.join("cert.pem"))
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Apache reads the key as root, nginx too; make it readable for non-root runs anyway.
    let _ = fs::set_permissions(root.join("key.pem"), fs::Permissions::from_mode(0o644));
}

/// One HTTP answer as curl saw it.
#[derive(Clone)]
pub struct Answer {
    /// The final status (after any `100 Continue`).
    pub status: u16,
    /// Headers of the final response, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (empty when written to a file).
    pub body: Vec<u8>,
    /// What curl said on stderr (e.g. a connection reset before the final response).
    pub error: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("curl_error", &self.error)
            .finish()
    }
}

impl Answer {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

static CURL_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// curl that does not insist on an answer: `None` when the transfer failed (timeout, reset,
/// connection refused during a restart), else the status and the body.
pub fn try_curl(args: &[&str]) -> Option<(u16, Vec<u8>)> {
    let output = Command::new("curl")
        .args(["-sS", "-k", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let mut out = output.stdout;
    let newline = out.iter().rposition(|&b| b == b'\n')?;
    let code: u16 = String::from_utf8_lossy(&out[newline + 1..])
        .trim()
        .parse()
        .ok()?;
    out.truncate(newline);
    (code != 0).then_some((code, out))
}

/// Runs `curl` with `args` (plus `-sS -k`, a timeout, and header/body capture) and returns
/// the final response. Pass `-o FILE` yourself to stream a large body to a file.
pub fn curl(args: &[&str]) -> Answer {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    curl_bytes(&args)
}

/// [`curl`] with arguments that need not be UTF-8 (e.g. a header value with a byte 0xFF).
pub fn curl_bytes(args: &[&OsStr]) -> Answer {
    let n = CURL_COUNTER.fetch_add(1, Ordering::SeqCst);
    let base = std::env::temp_dir().join(format!("xhu-web-curl-{}-{n}", std::process::id()));
    let headers_file = base.with_extension("headers");
    let body_file = base.with_extension("body");
    let to_file = args.contains(&OsStr::new("-o"));
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-k", "--max-time", "300", "-w", "%{http_code}"])
        .arg("-D")
        .arg(&headers_file);
    if !to_file {
        command.arg("-o").arg(&body_file);
    }
    command.args(args);
    let output = command.output().expect("run curl");
    let code = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let head = fs::read_to_string(&headers_file).unwrap_or_default();
    let body = fs::read(&body_file).unwrap_or_default();
    let _ = fs::remove_file(&headers_file);
    let _ = fs::remove_file(&body_file);
    let status: u16 = code.parse().unwrap_or(0);
    assert!(
        status != 0,
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The last header block is the final response (after any 100 Continue).
    let last_block = head
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let headers = last_block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body,
        error: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    }
}

/// Writes `len` bytes of a deterministic pattern to `path`, 1 MiB at a time.
pub fn write_pattern_file(path: &Path, len: u64) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for b in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.flush()
}

/// True when the two files have the same bytes (compared 1 MiB at a time).
pub fn same_contents(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

impl Stack {
    /// Starts `flavour` with `settings`, or `None` (skipped) when its programs are missing.
    pub fn start_if_available(flavour: Flavour, settings: &Settings) -> Option<Stack> {
        available(flavour).then(|| Stack::start_with(flavour, settings))
    }

    /// Writes `body` to a file in the stack's scratch directory, for curl to send.
    pub fn scratch_file(&self, name: &str, body: &[u8]) -> PathBuf {
        let dir = self.dir.path.join("scratch");
        fs::create_dir_all(&dir).expect("scratch dir");
        let file = dir.join(name);
        fs::write(&file, body).expect("write body");
        file
    }

    /// Runs `xmpp-http-upload cleanup` as the web server's program user; what it said (the
    /// test fails when it fails).
    pub fn cleanup(&self) -> String {
        let output = self.run_program("cleanup");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            self.fail(&format!("cleanup failed: {said}"));
        }
        said
    }

    /// Waits until the program has logged that it allowed a PUT of `path` (a PUT then is past
    /// its authorization and the web server is receiving its body).
    pub fn wait_for_allowance(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.logs().contains(&format!("PUT allowed: {path}")) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.fail(&format!("the PUT of {path} was never allowed"));
    }
}

/// A PUT of `body` over HTTP/1.1, the URL sent as written (`--path-as-is`), no
/// `Expect: 100-continue`.
pub fn put_file_raw(url: &str, body: &Path, extra: &[&str]) -> Answer {
    let body = body.display().to_string();
    let mut args = vec!["--http1.1", "--path-as-is", "-H", "Expect:", "-T", &body];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

/// A PUT whose body curl reads from a pipe the test feeds: nginx and Apache authorize it as
/// soon as its head is in (before reading the body), and it completes when the test says so —
/// a slow client, compressed in time.
pub struct TricklingPut {
    curl: Child,
}

impl TricklingPut {
    /// Starts the PUT of a body of `length` bytes to `url`.
    pub fn start(url: &str, length: usize, extra: &[&str]) -> TricklingPut {
        let curl = Command::new("curl")
            .args(["-sS", "-k", "--http1.1", "-H", "Expect:"])
            .args(["-H", "Transfer-Encoding:", "-T", "-"])
            .args(["-H", &format!("Content-Length: {length}")])
            .args(extra)
            .args(["-o", "/dev/null", "-w", "%{http_code}", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start curl");
        TricklingPut { curl }
    }

    /// Sends some of the body.
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.curl.stdin.as_mut().expect("curl's stdin");
        stdin.write_all(bytes).expect("feed curl");
        stdin.flush().expect("flush curl");
    }

    /// Sends the rest and returns the status the client finally got.
    pub fn finish(mut self, rest: &[u8]) -> u16 {
        self.send(rest);
        drop(self.curl.stdin.take());
        let output = self.curl.wait_with_output().expect("curl finished");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}
