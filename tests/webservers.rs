//! End to end through real web servers: nginx (`auth_request` + `dav_methods PUT`), Apache with
//! mod_fcgid (`FcgidAccessChecker` + mod_dav), and Apache with only `.htaccess` + CGI, each
//! started from the configuration shipped in `nginx/` or `apache/` (paths and ports templated),
//! with the built program behind it. Every request goes through the web server with `curl`.
//!
//! The external-upload protocols go through the same shipped files: an HMAC-signed upload to
//! `/share/` (BEHAVIOUR.md §7, MACs made by `openssl dgst -sha256 -hmac`) and a JWT upload to
//! `/file_share/` (BEHAVIOUR.md §7b, tokens made by python3's standard library), never signed by the code
//! under test (`tests/common/signing.rs`).
//!
//! Without nginx or apache2 these tests are skipped with a message; with `CI=true` they fail.
//! Figures of the 100 MiB uploads are printed (`cargo test --test webservers -- --nocapture`).

// Only for the independent signers in `common/signing.rs`.
mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::signing::{hmac_sha256_hex, hs256_jwt};
use common::web;
use web::{
    Answer, Flavour, HMAC_MAX, HMAC_PREFIX, HMAC_SECRET, JWT_PREFIX, JWT_SECRET, Refused,
    RssSampler, SECRET, Settings, Stack, available, curl, curl_bytes, ejabberd_encode,
    same_contents, write_pattern_file,
};

const ALICE: &str = "alice@example.org";

#[test]
fn nginx_uploads_downloads_and_refusals() {
    uploads_downloads_and_refusals(Flavour::Nginx);
}

#[test]
fn nginx_expired_slot() {
    expired_slot(Flavour::Nginx);
}

#[test]
fn nginx_large_upload() {
    large_upload(Flavour::Nginx);
}

#[test]
fn nginx_cleanup_after_retention() {
    cleanup_after_retention(Flavour::Nginx);
}

#[test]
fn nginx_external_hmac_upload() {
    external_hmac_upload(Flavour::Nginx);
}

#[test]
fn nginx_file_share_jwt_upload() {
    file_share_jwt_upload(Flavour::Nginx);
}

#[test]
fn nginx_non_utf8_header_is_refused() {
    non_utf8_header_is_refused(Flavour::Nginx);
}

#[test]
fn apache_dav_uploads_downloads_and_refusals() {
    uploads_downloads_and_refusals(Flavour::ApacheDav);
}

#[test]
fn apache_dav_expired_slot() {
    expired_slot(Flavour::ApacheDav);
}

#[test]
fn apache_dav_large_upload() {
    large_upload(Flavour::ApacheDav);
}

#[test]
fn apache_dav_cleanup_after_retention() {
    cleanup_after_retention(Flavour::ApacheDav);
}

#[test]
fn apache_dav_non_utf8_header_is_refused() {
    non_utf8_header_is_refused(Flavour::ApacheDav);
}

#[test]
fn apache_dav_external_hmac_upload() {
    external_hmac_upload(Flavour::ApacheDav);
}

#[test]
fn apache_dav_file_share_jwt_upload() {
    file_share_jwt_upload(Flavour::ApacheDav);
}

#[test]
fn apache_cgi_uploads_downloads_and_refusals() {
    uploads_downloads_and_refusals(Flavour::ApacheCgi);
}

#[test]
fn apache_cgi_expired_slot() {
    expired_slot(Flavour::ApacheCgi);
}

#[test]
fn apache_cgi_large_upload() {
    large_upload(Flavour::ApacheCgi);
}

