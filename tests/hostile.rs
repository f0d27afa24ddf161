//! Hostile input through real nginx with the shipped configuration (`nginx/`): traversal in
//! every spelling, impossible sizes, huge names, header and parameter floods, Content-Length
//! lies and clients that vanish mid-upload, token guessing, writes to a GET URL, other WebDAV
//! methods, and active content (HTML, SVG) that must not run on our origin.
//!
//! Each case checks the documented refusal (nginx's own 400/404/405/414 where it stops the
//! request first, the program's own status otherwise (400, 403, 404, 409, 413...), never a 5xx) and that no file was left:
//! nothing under the upload root but the uploads that were allowed, nothing written anywhere
//! else in the test directory, and the files next to the upload root never served.
//!
//! Without nginx the tests are skipped with a message; with `CI=true` they fail.

mod common;

use std::fs;
use std::path::Path;

use common::web;
use web::{Answer, Flavour, SECRET, Stack, available, curl, ejabberd_encode, try_curl};

const ALICE: &str = "alice@example.org";

/// What the test directory holds next to the upload root: never to be served.
const CANARY: &str = "canary-next-to-the-upload-root";

fn start() -> Option<Stack> {
    if !available(Flavour::Nginx) {
        return None;
    }
    let stack = Stack::start(Flavour::Nginx);
    fs::write(stack.dir.path.join("canary.txt"), CANARY).expect("write canary");
    Some(stack)
}

fn slot_query(stack: &Stack, query: &str) -> Answer {
    curl(&[&format!(
        "{}/http_upload/slot/?{query}&secret={SECRET}",
        stack.slot_api
    )])
}

fn expect_one_of(stack: &Stack, answer: &Answer, statuses: &[u16], what: &str) {
    if !statuses.contains(&answer.status) {
        stack.fail(&format!(
            "{what}: expected one of {statuses:?}, got {answer:?}"
        ));
    }
}

/// Every regular file below `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(
                    entry
                        .path()
                        .strip_prefix(dir)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    out.sort();
    out
}

/// No file under the upload root but `allowed`, and no file with `marker` as its content
/// anywhere in the test directory (a write that went elsewhere).
fn expect_no_leftovers(stack: &Stack, allowed: &[String], marker: &[u8], what: &str) {
    let stored = files_under(&stack.upload_root);
    let unexpected: Vec<&String> = stored.iter().filter(|f| !allowed.contains(f)).collect();
    if !unexpected.is_empty() {
        stack.fail(&format!(
            "{what}: files left under the upload root: {unexpected:?}"
        ));
    }
    for file in files_under(&stack.dir.path) {
        if file.starts_with("scratch/") {
            continue; // the test's own copies of the bodies it sends
        }
        let path = stack.dir.path.join(&file);
        if fs::metadata(&path).is_ok_and(|m| m.len() == marker.len() as u64)
            && fs::read(&path).is_ok_and(|c| c == marker)
        {
            let under_root = path.starts_with(&stack.upload_root)
                && allowed.contains(
                    &path
                        .strip_prefix(&stack.upload_root)
                        .unwrap()
                        .display()
                        .to_string(),
                );
            if !under_root {
                stack.fail(&format!("{what}: the hostile body was written to {file}"));
            }
        }
    }
    let canary = fs::read_to_string(stack.dir.path.join("canary.txt")).unwrap_or_default();
    assert_eq!(
        canary, CANARY,
        "{what}: the canary next to the root changed"
    );
}

fn put_bytes(url: &str, body: &[u8], extra: &[&str], scratch: &Path) -> Option<(u16, Vec<u8>)> {
    let file = scratch.join(format!("body-{}", body.len()));
    fs::write(&file, body).expect("write body");
    let file = file.display().to_string();
    let mut args = vec!["--path-as-is", "-T", file.as_str()];
    args.extend_from_slice(extra);
    args.push(url);
    try_curl(&args)
}

fn never_5xx(stack: &Stack, status: Option<u16>, what: &str) {
    if let Some(status) = status
        && status >= 500
    {
        stack.fail(&format!("{what}: server error {status}"));
    }
}

