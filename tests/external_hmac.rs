//! The external-upload HMAC protocol (BEHAVIOUR.md §7: Prosody's `mod_http_upload_external`, ejabberd's
//! `external_secret`) driven over FastCGI in the three ways a PUT reaches the program (nginx
//! `auth_request` with `XHU_AUTHORIZE=1`, Apache's Authorizer role, receiving the body itself),
//! with every MAC computed by `openssl dgst -sha256 -hmac` over the exact message bytes, never by
//! the code under test: each version (`v`, `v2`, `token`), the highest version winning, wrong
//! secret / size / type, tampered path, missing and malformed MACs, both escapings of a Cyrillic
//! name, ejabberd's 3-segment path, 409, 413, traversal, the downloads' headers, and cleanup.

mod common;

use std::fs;
use std::thread;
use std::time::Duration;

use common::fcgi::Response;
use common::signing::hmac_sha256_hex;
use common::*;

const SECRET: &str = "hmac shared secret";
const MAX: u64 = 1000;
/// A Prosody-style `<uuid>` first segment.
const UUID: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
/// `printf bob@example.org | sha1sum`: ejabberd's first segment for that user.
const USER_SHA1: &str = "97ec78b292ab06a5b64d5cc50140b2a3fd901061";

fn config_with(extra_top: &str) -> String {
    let top = standard_config_with(extra_top, ALLOW_ALL);
    format!(
        "{top}\n[[external]]\nprefix = \"/share\"\nsecret = \"{SECRET}\"\nmax_file_size = {MAX}\n"
    )
}

fn config() -> String {
    config_with("")
}

/// `v`: HMAC(secret, `<path> <size>`).
fn mac_v1(secret: &str, path: &str, size: usize) -> String {
    hmac_sha256_hex(secret, format!("{path} {size}").as_bytes())
}

/// `v2` / `token`: HMAC(secret, `<path>\0<size>\0<type>`).
fn mac_v2(secret: &str, path: &str, size: usize, content_type: &str) -> String {
    hmac_sha256_hex(secret, format!("{path}\0{size}\0{content_type}").as_bytes())
}

