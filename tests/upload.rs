//! Slot → PUT → GET over FastCGI in the three ways a PUT reaches the program (nginx
//! `auth_request`, Apache's Authorizer role, receiving the body itself), and every check of BEHAVIOUR.md
//! §3: age, exact length, no chunking, content type, one file per slot, token and name,
//! traversal, encodings, and that a failed self-written upload leaves nothing behind.

mod common;

use std::io::Read;
use std::thread;
use std::time::Duration;

use common::fcgi::{self, Body, Role};
use common::*;

const JID: &str = "bob@example.org";

/// The path a client sends after ejabberd percent-encoded the text answer's URL (PUT and GET
/// share the prefix in `standard_config`).
fn encoded_path(slot: &Slot) -> String {
    format!("/upload/{}/{}", slot.token, pct(&slot.name))
}

/// Asserts that nothing at all exists under the upload root.
fn assert_nothing_stored(env: &Env, what: &str) {
    let tree = env.upload_tree();
    assert!(
        tree.is_empty(),
        "{what}: unexpected paths under the upload root: {tree:?}"
    );
}

#[test]
fn upload_and_download_in_every_mode_for_every_script() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let names = [
        ("notes.txt", "notes.txt"),
        ("my holiday notes.txt", "my_holiday_notes.txt"),
        ("заметки отпуск.txt", "заметки_отпуск.txt"),
        ("ملاحظات.txt", "ملاحظات.txt"),
        ("😀.png", "_.png"),
    ];
    let mut seed = 0;
    for mode in ALL_MODES {
        for (input, sanitised) in names {
            seed += 1;
            let body = body_of(1000 + seed as usize * 37, seed);
            let slot = server.slot(JID, input, body.len() as u64);
            assert_eq!(slot.name, sanitised, "{input:?}");
            let put_path = encoded_path(&slot);
            let response = server.put(mode, &put_path, &Put::of(&body));
            assert_allowed(mode, &response, &format!("PUT {put_path}"));
            let stored = env.stored(&slot.token, sanitised);
            if mode == PutMode::SelfWrite {
                let on_disk =
                    std::fs::read(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display()));
                assert!(on_disk == body, "{}: wrong bytes on disk", stored.display());
            } else {
                assert!(
                    !stored.exists(),
                    "decide-only must not write {}",
                    stored.display()
                );
                std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
                std::fs::write(&stored, &body).unwrap();
            }

            let get = server.get(&encoded_path(&slot));
            assert_eq!(get.status, 200, "GET {}: {get}", slot.get_path);
            assert!(get.body == body, "GET {}: wrong bytes", slot.get_path);
            assert_eq!(
                get.header("Content-Length"),
                Some(body.len().to_string().as_str()),
                "{get}"
            );
            assert_eq!(
                get.header("X-Content-Type-Options"),
                Some("nosniff"),
                "{get}"
            );
            assert!(get.header("Content-Security-Policy").is_some(), "{get}");
            assert!(get.header("Content-Disposition").is_some(), "{get}");
            assert!(
                get.header("Access-Control-Allow-Origin").is_some(),
                "no CORS: {get}"
            );

            let head = server.call("HEAD", &encoded_path(&slot), &[]);
            assert_eq!(head.status, 200, "HEAD: {head}");
            assert!(head.body.is_empty(), "HEAD with a body: {head}");
            assert_eq!(
                head.header("Content-Length"),
                Some(body.len().to_string().as_str()),
                "{head}"
            );
        }
    }
}

#[test]
fn download_of_unknown_files_is_404() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot(JID, "never-uploaded.txt", 3);
    for uri in [
        slot.get_path.clone(),
        format!("/upload/{}/x.txt", "0".repeat(40)),
        "/upload/nothing/x.txt".to_string(),
    ] {
        let r = server.get(&uri);
        assert_eq!(r.status, 404, "GET {uri}: {r}");
    }
}

