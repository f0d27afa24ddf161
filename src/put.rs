//! One PUT, whatever the protocol: the answer every protocol's decision gives ([`Allowed`]),
//! the checks of a PUT that all protocols share, and the two ways a yes ends — the web server
//! writes the body ([`hand_to_web_server`]) or the program receives it ([`receive`]).
//!
//! Not here: the decisions themselves (`slot::allow_put`, `hmac::allow_put`, `jwt::allow_put`:
//! each checks its own credentials and records its own allowance), nor which one a URL asks
//! for (`route`).

use std::io::Read;

use crate::App;
use crate::content_type::{OCTET_STREAM, media_type};
use crate::files::SafePath;
use crate::name::parse_decimal;
use crate::refusal::{Outcome, Refusal, RefusalKind};
use crate::request::{Request, Response};

/// A PUT that may proceed, as every protocol's `allow_put` returns it: its allowance is
/// recorded, and this is all the rest of the request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Where the body goes, under the upload root.
    pub path: SafePath,
    /// The body's exact length in bytes: the declared Content-Length, which the protocol
    /// checked against its slot, token or signature.
    pub size: u64,
    /// The slot to note as uploaded once the program has stored the body (slot API and JWT);
    /// `None` for the HMAC protocol, whose record the decision completed.
    pub slot: Option<String>,
}

/// The web server writes the body (nginx `auth_request`, Apache `FcgidAccessChecker`): the
/// directory for the file is made (Apache's mod_dav does not make it; nginx would), and 200
/// lets the PUT through.
pub fn hand_to_web_server(app: &App, allowed: &Allowed) -> Result<Response, Outcome> {
    app.uploads.create_parent(&allowed.path)?;
    Ok(Response::empty(200))
}

/// The program receives the body (CGI, development server, FastCGI responder): exactly
/// `allowed.size` bytes are streamed into place, the slot is noted as uploaded, 201.
pub fn receive(
    app: &App,
    allowed: &Allowed,
    body: &mut dyn Read,
    now: i64,
) -> Result<Response, Outcome> {
    app.uploads.receive(&allowed.path, allowed.size, body)?;
    if let Some(token) = &allowed.slot {
        confirm_stored(app, token, &allowed.path, now)?;
    }
    Ok(Response::created())
}

/// Records that the file at `path` of slot `token` is stored. When the slot is gone — purged
/// (`xmpp-http-upload purge`) while the body was on its way — the file goes too: a purged
/// account keeps nothing, and the client hears that the upload did not stay.
fn confirm_stored(app: &App, token: &str, path: &SafePath, now: i64) -> Result<(), Outcome> {
    if app.store.mark_uploaded(token, now)? {
        return Ok(());
    }
    app.uploads.remove(path)?;
    Err(Refusal::new(
        RefusalKind::Gone,
        "this upload's slot was withdrawn (its account's files were purged) while it was sent",
    )
    .into())
}

/// The body size the PUT declares. Chunked or unannounced bodies are refused: every check
/// of an upload is made on its length before a byte is written. So is a partial body
/// (`Content-Range`): a PUT stores a whole file or nothing (RFC 9110 §14.5 lets a server
/// refuse it with 400; Apache's mod_dav would otherwise write the range at its offset).
pub fn declared_length(req: &Request) -> Result<u64, Refusal> {
    if let Some(range) = &req.content_range {
        return Err(Refusal::bad_request(format!(
            "Content-Range {range:?} is not accepted: PUT the whole file"
        )));
    }
    if req
        .transfer_encoding
        .as_deref()
        .is_some_and(|te| !te.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(Refusal::new(
            RefusalKind::LengthRequired,
            "chunked uploads are not accepted: send Content-Length",
        ));
    }
    let Some(text) = req.content_length.as_deref() else {
        return Err(Refusal::new(
            RefusalKind::LengthRequired,
            "Content-Length is required",
        ));
    };
    parse_decimal(text.trim())
        .ok_or_else(|| Refusal::bad_request(format!("invalid Content-Length {text:?}")))
}

