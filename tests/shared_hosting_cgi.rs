//! Shared hosting under mod_cgi: the shipped `apache/shared-hosting/` files and the program as
//! plain CGI, behind a real Apache with mpm_prefork and mod_cgi (what hosts that offer mod_php
//! run; Debian's apache2 has both) instead of mpm_event and mod_cgid (tests/shared_hosting.rs).
//! Under mod_cgi each Apache child forks the program itself and pipes the body to it, so what
//! mod_cgid's daemon does differently is checked again here: an upload end to end (20 MiB
//! streamed, the same bytes back, the download headers), the refusals with the program's
//! status and nothing stored, an aborted body leaving nothing behind, and a query that is
//! never a command line (RFC 3875 §4.4 argv, which mod_cgi builds too).
//!
//! Without apache2, mod_cgi or mpm_prefork these tests are skipped with a message; with
//! `CI=true` they fail.

mod common;

use std::fs;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, web};
use web::{
    CgiRunner, Flavour, SECRET, Settings, Stack, available, curl, port_is_open, put_file_raw,
    same_contents, unused_port, write_pattern_file,
};

const ALICE: &str = "alice@example.org";
const MIB: u64 = 1 << 20;

/// True when Apache with mod_cgi and mpm_prefork can run here; otherwise skips (or, under
/// `CI=true`, fails).
fn prefork_cgi_available() -> bool {
    if !available(Flavour::ApacheCgi) {
        return false;
    }
    let missing: Vec<&str> = ["mod_cgi.so", "mod_mpm_prefork.so"]
        .into_iter()
        .filter(|m| !Path::new("/usr/lib/apache2/modules").join(m).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "apache mod_cgi: missing {} (Debian: apache2)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("SKIPPED {message}");
    false
}

/// The shared-hosting stack under mpm_prefork + mod_cgi; fails unless Apache says it runs so.
fn start() -> Stack {
    let stack = Stack::start_with(
        Flavour::ApacheCgi,
        &Settings {
            cgi: CgiRunner::PreforkCgi,
            ..Settings::default()
        },
    );
    // Apache may write its start-up lines just after the port opens.
    let log = stack.dir.path.join("logs/error.log");
    let prefork = wait_until(Duration::from_secs(10), || {
        fs::read_to_string(&log).is_ok_and(|text| text.contains("mpm_prefork:notice"))
    });
    if !prefork {
        stack.fail("Apache did not start with mpm_prefork");
    }
    stack
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

#[test]
fn uploads_downloads_and_refusals_under_mod_cgi() {
    if !prefork_cgi_available() {
        return;
    }
    let stack = start();

    // A text file, stored by the program and served by Apache with the download headers.
    let body = b"hello from mod_cgi\n";
    let slot = stack.slot(ALICE, "hello.txt", body.len() as u64, "text/plain");
    let file = stack.scratch_file("hello.txt", body);
    let put = put_file_raw(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    assert_eq!(put.status, 201, "PUT: {put:?}\n{}", stack.logs());
    let stored = stack.stored(&slot.token, &slot.name);
    assert_eq!(fs::read(&stored).expect("stored file"), body);
    let get = curl(&[&slot.get_url]);
    assert_eq!(
        (get.status, get.body.as_slice()),
        (200, &body[..]),
        "{get:?}"
    );
    assert_eq!(get.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(get.header("content-disposition"), Some("inline"));

    // The same slot again: the program's 409, the file unchanged.
    let other = stack.scratch_file("other.txt", b"XXXXXXXXXXXXXXXXXXX");
    let again = put_file_raw(&slot.put_url, &other, &["-H", "Content-Type: text/plain"]);
    assert_eq!(again.status, 409, "second PUT: {again:?}");
    assert_eq!(fs::read(&stored).expect("stored file"), body);

    // Another size than the slot's: 413, nothing stored.
    let small = stack.slot(ALICE, "small.txt", 5, "text/plain");
    let too_big = put_file_raw(&small.put_url, &other, &["-H", "Content-Type: text/plain"]);
    assert_eq!(too_big.status, 413, "PUT of another size: {too_big:?}");
    assert!(token_dir_entries(&stack, &small.token).is_empty());

    // An unknown slot: 404.
    let unknown = put_file_raw(
        &format!("{}/upload/{}/x.txt", stack.public, "0".repeat(40)),
        &other,
        &[],
    );
    assert_eq!(unknown.status, 404, "unknown slot: {unknown:?}");

    // 20 MiB streamed through mod_cgi's pipe: the same bytes back.
    let big_file = stack.dir.path.join("scratch-big.bin");
    write_pattern_file(&big_file, 20 * MIB).expect("write the big file");
    let big = stack.slot(ALICE, "big.bin", 20 * MIB, "application/octet-stream");
    let put = put_file_raw(
        &big.put_url,
        &big_file,
        &["-H", "Content-Type: application/octet-stream"],
    );
    assert_eq!(put.status, 201, "20 MiB PUT: {put:?}\n{}", stack.logs());
    let back = stack.dir.path.join("scratch-big.back");
    let back_arg = back.display().to_string();
    let get = curl(&["-o", &back_arg, &big.get_url]);
    assert_eq!(get.status, 200, "{get:?}");
    assert!(
        same_contents(&big_file, &back).expect("compare"),
        "20 MiB download differs"
    );
}

#[test]
fn an_aborted_put_leaves_nothing_under_mod_cgi() {
    if !prefork_cgi_available() {
        return;
    }
    let stack = start();
    let slot = stack.slot(ALICE, "aborted.bin", 4 * MIB, "application/octet-stream");
    let path = slot
        .put_url
        .strip_prefix(&stack.public)
        .expect("PUT URL on the host");
    let host = stack.public.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).expect("connect to Apache");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        4 * MIB
    );
    stream.write_all(head.as_bytes()).expect("send the head");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..16 {
        stream.write_all(&chunk).expect("send a part of the body");
    }
    // The program is running (mod_cgi starts it before it pipes the body on; its log on
    // stderr is read only later, so it cannot tell); let it receive what was sent, then the
    // client goes away mid-body.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.program_pids().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    let _ = stream.shutdown(Shutdown::Both);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stack.program_pids().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    if !stack.program_pids().is_empty() {
        stack.fail("the program still runs a minute after its client went away");
    }
    let left = token_dir_entries(&stack, &slot.token);
    if !left.is_empty() {
        stack.fail(&format!("the aborted upload left {left:?} behind"));
    }
    // The slot is still usable: the whole file, sent again, is stored.
    let file = stack.dir.path.join("scratch-whole.bin");
    write_pattern_file(&file, 4 * MIB).expect("write the file");
    let put = put_file_raw(
        &slot.put_url,
        &file,
        &["-H", "Content-Type: application/octet-stream"],
    );
    assert_eq!(
        put.status,
        201,
        "PUT after the aborted one: {put:?}\n{}",
        stack.logs()
    );
}

#[test]
fn a_query_is_never_a_command_line_under_mod_cgi() {
    if !prefork_cgi_available() {
        return;
    }
    let stack = start();
    let slot_get = |query: &str| {
        curl(&[
            "--max-time",
            "15",
            "-H",
            &format!("Authorization: Bearer {SECRET}"),
            &format!("{}/http_upload/slot/?{query}", stack.slot_api),
        ])
    };
    // The answer to a query without `jid`: what every query below must get.
    let ordinary = slot_get("name=x");
    assert_eq!(ordinary.status, 400, "control request: {ordinary:?}");
    let port = unused_port();
    let runserver = format!("runserver+--listen+127.0.0.1:{port}");
    for query in [runserver.as_str(), "check-config", "--help", "--version"] {
        let answer = slot_get(query);
        assert_eq!(
            (answer.status, &answer.body),
            (ordinary.status, &ordinary.body),
            "?{query} was not an ordinary slot request"
        );
    }
    assert!(!port_is_open(port), "a query started a server on {port}");
}

/// The body limit of shared hosting is Apache's `LimitRequestBody` (1 GiB by default since
/// Apache 2.4.54; the shipped `.htaccess` files set none), which a customer may set in
/// `public_html/.htaccess` — the line INSTALL.md gives. Here lowered to 1 MiB: a slot of 2 MiB
/// is granted by the program (its rule allows 200 MiB) and Apache refuses the PUT with 413,
/// storing nothing; `check-config` warned about exactly that, naming the `.htaccess` and both
/// numbers.
#[test]
fn limit_request_body_in_the_htaccess_caps_uploads_and_check_config_says_so() {
    if !prefork_cgi_available() {
        return;
    }
    let stack = start();
    let htaccess = stack.dir.path.join("htdocs/.htaccess");
    let mut text = fs::read_to_string(&htaccess).expect("read .htaccess");
    text.push_str("\nLimitRequestBody 1048576\n");
    fs::write(&htaccess, text).expect("write .htaccess");

    let check = stack.run_program("check-config");
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "check-config: {said}");
    let warning = said
        .lines()
        .find(|l| l.contains("refuses larger ones with 413"))
        .unwrap_or_else(|| panic!("no body-limit warning:\n{said}"));
    for expected in [
        "LimitRequestBody 1048576",
        &htaccess.display().to_string(),
        &(200 * MIB).to_string(),
    ] {
        assert!(warning.contains(expected), "{expected:?} not in {warning}");
    }

    let file = stack.dir.path.join("scratch-2mib.bin");
    write_pattern_file(&file, 2 * MIB).expect("write the file");
    let slot = stack.slot(ALICE, "two.bin", 2 * MIB, "application/octet-stream");
    let put = put_file_raw(
        &slot.put_url,
        &file,
        &["-H", "Content-Type: application/octet-stream"],
    );
    assert_eq!(put.status, 413, "2 MiB PUT over LimitRequestBody: {put:?}");
    assert!(token_dir_entries(&stack, &slot.token).is_empty());

    // Below the limit uploads work as before.
    let small = stack.scratch_file("small.bin", &[7u8; 1000]);
    let slot = stack.slot(ALICE, "small.bin", 1000, "application/octet-stream");
    let put = put_file_raw(
        &slot.put_url,
        &small,
        &["-H", "Content-Type: application/octet-stream"],
    );
    assert_eq!(put.status, 201, "small PUT: {put:?}\n{}", stack.logs());
}