/// A reader yielding `len` bytes of [`body_of`]-like data without holding them.
struct Generated {
    left: u64,
    state: u32,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 17;
            self.state ^= self.state << 5;
            *b = self.state as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_large_self_written_upload_is_streamed() {
    const SIZE: u64 = 96 * 1024 * 1024;
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot(JID, "big.bin", SIZE);
    let length = SIZE.to_string();
    let params = fcgi::request_params(
        "PUT",
        &slot.put_path,
        &[
            ("Content-Length", &length),
            ("Content-Type", "application/octet-stream"),
        ],
    );
    let mut reader = Generated {
        left: SIZE,
        state: 7,
    };
    let r = server.request(Role::Responder, &params, Body::Reader(&mut reader));
    assert_eq!(r.status, 201, "{r}");

    let mut file = std::fs::File::open(env.stored(&slot.token, "big.bin")).unwrap();
    let mut expected = Generated {
        left: SIZE,
        state: 7,
    };
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut total = 0u64;
    loop {
        let n = expected.read(&mut a).unwrap();
        if n == 0 {
            break;
        }
        file.read_exact(&mut b[..n]).unwrap();
        assert!(a[..n] == b[..n], "stored bytes differ near offset {total}");
        total += n as u64;
    }
    assert_eq!(file.read(&mut b).unwrap(), 0, "stored file is longer");
    if let Some(peak) = server.peak_rss() {
        eprintln!("server peak RSS: {} KiB", peak >> 10);
        assert!(
            peak < 48 * 1024 * 1024,
            "server peaked at {} MiB RSS for a {} MiB upload",
            peak >> 20,
            SIZE >> 20
        );
    }
}

#[test]
fn expired_slots_are_refused() {
    let config = standard_config_with("put_timeout = \"1s\"", ALLOW_ALL);
    let (env, server) = start(&config);
    let body = b"late";
    let slots: Vec<Slot> = ALL_MODES
        .iter()
        .map(|_| server.slot(JID, "late.txt", body.len() as u64))
        .collect();
    thread::sleep(Duration::from_millis(2100));
    for (mode, slot) in ALL_MODES.into_iter().zip(&slots) {
        let r = server.put(mode, &slot.put_path, &Put::of(body));
        assert_refused(mode, &r, "PUT after put_timeout");
    }
    assert_nothing_stored(&env, "expired");
    // a fresh slot on the same server still works
    let slot = server.slot(JID, "late.txt", body.len() as u64);
    let r = server.put(PutMode::SelfWrite, &slot.put_path, &Put::of(body));
    assert_allowed(PutMode::SelfWrite, &r, "fresh slot");
}

#[test]
fn the_length_must_be_declared_and_exact() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let body = body_of(100, 1);
    let more = body_of(101, 2);
    for mode in ALL_MODES {
        let slot = server.slot(JID, "exact.bin", 100);
        // An allowed decide-only PUT of an earlier mode made its token directory (for
        // Apache's mod_dav): refusals must add nothing to what is there.
        let before = env.upload_tree();
        let cases: Vec<(&str, Put<'_>)> = vec![
            ("one byte more", Put::of(&more)),
            ("one byte less", Put::of(&body[..99])),
            (
                "no Content-Length",
                Put {
                    length: None,
                    ..Put::of(&body)
                },
            ),
            (
                "empty Content-Length",
                Put {
                    length: Some(String::new()),
                    ..Put::of(&body)
                },
            ),
            (
                "non-numeric Content-Length",
                Put {
                    length: Some("1e2".into()),
                    ..Put::of(&body)
                },
            ),
            (
                "chunked",
                Put {
                    length: None,
                    chunked: true,
                    ..Put::of(&body)
                },
            ),
            (
                "chunked with a length",
                Put {
                    chunked: true,
                    ..Put::of(&body)
                },
            ),
        ];
        for (what, put) in cases {
            let r = server.put(mode, &slot.put_path, &put);
            assert_refused(mode, &r, what);
        }
        assert_eq!(
            env.upload_tree(),
            before,
            "{mode:?}: refusals stored something"
        );
        // the slot is still good for the right length
        let r = server.put(mode, &slot.put_path, &Put::of(&body));
        assert_allowed(mode, &r, "exact length after refusals");
        if mode == PutMode::SelfWrite {
            assert!(std::fs::read(env.stored(&slot.token, "exact.bin")).unwrap() == body);
        }
    }
}

