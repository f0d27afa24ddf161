//! Signatures and tokens computed outside the program under test: HMAC-SHA256 by the `openssl`
//! command line tool, JWTs by a few lines of python3's standard library (`hmac`, `hashlib`,
//! `base64`). Nothing here shares code with `src/`, so a test that passes proves the program
//! agrees with independent implementations of the same definitions.
//!
//! Also a PUT helper that adds request headers (e.g. `Authorization`) to what
//! [`super::Server::put`] sends, in each of the three ways a PUT reaches the program.

use std::io::Write;
use std::process::{Command, Stdio};

use super::fcgi::Response;
use super::{Put, PutMode, Server};

/// Runs `program args...` with `stdin` as its input and returns its stdout (panics on failure).
fn run_with_input(program: &str, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin)
        .expect("write to the signer's stdin");
    let output = child.wait_with_output().expect("wait for the signer");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("signer output is UTF-8")
}

/// HMAC-SHA256 of `message` keyed with `key`, as 64 lower-case hex digits, computed by
/// `openssl dgst -sha256 -hmac KEY` over the exact bytes (NULs included) on its stdin.
pub fn hmac_sha256_hex(key: &str, message: &[u8]) -> String {
    let out = run_with_input("openssl", &["dgst", "-sha256", "-hmac", key], message);
    // "HMAC-SHA2-256(stdin)= <hex>" (OpenSSL 3) or "(stdin)= <hex>" (1.1)
    let hex = out
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "unexpected openssl output {out:?}"
    );
    hex
}

/// Signs with python3: `alg` is a `hashlib` name (`sha256` for HS256, `sha512` for HS512) or
/// `none` (empty signature). Header and payload are used byte for byte as given.
const JWT_PY: &str = r#"
import base64, hashlib, hmac, sys
def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
alg, secret, header, payload = sys.argv[1:5]
signed = b64(header.encode("utf-8")) + "." + b64(payload.encode("utf-8"))
if alg == "none":
    signature = ""
else:
    digest = hmac.new(secret.encode("utf-8"), signed.encode("ascii"), getattr(hashlib, alg)).digest()
    signature = b64(digest)
sys.stdout.write(signed + "." + signature)
"#;

/// A JWT `<b64url(header)>.<b64url(payload)>.<b64url(mac)>` made by python3, with the MAC
/// `HMAC-<alg>(secret, header.payload)` (`alg` = `sha256`, `sha512` or `none`).
pub fn jwt_with(alg: &str, secret: &str, header: &str, payload: &str) -> String {
    let out = run_with_input(
        "python3",
        &["-c", JWT_PY, alg, secret, header, payload],
        b"",
    );
    assert_eq!(out.split('.').count(), 3, "python3 made no JWT: {out:?}");
    out
}

/// The HS256 header Prosody writes.
pub const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// An HS256 token as Prosody 0.12's `util/jwt` makes it.
pub fn hs256_jwt(secret: &str, payload: &str) -> String {
    jwt_with("sha256", secret, HS256_HEADER, payload)
}

/// Like [`Server::put`], with extra request headers: see [`Server::put_with_headers`].
pub fn put_with_headers(
    server: &Server,
    mode: PutMode,
    uri: &str,
    put: &Put<'_>,
    extra: &[(&str, &str)],
) -> Response {
    server.put_with_headers(mode, uri, put, extra)
}
