//! Shared hosting as a host really runs it: Apache with mod_cgid, the shipped
//! `apache/shared-hosting/` files, and the program as plain CGI (`Flavour::ApacheCgi`). What a
//! web request must not be able to do there: start or steer the program through its command
//! line (RFC 3875 §4.4 hands a query without `=` to a CGI program as argv); leave a partial
//! file behind or hold a CGI process with a body that is aborted, refused or trickled.
//!
//! Without apache2 these tests are skipped with a message; with `CI=true` they fail.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::web;
use web::{Answer, Flavour, SECRET, Settings, Stack, available, curl, port_is_open, unused_port};

/// A directory nothing creates unless a request manages to start a development server.
fn untouched_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xhu-argv-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// Ends every program process the web server left behind (only ours: their binary lies in the
/// stack's directory), so that a failing run of this test cleans up after itself.
fn stop_leftover_programs(stack: &Stack) -> Vec<u32> {
    let pids = stack.program_pids();
    for pid in &pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    pids
}

/// A GET of the slot API with `query`, as the XMPP server (its secret in the header, so the
/// query can do without any `=`). curl gives up after 15 s: an old program that starts a
/// server never answers.
fn slot_get(stack: &Stack, query: &str) -> Answer {
    curl(&[
        "--max-time",
        "15",
        "-H",
        &format!("Authorization: Bearer {SECRET}"),
        &format!("{}/http_upload/slot/?{query}", stack.slot_api),
    ])
}

fn try_slot_get(stack: &Stack, query: &str) -> Option<Answer> {
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "15",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {SECRET}")])
        .arg(format!("{}/http_upload/slot/?{query}", stack.slot_api))
        .output()
        .expect("run curl");
    let code: u16 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code != 0).then(|| slot_get(stack, query))
}

/// Waits a moment for a port that an escaped server would open, and says if it opened.
fn opens_within(port: u16, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if port_is_open(port) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    port_is_open(port)
}

fn apache_error_log(stack: &Stack) -> String {
    fs::read_to_string(stack.dir.path.join("logs/error.log")).unwrap_or_default()
}

#[test]
fn a_query_is_never_a_command_line() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    let stack = Stack::start(Flavour::ApacheCgi);
    // What the slot API says to a query with no `jid`: the answer every query below must get.
    let ordinary = slot_get(&stack, "name=x");
    assert_eq!(ordinary.status, 400, "control request: {ordinary:?}");

    let port = unused_port();
    let data = untouched_dir("runserver");
    let runserver = format!(
        "runserver+--listen+127.0.0.1:{port}+--data+{}",
        data.display()
    );
    let mut escaped = Vec::new();
    for query in [
        runserver.as_str(),
        "serve+--listen+127.0.0.1:1",
        "cleanup",
        "check-config",
        "--config+/etc/passwd",
        "--help",
        "--version",
    ] {
        let answer = try_slot_get(&stack, query);
        let listening =
            query.starts_with("runserver") && opens_within(port, Duration::from_secs(2));
        let same = answer
            .as_ref()
            .is_some_and(|a| a.status == ordinary.status && a.body == ordinary.body);
        if !same || listening {
            escaped.push(format!(
                "?{query}: answer {answer:?}, port {port} listening: {listening}"
            ));
        }
    }
    let leftovers = stop_leftover_programs(&stack);
    let created = data.exists();
    let _ = fs::remove_dir_all(&data);
    if !escaped.is_empty() || created || !leftovers.is_empty() {
        stack.fail(&format!(
            "a query reached the command line:\n{}\n{} created: {created}; program processes \
             still running after the requests: {leftovers:?}",
            escaped.join("\n"),
            data.display()
        ));
    }

    // The same through the PUT route: an unknown slot is a 404 from the program, whatever the
    // query says.
    let put = curl(&[
        "--max-time",
        "15",
        "-X",
        "PUT",
        "--data-binary",
        "hello",
        &format!(
            "{}/upload/{}/a.txt?check-config",
            stack.public,
            "0".repeat(40)
        ),
    ]);
    assert_eq!(
        put.status,
        404,
        "PUT ?check-config: {put:?}\n{}",
        stack.logs()
    );
}

