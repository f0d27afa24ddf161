//! Our FastCGI layer (`src/fcgi/`), over raw FastCGI bytes against the built binary: kept and
//! unkept connections, management records, the one-request-per-connection rule, parameters as
//! bytes and their limits, malformed record streams, slot requests answered while uploads
//! trickle in, and SIGTERM with a request in flight.
//!
//! What it does not cover: the HTTP logic (the other wire tests), the web servers
//! (`tests/webservers.rs`), timing (the benchmark).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::fcgi::{
    self, Address, BEGIN_REQUEST, Body, END_REQUEST, GET_VALUES, GET_VALUES_RESULT, KeptConnection,
    PARAMS, Role, STDIN, STDOUT, UNKNOWN_TYPE, unpadded_record,
};
use common::{ALLOW_ALL, Env, Put, PutMode, Server, standard_config};

const CANT_MPX_CONN: u8 = 1;
const UNKNOWN_ROLE: u8 = 3;

const JID: &str = "layer@example.org";

fn begin(id: u16, role: u16, keep: bool) -> Vec<u8> {
    let mut content = role.to_be_bytes().to_vec();
    content.push(u8::from(keep));
    content.extend_from_slice(&[0; 5]);
    unpadded_record(BEGIN_REQUEST, id, &content)
}

/// BEGIN_REQUEST, the params, the empty PARAMS record.
fn head<N: AsRef<[u8]>, V: AsRef<[u8]>>(id: u16, keep: bool, params: &[(N, V)]) -> Vec<u8> {
    let mut out = begin(id, 1, keep);
    for chunk in fcgi::encode_params(params).chunks(65_535) {
        out.extend(unpadded_record(PARAMS, id, chunk));
    }
    out.extend(unpadded_record(PARAMS, id, &[]));
    out
}

fn slot_params(name: &str) -> Vec<(String, String)> {
    fcgi::request_params(
        "GET",
        &format!("/http_upload/slot/?jid={JID}&name={name}&size=4"),
        &[],
    )
}

fn socket(server: &Server) -> PathBuf {
    let Address::Unix(path) = server.address.clone() else {
        unreachable!()
    };
    path
}

fn alive(server: &Server) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn assert_answers_slots(server: &Server) {
    let r = server.slot_request(&format!("jid={JID}&name=probe.txt&size=1"));
    assert_eq!(r.status, 200, "a good slot request afterwards: {r}");
}

fn with_workers(workers: usize) -> Env {
    Env::new(&format!(
        "workers = {workers}\n{}",
        standard_config(ALLOW_ALL)
    ))
}

#[test]
fn a_kept_connection_carries_many_requests_of_every_kind() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let mut conn = KeptConnection::open(&server.address).unwrap();
    for i in 0..50 {
        let r = conn
            .request(
                Role::Responder,
                &slot_params(&format!("k{i}.txt")),
                Body::Empty,
            )
            .unwrap();
        assert_eq!(r.status, 200, "slot {i} on the kept connection: {r}");
        assert_eq!(r.protocol_status, 0);
    }
    // An upload the program receives, a decision, a refused upload, a download: same connection.
    let slot = server.slot(JID, "kept.bin", 5);
    let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "5")]);
    let r = conn
        .request(Role::Responder, &params, Body::Bytes(b"12345"))
        .unwrap();
    assert_eq!(r.status, 201, "{r}");
    let other = server.slot(JID, "other.bin", 5);
    let params = fcgi::auth_subrequest_params(&other.put_path, &[("Content-Length", "5")]);
    let r = conn.request(Role::Responder, &params, Body::Empty).unwrap();
    assert_eq!(r.status, 200, "decision on the kept connection: {r}");
    // A body of the wrong size is refused before it is read: the rest is read away and the
    // connection stays in step.
    let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "5")]);
    let r = conn
        .request(Role::Responder, &params, Body::Bytes(&[7u8; 200_000]))
        .unwrap();
    assert!((400..500).contains(&r.status), "refused PUT: {r}");
    let r = conn
        .request(
            Role::Responder,
            &fcgi::request_params("GET", &slot.get_path, &[]),
            Body::Empty,
        )
        .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"12345"[..]), "{r}");
    drop(conn);
    assert_answers_slots(&server);
    let log = server.log();
    assert!(!log.to_lowercase().contains("panic"), "{log}");
}

