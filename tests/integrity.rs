//! What the program approves is exactly what is stored, once, for as long as promised — shown
//! through the real web servers that write the files (nginx `dav_methods PUT` after
//! `auth_request`, Apache mod_dav after `FcgidAccessChecker`), started from the shipped configs:
//!
//! - a name spelled so that the web server would store it under another name (encoded twice)
//!   is refused, so one slot cannot become many files outside the quota (issue 11.3);
//! - a second PUT of a slot or signed URL cannot replace the first body, even when the first
//!   is still trickling in when the second arrives (11.4);
//! - retention counts from the program's clock, not from the mtime nginx copies from the
//!   client's `Date` header (11.5);
//! - a deny rule written with capitals denies every spelling of the JID (11.7).

// Only for the independent signer in `common/signing.rs`.
mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::signing::hmac_sha256_hex;
use common::web;
use web::{
    Flavour, HMAC_PREFIX, HMAC_SECRET, SECRET, Settings, Stack, TricklingPut, curl,
    ejabberd_encode, put_file_raw,
};

/// Allowed 100 bytes in all (the quota that one slot must not multiply).
const QUOTA_JID: &str = "quota@example.org";
const QUOTA_RULE: &str = "[[rules]]\nmatch = '^quota@example\\.org$'\nmax_total_size = 100\n";
/// Written with capitals on purpose: JIDs are case-insensitive.
const BLOCKED_RULE: &str = "[[rules]]\nmatch = '^Blocked@Example\\.org$'\ndeny = true\n";

/// Every file below `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(
                    path.strip_prefix(dir)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    found.sort();
    found
}

#[test]
fn nginx_one_slot_is_one_file_whatever_the_spelling() {
    one_slot_is_one_file_whatever_the_spelling(Flavour::Nginx);
}

#[test]
fn apache_one_slot_is_one_file_whatever_the_spelling() {
    one_slot_is_one_file_whatever_the_spelling(Flavour::ApacheDav);
}

fn one_slot_is_one_file_whatever_the_spelling(flavour: Flavour) {
    let settings = Settings {
        rules: QUOTA_RULE,
        ..Settings::default()
    };
    let Some(stack) = Stack::start_if_available(flavour, &settings) else {
        return;
    };
    let body = vec![b'q'; 100];
    let file = stack.scratch_file("hundred", &body);
    let slot = stack.slot(QUOTA_JID, "a.txt", 100, "text/plain");
    let base = format!("{}/upload/{}", stack.public, slot.token);
    // Each of these decodes once to something other than "a.txt": the web server would store
    // it under that other name, beside the slot's file and outside every check.
    for spelling in [
        "%2561.txt",
        "a%252Etxt",
        "%2561%252E%2574xt",
        "%25%36%31.txt",
    ] {
        let answer = put_file_raw(
            &format!("{base}/{spelling}"),
            &file,
            &["-H", "Content-Type: text/plain"],
        );
        if (200..300).contains(&answer.status) {
            stack.fail(&format!("PUT of {spelling} was allowed: {answer:?}"));
        }
    }
    let stored = files_under(&stack.upload_root.join(&slot.token));
    if !stored.is_empty() {
        stack.fail(&format!("refused spellings stored {stored:?}"));
    }
    // The slot's own spellings (raw, encoded once) still work: the first one is stored.
    let answer = put_file_raw(
        &format!("{base}/%61%2Etxt"),
        &file,
        &["-H", "Content-Type: text/plain"],
    );
    if answer.status != 201 {
        stack.fail(&format!("PUT encoded once: {answer:?}"));
    }
    assert_eq!(
        files_under(&stack.upload_root.join(&slot.token)),
        ["a.txt"],
        "exactly the slot's file"
    );
    // And the quota saw one file of 100 bytes: nothing more fits.
    let more = curl(&[&format!(
        "{}/http_upload/slot/?jid={}&name=b.txt&size=1&secret={SECRET}",
        stack.slot_api,
        ejabberd_encode(QUOTA_JID)
    )]);
    if more.status != 403 {
        stack.fail(&format!("a slot beyond the quota: {more:?}"));
    }
}

#[test]
fn nginx_a_second_put_cannot_replace_the_first() {
    a_second_put_cannot_replace_the_first(Flavour::Nginx);
}

#[test]
fn apache_a_second_put_cannot_replace_the_first() {
    a_second_put_cannot_replace_the_first(Flavour::ApacheDav);
}

fn a_second_put_cannot_replace_the_first(flavour: Flavour) {
    let Some(stack) = Stack::start_if_available(flavour, &Settings::default()) else {
        return;
    };
    let first: Vec<u8> = b"FIRST-".repeat(100);
    let second: Vec<u8> = b"SECOND".repeat(100);
    let second_file = stack.scratch_file("second", &second);

    // The slot API's URLs.
    let slot = stack.slot("alice@example.org", "shared.txt", 600, "text/plain");
    let typed = ["-H", "Content-Type: text/plain"];
    let path = format!("/upload/{}/{}", slot.token, slot.name);
    check_one_body(&stack, &slot.put_url, &path, &first, &second_file, &typed);
    let stored = fs::read(stack.stored(&slot.token, &slot.name)).ok();
    if stored.as_deref() != Some(&first[..]) {
        stack.fail("the stored file is not the first body");
    }
    let get = curl(&[&slot.get_url]);
    assert_eq!(get.body, first, "the GET URL serves the first body");

    // A URL the XMPP server signed (HMAC, ejabberd's shape): one body per signed URL too.
    let signed = "c0ffee/UrlSignedOnce0123456789abcdefghijklmn/report.txt";
    let v = hmac_sha256_hex(HMAC_SECRET, format!("{signed} 600").as_bytes());
    let url = format!("{}{HMAC_PREFIX}/{signed}?v={v}", stack.public);
    let path = format!("{HMAC_PREFIX}/{signed}");
    check_one_body(&stack, &url, &path, &first, &second_file, &typed);
    let stored = stack.upload_root.join("share").join(signed);
    assert_eq!(fs::read(&stored).ok(), Some(first.clone()), "HMAC file");
}