/// The declared length (`declared_length`) when it is the slot's size exactly: 413 when
/// larger, 400 when smaller.
pub fn size_matches(declared: u64, expected: u64) -> Result<u64, Refusal> {
    if declared > expected {
        return Err(Refusal::new(
            RefusalKind::TooLarge,
            format!("Content-Length {declared} is larger than the slot's size {expected}"),
        ));
    }
    if declared < expected {
        return Err(Refusal::bad_request(format!(
            "Content-Length {declared} is smaller than the slot's size {expected}"
        )));
    }
    Ok(declared)
}

/// When the slot named a type, the PUT must send the same media type (parameters aside).
/// `application/octet-stream` is what ejabberd sends when the client gave no type: any goes.
pub fn check_media_type(req: &Request, slot_type: Option<&str>) -> Result<(), Refusal> {
    media_type_matches(req.content_type.as_deref(), slot_type)
}

/// `check_media_type` on the `Content-Type` a PUT sent (`sent`).
pub fn media_type_matches(sent: Option<&str>, slot_type: Option<&str>) -> Result<(), Refusal> {
    let Some(expected) = slot_type.map(media_type) else {
        return Ok(());
    };
    if expected == OCTET_STREAM {
        return Ok(());
    }
    match sent.map(media_type) {
        Some(sent) if sent == expected => Ok(()),
        sent => Err(Refusal::new(
            RefusalKind::UnsupportedMediaType,
            format!(
                "Content-Type {:?} does not match the slot's type {expected:?}",
                sent.unwrap_or_default()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(length: Option<&str>, content_type: Option<&str>) -> Request {
        Request {
            method: "PUT".into(),
            content_length: length.map(str::to_string),
            content_type: content_type.map(str::to_string),
            ..Request::default()
        }
    }

    /// What a slot PUT's length checks answer (`slot::PutChecks::check`).
    fn exact_length(req: &Request, expected: u64) -> Result<u64, Refusal> {
        size_matches(declared_length(req)?, expected)
    }

    fn refused_length(req: &Request, expected: u64) -> RefusalKind {
        exact_length(req, expected).unwrap_err().kind
    }

    #[test]
    fn exact_length_only() {
        assert_eq!(exact_length(&put(Some("5"), None), 5), Ok(5));
        assert_eq!(
            refused_length(&put(Some("6"), None), 5),
            RefusalKind::TooLarge
        );
        assert_eq!(
            refused_length(&put(Some("4"), None), 5),
            RefusalKind::BadRequest
        );
        assert_eq!(
            refused_length(&put(None, None), 5),
            RefusalKind::LengthRequired
        );
        assert_eq!(
            refused_length(&put(Some("-5"), None), 5),
            RefusalKind::BadRequest
        );
        let mut chunked = put(Some("5"), None);
        chunked.transfer_encoding = Some("chunked".into());
        assert_eq!(refused_length(&chunked, 5), RefusalKind::LengthRequired);
    }

    #[test]
    fn a_ranged_put_is_refused() {
        let mut ranged = put(Some("5"), None);
        ranged.content_range = Some("bytes 0-4/1000000000000".into());
        assert_eq!(
            declared_length(&ranged).unwrap_err().kind,
            RefusalKind::BadRequest
        );
    }

    #[test]
    fn media_types() {
        let typed = |t| put(Some("1"), t);
        assert!(
            check_media_type(
                &typed(Some("Text/Plain; charset=utf-8")),
                Some("text/plain")
            )
            .is_ok()
        );
        assert!(check_media_type(&typed(Some("image/png")), Some("text/plain")).is_err());
        assert!(check_media_type(&typed(None), Some("text/plain")).is_err());
        assert!(check_media_type(&typed(None), None).is_ok());
        assert!(check_media_type(&typed(Some("image/png")), Some(OCTET_STREAM)).is_ok());
    }
}
