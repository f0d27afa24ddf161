//! Prosody 0.12+'s `mod_http_file_share` with an external service (BEHAVIOUR.md §7b): PUTs carrying
//! `Authorization: Bearer <JWT>`, driven over FastCGI in the three ways a PUT reaches the program
//! (nginx `auth_request` with `XHU_AUTHORIZE=1`, Apache's Authorizer role, receiving the body
//! itself). Every token is built by python3's standard library (`hmac`, `hashlib`, `base64`),
//! never by the code under test. Covers: valid uploads and their downloads' headers, expired
//! `exp`, wrong secret, `alg` none and HS512, tampered payloads, the token of another slot or
//! file, wrong size and type, a missing header, a reused slot, the retry of an interrupted
//! upload (counted once), the access rules and quotas applied to `sub`, and cleanup at `expires`.

mod common;

use std::fs;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::fcgi::Response;
use common::signing::{HS256_HEADER, hs256_jwt, jwt_with, put_with_headers};
use common::*;

const SECRET: &str = "jwt shared secret";
const PREFIX: &str = "/file_share";
const JID: &str = "alice@example.org";

const RULES: &str = r#"
[[rules]]
match = '^mallory@example\.org$'
deny = true
[[rules]]
match = '^quota'
max_total_size = 10
[[rules]]
match = '^small@example\.org$'
max_file_size = 5
[[rules]]
match = '.*'
"#;

fn config() -> String {
    format!(
        "{}\n[[file_share]]\nprefix = \"{PREFIX}\"\nsecret = \"{SECRET}\"\n",
        standard_config(RULES)
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A slot id as Prosody makes them: 24 base64url characters; `tag` makes it unique.
fn slot_id(tag: &str) -> String {
    const BASE: &str = "Qm9vLWJhX3NlY3JldC1zbG90";
    assert!(tag.len() <= 12 && tag.bytes().all(|b| b.is_ascii_alphanumeric()));
    let id = format!("{tag}{}", &BASE[tag.len()..]);
    assert_eq!(id.len(), 24);
    id
}

/// The claims Prosody 0.12.3 puts in an upload token.
#[derive(Clone, Debug)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    slot: String,
    expires: Option<i64>,
    filename: String,
    filesize: usize,
    filetype: String,
}

impl Claims {
    /// A fresh slot: `exp` = iat + 300, `expires` = 7 days.
    fn new(slot: &str, filename: &str, filesize: usize, filetype: &str) -> Claims {
        let iat = now();
        Claims {
            sub: JID.to_string(),
            iat,
            exp: iat + 300,
            slot: slot.to_string(),
            expires: Some(iat + 7 * 86_400),
            filename: filename.to_string(),
            filesize,
            filetype: filetype.to_string(),
        }
    }

    fn sub(mut self, sub: &str) -> Claims {
        self.sub = sub.to_string();
        self
    }

    fn json(&self) -> String {
        let s = |v: &str| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\r', "\\r")
                .replace('\n', "\\n");
            format!("\"{escaped}\"")
        };
        let mut out = format!(
            "{{\"sub\":{},\"iat\":{},\"exp\":{},\"slot\":{},",
            s(&self.sub),
            self.iat,
            self.exp,
            s(&self.slot)
        );
        if let Some(expires) = self.expires {
            out.push_str(&format!("\"expires\":{expires},"));
        }
        out.push_str(&format!(
            "\"filename\":{},\"filesize\":{},\"filetype\":{}}}",
            s(&self.filename),
            self.filesize,
            s(&self.filetype)
        ));
        out
    }

    fn token(&self) -> String {
        hs256_jwt(SECRET, &self.json())
    }

    /// The URL Prosody hands out: `<prefix>/<slot>/<name>` with the name percent-encoded.
    fn uri(&self) -> String {
        format!("{PREFIX}/{}/{}", self.slot, prosody_encode(&self.filename))
    }
}

/// Prosody's `urlencode` of the file name: upper-case escapes, `!~*'()&=+$,:@` kept.
fn prosody_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!*'()&=+$,:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn put_auth(
    server: &Server,
    mode: PutMode,
    uri: &str,
    put: &Put<'_>,
    authorization: Option<&str>,
) -> Response {
    match authorization {
        Some(value) => put_with_headers(server, mode, uri, put, &[("Authorization", value)]),
        None => put_with_headers(server, mode, uri, put, &[]),
    }
}

fn on_disk(env: &Env, slot: &str, name: &str) -> PathBuf {
    env.upload_root.join("file_share").join(slot).join(name)
}