/// PUTs `file` to `url` with `extra` curl arguments.
fn put_file(url: &str, file: &Path, extra: &[&str]) -> Answer {
    let file = file.display().to_string();
    let mut args = vec!["-T", file.as_str()];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

fn expect_status(stack: &Stack, answer: &Answer, status: u16, what: &str) {
    if answer.status != status {
        stack.fail(&format!("{what}: expected {status}, got {answer:?}"));
    }
}

fn expect_header(stack: &Stack, answer: &Answer, name: &str, wanted: &str, what: &str) {
    match answer.header(name) {
        Some(value) if value.contains(wanted) => {}
        other => stack.fail(&format!(
            "{what}: header {name} should contain {wanted:?}, is {other:?} in {answer:?}"
        )),
    }
}

/// The download headers BEHAVIOUR.md §5 asks of every shipped configuration.
fn expect_safe_download(stack: &Stack, answer: &Answer, disposition: &str, what: &str) {
    expect_header(stack, answer, "x-content-type-options", "nosniff", what);
    expect_header(
        stack,
        answer,
        "content-security-policy",
        "default-src 'none'",
        what,
    );
    expect_header(stack, answer, "content-disposition", disposition, what);
    expect_header(stack, answer, "access-control-allow-origin", "*", what);
}

fn uploads_downloads_and_refusals(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start(flavour);
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).expect("scratch dir");

    // A small text upload with a Cyrillic name, as ejabberd would hand it on.
    let text = "Привет, мир! Hello, world!\n".as_bytes();
    let text_file = scratch.join("text");
    fs::write(&text_file, text).expect("write text");
    let slot = stack.slot(
        ALICE,
        "Привет мир.txt",
        text.len() as u64,
        "text/plain; charset=utf-8",
    );
    assert_eq!(slot.name, "Привет_мир.txt", "sanitised name");
    let put = put_file(
        &slot.put_url,
        &text_file,
        &["-H", "Content-Type: text/plain; charset=utf-8"],
    );
    expect_status(&stack, &put, 201, "first PUT");
    expect_header(&stack, &put, "access-control-allow-origin", "*", "PUT");
    let stored = stack.stored(&slot.token, &slot.name);
    assert_eq!(
        fs::read(&stored).ok().as_deref(),
        Some(text),
        "stored bytes"
    );

    let get = curl(&[&slot.get_url]);
    expect_status(&stack, &get, 200, "GET");
    assert_eq!(get.body, text, "downloaded bytes");
    expect_safe_download(&stack, &get, "inline", "GET text/plain");
    expect_header(&stack, &get, "content-type", "text/plain", "GET text/plain");

    // HTML is never shown inline.
    let html = b"<script>alert(1)</script>\n";
    let html_file = scratch.join("html");
    fs::write(&html_file, html).expect("write html");
    let html_slot = stack.slot(ALICE, "page.html", html.len() as u64, "text/html");
    let put = put_file(
        &html_slot.put_url,
        &html_file,
        &["-H", "Content-Type: text/html"],
    );
    expect_status(&stack, &put, 201, "PUT html");
    let get = curl(&[&html_slot.get_url]);
    expect_status(&stack, &get, 200, "GET html");
    expect_safe_download(&stack, &get, "attachment", "GET text/html");

    // HEAD gives the length without the body.
    let head = curl(&["-I", &slot.get_url]);
    expect_status(&stack, &head, 200, "HEAD");
    expect_header(
        &stack,
        &head,
        "content-length",
        &text.len().to_string(),
        "HEAD",
    );

    // The CORS preflight of a browser client.
    let fresh = stack.slot(ALICE, "photo.jpg", 4, "image/jpeg");
    let preflight = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://webclient.example.net",
        "-H",
        "Access-Control-Request-Method: PUT",
        "-H",
        "Access-Control-Request-Headers: content-type",
        &fresh.put_url,
    ]);
    if !(preflight.status == 200 || preflight.status == 204) {
        stack.fail(&format!("preflight: {preflight:?}"));
    }
    expect_header(
        &stack,
        &preflight,
        "access-control-allow-origin",
        "*",
        "preflight",
    );
    expect_header(
        &stack,
        &preflight,
        "access-control-allow-methods",
        "PUT",
        "preflight",
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        allowed.contains("content-type"),
        "preflight must allow Content-Type: {preflight:?}"
    );
    assert!(
        !stack.stored(&fresh.token, &fresh.name).exists(),
        "a preflight stores nothing"
    );

    // The slot reused / the file overwritten: refused, the first bytes stay.
    let other = scratch.join("other");
    fs::write(&other, vec![b'x'; text.len()]).expect("write other");
    let again = put_file(
        &slot.put_url,
        &other,
        &["-H", "Content-Type: text/plain; charset=utf-8"],
    );
    expect_status(
        &stack,
        &again,
        flavour.refused_status(Refused::Exists),
        "second PUT to the same slot",
    );
    assert_eq!(
        fs::read(&stored).ok().as_deref(),
        Some(text),
        "not overwritten"
    );

    // Another type than the slot's.
    let jpeg = stack.slot(ALICE, "photo.jpg", 10, "image/jpeg");
    let ten_bytes = scratch.join("ten-bytes");
    fs::write(&ten_bytes, [7u8; 10]).expect("write ten bytes");
    let wrong_type = put_file(
        &jpeg.put_url,
        &ten_bytes,
        &["-H", "Content-Type: text/html"],
    );
    expect_status(
        &stack,
        &wrong_type,
        flavour.refused_status(Refused::WrongType),
        "PUT with another Content-Type than the slot's",
    );
    assert!(
        !stack.stored(&jpeg.token, &jpeg.name).exists(),
        "a PUT of the wrong type stores nothing"
    );

    // More bytes than the slot's size.
    let ten = stack.slot(ALICE, "ten.bin", 10, "application/octet-stream");
    let eleven = scratch.join("eleven");
    fs::write(&eleven, [7u8; 11]).expect("write eleven");
    let too_big = put_file(&ten.put_url, &eleven, &[]);
    expect_status(
        &stack,
        &too_big,
        flavour.refused_status(Refused::TooLarge),
        "PUT larger than the slot",
    );
    // Fewer bytes than the slot's size.
    let nine = scratch.join("nine");
    fs::write(&nine, [7u8; 9]).expect("write nine");
    let too_small = put_file(&ten.put_url, &nine, &[]);
    if !(400..500).contains(&too_small.status) {
        stack.fail(&format!("PUT smaller than the slot: {too_small:?}"));
    }
    // No length at all.
    let ten_file = scratch.join("ten");
    fs::write(&ten_file, [7u8; 10]).expect("write ten");
    let chunked = put_file(
        &ten.put_url,
        &ten_file,
        &["-H", "Transfer-Encoding: chunked"],
    );
    if !(400..500).contains(&chunked.status) {
        stack.fail(&format!("chunked PUT: {chunked:?}"));
    }
    assert!(
        !stack.stored(&ten.token, &ten.name).exists(),
        "refused PUTs store nothing"
    );
    // ... and the slot still takes the right size afterwards.
    let right = put_file(&ten.put_url, &ten_file, &[]);
    expect_status(&stack, &right, 201, "PUT of the right size after refusals");

    // A token nobody handed out.
    let unknown = format!(
        "{}/upload/{}/ten.bin",
        stack.public, "0123456789abcdef0123456789abcdef01234567"
    );
    let put = put_file(&unknown, &ten_file, &[]);
    expect_status(
        &stack,
        &put,
        flavour.refused_status(Refused::Unknown),
        "PUT to an unknown token",
    );
    let get = curl(&[&unknown]);
    expect_status(&stack, &get, 404, "GET of an unknown token");

    // Dot files (the program's temporary files) are neither accepted nor served.
    let hidden = format!("{}/upload/{}/.secret.part", stack.public, ten.token);
    fs::write(
        stack.upload_root.join(&ten.token).join(".secret.part"),
        b"temp",
    )
    .expect("plant a dot file");
    let get = curl(&[&hidden]);
    expect_status(&stack, &get, 404, "GET of a dot file");
    let put = put_file(&hidden, &ten_file, &[]);
    expect_status(&stack, &put, 404, "PUT of a dot file");
    let encoded = format!("{}/upload/{}/%2esecret.part", stack.public, ten.token);
    let get = curl(&[&encoded]);
    expect_status(&stack, &get, 404, "GET of an encoded dot file");

    // The slot API: only with the secret, only from allowed addresses.
    let query = format!(
        "jid={}&name=a.txt&size=3&content_type=text%2Fplain",
        ejabberd_encode(ALICE)
    );
    let without_secret = curl(&[&format!("{}/http_upload/slot/?{query}", stack.slot_api)]);
    expect_status(&stack, &without_secret, 403, "slot request without secret");
    let with_secret = format!(
        "{}/http_upload/slot/?{query}&secret={SECRET}",
        stack.slot_api
    );
    let foreign = curl(&["--interface", "127.0.0.2", &with_secret]);
    expect_status(&stack, &foreign, 403, "slot request from 127.0.0.2");
    let public_api = format!("{}/http_upload/slot/?{query}&secret={SECRET}", stack.public);
    let foreign = curl(&["--interface", "127.0.0.2", &public_api]);
    expect_status(
        &stack,
        &foreign,
        403,
        "slot request from 127.0.0.2, public host",
    );
    let bearer = curl(&[
        "-H",
        &format!("Authorization: Bearer {SECRET}"),
        &format!("{}/http_upload/slot/?{query}", stack.public),
    ]);
    expect_status(&stack, &bearer, 200, "slot request with a Bearer secret");
    let max_size = curl(&[&format!(
        "{}/http_upload/max_size/?jid={}&secret={SECRET}",
        stack.slot_api,
        ejabberd_encode(ALICE)
    )]);
    expect_status(&stack, &max_size, 200, "max_size");
    assert_eq!(
        String::from_utf8_lossy(&max_size.body).trim(),
        (200u64 * 1024 * 1024).to_string(),
        "max_size of {ALICE}"
    );
    let denied = curl(&[&format!(
        "{}/http_upload/slot/?jid=mallory%40evil.example&name=a.txt&size=3&secret={SECRET}",
        stack.slot_api
    )]);
    expect_status(&stack, &denied, 403, "slot request for a denied JID");
}

