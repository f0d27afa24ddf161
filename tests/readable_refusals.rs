//! Refusals a person can read (issue 11, item 9) and ranged PUTs (item 6), through the shipped
//! nginx site and Apache vhost (mod_fcgid access checker + mod_dav).
//!
//! A refused PUT reaches a browser client (Converse.js shows `responseText` to its user) with
//! the program's status (404, 409, 413, 415, 401 with `WWW-Authenticate`, 403...), its
//! one-line reason as `text/plain`, and the CORS headers exactly once, as a cross-origin
//! request (`Origin:`) sees them. URLs under the upload prefixes that are no upload get a 404
//! with the same headers. A PUT carrying `Content-Range` is refused with 400 by the web server
//! before the program is asked, stores nothing, and leaves the slot usable.
//!
//! What this file does not cover: the CGI front end (it answers for itself; tests/cgi.rs).

mod common;

use std::fs;
use std::path::Path;

use common::web;
use web::{Answer, Flavour, HMAC_PREFIX, JWT_PREFIX, Stack, available, curl};

const ALICE: &str = "alice@example.org";
const ORIGIN: &str = "Origin: https://webclient.example.net";

/// The headers a web client needs on every answer, each exactly once.
const CORS: [&str; 3] = [
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
];

fn put(url: &str, file: &Path, extra: &[&str]) -> Answer {
    let file = file.display().to_string();
    let mut args = vec!["-T", file.as_str(), "-H", ORIGIN];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

/// `answer` has `status`, a one-line text body containing `mentions`, and each CORS header
/// once.
fn expect_readable(stack: &Stack, answer: &Answer, status: u16, mentions: &str, what: &str) {
    if answer.status != status {
        stack.fail(&format!("{what}: expected {status}, got {answer:?}"));
    }
    let body = String::from_utf8_lossy(&answer.body);
    let line = body.strip_suffix('\n').unwrap_or(&body);
    let html = line.to_ascii_lowercase().contains("<html") || line.contains("<!DOCTYPE");
    if line.is_empty() || line.contains('\n') || html || !line.contains(mentions) {
        stack.fail(&format!(
            "{what}: the body should be one line of text mentioning {mentions:?}: {answer:?}"
        ));
    }
    match answer.header("content-type") {
        Some(t) if t.starts_with("text/plain") => {}
        other => stack.fail(&format!("{what}: Content-Type {other:?}: {answer:?}")),
    }
    for name in CORS {
        let count = answer.headers.iter().filter(|(n, _)| n == name).count();
        if count != 1 {
            stack.fail(&format!("{what}: {name} {count} times: {answer:?}"));
        }
    }
    if answer.header("access-control-allow-origin") != Some("*") {
        stack.fail(&format!("{what}: Access-Control-Allow-Origin: {answer:?}"));
    }
}

fn refusals_are_readable(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start(flavour);
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).expect("scratch dir");
    let five = scratch.join("five");
    fs::write(&five, b"12345").expect("write five");
    let six = scratch.join("six");
    fs::write(&six, b"123456").expect("write six");
    let plain = ["-H", "Content-Type: text/plain"];

    // Larger than the slot: 413, and the reason names the slot's size.
    let slot = stack.slot(ALICE, "a.txt", 5, "text/plain");
    let answer = put(&slot.put_url, &six, &plain);
    expect_readable(&stack, &answer, 413, "5", "PUT larger than the slot");
    // Another type than the slot's: 415, and the reason quotes it.
    let answer = put(&slot.put_url, &five, &["-H", "Content-Type: text/html"]);
    expect_readable(&stack, &answer, 415, "text/html", "PUT of another type");
    // The right PUT, then the same again: 409.
    let answer = put(&slot.put_url, &five, &plain);
    if answer.status != 201 {
        stack.fail(&format!("the right PUT after refusals: {answer:?}"));
    }
    let answer = put(&slot.put_url, &five, &plain);
    expect_readable(&stack, &answer, 409, "", "second PUT of a slot");
    // No such slot: 404, and the reason names the URL.
    let unknown = format!("{}/upload/{}/a.txt", stack.public, "0".repeat(40));
    let answer = put(&unknown, &five, &plain);
    expect_readable(&stack, &answer, 404, "a.txt", "PUT to an unknown token");
    // HMAC without a MAC: the protocol's 403, with a reason.
    let hmac = format!("{}{HMAC_PREFIX}/some-uuid/b.txt", stack.public);
    let answer = put(&hmac, &five, &plain);
    expect_readable(&stack, &answer, 403, "", "HMAC PUT without a MAC");
    // JWT without a token: 401 with the challenge, and a reason.
    let jwt = format!(
        "{}{JWT_PREFIX}/AAAAAAAAAAAAAAAAAAAAAAAA/c.txt",
        stack.public
    );
    let answer = put(&jwt, &five, &plain);
    expect_readable(&stack, &answer, 401, "Bearer", "JWT PUT without a token");
    match answer.header("www-authenticate") {
        Some(challenge) if challenge.starts_with("Bearer") => {}
        other => stack.fail(&format!("401 without a Bearer challenge: {other:?}")),
    }
    // URLs under the upload prefixes that are no upload: 404 with the same headers.
    for stray in [
        "/upload/not-a-token/a.txt",
        "/upload/",
        "/share/a.txt",
        "/file_share/a/b/c.txt",
    ] {
        let answer = curl(&["-H", ORIGIN, &format!("{}{stray}", stack.public)]);
        expect_readable(&stack, &answer, 404, "", &format!("GET {stray}"));
    }
    // Nothing of the refusals was stored.
    assert!(!stack.stored(&"0".repeat(40), "a.txt").exists());
    assert_eq!(
        fs::read(stack.stored(&slot.token, &slot.name))
            .ok()
            .as_deref(),
        Some(&b"12345"[..]),
        "the first upload stays as it was"
    );
}