/// Percent-encodes like [`pct`], but with lower-case hex digits (Prosody's `%d0%a2`).
fn pct_lower(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Encodes each segment of `path` with `encode`, keeping the `/` between them.
fn encode_path(path: &str, encode: fn(&str) -> String) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// Where a file of `path` (decoded, below the prefix) lives.
fn on_disk(env: &Env, path: &str) -> std::path::PathBuf {
    let mut p = env.upload_root.join("share");
    for segment in path.split('/') {
        p.push(segment);
    }
    p
}

/// After a "yes" in a decide-only mode, the test plays the web server and writes the file.
fn web_server_writes(env: &Env, path: &str, body: &[u8]) {
    let target = on_disk(env, path);
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::write(target, body).unwrap();
}

/// A signed PUT that must be allowed; afterwards the file is on disk (written by the program or
/// by the test in the decide-only modes).
fn put_ok(server: &Server, env: &Env, mode: PutMode, uri: &str, path: &str, put: &Put<'_>) {
    let response = server.put(mode, uri, put);
    assert_allowed(mode, &response, &format!("PUT {uri}"));
    let target = on_disk(env, path);
    if mode == PutMode::SelfWrite {
        let stored = fs::read(&target).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        assert!(stored == put.body, "{}: wrong bytes", target.display());
        assert_eq!(response.text(), "created\n", "{response}");
    } else {
        assert!(
            !target.exists(),
            "decide-only must not write {}",
            target.display()
        );
        web_server_writes(env, path, put.body);
    }
}

/// A PUT that must be refused with `status` when the program receives the body, 403 in the
/// decide-only modes; nothing may appear at `path`.
fn put_refused(
    server: &Server,
    env: &Env,
    mode: PutMode,
    uri: &str,
    path: Option<&str>,
    put: &Put<'_>,
    status: u16,
) -> Response {
    let response = server.put(mode, uri, put);
    let expected = if mode == PutMode::SelfWrite {
        status
    } else {
        403
    };
    assert_eq!(
        response.status, expected,
        "PUT {uri} ({mode:?}) should be refused with {expected}, got {response}"
    );
    if let Some(path) = path {
        assert!(
            !on_disk(env, path).exists(),
            "PUT {uri} ({mode:?}) refused but {} exists",
            path
        );
    }
    response
}

#[test]
fn openssl_hmac_matches_rfc_4231() {
    // RFC 4231 test case 2: the signer itself is right.
    assert_eq!(
        hmac_sha256_hex("Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn v1_upload_and_download_in_every_mode() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let path = format!("{UUID}/notes {i}.txt");
        let body = body_of(100 + i, i as u32);
        let mac = mac_v1(SECRET, &path, body.len());
        let uri = format!("/share/{}?v={mac}", encode_path(&path, pct));
        put_ok(&server, &env, mode, &uri, &path, &Put::of(&body));
        let get_uri = format!("/share/{}", encode_path(&path, pct));
        assert_download(&server, &get_uri, &body, "text/plain", true);
    }
}

#[test]
fn downloads_keep_media_inline_and_the_rest_as_attachments() {
    let (env, server) = start(&config());
    let cases = [
        ("photo.png", Some("image/png"), true),
        ("clip.mp4", Some("video/mp4"), true),
        ("voice.mp3", Some("audio/mpeg"), true),
        ("readme.txt", Some("text/plain"), true),
        ("page.html", None, false),
        ("script.js", None, false),
        ("data.bin", None, false),
    ];
    for (name, media, inline) in cases {
        let path = format!("{UUID}/{name}");
        let body = format!("<script>alert('{name}')</script>").into_bytes();
        let mac = mac_v1(SECRET, &path, body.len());
        put_ok(
            &server,
            &env,
            PutMode::SelfWrite,
            &format!("/share/{path}?v={mac}"),
            &path,
            &Put::of(&body),
        );
        let get = server.get(&format!("/share/{path}"));
        let served = get.header("Content-Type").unwrap_or_default().to_string();
        if let Some(media) = media {
            assert_eq!(served, media, "{name}: {get}");
        }
        assert_download(&server, &format!("/share/{path}"), &body, &served, inline);
    }
}

#[test]
fn v2_and_token_sign_path_size_and_type() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let body = body_of(64, 10 + i as u32);
        for param in ["v2", "token"] {
            // typed
            let path = format!("{UUID}/{param}-{i}.png");
            let mac = mac_v2(SECRET, &path, body.len(), "image/png");
            let uri = format!("/share/{path}?{param}={mac}");
            put_ok(
                &server,
                &env,
                mode,
                &uri,
                &path,
                &Put::of(&body).typed("image/png"),
            );

            // no Content-Type: Prosody signs application/octet-stream
            let path = format!("{UUID}/{param}-{i}-untyped.bin");
            let mac = mac_v2(SECRET, &path, body.len(), "application/octet-stream");
            let uri = format!("/share/{path}?{param}={mac}");
            put_ok(&server, &env, mode, &uri, &path, &Put::of(&body));

            // wrong type: signed image/png, sent image/jpeg
            let path = format!("{UUID}/{param}-{i}-wrongtype.png");
            let mac = mac_v2(SECRET, &path, body.len(), "image/png");
            let uri = format!("/share/{path}?{param}={mac}");
            put_refused(
                &server,
                &env,
                mode,
                &uri,
                Some(&path),
                &Put::of(&body).typed("image/jpeg"),
                403,
            );
            // type signed but none sent
            put_refused(&server, &env, mode, &uri, Some(&path), &Put::of(&body), 403);

            // a v1 MAC under a v2 name does not verify
            let mac = mac_v1(SECRET, &path, body.len());
            let uri = format!("/share/{path}?{param}={mac}");
            put_refused(
                &server,
                &env,
                mode,
                &uri,
                Some(&path),
                &Put::of(&body).typed("image/png"),
                403,
            );
        }
    }
    // a v2 MAC under `v` does not verify either
    let body = b"12345";
    let path = format!("{UUID}/v2-as-v1.txt");
    let mac = mac_v2(SECRET, &path, body.len(), "text/plain");
    put_refused(
        &server,
        &env,
        PutMode::SelfWrite,
        &format!("/share/{path}?v={mac}"),
        Some(&path),
        &Put::of(body).typed("text/plain"),
        403,
    );
}

#[test]
fn the_highest_version_present_wins() {
    let (env, server) = start(&config());
    let body = b"versioned";
    let wrong = "0".repeat(64);
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let path = format!("{UUID}/ver-{i}.txt");
        let v1 = mac_v1(SECRET, &path, body.len());
        let v2 = mac_v2(SECRET, &path, body.len(), "text/plain");
        let put = Put::of(body).typed("text/plain");
        // a good v next to a bad v2 or token: the v2/token decides → refused
        for query in [
            format!("v={v1}&v2={wrong}"),
            format!("v2={wrong}&v={v1}"),
            format!("v={v1}&token={wrong}"),
        ] {
            let uri = format!("/share/{path}?{query}");
            put_refused(&server, &env, mode, &uri, Some(&path), &put, 403);
        }
        // a bad v next to a good v2: allowed
        let uri = format!("/share/{path}?v={wrong}&v2={v2}");
        put_ok(&server, &env, mode, &uri, &path, &put);
    }
}