#[test]
fn a_self_written_body_that_does_not_match_its_length_leaves_no_file() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot(JID, "partial.bin", 1000);
    let long = body_of(1500, 3);
    for (what, sent) in [("shorter", &long[..500]), ("longer", &long[..])] {
        let put = Put {
            length: Some("1000".into()),
            content_type: None,
            chunked: false,
            body: sent,
        };
        let r = server.put(PutMode::SelfWrite, &slot.put_path, &put);
        assert!(
            (400..500).contains(&r.status),
            "body {what} than Content-Length: {r}"
        );
        assert!(!env.stored(&slot.token, "partial.bin").exists(), "{what}");
        let token_dir = env.upload_root.join(&slot.token);
        let leftovers: Vec<_> = std::fs::read_dir(&token_dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "{what}: left behind {leftovers:?}");
    }
}

#[test]
fn the_content_type_must_match_the_slots() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let body = b"\x89PNG....";
    let n = body.len() as u64;
    for mode in ALL_MODES {
        // ejabberd's `content_type`
        let slot = server.typed_slot(JID, "a.png", n, "image/png");
        for wrong in ["text/plain", "image/jpeg", "image/png-evil"] {
            let r = server.put(mode, &slot.put_path, &Put::of(body).typed(wrong));
            assert_refused(
                mode,
                &r,
                &format!("Content-Type {wrong} for an image/png slot"),
            );
        }
        let r = server.put(mode, &slot.put_path, &Put::of(body).typed("IMAGE/PNG"));
        assert_allowed(mode, &r, "same type, other case");

        // the Django app's `type`
        let response =
            server.slot_request(&format!("jid={JID}&name=b.png&size={n}&type=image%2Fpng"));
        let slot = parse_text_slot(&response);
        let r = server.put(mode, &slot.put_path, &Put::of(body).typed("text/html"));
        assert_refused(mode, &r, "`type=image/png` slot, text/html PUT");
        let r = server.put(mode, &slot.put_path, &Put::of(body).typed("image/png"));
        assert_allowed(mode, &r, "`type=image/png` slot, image/png PUT");
    }
}

#[test]
fn type_parameters_like_charset_are_ignored() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let body = b"hello";
    let n = body.len() as u64;
    for mode in ALL_MODES {
        // what ejabberd really sends for a text file
        let slot = server.typed_slot(JID, "a.txt", n, "text/plain; charset=utf-8");
        let r = server.put(mode, &slot.put_path, &Put::of(body).typed("text/plain"));
        assert_allowed(mode, &r, "slot with charset, PUT without");

        let slot = server.typed_slot(JID, "b.txt", n, "text/plain");
        let r = server.put(
            mode,
            &slot.put_path,
            &Put::of(body).typed("Text/Plain; charset=UTF-8"),
        );
        assert_allowed(mode, &r, "slot without charset, PUT with");
    }
}

#[test]
fn a_slot_gives_at_most_one_file_and_never_overwrites() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let first = b"first!";
    let second = b"second";
    for mode in ALL_MODES {
        let slot = server.slot(JID, "once.txt", first.len() as u64);
        server.upload(&env, mode, &slot, &Put::of(first));
        let r = server.put(mode, &slot.put_path, &Put::of(second));
        assert_refused(mode, &r, "second PUT to a used slot");
        if mode == PutMode::SelfWrite {
            assert_eq!(r.status, 409, "reused slot: {r}");
        }
        let stored = std::fs::read(env.stored(&slot.token, "once.txt")).unwrap();
        assert_eq!(stored, first, "the first upload was overwritten");
    }
    // A file that exists on disk (written by the web server) is never overwritten.
    for mode in ALL_MODES {
        let slot = server.slot(JID, "there.txt", second.len() as u64);
        let dir = env.upload_root.join(&slot.token);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("there.txt"), b"theirs").unwrap();
        let r = server.put(mode, &slot.put_path, &Put::of(second));
        assert_refused(mode, &r, "PUT over an existing file");
        assert_eq!(std::fs::read(dir.join("there.txt")).unwrap(), b"theirs");
    }
}