#[test]
fn without_keep_conn_the_connection_is_closed_after_the_request() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let mut stream = UnixStream::connect(socket(&server)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut bytes = head(1, false, &slot_params("once.txt"));
    bytes.extend(unpadded_record(STDIN, 1, &[]));
    stream.write_all(&bytes).unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap(); // returns only once the program closed
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("Status: 200"), "{text:?}");
    assert_eq!(
        all[all.len() - 16 + 1],
        END_REQUEST,
        "ends with END_REQUEST"
    );
}

#[test]
fn idle_kept_connections_closed_by_the_web_server_are_normal_and_silent() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    for i in 0..40 {
        let mut conn = KeptConnection::open(&server.address).unwrap();
        let r = conn
            .request(
                Role::Responder,
                &slot_params(&format!("i{i}.txt")),
                Body::Empty,
            )
            .unwrap();
        assert_eq!(r.status, 200);
        // dropped: closed by "the web server" while idle
    }
    // Idle connections hold no worker: more of them than workers, all open at once.
    let mut open: Vec<KeptConnection> = (0..40)
        .map(|_| KeptConnection::open(&server.address).unwrap())
        .collect();
    for (i, conn) in open.iter_mut().enumerate() {
        let r = conn
            .request(
                Role::Responder,
                &slot_params(&format!("o{i}.txt")),
                Body::Empty,
            )
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_answers_slots(&server);
    drop(open);
    assert_answers_slots(&server);
    let log = layer_log(&server);
    for bad in ["panic", "ERROR", "WARN"] {
        assert!(!log.contains(bad), "{bad} in the log:\n{log}");
    }
}

/// The server's log without what the configuration check says at start (the test configs
/// have no slot API secret, which `Config::warnings` points out): what the layer logged.
fn layer_log(server: &Server) -> String {
    server
        .log()
        .lines()
        .filter(|line| !line.contains("slot_api has no secret"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn get_values_and_unknown_management_types_are_answered() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let mut conn = KeptConnection::open(&server.address).unwrap();
    let query = fcgi::encode_params(&[
        ("FCGI_MAX_CONNS", ""),
        ("FCGI_MAX_REQS", ""),
        ("FCGI_MPXS_CONNS", ""),
        ("SOMETHING_ELSE", ""),
    ]);
    conn.send_raw(&unpadded_record(GET_VALUES, 0, &query))
        .unwrap();
    let (kind, id, content) = conn.read_record().unwrap();
    assert_eq!((kind, id), (GET_VALUES_RESULT, 0));
    let text = String::from_utf8_lossy(&content).to_string();
    assert!(text.contains("FCGI_MPXS_CONNS0"), "{text:?}");
    assert!(
        text.contains("FCGI_MAX_CONNS") && text.contains("FCGI_MAX_REQS"),
        "{text:?}"
    );
    assert!(!text.contains("SOMETHING_ELSE"), "{text:?}");

    conn.send_raw(&unpadded_record(42, 0, b"whatever")).unwrap();
    let (kind, id, content) = conn.read_record().unwrap();
    assert_eq!((kind, id, content[0]), (UNKNOWN_TYPE, 0, 42));

    // The connection is still good for a request.
    let r = conn
        .request(Role::Responder, &slot_params("after-mgmt.txt"), Body::Empty)
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn a_second_begin_request_on_a_busy_connection_gets_cant_mpx_conn() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let slot = server.slot(JID, "mpx.bin", 4);
    let mut conn = KeptConnection::open(&server.address).unwrap();
    let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "4")]);
    let mut bytes = head(1, true, &params);
    bytes.extend(unpadded_record(STDIN, 1, b"ab"));
    bytes.extend(begin(2, 1, true));
    conn.send_raw(&bytes).unwrap();
    let (kind, id, content) = conn.read_record().unwrap();
    assert_eq!((kind, id, content[4]), (END_REQUEST, 2, CANT_MPX_CONN));
    let mut rest = unpadded_record(STDIN, 1, b"cd");
    rest.extend(unpadded_record(STDIN, 1, &[]));
    conn.send_raw(&rest).unwrap();
    let mut stdout = Vec::new();
    loop {
        let (kind, id, content) = conn.read_record().unwrap();
        assert_eq!(id, 1);
        if kind == END_REQUEST {
            break;
        }
        assert_eq!(kind, STDOUT);
        stdout.extend(content);
    }
    let r = fcgi::parse_cgi_output(&stdout).unwrap();
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(
        std::fs::read(env.stored(&slot.token, "mpx.bin")).unwrap(),
        b"abcd"
    );
}