fn expired_slot(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start_with(
        flavour,
        &Settings {
            put_timeout: "1s",
            ..Settings::default()
        },
    );
    let file = stack.dir.path.join("late");
    fs::write(&file, b"too late\n").expect("write file");
    let slot = stack.slot(ALICE, "late.txt", 9, "text/plain");
    thread::sleep(Duration::from_millis(2200));
    let put = put_file(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    expect_status(
        &stack,
        &put,
        flavour.refused_status(Refused::Expired),
        "PUT after put_timeout",
    );
    assert!(
        !stack.stored(&slot.token, &slot.name).exists(),
        "an expired slot stores nothing"
    );
}

fn cleanup_after_retention(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start_with(
        flavour,
        &Settings {
            retention: "2s",
            ..Settings::default()
        },
    );
    let file = stack.dir.path.join("old");
    fs::write(&file, b"old news\n").expect("write file");
    let slot = stack.slot(ALICE, "old.txt", 9, "text/plain");
    let put = put_file(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    expect_status(&stack, &put, 201, "PUT");
    let stored = stack.stored(&slot.token, &slot.name);
    assert!(stored.exists(), "stored before the cleanup");
    thread::sleep(Duration::from_millis(3200));
    let said = stack.cleanup();
    if stored.exists() || stack.upload_root.join(&slot.token).exists() {
        stack.fail(&format!(
            "cleanup left the file or its token directory behind: {said}"
        ));
    }
    let get = curl(&[&slot.get_url]);
    expect_status(&stack, &get, 404, "GET after the cleanup");
}

fn large_upload(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start(flavour);
    const LEN: u64 = 100 * 1024 * 1024 + 7;
    let source = stack.dir.path.join("large.bin");
    write_pattern_file(&source, LEN).expect("write the large file");
    let slot = stack.slot(ALICE, "large.bin", LEN, "application/octet-stream");

    let sampler = {
        let root = stack.dir.path.clone();
        let own = stack.program_pids();
        RssSampler::start(move || {
            if own.is_empty() {
                web::pids_with_exe_under(&root)
            } else {
                own.clone()
            }
        })
    };
    let started = Instant::now();
    let put = put_file(
        &slot.put_url,
        &source,
        &["-H", "Content-Type: application/octet-stream"],
    );
    let took = started.elapsed();
    let sampled = sampler.finish();
    expect_status(&stack, &put, 201, "100 MiB PUT");
    let peak = stack.program_peak_rss().max(sampled);

    let stored = stack.stored(&slot.token, &slot.name);
    assert!(
        same_contents(&source, &stored).unwrap_or(false),
        "stored file differs from the uploaded one"
    );
    let downloaded = stack.dir.path.join("downloaded.bin");
    let downloaded_arg = downloaded.display().to_string();
    let started = Instant::now();
    let get = curl(&["-o", &downloaded_arg, &slot.get_url]);
    let get_took = started.elapsed();
    expect_status(&stack, &get, 200, "100 MiB GET");
    assert!(
        same_contents(&source, &downloaded).unwrap_or(false),
        "downloaded file differs from the uploaded one"
    );
    println!(
        "FIGURES {:?}: PUT 100 MiB in {:.2} s, GET in {:.2} s, program peak RSS (VmHWM) {}",
        flavour,
        took.as_secs_f64(),
        get_took.as_secs_f64(),
        peak.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
            .unwrap_or_else(|| "not seen".into())
    );
}

#[test]
fn apache_cgi_cleanup_after_retention() {
    cleanup_after_retention(Flavour::ApacheCgi);
}

/// The status a client sees for a PUT the program refuses on an external-upload prefix: the
/// program's own, through every flavour (issue 11, item 9; see `Flavour::refused_status`).
fn external_refusal(_flavour: Flavour, program_says: u16) -> u16 {
    program_says
}

/// Where the file of `path` (decoded, below `prefix`) lives: `<upload_root>/<prefix>/<path>`.
fn external_file(stack: &Stack, prefix: &str, path: &str) -> PathBuf {
    let mut file = stack.upload_root.join(prefix.trim_start_matches('/'));
    for segment in path.split('/') {
        file.push(segment);
    }
    file
}

/// Percent-encodes like Prosody's `mod_http_upload_external`: everything outside
/// `A-Za-z0-9.~_-`, with lower-case hex digits (`%d0%9f`).
fn prosody_hmac_encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b".~_-".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02x}"));
        }
    }
    out
}