#[test]
fn traversal_in_every_spelling_is_refused_and_stores_nothing() {
    let Some(stack) = start() else { return };
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let slot = stack.slot(ALICE, "t.txt", 4, "text/plain");
    let t = &slot.token;
    let public = &stack.public;
    let paths = [
        format!("/upload/{t}/../../canary.txt"),
        format!("/upload/{t}/..%2f..%2fcanary.txt"),
        format!("/upload/{t}/..%2F..%2Fcanary.txt"),
        format!("/upload/{t}/%2e%2e/%2e%2e/canary.txt"),
        format!("/upload/{t}/%2e%2e%2f%2e%2e%2fcanary.txt"),
        format!("/upload/{t}%2f..%2f..%2fcanary.txt"),
        "/upload/%2e%2e/%2e%2e/canary.txt".to_string(),
        "/upload/../canary.txt".to_string(),
        "/upload/../config.toml".to_string(),
        format!("/upload/{t}/..%5c..%5ccanary.txt"),
        format!("/upload/{t}/..\\..\\canary.txt"),
        format!("/upload/{t}/t.txt%00.html"),
        format!("/upload/{t}/t.txt%00"),
        format!("/upload/{t}/%00"),
        format!("/upload/{t}/%c0%ae%c0%ae%c0%afcanary.txt"),
        format!("/upload/{t}/%c0%ae%c0%ae/canary.txt"),
        format!("/upload/{t}/%252e%252e%252fcanary.txt"),
        format!("/upload/{t}/.hidden"),
        format!("/upload/{t}/.t.txt.part"),
        format!("/upload/{t}/t.txt/../../../canary.txt"),
        format!("/upload/{t}/t.txt/x"),
        format!("/upload/{t}//t.txt"),
        format!("/upload//{t}/t.txt"),
        format!("/upload/{t}/"),
        format!("/upload/{t}"),
        format!("/upload/{}/t.txt", t.to_uppercase()),
        "/http_upload/../upload/../canary.txt".to_string(),
    ];
    let mut requests = 0;
    for path in &paths {
        let url = format!("{public}{path}");
        let put = put_bytes(&url, b"evil", &["-H", "Content-Type: text/plain"], &scratch);
        requests += 1;
        match put {
            Some((status, _)) if (200..300).contains(&status) => {
                stack.fail(&format!("PUT {path}: accepted with {status}"))
            }
            Some((status, _)) if ![400, 403, 404, 405, 414].contains(&status) => {
                stack.fail(&format!("PUT {path}: unexpected {status}"))
            }
            _ => {}
        }
        let get = try_curl(&["--path-as-is", &url]);
        requests += 1;
        if let Some((status, body)) = &get {
            let text = String::from_utf8_lossy(body);
            if text.contains(CANARY) || text.contains(SECRET) || text.contains("upload_root") {
                stack.fail(&format!(
                    "GET {path}: served a file outside the root ({status})"
                ));
            }
            if ![400, 403, 404, 414].contains(status) {
                stack.fail(&format!("GET {path}: unexpected {status}"));
            }
        }
        expect_no_leftovers(&stack, &[], b"evil", &format!("PUT {path}"));
    }
    // The slot itself is untouched by all that: the real upload still works.
    let ok = put_bytes(
        &slot.put_url,
        b"good",
        &["-H", "Content-Type: text/plain"],
        &scratch,
    );
    assert_eq!(
        ok.map(|a| a.0),
        Some(201),
        "the real upload after the attempts"
    );
    expect_no_leftovers(&stack, &[format!("{t}/t.txt")], b"evil", "after all");
    eprintln!("FIGURES hostile traversal: {requests} requests, 0 files leaked");
}

