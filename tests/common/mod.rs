//! Test harness: a temporary directory with a config, the built binary serving FastCGI on a Unix
//! socket in it, and helpers to ask for slots and to PUT/GET the way nginx, Apache and a client do.
//! The one harness of every test in `tests/` (`mod common;`): `web` starts real web servers,
//! `fcgi` speaks the wire, `signing` signs HMAC and JWT uploads; what more than one test needs
//! (a temporary directory, polling, memory peaks, slots, download checks) is defined once here.
//!
//! Every test gets its own directory (`<tmp>/xhu-test-<pid>-<counter>`), removed on drop; the
//! server process is killed on drop, and its log (stderr) is printed when the test panicked.
#![allow(dead_code)]

/// The FastCGI client.
pub mod fcgi;
/// A real PostgreSQL cluster, run unprivileged in a temporary directory.
pub mod postgres;
/// HMAC and JWT signing helpers for the external-upload protocols.
pub mod signing;
/// Real nginx and Apache started from the shipped configurations, and curl as the client.
pub mod web;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fcgi::{Address, Body, Response, Role};

/// The built binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_xmpp-http-upload");
/// The `base_url` of [`standard_config`].
pub const BASE: &str = "https://upload.example.org";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A TCP port on 127.0.0.1 that was free when asked, for a server a test starts (nginx,
/// Apache, PostgreSQL). Taken from below Linux's ephemeral range (32768-60999 by default),
/// not from it (`bind(:0)`): every outgoing connection of the parallel tests takes its own
/// port from that range, and one of them could hold the port by the time the server binds it
/// (Apache then exits with "Address already in use"). Tried from a point that differs per
/// process and per call, so that parallel test processes do not walk the same ports.
pub fn free_port() -> u16 {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    const FIRST: usize = 20_000;
    const COUNT: usize = 12_000;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    let start = std::process::id() as usize * 7_919
        + CALLS.fetch_add(1, Ordering::SeqCst) * 104_729
        + nanos;
    (0..COUNT)
        .map(|i| (FIRST + (start + i * 37) % COUNT) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// A unique directory, removed with everything in it on drop.
pub struct TempDir {
    /// The directory.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/xhu-test-<pid>-<n>`.
    pub fn new() -> TempDir {
        TempDir::labelled("test")
    }

    /// Creates `<tmp>/xhu-<label>-<pid>-<n>`, open to everyone for reading (mode 0755): a web
    /// server's children (Apache's www-data) must be able to walk in.
    pub fn labelled(label: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("xhu-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test dir");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod test dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            eprintln!("test dir kept for inspection: {}", self.path.display());
        }
    }
}

/// The top of a config most tests use: fixed base URL, the Django prefixes, downloads by the
/// program, the slot API open to 127.0.0.1. Append `[[rules]]` (and more tables) to it.
pub fn standard_config(rules: &str) -> String {
    standard_config_with("", rules)
}

/// [`standard_config`] with more top-level keys (`top`, whole lines such as
/// `put_timeout = "1s"`), which TOML wants before the first table.
pub fn standard_config_with(top: &str, rules: &str) -> String {
    format!(
        r#"base_url = "{BASE}"
slot_prefix = "/http_upload"
put_prefix = "/upload"
get_prefix = "/upload"
webserver_download = false
{top}
[slot_api]
allow_from = ["127.0.0.1", "::1"]

{rules}
"#
    )
}

/// Rules that let everybody upload without limits.
pub const ALLOW_ALL: &str = "[[rules]]\nmatch = '.*'\n";

/// A test directory with `files/` (the upload root), a database path and a config file.
pub struct Env {
    /// The test directory (removed on drop).
    pub dir: TempDir,
    /// `<dir>/files`, the configured `upload_root`.
    pub upload_root: PathBuf,
    /// `<dir>/uploads.sqlite3`, the configured `database`.
    pub database: PathBuf,
    /// `<dir>/config.toml`.
    pub config: PathBuf,
    sockets: AtomicUsize,
}

impl Env {
    /// Writes `config.toml`: `upload_root` and `database` in the test dir, then `body`.
    pub fn new(body: &str) -> Env {
        let dir = TempDir::new();
        let upload_root = dir.path.join("files");
        fs::create_dir_all(&upload_root).unwrap();
        let database = dir.path.join("uploads.sqlite3");
        let env = Env {
            config: dir.path.join("config.toml"),
            dir,
            upload_root,
            database,
            sockets: AtomicUsize::new(0),
        };
        env.write_config("config.toml", body);
        env
    }

    /// Writes another config file in the test dir with the same upload root and database.
    pub fn write_config(&self, file_name: &str, body: &str) -> PathBuf {
        let path = self.dir.path.join(file_name);
        let text = format!(
            "upload_root = {:?}\ndatabase = {:?}\n{body}",
            self.upload_root.to_str().unwrap(),
            self.database.to_str().unwrap()
        );
        fs::write(&path, text).unwrap();
        path
    }

    /// Starts `serve` with the main config.
    pub fn serve(&self) -> Server {
        self.serve_with(&self.config)
    }

    /// Starts `serve --config <config> --listen unix:<dir>/fcgi-<n>.sock` and waits until it
    /// answers a FastCGI request.
    pub fn serve_with(&self, config: &Path) -> Server {
        let n = self.sockets.fetch_add(1, Ordering::SeqCst);
        let socket = self.dir.path.join(format!("fcgi-{n}.sock"));
        let log = self.dir.path.join(format!("serve-{n}.log"));
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .env_remove("XMPP_HTTP_UPLOAD_CONFIG")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .expect("start the binary");
        let mut server = Server {
            child,
            address: Address::Unix(socket.clone()),
            log,
        };
        server.wait_ready();
        server
    }

    /// Runs the binary with these arguments (no `XMPP_HTTP_UPLOAD_CONFIG`, stdin closed).
    pub fn run(&self, args: &[&str]) -> Output {
        run(args)
    }

    /// The path of a stored file.
    pub fn stored(&self, token: &str, name: &str) -> PathBuf {
        self.upload_root.join(token).join(name)
    }

    /// Every path under the test dir (files and dirs), relative, sorted: for "nothing leaked".
    pub fn all_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.dir.path, &self.dir.path, &mut out);
        out.sort();
        out
    }

    /// Every path under the upload root, relative, sorted.
    pub fn upload_tree(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.upload_root, &self.upload_root, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(
            path.strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(root, &path, out);
        }
    }
}

