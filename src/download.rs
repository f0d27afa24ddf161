//! Serving a stored file when the program serves downloads itself (`webserver_download =
//! false`), for every protocol: the ranges and conditional GETs nginx answers for a static
//! file, and the headers that keep an uploaded file from running script on our origin.
//!
//! Not here: which file a download URL names (each protocol's `serve`), nor what the web
//! server serves (that is its own, configured in nginx/ and apache/).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::App;
use crate::content_type::shown_inline;
use crate::files::SafePath;
use crate::name::percent_encode_segment;
use crate::refusal::Outcome;
use crate::request::{Body, FilePart, Request, Response};

/// Security headers on every download (BEHAVIOUR.md §5).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// Serves a stored file with the download headers, as nginx serves a static file: `ETag`
/// and `Last-Modified`, 304 for a conditional GET that the file still satisfies, one `Range`
/// as 206 (or 416), `Accept-Ranges`. HEAD sends the head of the GET without its body.
pub fn serve_file(
    app: &App,
    req: &Request,
    path: &SafePath,
    content_type: &str,
) -> Result<Response, Outcome> {
    let stored = app.uploads.open_stored(path)?;
    let total = stored.len;
    let etag = entity_tag(stored.modified, total);
    let last_modified = httpdate::fmt_http_date(epoch_seconds(stored.modified));
    let conditions = Conditions {
        range: req.range.as_deref(),
        if_none_match: req.if_none_match.as_deref(),
        if_modified_since: req.if_modified_since.as_deref(),
        if_range: req.if_range.as_deref(),
    };
    let head_only = req.method == "HEAD";
    let (status, body, content_range) =
        match download_answer(&conditions, &etag, stored.modified, total) {
            DownloadAnswer::Whole => (200, Body::File(FilePart::whole(stored.file, total)), None),
            DownloadAnswer::NotModified => (304, Body::Empty, None),
            DownloadAnswer::Part { offset, len } => {
                let range = format!("bytes {offset}-{}/{total}", offset + len - 1);
                let part = FilePart {
                    file: stored.file,
                    offset,
                    len,
                };
                (206, Body::File(part), Some(range))
            }
            DownloadAnswer::Unsatisfiable => {
                let mut response = Response::text(
                    416,
                    "text/plain; charset=utf-8",
                    format!("the range is not within the file, which has {total} bytes\n"),
                )
                .with_header("Content-Range", format!("bytes */{total}"));
                response.head_only = head_only;
                return Ok(response.with_cors());
            }
        };
    let mut response = Response {
        status,
        headers: Vec::new(),
        body,
        head_only,
    };
    if let Some(range) = content_range {
        response = response.with_header("Content-Range", range);
    }
    let response = response
        .with_header("Accept-Ranges", "bytes")
        .with_header("ETag", etag)
        .with_header("Last-Modified", last_modified);
    Ok(download_headers(response, path.file_name(), content_type).with_cors())
}

/// The request headers that make a download conditional or partial, as sent.
#[derive(Debug, Default, Clone, Copy)]
struct Conditions<'a> {
    range: Option<&'a str>,
    if_none_match: Option<&'a str>,
    if_modified_since: Option<&'a str>,
    if_range: Option<&'a str>,
}

/// What a GET or HEAD of a stored file answers.
#[derive(Debug, PartialEq, Eq)]
enum DownloadAnswer {
    /// 200 with the whole file.
    Whole,
    /// 304: the client's copy is this version.
    NotModified,
    /// 206 with `len` (at least 1) bytes from `offset`.
    Part { offset: u64, len: u64 },
    /// 416: the range lies beyond the file, or cannot be read.
    Unsatisfiable,
}

/// nginx's ETag: `"<mtime hex>-<size hex>"`, so that a client gets the same validator
/// whether nginx or the program serves the file.
fn entity_tag(modified: i64, len: u64) -> String {
    format!("\"{:x}-{len:x}\"", modified.max(0))
}

