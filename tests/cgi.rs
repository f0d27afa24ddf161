//! The other ways the binary is started: plain CGI (environment + stdin pipe, `Status:` on
//! stdout), FastCGI on fd 0 (mod_fcgid, spawn-fcgi, systemd), FastCGI over TCP, and that one
//! stalled connection does not hold up the others.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::fcgi::{self, Address, Body, Role};
use common::*;

const JID: &str = "bob@example.org";

/// Runs one CGI request: `args` (none = how Apache starts a CGI program), `vars` on top of a
/// typical CGI environment, `stdin` piped in. Returns the parsed CGI answer.
fn cgi(env: &Env, args: &[&str], vars: &[(&str, &str)], stdin: &[u8]) -> fcgi::Response {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env("XMPP_HTTP_UPLOAD_CONFIG", &env.config)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_NAME", "upload.example.org")
        .env("SERVER_PORT", "443")
        .env("HTTPS", "on")
        .env("HTTP_HOST", "upload.example.org")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start the binary as CGI");
    let mut input = child.stdin.take().unwrap();
    let body = stdin.to_vec();
    let writer = thread::spawn(move || {
        // the program may answer before reading everything
        let _ = input.write_all(&body);
    });
    let output = wait_output(child, Duration::from_secs(30));
    writer.join().unwrap();
    let text = output_text(&output);
    assert!(!text.contains("panicked"), "{text}");
    fcgi::parse_cgi_output(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not CGI output ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn wait_output(mut child: Child, timeout: Duration) -> std::process::Output {
    // read both pipes while waiting: a large answer would otherwise fill the pipe and hang
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let Some(status) = wait_for_exit(&mut child, timeout) else {
        let _ = child.kill();
        panic!("CGI process did not finish");
    };
    std::process::Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn cgi_get(env: &Env, args: &[&str], uri: &str) -> fcgi::Response {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    cgi(
        env,
        args,
        &[
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", uri),
            ("SCRIPT_NAME", path),
            ("QUERY_STRING", query),
        ],
        b"",
    )
}

#[test]
fn cgi_slot_put_get() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let content = body_of(300_000, 9);
    let size = content.len().to_string();
    // Under CGI the command line is never read (a query without `=` arrives as argv, RFC 3875
    // §4.4): the configuration comes from the environment whatever argv says.
    for args in [
        vec![],
        vec!["serve", "--config", "/nonexistent/config.toml"],
        vec!["runserver", "--listen", "127.0.0.1:1"],
    ] {
        let uri = format!(
            "/http_upload/slot/?jid={JID}&name={}&size={size}",
            pct("доклад 1.pdf")
        );
        let slot = parse_text_slot(&cgi_get(&env, &args, &uri));
        assert_eq!(slot.name, "доклад_1.pdf");

        let put_path = format!("/upload/{}/{}", slot.token, pct(&slot.name));
        let r = cgi(
            &env,
            &args,
            &[
                ("REQUEST_METHOD", "PUT"),
                ("REQUEST_URI", &put_path),
                ("SCRIPT_NAME", &put_path),
                ("QUERY_STRING", ""),
                ("CONTENT_LENGTH", &size),
                ("CONTENT_TYPE", "application/pdf"),
            ],
            &content,
        );
        assert_eq!(r.status, 201, "CGI PUT: {r}");
        let stored = std::fs::read(env.stored(&slot.token, &slot.name)).unwrap();
        assert!(stored == content, "wrong bytes stored through CGI");

        let r = cgi_get(&env, &args, &put_path);
        assert_eq!(r.status, 200, "CGI GET: {}", r.status);
        assert!(r.body == content, "wrong bytes served through CGI");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{:?}",
            r.headers
        );

        // the same slot again: refused, file untouched
        let r = cgi(
            &env,
            &args,
            &[
                ("REQUEST_METHOD", "PUT"),
                ("REQUEST_URI", &put_path),
                ("CONTENT_LENGTH", &size),
            ],
            &body_of(content.len(), 10),
        );
        assert_eq!(r.status, 409, "second CGI PUT: {r}");
        assert!(std::fs::read(env.stored(&slot.token, &slot.name)).unwrap() == content);
    }
}

#[test]
fn cgi_refusals_are_statuses_not_crashes() {
    let env = Env::new(&standard_config(
        "[[rules]]\nmatch = '^bob@'\nmax_file_size = 10\n",
    ));
    let r = cgi_get(&env, &[], "/http_upload/slot/?jid=bob@x&name=a&size=11");
    assert_eq!(r.status, 413, "{r}");
    assert!(
        r.header("Content-Type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{r}"
    );
    let r = cgi_get(&env, &[], "/http_upload/slot/?jid=eve@x&name=a&size=1");
    assert_eq!(r.status, 403, "{r}");
    let r = cgi_get(&env, &[], "/http_upload/slot/?jid=bob@x&size=1");
    assert_eq!(r.status, 400, "{r}");

    // a self-written CGI PUT whose body is shorter than declared leaves nothing
    let slot = parse_text_slot(&cgi_get(
        &env,
        &[],
        "/http_upload/slot/?jid=bob@x&name=a&size=10",
    ));
    let put = |vars: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![
            ("REQUEST_METHOD", "PUT"),
            ("REQUEST_URI", slot.put_path.as_str()),
        ];
        all.extend_from_slice(vars);
        cgi(&env, &[], &all, body)
    };
    let r = put(&[("CONTENT_LENGTH", "10")], b"short");
    assert!((400..500).contains(&r.status), "short CGI body: {r}");
    let leftovers: Vec<_> = std::fs::read_dir(env.upload_root.join(&slot.token))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // decide-only through CGI, on a fresh slot (an installation either writes bodies itself or
    // lets the web server write them; the attempt above allowed the first slot already)
    let slot = parse_text_slot(&cgi_get(
        &env,
        &[],
        "/http_upload/slot/?jid=bob@x&name=b&size=10",
    ));
    let decide = |vars: &[(&str, &str)]| {
        let mut all = vec![
            ("REQUEST_METHOD", "PUT"),
            ("REQUEST_URI", slot.put_path.as_str()),
            ("CONTENT_LENGTH", ""),
            ("XHU_AUTHORIZE", "1"),
        ];
        all.extend_from_slice(vars);
        cgi(&env, &[], &all, b"")
    };
    let r = decide(&[("HTTP_CONTENT_LENGTH", "11")]);
    assert_eq!(r.status, 403, "decide-only CGI with a wrong length: {r}");
    let r = decide(&[("HTTP_CONTENT_LENGTH", "10")]);
    assert!((200..300).contains(&r.status), "decide-only CGI: {r}");
    let r = decide(&[("HTTP_CONTENT_LENGTH", "10")]);
    assert_eq!(r.status, 403, "a second decide-only PUT of the slot: {r}");
}

/// A started process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn slot_over(address: &Address) -> Slot {
    let params = fcgi::request_params(
        "GET",
        &format!("/http_upload/slot/?jid={JID}&name=fd0.txt&size=3"),
        &[],
    );
    let r = fcgi::request(address, Role::Responder, &params, Body::Empty).expect("FastCGI request");
    parse_text_slot(&r)
}

