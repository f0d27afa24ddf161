//! The JWT protocol (BEHAVIOUR.md §7b): Prosody's built-in `mod_http_file_share` with an external
//! service (the `[[file_share]]` prefixes of the configuration). The PUT carries
//! `Authorization: Bearer <JWT>` (HS256, signed with a secret shared with Prosody). The token
//! names the uploader (`sub`), so the access rules and quotas apply as for the slot API, and
//! the file's own lifetime (`expires`), which cleanup honours. `allow_put` decides a PUT
//! (whoever then writes the body), `serve` serves a file when the program serves downloads.
//!
//! Status codes follow Prosody's own receiving side: 401 (with `WWW-Authenticate: Bearer`)
//! for a missing, malformed or badly signed token, 410 past `exp`, 400 when the URL is not the
//! token's slot and file name, 413 when Content-Length is not `filesize`, 409 when the file
//! exists, 201 on success.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::App;
use crate::config::SignedPrefix;
use crate::content_type::{guessed_type, valid_content_type};
use crate::crypto::hmac_sha256_matches;
use crate::download::serve_file;
use crate::files::SafePath;
use crate::jid::bare_jid;
use crate::name::percent_decode_path;
use crate::put::{Allowed, check_media_type, declared_length};
use crate::refusal::{Outcome, Refusal, RefusalKind};
use crate::request::{Request, Response};
use crate::rules::{check_max_file_size, limits_for};
use crate::store::Slot;

/// The claims of an upload token, as Prosody 0.12 and 13 write them (`docs/xmpp-servers.md`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Claims {
    /// The uploader's JID, as sent (`uploader` makes it the JID the rules see).
    pub sub: String,
    /// The PUT deadline (unix seconds).
    pub exp: f64,
    /// The slot id: the first path segment of the URL.
    pub slot: String,
    /// When the file should be deleted (unix seconds); absent: never (retention still applies).
    pub expires: Option<f64>,
    pub filename: String,
    pub filesize: u64,
    /// `application/octet-stream` when the client gave none.
    pub filetype: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

fn unauthorized(message: impl Into<String>) -> Refusal {
    Refusal::new(RefusalKind::Unauthorized, message)
}

/// Verifies an HS256 token with `secret` and returns its claims. Any other `alg` (`none`
/// included), a bad signature, or claims of the wrong shape: 401.
pub fn verify_token(secret: &[u8], token: &str) -> Result<Claims, Refusal> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(unauthorized(
            "malformed token: not header.payload.signature",
        ));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| unauthorized(format!("malformed token: {what} is not base64url")))
    };
    let header: Header = serde_json::from_slice(&decode(header, "header")?)
        .map_err(|_| unauthorized("malformed token header"))?;
    if header.alg != "HS256" {
        return Err(unauthorized(format!(
            "token algorithm {:?} not accepted (HS256 only)",
            header.alg
        )));
    }
    // The signature covers `header.payload` exactly as sent.
    let signed_len = token.len() - signature.len() - 1;
    let mac = decode(signature, "signature")?;
    if !hmac_sha256_matches(secret, &token.as_bytes()[..signed_len], &mac) {
        return Err(unauthorized("token signature does not match"));
    }
    serde_json::from_slice(&decode(payload, "payload")?)
        .map_err(|e| unauthorized(format!("token claims unusable: {e}")))
}

/// The uploader as the rules, quotas and admin commands meet it: `sub` made bare and
/// lower-case, as the slot API's `jid=` is. A `sub` that is no JID makes the token unusable
/// (401), like any claim out of shape.
fn uploader(claims: &Claims) -> Result<String, Refusal> {
    bare_jid(&claims.sub)
        .map_err(|r| unauthorized(format!("token claims unusable: sub: {}", r.message)))
}

/// May this PUT to `<prefix>/<raw_rest>` proceed? Checks the token, then the URL, length and
/// type against its claims, then the access rules and quotas of `sub`, and records the upload
/// (see `record_upload` for a slot seen before).
pub fn allow_put(
    app: &App,
    share: &SignedPrefix,
    req: &Request,
    raw_rest: &str,
    now: i64,
) -> Result<Allowed, Outcome> {
    let token = req
        .bearer_token()
        .ok_or_else(|| unauthorized("Authorization: Bearer <token> is required"))?;
    let claims = verify_token(&share.secret, token)?;
    let jid = uploader(&claims)?;
    if claims.exp <= now as f64 {
        return Err(Refusal::new(RefusalKind::Gone, "upload token expired").into());
    }
    let segments = percent_decode_path(raw_rest)
        .ok_or_else(|| Refusal::bad_request("URL path is not UTF-8"))?;
    if segments.len() != 2 || segments[0] != claims.slot || segments[1] != claims.filename {
        return Err(Refusal::bad_request(format!(
            "URL is not the token's slot {:?} and file {:?}",
            claims.slot, claims.filename
        ))
        .into());
    }
    let path =
        SafePath::under(&share.dir, &segments).map_err(|r| Refusal::bad_request(r.message))?;
    let size = declared_length(req)?;
    if size != claims.filesize {
        return Err(Refusal::new(
            RefusalKind::TooLarge,
            format!(
                "Content-Length {size} is not the token's filesize {}",
                claims.filesize
            ),
        )
        .into());
    }
    // The type is served back as the download's Content-Type: it must be a clean header value.
    if let Some(filetype) = &claims.filetype {
        valid_content_type(filetype)?;
    }
    check_media_type(req, claims.filetype.as_deref())?;
    check_max_file_size(share.max_file_size, size)?;
    app.uploads.check_absent(&path)?;
    record_upload(app, share, &claims, &jid, req.decide_only, now)?;
    Ok(Allowed {
        path,
        size,
        slot: Some(claims.slot),
    })
}