#[test]
fn impossible_sizes_and_names_are_refused() {
    let Some(stack) = start() else { return };
    let jid = ejabberd_encode(ALICE);
    let cases: &[(&str, &[u16])] = &[
        ("-1", &[400]),
        ("0", &[400]),
        ("99999999999999999999", &[400]),
        ("18446744073709551616", &[400]),
        ("9223372036854775808", &[400]),
        ("9223372036854775807", &[413]),
        ("209715201", &[413]),
        ("1e3", &[400]),
        ("0x10", &[400]),
        // "+5" parses as 5 (Rust's integer parsing takes a leading +): harmless.
        ("%2B5", &[200, 400]),
        ("%205", &[400]),
        ("5%00", &[400]),
        ("", &[400]),
    ];
    for (size, statuses) in cases {
        let answer = slot_query(&stack, &format!("jid={jid}&name=a.txt&size={size}"));
        expect_one_of(&stack, &answer, statuses, &format!("size={size}"));
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            answer.status == 200 || !text.contains("http"),
            "size={size}: a refusal with a URL in it: {text:?}"
        );
    }
    // The limit itself is allowed exactly (BEHAVIOUR.md §4) and named when exceeded.
    let over = slot_query(&stack, &format!("jid={jid}&name=a.txt&size=209715201"));
    assert!(
        String::from_utf8_lossy(&over.body).contains("209715200"),
        "413 names the limit: {over:?}"
    );
    let exact = slot_query(&stack, &format!("jid={jid}&name=a.txt&size=209715200"));
    expect_one_of(&stack, &exact, &[200], "size = max_file_size");

    // Names: too long after sanitising (400 from the program), or too long for nginx's
    // request line (414), or nothing left (400).
    let long = "a".repeat(4000);
    let answer = slot_query(&stack, &format!("jid={jid}&name={long}&size=1"));
    expect_one_of(&stack, &answer, &[400], "4000-byte name");
    let ten_kb = "b".repeat(10 * 1024);
    let answer = slot_query(&stack, &format!("jid={jid}&name={ten_kb}&size=1"));
    expect_one_of(&stack, &answer, &[400, 414], "10 KB name");
    let cyrillic = ejabberd_encode(&"я".repeat(1800));
    let answer = slot_query(&stack, &format!("jid={jid}&name={cyrillic}&size=1"));
    expect_one_of(&stack, &answer, &[400, 414], "10 KB of encoded Cyrillic");
    let answer = slot_query(&stack, &format!("jid={jid}&name=&size=1"));
    expect_one_of(&stack, &answer, &[400], "an empty name");
    // Names that are hostile but not empty are made safe, never refused with a 5xx.
    for name in [
        "..%2F..%2Fetc%2Fpasswd",
        "%00",
        "a%5Cb",
        "%C0%AE%C0%AE",
        "%2E%2Ehtaccess",
    ] {
        let answer = slot_query(&stack, &format!("jid={jid}&name={name}&size=1"));
        expect_one_of(&stack, &answer, &[200, 400], &format!("name={name}"));
        if answer.status == 200 {
            let text = String::from_utf8_lossy(&answer.body).to_string();
            let put = text.lines().next().unwrap_or("");
            let file = put.rsplit('/').next().unwrap_or("");
            assert!(
                !file.starts_with('.') && !file.contains(['\\', '\0']) && file != "..",
                "name={name}: unsafe name in {put:?}"
            );
        }
    }
    let get = try_curl(&[&format!(
        "{}/upload/{}/x",
        stack.public,
        "0".repeat(10 * 1024)
    )]);
    never_5xx(&stack, get.map(|a| a.0), "GET with a 10 KB token");
    expect_no_leftovers(&stack, &[], b"-", "sizes and names");
}

