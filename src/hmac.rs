//! The HMAC protocol (BEHAVIOUR.md §7): Prosody's `mod_http_upload_external` and ejabberd's
//! `external_secret` (the `[[external]]` prefixes of the configuration). The XMPP server makes
//! the PUT URL itself and signs it with a secret it shares with us; there is no slot request.
//! We check the signature when the PUT arrives (`allow_put`, whoever then writes the body), and
//! serve the files back when the program serves downloads (`serve`).
//!
//! - `?v=<mac>`: HMAC-SHA256(secret, `<path> <size>`) — Prosody's default, ejabberd's only one.
//! - `?v2=<mac>` or `?token=<mac>`: HMAC-SHA256(secret, `<path>\0<size>\0<content type>`).
//!
//! `<path>` is the request path below the prefix, percent-decoded; size and type are the PUT's
//! own `Content-Length` and `Content-Type`, so a body of another size simply fails the MAC.
//! These URLs name no JID: the only limit we can apply is the prefix's `max_file_size`.

use crate::App;
use crate::config::SignedPrefix;
use crate::content_type::{OCTET_STREAM, guessed_type};
use crate::crypto::hmac_sha256_matches;
use crate::download::serve_file;
use crate::files::SafePath;
use crate::name::{parse_query, percent_decode_path, query_value};
use crate::put::{Allowed, declared_length};
use crate::refusal::{Outcome, Refusal};
use crate::request::{Request, Response};
use crate::rules::check_max_file_size;

/// What Prosody signs for v2 when the client declared no type.
const DEFAULT_CONTENT_TYPE: &str = OCTET_STREAM;

/// Which message the MAC covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `<path> <size>`
    V1,
    /// `<path>\0<size>\0<content type>` (`v2` and `token`)
    V2,
}

/// The MAC a URL carries, with the version that says what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub version: Version,
    pub mac: Vec<u8>,
}

/// The signature in a query: the highest version present wins. 403 when there is none or it
/// is not 64 hex digits.
pub fn signature_from_query(query: &str) -> Result<Signature, Refusal> {
    let pairs = parse_query(query).map_err(|r| Refusal::forbidden(r.message))?;
    let find = |key: &str| query_value(&pairs, key);
    let (version, hex_mac) = match (find("v2").or_else(|| find("token")), find("v")) {
        (Some(mac), _) => (Version::V2, mac),
        (None, Some(mac)) => (Version::V1, mac),
        (None, None) => {
            return Err(Refusal::forbidden(
                "upload URL carries no signature (v, v2 or token)",
            ));
        }
    };
    let mac = hex::decode(hex_mac)
        .ok()
        .filter(|mac| mac.len() == 32)
        .ok_or_else(|| Refusal::forbidden("signature is not 64 hex digits"))?;
    Ok(Signature { version, mac })
}

/// The bytes the XMPP server signed for this upload.
pub fn signed_message(version: Version, path: &str, size: u64, content_type: &str) -> Vec<u8> {
    match version {
        Version::V1 => format!("{path} {size}").into_bytes(),
        Version::V2 => format!("{path}\0{size}\0{content_type}").into_bytes(),
    }
}

/// Checks `signature` over `message` with `secret`, in constant time.
pub fn verify(secret: &[u8], signature: &Signature, message: &[u8]) -> bool {
    hmac_sha256_matches(secret, message, &signature.mac)
}

/// Decodes the path below the prefix into its segments and the path the server signed.
fn decode_path(raw_rest: &str) -> Result<(Vec<String>, String), Refusal> {
    let segments = percent_decode_path(raw_rest)
        .ok_or_else(|| Refusal::forbidden(format!("path {raw_rest:?} is not UTF-8")))?;
    let signed = segments.join("/");
    Ok((segments, signed))
}