#[test]
fn listen_in_the_config_does_not_turn_cgi_into_a_server() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    let stack = Stack::start(Flavour::ApacheCgi);
    let port = unused_port();
    let config = fs::read_to_string(&stack.config).expect("read config");
    fs::write(
        &stack.config,
        format!("listen = \"127.0.0.1:{port}\"\n{config}"),
    )
    .expect("write config");
    let answer = try_slot_get(&stack, "name=x");
    let listening = opens_within(port, Duration::from_secs(2));
    let leftovers = stop_leftover_programs(&stack);
    if answer.as_ref().map(|a| a.status) != Some(400) || listening || !leftovers.is_empty() {
        stack.fail(&format!(
            "`listen` in the config changed a CGI request: answer {answer:?}, port listening: \
             {listening}, processes left: {leftovers:?}"
        ));
    }
    let log = apache_error_log(&stack);
    assert!(
        log.contains("listen") && log.contains("ignored"),
        "no warning that `listen` is ignored under CGI:\n{}",
        stack.logs()
    );
}

const ALICE: &str = "alice@example.org";

/// Starts a PUT of `slot_url` by hand: the head (with `Content-Length: declared`) and nothing
/// of the body yet, so that a test can send, stall or abort it as it likes.
fn start_put(stack: &Stack, slot_url: &str, declared: u64) -> TcpStream {
    let path = slot_url
        .strip_prefix(&stack.public)
        .unwrap_or_else(|| stack.fail(&format!("{slot_url} not under {}", stack.public)));
    let host = stack.public.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect to Apache");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {declared}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send the head");
    stream
}

/// The status line of what Apache answered on `stream` (after the body was sent), if any.
fn read_status(mut stream: TcpStream) -> Option<u16> {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("set a read timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Waits (up to `wait`) until no program process is running; true when none is.
fn programs_end_within(stack: &Stack, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if stack.program_pids().is_empty() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    stack.program_pids().is_empty()
}

/// Everything in a token directory, dot-files included (empty when it does not exist).
fn token_dir_entries(stack: &Stack, token: &str) -> Vec<String> {
    fs::read_dir(stack.upload_root.join(token))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

const MIB: u64 = 1 << 20;

#[test]
fn an_aborted_put_leaves_nothing() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    let stack = Stack::start(Flavour::ApacheCgi);
    let mut tokens = Vec::new();
    for round in 0..5 {
        let slot = stack.slot(
            ALICE,
            &format!("big{round}.bin"),
            4 * MIB,
            "application/octet-stream",
        );
        let mut stream = start_put(&stack, &slot.put_url, 4 * MIB);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..16 {
            stream.write_all(&chunk).expect("send a part of the body");
        }
        // Let the program receive what was sent, then go away mid-body.
        thread::sleep(Duration::from_millis(300));
        let _ = stream.shutdown(Shutdown::Both);
        drop(stream);
        tokens.push(slot.token);
    }
    if !programs_end_within(&stack, Duration::from_secs(60)) {
        stack.fail("the program still runs a minute after its clients went away");
    }
    let left: Vec<(String, Vec<String>)> = tokens
        .iter()
        .map(|t| (t.clone(), token_dir_entries(&stack, t)))
        .filter(|(_, entries)| !entries.is_empty())
        .collect();
    if !left.is_empty() {
        stack.fail(&format!("aborted uploads left files behind: {left:?}"));
    }
}

#[test]
fn a_refused_put_does_not_hold_the_program() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    let stack = Stack::start(Flavour::ApacheCgi);
    let slot = stack.slot(ALICE, "small.txt", 100, "application/octet-stream");
    // Declares (and sends) 8 MiB for a 100-byte slot: refused (413) on its head. The body goes
    // out at about 2 MiB/s: the program must be gone long before the client is done.
    let declared = 8 * MIB;
    let mut stream = start_put(&stack, &slot.put_url, declared);
    let chunk = vec![b'y'; 64 * 1024];
    let mut sent = 0u64;
    let mut gone_while_sending = false;
    while sent < declared {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len() as u64;
        if sent >= 2 * MIB && stack.program_pids().is_empty() {
            gone_while_sending = true;
        }
        thread::sleep(Duration::from_millis(30));
    }
    let status = read_status(stream);
    if !gone_while_sending || status != Some(413) {
        stack.fail(&format!(
            "refused PUT: the program ended while the body was still coming: \
             {gone_while_sending}; {sent} of {declared} bytes sent; status {status:?}"
        ));
    }
    assert!(token_dir_entries(&stack, &slot.token).is_empty());
}

#[test]
fn a_trickling_put_is_cut_off() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    // put_timeout 3 s: pauses of at most 3 s, the whole body within 3 s + size / 8 KiB/s.
    let settings = Settings {
        put_timeout: "3s",
        ..Settings::default()
    };
    let stack = Stack::start_with(Flavour::ApacheCgi, &settings);
    let stalled = stack.slot(ALICE, "stalled.txt", 1000, "application/octet-stream");
    let trickled = stack.slot(ALICE, "trickled.txt", 1000, "application/octet-stream");
    let mut stalling = start_put(&stack, &stalled.put_url, 1000);
    stalling
        .write_all(&[b'a'; 10])
        .expect("send the start of a body");
    let trickling = start_put(&stack, &trickled.put_url, 1000);
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = stop.clone();
        let mut stream = trickling.try_clone().expect("clone the stream");
        thread::spawn(move || {
            // One byte every 500 ms: 1000 bytes would take over 8 minutes.
            while !stop.load(Ordering::SeqCst) && stream.write_all(b"b").is_ok() {
                thread::sleep(Duration::from_millis(500));
            }
        })
    };
    thread::sleep(Duration::from_millis(500));
    let ended = programs_end_within(&stack, Duration::from_secs(45));
    stop.store(true, Ordering::SeqCst);
    let _ = trickler.join();
    drop(stalling);
    drop(trickling);
    if !ended {
        stack.fail("a stalled or trickling PUT still holds the program after 45 s");
    }
    for slot in [&stalled, &trickled] {
        let left = token_dir_entries(&stack, &slot.token);
        assert!(left.is_empty(), "{}: {left:?}\n{}", slot.name, stack.logs());
    }
    let log = fs::read_to_string(stack.dir.path.join("logs/error.log")).unwrap_or_default();
    assert!(
        log.contains("upload stalled") && log.contains("upload too slow"),
        "the program did not say why it gave up:\n{}",
        stack.logs()
    );
}