/// Percent-encodes like Prosody 0.12's `mod_http_file_share`: upper-case escapes, while
/// `!~*'()&=+$,:@` stay as they are (docs/prosody.md, measured).
fn prosody_jwt_encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!*'()&=+$,:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// BEHAVIOUR.md §7 through the shipped config: a `v` upload shaped like ejabberd's
/// (`<sha1>/<random>/<name>`, upper-case escapes) and a `v2` upload shaped like Prosody's
/// (`<uuid>/<name>`, lower-case escapes), each downloaded with the safe headers; a wrong MAC,
/// a MAC of another size, and a size over the prefix's `max_file_size` are refused and store
/// nothing.
fn external_hmac_upload(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start(flavour);
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).expect("scratch dir");

    // ejabberd: `v` over "<path> <size>", path = sha1(bare JID)/<40 alphanumerics>/<name>.
    let text = "Отчёт за квартал, v1\n".as_bytes();
    let text_file = scratch.join("report");
    fs::write(&text_file, text).expect("write text");
    let path = "97ec78b292ab06a5b64d5cc50140b2a3fd901061/\
                Zk3pQ9xY2mN7bV4cT8rW1sL6hJ0gF5dA3eK9uI2o/Отчёт_2024.txt";
    let v = hmac_sha256_hex(HMAC_SECRET, format!("{path} {}", text.len()).as_bytes());
    let url = format!("{}{HMAC_PREFIX}/{}", stack.public, ejabberd_encode(path));
    let put = put_file(
        &format!("{url}?v={v}"),
        &text_file,
        &["-H", "Content-Type: text/plain"],
    );
    expect_status(&stack, &put, 201, "HMAC v PUT (ejabberd's shape)");
    expect_header(&stack, &put, "access-control-allow-origin", "*", "HMAC PUT");
    let stored = external_file(&stack, HMAC_PREFIX, path);
    assert_eq!(
        fs::read(&stored).ok().as_deref(),
        Some(text),
        "stored bytes at {}",
        stored.display()
    );
    let get = curl(&[&url]);
    expect_status(&stack, &get, 200, "GET of the HMAC upload");
    assert_eq!(get.body, text, "downloaded bytes");
    expect_safe_download(&stack, &get, "inline", "GET of the HMAC upload");
    expect_header(
        &stack,
        &get,
        "content-type",
        "text/plain",
        "GET of the HMAC upload",
    );
    let head = curl(&["-I", &url]);
    expect_status(&stack, &head, 200, "HEAD of the HMAC upload");
    expect_header(
        &stack,
        &head,
        "content-length",
        &text.len().to_string(),
        "HEAD of the HMAC upload",
    );

    // The same URL again, correctly signed: the file exists (409), refused, not overwritten.
    let other = scratch.join("other");
    fs::write(&other, vec![b'x'; text.len()]).expect("write other");
    let again = put_file(&format!("{url}?v={v}"), &other, &[]);
    expect_status(
        &stack,
        &again,
        external_refusal(flavour, 409),
        "HMAC PUT to an existing file",
    );
    assert_eq!(
        fs::read(&stored).ok().as_deref(),
        Some(text),
        "not overwritten"
    );

    // Prosody with `http_upload_external_protocol = "v2"`: over "<path>\0<size>\0<type>".
    let html = b"<!doctype html><script>alert(1)</script>\n";
    let html_file = scratch.join("html");
    fs::write(&html_file, html).expect("write html");
    let name = "страница (1).html";
    let path = format!("3f2504e0-4f89-11d3-9a0c-0305e82c3301/{name}");
    let v2 = hmac_sha256_hex(
        HMAC_SECRET,
        format!("{path}\0{}\0text/html", html.len()).as_bytes(),
    );
    let url = format!(
        "{}{HMAC_PREFIX}/3f2504e0-4f89-11d3-9a0c-0305e82c3301/{}",
        stack.public,
        prosody_hmac_encode(name)
    );
    let put = put_file(
        &format!("{url}?v2={v2}"),
        &html_file,
        &["-H", "Content-Type: text/html"],
    );
    expect_status(&stack, &put, 201, "HMAC v2 PUT (Prosody's shape)");
    let get = curl(&[&url]);
    expect_status(&stack, &get, 200, "GET of the v2 upload");
    assert_eq!(get.body, html, "downloaded bytes (v2)");
    expect_safe_download(&stack, &get, "attachment", "GET of an HTML upload");

    // A wrong MAC: one hex digit changed.
    let path = "3f2504e0-4f89-11d3-9a0c-0305e82c3301/tampered.txt";
    let good = hmac_sha256_hex(HMAC_SECRET, format!("{path} {}", text.len()).as_bytes());
    let bad: String = good
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == '0' { '1' } else { '0' }
            } else {
                c
            }
        })
        .collect();
    let url = format!("{}{HMAC_PREFIX}/{path}", stack.public);
    let put = put_file(
        &format!("{url}?v={bad}"),
        &text_file,
        &["-H", "Content-Type: text/plain"],
    );
    expect_status(&stack, &put, external_refusal(flavour, 403), "wrong MAC");
    // No MAC at all, and a MAC made with another secret.
    let put = put_file(&url, &text_file, &[]);
    expect_status(&stack, &put, external_refusal(flavour, 403), "no MAC");
    let foreign = hmac_sha256_hex(
        "another secret",
        format!("{path} {}", text.len()).as_bytes(),
    );
    let put = put_file(&format!("{url}?v={foreign}"), &text_file, &[]);
    expect_status(
        &stack,
        &put,
        external_refusal(flavour, 403),
        "MAC of another secret",
    );
    // A correct MAC for another size than the body's.
    let longer = hmac_sha256_hex(HMAC_SECRET, format!("{path} {}", text.len() + 1).as_bytes());
    let put = put_file(&format!("{url}?v={longer}"), &text_file, &[]);
    expect_status(
        &stack,
        &put,
        external_refusal(flavour, 403),
        "MAC of another size",
    );
    assert!(
        !external_file(&stack, HMAC_PREFIX, path).exists(),
        "refused HMAC PUTs store nothing"
    );
    let get = curl(&[&url]);
    expect_status(&stack, &get, 404, "GET of a refused HMAC upload");

    // Over the prefix's max_file_size, correctly signed.
    let big_len = HMAC_MAX + 1;
    let big = scratch.join("big");
    write_pattern_file(&big, big_len).expect("write big");
    let path = "3f2504e0-4f89-11d3-9a0c-0305e82c3301/big.bin";
    let v = hmac_sha256_hex(HMAC_SECRET, format!("{path} {big_len}").as_bytes());
    let put = put_file(
        &format!("{}{HMAC_PREFIX}/{path}?v={v}", stack.public),
        &big,
        &[],
    );
    expect_status(
        &stack,
        &put,
        external_refusal(flavour, 413),
        "signed PUT over max_file_size",
    );
    assert!(
        !external_file(&stack, HMAC_PREFIX, path).exists(),
        "an over-limit PUT stores nothing"
    );
}