/// Starts a trickling PUT of `first` to `url`, waits until it was allowed, PUTs `second` to
/// the same URL (must be refused), then lets the first finish (must be stored).
fn check_one_body(
    stack: &Stack,
    url: &str,
    path: &str,
    first: &[u8],
    second: &Path,
    extra: &[&str],
) {
    let mut trickle = TricklingPut::start(url, first.len(), extra);
    trickle.send(&first[..10]);
    stack.wait_for_allowance(path);
    let answer = put_file_raw(url, second, extra);
    if (200..300).contains(&answer.status) {
        stack.fail(&format!(
            "a second PUT of {path} was allowed while the first was on its way: {answer:?}"
        ));
    }
    let status = trickle.finish(&first[10..]);
    if status != 201 {
        stack.fail(&format!("the first PUT of {path} ended with {status}"));
    }
    // And after the first landed, the URL stays refused.
    let again = put_file_raw(url, second, extra);
    if (200..300).contains(&again.status) {
        stack.fail(&format!("a PUT of {path} after the upload: {again:?}"));
    }
}

#[test]
fn nginx_retention_ignores_the_clients_date() {
    retention_ignores_the_clients_date(Flavour::Nginx);
}

#[test]
fn apache_retention_ignores_the_clients_date() {
    retention_ignores_the_clients_date(Flavour::ApacheDav);
}

fn retention_ignores_the_clients_date(flavour: Flavour) {
    let settings = Settings {
        retention: "2s",
        ..Settings::default()
    };
    let Some(stack) = Stack::start_if_available(flavour, &settings) else {
        return;
    };
    let future = ["-H", "Date: Fri, 01 Jan 2100 00:00:00 GMT"];
    let body = b"from the future\n";
    let file = stack.scratch_file("future", body);

    let slot = stack.slot("alice@example.org", "future.txt", 16, "text/plain");
    let typed = ["-H", "Content-Type: text/plain", future[0], future[1]];
    let answer = put_file_raw(&slot.put_url, &file, &typed);
    if answer.status != 201 {
        stack.fail(&format!("PUT: {answer:?}"));
    }
    let slot_file = stack.stored(&slot.token, &slot.name);

    let signed = "c0ffee/DatedUpload0123456789abcdefghijklmnopq/future.txt";
    let v = hmac_sha256_hex(HMAC_SECRET, format!("{signed} 16").as_bytes());
    let url = format!("{}{HMAC_PREFIX}/{signed}?v={v}", stack.public);
    let answer = put_file_raw(&url, &file, &typed);
    if answer.status != 201 {
        stack.fail(&format!("HMAC PUT: {answer:?}"));
    }
    let signed_file = stack.upload_root.join("share").join(signed);

    if flavour == Flavour::Nginx {
        // What makes this matter: nginx copies the client's Date into the file's mtime.
        let mtime = fs::metadata(&slot_file).map(|m| m.mtime()).unwrap_or(0);
        assert!(mtime > 4_000_000_000, "nginx set mtime {mtime}");
    }
    thread::sleep(Duration::from_millis(3200));
    let said = stack.cleanup();
    for stayed in [&slot_file, &signed_file] {
        if stayed.exists() {
            stack.fail(&format!(
                "{} outlived its retention with a Date in 2100: {said}",
                stayed.display()
            ));
        }
    }
    let get = curl(&[&slot.get_url]);
    if get.status != 404 {
        stack.fail(&format!("GET after cleanup: {get:?}"));
    }
    // The slot's record went too: its URL cannot be used again.
    let again = put_file_raw(&slot.put_url, &file, &typed);
    if (200..300).contains(&again.status) {
        stack.fail(&format!("a PUT to the expired slot: {again:?}"));
    }
}

#[test]
fn nginx_deny_rules_ignore_case() {
    deny_rules_ignore_case(Flavour::Nginx);
}

#[test]
fn apache_deny_rules_ignore_case() {
    deny_rules_ignore_case(Flavour::ApacheDav);
}

fn deny_rules_ignore_case(flavour: Flavour) {
    let settings = Settings {
        rules: BLOCKED_RULE,
        ..Settings::default()
    };
    let Some(stack) = Stack::start_if_available(flavour, &settings) else {
        return;
    };
    for jid in [
        "blocked@example.org",
        "Blocked@Example.org",
        "BLOCKED@EXAMPLE.ORG",
    ] {
        let answer = curl(&[&format!(
            "{}/http_upload/slot/?jid={}&name=x.txt&size=1&secret={SECRET}",
            stack.slot_api,
            ejabberd_encode(jid)
        )]);
        if answer.status != 403 {
            stack.fail(&format!("{jid} asked for a slot: {answer:?}"));
        }
    }
    // Others of the domain still may.
    stack.slot("alice@example.org", "x.txt", 1, "text/plain");
}
