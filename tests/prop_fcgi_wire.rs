//! Property tests against the running binary: random bytes, and random FastCGI records (well
//! and badly formed: wrong versions, short BEGIN_REQUESTs, unknown roles and types, params of
//! hostile text, bodies that lie about their length) thrown at its socket. After every case the
//! process must still be alive and answer a good slot request; at the end nothing may have been
//! written outside the upload root, and inside it only the one file that a well-formed upload
//! may create, with exactly the bytes of that upload.
//!
//! The socket is private to the web server in every shipped setup (SECURITY.md); this is
//! defence in depth for the parts of the stack that parse the wire: our FastCGI layer
//! (`src/fcgi/`) and `Request::from_params`. The good request after each case goes alternately
//! over a fresh connection and over one kept connection (FCGI_KEEP_CONN) that must stay usable
//! through the whole run.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

use common::fcgi::{self, Address, Body, KeptConnection, Role};
use common::{ALLOW_ALL, Env, Server, standard_config};

const BEGIN_REQUEST: u8 = 1;
const ABORT_REQUEST: u8 = 2;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const GET_VALUES: u8 = 9;

/// Cases of each property: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One record with an explicit version byte, request id and padding.
fn record(version: u8, kind: u8, id: u16, content: &[u8], padding: u8) -> Vec<u8> {
    let mut out = vec![version, kind];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.push(padding);
    out.push(0);
    out.extend_from_slice(content);
    out.extend(std::iter::repeat_n(0u8, padding as usize));
    out
}

/// What one case sends on one connection.
#[derive(Debug, Clone)]
enum Piece {
    /// Any bytes.
    Raw(Vec<u8>),
    /// A record of any type and content (version 1).
    Record { kind: u8, id: u16, content: Vec<u8> },
    /// A BEGIN_REQUEST with any role and flags (content possibly short).
    Begin { role: u16, flags: u8, short: bool },
    /// PARAMS of these pairs (name-value encoded), in one or two records.
    Params {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        split: bool,
    },
    /// STDIN bytes.
    Stdin(Vec<u8>),
    /// The empty record that ends PARAMS or STDIN.
    End(u8),
    /// A record with another version byte.
    BadVersion(u8),
}

fn encode_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        for len in [name.len(), value.len()] {
            if len < 128 {
                out.push(len as u8);
            } else {
                out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
            }
        }
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out
}

impl Piece {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Piece::Raw(bytes) => bytes.clone(),
            Piece::Record { kind, id, content } => record(1, *kind, *id, content, 0),
            Piece::Begin { role, flags, short } => {
                let mut content = role.to_be_bytes().to_vec();
                content.push(*flags);
                content.extend_from_slice(&[0; 5]);
                if *short {
                    content.truncate(1);
                }
                record(1, BEGIN_REQUEST, 1, &content, 0)
            }
            Piece::Params { pairs, split } => {
                let encoded = encode_pairs(pairs);
                let mut out = Vec::new();
                if *split && encoded.len() > 1 {
                    let (a, b) = encoded.split_at(encoded.len() / 2);
                    out.extend(record(1, PARAMS, 1, a, 3));
                    out.extend(record(1, PARAMS, 1, b, 0));
                } else {
                    out.extend(record(1, PARAMS, 1, &encoded, 0));
                }
                out
            }
            Piece::Stdin(bytes) => record(1, STDIN, 1, bytes, 1),
            Piece::End(kind) => record(1, *kind, 1, &[], 0),
            Piece::BadVersion(version) => record(*version, BEGIN_REQUEST, 1, &[0, 1, 0], 0),
        }
    }
}

/// A parameter value: the real ones the program reads, hostile text, or bytes that are not
/// UTF-8 (which make that param read as absent).
fn param_value(token: String) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"PUT".to_vec()),
        Just(b"GET".to_vec()),
        Just(b"1".to_vec()),
        Just(b"127.0.0.1".to_vec()),
        Just(b"/http_upload/slot/?jid=a@example.org&name=x.txt&size=4".to_vec()),
        Just(format!("/upload/{token}/ok.txt").into_bytes()),
        Just(format!("/upload/{token}/..%2f..%2fescape.txt").into_bytes()),
        Just(format!("/upload/{token}/../../escape.txt").into_bytes()),
        Just(b"/upload/../../../escape/x.txt".to_vec()),
        Just(b"4".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"18446744073709551616".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
        "[ -~]{0,40}".prop_map(String::into_bytes),
    ]
}