/// Applies the rules and quotas of `jid` (the token's uploader) and records the upload. A slot recorded already is
/// refused when the web server writes the body (`once`: a second body could replace the
/// first), and accepted again from the same uploader when the program writes it (the retry of
/// an interrupted transfer, not counted twice; `link` never lets it overwrite).
fn record_upload(
    app: &App,
    share: &SignedPrefix,
    claims: &Claims,
    jid: &str,
    once: bool,
    now: i64,
) -> Result<(), Outcome> {
    if let Some(existing) = app.store.slot(&claims.slot)? {
        if existing.jid == jid && existing.area.as_deref() == Some(share.dir.as_str()) {
            if once {
                return Err(Refusal::already_authorized(&claims.filename).into());
            }
            return Ok(());
        }
        return Err(Refusal::forbidden(format!(
            "slot {:?} belongs to another upload",
            claims.slot
        ))
        .into());
    }
    let limits = limits_for(&app.config.rules, jid)?;
    let slot = Slot {
        token: claims.slot.clone(),
        jid: jid.to_string(),
        name: claims.filename.clone(),
        size: claims.filesize,
        content_type: claims.filetype.clone(),
        created: now,
        authorized: Some(now),
        uploaded: None,
        area: Some(share.dir.clone()),
        expires: claims.expires.map(|e| e as i64),
        // The earlier of the two wins: cleanup deletes at `expires` and after `retention`.
        retention: limits.retention,
    };
    app.store
        .reserve_slot(&slot, limits, app.config.put_timeout)
}

/// GET/HEAD of a file uploaded with this protocol.
pub fn serve(
    app: &App,
    share: &SignedPrefix,
    req: &Request,
    raw_rest: &str,
) -> Result<Response, Outcome> {
    let not_found = || Refusal::no_file_at(&req.path);
    let segments = percent_decode_path(raw_rest).ok_or_else(not_found)?;
    let path = SafePath::under(&share.dir, &segments).map_err(|_| not_found())?;
    serve_file(app, req, &path, guessed_type(path.file_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hmac_sha256;

    fn b64(data: &str) -> String {
        URL_SAFE_NO_PAD.encode(data)
    }

    fn sign(secret: &[u8], header: &str, payload: &str) -> String {
        let signed = format!("{}.{}", b64(header), b64(payload));
        let mac = hmac_sha256(secret, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
    const PAYLOAD: &str = r#"{"sub":"a@b","iat":1,"exp":2000000000,"slot":"s1","filename":"f.txt","filesize":5,"filetype":"text/plain","expires":2000600000}"#;

    #[test]
    fn valid_token() {
        let claims = verify_token(b"k", &sign(b"k", HEADER, PAYLOAD)).unwrap();
        assert_eq!(claims.sub, "a@b");
        assert_eq!(claims.filesize, 5);
        assert_eq!(claims.expires, Some(2000600000.0));
    }

    #[test]
    fn refuses_wrong_secret_alg_none_and_tampering() {
        assert!(verify_token(b"other", &sign(b"k", HEADER, PAYLOAD)).is_err());
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(PAYLOAD));
        assert_eq!(
            verify_token(b"k", &none).unwrap_err().kind,
            RefusalKind::Unauthorized
        );
        let token = sign(b"k", HEADER, PAYLOAD);
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&PAYLOAD.replace("\"filesize\":5", "\"filesize\":6")),
            parts[2]
        );
        assert!(verify_token(b"k", &tampered).is_err());
        assert!(verify_token(b"k", "a.b").is_err());
        assert!(verify_token(b"k", "").is_err());
    }

    #[test]
    fn the_uploader_is_the_bare_lower_case_sub() {
        let claims = |sub: &str| {
            let payload = PAYLOAD.replace("\"a@b\"", &format!("{sub:?}"));
            verify_token(b"k", &sign(b"k", HEADER, &payload)).unwrap()
        };
        assert_eq!(uploader(&claims("A@B/phone")).unwrap(), "a@b");
        let refused = uploader(&claims("a b@c")).unwrap_err();
        assert_eq!(refused.kind, RefusalKind::Unauthorized);
    }

    #[test]
    fn refuses_claims_without_numeric_exp() {
        let payload = r#"{"sub":"a@b","exp":"soon","slot":"s","filename":"f","filesize":1}"#;
        assert!(verify_token(b"k", &sign(b"k", HEADER, payload)).is_err());
    }
}
