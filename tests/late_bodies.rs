//! Late bodies and old URLs, shown through the real web servers started from the shipped
//! configs (found by the review of issue 11, each test failed on the code it was written
//! against): an allowed upload is never forgotten while its body could still land, and a signed
//! URL whose file went at retention cannot store new bytes.
//!
//! Why it matters: nothing bounds how long a body may take. nginx's `client_body_timeout`
//! (120 s) is a pause between two reads, not a total, so a client sending a byte every 100 s
//! keeps an upload of 1 KiB going for more than a day (Apache's Debian default, mod_reqtimeout
//! `body=20,MinRate=500`, does the same for a body of 43 MB or more). Waiting a day is not a
//! test: the tests let the day pass by moving the recorded approval back by two days in the
//! database, which is exactly what the program's clock would show a day later, and then run
//! the real `cleanup`.

mod common;

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::signing::hmac_sha256_hex;
use common::web;
use web::{
    Flavour, HMAC_PREFIX, HMAC_SECRET, SECRET, Settings, Stack, TricklingPut, curl,
    ejabberd_encode, put_file_raw,
};

/// Two days, in seconds: more than cleanup's one-day grace for a transfer.
const TWO_DAYS: i64 = 2 * 86_400;

/// The program's database in a stack's directory (the path every test config names).
fn database(stack: &Stack) -> PathBuf {
    stack.dir.path.join("db/uploads.sqlite3")
}

/// Lets `seconds` pass for the records the program made: what cleanup will see when run that
/// much later. (The program's own clock is left alone.)
fn age_records(stack: &Stack, sql: &str, seconds: i64) {
    let conn = rusqlite::Connection::open(database(stack)).expect("open the database");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy");
    let changed = conn
        .execute(sql, [seconds])
        .unwrap_or_else(|e| stack.fail(&format!("{sql}: {e}")));
    if changed == 0 {
        stack.fail(&format!("{sql}: no record to age"));
    }
}

/// A URL of the HMAC protocol as ejabberd signs it (`v`: path and size).
fn signed_url(stack: &Stack, signed: &str, size: usize) -> String {
    let v = hmac_sha256_hex(HMAC_SECRET, format!("{signed} {size}").as_bytes());
    format!("{}{HMAC_PREFIX}/{signed}?v={v}", stack.public)
}

/// Finding 1: a signed (HMAC) URL takes a second body, and the stored file changes, when its
/// first PUT takes longer than cleanup's one-day grace. Cleanup deletes the `signed_upload`
/// record of an allowed PUT whose file has not appeared yet ("the record goes, so that the
/// signed URL may be used again"); the next PUT of the URL is allowed and stored at once; when
/// the slow first body completes, nginx renames it over the stored file (204). The GET URL,
/// shared after the second upload, now serves other bytes — issue 11 item 4 again.
#[test]
fn nginx_a_signed_url_takes_one_body_even_after_a_day() {
    let Some(stack) = Stack::start_if_available(Flavour::Nginx, &Settings::default()) else {
        return;
    };
    let first = b"SLOW-1".repeat(100);
    let second = b"FAST-2".repeat(100);
    let second_file = stack.scratch_file("second", &second);
    let signed = "c0ffee/SlowUpload0123456789abcdefghijklmnopqr/report.txt";
    let url = signed_url(&stack, signed, first.len());
    let typed = ["-H", "Content-Type: text/plain"];

    let mut slow = TricklingPut::start(&url, first.len(), &typed);
    slow.send(&first[..10]);
    stack.wait_for_allowance(&format!("{HMAC_PREFIX}/{signed}"));
    // A day later, the first body still on its way: cleanup runs.
    age_records(
        &stack,
        "UPDATE signed_upload SET authorized = authorized - ?1",
        TWO_DAYS,
    );
    let said = stack.cleanup();

    let answer = put_file_raw(&url, &second_file, &typed);
    let stored = stack.upload_root.join("share").join(signed);
    let after_second = fs::read(&stored).ok();
    let status = slow.finish(&first[10..]);
    let after_first = fs::read(&stored).ok();
    if (200..300).contains(&answer.status) {
        stack.fail(&format!(
            "a second PUT of the signed URL was allowed ({}) while the first was on its way; \
             the stored file then changed from {:?} to {:?} (first PUT: {status}); cleanup said: {said}",
            answer.status,
            after_second.map(|b| String::from_utf8_lossy(&b[..12]).to_string()),
            after_first.map(|b| String::from_utf8_lossy(&b[..12]).to_string()),
        ));
    }
}