#[test]
fn an_unknown_role_is_answered_unknown_role() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let mut conn = KeptConnection::open(&server.address).unwrap();
    let mut bytes = begin(1, 3, true); // the Filter role
    bytes.extend(unpadded_record(PARAMS, 1, &[]));
    bytes.extend(unpadded_record(STDIN, 1, &[]));
    conn.send_raw(&bytes).unwrap();
    let (kind, id, content) = conn.read_record().unwrap();
    assert_eq!((kind, id, content[4]), (END_REQUEST, 1, UNKNOWN_ROLE));
    let r = conn
        .request(Role::Responder, &slot_params("after-role.txt"), Body::Empty)
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
}

/// The old crate dropped a parameter with a non-UTF-8 byte *and every parameter after it*.
#[test]
fn a_non_utf8_parameter_affects_only_itself() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let slot = server.slot(JID, "bytes.bin", 5);
    let mut params: Vec<(Vec<u8>, Vec<u8>)> =
        vec![(b"HTTP_USER_AGENT".to_vec(), b"caf\xe9".to_vec())];
    for (name, value) in fcgi::auth_subrequest_params(&slot.put_path, &[("Content-Length", "5")]) {
        params.push((name.into_bytes(), value.into_bytes()));
    }
    let r = server.request(Role::Responder, &params, Body::Empty);
    assert_eq!(
        r.status, 200,
        "the parameters after the bad one still count: {r}"
    );

    // A non-UTF-8 byte in a parameter the decision needs: that one reads as absent, refused.
    let mut params = fcgi::auth_subrequest_params(&slot.put_path, &[("Content-Length", "5")]);
    fcgi::remove_param(&mut params, "REQUEST_URI");
    let mut raw: Vec<(Vec<u8>, Vec<u8>)> = params
        .into_iter()
        .map(|(n, v)| (n.into_bytes(), v.into_bytes()))
        .collect();
    raw.push((
        b"REQUEST_URI".to_vec(),
        [slot.put_path.as_bytes(), b"\xff"].concat(),
    ));
    let r = server.request(Role::Responder, &raw, Body::Empty);
    assert_eq!(r.status, 403, "{r}");
}

#[test]
fn ten_thousand_parameters_are_refused_cleanly() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let mut params = slot_params("flood.txt");
    for i in 0..10_000 {
        params.push((format!("P{i}"), "x".into()));
    }
    let r = server.request(Role::Responder, &params, Body::Empty);
    assert_eq!(r.status, 400, "{r}");
    assert!(
        r.text().contains("more than 1000 FastCGI parameters"),
        "{r}"
    );
    // Too many bytes of parameters, on a kept connection.
    let mut conn = KeptConnection::open(&server.address).unwrap();
    let mut big = slot_params("big.txt");
    big.push(("HTTP_X".into(), "y".repeat(300_000)));
    let r = conn.request(Role::Responder, &big, Body::Empty).unwrap();
    assert_eq!(r.status, 400, "{r}");
    assert!(r.text().contains("larger than"), "{r}");
    assert!(alive(&server));
    assert_answers_slots(&server);
}