/// A time in seconds since the epoch (before it counts as the epoch).
fn epoch_seconds(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// An HTTP date (any of the three forms RFC 9110 accepts) in seconds since the epoch.
fn parse_http_date_seconds(value: &str) -> Option<i64> {
    let time = httpdate::parse_http_date(value.trim()).ok()?;
    let seconds = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(seconds).ok()
}

/// The decision for a download of a file with this ETag, mtime and length, as RFC 9110
/// orders it: `If-None-Match` (or, without it, `If-Modified-Since`) first, then `Range`
/// unless `If-Range` names another version. A header that cannot be read is ignored, except
/// a `bytes=` range that cannot be read, which nginx answers with 416.
fn download_answer(conditions: &Conditions, etag: &str, modified: i64, len: u64) -> DownloadAnswer {
    let not_modified = match (conditions.if_none_match, conditions.if_modified_since) {
        (Some(tags), _) => names_entity_tag(tags, etag),
        // Not newer than the client's copy (RFC 9110 13.1.3; nginx's `if_modified_since
        // before`). An unreadable date is ignored.
        (None, Some(date)) => parse_http_date_seconds(date).is_some_and(|since| modified <= since),
        (None, None) => false,
    };
    if not_modified {
        return DownloadAnswer::NotModified;
    }
    let Some(range) = conditions.range else {
        return DownloadAnswer::Whole;
    };
    if let Some(validator) = conditions.if_range
        && !if_range_holds(validator, etag, modified)
    {
        return DownloadAnswer::Whole;
    }
    range_answer(range, len)
}

/// `If-None-Match`: `*`, or a list of entity tags one of which is `etag` (weak comparison:
/// `W/"x"` names `"x"`).
fn names_entity_tag(tags: &str, etag: &str) -> bool {
    tags.trim() == "*"
        || tags
            .split(',')
            .map(|tag| tag.trim())
            .any(|tag| tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// `If-Range`: an entity tag, compared strongly (a weak one never holds), or the exact
/// `Last-Modified` date.
fn if_range_holds(validator: &str, etag: &str, modified: i64) -> bool {
    let validator = validator.trim();
    if validator.starts_with('"') {
        return validator == etag;
    }
    parse_http_date_seconds(validator) == Some(modified)
}

/// One range as written: `N-`, `N-M` or the suffix `-K`.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    From { first: u64, last: Option<u64> },
    Suffix(u64),
}

/// The answer to `Range: <value>` for a file of `len` bytes. Another unit than `bytes` is
/// ignored (200, as RFC 9110 says). Several ranges get the whole file, as nginx may answer
/// them; one that cannot be read, or lies beyond the file, gets 416.
fn range_answer(value: &str, len: u64) -> DownloadAnswer {
    let value = value.trim();
    let Some(specs) = value
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &value[6..])
    else {
        return DownloadAnswer::Whole;
    };
    let mut specs = specs.split(',').map(str::trim).filter(|s| !s.is_empty());
    let spec = match (specs.next(), specs.next()) {
        (Some(spec), None) => spec,
        (Some(_), Some(_)) => return DownloadAnswer::Whole,
        (None, _) => return DownloadAnswer::Unsatisfiable,
    };
    match parse_range_spec(spec) {
        Some(spec) => resolve_range(&spec, len),
        None => DownloadAnswer::Unsatisfiable,
    }
}

/// Reads one range; `None` when it is not one (`5-2` included). Numbers too large for u64
/// become u64::MAX: beyond any file, which is what they mean.
fn parse_range_spec(spec: &str) -> Option<RangeSpec> {
    let number = |text: &str| {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().unwrap_or(u64::MAX))
    };
    let (first, last) = spec.split_once('-')?;
    if first.trim().is_empty() {
        return number(last).map(RangeSpec::Suffix);
    }
    let first = number(first)?;
    let last = match last.trim() {
        "" => None,
        text => Some(number(text)?),
    };
    if last.is_some_and(|last| last < first) {
        return None;
    }
    Some(RangeSpec::From { first, last })
}