/// Runs the binary with these arguments (no `XMPP_HTTP_UPLOAD_CONFIG`, stdin closed).
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("XMPP_HTTP_UPLOAD_CONFIG")
        .env_remove("GATEWAY_INTERFACE")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary")
}

/// stdout and stderr of a finished command, as one string.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Starts a server on a fresh [`Env`] with this config body.
pub fn start(body: &str) -> (Env, Server) {
    let env = Env::new(body);
    let server = env.serve();
    (env, server)
}

/// A running `serve` process, killed on drop.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub address: Address,
    log: PathBuf,
}

/// How a PUT reaches the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// nginx `auth_request`: responder, `XHU_AUTHORIZE=1`, `CONTENT_LENGTH ""`, no body.
    AuthRequest,
    /// Apache `FcgidAccessChecker`: Authorizer role, no stdin at all.
    Authorizer,
    /// The program receives the body and writes the file (shared hosting).
    SelfWrite,
}

/// All three ways.
pub const ALL_MODES: [PutMode; 3] = [
    PutMode::AuthRequest,
    PutMode::Authorizer,
    PutMode::SelfWrite,
];
/// The two "only decide" ways.
pub const DECIDE_MODES: [PutMode; 2] = [PutMode::AuthRequest, PutMode::Authorizer];

/// What a client's PUT declares and sends.
#[derive(Clone, Debug)]
pub struct Put<'a> {
    /// `Content-Length` header; `None` = absent.
    pub length: Option<String>,
    /// `Content-Type` header; `None` = absent.
    pub content_type: Option<&'a str>,
    /// Send `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body (sent only in [`PutMode::SelfWrite`]).
    pub body: &'a [u8],
}