#[test]
fn unknown_tokens_and_wrong_names_are_refused() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let body = b"abc";
    let slot = server.slot(JID, "real.txt", 3);
    let other = server.slot(JID, "other.txt", 3);
    let paths = [
        format!("/upload/{}/real.txt", "a".repeat(40)),
        format!("/upload/{}/real.txt", &slot.token[..39]),
        format!("/upload/{}0/real.txt", slot.token),
        format!("/upload/{}/real.txt", slot.token.to_uppercase()),
        format!("/upload/{}/fake.txt", slot.token),
        format!("/upload/{}/real.txt", other.token),
        format!("/upload/{}/", slot.token),
        format!("/upload/{}", slot.token),
        "/upload/real.txt".to_string(),
        format!("/elsewhere/{}/real.txt", slot.token),
    ];
    for mode in ALL_MODES {
        for path in &paths {
            let r = server.put(mode, path, &Put::of(body));
            assert_refused(mode, &r, &format!("PUT {path}"));
        }
    }
    assert_nothing_stored(&env, "after unknown tokens");
}

#[test]
fn traversal_in_the_url_is_refused_and_writes_nothing() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let body = b"evil";
    let slot = server.slot(JID, "x", 4);
    let t = &slot.token;
    let paths = [
        format!("/upload/{t}/../x"),
        format!("/upload/{t}/../../x"),
        format!("/upload/{t}/%2e%2e"),
        format!("/upload/{t}/%2E%2E/x"),
        format!("/upload/{t}/..%2fx"),
        format!("/upload/{t}/..%2Fx"),
        format!("/upload/{t}/%2e%2e%2fx"),
        format!("/upload/{t}%2fx"),
        format!("/upload/{t}/x/../x/.."),
        format!("/upload/../{t}/x"),
        format!("/upload/{t}/.x"),
        format!("/upload/{t}/x%00"),
        format!("/upload/{t}/x/"),
        format!("/upload/{t}/x/y"),
        "/upload/../../etc/passwd".to_string(),
    ];
    for mode in ALL_MODES {
        for path in &paths {
            let r = server.put(mode, path, &Put::of(body));
            assert_refused(mode, &r, &format!("PUT {path}"));
        }
    }
    assert_nothing_stored(&env, "after traversal attempts");
    let mut stray: Vec<String> = env.all_files();
    stray.retain(|p| {
        let ours = p.starts_with("files")
            || p.starts_with("uploads.sqlite3")
            || p.ends_with(".sock")
            || p.ends_with(".log")
            || p == "config.toml";
        !ours
    });
    assert!(stray.is_empty(), "files outside the upload root: {stray:?}");
    // and the slot itself is intact
    let r = server.put(PutMode::SelfWrite, &slot.put_path, &Put::of(body));
    assert_allowed(PutMode::SelfWrite, &r, "the real path after the attempts");
}