/// The claims Prosody 0.12's mod_http_file_share puts into an upload token (BEHAVIOUR.md §7b).
fn file_share_claims(slot: &str, name: &str, size: usize, filetype: &str) -> String {
    let now = unix_now();
    format!(
        r#"{{"sub":"alice@example.org","iat":{now},"exp":{exp},"slot":"{slot}","expires":{expires},"filename":"{name}","filesize":{size},"filetype":"{filetype}"}}"#,
        exp = now + 300,
        expires = now + 7 * 86400,
    )
}

/// BEHAVIOUR.md §7b through the shipped config: a token made by python3 uploads a Cyrillic name with
/// Prosody's escaping, the file is downloaded with the safe headers; a token signed with another
/// secret, a tampered token and no token are refused with 401 and `WWW-Authenticate: Bearer`
/// (nginx and Apache alike), a token of another slot with the program's 400, and none of them
/// stores anything.
fn file_share_jwt_upload(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start(flavour);
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).expect("scratch dir");

    let text = "Привет, мир! (JWT)\n".as_bytes();
    let text_file = scratch.join("text");
    fs::write(&text_file, text).expect("write text");
    let slot = "74KQO9kuJXvV5xuAbN7d-M_8";
    let name = "Привет мир (1) ;x.txt";
    let filetype = "text/plain; charset=utf-8";
    let token = hs256_jwt(
        JWT_SECRET,
        &file_share_claims(slot, name, text.len(), filetype),
    );
    let url = format!(
        "{}{JWT_PREFIX}/{slot}/{}",
        stack.public,
        prosody_jwt_encode(name)
    );
    let bearer = format!("Authorization: Bearer {token}");
    let content_type = format!("Content-Type: {filetype}");
    let put = put_file(&url, &text_file, &["-H", &bearer, "-H", &content_type]);
    expect_status(&stack, &put, 201, "JWT PUT");
    expect_header(&stack, &put, "access-control-allow-origin", "*", "JWT PUT");
    let stored = external_file(&stack, JWT_PREFIX, &format!("{slot}/{name}"));
    assert_eq!(
        fs::read(&stored).ok().as_deref(),
        Some(text),
        "stored bytes at {}",
        stored.display()
    );
    // The download needs no token (Prosody's GET URL is the PUT URL, without headers).
    let get = curl(&[&url]);
    expect_status(&stack, &get, 200, "GET of the JWT upload");
    assert_eq!(get.body, text, "downloaded bytes");
    expect_safe_download(&stack, &get, "inline", "GET of the JWT upload");
    expect_header(
        &stack,
        &get,
        "content-type",
        "text/plain",
        "GET of the JWT upload",
    );

    // The same slot again with its valid token: the file exists, refused, not overwritten.
    let other = scratch.join("other");
    fs::write(&other, vec![b'x'; text.len()]).expect("write other");
    let again = put_file(&url, &other, &["-H", &bearer, "-H", &content_type]);
    expect_status(
        &stack,
        &again,
        external_refusal(flavour, 409),
        "JWT PUT to a used slot",
    );
    assert_eq!(
        fs::read(&stored).ok().as_deref(),
        Some(text),
        "not overwritten"
    );

    // Bad tokens for a fresh slot.
    let slot = "Qm9uam91ciB0b3V0IGxlIG1v";
    let name = "fresh.txt";
    let claims = file_share_claims(slot, name, text.len(), "text/plain");
    let url = format!("{}{JWT_PREFIX}/{slot}/{name}", stack.public);
    let good = hs256_jwt(JWT_SECRET, &claims);
    let foreign = hs256_jwt("another secret", &claims);
    // The payload of another file (here: another size), with the valid token's signature.
    let forged_payload = hs256_jwt(
        "irrelevant",
        &file_share_claims(slot, name, text.len() + 1, "text/plain"),
    );
    let tampered = {
        let good_parts: Vec<&str> = good.split('.').collect();
        let forged_parts: Vec<&str> = forged_payload.split('.').collect();
        format!("{}.{}.{}", good_parts[0], forged_parts[1], good_parts[2])
    };
    let unauthorized: [(&str, Option<String>); 3] = [
        ("token signed with another secret", Some(foreign)),
        ("tampered payload", Some(tampered)),
        ("no Authorization header", None),
    ];
    for (what, token) in unauthorized {
        let header = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["-H", "Content-Type: text/plain"];
        if let Some(header) = &header {
            args.extend(["-H", header.as_str()]);
        }
        let put = put_file(&url, &text_file, &args);
        expect_status(&stack, &put, 401, what);
        // Both pass the program's challenge on (Apache: mod_fcgid copies the access
        // checker's headers into its 401).
        expect_header(&stack, &put, "www-authenticate", "Bearer", what);
    }
    // A valid token, but of another slot than the URL's.
    let elsewhere = format!(
        "{}{JWT_PREFIX}/AAAAAAAAAAAAAAAAAAAAAAAA/{name}",
        stack.public
    );
    let put = put_file(
        &elsewhere,
        &text_file,
        &[
            "-H",
            "Content-Type: text/plain",
            "-H",
            &format!("Authorization: Bearer {good}"),
        ],
    );
    expect_status(
        &stack,
        &put,
        external_refusal(flavour, 400),
        "token of another slot",
    );
    assert!(
        !external_file(&stack, JWT_PREFIX, &format!("{slot}/{name}")).exists()
            && !external_file(
                &stack,
                JWT_PREFIX,
                &format!("AAAAAAAAAAAAAAAAAAAAAAAA/{name}")
            )
            .exists(),
        "refused JWT PUTs store nothing"
    );
    // ... and the valid token still works afterwards.
    let put = put_file(
        &url,
        &text_file,
        &[
            "-H",
            "Content-Type: text/plain",
            "-H",
            &format!("Authorization: Bearer {good}"),
        ],
    );
    expect_status(&stack, &put, 201, "JWT PUT after refusals");
}