#[test]
fn header_and_parameter_floods_are_refused_or_ignored() {
    let Some(stack) = start() else { return };
    let jid = ejabberd_encode(ALICE);
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    // Many headers: the program never sees them (fastcgi_pass_request_headers off); nginx takes
    // what fits its buffers and refuses the rest itself.
    for (count, allowed) in [(200usize, &[200u16][..]), (2000, &[400, 431, 494][..])] {
        let headers: Vec<String> = (0..count)
            .map(|i| format!("X-Flood-{i}: {}", "v".repeat(40)))
            .collect();
        let url = format!(
            "{}/http_upload/slot/?jid={jid}&name=f.txt&size=1&secret={SECRET}",
            stack.slot_api
        );
        let mut args: Vec<&str> = Vec::new();
        for h in &headers {
            args.push("-H");
            args.push(h);
        }
        args.push(&url);
        let answer = curl(&args);
        expect_one_of(&stack, &answer, allowed, &format!("{count} headers"));
    }
    // The same against a PUT (HTTP/2 with HPACK, HTTP/1.1 too).
    let slot = stack.slot(ALICE, "h.txt", 4, "text/plain");
    let headers: Vec<String> = (0..3000)
        .map(|i| format!("X-Flood-{i}: {}", "w".repeat(30)))
        .collect();
    for http in ["--http1.1", "--http2"] {
        let mut args: Vec<&str> = vec![http, "-H", "Content-Type: text/plain"];
        for h in &headers {
            args.push("-H");
            args.push(h);
        }
        let put = put_bytes(&slot.put_url, b"hhhh", &args, &scratch);
        never_5xx(&stack, put.as_ref().map(|a| a.0), "PUT with 3000 headers");
        if let Some((201, _)) = put {
            stack.fail("a PUT with 3000 headers was stored (nginx should refuse it)");
        }
    }
    // Parameter floods: 1,000 parameters fit nginx's request line and reach the program,
    // which parses them and answers; 10,000 (70 KB) are refused by nginx (414).
    for (count, allowed) in [(1000usize, &[200u16][..]), (10_000, &[414, 400][..])] {
        let flood: String = (0..count).map(|i| format!("&p{i}=1")).collect();
        let answer = slot_query(&stack, &format!("jid={jid}&name=p.txt&size=1{flood}"));
        expect_one_of(
            &stack,
            &answer,
            allowed,
            &format!("{count} query parameters"),
        );
        let flood: String = (0..count).map(|i| format!("p{i}=1&")).collect();
        let put = put_bytes(
            &format!("{}?{flood}", slot.put_url),
            b"pppp",
            &["-H", "Content-Type: text/plain"],
            &scratch,
        );
        never_5xx(
            &stack,
            put.map(|a| a.0),
            &format!("PUT with {count} params"),
        );
    }
    // The program is alive and well after all that.
    let answer = slot_query(&stack, &format!("jid={jid}&name=after.txt&size=1"));
    expect_one_of(&stack, &answer, &[200], "a slot request after the floods");
    let stored: Vec<String> = files_under(&stack.upload_root);
    assert!(
        stored.iter().all(|f| f.ends_with("/h.txt")),
        "only the PUT of h.txt may have stored something: {stored:?}"
    );
}