#[test]
fn wrong_secret_size_path_or_missing_signature_is_403() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let path = format!("{UUID}/refused-{i}.txt");
        let body = b"hello";
        let put = Put::of(body);
        let uri = |query: &str| format!("/share/{path}?{query}");

        let cases: Vec<(&str, String, Put<'_>)> = vec![
            (
                "wrong secret",
                uri(&format!("v={}", mac_v1("another secret", &path, 5))),
                put.clone(),
            ),
            (
                "secret with a trailing space",
                uri(&format!("v={}", mac_v1(&format!("{SECRET} "), &path, 5))),
                put.clone(),
            ),
            (
                "signed for 5 bytes, Content-Length 6",
                uri(&format!("v={}", mac_v1(SECRET, &path, 5))),
                Put::of(b"hello!"),
            ),
            (
                "signed for 6 bytes, Content-Length 5",
                uri(&format!("v={}", mac_v1(SECRET, &path, 6))),
                put.clone(),
            ),
            (
                "v2 signed for 5 bytes, Content-Length 4",
                uri(&format!(
                    "v2={}",
                    mac_v2(SECRET, &path, 5, "application/octet-stream")
                )),
                Put::of(b"hell"),
            ),
            (
                "tampered path: signed for another file",
                uri(&format!(
                    "v={}",
                    mac_v1(SECRET, &format!("{UUID}/other-{i}.txt"), 5)
                )),
                put.clone(),
            ),
            (
                "tampered path: signed for another directory",
                uri(&format!(
                    "v={}",
                    mac_v1(SECRET, &format!("00000000-{UUID}/refused-{i}.txt"), 5)
                )),
                put.clone(),
            ),
            ("no signature", uri(""), put.clone()),
            ("no query at all", format!("/share/{path}"), put.clone()),
            ("empty v", uri("v="), put.clone()),
            (
                "non-hex v",
                uri(&format!("v={}", "zz".repeat(32))),
                put.clone(),
            ),
            (
                "63 hex digits",
                uri(&format!("v={}", &mac_v1(SECRET, &path, 5)[1..])),
                put.clone(),
            ),
            (
                "65 hex digits",
                uri(&format!("v={}0", mac_v1(SECRET, &path, 5))),
                put.clone(),
            ),
            (
                "64 hex digits that are not the MAC",
                uri(&format!("v={}", "ab".repeat(32))),
                put.clone(),
            ),
        ];
        for (what, uri, put) in cases {
            let response = server.put(mode, &uri, &put);
            let expected = 403;
            assert_eq!(
                response.status, expected,
                "{what}: PUT {uri} ({mode:?}) should be 403, got {response}"
            );
            assert!(!on_disk(&env, &path).exists(), "{what}: refused but stored");
        }
        // and the right MAC for the same path works (the cases above failed for their reason)
        put_ok(
            &server,
            &env,
            mode,
            &uri(&format!("v={}", mac_v1(SECRET, &path, 5))),
            &path,
            &put,
        );
    }
    // a self-written upload whose body is not its Content-Length leaves nothing
    let path = format!("{UUID}/short-body.txt");
    let short = Put {
        length: Some("5".into()),
        content_type: None,
        chunked: false,
        body: b"abc",
    };
    let uri = format!("/share/{path}?v={}", mac_v1(SECRET, &path, 5));
    let response = server.put(PutMode::SelfWrite, &uri, &short);
    assert!(
        (400..500).contains(&response.status),
        "short body: {response}"
    );
    assert!(!on_disk(&env, &path).exists(), "short body stored");
}