/// A stand-in for PHP-FPM: a Unix socket that counts the connections it gets.
struct StubFastCgi {
    path: PathBuf,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl StubFastCgi {
    fn start(path: PathBuf) -> StubFastCgi {
        use std::os::unix::fs::PermissionsExt;
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind the stub");
        // Apache's children (www-data) must be able to connect.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod the stub");
        listener.set_nonblocking(true).expect("non-blocking stub");
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (connections, stop) = (connections.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        // Counted and closed at once: "PHP" answers nothing.
                        Ok(_) => {
                            connections.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        StubFastCgi {
            path,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for StubFastCgi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// What a host's Apache enables beside the customer's files, as Debian packages and control
/// panels do: mod_lua for `.lua`, mod_asis for `.asis`, type maps for `.var` (mod_negotiation),
/// `php8.2-fpm`'s `<FilesMatch>` (and, for `.phar`, the `<If "-f ...">` variant its comments
/// suggest) and an `AddHandler` for `.php` (which also matches `pic.php.png`), each pointed at
/// a stub FastCGI server, and directory listings.
fn host_with_handlers(fpm: &Path, addhandler_php: &Path) -> web::Surroundings {
    web::Surroundings {
        apache_modules: vec![
            ("lua_module", "mod_lua.so"),
            ("asis_module", "mod_asis.so"),
            ("negotiation_module", "mod_negotiation.so"),
            ("autoindex_module", "mod_autoindex.so"),
            ("proxy_module", "mod_proxy.so"),
            ("proxy_fcgi_module", "mod_proxy_fcgi.so"),
        ],
        apache_server: format!(
            "AddHandler lua-script .lua\n\
             AddHandler send-as-is asis\n\
             AddHandler type-map var\n\
             AddHandler \"proxy:unix:{}|fcgi://localhost\" .php\n\
             <FilesMatch \".+\\.ph(?:ar|p|tml)$\">\n    \
             SetHandler \"proxy:unix:{fpm}|fcgi://localhost\"\n</FilesMatch>\n\
             <FilesMatch \".+\\.phar$\">\n    <If \"-f %{{REQUEST_FILENAME}}\">\n        \
             SetHandler \"proxy:unix:{fpm}|fcgi://localhost\"\n    </If>\n</FilesMatch>\n",
            addhandler_php.display(),
            fpm = fpm.display()
        ),
        ..web::Surroundings::default()
    }
}

/// Files that a host's handlers would run or interpret, each with the marker that shows it.
fn active_files() -> Vec<(&'static str, &'static [u8])> {
    vec![
        (
            "t.lua",
            b"function handle(r)\n  r.content_type = 'text/plain'\n  r:puts('LUA RAN')\n  \
              return apache2.OK\nend\n",
        ),
        (
            "t.asis.png",
            b"Status: 302 Found\nLocation: https://evil.example/\nSet-Cookie: stolen=1\n\
              Content-Type: text/html\n\n<script>alert(1)</script>\n",
        ),
        (
            "t.var",
            b"URI: t.var\n\nContent-type: text/html\nBody:----x----\n<script>alert(1)</script>\n\
              ----x----\n",
        ),
        ("shell.php", b"<?php system($_GET['c']); ?>\n"),
        ("x.phtml", b"<?php echo 'PHTML RAN'; ?>\n"),
        ("x.phar", b"<?php echo 'PHAR RAN'; ?>\n"),
        ("pic.php.png", b"<?php echo 'PNG RAN'; ?>\n"),
    ]
}

#[test]
fn uploads_are_served_as_bytes_whatever_the_host_enabled() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    let stubs = common::TempDir::labelled("stub");
    let stubs_dir = &stubs.path;
    let fpm = StubFastCgi::start(stubs_dir.join("fpm.sock"));
    let addhandler = StubFastCgi::start(stubs_dir.join("addhandler.sock"));
    let host = host_with_handlers(&fpm.path, &addhandler.path);
    let stack = Stack::start_with(
        Flavour::ApacheCgi,
        &Settings {
            around: host,
            ..Settings::default()
        },
    );
    let htdocs = stack.dir.path.join("htdocs");

    // Control: outside upload/ the host's handlers are live.
    for (name, bytes) in active_files() {
        fs::write(htdocs.join(format!("control-{name}")), bytes).expect("write a control file");
    }
    let lua = curl(&[&format!("{}/control-t.lua", stack.public)]);
    assert_eq!(lua.body, b"LUA RAN", "control: mod_lua is on: {lua:?}");
    let asis = curl(&[&format!("{}/control-t.asis.png", stack.public)]);
    assert_eq!(asis.status, 302, "control: mod_asis is on: {asis:?}");
    let var = curl(&[&format!("{}/control-t.var", stack.public)]);
    assert_eq!(
        var.header("content-type"),
        Some("text/html"),
        "control: type maps: {var:?}"
    );
    let _ = curl(&[&format!("{}/control-shell.php", stack.public)]);
    assert_eq!(
        fpm.connections(),
        1,
        "control: the FilesMatch handler is on"
    );
    let _ = curl(&[&format!("{}/control-x.phar", stack.public)]);
    assert_eq!(
        fpm.connections(),
        2,
        "control: the FilesMatch + If handler is on"
    );
    let _ = curl(&[&format!("{}/control-pic.php.png", stack.public)]);
    assert!(
        addhandler.connections() > 0,
        "control: the AddHandler handler is on"
    );
    let (fpm_before, addhandler_before) = (fpm.connections(), addhandler.connections());

    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).expect("scratch dir");
    let mut wrong = Vec::new();
    for (name, bytes) in active_files() {
        let slot = stack.slot(ALICE, name, bytes.len() as u64, "application/octet-stream");
        assert_eq!(slot.name, name, "the name stays as it is");
        let file = scratch.join(name);
        fs::write(&file, bytes).expect("write the upload");
        let put = curl(&[
            "-T",
            file.to_str().expect("UTF-8 path"),
            "-H",
            "Content-Type: application/octet-stream",
            &slot.put_url,
        ]);
        assert_eq!(put.status, 201, "PUT {name}: {put:?}\n{}", stack.logs());
        let get = curl(&[&slot.get_url]);
        let interpreted = get.status != 200
            || get.body != bytes
            || get.header("location").is_some()
            || get.header("set-cookie").is_some()
            || get
                .header("content-type")
                .is_some_and(|t| t.contains("html"));
        if interpreted {
            wrong.push(format!("{name}: {get:?}"));
        }
    }
    let reached = (
        fpm.connections() - fpm_before,
        addhandler.connections() - addhandler_before,
    );
    if !wrong.is_empty() || reached != (0, 0) {
        stack.fail(&format!(
            "uploads were not served as their bytes:\n{}\nconnections to the FilesMatch / \
             AddHandler \"PHP\": {reached:?}",
            wrong.join("\n")
        ));
    }
    drop(stack);
}

#[test]
fn the_document_root_lists_nothing_and_serves_no_ht_files() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    // A host whose default turns listings on for the customer's document root.
    let host = web::Surroundings {
        apache_modules: vec![("autoindex_module", "mod_autoindex.so")],
        apache_server:
            "<Directory @ROOT@/htdocs>\n    Options Indexes FollowSymLinks\n</Directory>\n".into(),
        ..web::Surroundings::default()
    };
    let stack = Stack::start_with(
        Flavour::ApacheCgi,
        &Settings {
            around: host,
            ..Settings::default()
        },
    );
    let htdocs = stack.dir.path.join("htdocs");
    fs::write(htdocs.join(".htpasswd"), "admin:$apr1$secret\n").expect("write .htpasswd");
    fs::create_dir_all(htdocs.join("other")).expect("a directory of the customer's");
    fs::write(htdocs.join("other/file.txt"), "listed?\n").expect("write a file");
    let mut wrong = Vec::new();
    for path in [
        "/.htaccess",
        "/.htpasswd",
        "/xmpp-http-upload/.htaccess",
        "/upload/.htaccess",
    ] {
        let answer = curl(&[&format!("{}{path}", stack.public)]);
        let secret_shown = ["RewriteEngine", "SetHandler", "Header", "apr1"]
            .iter()
            .any(|marker| String::from_utf8_lossy(&answer.body).contains(marker));
        if answer.status == 200 || secret_shown {
            wrong.push(format!("{path}: {} {:?}", answer.status, answer.body.len()));
        }
    }
    for path in ["/", "/other/", "/xmpp-http-upload/"] {
        let answer = curl(&[&format!("{}{path}", stack.public)]);
        if String::from_utf8_lossy(&answer.body).contains("Index of") {
            wrong.push(format!("{path}: a listing"));
        }
    }
    if !wrong.is_empty() {
        stack.fail(&format!("served what it should not: {wrong:?}"));
    }
}

/// Cleanup, run from the crontab as the web user, removes old files below the upload root
/// only: an external-protocol area that is a symbolic link (planted, or made by mistake) is not
/// walked, so nothing outside the root is deleted.
#[test]
fn cleanup_never_follows_a_link_out_of_the_upload_root() {
    if !available(Flavour::ApacheCgi) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::start(Flavour::ApacheCgi);
    let outside = stack.dir.path.join("outside");
    fs::create_dir_all(outside.join("u1")).expect("a directory outside the root");
    let victim = outside.join("u1/old.txt");
    fs::write(&victim, "not an upload\n").expect("write a file outside the root");
    // Old enough for any retention, and deletable by the web user if it were followed.
    let touched = Command::new("touch")
        .args(["-d", "2000-01-01"])
        .arg(&victim)
        .status()
        .expect("run touch");
    assert!(touched.success());
    for dir in [&outside, &outside.join("u1")] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let area = web::HMAC_PREFIX.trim_start_matches('/');
    std::os::unix::fs::symlink(&outside, stack.upload_root.join(area)).expect("plant the link");
    let output = stack.run_program("cleanup");
    assert!(
        output.status.success(),
        "cleanup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        victim.exists(),
        "cleanup deleted a file outside the upload root through a link: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