/// A PUT with the claims' token that must be allowed; afterwards the file is on disk (written
/// by the program, or by the test playing the web server in the decide-only modes).
fn upload(server: &Server, env: &Env, mode: PutMode, claims: &Claims, put: &Put<'_>) {
    let uri = claims.uri();
    let response = put_auth(server, mode, &uri, put, Some(&bearer(&claims.token())));
    assert_allowed(mode, &response, &format!("PUT {uri} {}", claims.json()));
    let target = on_disk(env, &claims.slot, &claims.filename);
    if mode == PutMode::SelfWrite {
        let stored = fs::read(&target).unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        assert!(stored == put.body, "{}: wrong bytes", target.display());
    } else {
        assert!(
            !target.exists(),
            "decide-only must not write {}",
            target.display()
        );
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, put.body).unwrap();
    }
}

/// Asserts a refusal: `status` when the program receives the body; in the decide-only modes
/// 401 passes through as it is and everything else becomes 403.
fn assert_status(mode: PutMode, response: &Response, status: u16, what: &str) {
    let expected = match mode {
        PutMode::SelfWrite => status,
        _ if status == 401 => 401,
        _ => 403,
    };
    assert_eq!(
        response.status, expected,
        "{what} ({mode:?}): expected {expected}, got {response}"
    );
    if expected == 401 {
        let challenge = response.header("WWW-Authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "{what} ({mode:?}): 401 without WWW-Authenticate: Bearer: {response}"
        );
    }
}

/// A PUT that must be refused with `status` (see [`assert_status`]) and store nothing.
#[allow(clippy::too_many_arguments)]
fn refused(
    server: &Server,
    env: &Env,
    mode: PutMode,
    uri: &str,
    put: &Put<'_>,
    authorization: Option<&str>,
    status: u16,
    what: &str,
) -> Response {
    let before = env.upload_tree();
    let response = put_auth(server, mode, uri, put, authorization);
    assert_status(mode, &response, status, &format!("{what}: PUT {uri}"));
    assert_eq!(
        env.upload_tree(),
        before,
        "{what}: PUT {uri} ({mode:?}) was refused but changed the upload root"
    );
    response
}

/// The download of `claims`' file, at the URI Prosody hands out and at the plainly encoded one.
fn assert_jwt_download(
    server: &Server,
    claims: &Claims,
    body: &[u8],
    content_type: &str,
    inline: bool,
) {
    for uri in [
        claims.uri(),
        format!("{PREFIX}/{}/{}", claims.slot, pct(&claims.filename)),
    ] {
        // common::assert_download checks that Content-Disposition names this name.
        assert_eq!(
            pct_decode(uri.rsplit('/').next().unwrap()),
            claims.filename,
            "GET {uri}: the URI does not name the file"
        );
        assert_download(server, &uri, body, content_type, inline);
    }
}

#[test]
fn python_builds_the_tokens_prosody_builds() {
    // The same header and payload always give the same token; its parts decode as expected.
    let claims = Claims::new(&slot_id("py"), "a.txt", 1, "text/plain");
    let token = claims.token();
    assert_eq!(token, claims.token());
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts[0], "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
    assert_eq!(
        parts[2].len(),
        43,
        "HS256 MAC is 32 bytes unpadded: {token}"
    );
    assert!(!token.contains('='), "padding in {token}");
    assert_ne!(token, hs256_jwt("other", &claims.json()));
}

#[test]
fn valid_tokens_upload_and_download_in_every_mode() {
    let (env, server) = start(&config());
    let files = [
        ("notes.txt", "text/plain", true),
        ("photo 1.png", "image/png", true),
        ("voice.ogg", "audio/ogg", true),
        ("Отчёт; итог.pdf", "application/pdf", false),
        ("a+b (1)!,x@y.html", "text/html", false),
    ];
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        for (j, (name, media, inline)) in files.into_iter().enumerate() {
            let body = body_of(200 + j * 13, (i * 10 + j) as u32);
            let claims = Claims::new(&slot_id(&format!("v{i}x{j}")), name, body.len(), media);
            upload(&server, &env, mode, &claims, &Put::of(&body).typed(media));
            assert_jwt_download(&server, &claims, &body, media, inline);
        }
        // Prosody's filetype when the client gave none, and a client sending no type
        let body = b"untyped".to_vec();
        let claims = Claims::new(
            &slot_id(&format!("u{i}")),
            "blob",
            body.len(),
            "application/octet-stream",
        );
        upload(&server, &env, mode, &claims, &Put::of(&body));
        assert_jwt_download(&server, &claims, &body, "application/octet-stream", false);
        // the media type compared without parameters, case-insensitively
        let claims = Claims::new(&slot_id(&format!("p{i}")), "p.png", 3, "image/png");
        upload(
            &server,
            &env,
            mode,
            &claims,
            &Put::of(b"png").typed("Image/PNG; foo=bar"),
        );
    }
}