#[test]
fn cyrillic_names_in_both_escapings_and_ejabberds_three_segments() {
    let (env, server) = start(&config());
    let name = "Тест файл.txt";
    let ejabberd_name = "Тест_файл.txt";
    let random = "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3gH5jK7m";
    assert_eq!(random.len(), 40);
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        // Prosody: <uuid>/<name>, lower-case escapes (%d0%a2, %20)
        let uuid = format!("{i}{}", &UUID[1..]);
        let path = format!("{uuid}/{name}");
        let body = body_of(333, 40 + i as u32);
        let raw = encode_path(&path, pct_lower);
        assert!(raw.contains("%d0%a2") && raw.contains("%20"), "{raw}");
        let mac = mac_v1(SECRET, &path, body.len());
        put_ok(
            &server,
            &env,
            mode,
            &format!("/share/{raw}?v={mac}"),
            &path,
            &Put::of(&body),
        );
        // downloadable with either escaping
        assert_download(&server, &format!("/share/{raw}"), &body, "text/plain", true);
        assert_download(
            &server,
            &format!("/share/{}", encode_path(&path, pct)),
            &body,
            "text/plain",
            true,
        );

        // ejabberd: <sha1(jid)>/<40 alnum>/<name>, upper-case escapes (%D0%A2), v only
        let path = format!("{USER_SHA1}/{}{i}/{ejabberd_name}", &random[..39]);
        let body = body_of(444, 50 + i as u32);
        let raw = encode_path(&path, pct);
        assert!(raw.contains("%D0%A2"), "{raw}");
        let mac = mac_v1(SECRET, &path, body.len());
        put_ok(
            &server,
            &env,
            mode,
            &format!("/share/{raw}?v={mac}"),
            &path,
            &Put::of(&body),
        );
        assert_download(&server, &format!("/share/{raw}"), &body, "text/plain", true);
        assert_download(
            &server,
            &format!("/share/{}", encode_path(&path, pct_lower)),
            &body,
            "text/plain",
            true,
        );

        // v2 with lower-case escapes signs the decoded path too
        let path = format!("{uuid}/v2 {name}");
        let raw = encode_path(&path, pct_lower);
        let mac = mac_v2(SECRET, &path, body.len(), "text/plain");
        put_ok(
            &server,
            &env,
            mode,
            &format!("/share/{raw}?v2={mac}"),
            &path,
            &Put::of(&body).typed("text/plain"),
        );

        // a MAC over the *encoded* path is not what the servers sign: refused
        let path = format!("{uuid}/enc {name}");
        let raw = encode_path(&path, pct);
        let mac = mac_v1(SECRET, &raw, body.len());
        put_refused(
            &server,
            &env,
            mode,
            &format!("/share/{raw}?v={mac}"),
            Some(&path),
            &Put::of(&body),
            403,
        );
    }
}

#[test]
fn second_put_of_a_path_is_409_and_nothing_is_overwritten() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let path = format!("{UUID}/once-{i}.txt");
        let first = body_of(50, 70 + i as u32);
        let mac = mac_v1(SECRET, &path, first.len());
        let uri = format!("/share/{path}?v={mac}");
        put_ok(&server, &env, mode, &uri, &path, &Put::of(&first));

        // the same signed URL again, and a fresh MAC for other bytes of another size
        let second = body_of(60, 80 + i as u32);
        let mac2 = mac_v1(SECRET, &path, second.len());
        let uri2 = format!("/share/{path}?v={mac2}");
        for (uri, body) in [(&uri, &first), (&uri2, &second)] {
            for m in ALL_MODES {
                let response = server.put(m, uri, &Put::of(body));
                let expected = if m == PutMode::SelfWrite { 409 } else { 403 };
                assert_eq!(
                    response.status, expected,
                    "second PUT {uri} ({m:?}) after {mode:?}: {response}"
                );
            }
        }
        let stored = fs::read(on_disk(&env, &path)).unwrap();
        assert!(stored == first, "{path} was overwritten");
    }
}

#[test]
fn larger_than_max_file_size_is_413() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let over = body_of(MAX as usize + 1, 90 + i as u32);
        let path = format!("{UUID}/big-{i}.bin");
        let mac = mac_v1(SECRET, &path, over.len());
        let response = put_refused(
            &server,
            &env,
            mode,
            &format!("/share/{path}?v={mac}"),
            Some(&path),
            &Put::of(&over),
            413,
        );
        if mode == PutMode::SelfWrite {
            assert!(
                response.text().contains(&MAX.to_string()),
                "413 does not name the limit: {response}"
            );
        }
        // v2 too
        let mac = mac_v2(SECRET, &path, over.len(), "application/octet-stream");
        put_refused(
            &server,
            &env,
            mode,
            &format!("/share/{path}?v2={mac}"),
            Some(&path),
            &Put::of(&over),
            413,
        );
        // exactly the maximum is fine
        let exact = &over[..MAX as usize];
        let path = format!("{UUID}/exact-{i}.bin");
        let mac = mac_v1(SECRET, &path, exact.len());
        put_ok(
            &server,
            &env,
            mode,
            &format!("/share/{path}?v={mac}"),
            &path,
            &Put::of(exact),
        );
    }
}

