//! Downloads the program serves itself (`webserver_download = false` over FastCGI, and
//! `runserver`) answer as nginx answers for a static file: one `Range` as 206 or 416,
//! `ETag` / `Last-Modified` with `If-None-Match` / `If-Modified-Since` as 304, `If-Range`,
//! and a HEAD that is the GET's head. Conversations resumes with `Range: bytes=N-`.
//!
//! Behind the shipped nginx and Apache configurations the web server serves downloads itself
//! (its own range handling), so those are not exercised here.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::fcgi::Response;
use common::web;
use common::*;

/// 1,000 bytes, so that offsets in hex and decimal differ.
fn content() -> Vec<u8> {
    body_of(1000, 7)
}

/// A server with one uploaded file; returns the env, the server and the download path.
fn with_one_file(body: &[u8]) -> (Env, Server, String, Slot) {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot("user@example.org", "movie.mp4", body.len() as u64);
    server.upload(&env, PutMode::SelfWrite, &slot, &Put::of(body));
    let path = slot.get_path.clone();
    (env, server, path, slot)
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .header(name)
        .unwrap_or_else(|| panic!("no {name} in {response}"))
}

/// nginx's ETag of the file at `path`: `"<mtime hex>-<size hex>"`.
fn nginx_etag(path: &std::path::Path) -> String {
    let meta = fs::metadata(path).unwrap();
    format!("\"{:x}-{:x}\"", meta.mtime(), meta.len())
}

#[test]
fn a_resumed_download_gets_the_rest_with_206() {
    let body = content();
    let (_env, server, path, _) = with_one_file(&body);
    let response = server.call("GET", &path, &[("Range", "bytes=400-")]);
    assert_eq!(response.status, 206, "{response}");
    assert_eq!(header(&response, "Content-Range"), "bytes 400-999/1000");
    assert_eq!(header(&response, "Content-Length"), "600");
    assert_eq!(header(&response, "Accept-Ranges"), "bytes");
    assert_eq!(response.body, body[400..]);
    // The download headers stay on a part.
    assert_eq!(header(&response, "X-Content-Type-Options"), "nosniff");
    assert_eq!(header(&response, "Content-Type"), "video/mp4");
}

#[test]
fn first_last_and_suffix_ranges() {
    let body = content();
    let (_env, server, path, _) = with_one_file(&body);
    for (range, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=990-5000", 990, 999),
        ("bytes=-100", 900, 999),
        ("bytes=-5000", 0, 999),
    ] {
        let response = server.call("GET", &path, &[("Range", range)]);
        assert_eq!(response.status, 206, "{range}: {response}");
        assert_eq!(
            header(&response, "Content-Range"),
            format!("bytes {first}-{last}/1000"),
            "{range}"
        );
        assert_eq!(response.body, body[first..=last], "{range}");
    }
}

#[test]
fn a_range_beyond_the_file_is_416_with_its_length() {
    let (_env, server, path, _) = with_one_file(&content());
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let response = server.call("GET", &path, &[("Range", range)]);
        assert_eq!(response.status, 416, "{range}: {response}");
        assert_eq!(header(&response, "Content-Range"), "bytes */1000");
        assert!(
            response.text().contains("not within the file"),
            "{response}"
        );
    }
}

#[test]
fn a_bad_range_is_never_a_failure() {
    let body = content();
    let (_env, server, path, _) = with_one_file(&body);
    let huge = "9".repeat(400);
    let ranges = [
        "garbage".to_string(),
        "bytes=".to_string(),
        "bytes=5-2".to_string(),
        "bytes=-".to_string(),
        "bytes=x-y".to_string(),
        "bytes=1-2-3".to_string(),
        "bytes=18446744073709551615-".to_string(),
        "bytes=18446744073709551616-18446744073709551617".to_string(),
        format!("bytes={huge}-"),
        format!("bytes=-{huge}"),
        format!("bytes=0-{huge}"),
        "bytes=0-1,5-6".to_string(),
        "bytes=0-1,,,".to_string(),
        "bytes=\u{0661}-".to_string(),
        "bytes=\u{fffd}\u{fffd}".to_string(),
        ",".repeat(10_000),
    ];
    for range in &ranges {
        let response = server.call("GET", &path, &[("Range", range)]);
        match response.status {
            200 => assert_eq!(response.body, body, "{range}"),
            206 => assert!(!response.body.is_empty(), "{range}"),
            416 => assert_eq!(header(&response, "Content-Range"), "bytes */1000"),
            _ => panic!("{range:?}: {response}"),
        }
    }
    // Still serving, and nothing went wrong on its side.
    assert_eq!(server.get(&path).status, 200);
    assert!(!server.log().contains("panic"), "{}", server.log());
}