#[test]
fn expired_token_is_410_and_403_when_only_deciding() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let mut claims = Claims::new(&slot_id(&format!("e{i}")), "late.txt", 4, "text/plain");
        claims.iat -= 400;
        claims.exp = claims.iat + 300;
        refused(
            &server,
            &env,
            mode,
            &claims.uri(),
            &Put::of(b"late").typed("text/plain"),
            Some(&bearer(&claims.token())),
            410,
            "exp 100 s ago",
        );
    }
}

#[test]
fn bad_tokens_are_401_with_www_authenticate_bearer() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let body = b"secret!";
        let claims = Claims::new(
            &slot_id(&format!("b{i}")),
            "doc.txt",
            body.len(),
            "text/plain",
        );
        let payload = claims.json();
        let good = claims.token();
        let parts: Vec<&str> = good.split('.').collect();
        let mut bigger = claims.clone();
        bigger.filesize = 8;
        let bigger_token = bigger.token();
        let bigger_parts: Vec<&str> = bigger_token.split('.').collect();
        let other_sub = claims.clone().sub("admin@example.org").token();
        let other_parts: Vec<&str> = other_sub.split('.').collect();

        let no_exp = payload.replace(&format!("\"exp\":{},", claims.exp), "");
        assert!(!no_exp.contains("\"exp\""), "{no_exp}");
        let text_exp = payload.replace(
            &format!("\"exp\":{},", claims.exp),
            &format!("\"exp\":\"{}\",", claims.exp),
        );

        let cases: Vec<(&str, Option<String>)> = vec![
            ("no Authorization header", None),
            ("empty Authorization", Some(String::new())),
            ("Basic scheme", Some(format!("Basic {}", "YWxpY2U6cHc="))),
            ("token without a scheme", Some(good.clone())),
            ("Bearer and nothing", Some("Bearer ".into())),
            ("not a JWT", Some(bearer("not-a-token"))),
            (
                "two parts",
                Some(bearer(&format!("{}.{}", parts[0], parts[1]))),
            ),
            (
                "wrong secret",
                Some(bearer(&hs256_jwt("another secret", &payload))),
            ),
            (
                "alg none, no signature",
                Some(bearer(&jwt_with(
                    "none",
                    SECRET,
                    r#"{"alg":"none","typ":"JWT"}"#,
                    &payload,
                ))),
            ),
            (
                "alg none, carrying the HS256 signature",
                Some(bearer(&format!(
                    "{}.{}.{}",
                    jwt_with("none", SECRET, r#"{"alg":"none","typ":"JWT"}"#, &payload)
                        .split('.')
                        .next()
                        .unwrap(),
                    parts[1],
                    parts[2]
                ))),
            ),
            (
                "alg HS512 with the right secret",
                Some(bearer(&jwt_with(
                    "sha512",
                    SECRET,
                    r#"{"alg":"HS512","typ":"JWT"}"#,
                    &payload,
                ))),
            ),
            (
                "alg HS256 header but an HMAC-SHA512 signature",
                Some(bearer(&jwt_with("sha512", SECRET, HS256_HEADER, &payload))),
            ),
            (
                "tampered payload: filesize",
                Some(bearer(&format!(
                    "{}.{}.{}",
                    parts[0], bigger_parts[1], parts[2]
                ))),
            ),
            (
                "tampered payload: sub",
                Some(bearer(&format!(
                    "{}.{}.{}",
                    parts[0], other_parts[1], parts[2]
                ))),
            ),
            (
                "signature of another token",
                Some(bearer(&format!(
                    "{}.{}.{}",
                    parts[0], parts[1], bigger_parts[2]
                ))),
            ),
            ("signature cut short", Some(bearer(&good[..good.len() - 2]))),
            ("no exp claim", Some(bearer(&hs256_jwt(SECRET, &no_exp)))),
            (
                "exp is not a number",
                Some(bearer(&hs256_jwt(SECRET, &text_exp))),
            ),
        ];
        for (what, authorization) in &cases {
            let put = Put::of(body).typed("text/plain");
            refused(
                &server,
                &env,
                mode,
                &claims.uri(),
                &put,
                authorization.as_deref(),
                401,
                what,
            );
        }
        // the right token for the same URL works: the cases failed for their reason
        upload(
            &server,
            &env,
            mode,
            &claims,
            &Put::of(body).typed("text/plain"),
        );
    }
}