#[test]
fn traversal_is_refused_and_nothing_is_written_outside() {
    let (env, server) = start(&config());
    // settle the files the server creates on its first requests
    let _ = server.get("/share/x/y");
    let is_db = |p: &String| p.starts_with("uploads.sqlite3");
    let before: Vec<String> = env.all_files().into_iter().filter(|p| !is_db(p)).collect();

    let body = b"evil";
    // (raw path below /share/, the decoded path the signer would sign)
    let cases = [
        ("a/../../outside.txt", "a/../../outside.txt"),
        ("../outside.txt", "../outside.txt"),
        ("a/../b.txt", "a/../b.txt"),
        ("a/%2e%2e/%2e%2e/outside.txt", "a/../../outside.txt"),
        ("a/%2E%2E/%2E%2E/outside.txt", "a/../../outside.txt"),
        ("%2e%2e/%2e%2e/outside.txt", "../../outside.txt"),
        ("a/..%2f..%2foutside.txt", "a/../../outside.txt"),
        ("a/..%2F..%2Foutside.txt", "a/../../outside.txt"),
        ("a%2f..%2f..%2foutside.txt/x", "a/../../outside.txt/x"),
        ("a/b%2fc.txt", "a/b/c.txt"),
        ("a/.hidden", "a/.hidden"),
        ("a/.x.part", "a/.x.part"),
        (".a/x.txt", ".a/x.txt"),
        ("a/%2ehidden", "a/.hidden"),
        ("a/.", "a/."),
        ("a//x.txt", "a//x.txt"),
        ("a/x.txt%00.png", "a/x.txt\0.png"),
    ];
    for mode in ALL_MODES {
        for (raw, signed) in cases {
            for mac in [
                format!("v={}", mac_v1(SECRET, signed, body.len())),
                format!(
                    "v2={}",
                    mac_v2(SECRET, signed, body.len(), "application/octet-stream")
                ),
            ] {
                let uri = format!("/share/{raw}?{mac}");
                let response = server.put(mode, &uri, &Put::of(body));
                assert!(
                    response.status == 403
                        || (mode == PutMode::SelfWrite && response.status == 400),
                    "PUT {uri} ({mode:?}) should be refused (403), got {response}"
                );
            }
        }
    }
    let after: Vec<String> = env.all_files().into_iter().filter(|p| !is_db(p)).collect();
    let new: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    assert!(new.is_empty(), "traversal attempts left files: {new:?}");
    assert!(!env.dir.path.join("outside.txt").exists());
    assert!(
        env.upload_tree()
            .iter()
            .all(|p| p == "share" || !p.contains("outside")),
        "{:?}",
        env.upload_tree()
    );
}

#[test]
fn cleanup_removes_hmac_files_past_retention() {
    let env = Env::new(&config());
    let server = env.serve();
    let short = env.write_config("short.toml", &config_with("retention = \"1s\""));

    let self_path = format!("{UUID}/old self.txt");
    let body = b"old file";
    let mac = mac_v1(SECRET, &self_path, body.len());
    put_ok(
        &server,
        &env,
        PutMode::SelfWrite,
        &format!("/share/{}?v={mac}", encode_path(&self_path, pct)),
        &self_path,
        &Put::of(body),
    );
    let web_path = format!("{USER_SHA1}/{}/old web.txt", "x".repeat(40));
    let mac = mac_v1(SECRET, &web_path, body.len());
    put_ok(
        &server,
        &env,
        PutMode::AuthRequest,
        &format!("/share/{}?v={mac}", encode_path(&web_path, pct)),
        &web_path,
        &Put::of(body),
    );

    // the default retention (30 d) keeps them
    let output = env.run(&["cleanup", "--config", env.config.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(output.status.success(), "cleanup failed: {text}");
    assert!(
        on_disk(&env, &self_path).exists(),
        "removed too early: {text}"
    );
    assert!(
        on_disk(&env, &web_path).exists(),
        "removed too early: {text}"
    );

    thread::sleep(Duration::from_secs(2));
    let output = env.run(&["cleanup", "--config", short.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(output.status.success(), "cleanup failed: {text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        !on_disk(&env, &self_path).exists(),
        "self-written HMAC file past retention kept: {text}"
    );
    assert!(
        !on_disk(&env, &web_path).exists(),
        "web-server-written HMAC file past retention kept: {text}"
    );
    assert!(
        text.contains("old self.txt"),
        "cleanup did not say so: {text}"
    );
    // its now-empty directories go too, the prefix directory stays
    assert!(
        !env.upload_root.join("share").join(UUID).exists(),
        "empty directory left: {:?}",
        env.upload_tree()
    );
    assert!(
        !env.upload_root.join("share").join(USER_SHA1).exists(),
        "empty directories left: {:?}",
        env.upload_tree()
    );
    // and the download is gone
    let get = server.get(&format!("/share/{}", encode_path(&self_path, pct)));
    assert_eq!(get.status, 404, "{get}");
}