fn param_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"REQUEST_METHOD".to_vec()),
        Just(b"REQUEST_URI".to_vec()),
        Just(b"QUERY_STRING".to_vec()),
        Just(b"CONTENT_LENGTH".to_vec()),
        Just(b"HTTP_CONTENT_LENGTH".to_vec()),
        Just(b"XHU_AUTHORIZE".to_vec()),
        Just(b"REMOTE_ADDR".to_vec()),
        Just(b"HTTP_TRANSFER_ENCODING".to_vec()),
        prop::collection::vec(any::<u8>(), 0..20),
    ]
}

fn piece(token: String) -> impl Strategy<Value = Piece> {
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Piece::Raw),
        2 => (any::<u8>(), any::<u16>(), prop::collection::vec(any::<u8>(), 0..200))
            .prop_map(|(kind, id, content)| Piece::Record { kind, id, content }),
        3 => (prop_oneof![Just(1u16), Just(2), Just(3), any::<u16>()], any::<u8>(), prop::bool::weighted(0.1))
            .prop_map(|(role, flags, short)| Piece::Begin { role, flags: flags & 0x7f, short }),
        4 => (prop::collection::vec((param_name(), param_value(token)), 0..10), any::<bool>())
            .prop_map(|(pairs, split)| Piece::Params { pairs, split }),
        2 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Piece::Stdin),
        2 => prop_oneof![Just(PARAMS), Just(STDIN), Just(ABORT_REQUEST), Just(GET_VALUES)].prop_map(Piece::End),
        1 => prop_oneof![Just(0u8), Just(2), any::<u8>()].prop_map(Piece::BadVersion),
    ]
}

/// Sends `bytes` on a fresh connection, half-closes, and reads what comes back (bounded).
fn throw(socket: &Path, bytes: &[u8], close_early: bool) -> Vec<u8> {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return Vec::new();
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    if close_early {
        return Vec::new();
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.take(1 << 20).read_to_end(&mut answer);
    answer
}

fn alive(server: &Server) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", server.pid()))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The good request every case must still get an answer to.
fn good_request(server: &Server) -> Result<(), String> {
    let params = fcgi::request_params(
        "GET",
        "/http_upload/slot/?jid=probe@example.org&name=probe.txt&size=1",
        &[],
    );
    match fcgi::request(&server.address, Role::Responder, &params, Body::Empty) {
        Ok(response) if response.status == 200 => Ok(()),
        Ok(response) => Err(format!("good request answered {response}")),
        Err(e) => Err(format!("good request failed: {e}")),
    }
}

/// Every path under the test dir except the upload root, the database files and the logs.
fn outside_root(env: &Env) -> Vec<String> {
    env.all_files()
        .into_iter()
        .filter(|p| {
            !(p == "files"
                || p.starts_with("files/")
                || p.starts_with("uploads.sqlite3")
                || p.ends_with(".log")
                || p.ends_with(".sock"))
        })
        .collect()
}

#[test]
fn random_bytes_and_records_never_kill_the_program_or_escape_the_root() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let Address::Unix(socket) = server.address.clone() else {
        unreachable!()
    };
    // One real slot, so that random PUTs can hit a real token.
    let slot = server.slot("fuzz@example.org", "ok.txt", 4);
    let before = outside_root(&env);

    let token = slot.token.clone();
    let strategy = (
        prop::collection::vec(piece(token.clone()), 1..8),
        prop::bool::weighted(0.2),
    );
    let mut runner = TestRunner::new(RunnerConfig {
        cases: runner_cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let sent_bytes = std::cell::Cell::new(0usize);
    let kept = std::cell::RefCell::new(KeptConnection::open(&server.address).unwrap());
    let case = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |(pieces, close_early)| {
        let bytes: Vec<u8> = pieces.iter().flat_map(Piece::bytes).collect();
        sent_bytes.set(sent_bytes.get() + bytes.len());
        throw(&socket, &bytes, close_early);
        if !alive(&server) {
            return Err(TestCaseError::fail(format!(
                "the program died; log:\n{}",
                server.log()
            )));
        }
        case.set(case.get() + 1);
        if case.get().is_multiple_of(2) {
            return good_request(&server).map_err(TestCaseError::fail);
        }
        let params = fcgi::request_params(
            "GET",
            "/http_upload/slot/?jid=probe@example.org&name=kept.txt&size=1",
            &[],
        );
        match kept
            .borrow_mut()
            .request(Role::Responder, &params, Body::Empty)
        {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(TestCaseError::fail(format!("kept connection answered {r}"))),
            Err(e) => Err(TestCaseError::fail(format!("kept connection failed: {e}"))),
        }
    });
    if let Err(e) = result {
        panic!("{e}\nserver log:\n{}", server.log());
    }

    // A well-formed, well-sized upload after all that still works, and nothing else was written.
    let put = common::Put::of(b"data");
    let response = server.put(common::PutMode::SelfWrite, &slot.put_path, &put);
    assert!(
        response.status == 201 || response.status == 409,
        "the real upload after fuzzing: {response}"
    );
    let stored = env.stored(&slot.token, "ok.txt");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        b"data",
        "stored file is exactly the one well-sized body"
    );
    for path in env.upload_tree() {
        let parts: Vec<&str> = path.split('/').collect();
        assert!(
            parts.len() <= 2 && xmpp_http_upload::files::is_token(parts[0]),
            "unexpected path under the upload root: {path}"
        );
        if parts.len() == 2 {
            assert_eq!(
                parts[1], "ok.txt",
                "only the slot's own file may exist: {path}"
            );
        }
    }
    assert_eq!(
        outside_root(&env),
        before,
        "something was written outside the upload root"
    );
    eprintln!(
        "FIGURES prop_fcgi_wire: {} cases, {} bytes thrown, program alive",
        runner_cases(),
        sent_bytes.get()
    );
}