#[test]
fn missing_authorization_is_401_with_bearer_challenge() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let claims = Claims::new(&slot_id(&format!("m{i}")), "x.txt", 3, "text/plain");
        let response = refused(
            &server,
            &env,
            mode,
            &claims.uri(),
            &Put::of(b"abc").typed("text/plain"),
            None,
            401,
            "no Authorization",
        );
        assert_eq!(
            response.header("WWW-Authenticate"),
            Some("Bearer"),
            "{response}"
        );
    }
}

#[test]
fn the_url_must_be_the_tokens_slot_and_file() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let body = b"12345";
        let claims = Claims::new(&slot_id(&format!("s{i}")), "mine.txt", 5, "text/plain");
        let auth = bearer(&claims.token());
        let put = Put::of(body).typed("text/plain");
        let other_slot = slot_id(&format!("o{i}"));
        for (what, uri) in [
            (
                "token of another slot",
                format!("{PREFIX}/{other_slot}/mine.txt"),
            ),
            (
                "another file name",
                format!("{PREFIX}/{}/yours.txt", claims.slot),
            ),
            (
                "file name differing in case",
                format!("{PREFIX}/{}/Mine.txt", claims.slot),
            ),
            (
                "an extra segment",
                format!("{PREFIX}/{}/mine.txt/more", claims.slot),
            ),
            (
                "slot and file swapped",
                format!("{PREFIX}/mine.txt/{}", claims.slot),
            ),
        ] {
            refused(&server, &env, mode, &uri, &put, Some(&auth), 400, what);
        }
        upload(&server, &env, mode, &claims, &put);
    }
}

#[test]
fn size_must_be_filesize_and_type_filetype() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let claims = Claims::new(&slot_id(&format!("z{i}")), "pic.png", 5, "image/png");
        let auth = bearer(&claims.token());
        let uri = claims.uri();
        refused(
            &server,
            &env,
            mode,
            &uri,
            &Put::of(b"123456").typed("image/png"),
            Some(&auth),
            413,
            "Content-Length 6, filesize 5",
        );
        refused(
            &server,
            &env,
            mode,
            &uri,
            &Put::of(b"1234").typed("image/png"),
            Some(&auth),
            413,
            "Content-Length 4, filesize 5",
        );
        refused(
            &server,
            &env,
            mode,
            &uri,
            &Put::of(b"12345").typed("text/plain"),
            Some(&auth),
            415,
            "Content-Type text/plain, filetype image/png",
        );
        refused(
            &server,
            &env,
            mode,
            &uri,
            &Put::of(b"12345"),
            Some(&auth),
            415,
            "no Content-Type, filetype image/png",
        );
        upload(
            &server,
            &env,
            mode,
            &claims,
            &Put::of(b"12345").typed("image/png"),
        );
    }
}

#[test]
fn a_used_slot_is_409() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let claims = Claims::new(&slot_id(&format!("r{i}")), "once.txt", 4, "text/plain");
        let put = Put::of(b"once").typed("text/plain");
        upload(&server, &env, mode, &claims, &put);
        // the same token again, and a fresh token for the same slot
        let mut fresh = claims.clone();
        fresh.iat += 1;
        fresh.exp += 1;
        for token in [claims.token(), fresh.token()] {
            for m in ALL_MODES {
                refused(
                    &server,
                    &env,
                    m,
                    &claims.uri(),
                    &Put::of(b"TWICE"[..4].as_ref()).typed("text/plain"),
                    Some(&bearer(&token)),
                    409,
                    &format!("second PUT after {mode:?}"),
                );
            }
        }
        let stored = fs::read(on_disk(&env, &claims.slot, "once.txt")).unwrap();
        assert_eq!(stored, b"once", "overwritten");
    }
}