impl<'a> Put<'a> {
    /// A well-formed PUT of `body` with its exact length and no type.
    pub fn of(body: &'a [u8]) -> Put<'a> {
        Put {
            length: Some(body.len().to_string()),
            content_type: None,
            chunked: false,
            body,
        }
    }

    /// The same with a Content-Type.
    pub fn typed(mut self, content_type: &'a str) -> Put<'a> {
        self.content_type = Some(content_type);
        self
    }
}

/// A granted slot: from the program's `text/plain` answer ([`parse_text_slot`]), or through a
/// web server as ejabberd passes it on ([`web::Stack::slot`]).
#[derive(Clone, Debug)]
pub struct Slot {
    /// The PUT URL the client uses: as answered (FastCGI), percent-encoded (web stacks).
    pub put_url: String,
    /// The GET URL, likewise.
    pub get_url: String,
    /// `put_url` without scheme and host.
    pub put_path: String,
    /// `get_url` without scheme and host.
    pub get_path: String,
    /// The token segment.
    pub token: String,
    /// The last segment of the PUT URL (raw: the text answer is not percent-encoded).
    pub name: String,
}

/// The path (and query) of an absolute URL.
pub fn url_path(url: &str) -> String {
    let rest = url
        .split_once("://")
        .unwrap_or_else(|| panic!("not an absolute URL: {url:?}"))
        .1;
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".to_string(),
    }
}

/// Parses a 200 `text/plain` slot answer: exactly `PUT_URL\nGET_URL`.
pub fn parse_text_slot(response: &Response) -> Slot {
    assert_eq!(response.status, 200, "slot refused: {response}");
    let text = response.text();
    assert!(!text.contains('\r'), "\\r in slot answer: {text:?}");
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(
        lines.len(),
        2,
        "slot answer is not exactly two lines: {text:?}"
    );
    let (put_url, get_url) = (lines[0].to_string(), lines[1].to_string());
    assert!(put_url.starts_with("http"), "{put_url:?}");
    assert!(get_url.starts_with("http"), "{get_url:?}");
    let put_path = url_path(&put_url);
    let get_path = url_path(&get_url);
    let segments: Vec<&str> = put_path.rsplitn(3, '/').collect();
    assert_eq!(segments.len(), 3, "{put_path:?}");
    Slot {
        name: segments[0].to_string(),
        token: segments[1].to_string(),
        put_url,
        get_url,
        put_path,
        get_path,
    }
}

impl Server {
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let Address::Unix(socket) = self.address.clone() else {
            unreachable!()
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "serve exited with {status} before listening; log:\n{}",
                    self.log()
                );
            }
            if socket.exists() {
                let params = fcgi::request_params("GET", "/", &[]);
                if fcgi::request(&self.address, Role::Responder, &params, Body::Empty).is_ok() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "serve did not listen on {}; log:\n{}",
                    socket.display(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peak resident set size of the server process so far (Linux `VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        peak_rss(self.pid())
    }

    /// What the process wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One FastCGI request; panics (with the server log) when the exchange itself fails.
    pub fn request<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        role: Role,
        params: &[(N, V)],
        body: Body<'_>,
    ) -> Response {
        match fcgi::request(&self.address, role, params, body) {
            Ok(response) => response,
            Err(e) => panic!("FastCGI exchange failed: {e}\nserver log:\n{}", self.log()),
        }
    }

    /// A responder request with a method, raw URI and headers (and an empty body).
    pub fn call(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Response {
        let params = fcgi::request_params(method, uri, headers);
        self.request(Role::Responder, &params, Body::Empty)
    }

    /// `GET <uri>` as a responder.
    pub fn get(&self, uri: &str) -> Response {
        self.call("GET", uri, &[])
    }

    /// `GET /http_upload/slot/?<query>`.
    pub fn slot_request(&self, query: &str) -> Response {
        self.get(&format!("/http_upload/slot/?{query}"))
    }

    /// Asks for a slot and parses the granted text answer (panics when refused).
    pub fn slot(&self, jid: &str, name: &str, size: u64) -> Slot {
        let response = self.slot_request(&format!(
            "jid={}&name={}&size={size}",
            form_encode(jid),
            form_encode(name)
        ));
        parse_text_slot(&response)
    }

    /// A slot with a content type (ejabberd's `content_type`).
    pub fn typed_slot(&self, jid: &str, name: &str, size: u64, content_type: &str) -> Slot {
        let response = self.slot_request(&format!(
            "jid={}&name={}&size={size}&content_type={}",
            form_encode(jid),
            form_encode(name),
            form_encode(content_type)
        ));
        parse_text_slot(&response)
    }

    /// A client's PUT to `uri`, delivered the way `mode` says.
    pub fn put(&self, mode: PutMode, uri: &str, put: &Put<'_>) -> Response {
        self.put_with_headers(mode, uri, put, &[])
    }

    /// Like [`Server::put`], with extra request headers (e.g. `Authorization`), which reach the
    /// program as `HTTP_*` params in every mode, as nginx and Apache pass them.
    pub fn put_with_headers(
        &self,
        mode: PutMode,
        uri: &str,
        put: &Put<'_>,
        extra: &[(&str, &str)],
    ) -> Response {
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(length) = &put.length {
            headers.push(("Content-Length", length));
        }
        if let Some(content_type) = put.content_type {
            headers.push(("Content-Type", content_type));
        }
        if put.chunked {
            headers.push(("Transfer-Encoding", "chunked"));
        }
        match mode {
            PutMode::AuthRequest => {
                let params = fcgi::auth_subrequest_params(uri, &headers);
                self.request(Role::Responder, &params, Body::Empty)
            }
            PutMode::Authorizer => {
                let params = fcgi::authorizer_params(uri, &headers);
                self.request(Role::Authorizer, &params, Body::None)
            }
            PutMode::SelfWrite => {
                let params = fcgi::request_params("PUT", uri, &headers);
                self.request(Role::Responder, &params, Body::Bytes(put.body))
            }
        }
    }

    /// Uploads `body` to the slot's PUT path in `mode`; in the decide-only modes the test plays
    /// the web server and writes the file itself after a "yes". Asserts success.
    pub fn upload(&self, env: &Env, mode: PutMode, slot: &Slot, put: &Put<'_>) {
        let response = self.put(mode, &slot.put_path, put);
        assert_allowed(mode, &response, &format!("PUT {}", slot.put_path));
        if mode != PutMode::SelfWrite {
            let dir = env.upload_root.join(&slot.token);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(&slot.name), put.body).unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- server log ----\n{}\n--------", self.log());
        }
    }
}

/// Asserts "yes": 2xx for the auth subrequest, exactly 200 for the Authorizer role, 201 Created
/// for a self-written upload.
pub fn assert_allowed(mode: PutMode, response: &Response, what: &str) {
    let ok = match mode {
        PutMode::AuthRequest => (200..300).contains(&response.status),
        PutMode::Authorizer => response.status == 200,
        PutMode::SelfWrite => response.status == 201,
    };
    assert!(ok, "{what} ({mode:?}) should be allowed, got {response}");
}

/// Asserts "no": 403 in the decide-only modes (INTERFACE.md), a 4xx when the program receives
/// the body; never a 5xx.
pub fn assert_refused(mode: PutMode, response: &Response, what: &str) {
    let ok = match mode {
        PutMode::AuthRequest | PutMode::Authorizer => response.status == 403,
        PutMode::SelfWrite => (400..500).contains(&response.status),
    };
    assert!(ok, "{what} ({mode:?}) should be refused, got {response}");
}

/// Percent-encodes every byte outside the URL-unreserved set (`A-Za-z0-9-._~`).
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Form-encodes a query value: like [`pct`], but also leaves `@` raw (ejabberd's example URL and
/// the seed README send it so).
pub fn form_encode(s: &str) -> String {
    pct(s).replace("%40", "@")
}

/// Decodes `%XX` escapes (no `+` handling), for reading URLs of the JSON/XML answers.
pub fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("decoded URL is UTF-8")
}

/// Asserts a download the program serves: 200, the bytes, `Content-Length`, `Content-Type`,
/// the security headers, a `Content-Disposition` (`inline` or not) naming the file as the
/// URI's last segment decodes, and a HEAD with the same length and no body.
pub fn assert_download(server: &Server, uri: &str, body: &[u8], content_type: &str, inline: bool) {
    let get = server.get(uri);
    assert_eq!(get.status, 200, "GET {uri}: {get}");
    assert!(get.body == body, "GET {uri}: wrong bytes");
    assert_eq!(
        get.header("Content-Length"),
        Some(body.len().to_string().as_str()),
        "GET {uri}: {get}"
    );
    assert_eq!(
        get.header("Content-Type"),
        Some(content_type),
        "GET {uri}: {get}"
    );
    assert_eq!(
        get.header("X-Content-Type-Options"),
        Some("nosniff"),
        "GET {uri}: {get}"
    );
    let csp = get.header("Content-Security-Policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'"),
        "GET {uri}: CSP {csp:?} is not restrictive"
    );
    let disposition = get.header("Content-Disposition").unwrap_or_default();
    let want = if inline { "inline" } else { "attachment" };
    assert!(
        disposition.starts_with(want),
        "GET {uri}: Content-Disposition {disposition:?}, expected {want}"
    );
    let name = pct_decode(uri.rsplit('/').next().unwrap());
    let named = disposition
        .split_once("filename*=UTF-8''")
        .map(|(_, n)| pct_decode(n.trim()));
    assert_eq!(
        named.as_deref(),
        Some(name.as_str()),
        "GET {uri}: Content-Disposition {disposition:?} does not name the file"
    );

    let head = server.call("HEAD", uri, &[]);
    assert_eq!(head.status, 200, "HEAD {uri}: {head}");
    assert!(head.body.is_empty(), "HEAD {uri} with a body: {head}");
    assert_eq!(
        head.header("Content-Length"),
        Some(body.len().to_string().as_str()),
        "HEAD {uri}: {head}"
    );
}

/// The peak resident set size of process `pid` so far (Linux `VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A deterministic pseudo-random body (so a wrong byte order or a truncation shows).
pub fn body_of(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

impl Server {
    /// Waits (at most `timeout`) for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_for_exit(&mut self.child, timeout)
    }
}

/// Waits (at most `timeout`) for `child` to exit; its status, or `None` if it still runs.
pub fn wait_for_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// What an end-to-end driver (tests/e2e/) printed when it passed.
pub struct E2eRun {
    /// Its stdout: the client's `ok` lines and the `E2E RESULT` lines.
    pub stdout: String,
    /// Its stderr, for failure messages.
    pub stderr: String,
}

/// Runs the end-to-end driver `script` (relative to the repository) for `generation` on the
/// binary under test. `None` when it skipped (exit 77: `server`, nginx or the Python modules
/// are missing), which under `CI=true` fails the test; a failed run fails the test.
pub fn run_e2e_driver(script: &str, server: &str, generation: &str) -> Option<E2eRun> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new("bash")
        .arg(&path)
        .env("XHU_BIN", BIN)
        .env("XHU_E2E_GENERATION", generation)
        .output()
        .unwrap_or_else(|e| panic!("run bash {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() == Some(77) {
        assert!(
            !ci,
            "CI=true but the {server} {generation} e2e dependencies are missing:\n{stdout}{stderr}"
        );
        let test = thread::current().name().unwrap_or("e2e").to_string();
        eprintln!("SKIPPED {test}: {}", stdout.trim());
        return None;
    }
    assert!(
        out.status.success(),
        "the {server} ({generation}) end-to-end test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    Some(E2eRun { stdout, stderr })
}

/// `runserver` (the development server) on a free loopback port, killed on drop.
pub struct DevServer {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `runserver` with its data in `data` and waits until it listens.
pub fn start_dev(data: &Path) -> DevServer {
    let port = web::unused_port();
    let child = Command::new(BIN)
        .args([
            "runserver",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
        ])
        .arg(data)
        .env_remove("XMPP_HTTP_UPLOAD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runserver");
    let server = DevServer { child, port };
    let up = wait_until(Duration::from_secs(20), || web::port_is_open(port));
    assert!(up, "runserver did not listen on {port}");
    server
}