/// May this PUT to `<prefix>/<raw_rest>` proceed? The path on disk and the signed size, or why
/// not: 403 bad or missing MAC, 413 over the prefix's maximum, 409 the file exists or (when the
/// web server writes the body) a PUT of this URL was allowed before. On yes the allowance is
/// recorded with our clock: retention counts from it, and nothing is left to record when the
/// body is stored.
pub fn allow_put(
    app: &App,
    ext: &SignedPrefix,
    req: &Request,
    raw_rest: &str,
    now: i64,
) -> Result<Allowed, Outcome> {
    let (segments, signed_path) = decode_path(raw_rest)?;
    let path = SafePath::under(&ext.dir, &segments)?;
    let signature = signature_from_query(&req.query)?;
    let size = declared_length(req)?;
    let content_type = req.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE);
    let message = signed_message(signature.version, &signed_path, size, content_type);
    if !verify(&ext.secret, &signature, &message) {
        return Err(Refusal::forbidden(format!(
            "signature does not match {signed_path:?} with {size} bytes{}",
            if signature.version == Version::V2 {
                format!(" of type {content_type:?}")
            } else {
                String::new()
            }
        ))
        .into());
    }
    check_max_file_size(ext.max_file_size, size)?;
    app.uploads.check_absent(&path)?;
    // When the web server writes, a second allowed PUT could replace the first body when it
    // finishes later (nginx renames into place): one allowance per signed path. When the program
    // writes, `link` refuses a second file, and a retry after an interrupted transfer is fine.
    if !app.store.claim_signed_path(
        &path.to_string(),
        size,
        now,
        req.decide_only,
        Some(crate::store::PUT_ALLOWED_HMAC),
    )? {
        return Err(Refusal::already_authorized(path.file_name()).into());
    }
    Ok(Allowed {
        path,
        size,
        slot: None,
    })
}

/// GET/HEAD of a file uploaded with this protocol (the URL without its query).
pub fn serve(
    app: &App,
    ext: &SignedPrefix,
    req: &Request,
    raw_rest: &str,
) -> Result<Response, Outcome> {
    let not_found = |_| Refusal::no_file_at(&req.path);
    let (segments, _) = decode_path(raw_rest).map_err(not_found)?;
    let path = SafePath::under(&ext.dir, &segments).map_err(not_found)?;
    serve_file(app, req, &path, guessed_type(path.file_name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Computed independently: printf 'uuid/a b.txt 5' | openssl dgst -sha256 -hmac secret
    const V1_MAC: &str = "83bdeea5a6bc3315a7a15d353f96fdd39e973bf483033c5e93bb2819be66daf5";

    #[test]
    fn highest_version_wins() {
        let mac = "ab".repeat(32);
        let sig = signature_from_query(&format!("v={mac}&v2={mac}")).unwrap();
        assert_eq!(sig.version, Version::V2);
        let sig = signature_from_query(&format!("token={mac}")).unwrap();
        assert_eq!(sig.version, Version::V2);
        let sig = signature_from_query(&format!("v={mac}")).unwrap();
        assert_eq!(sig.version, Version::V1);
        assert!(signature_from_query("").is_err());
        assert!(signature_from_query("v=abc").is_err());
        assert!(signature_from_query(&format!("v={}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn messages() {
        assert_eq!(signed_message(Version::V1, "u/a b", 5, "x/y"), b"u/a b 5");
        assert_eq!(
            signed_message(Version::V2, "u/a", 5, "x/y"),
            b"u/a\x005\x00x/y"
        );
    }

    #[test]
    fn mac_of_openssl_verifies() {
        let sig = Signature {
            version: Version::V1,
            mac: hex::decode(V1_MAC).unwrap(),
        };
        assert!(verify(b"secret", &sig, b"uuid/a b.txt 5"));
        assert!(!verify(b"secret", &sig, b"uuid/a b.txt 6"));
    }

    #[test]
    fn wrong_mac_fails() {
        let sig = Signature {
            version: Version::V1,
            mac: hex::decode(V1_MAC).unwrap(),
        };
        assert!(!verify(b"other", &sig, b"uuid/a b.txt 5"));
    }

    #[test]
    fn decoding_paths() {
        let (segments, signed) = decode_path("abc/%D0%9E%20x.txt").unwrap();
        assert_eq!(segments, vec!["abc", "О x.txt"]);
        assert_eq!(signed, "abc/О x.txt");
        let (_, lower) = decode_path("abc/%d0%9e").unwrap();
        assert_eq!(lower, "abc/О");
        assert!(decode_path("abc/%FF").is_err());
    }
}