#[test]
fn an_interrupted_upload_can_be_retried_and_counts_once() {
    let (env, server) = start(&config());
    // quota@: max_total_size 10
    let sub = "quota@example.org";
    let first = Claims::new(&slot_id("int1"), "six.bin", 6, "application/octet-stream").sub(sub);
    let auth = bearer(&first.token());
    let interrupted = Put {
        length: Some("6".into()),
        content_type: None,
        chunked: false,
        body: b"abc",
    };
    let response = put_auth(
        &server,
        PutMode::SelfWrite,
        &first.uri(),
        &interrupted,
        Some(&auth),
    );
    assert!(
        (400..500).contains(&response.status),
        "short body should be refused: {response}"
    );
    let dir = env.upload_root.join("file_share").join(&first.slot);
    let left: Vec<_> = fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "interrupted upload left {left:?}");

    // the retry with the same token succeeds
    upload(
        &server,
        &env,
        PutMode::SelfWrite,
        &first,
        &Put::of(b"sixsix"),
    );
    // 6 counted once: 4 more fit exactly, then nothing more
    let second = Claims::new(&slot_id("int2"), "four.bin", 4, "application/octet-stream").sub(sub);
    upload(
        &server,
        &env,
        PutMode::SelfWrite,
        &second,
        &Put::of(b"four"),
    );
    let third = Claims::new(&slot_id("int3"), "one.bin", 1, "application/octet-stream").sub(sub);
    refused(
        &server,
        &env,
        PutMode::SelfWrite,
        &third.uri(),
        &Put::of(b"1"),
        Some(&bearer(&third.token())),
        403,
        "over max_total_size",
    );

    // When the web server writes, the slot's one PUT was allowed (its body may still be on its
    // way, and a second body would replace it when it lands): a retry is refused, and needs a
    // new slot. The allowed one counts once.
    let sub = "quota2@example.org";
    let first = Claims::new(&slot_id("web1"), "eight.bin", 8, "application/octet-stream").sub(sub);
    let auth = bearer(&first.token());
    upload(
        &server,
        &env,
        PutMode::AuthRequest,
        &first,
        &Put::of(b"eightsss"),
    );
    fs::remove_file(on_disk(&env, &first.slot, &first.filename)).unwrap(); // it never landed
    for mode in DECIDE_MODES {
        refused(
            &server,
            &env,
            mode,
            &first.uri(),
            &Put::of(b"eightsss"),
            Some(&auth),
            409,
            "the retry of a PUT the web server was allowed to write",
        );
    }
    let second = Claims::new(&slot_id("web2"), "two.bin", 2, "application/octet-stream").sub(sub);
    upload(&server, &env, PutMode::Authorizer, &second, &Put::of(b"tw"));
    let third = Claims::new(&slot_id("web3"), "one.bin", 1, "application/octet-stream").sub(sub);
    for mode in ALL_MODES {
        refused(
            &server,
            &env,
            mode,
            &third.uri(),
            &Put::of(b"1"),
            Some(&bearer(&third.token())),
            403,
            "over max_total_size",
        );
    }
}

#[test]
fn access_rules_apply_to_sub() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        // a denied JID
        let claims = Claims::new(&slot_id(&format!("d{i}")), "no.txt", 2, "text/plain")
            .sub("mallory@example.org");
        refused(
            &server,
            &env,
            mode,
            &claims.uri(),
            &Put::of(b"no").typed("text/plain"),
            Some(&bearer(&claims.token())),
            403,
            "denied sub",
        );
        // a file larger than the JID's whole max_total_size
        let claims = Claims::new(
            &slot_id(&format!("t{i}")),
            "big.bin",
            11,
            "application/octet-stream",
        )
        .sub(&format!("quota{i}x@example.org"));
        refused(
            &server,
            &env,
            mode,
            &claims.uri(),
            &Put::of(b"elevenbytes"),
            Some(&bearer(&claims.token())),
            403,
            "over max_total_size",
        );
        // the total reached by earlier uploads of the same sub
        let sub = format!("quota{i}y@example.org");
        let a = Claims::new(
            &slot_id(&format!("qa{i}")),
            "a.bin",
            7,
            "application/octet-stream",
        )
        .sub(&sub);
        upload(&server, &env, mode, &a, &Put::of(b"sevenby"));
        let b = Claims::new(
            &slot_id(&format!("qb{i}")),
            "b.bin",
            4,
            "application/octet-stream",
        )
        .sub(&sub);
        refused(
            &server,
            &env,
            mode,
            &b.uri(),
            &Put::of(b"four"),
            Some(&bearer(&b.token())),
            403,
            "7 stored + 4 > max_total_size 10",
        );
        // another JID is not affected
        let c = Claims::new(
            &slot_id(&format!("qc{i}")),
            "c.bin",
            4,
            "application/octet-stream",
        );
        upload(&server, &env, mode, &c, &Put::of(b"four"));
    }
}