#[test]
fn names_may_arrive_raw_or_encoded_once_and_twice_only_when_the_program_writes() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let body = b"payload";
    let n = body.len() as u64;
    type Spelling = fn(&str) -> String;
    let spellings: [(&str, Spelling); 3] = [
        ("raw UTF-8", |name| name.to_string()),
        ("encoded once", pct),
        ("encoded twice", |name| pct(&pct(name))),
    ];
    for mode in ALL_MODES {
        for (what, spell) in spellings {
            let slot = server.slot(JID, "файл 1.txt", n);
            assert_eq!(slot.name, "файл_1.txt");
            let path = format!("/upload/{}/{}", slot.token, spell(&slot.name));
            let r = server.put(mode, &path, &Put::of(body));
            if what == "encoded twice" && mode != PutMode::SelfWrite {
                // The web server decodes once and would store `<token>/%D1%84...`, a second
                // file beside the slot's: refused when the web server writes (issue 11.3).
                assert_refused(mode, &r, &format!("{what}: PUT {path}"));
                continue;
            }
            assert_allowed(mode, &r, &format!("{what}: PUT {path}"));
            if mode == PutMode::SelfWrite {
                let stored = env.stored(&slot.token, "файл_1.txt");
                assert_eq!(std::fs::read(&stored).unwrap(), body, "{what}");
            }
        }
        // encoded three times no longer decodes to the slot's name
        let slot = server.slot(JID, "файл 1.txt", n);
        let path = format!("/upload/{}/{}", slot.token, pct(&pct(&pct(&slot.name))));
        let r = server.put(mode, &path, &Put::of(body));
        assert_refused(mode, &r, &format!("encoded three times: PUT {path}"));
    }
}

#[test]
fn downloads_with_any_spelling_of_the_name() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let body = b"cyrillic";
    let slot = server.slot(JID, "файл.txt", body.len() as u64);
    let r = server.put(PutMode::SelfWrite, &encoded_path(&slot), &Put::of(body));
    assert_eq!(r.status, 201, "{r}");
    for path in [slot.get_path.clone(), encoded_path(&slot)] {
        let r = server.get(&path);
        assert_eq!(r.status, 200, "GET {path}: {r}");
        assert_eq!(r.body, body);
    }
}

#[test]
fn other_methods_on_upload_urls_are_not_500() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot(JID, "m.txt", 3);
    for method in ["DELETE", "POST", "PATCH", "MKCOL"] {
        let r = server.call(method, &slot.put_path, &[("Content-Length", "3")]);
        assert!((400..500).contains(&r.status), "{method}: {r}");
    }
}

#[test]
fn cors_preflight_for_a_self_written_put() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot(JID, "cors.txt", 3);
    let r = server.call(
        "OPTIONS",
        &slot.put_path,
        &[
            ("Origin", "https://chat.example.net"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
    );
    assert!((200..300).contains(&r.status), "{r}");
    assert!(r.header("Access-Control-Allow-Origin").is_some(), "{r}");
    let methods = r.header("Access-Control-Allow-Methods").unwrap_or("");
    assert!(methods.contains("PUT"), "{r}");
}

#[test]
fn non_utf8_upload_paths_are_refused() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot(JID, "a.txt", 3);
    let mut uri = format!("/upload/{}/a", slot.token).into_bytes();
    uri.extend_from_slice(b"\xff.txt");
    for mode in ALL_MODES {
        let headers = [("Content-Length", "3")];
        let (role, base, body) = match mode {
            PutMode::AuthRequest => (
                Role::Responder,
                fcgi::auth_subrequest_params("/", &headers),
                Body::Empty,
            ),
            PutMode::Authorizer => (
                Role::Authorizer,
                fcgi::authorizer_params("/", &headers),
                Body::None,
            ),
            PutMode::SelfWrite => (
                Role::Responder,
                fcgi::request_params("PUT", "/", &headers),
                Body::Bytes(b"abc"),
            ),
        };
        let params: Vec<(Vec<u8>, Vec<u8>)> = base
            .into_iter()
            .map(|(n, v)| {
                let v = if n == "REQUEST_URI" {
                    uri.clone()
                } else {
                    v.into_bytes()
                };
                (n.into_bytes(), v)
            })
            .collect();
        // The FastCGI crate drops a non-UTF-8 param and every later one, so the marker
        // `XHU_AUTHORIZE` may be lost: then no 2xx may come back (nginx would let the PUT through).
        let r = server.request(role, &params, body);
        assert!(!(200..300).contains(&r.status), "{mode:?}: {r}");
        assert!(r.status < 500, "{mode:?}: {r}");
        // With the marker first (as the shipped nginx config should order it) it is a clean 403.
        if mode == PutMode::AuthRequest {
            let mut marker_first = params.clone();
            marker_first.sort_by_key(|(n, _)| n.as_slice() != b"XHU_AUTHORIZE");
            let r = server.request(Role::Responder, &marker_first, Body::Empty);
            assert_refused(mode, &r, "PUT to a non-UTF-8 path, XHU_AUTHORIZE first");
        } else {
            assert_refused(mode, &r, "PUT to a non-UTF-8 path");
        }
    }
    assert_nothing_stored(&env, "non-UTF-8 paths");
}