#[test]
fn nginx_refusals_are_readable() {
    refusals_are_readable(Flavour::Nginx);
}

#[test]
fn apache_refusals_are_readable() {
    refusals_are_readable(Flavour::ApacheDav);
}

/// Apache's refusal page answers only as the ErrorDocument of a refusal.
#[test]
fn apache_refusal_page_is_not_reachable_directly() {
    if !available(Flavour::ApacheDav) {
        return;
    }
    let stack = Stack::start(Flavour::ApacheDav);
    for path in [
        "/_xmpp_http_upload_refused/413",
        "/_xmpp_http_upload_refused/",
    ] {
        let answer = curl(&[&format!("{}{path}", stack.public)]);
        if answer.status != 404 {
            stack.fail(&format!("GET {path}: {answer:?}"));
        }
    }
}

/// A PUT with `Content-Range` (Apache's mod_dav would write that range into a sparse file of
/// any size, and serve the partial file meanwhile) is refused with 400 before the program is
/// asked; nothing is stored and the slot still takes the whole file.
fn ranged_put_is_refused(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start(flavour);
    let five = stack.dir.path.join("five");
    fs::write(&five, b"12345").expect("write five");
    let slot = stack.slot(ALICE, "r.txt", 5, "text/plain");
    for range in [
        "bytes 1099511627770-1099511627774/1099511627775",
        "bytes 0-4/5",
        "bytes 0-4/*",
    ] {
        let answer = put(
            &slot.put_url,
            &five,
            &[
                "-H",
                "Content-Type: text/plain",
                "-H",
                &format!("Content-Range: {range}"),
            ],
        );
        expect_readable(
            &stack,
            &answer,
            400,
            "Content-Range",
            "PUT with Content-Range",
        );
        let stored = stack.stored(&slot.token, &slot.name);
        if stored.exists() {
            let len = fs::metadata(&stored).map(|m| m.len()).unwrap_or(0);
            stack.fail(&format!("a ranged PUT stored {len} bytes ({range})"));
        }
    }
    let answer = put(&slot.put_url, &five, &["-H", "Content-Type: text/plain"]);
    if answer.status != 201 {
        stack.fail(&format!("the whole file after ranged PUTs: {answer:?}"));
    }
    assert_eq!(
        fs::read(stack.stored(&slot.token, &slot.name))
            .ok()
            .as_deref(),
        Some(&b"12345"[..])
    );
}

#[test]
fn nginx_ranged_put_is_refused() {
    ranged_put_is_refused(Flavour::Nginx);
}

#[test]
fn apache_ranged_put_is_refused() {
    ranged_put_is_refused(Flavour::ApacheDav);
}
