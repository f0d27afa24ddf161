//! The slot API (BEHAVIOUR.md §2): `GET <prefix>/slot/` hands out a PUT URL and a GET URL after the
//! access rules and quotas agree; `GET <prefix>/max_size/` says how large a file a JID may send.
//! Also who may call it (address allow-list, shared secret).

use std::net::IpAddr;

use crate::App;
use crate::crypto::random_hex;
use crate::name::{
    parse_decimal, parse_query, percent_encode_segment, query_value, sanitize_file_name,
};
use crate::refusal::{Error, Outcome, Refusal};
use crate::request::{Request, Response};
use crate::rules::limits_for;
use crate::store::Slot;

/// The parameters of a slot request, decoded and checked.
#[derive(Debug)]
struct SlotParams {
    jid: String,
    name: String,
    size: u64,
    content_type: Option<String>,
    output: Output,
}

/// The three answer formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Text,
    Json,
    Xml,
}

/// `GET <prefix>/slot/`: checks the caller, the rules and quotas, records the slot, answers
/// with the URLs. `now` is unix seconds.
pub fn request_slot(app: &App, req: &Request, now: i64) -> Result<Response, Outcome> {
    let query = parse_query(&req.query)?;
    check_caller(app, req, &query)?;
    let params = slot_params(&query)?;
    let limits = limits_for(&app.config.rules, &params.jid)?;
    let base = base_url(app, req)?;
    let slot = Slot {
        token: new_token()?,
        jid: params.jid,
        name: params.name,
        size: params.size,
        content_type: params.content_type,
        created: now,
        authorized: None,
        uploaded: None,
        area: None,
        expires: None,
        retention: limits.retention,
    };
    app.store
        .reserve_slot(&slot, limits, app.config.put_timeout)?;
    log::info!(
        "slot granted: {} {:?} {} bytes type {:?} token {}",
        slot.jid,
        slot.name,
        slot.size,
        slot.content_type,
        &slot.token[..8]
    );
    let url = |prefix: &str, name: &str| format!("{base}{prefix}/{}/{name}", slot.token);
    let (put_prefix, get_prefix) = (&app.config.put_prefix, &app.config.get_prefix);
    Ok(match params.output {
        // ejabberd percent-encodes this answer itself: the name goes unencoded (BEHAVIOUR.md §3).
        Output::Text => Response::text(
            200,
            "text/plain; charset=utf-8",
            format!(
                "{}\n{}",
                url(put_prefix, &slot.name),
                url(get_prefix, &slot.name)
            ),
        ),
        Output::Json => {
            let encoded = percent_encode_segment(&slot.name);
            let body = serde_json::json!({
                "put": url(put_prefix, &encoded),
                "get": url(get_prefix, &encoded),
            });
            Response::text(200, "application/json", body.to_string())
        }
        Output::Xml => {
            let encoded = percent_encode_segment(&slot.name);
            let body = format!(
                "<slot xmlns='urn:xmpp:http:upload:0'><put url='{}'/><get url='{}'/></slot>",
                xml_escape(&url(put_prefix, &encoded)),
                xml_escape(&url(get_prefix, &encoded))
            );
            Response::text(200, "application/xml; charset=utf-8", body)
        }
    })
}

/// `GET <prefix>/max_size/?jid=..`: the JID's `max_file_size` (`0` = unlimited), 403 if denied.
pub fn max_size(app: &App, req: &Request) -> Result<Response, Outcome> {
    let query = parse_query(&req.query)?;
    check_caller(app, req, &query)?;
    let jid = bare_jid(required(&query, "jid")?)?;
    let limits = limits_for(&app.config.rules, &jid)?;
    let max = limits.max_file_size.unwrap_or(0);
    Ok(match output_format(&query)? {
        Output::Json => Response::text(
            200,
            "application/json",
            serde_json::json!({ "max_size": max }).to_string(),
        ),
        Output::Text => Response::text(200, "text/plain; charset=utf-8", max.to_string()),
        Output::Xml => Response::text(
            200,
            "application/xml; charset=utf-8",
            format!("<max-file-size xmlns='urn:xmpp:http:upload:0'>{max}</max-file-size>"),
        ),
    })
}

