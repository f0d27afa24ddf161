//! May this PUT proceed? (BEHAVIOUR.md §3) The one decision behind every upload, whether the web server
//! writes the file (nginx `auth_request`, Apache `FcgidAccessChecker`) or the program does.
//!
//! Checks, in order: the slot exists, the URL's name is the slot's (when the web server writes,
//! spelled so that it lands at `<token>/<name>`), the file is not there yet, the slot is
//! younger than `put_timeout`, the length is declared (not chunked, not a range) and equals the
//! slot's size exactly, the media type matches the slot's. Then the allowance is recorded:
//! when the web server writes the body, only the first PUT of a slot is ever allowed.

use crate::App;
use crate::files::{SafePath, already_stored, is_token};
use crate::name::{parse_decimal, percent_decode_segment, url_name_matches};
use crate::refusal::{Outcome, Refusal, RefusalKind};
use crate::request::Request;
use crate::store::{Slot, already_authorized};

/// The slot a PUT to `<put_prefix>/<token>/<raw_name>` may fill, or why not; on yes the slot
/// is recorded as authorized (it counts as an upload from then on). `now` is unix seconds.
pub fn allow_put(
    app: &App,
    req: &Request,
    token: &str,
    raw_name: &str,
    now: i64,
) -> Result<Slot, Outcome> {
    let unknown = || Refusal::not_found(format!("no upload slot at {:?}", req.path));
    if !is_token(token) {
        return Err(unknown().into());
    }
    let slot = app.store.slot(token)?.ok_or_else(unknown)?;
    if !name_spelling_accepted(req, raw_name, &slot.name) {
        return Err(unknown().into());
    }
    let path = SafePath::slot(token, &slot.name)?;
    if slot.uploaded.is_some() {
        return Err(already_stored(&slot.name).into());
    }
    if req.decide_only && slot.authorized.is_some() {
        // The web server writes the body: one allowed PUT per slot (`Store::authorize_once`
        // makes this exact under races; this is the early, readable answer).
        return Err(already_authorized(&slot.name).into());
    }
    app.uploads.check_absent(&path)?;
    let age = now.saturating_sub(slot.created);
    if age >= app.config.put_timeout {
        return Err(Refusal::new(
            RefusalKind::Gone,
            format!(
                "slot expired: created {age} s ago, PUT timeout is {} s",
                app.config.put_timeout
            ),
        )
        .into());
    }
    check_length(req, slot.size)?;
    check_media_type(req, slot.content_type.as_deref())?;
    if req.decide_only {
        if !app.store.authorize_once(token, now)? {
            return Err(already_authorized(&slot.name).into());
        }
    } else {
        // The program writes, and links the finished file into place without overwriting:
        // a retry after an interrupted transfer may use the same slot.
        app.store.mark_authorized(token, now)?;
    }
    Ok(slot)
}

/// Whether the name as it stands in the PUT URL may fill a slot named `slot_name`.
///
/// When the program writes the file itself it stores it under the slot's name whatever the
/// spelling, so the tolerant match applies (raw, encoded once, or twice: BEHAVIOUR.md §3). When the web
/// server writes it (decide-only), nginx and Apache decode the URL once and write there: only a
/// spelling that decodes once to the slot's name lands at `<token>/<name>`. Any other would put
/// a second, stray file beside the slot's, outside every check and quota.
fn name_spelling_accepted(req: &Request, raw_name: &str, slot_name: &str) -> bool {
    if req.decide_only {
        return percent_decode_segment(raw_name).is_some_and(|once| once == slot_name);
    }
    url_name_matches(raw_name, slot_name)
}

/// The body must be announced with a Content-Length equal to the slot's size.
fn check_length(req: &Request, expected: u64) -> Result<(), Refusal> {
    let declared = declared_length(req)?;
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
    Ok(())
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

/// When the slot named a type, the PUT must send the same media type (parameters aside).
/// `application/octet-stream` is what ejabberd sends when the client gave no type: any goes.
pub fn check_media_type(req: &Request, slot_type: Option<&str>) -> Result<(), Refusal> {
    let Some(expected) = slot_type.map(media_type) else {
        return Ok(());
    };
    if expected == "application/octet-stream" {
        return Ok(());
    }
    match req.content_type.as_deref().map(media_type) {
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

/// `Text/Plain; charset=UTF-8` → `text/plain`.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
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

    #[test]
    fn exact_length_only() {
        assert!(check_length(&put(Some("5"), None), 5).is_ok());
        assert_eq!(
            check_length(&put(Some("6"), None), 5).unwrap_err().kind,
            RefusalKind::TooLarge
        );
        assert_eq!(
            check_length(&put(Some("4"), None), 5).unwrap_err().kind,
            RefusalKind::BadRequest
        );
        assert_eq!(
            check_length(&put(None, None), 5).unwrap_err().kind,
            RefusalKind::LengthRequired
        );
        assert_eq!(
            check_length(&put(Some("-5"), None), 5).unwrap_err().kind,
            RefusalKind::BadRequest
        );
        let mut chunked = put(Some("5"), None);
        chunked.transfer_encoding = Some("chunked".into());
        assert_eq!(
            check_length(&chunked, 5).unwrap_err().kind,
            RefusalKind::LengthRequired
        );
    }

    #[test]
    fn the_web_server_must_land_on_the_slot_name() {
        let decide = Request {
            decide_only: true,
            ..Request::default()
        };
        let receive = Request::default();
        for (spelling, decide_ok) in [
            ("a b.txt", true),
            ("a%20b.txt", true),
            ("%61%20b.txt", true),
            ("a%2520b.txt", false),
            ("%2561%20b.txt", false),
        ] {
            assert_eq!(
                name_spelling_accepted(&decide, spelling, "a b.txt"),
                decide_ok,
                "decide-only {spelling}"
            );
            assert!(
                name_spelling_accepted(&receive, spelling, "a b.txt"),
                "program-written {spelling}"
            );
        }
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
        assert!(
            check_media_type(&typed(Some("image/png")), Some("application/octet-stream")).is_ok()
        );
    }
}