#[test]
fn truncated_and_malformed_record_streams_do_no_harm() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let full = {
        let mut b = head(1, true, &slot_params("cut.txt"));
        b.extend(unpadded_record(STDIN, 1, &[]));
        b
    };
    let mut cases: Vec<Vec<u8>> = (1..full.len())
        .step_by(3)
        .map(|n| full[..n].to_vec())
        .collect();
    cases.push(vec![2, 1, 0, 1, 0, 8, 0, 0]); // version 2
    cases.push(unpadded_record(BEGIN_REQUEST, 1, &[0])); // BEGIN_REQUEST too short
    cases.push([begin(1, 1, false), unpadded_record(STDIN, 1, b"early")].concat()); // STDIN before PARAMS end
    cases.push(
        [
            begin(1, 1, false),
            unpadded_record(PARAMS, 1, &[0xff, 0xff, 0xff, 0xff, 1]),
            unpadded_record(PARAMS, 1, &[]),
        ]
        .concat(),
    );
    cases.push(vec![1, PARAMS, 0, 1, 0xff, 0xff, 0xff]); // a header announcing 64 KiB, cut
    for bytes in &cases {
        let mut stream = UnixStream::connect(socket(&server)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(alive(&server), "died on {bytes:?}; log:\n{}", server.log());
    }
    assert_answers_slots(&server);
    assert!(
        !server.log().to_lowercase().contains("panic"),
        "{}",
        server.log()
    );
}

/// Uploads that trickle in hold their workers; slot requests and decisions must still be
/// answered, however many uploads there are (more than workers here).
#[test]
fn slot_requests_are_answered_while_uploads_trickle() {
    let env = with_workers(4);
    let server = env.serve();
    const UPLOADS: usize = 6;
    const SIZE: usize = 64;
    let slots: Vec<_> = (0..UPLOADS)
        .map(|i| server.slot(JID, &format!("slow{i}.bin"), SIZE as u64))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let results = thread::scope(|scope| {
        let handles: Vec<_> = slots
            .iter()
            .map(|slot| {
                let (address, stop) = (server.address.clone(), stop.clone());
                scope.spawn(move || {
                    let params = fcgi::request_params(
                        "PUT",
                        &slot.put_path,
                        &[("Content-Length", &SIZE.to_string())],
                    );
                    let mut upload = fcgi::Connection::open(&address, Role::Responder, &params)?;
                    // One byte at a time until the slot requests are done (or, should they
                    // hang, until long after the client's timeout), then the rest.
                    let started = std::time::Instant::now();
                    let waiting = || {
                        !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60)
                    };
                    let mut sent = 0;
                    while waiting() && sent < SIZE - 1 {
                        upload.send_stdin(b"x")?;
                        sent += 1;
                        thread::sleep(Duration::from_millis(50));
                    }
                    while waiting() {
                        thread::sleep(Duration::from_millis(20));
                    }
                    upload.send_stdin(&vec![b'x'; SIZE - sent])?;
                    upload.finish()
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(300));
        // If the uploads pinned every worker, these would hang until the client's timeout.
        let mut kept = KeptConnection::open(&server.address).unwrap();
        for i in 0..20 {
            let r = kept
                .request(
                    Role::Responder,
                    &slot_params(&format!("during{i}.txt")),
                    Body::Empty,
                )
                .unwrap();
            assert_eq!(r.status, 200, "slot request {i} during the uploads: {r}");
            assert_answers_slots(&server);
            let other = server.slot(JID, &format!("decide{i}.bin"), 3);
            let r = server.put(PutMode::AuthRequest, &other.put_path, &Put::of(b"abc"));
            assert_eq!(r.status, 200, "decision during the uploads: {r}");
        }
        stop.store(true, Ordering::SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (slot, result) in slots.iter().zip(results) {
        let r = result.unwrap_or_else(|e| panic!("upload {}: {e}\n{}", slot.name, server.log()));
        assert_eq!(r.status, 201, "the slow upload {}: {r}", slot.name);
        assert_eq!(
            std::fs::read(env.stored(&slot.token, &slot.name)).unwrap(),
            vec![b'x'; SIZE]
        );
    }
}

#[test]
fn sigterm_stops_accepting_and_finishes_the_request_in_flight() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let mut server = env.serve();
    let slot = server.slot(JID, "term.bin", 6);
    let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "6")]);
    let mut upload = fcgi::Connection::open(&server.address, Role::Responder, &params).unwrap();
    upload.send_stdin(b"abc").unwrap();
    // An idle kept connection too: closed at SIGTERM, not waited for.
    let mut idle = KeptConnection::open(&server.address).unwrap();
    let r = idle
        .request(Role::Responder, &slot_params("idle.txt"), Body::Empty)
        .unwrap();
    assert_eq!(r.status, 200);
    thread::sleep(Duration::from_millis(200));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // New connections are refused once the signal is seen.
    let mut refused = false;
    for _ in 0..200 {
        if UnixStream::connect(socket(&server)).is_err() {
            refused = true;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        refused,
        "still accepting after SIGTERM; log:\n{}",
        server.log()
    );
    assert!(idle.closed_by_peer(), "the idle connection was not closed");
    assert!(
        alive(&server),
        "exited with a request in flight; log:\n{}",
        server.log()
    );
    upload.send_stdin(b"def").unwrap();
    let r = upload.finish().unwrap();
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(
        std::fs::read(env.stored(&slot.token, "term.bin")).unwrap(),
        b"abcdef"
    );
    let exit = server.wait_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "exit after SIGTERM: {exit:?}; log:\n{}",
        server.log()
    );
}

/// A new BEGIN_REQUEST with the same id in the middle of a body: the body never ended. The
/// new request is not read as body bytes; nothing is stored and the connection is closed.
#[test]
fn a_new_request_inside_a_body_is_not_taken_for_the_body() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let slot = server.slot(JID, "inside.bin", 64);
    let mut conn = KeptConnection::open(&server.address).unwrap();
    let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "64")]);
    let mut bytes = head(1, true, &params);
    bytes.extend(unpadded_record(STDIN, 1, b"first part"));
    bytes.extend(head(1, true, &slot_params("inside.txt")));
    bytes.extend(unpadded_record(STDIN, 1, &[]));
    conn.send_raw(&bytes).unwrap();
    let mut records = Vec::new();
    let ended = loop {
        match conn.read_record() {
            Ok(record) => records.push(record),
            Err(e) => break e.kind(),
        }
    };
    assert_eq!(
        ended,
        std::io::ErrorKind::UnexpectedEof,
        "the program closes the connection (not: the client's read timed out)"
    );
    let ends = records
        .iter()
        .filter(|(kind, _, _)| *kind == END_REQUEST)
        .count();
    assert_eq!(ends, 1, "one answer, for the upload only: {records:?}");
    assert!(!env.stored(&slot.token, "inside.bin").exists());
    assert!(alive(&server));
    assert_answers_slots(&server);
}