#[test]
fn content_length_lies_and_vanishing_clients_store_nothing() {
    let Some(stack) = start() else { return };
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let body = vec![b'z'; 100];

    // Declared length other than the slot's size: refused before a byte is written.
    let slot = stack.slot(ALICE, "lie.bin", 100, "application/octet-stream");
    for declared in ["50", "101", "0", "-1", "99999999999999999999"] {
        let put = put_bytes(
            &slot.put_url,
            &body[..declared.parse::<usize>().unwrap_or(100).min(100)],
            &["--http1.1", "-H", &format!("Content-Length: {declared}")],
            &scratch,
        );
        if let Some((status, _)) = put
            && !(400..500).contains(&status)
        {
            stack.fail(&format!(
                "Content-Length {declared} for a 100-byte slot: {status}"
            ));
        }
    }
    expect_no_leftovers(&stack, &[], &body, "length lies");

    // Shorter body than declared, then the client gives up mid-upload.
    let short = put_bytes(
        &slot.put_url,
        &body[..50],
        &["--http1.1", "-H", "Content-Length: 100", "--max-time", "2"],
        &scratch,
    );
    if let Some((status, _)) = short
        && (200..300).contains(&status)
    {
        stack.fail(&format!(
            "a 50-byte body declared as 100 was accepted: {status}"
        ));
    }
    expect_no_leftovers(&stack, &[], &body[..50], "client gone mid-upload");
    if stack.stored(&slot.token, &slot.name).exists() {
        stack.fail("a half upload appeared under the real name");
    }
    // Chunked (no length at all): refused.
    let chunked = put_bytes(
        &slot.put_url,
        &body,
        &["--http1.1", "-H", "Transfer-Encoding: chunked"],
        &scratch,
    );
    if let Some((status, _)) = chunked
        && !(400..500).contains(&status)
    {
        stack.fail(&format!("a chunked PUT: {status}"));
    }
    // The lies were refused before anything was allowed, but the vanished client's PUT was
    // allowed: nginx writes bodies itself, so the slot's one PUT is spent (a second body
    // could replace the first when it lands). The retry is refused and stores nothing; the
    // honest upload takes a new slot, as XEP-0363 clients do after a failure.
    let retry = put_bytes(&slot.put_url, &body, &[], &scratch);
    if let Some((status, _)) = retry
        && !(400..500).contains(&status)
    {
        stack.fail(&format!("the retry of a spent slot: {status}"));
    }
    if stack.stored(&slot.token, &slot.name).exists() {
        stack.fail("the retry of a spent slot stored a file");
    }
    let slot = stack.slot(ALICE, "lie.bin", 100, "application/octet-stream");
    let honest = put_bytes(&slot.put_url, &body, &[], &scratch);
    assert_eq!(
        honest.map(|a| a.0),
        Some(201),
        "the honest upload, new slot"
    );
    let stored = stack.stored(&slot.token, &slot.name);
    assert_eq!(fs::read(&stored).unwrap(), body, "stored bytes");

    // A body longer than declared: nginx stores exactly the declared (= slot) length and
    // treats the rest as the next request; the extra bytes reach no file.
    let slot = stack.slot(ALICE, "long.bin", 10, "application/octet-stream");
    let long = b"0123456789EXTRA-BYTES".to_vec();
    let put = put_bytes(
        &slot.put_url,
        &long,
        &["--http1.1", "-H", "Content-Length: 10"],
        &scratch,
    );
    never_5xx(&stack, put.map(|a| a.0), "longer body");
    let stored = stack.stored(&slot.token, &slot.name);
    if stored.exists() {
        assert_eq!(
            fs::read(&stored).unwrap(),
            b"0123456789",
            "only the declared bytes"
        );
    }
    for file in files_under(&stack.dir.path) {
        let content = fs::read(stack.dir.path.join(&file)).unwrap_or_default();
        assert!(
            !content.windows(11).any(|w| w == b"EXTRA-BYTES")
                || file.starts_with("scratch")
                || file.ends_with(".log"),
            "the extra bytes were written to {file}"
        );
    }
}

#[test]
fn guessed_tokens_and_writes_to_get_urls_are_refused() {
    let Some(stack) = start() else { return };
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let slot = stack.slot(ALICE, "mine.txt", 5, "text/plain");
    let put = put_bytes(
        &slot.put_url,
        b"mine\n",
        &["-H", "Content-Type: text/plain"],
        &scratch,
    );
    assert_eq!(put.map(|a| a.0), Some(201), "the owner's upload");
    let fresh = stack.slot(ALICE, "fresh.txt", 5, "text/plain");

    // Random tokens, and tokens one digit away from real ones: never a yes.
    let mut state: u64 = std::process::id() as u64 | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut guesses: Vec<String> = (0..60)
        .map(|_| {
            (0..3)
                .map(|_| format!("{:016x}", next()))
                .collect::<String>()[..40]
                .to_string()
        })
        .collect();
    for real in [&slot.token, &fresh.token] {
        for i in [0, 17, 39] {
            let mut bytes = real.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            guesses.push(String::from_utf8(bytes).unwrap());
        }
    }
    for guess in &guesses {
        for name in ["mine.txt", "fresh.txt"] {
            let url = format!("{}/upload/{guess}/{name}", stack.public);
            let put = put_bytes(
                &url,
                b"guess",
                &["-H", "Content-Type: text/plain"],
                &scratch,
            );
            // The program's own "no such slot", passed on by nginx (issue 11, item 9).
            assert_eq!(put.map(|a| a.0), Some(404), "PUT to guessed {url}");
            let get = curl(&[&url]);
            expect_one_of(&stack, &get, &[404], &format!("GET guessed {url}"));
        }
    }
    // Someone with the GET URL of a stored file cannot replace, move or delete it.
    let other = put_bytes(
        &slot.get_url,
        b"evil\n",
        &["-H", "Content-Type: text/plain"],
        &scratch,
    );
    assert_eq!(
        other.map(|a| a.0),
        Some(409),
        "PUT to a GET URL of a stored file: the file exists"
    );
    for method in [
        "DELETE",
        "MOVE",
        "COPY",
        "MKCOL",
        "PROPFIND",
        "PROPPATCH",
        "LOCK",
        "POST",
        "PATCH",
    ] {
        let answer = curl(&[
            "-X",
            method,
            "-H",
            &format!(
                "Destination: {}/upload/{}/moved.txt",
                stack.public, fresh.token
            ),
            &slot.get_url,
        ]);
        expect_one_of(&stack, &answer, &[405], &format!("{method} on a GET URL"));
    }
    let stored = stack.stored(&slot.token, &slot.name);
    assert_eq!(
        fs::read(&stored).unwrap(),
        b"mine\n",
        "the file is unchanged"
    );
    expect_no_leftovers(
        &stack,
        &[format!("{}/mine.txt", slot.token)],
        b"guess",
        "guessing",
    );
    eprintln!(
        "FIGURES hostile guessing: {} guessed tokens refused",
        guesses.len()
    );
}