/// The bytes of a file of `len` bytes a range selects. An empty file answers a range that
/// starts at its beginning with the whole (empty) file, as nginx does.
fn resolve_range(spec: &RangeSpec, len: u64) -> DownloadAnswer {
    let (offset, end) = match *spec {
        RangeSpec::Suffix(_) | RangeSpec::From { first: 0, .. } if len == 0 => {
            return DownloadAnswer::Whole;
        }
        RangeSpec::Suffix(0) => return DownloadAnswer::Unsatisfiable,
        RangeSpec::Suffix(count) => (len - count.min(len), len),
        RangeSpec::From { first, .. } if first >= len => return DownloadAnswer::Unsatisfiable,
        RangeSpec::From { first, last } => (first, last.map_or(len, |last| last.min(len - 1) + 1)),
    };
    DownloadAnswer::Part {
        offset,
        len: end - offset,
    }
}

/// Content-Type, Content-Disposition (inline only for media and plain text), nosniff and CSP.
fn download_headers(response: Response, name: &str, content_type: &str) -> Response {
    let disposition = if shown_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    response
        .with_header("Content-Type", content_type.to_string())
        .with_header(
            "Content-Disposition",
            format!(
                "{disposition}; filename*=UTF-8''{}",
                percent_encode_segment(name)
            ),
        )
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"5f5e100-a\"";
    /// 1e8 seconds: Sat, 03 Mar 1973 09:46:40 GMT.
    const MODIFIED: i64 = 100_000_000;

    fn range(value: &str) -> DownloadAnswer {
        range_answer(value, 10)
    }

    fn part(offset: u64, len: u64) -> DownloadAnswer {
        DownloadAnswer::Part { offset, len }
    }

    fn answer(conditions: Conditions) -> DownloadAnswer {
        download_answer(&conditions, ETAG, MODIFIED, 10)
    }

    #[test]
    fn etag_is_nginx_s() {
        assert_eq!(entity_tag(MODIFIED, 10), ETAG);
        assert_eq!(entity_tag(-5, 0), "\"0-0\"");
    }

    #[test]
    fn resume_from_an_offset() {
        assert_eq!(range("bytes=4-"), part(4, 6));
        assert_eq!(range("bytes=9-"), part(9, 1));
        assert_eq!(range("BYTES = 4-"), DownloadAnswer::Whole);
        assert_eq!(range("Bytes=4-"), part(4, 6));
    }

    #[test]
    fn first_and_last() {
        assert_eq!(range("bytes=0-0"), part(0, 1));
        assert_eq!(range("bytes=2-5"), part(2, 4));
        assert_eq!(range("bytes= 2 - 5 "), part(2, 4));
        assert_eq!(range("bytes=2-500"), part(2, 8));
    }

    #[test]
    fn suffix() {
        assert_eq!(range("bytes=-3"), part(7, 3));
        assert_eq!(range("bytes=-30"), part(0, 10));
        assert_eq!(range("bytes=-0"), DownloadAnswer::Unsatisfiable);
    }

    #[test]
    fn beyond_the_end() {
        assert_eq!(range("bytes=10-"), DownloadAnswer::Unsatisfiable);
        assert_eq!(range("bytes=10-20"), DownloadAnswer::Unsatisfiable);
    }

    #[test]
    fn invalid_ranges_are_unsatisfiable() {
        for value in [
            "bytes=5-2",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=a-",
            "bytes=1-b",
            "bytes=+1-2",
            "bytes=1-2-3",
            "bytes=--1",
            "bytes=१-",
        ] {
            assert_eq!(range(value), DownloadAnswer::Unsatisfiable, "{value:?}");
        }
    }

    #[test]
    fn overflow_means_beyond_any_file() {
        let huge = "99999999999999999999999999";
        assert_eq!(
            range(&format!("bytes={huge}-")),
            DownloadAnswer::Unsatisfiable
        );
        assert_eq!(range(&format!("bytes=3-{huge}")), part(3, 7));
        assert_eq!(range(&format!("bytes=-{huge}")), part(0, 10));
        let max = u64::MAX;
        assert_eq!(
            range(&format!("bytes={max}-{max}")),
            DownloadAnswer::Unsatisfiable
        );
    }

    #[test]
    fn other_units_and_several_ranges_get_the_whole_file() {
        assert_eq!(range("items=0-1"), DownloadAnswer::Whole);
        assert_eq!(range("0-1"), DownloadAnswer::Whole);
        assert_eq!(range("bytes=0-1,4-5"), DownloadAnswer::Whole);
        assert_eq!(range("bytes=0-1,"), part(0, 2));
    }

    #[test]
    fn empty_file() {
        assert_eq!(range_answer("bytes=0-", 0), DownloadAnswer::Whole);
        assert_eq!(range_answer("bytes=-5", 0), DownloadAnswer::Whole);
        assert_eq!(range_answer("bytes=1-", 0), DownloadAnswer::Unsatisfiable);
    }

    #[test]
    fn if_none_match() {
        let tags = |tags| Conditions {
            if_none_match: Some(tags),
            ..Conditions::default()
        };
        assert_eq!(answer(tags(ETAG)), DownloadAnswer::NotModified);
        assert_eq!(answer(tags("*")), DownloadAnswer::NotModified);
        assert_eq!(
            answer(tags("\"x\", W/\"5f5e100-a\"")),
            DownloadAnswer::NotModified
        );
        assert_eq!(answer(tags("\"5f5e100-b\"")), DownloadAnswer::Whole);
    }

    #[test]
    fn if_modified_since() {
        let since = |date| Conditions {
            if_modified_since: Some(date),
            ..Conditions::default()
        };
        let at = "Sat, 03 Mar 1973 09:46:40 GMT";
        assert_eq!(answer(since(at)), DownloadAnswer::NotModified);
        let later = "Sun, 04 Mar 1973 09:46:40 GMT";
        assert_eq!(answer(since(later)), DownloadAnswer::NotModified);
        let earlier = "Sat, 03 Mar 1973 09:46:39 GMT";
        assert_eq!(answer(since(earlier)), DownloadAnswer::Whole);
        assert_eq!(answer(since("yesterday")), DownloadAnswer::Whole);
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let conditions = Conditions {
            if_none_match: Some("\"other\""),
            if_modified_since: Some("Sat, 03 Mar 1973 09:46:40 GMT"),
            ..Conditions::default()
        };
        assert_eq!(answer(conditions), DownloadAnswer::Whole);
    }

    #[test]
    fn if_range() {
        let with = |validator| Conditions {
            range: Some("bytes=4-"),
            if_range: Some(validator),
            ..Conditions::default()
        };
        assert_eq!(answer(with(ETAG)), part(4, 6));
        assert_eq!(answer(with("W/\"5f5e100-a\"")), DownloadAnswer::Whole);
        assert_eq!(answer(with("\"other\"")), DownloadAnswer::Whole);
        assert_eq!(answer(with("Sat, 03 Mar 1973 09:46:40 GMT")), part(4, 6));
        assert_eq!(
            answer(with("Sun, 04 Mar 1973 09:46:40 GMT")),
            DownloadAnswer::Whole
        );
        assert_eq!(answer(with("garbage")), DownloadAnswer::Whole);
    }

    #[test]
    fn a_match_answers_304_before_any_range() {
        let conditions = Conditions {
            range: Some("bytes=400-"),
            if_none_match: Some(ETAG),
            ..Conditions::default()
        };
        assert_eq!(answer(conditions), DownloadAnswer::NotModified);
    }
}