/// Only the XMPP server may ask for slots (or read `metrics`): its address must be allowed, and
/// the secret, when one is configured, must be presented (`secret=` or `Authorization: Bearer`).
pub fn check_caller(app: &App, req: &Request, query: &[(String, String)]) -> Result<(), Refusal> {
    let access = &app.config.slot_api;
    if !access.allow_from.is_empty() {
        let addr = req
            .remote_addr
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok());
        let allowed = addr.is_some_and(|addr| {
            let addr = canonical(addr);
            access.allow_from.iter().any(|net| net.contains(&addr))
        });
        if !allowed {
            return Err(Refusal::forbidden(format!(
                "slot API not open to {}",
                req.remote_addr.as_deref().unwrap_or("an unknown address")
            )));
        }
    }
    if let Some(secret) = &access.secret {
        let presented = query_value(query, "secret").or_else(|| req.bearer_token());
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), secret.as_bytes())) {
            return Err(Refusal::forbidden("slot API secret missing or wrong"));
        }
    }
    Ok(())
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) counts as its IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn slot_params(query: &[(String, String)]) -> Result<SlotParams, Refusal> {
    let jid = bare_jid(required(query, "jid")?)?;
    let name = sanitize_file_name(required(query, "name")?)?;
    let size_text = required(query, "size")?;
    let size = parse_decimal(size_text)
        .filter(|&s| s > 0 && s <= i64::MAX as u64)
        .ok_or_else(|| {
            Refusal::bad_request(format!(
                "size {size_text:?} is not a whole number between 1 and {}",
                i64::MAX
            ))
        })?;
    // ejabberd sends `content_type`; the Django app read `type` (BEHAVIOUR.md §2).
    let content_type =
        match query_value(query, "content_type").or_else(|| query_value(query, "type")) {
            Some(t) if !t.trim().is_empty() => Some(valid_content_type(t)?),
            _ => None,
        };
    Ok(SlotParams {
        jid,
        name,
        size,
        content_type,
        output: output_format(query)?,
    })
}

fn output_format(query: &[(String, String)]) -> Result<Output, Refusal> {
    match query_value(query, "output") {
        None | Some("") | Some("text/plain") => Ok(Output::Text),
        Some("application/json") => Ok(Output::Json),
        Some("application/xml") => Ok(Output::Xml),
        Some(other) => Err(Refusal::bad_request(format!(
            "unsupported output {other:?}: use text/plain, application/json or application/xml"
        ))),
    }
}

fn required<'a>(query: &'a [(String, String)], key: &str) -> Result<&'a str, Refusal> {
    match query_value(query, key) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(Refusal::bad_request(format!("missing parameter {key:?}"))),
    }
}

/// The bare JID (any resource dropped), lower-cased (node and domain of a JID compare
/// case-insensitively, so `Evil@example.org` must meet the rules of `evil@example.org`),
/// refused when it is not `[node@]domain` in shape.
pub fn bare_jid(jid: &str) -> Result<String, Refusal> {
    let bare = jid.split('/').next().unwrap_or("").trim();
    let bad = bare.is_empty()
        || bare.len() > 3071
        || bare.chars().any(|c| c.is_whitespace() || c.is_control())
        || bare.starts_with('@')
        || bare.ends_with('@')
        || bare.matches('@').count() > 1;
    if bad {
        return Err(Refusal::bad_request(format!("invalid jid {jid:?}")));
    }
    Ok(bare.to_lowercase())
}

/// A media type with optional parameters, made only of characters safe in a header (it is
/// served back as the download's Content-Type).
pub fn valid_content_type(text: &str) -> Result<String, Refusal> {
    let text = text.trim();
    let (media, _params) = text.split_once(';').unwrap_or((text, ""));
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let valid_media = media
        .trim()
        .split_once('/')
        .is_some_and(|(t, sub)| token(t) && token(sub));
    let printable = text.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !valid_media || !printable || text.len() > 255 {
        return Err(Refusal::bad_request(format!(
            "invalid content type {text:?}"
        )));
    }
    Ok(text.to_string())
}

/// Scheme and host for the URLs: the configured `base_url`, or the request's own.
fn base_url(app: &App, req: &Request) -> Result<String, Refusal> {
    if let Some(base) = &app.config.base_url {
        return Ok(base.clone());
    }
    let host = req.host.as_deref().unwrap_or("");
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid {
        return Err(Refusal::bad_request(
            "no usable Host header and no base_url configured",
        ));
    }
    let scheme = if req.https { "https" } else { "http" };
    Ok(format!("{scheme}://{host}"))
}

/// A fresh slot token: as long as `files::is_token` wants it.
fn new_token() -> Result<String, Error> {
    random_hex(crate::files::TOKEN_LEN)
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids() {
        assert_eq!(bare_jid("a@b.c/res").unwrap(), "a@b.c");
        assert_eq!(
            bare_jid("Evil@Example.ORG/Res").unwrap(),
            "evil@example.org"
        );
        assert_eq!(bare_jid("b.c").unwrap(), "b.c");
        assert!(bare_jid("a b@c").is_err());
        assert!(bare_jid("@c").is_err());
        assert!(bare_jid("a@b@c").is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            valid_content_type("text/plain; charset=utf-8").unwrap(),
            "text/plain; charset=utf-8"
        );
        assert!(valid_content_type("image/png").is_ok());
        assert!(valid_content_type("text").is_err());
        assert!(valid_content_type("text/plain\r\nX-Evil: 1").is_err());
    }

    #[test]
    fn tokens_are_hex_and_unique() {
        let a = new_token().unwrap();
        assert!(crate::files::is_token(&a));
        assert_ne!(a, new_token().unwrap());
    }

    #[test]
    fn secret_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