/// Finding 2: a slot's file lands outside every record and quota when its PUT takes longer
/// than cleanup's one-day grace. Cleanup deletes the slot row of an allowed PUT without a file
/// ("removed slot ... whose upload never completed"); nginx then completes the body and stores
/// it (201) under `<token>/<name>`, served by the GET URL. No row counts it: the JID's quota
/// is free again (each day, `max_total_size` more), and the file is kept by its ctime like a
/// stray file (for a JWT upload, past its own `expires`).
#[test]
fn nginx_a_file_that_lands_late_still_counts() {
    let settings = Settings {
        rules: "[[rules]]\nmatch = '^quota@example\\.org$'\nmax_total_size = 600\n",
        ..Settings::default()
    };
    let Some(stack) = Stack::start_if_available(Flavour::Nginx, &settings) else {
        return;
    };
    let body = b"LATE-1".repeat(100);
    let slot = stack.slot("quota@example.org", "late.txt", 600, "text/plain");
    let typed = ["-H", "Content-Type: text/plain"];

    let mut slow = TricklingPut::start(&slot.put_url, body.len(), &typed);
    slow.send(&body[..10]);
    stack.wait_for_allowance(&format!("/upload/{}/{}", slot.token, slot.name));
    age_records(
        &stack,
        "UPDATE slot SET created = created - ?1, authorized = authorized - ?1",
        TWO_DAYS,
    );
    let said = stack.cleanup();
    let status = slow.finish(&body[10..]);

    let served = curl(&[&slot.get_url]);
    let more = curl(&[&format!(
        "{}/http_upload/slot/?jid={}&name=more.txt&size=600&secret={SECRET}",
        stack.slot_api,
        ejabberd_encode("quota@example.org")
    )]);
    if served.status == 200 && more.status == 200 {
        stack.fail(&format!(
            "the late body was stored (PUT {status}) and is served, yet the quota of 600 bytes \
             granted another 600-byte slot: the file counts nowhere; cleanup said: {said}"
        ));
    }
}

/// Finding 3: once retention removed a file of the HMAC protocol, its signed URL takes a new
/// body. The record of the signed path is deleted with the file, and HMAC URLs carry no expiry
/// of their own, so whoever holds the PUT URL (the uploader, or anyone who saw it) can store
/// new bytes behind a GET URL that old messages still link to.
#[test]
fn nginx_a_signed_url_stays_used_after_retention() {
    a_signed_url_stays_used_after_retention(Flavour::Nginx);
}

#[test]
fn apache_a_signed_url_stays_used_after_retention() {
    a_signed_url_stays_used_after_retention(Flavour::ApacheDav);
}

fn a_signed_url_stays_used_after_retention(flavour: Flavour) {
    let settings = Settings {
        retention: "2s",
        ..Settings::default()
    };
    let Some(stack) = Stack::start_if_available(flavour, &settings) else {
        return;
    };
    let old = stack.scratch_file("old", b"the original\n");
    let new = stack.scratch_file("new", b"other bytes!\n");
    let signed = "c0ffee/KeptUsed0123456789abcdefghijklmnopqrstu/photo.txt";
    let url = signed_url(&stack, signed, 13);
    let typed = ["-H", "Content-Type: text/plain"];
    let answer = put_file_raw(&url, &old, &typed);
    if answer.status != 201 {
        stack.fail(&format!("first PUT: {answer:?}"));
    }
    thread::sleep(Duration::from_millis(3200));
    let said = stack.cleanup();
    let stored = stack.upload_root.join("share").join(signed);
    if stored.exists() {
        stack.fail(&format!("retention did not remove the file: {said}"));
    }
    let again = put_file_raw(&url, &new, &typed);
    if (200..300).contains(&again.status) {
        let get = curl(&[&format!("{}{HMAC_PREFIX}/{signed}", stack.public)]);
        stack.fail(&format!(
            "the signed URL took a second body after retention ({}); its GET URL now serves {:?}",
            again.status,
            String::from_utf8_lossy(&get.body)
        ));
    }
}