/// Kills the child on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The old crate ended the process on any `accept()` error. Out of file descriptors (EMFILE),
/// the program logs, waits, and accepts again once descriptors are free.
#[test]
fn accept_errors_are_logged_and_retried() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let socket = env.dir.path.join("emfile.sock");
    let log = env.dir.path.join("emfile.log");
    let script = format!(
        "ulimit -n 40 && exec '{}' serve --config '{}' --listen 'unix:{}'",
        common::BIN,
        env.config.display(),
        socket.display()
    );
    let mut server = KillOnDrop(
        std::process::Command::new("sh")
            .args(["-c", &script])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let address = Address::Unix(socket.clone());
    let good = || {
        fcgi::request(
            &address,
            Role::Responder,
            &slot_params("emfile.txt"),
            Body::Empty,
        )
        .map(|r| r.status)
    };
    let mut ready = false;
    for _ in 0..400 {
        if good().is_ok_and(|s| s == 200) {
            ready = true;
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    assert!(
        ready,
        "never answered; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // More idle connections than the process has descriptors left.
    let crowd: Vec<UnixStream> = (0..60)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    let mut logged = false;
    for _ in 0..200 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("accept failed")
        {
            logged = true;
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged,
        "no accept error logged with {} connections:\n{text}",
        crowd.len()
    );
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the program exited:\n{text}"
    );
    drop(crowd);
    let mut answered = false;
    for _ in 0..400 {
        if good().is_ok_and(|s| s == 200) {
            answered = true;
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        answered,
        "not answering after the descriptors were freed:\n{text}"
    );
    assert!(!text.contains("panic"), "{text}");
}

/// A connection that never sends a request is closed (after the first-request timeout, 10 s),
/// silently, and holds no worker meanwhile.
#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let env = with_workers(2);
    let server = env.serve();
    let silent: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(socket(&server)).unwrap())
        .collect();
    assert_answers_slots(&server);
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        // Ok: the program closed it; an error would be the client's timeout.
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    let log = layer_log(&server);
    assert!(!log.contains("WARN") && !log.contains("ERROR"), "{log}");
}