#[test]
fn a_refused_put_is_logged_with_its_reason() {
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    for mode in DECIDE_MODES {
        let slot = server.slot(JID, "logged.txt", 3);
        let r = server.put(mode, &slot.put_path, &Put::of(b"four"));
        assert_refused(mode, &r, "wrong length");
        let reason = r.text().trim().to_string();
        assert!(
            !reason.is_empty(),
            "{mode:?}: a refusal without a reason: {r}"
        );
        let logged = wait_until(Duration::from_secs(3), || {
            server
                .log()
                .lines()
                .any(|l| l.contains(&slot.token) && l.contains(&reason))
        });
        assert!(
            logged,
            "{mode:?}: no log line with the token and {reason:?}:\n{}",
            server.log()
        );
    }
}

#[test]
fn downloads_cannot_escape_the_root_or_show_temporary_files() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot(JID, "real.txt", 4);
    server.upload(&env, PutMode::SelfWrite, &slot, &Put::of(b"real"));
    let dir = env.upload_root.join(&slot.token);
    std::fs::write(dir.join(".upload.part"), b"temporary").unwrap();
    let t = &slot.token;
    for uri in [
        format!("/upload/{t}/.upload.part"),
        format!("/upload/{t}/%2Eupload.part"),
        format!("/upload/{t}/../../config.toml"),
        format!("/upload/{t}/..%2F..%2Fconfig.toml"),
        format!("/upload/{t}/%2e%2e/%2e%2e/config.toml"),
        "/upload/../config.toml".to_string(),
        format!("/upload/{t}"),
        format!("/upload/{t}/"),
    ] {
        for method in ["GET", "HEAD"] {
            let r = server.call(method, &uri, &[]);
            assert!((400..500).contains(&r.status), "{method} {uri}: {r}");
            assert!(
                !r.text().contains("upload_root"),
                "{method} {uri} served the config"
            );
            assert!(
                !r.text().contains("temporary"),
                "{method} {uri} served a .part file"
            );
        }
    }
}

/// A directory outside the upload root and a file with a secret next to it.
fn outside_paths(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let outside = env.dir.path.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = env.dir.path.join("secret.txt");
    std::fs::write(&secret, b"outside secret").unwrap();
    (outside, secret)
}

#[test]
fn a_symlinked_token_dir_does_not_lead_outside() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let (outside, _) = outside_paths(&env);
    let slot = server.slot(JID, "a.txt", 3);
    std::os::unix::fs::symlink(&outside, env.upload_root.join(&slot.token)).unwrap();
    let r = server.put(PutMode::SelfWrite, &slot.put_path, &Put::of(b"abc"));
    let written: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().collect();
    assert!(
        written.is_empty(),
        "wrote through a symlinked token dir ({r}): {written:?}"
    );
    assert!((400..500).contains(&r.status), "{r}");
}

#[test]
fn symlinked_file_names_do_not_lead_outside() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let (_, secret) = outside_paths(&env);

    // a file name that is a symlink to a file outside the root: not served, not overwritten
    let slot = server.slot(JID, "b.txt", 3);
    let dir = env.upload_root.join(&slot.token);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("b.txt")).unwrap();
    let r = server.get(&slot.get_path);
    assert!(
        !r.text().contains("outside secret"),
        "served a file outside the root: {r}"
    );
    let r = server.put(PutMode::SelfWrite, &slot.put_path, &Put::of(b"abc"));
    assert!((400..500).contains(&r.status), "PUT over a symlink: {r}");
    assert_eq!(std::fs::read(&secret).unwrap(), b"outside secret");

    // a dangling symlink as the file name: the target must not be created
    let slot = server.slot(JID, "c.txt", 3);
    let dir = env.upload_root.join(&slot.token);
    std::fs::create_dir(&dir).unwrap();
    let target = env.dir.path.join("created-through-symlink.txt");
    std::os::unix::fs::symlink(&target, dir.join("c.txt")).unwrap();
    let r = server.put(PutMode::SelfWrite, &slot.put_path, &Put::of(b"abc"));
    assert!(!target.exists(), "wrote through a dangling symlink ({r})");
}