/// A header value with a byte that is not UTF-8 reads as absent (that param only: our FastCGI
/// layer keeps params as bytes). The PUT must still be refused as a decision (with the
/// program's status), never be received by the program as if it were the body's destination,
/// and store nothing: the program fails closed on the param it misses. Afterwards the slot
/// still takes the right upload.
fn non_utf8_header_is_refused(flavour: Flavour) {
    if !available(flavour) {
        return;
    }
    let stack = Stack::start(flavour);
    let body = b"ten bytes\n";
    let file = stack.dir.path.join("ten");
    fs::write(&file, body).expect("write file");
    let slot = stack.slot(ALICE, "ten.txt", body.len() as u64, "text/plain");
    let file_arg = file.display().to_string();
    let header = OsStr::from_bytes(b"Content-Type: text/plain\xff");
    let put = curl_bytes(&[
        OsStr::new("-T"),
        OsStr::new(&file_arg),
        OsStr::new("-H"),
        header,
        OsStr::new(&slot.put_url),
    ]);
    // The program's own status for what it saw: with every parameter it is the wrong type
    // (415); where the FastCGI library dropped the rest it is what is missing then — nginx
    // sends HTTP_CONTENT_LENGTH after the Content-Type (411), mod_fcgid REQUEST_URI (403,
    // "not an upload URL").
    let expected: &[u16] = match flavour {
        Flavour::Nginx => &[415, 411],
        Flavour::ApacheDav => &[415, 403],
        Flavour::ApacheCgi => &[flavour.refused_status(Refused::WrongType)],
    };
    if !expected.contains(&put.status) {
        stack.fail(&format!(
            "PUT with a non-UTF-8 Content-Type: expected one of {expected:?}, got {put:?}"
        ));
    }
    assert!(
        !stack.stored(&slot.token, &slot.name).exists(),
        "a PUT with a non-UTF-8 header stores nothing"
    );
    let put = put_file(&slot.put_url, &file, &["-H", "Content-Type: text/plain"]);
    expect_status(&stack, &put, 201, "the same slot, well-formed");
}