#[test]
fn several_ranges_get_the_whole_file() {
    let body = content();
    let (_env, server, path, _) = with_one_file(&body);
    let response = server.call("GET", &path, &[("Range", "bytes=0-9,20-29")]);
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(response.body, body);
    assert!(response.header("Content-Range").is_none(), "{response}");
}

#[test]
fn etag_and_last_modified_are_nginx_s() {
    let (env, server, path, slot) = with_one_file(&content());
    let stored = env.stored(&slot.token, &slot.name);
    let response = server.get(&path);
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(header(&response, "ETag"), nginx_etag(&stored));
    assert_eq!(header(&response, "Accept-Ranges"), "bytes");
    let mtime = fs::metadata(&stored).unwrap().modified().unwrap();
    let last_modified = header(&response, "Last-Modified");
    let parsed = httpdate_parse(last_modified);
    let seconds = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(seconds(parsed), seconds(mtime), "{last_modified}");
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) with `date`, so that the test
/// does not trust the parser it checks.
fn httpdate_parse(text: &str) -> SystemTime {
    let output = Command::new("date")
        .args(["-u", "-d", text, "+%s"])
        .output()
        .expect("run date");
    assert!(output.status.success(), "date -d {text:?}");
    let seconds: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn a_revalidation_of_the_same_file_is_304_without_a_body() {
    let (_env, server, path, _) = with_one_file(&content());
    let first = server.get(&path);
    let etag = header(&first, "ETag").to_string();
    let last_modified = header(&first, "Last-Modified").to_string();
    let listed = format!("\"other\", W/{etag}");
    for conditional in [
        ("If-None-Match", etag.as_str()),
        ("If-None-Match", listed.as_str()),
        ("If-None-Match", "*"),
        ("If-Modified-Since", last_modified.as_str()),
    ] {
        for method in ["GET", "HEAD"] {
            let response = server.call(method, &path, &[conditional]);
            assert_eq!(response.status, 304, "{method} {conditional:?}: {response}");
            assert!(response.body.is_empty(), "{response}");
            assert!(response.header("Content-Length").is_none(), "{response}");
            assert_eq!(header(&response, "ETag"), etag);
        }
    }
    let changed = server.call("GET", &path, &[("If-None-Match", "\"0-0\"")]);
    assert_eq!(changed.status, 200, "{changed}");
    let older = server.call(
        "GET",
        &path,
        &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:01 GMT")],
    );
    assert_eq!(older.status, 200, "{older}");
    let unreadable = server.call("GET", &path, &[("If-Modified-Since", "last week")]);
    assert_eq!(unreadable.status, 200, "{unreadable}");
}

#[test]
fn a_changed_file_gets_a_new_etag() {
    let (env, server, path, slot) = with_one_file(&content());
    let old = header(&server.get(&path), "ETag").to_string();
    let stored = env.stored(&slot.token, &slot.name);
    let status = Command::new("touch")
        .args(["-m", "-d", "2001-02-03 04:05:06 UTC"])
        .arg(&stored)
        .status()
        .unwrap();
    assert!(status.success());
    let response = server.call("GET", &path, &[("If-None-Match", &old)]);
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(header(&response, "ETag"), nginx_etag(&stored));
    assert_eq!(
        header(&response, "Last-Modified"),
        "Sat, 03 Feb 2001 04:05:06 GMT"
    );
    // A resume against the old version gets the whole new one.
    let resumed = server.call("GET", &path, &[("Range", "bytes=500-"), ("If-Range", &old)]);
    assert_eq!(resumed.status, 200, "{resumed}");
    assert_eq!(resumed.body.len(), 1000);
}

#[test]
fn if_range_keeps_the_range_only_for_the_same_version() {
    let body = content();
    let (_env, server, path, _) = with_one_file(&body);
    let first = server.get(&path);
    let etag = header(&first, "ETag").to_string();
    let last_modified = header(&first, "Last-Modified").to_string();
    for validator in [etag.as_str(), last_modified.as_str()] {
        let response = server.call(
            "GET",
            &path,
            &[("Range", "bytes=500-"), ("If-Range", validator)],
        );
        assert_eq!(response.status, 206, "{validator}: {response}");
        assert_eq!(response.body, body[500..]);
    }
    let weak = format!("W/{etag}");
    for validator in ["\"other\"", weak.as_str(), "Thu, 01 Jan 1970 00:00:01 GMT"] {
        let response = server.call(
            "GET",
            &path,
            &[("Range", "bytes=500-"), ("If-Range", validator)],
        );
        assert_eq!(response.status, 200, "{validator}: {response}");
        assert_eq!(response.body, body);
    }
}

#[test]
fn head_is_the_head_of_the_get() {
    let (_env, server, path, _) = with_one_file(&content());
    for range in [None, Some("bytes=100-199"), Some("bytes=5000-")] {
        let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        let get = server.call("GET", &path, &headers);
        let head = server.call("HEAD", &path, &headers);
        assert_eq!(head.status, get.status, "{range:?}");
        assert_eq!(head.headers, get.headers, "{range:?}");
        assert!(head.body.is_empty(), "{range:?}: {head}");
        assert!(!get.body.is_empty(), "{range:?}");
    }
    let head = server.call("HEAD", &path, &[("Range", "bytes=100-199")]);
    assert_eq!(header(&head, "Content-Length"), "100");
}

#[test]
fn an_empty_file_answers_a_range_from_its_start_with_200() {
    // A slot is for one byte or more; the file is emptied on disk afterwards.
    let (env, server, path, slot) = with_one_file(b"x");
    fs::write(env.stored(&slot.token, &slot.name), b"").unwrap();
    let response = server.call("GET", &path, &[("Range", "bytes=0-")]);
    assert_eq!(response.status, 200, "{response}");
    assert!(response.body.is_empty());
    let response = server.call("GET", &path, &[("Range", "bytes=1-")]);
    assert_eq!(response.status, 416, "{response}");
    assert_eq!(header(&response, "Content-Range"), "bytes */0");
}

#[test]
fn the_development_server_resumes_and_revalidates() {
    let dir = TempDir::new();
    let dev = start_dev(&dir.path.join("data"));
    let base = format!("http://127.0.0.1:{}", dev.port);
    let body = content();
    let file = dir.path.join("movie.mp4");
    fs::write(&file, &body).unwrap();
    let slot = web::curl(&[&format!(
        "{base}/http_upload/slot/?jid=user@example.com&name=movie.mp4&size=1000"
    )]);
    assert_eq!(slot.status, 200, "{slot:?}");
    let text = String::from_utf8_lossy(&slot.body).into_owned();
    let (put_url, get_url) = text.split_once('\n').expect("two lines");
    let put = web::curl(&["-T", file.to_str().unwrap(), put_url]);
    assert_eq!(put.status, 201, "{put:?}");

    // What curl -C - sends to resume.
    let part = web::curl(&["-r", "400-", get_url.trim()]);
    assert_eq!(part.status, 206, "{part:?}");
    assert_eq!(part.header("Content-Range"), Some("bytes 400-999/1000"));
    assert_eq!(part.body, body[400..]);
    let etag = part.header("ETag").expect("ETag").to_string();

    let beyond = web::curl(&["-r", "1000-", get_url.trim()]);
    assert_eq!(beyond.status, 416, "{beyond:?}");
    assert_eq!(beyond.header("Content-Range"), Some("bytes */1000"));

    let again = web::curl(&["-H", &format!("If-None-Match: {etag}"), get_url.trim()]);
    assert_eq!(again.status, 304, "{again:?}");
    assert!(again.body.is_empty());

    let head = web::curl(&["-I", "-r", "0-9", get_url.trim()]);
    assert_eq!(head.status, 206, "{head:?}");
    assert_eq!(head.header("Content-Length"), Some("10"));
    assert_eq!(head.header("Accept-Ranges"), Some("bytes"));

    for bad in [
        "bytes=5-2",
        "bytes=99999999999999999999999-",
        "bytes=nonsense",
    ] {
        let answer = web::curl(&["-H", &format!("Range: {bad}"), get_url.trim()]);
        assert!(
            answer.status == 200 || answer.status == 416,
            "{bad}: {answer:?}"
        );
    }
}
