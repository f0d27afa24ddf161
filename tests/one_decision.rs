//! One decision whoever writes the body (issue 13 item 1): for each protocol (slot API, HMAC,
//! JWT) the same PUT, sent the three ways a PUT reaches the program (nginx `auth_request` with
//! `XHU_AUTHORIZE=1`, Apache's Authorizer role, the program receiving the body), gets the same
//! answer. A refusal in a decide-only way carries in `XHU-Status` exactly the status the
//! program answers when it receives the body itself; a yes is a yes all three ways, and the
//! file goes where the decision said (its directory made for the web server, the file stored
//! by the program). Over FastCGI against the built binary; every MAC and token is made by
//! openssl or python3, never by the code under test.

mod common;

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use common::fcgi::Response;
use common::signing::{hmac_sha256_hex, hs256_jwt};
use common::*;

const HMAC_SECRET: &str = "hmac secret for one decision";
const JWT_SECRET: &str = "jwt secret for one decision";
/// The HMAC prefix's `max_file_size`.
const HMAC_MAX: u64 = 10;
const JID: &str = "alice@example.org";
/// A slot id as Prosody makes them (24 base64url characters).
const JWT_SLOT: &str = "Zm9vLWJhX3NlY3JldC1zbG90";

fn config() -> String {
    format!(
        "{}\n[[external]]\nprefix = \"/share\"\nsecret = \"{HMAC_SECRET}\"\nmax_file_size = {HMAC_MAX}\n\
         \n[[file_share]]\nprefix = \"/file_share\"\nsecret = \"{JWT_SECRET}\"\n",
        standard_config(ALLOW_ALL)
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A PUT as a client sends it: URI, what it declares, and extra headers.
struct Case<'a> {
    what: &'static str,
    uri: String,
    put: Put<'a>,
    headers: Vec<(&'static str, String)>,
}

impl<'a> Case<'a> {
    fn new(what: &'static str, uri: String, put: Put<'a>) -> Case<'a> {
        Case {
            what,
            uri,
            put,
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Case<'a> {
        self.headers.push((name, value));
        self
    }

    fn send(&self, server: &Server, mode: PutMode) -> Response {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        server.put_with_headers(mode, &self.uri, &self.put, &headers)
    }
}

/// The status a refused PUT stands for in `mode`: the program's own answer when it receives
/// the body, the `XHU-Status` of a decide-only refusal (whose own status is 403, or 401 with
/// `WWW-Authenticate` for a JWT upload without a valid token).
fn refused_status(mode: PutMode, response: &Response, what: &str) -> u16 {
    if mode == PutMode::SelfWrite {
        assert!(
            (400..500).contains(&response.status),
            "{what} ({mode:?}) should be refused, got {response}"
        );
        return response.status;
    }
    assert!(
        response.status == 403 || response.status == 401,
        "{what} ({mode:?}) should be refused with 403 or 401, got {response}"
    );
    let status = response
        .header("XHU-Status")
        .unwrap_or_else(|| panic!("{what} ({mode:?}): no XHU-Status in {response}"));
    status.parse().expect("XHU-Status is a number")
}

/// Sends `case` all three ways; asserts that each refuses it with `expected`.
fn refused_alike(server: &Server, case: &Case, expected: u16) {
    for mode in ALL_MODES {
        let response = case.send(server, mode);
        assert_eq!(
            refused_status(mode, &response, case.what),
            expected,
            "{} ({mode:?}): {response}",
            case.what
        );
    }
}

fn hmac_uri(path: &str, size: u64) -> String {
    let mac = hmac_sha256_hex(HMAC_SECRET, format!("{path} {size}").as_bytes());
    format!("/share/{path}?v={mac}")
}

/// The claims of a Prosody upload token, as JSON.
fn claims(slot: &str, filename: &str, filesize: usize, filetype: &str, exp: i64) -> String {
    format!(
        "{{\"sub\":\"{JID}\",\"iat\":{},\"exp\":{exp},\"slot\":\"{slot}\",\
         \"filename\":\"{filename}\",\"filesize\":{filesize},\"filetype\":\"{filetype}\"}}",
        now()
    )
}

fn bearer(payload: &str) -> String {
    format!("Bearer {}", hs256_jwt(JWT_SECRET, payload))
}

#[test]
fn a_refused_slot_put_is_refused_alike_all_three_ways() {
    let (env, server) = start(&config());
    let slot = server.typed_slot(JID, "a.txt", 5, "text/plain");
    let typed = |length: Option<&str>, content_type: &'static str| Put {
        length: length.map(str::to_string),
        content_type: Some(content_type),
        chunked: false,
        body: b"hello",
    };
    let sized = |length: Option<&str>| typed(length, "text/plain");
    let at_slot = |what, put| Case::new(what, slot.put_path.clone(), put);
    let chunked = Put {
        chunked: true,
        ..sized(Some("5"))
    };
    let ranged =
        at_slot("a range", sized(Some("5"))).header("Content-Range", "bytes 0-4/10".into());
    let unknown = format!("/upload/{}/a.txt", "0".repeat(40));
    let renamed = format!("/upload/{}/b.txt", slot.token);
    for (case, expected) in [
        (at_slot("longer", sized(Some("6"))), 413),
        (at_slot("shorter", sized(Some("4"))), 400),
        (at_slot("no length", sized(None)), 411),
        (at_slot("chunked", chunked), 411),
        (at_slot("other type", typed(Some("5"), "image/png")), 415),
        (ranged, 400),
        (Case::new("no such slot", unknown, sized(Some("5"))), 404),
        (Case::new("another name", renamed, sized(Some("5"))), 404),
    ] {
        refused_alike(&server, &case, expected);
    }
    // Nothing was recorded by all those refusals: the slot still takes its one PUT.
    server.upload(
        &env,
        PutMode::SelfWrite,
        &slot,
        &Put::of(b"hello").typed("text/plain"),
    );
}

#[test]
fn a_refused_hmac_put_is_refused_alike_all_three_ways() {
    let (_env, server) = start(&config());
    let body = b"0123456789AB";
    let unsigned = Case::new(
        "no signature",
        "/share/u1/a.txt".into(),
        Put::of(&body[..3]),
    );
    let wrong_mac = Case::new(
        "wrong MAC",
        format!("/share/u1/a.txt?v={}", "ab".repeat(32)),
        Put::of(&body[..3]),
    );
    let other_size = Case::new("other size", hmac_uri("u1/a.txt", 4), Put::of(&body[..3]));
    let too_large = Case::new(
        "over the prefix maximum",
        hmac_uri("u1/b.txt", HMAC_MAX + 2),
        Put::of(&body[..]),
    );
    let dot_segment = Case::new("a dot segment", hmac_uri("u1/.x", 3), Put::of(&body[..3]));
    for (case, expected) in [
        (unsigned, 403),
        (wrong_mac, 403),
        (other_size, 403),
        (too_large, 413),
        (dot_segment, 403),
    ] {
        refused_alike(&server, &case, expected);
    }
}

#[test]
fn a_refused_jwt_put_is_refused_alike_all_three_ways() {
    let (_env, server) = start(&config());
    let slot = JWT_SLOT;
    let uri = format!("/file_share/{slot}/a.txt");
    let valid = claims(slot, "a.txt", 5, "text/plain", now() + 300);
    let put = || Put::of(b"hello").typed("text/plain");
    let signed = |what, uri: &str, put, authorization: String| {
        Case::new(what, uri.to_string(), put).header("Authorization", authorization)
    };
    let foreign = format!("Bearer {}", hs256_jwt("not the secret", &valid));
    let expired = bearer(&claims(slot, "a.txt", 5, "text/plain", now() - 1));
    let shorter = Put::of(b"hell").typed("text/plain");
    let other_type = Put::of(b"hello").typed("image/png");
    let other_uri = format!("/file_share/{slot}/b.txt");
    for (case, expected) in [
        (Case::new("no token", uri.clone(), put()), 401),
        (signed("another secret", &uri, put(), foreign), 401),
        (signed("expired", &uri, put(), expired), 410),
        (signed("other size", &uri, shorter, bearer(&valid)), 413),
        (signed("other type", &uri, other_type, bearer(&valid)), 415),
        (
            signed("another URL", &other_uri, put(), bearer(&valid)),
            400,
        ),
    ] {
        refused_alike(&server, &case, expected);
    }
}

#[test]
fn a_yes_is_the_same_place_all_three_ways() {
    let (env, server) = start(&config());
    let body = b"hello";
    for (i, mode) in ALL_MODES.into_iter().enumerate() {
        // The slot API: <token>/<name>.
        let slot = server.slot(JID, &format!("s{i}.txt"), 5);
        let yes = server.put(mode, &slot.put_path, &Put::of(body));
        assert_allowed(mode, &yes, "slot PUT");
        let slot_dir = env.upload_root.join(&slot.token);
        // HMAC: <prefix dir>/<path>.
        let path = format!("u{i}/h.txt");
        let yes = server.put(mode, &hmac_uri(&path, 5), &Put::of(body));
        assert_allowed(mode, &yes, "HMAC PUT");
        let hmac_dir = env.upload_root.join(format!("share/u{i}"));
        // JWT: <prefix dir>/<slot>/<name>.
        let jwt_slot = format!("s{i}{}", &JWT_SLOT[2..]);
        let token = bearer(&claims(&jwt_slot, "j.txt", 5, "text/plain", now() + 300));
        let yes = server.put_with_headers(
            mode,
            &format!("/file_share/{jwt_slot}/j.txt"),
            &Put::of(body).typed("text/plain"),
            &[("Authorization", &token)],
        );
        assert_allowed(mode, &yes, "JWT PUT");
        let jwt_dir = env.upload_root.join(format!("file_share/{jwt_slot}"));
        for (dir, name) in [(slot_dir, "s"), (hmac_dir, "h.txt"), (jwt_dir, "j.txt")] {
            assert!(dir.is_dir(), "{mode:?}: {} was not made", dir.display());
            let stored: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
            if mode == PutMode::SelfWrite {
                assert_eq!(stored.len(), 1, "{mode:?}: {}", dir.display());
                let file = stored[0].path();
                assert!(
                    file.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(name),
                    "{mode:?}: {}",
                    file.display()
                );
                assert_eq!(fs::read(&file).unwrap(), body);
            } else {
                // The web server writes the body: the program made the directory, nothing more.
                assert!(stored.is_empty(), "{mode:?}: {}", dir.display());
            }
        }
    }
}