#[test]
fn concurrent_puts_to_one_slot_store_exactly_one_whole_file() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    const SIZE: usize = 2 * 1024 * 1024;
    let slot = server.slot(JID, "raced.bin", SIZE as u64);
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| body_of(SIZE, 100 + i)).collect();
    let barrier = std::sync::Barrier::new(bodies.len());
    let statuses: Vec<u16> = thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|body| {
                let (server, slot, barrier) = (&server, &slot, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    server
                        .put(PutMode::SelfWrite, &slot.put_path, &Put::of(body))
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = statuses.iter().filter(|&&s| s == 201).count();
    assert_eq!(winners, 1, "statuses {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|&s| s == 201 || (400..500).contains(&s)),
        "{statuses:?}"
    );
    let stored = std::fs::read(env.stored(&slot.token, "raced.bin")).unwrap();
    let winner = statuses.iter().position(|&s| s == 201).unwrap();
    assert!(
        stored == bodies[winner],
        "the stored file is not the winner's body"
    );
    let names: Vec<_> = std::fs::read_dir(env.upload_root.join(&slot.token))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "leftovers: {names:?}");
}

#[test]
fn an_upload_cut_off_halfway_leaves_no_file() {
    let (env, server) = start(&standard_config(ALLOW_ALL));
    let slot = server.slot(JID, "cut.bin", 1_000_000);
    let params = fcgi::request_params("PUT", &slot.put_path, &[("Content-Length", "1000000")]);
    let mut connection = fcgi::Connection::open(&server.address, Role::Responder, &params).unwrap();
    assert!(connection.send_stdin(&body_of(400_000, 1)).unwrap());
    // give the program time to create its temporary file, then hang up like a client that left
    thread::sleep(Duration::from_millis(300));
    drop(connection);
    let token_dir = env.upload_root.join(&slot.token);
    let clean = wait_until(Duration::from_secs(5), || {
        std::fs::read_dir(&token_dir)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    });
    let left: Vec<_> = std::fs::read_dir(&token_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(clean, "left behind after a cut-off upload: {left:?}");
    // the server is still serving
    server.slot(JID, "after.txt", 1);
}

#[test]
fn a_program_served_download_takes_its_type_from_the_name_not_the_uploader() {
    // webserver_download = false in the standard config: the program serves the GET itself,
    // and must type it as nginx and Apache would (from the extension, SECURITY.md).
    let (_env, server) = start(&standard_config(ALLOW_ALL));
    let body = b"<script>alert(1)</script>";
    for (name, declared, served) in [
        ("x.png", "text/html", "image/png"),
        ("x.html", "image/png", "text/html"),
        ("noext", "image/png", "application/octet-stream"),
    ] {
        let slot = server.typed_slot(JID, name, body.len() as u64, declared);
        let r = server.put(
            PutMode::SelfWrite,
            &slot.put_path,
            &Put::of(body).typed(declared),
        );
        assert_eq!(r.status, 201, "{name}: {r}");
        let r = server.get(&slot.get_path);
        assert_eq!(r.status, 200, "{name}: {r}");
        assert_eq!(r.header("Content-Type"), Some(served), "{name}: {r}");
        let inline = served == "image/png";
        let disposition = r.header("Content-Disposition").unwrap_or("");
        assert_eq!(disposition.starts_with("inline"), inline, "{name}: {r}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{name}: {r}"
        );
    }
}