fn wait_for(address: &Address) {
    let ok = wait_until(Duration::from_secs(20), || {
        let params = fcgi::request_params("GET", "/", &[]);
        fcgi::request(address, Role::Responder, &params, Body::Empty).is_ok()
    });
    assert!(ok, "no FastCGI answer on {address:?}");
}

#[test]
fn fastcgi_on_fd_0_like_mod_fcgid() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let socket = env.dir.path.join("fd0.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let fd: OwnedFd = listener.into();
    for args in [vec![], vec!["serve"]] {
        let child = Command::new(BIN)
            .args(&args)
            .env("XMPP_HTTP_UPLOAD_CONFIG", &env.config)
            .env_remove("GATEWAY_INTERFACE")
            .stdin(Stdio::from(fd.try_clone().unwrap()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let child = Killed(child);
        let address = Address::Unix(socket.clone());
        wait_for(&address);
        let slot = slot_over(&address);
        let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "3")]);
        let r = fcgi::request(&address, Role::Responder, &params, Body::Bytes(b"fd0")).unwrap();
        assert_eq!(r.status, 201, "{args:?}: {r}");
        drop(child);
    }
}

#[test]
fn fastcgi_over_tcp() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let port = web::unused_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            env.config.to_str().unwrap(),
            "--listen",
            &listen,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = Killed(child);
    let address = Address::Tcp(listen.parse().unwrap());
    wait_for(&address);
    let slot = slot_over(&address);
    assert_eq!(slot.name, "fd0.txt");
}

#[test]
fn a_stalled_connection_does_not_block_others() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let Address::Unix(path) = &server.address else {
        unreachable!()
    };
    // web servers that sent BEGIN_REQUEST and then nothing
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(&[1, 1, 0, 1, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
            .unwrap();
        stalled.push(s);
    }
    // a self-written upload half sent
    let slot = server.slot(JID, "slow.bin", 100_000);
    let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "100000")]);
    let mut slow = fcgi::Connection::open(&server.address, Role::Responder, &params).unwrap();
    assert!(slow.send_stdin(&[7; 50_000]).unwrap());

    let started = Instant::now();
    let other = server.slot(JID, "fast.txt", 1);
    assert!(other.token != slot.token);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a slot request waited {:?} behind stalled connections",
        started.elapsed()
    );
    drop(stalled);
    drop(slow);
}

/// The database holds every token (so every download URL): the program creates it, its
/// directory and SQLite's -wal/-shm files private to its user whatever the umask — here 000,
/// under which SQLite alone would make them 0666 and the directory 0777.
#[test]
fn cgi_creates_the_database_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(&standard_config(ALLOW_ALL));
    let database = env.dir.path.join("private/db/uploads.sqlite3");
    let config = env.dir.path.join("private.toml");
    let text = fs_read(&env.config).replace(
        &format!("database = {:?}", env.database.to_str().unwrap()),
        &format!("database = {:?}", database.to_str().unwrap()),
    );
    std::fs::write(&config, text).unwrap();
    let output = Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\"", BIN])
        .env("XMPP_HTTP_UPLOAD_CONFIG", &config)
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", "GET")
        .env(
            "REQUEST_URI",
            "/http_upload/slot/?jid=bob@example.org&name=a.txt&size=3",
        )
        .env("QUERY_STRING", "jid=bob@example.org&name=a.txt&size=3")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary as CGI");
    let answer = fcgi::parse_cgi_output(&output.stdout).expect("a CGI answer");
    assert_eq!(answer.status, 200, "{}", output_text(&output));
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode(database.parent().unwrap()),
        0o700,
        "database directory"
    );
    assert_eq!(mode(&database), 0o600, "database");
    for suffix in ["-wal", "-shm"] {
        let side = database.with_file_name(format!("uploads.sqlite3{suffix}"));
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "{}", side.display());
        }
    }
}

fn fs_read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