fn runner_cases() -> u32 {
    cases(1500)
}

/// Bodies that lie about their length: declared size and sent size differ in every way, in
/// one or many STDIN records, with the connection closed early or not. Only an exact body
/// may be stored, and never under a name other than the slot's.
#[test]
fn lying_bodies_never_leave_a_file() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let Address::Unix(socket) = server.address.clone() else {
        unreachable!()
    };
    let mut runner = TestRunner::new(RunnerConfig {
        cases: cases(300),
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    // Declared and sent sizes: the slot's size, one off either way, or anything.
    let around = |size: u64| {
        prop_oneof![
            3 => Just(size),
            1 => Just(size.saturating_sub(1)),
            1 => Just(size + 1),
            1 => 0u64..4000,
        ]
    };
    let strategy = (1u64..3000).prop_flat_map(move |size| {
        (
            Just(size),
            prop_oneof![
                4 => around(size).prop_map(|n| Some(n.to_string())),
                1 => Just(None),
                1 => Just(Some("-1".to_string())),
                1 => Just(Some("99999999999999999999".to_string())),
                1 => Just(Some(format!(" {size}"))),
            ],
            around(size).prop_map(|n| n as usize),
            1usize..5,
            prop::bool::weighted(0.2),
        )
    });
    let exact_uploads = std::cell::Cell::new(0u32);
    let case = std::cell::Cell::new(0u8);
    let result = runner.run(&strategy, |(size, declared, sent, records, close)| {
        case.set(case.get().wrapping_add(1));
        let keep = case.get() % 2;
        let slot = server.slot("liar@example.org", "body.bin", size);
        let body = common::body_of(sent, size as u32);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(length) = &declared {
            headers.push(("Content-Length", length));
        }
        let params = fcgi::request_params("PUT", &slot.put_path, &headers);
        let mut bytes = record(1, BEGIN_REQUEST, 1, &[0, 1, keep, 0, 0, 0, 0, 0], 0);
        bytes.extend(record(1, PARAMS, 1, &fcgi::encode_params(&params), 0));
        bytes.extend(record(1, PARAMS, 1, &[], 0));
        let chunk = body.len().div_ceil(records).max(1);
        for part in body.chunks(chunk) {
            bytes.extend(record(1, STDIN, 1, part, 0));
        }
        if !close {
            bytes.extend(record(1, STDIN, 1, &[], 0));
        }
        let answer = throw(&socket, &bytes, false);
        let text = String::from_utf8_lossy(&answer).to_string();
        let stored = env.stored(&slot.token, "body.bin");
        let exact =
            declared.as_deref().map(str::trim) == Some(&size.to_string()) && sent as u64 == size;
        if stored.exists() {
            prop_assert!(
                exact,
                "a file was stored for size {size}, declared {declared:?}, sent {sent}: {text:?}"
            );
            prop_assert_eq!(std::fs::read(&stored).unwrap(), body.clone());
            exact_uploads.set(exact_uploads.get() + 1);
        } else if exact && !close {
            return Err(TestCaseError::fail(format!(
                "an exact upload was not stored: {text:?}"
            )));
        }
        prop_assert!(
            close || !text.contains("Status: 5"),
            "a lying body got a server error: {text:?}"
        );
        let leftovers: Vec<String> = env
            .upload_tree()
            .into_iter()
            .filter(|p| p.starts_with(&slot.token) && p.ends_with(".part"))
            .collect();
        prop_assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        for part in &leftovers {
            // Never served, whatever the name.
            let name = part.rsplit('/').next().unwrap();
            let get = server.get(&format!("/upload/{}/{name}", slot.token));
            prop_assert!(matches!(get.status, 400 | 404), "GET of {part}: {get}");
        }
        prop_assert!(alive(&server));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\nserver log:\n{}", server.log());
    }
    eprintln!(
        "FIGURES lying bodies: {} cases, {} exact uploads stored",
        cases(300),
        exact_uploads.get()
    );
}

/// A PARAMS stream of 30,000 tiny pairs (the old `fastcgi` crate parsed them recursively and
/// overflowed its stack, aborting the process): refused with a 400, the program alive.
#[test]
fn param_flood_on_the_raw_socket() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let Address::Unix(socket) = server.address.clone() else {
        unreachable!()
    };
    let mut content = Vec::new();
    for i in 0..30_000u32 {
        let name = format!("P{i}");
        content.push(name.len() as u8);
        content.push(1);
        content.extend_from_slice(name.as_bytes());
        content.push(b'x');
    }
    let mut bytes = record(1, BEGIN_REQUEST, 1, &[0, 1, 0, 0, 0, 0, 0, 0], 0);
    for chunk in content.chunks(65_000) {
        bytes.extend(record(1, PARAMS, 1, chunk, 0));
    }
    bytes.extend(record(1, PARAMS, 1, &[], 0));
    bytes.extend(record(1, STDIN, 1, &[], 0));
    let answer = String::from_utf8_lossy(&throw(&socket, &bytes, false)).to_string();
    assert!(answer.contains("Status: 400"), "{answer:?}");
    assert!(
        answer.contains("more than 1000 FastCGI parameters"),
        "{answer:?}"
    );
    assert!(alive(&server), "the program died; log:\n{}", server.log());
    good_request(&server).unwrap();
}

/// A FastCGI stream that ends in the middle of a self-written body (the web server's
/// connection dropped because the client went away) must leave nothing behind.
#[test]
fn cut_stream_leaves_no_temporary_file() {
    let env = Env::new(&standard_config(ALLOW_ALL));
    let server = env.serve();
    let Address::Unix(socket) = server.address.clone() else {
        unreachable!()
    };
    let slot = server.slot("cut@example.org", "cut.bin", 10);
    let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "10")]);
    let mut bytes = record(1, BEGIN_REQUEST, 1, &[0, 1, 0, 0, 0, 0, 0, 0], 0);
    bytes.extend(record(1, PARAMS, 1, &fcgi::encode_params(&params), 0));
    bytes.extend(record(1, PARAMS, 1, &[], 0));
    bytes.extend(record(1, STDIN, 1, b"12345", 0));
    throw(&socket, &bytes, false);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!env.stored(&slot.token, "cut.bin").exists());
    let tree = env.upload_tree();
    assert!(
        tree.iter().all(|p| !p.ends_with(".part")),
        "temporary file left after a cut stream: {tree:?}"
    );
}