#[test]
fn active_content_is_served_so_that_it_cannot_run() {
    let Some(stack) = start() else { return };
    let scratch = stack.dir.path.join("scratch");
    fs::create_dir_all(&scratch).unwrap();
    let html = b"<html><script>alert(document.domain)</script></html>\n".to_vec();
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'><script>alert(2)</script></svg>\n".to_vec();
    let cases: Vec<(&str, &str, Vec<u8>, bool)> = vec![
        // name, declared type, body, may be inline
        ("page.html", "text/html", html.clone(), false),
        ("page.htm", "text/html", html.clone(), false),
        ("page.xhtml", "application/xhtml+xml", html.clone(), false),
        ("image.svg", "image/svg+xml", svg.clone(), false),
        ("image.svgz", "image/svg+xml", svg.clone(), false),
        ("data.xml", "text/xml", svg.clone(), false),
        (
            "code.js",
            "application/javascript",
            b"alert(1)\n".to_vec(),
            false,
        ),
        ("page.shtml", "text/html", html.clone(), false),
        // HTML in disguise: the type comes from the name, and nosniff stops sniffing.
        ("looks.png", "image/png", html.clone(), true),
        ("looks.txt", "text/plain", html.clone(), true),
        ("noext", "application/octet-stream", html.clone(), false),
    ];
    for (name, content_type, body, may_be_inline) in &cases {
        let slot = stack.slot(ALICE, name, body.len() as u64, content_type);
        let put = put_bytes(
            &slot.put_url,
            body,
            &["-H", &format!("Content-Type: {content_type}")],
            &scratch,
        );
        assert_eq!(put.map(|a| a.0), Some(201), "upload of {name}");
        let get = curl(&[&slot.get_url]);
        expect_one_of(&stack, &get, &[200], &format!("GET {name}"));
        let header = |h: &str| get.header(h).unwrap_or("").to_ascii_lowercase();
        assert_eq!(
            header("x-content-type-options"),
            "nosniff",
            "{name}: {get:?}"
        );
        let csp = header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("sandbox"),
            "{name}: CSP {csp:?}"
        );
        let content_type = header("content-type");
        let disposition = header("content-disposition");
        let renders_script = content_type.contains("html")
            || content_type.contains("svg")
            || content_type.contains("xml")
            || content_type.contains("javascript");
        if renders_script || !may_be_inline {
            assert!(
                disposition.starts_with("attachment"),
                "{name} ({content_type}) must be an attachment, is {disposition:?}"
            );
        }
        if disposition.starts_with("inline") {
            assert!(
                ["image/", "video/", "audio/", "text/plain"]
                    .iter()
                    .any(|p| content_type.starts_with(p))
                    && !content_type.contains("svg"),
                "{name}: inline with type {content_type:?}"
            );
        }
        // HEAD says the same.
        let head = curl(&["-I", &slot.get_url]);
        assert_eq!(
            head.header("content-security-policy")
                .map(str::to_ascii_lowercase),
            Some(csp.clone()),
            "{name}: HEAD"
        );
    }
}
