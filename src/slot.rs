//! The slot API (BEHAVIOUR.md §2), our own protocol, whole: `GET <prefix>/slot/` hands out a PUT
//! URL and a GET URL after the access rules and quotas agree (`request_slot`); `GET
//! <prefix>/max_size/` says how large a file a JID may send. Then the slot's PUT (`allow_put`,
//! BEHAVIOUR.md §3) and its GET when the program serves downloads (`serve`).
//!
//! Not here: who may call the slot API (`caller`), what a JID is (`jid`), what happens to an
//! allowed PUT's body (`put`), how a file is served (`download`).

use crate::App;
use crate::content_type::{guessed_type, valid_content_type};
use crate::crypto::random_hex;
use crate::download::serve_file;
use crate::files::{SafePath, is_token};
use crate::jid::bare_jid;
use crate::name::{
    is_safe_name, parse_decimal, percent_decode_segment, percent_encode_segment, query_value,
    sanitize_file_name, url_name_matches,
};
use crate::put::{Allowed, declared_length, media_type_matches, size_matches};
use crate::refusal::{Error, Outcome, Refusal, RefusalKind};
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

/// `GET <prefix>/slot/` from a caller `route` has admitted: checks the parameters (`query`),
/// the rules and quotas, records the slot, answers with the URLs. `now` is unix seconds.
pub fn request_slot(
    app: &App,
    req: &Request,
    query: &[(String, String)],
    now: i64,
) -> Result<Response, Outcome> {
    let params = slot_params(query)?;
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
        // The time digits and four random ones: enough to tell slots apart. (The lines of
        // the PUT that follows carry its whole path, token included, as the web server's
        // access log does: the log is as private as that one.)
        &slot.token[..TIME_DIGITS + 4]
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

/// `GET <prefix>/max_size/?jid=..` from an admitted caller: the JID's `max_file_size` (`0` =
/// unlimited), 403 if denied.
pub fn max_size(app: &App, query: &[(String, String)]) -> Result<Response, Outcome> {
    let jid = bare_jid(required(query, "jid")?)?;
    let limits = limits_for(&app.config.rules, &jid)?;
    let max = limits.max_file_size.unwrap_or(0);
    Ok(match output_format(query)? {
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

/// May this PUT to `<put_prefix>/<token>/<raw_name>` proceed? The checks are
/// `PutChecks::check`'s, in its order. On yes the slot is recorded as authorized (it counts as
/// an upload from then on); when the web server writes the body, only the first PUT of a slot
/// is ever allowed, and the slot's read, its checks and that record are one transaction of the
/// store. `now` is unix seconds.
pub fn allow_put(
    app: &App,
    req: &Request,
    token: &str,
    raw_name: &str,
    now: i64,
) -> Result<Allowed, Outcome> {
    let unknown = || no_slot_at(&req.path);
    if !is_token(token) {
        return Err(unknown().into());
    }
    let checks = PutChecks::of(app, req, raw_name, now);
    let place = |path: Result<SafePath, Refusal>| {
        path.map(|path| {
            let taken = app.uploads.exists(&path);
            (path, taken)
        })
    };
    if req.decide_only {
        // The web server writes at the URL's name decoded once (the only spelling that can
        // fill the slot): what stands there is looked at before the transaction, which holds
        // the database's write lock and so does no file system work, and weighed in its place
        // among the checks.
        let path = percent_decode_segment(raw_name)
            .ok_or_else(unknown)
            .and_then(|name| SafePath::slot(token, &name));
        let place = place(path);
        let check = Box::new(move |slot: &Slot| checks.check(slot, &place));
        let slot = app
            .store
            .authorize_first_put(token, now, check)?
            .ok_or_else(unknown)?;
        return Ok(Allowed {
            path: SafePath::slot(token, &slot.name)?,
            size: slot.size,
            slot: Some(slot.token),
        });
    }
    let slot = app.store.slot(token)?.ok_or_else(unknown)?;
    let place = place(SafePath::slot(token, &slot.name));
    checks.check(&slot, &place)?;
    // The program writes, and links the finished file into place without overwriting: a
    // retry after an interrupted transfer may use the same slot.
    app.store.mark_authorized(token, now)?;
    let (path, _) = place?;
    Ok(Allowed {
        path,
        size: slot.size,
        slot: Some(slot.token),
    })
}

/// The refusal of a PUT to `url_path` that fills no slot (unknown token, or a name that is not
/// the slot's): the same 404 either way, so that a token cannot be confirmed by its name.
fn no_slot_at(url_path: &str) -> Refusal {
    Refusal::not_found(format!("no upload slot at {url_path:?}"))
}

/// A PUT's checks on its slot, with what they need of the request taken out of it, so that
/// they can run inside the store's transaction (`Backend::authorize_first_put`).
struct PutChecks {
    url_path: String,
    raw_name: String,
    decide_only: bool,
    declared: Result<u64, Refusal>,
    content_type: Option<String>,
    now: i64,
    put_timeout: i64,
}

impl PutChecks {
    fn of(app: &App, req: &Request, raw_name: &str, now: i64) -> PutChecks {
        PutChecks {
            url_path: req.path.clone(),
            raw_name: raw_name.to_string(),
            decide_only: req.decide_only,
            declared: declared_length(req),
            content_type: req.content_type.clone(),
            now,
            put_timeout: app.config.put_timeout,
        }
    }

    /// In order: the URL's name is the slot's (when the web server writes, spelled so that it
    /// lands at `<token>/<name>`), the file is not stored yet, no PUT was allowed yet (when
    /// the web server writes), nothing stands at its path (`place`: the path and whether it
    /// is taken), the slot is younger than `put_timeout`, the length is declared (not
    /// chunked, not a range) and equals the slot's size exactly, the media type matches.
    fn check(&self, slot: &Slot, place: &Result<(SafePath, bool), Refusal>) -> Result<(), Refusal> {
        if !name_spelling_accepted(self.decide_only, &self.raw_name, &slot.name) {
            return Err(no_slot_at(&self.url_path));
        }
        let taken = match place {
            Ok((_, taken)) => *taken,
            Err(refusal) => return Err(refusal.clone()),
        };
        if slot.uploaded.is_some() {
            return Err(Refusal::already_stored(&slot.name));
        }
        if self.decide_only && slot.authorized.is_some() {
            // One allowed PUT per slot when the web server writes (the store's update makes
            // this exact under races; this is the early, readable answer).
            return Err(Refusal::already_authorized(&slot.name));
        }
        if taken {
            return Err(Refusal::already_stored(&slot.name));
        }
        let age = self.now.saturating_sub(slot.created);
        if age >= self.put_timeout {
            return Err(Refusal::new(
                RefusalKind::Gone,
                format!(
                    "slot expired: created {age} s ago, PUT timeout is {} s",
                    self.put_timeout
                ),
            ));
        }
        size_matches(self.declared.clone()?, slot.size)?;
        media_type_matches(self.content_type.as_deref(), slot.content_type.as_deref())
    }
}

/// Whether the name as it stands in the PUT URL may fill a slot named `slot_name`.
///
/// When the program writes the file itself it stores it under the slot's name whatever the
/// spelling, so the tolerant match applies (raw, encoded once, or twice: BEHAVIOUR.md §3). When
/// the web server writes it (decide-only), nginx and Apache decode the URL once and write
/// there: only a spelling that decodes once to the slot's name lands at `<token>/<name>`. Any
/// other would put a second, stray file beside the slot's, outside every check and quota.
fn name_spelling_accepted(decide_only: bool, raw_name: &str, slot_name: &str) -> bool {
    if decide_only {
        return percent_decode_segment(raw_name).is_some_and(|once| once == slot_name);
    }
    url_name_matches(raw_name, slot_name)
}

/// `GET`/`HEAD <get_prefix>/<token>/<name>` served by the program.
pub fn serve(app: &App, req: &Request, token: &str, raw_name: &str) -> Result<Response, Outcome> {
    let not_found = || Refusal::no_file_at(&req.path);
    let name = match app.store.slot(token)? {
        Some(slot) if url_name_matches(raw_name, &slot.name) => slot.name,
        Some(_) => return Err(not_found().into()),
        // A file without a slot (the slot was forgotten): serve it by its decoded name.
        None => {
            let once = percent_decode_segment(raw_name).ok_or_else(not_found)?;
            if is_safe_name(&once) {
                once
            } else {
                percent_decode_segment(&once)
                    .filter(|n| is_safe_name(n))
                    .ok_or_else(not_found)?
            }
        }
    };
    let path = SafePath::slot(token, &name)?;
    serve_file(app, req, &path, guessed_type(&name))
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

/// Hex digits of a token that are its creation time rather than random.
const TIME_DIGITS: usize = 8;

/// A fresh slot token: as long as `files::is_token` wants it (40 hex digits, what the shipped
/// web server configurations match). The first 8 digits are the milliseconds of the Unix time
/// modulo 2³² (wrapping every 49.7 days), the other 32 are 128 bits from the OS's random source
/// (the part nobody can guess). Why not random all through: the slot table is keyed by token,
/// and a random key puts every new row on another page of the B-tree, so every slot wrote a
/// page of its own to the WAL and later into the database. Tokens that follow the clock land
/// side by side on the table's last page, which a batch of slots then shares (measured: CPU
/// per stored slot 31 → 23 µs alone, 22 → 13 µs two to a commit). Milliseconds rather than
/// seconds: at thousands of slots a second, a second's slots would again spread over
/// hundreds of pages. The price: whoever sees a URL learns when its slot was requested, to the
/// millisecond (SECURITY.md says so); the recipients of a shared file know about when it was
/// sent anyway.
pub fn new_token() -> Result<String, Error> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // Truncation is the point: only the order within the next 49 days matters (a wrap puts
    // new rows at the table's start, which is as good).
    let prefix = (millis % (1 << 32)) as u32;
    Ok(format!(
        "{prefix:0width$x}{}",
        random_hex(crate::files::TOKEN_LEN - TIME_DIGITS)?,
        width = TIME_DIGITS
    ))
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
    fn the_web_server_must_land_on_the_slot_name() {
        let (decide, receive) = (true, false);
        for (spelling, decide_ok) in [
            ("a b.txt", true),
            ("a%20b.txt", true),
            ("%61%20b.txt", true),
            ("a%2520b.txt", false),
            ("%2561%20b.txt", false),
        ] {
            assert_eq!(
                name_spelling_accepted(decide, spelling, "a b.txt"),
                decide_ok,
                "decide-only {spelling}"
            );
            assert!(
                name_spelling_accepted(receive, spelling, "a b.txt"),
                "program-written {spelling}"
            );
        }
    }

    #[test]
    fn tokens_are_hex_and_unique() {
        let a = new_token().unwrap();
        assert!(crate::files::is_token(&a));
        assert_ne!(a, new_token().unwrap());
    }

    #[test]
    fn tokens_start_with_the_time_and_end_random() {
        let millis = || {
            let d = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            (d.as_millis() % (1 << 32)) as u32
        };
        let before = millis();
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        let after = millis();
        for token in [&a, &b] {
            let prefix = u32::from_str_radix(&token[..TIME_DIGITS], 16).unwrap();
            // Wrapping arithmetic: the test may run across the 49-day wrap.
            assert!(
                prefix.wrapping_sub(before) <= after.wrapping_sub(before),
                "{token}"
            );
        }
        // The random part: 32 digits, never the same twice.
        assert_eq!(a.len() - TIME_DIGITS, 32);
        assert_ne!(a[TIME_DIGITS..], b[TIME_DIGITS..]);
    }
}