#[test]
fn the_rules_max_file_size_applies_to_sub() {
    // BEHAVIOUR.md §4 / issue 8: the rules apply to `sub` exactly as for the slot API, where a file over
    // the rule's max_file_size is a 413 (403 when only deciding).
    let (env, server) = start(&config());
    let mut wrong = Vec::new();
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        // small@: max_file_size 5 (and no other limit)
        let claims = Claims::new(
            &slot_id(&format!("f{i}")),
            "six.bin",
            6,
            "application/octet-stream",
        )
        .sub("small@example.org");
        let response = put_auth(
            &server,
            mode,
            &claims.uri(),
            &Put::of(b"sixsix"),
            Some(&bearer(&claims.token())),
        );
        let expected = if mode == PutMode::SelfWrite { 413 } else { 403 };
        if response.status != expected {
            wrong.push(format!(
                "PUT {} ({mode:?}) of 6 bytes by small@ (rule max_file_size 5): expected {expected}, got {response}",
                claims.uri()
            ));
        }
        let ok = Claims::new(
            &slot_id(&format!("g{i}")),
            "five.bin",
            5,
            "application/octet-stream",
        )
        .sub("small@example.org");
        upload(&server, &env, mode, &ok, &Put::of(b"fivef"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn cleanup_deletes_files_at_their_expires() {
    let env = Env::new(&config());
    let server = env.serve();
    let soon = now() + 1;

    let mut self_written = Claims::new(&slot_id("c1"), "soon self.txt", 4, "text/plain");
    self_written.expires = Some(soon);
    upload(
        &server,
        &env,
        PutMode::SelfWrite,
        &self_written,
        &Put::of(b"soon").typed("text/plain"),
    );
    let mut web_written = Claims::new(&slot_id("c2"), "soon web.txt", 4, "text/plain");
    web_written.expires = Some(soon);
    upload(
        &server,
        &env,
        PutMode::AuthRequest,
        &web_written,
        &Put::of(b"soon").typed("text/plain"),
    );
    let mut later = Claims::new(&slot_id("c3"), "later.txt", 5, "text/plain");
    later.expires = Some(now() + 3600);
    upload(
        &server,
        &env,
        PutMode::SelfWrite,
        &later,
        &Put::of(b"later").typed("text/plain"),
    );
    let mut never = Claims::new(&slot_id("c4"), "never.txt", 5, "text/plain");
    never.expires = None;
    upload(
        &server,
        &env,
        PutMode::Authorizer,
        &never,
        &Put::of(b"never").typed("text/plain"),
    );

    thread::sleep(Duration::from_secs(2));
    let output = env.run(&["cleanup", "--config", env.config.to_str().unwrap()]);
    let text = output_text(&output);
    assert!(output.status.success(), "cleanup failed: {text}");
    assert!(!text.contains("panicked"), "{text}");
    for gone in [&self_written, &web_written] {
        assert!(
            !on_disk(&env, &gone.slot, &gone.filename).exists(),
            "{} past its expires kept: {text}",
            gone.filename
        );
        assert!(
            !env.upload_root.join("file_share").join(&gone.slot).exists(),
            "empty slot directory of {} left: {:?}",
            gone.filename,
            env.upload_tree()
        );
        let get = server.get(&gone.uri());
        assert_eq!(get.status, 404, "GET {} after cleanup: {get}", gone.uri());
    }
    for kept in [&later, &never] {
        assert!(
            on_disk(&env, &kept.slot, &kept.filename).exists(),
            "{} removed before its expires: {text}",
            kept.filename
        );
        let get = server.get(&kept.uri());
        assert_eq!(get.status, 200, "GET {}: {get}", kept.uri());
    }
}

/// The token's `filetype` is served back as the download's Content-Type: one with a line break
/// (a header injection) is refused with 400 before anything is stored.
#[test]
fn a_filetype_that_is_no_clean_header_value_is_refused() {
    let (env, server) = start(&config());
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        let evil = "text/plain\r\nSet-Cookie: session=stolen";
        let claims = Claims::new(&slot_id(&format!("h{i}")), "note.txt", 5, evil);
        refused(
            &server,
            &env,
            mode,
            &claims.uri(),
            &Put::of(b"hello").typed("text/plain"),
            Some(&bearer(&claims.token())),
            400,
            "filetype with CR LF",
        );
    }
}
