//! File names and URL text: sanitising a client's file name into one safe path component,
//! percent-decoding URL segments and form-encoded queries, percent-encoding names into URLs.
//!
//! Pure functions, no I/O. This module decides what a *safe name* is; `files` relies on it and
//! never builds a path from anything that did not pass `is_safe_name`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::refusal::Refusal;

/// Longest file name in bytes: the usual file-system limit for one path component.
pub const MAX_NAME_BYTES: usize = 255;

/// Characters left as they are in a URL path segment: RFC 3986 unreserved.
const SEGMENT_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Turns a client's file name into one safe path component (BEHAVIOUR.md §2): every character that is
/// not a letter or digit of any script, `_`, `-` or `.` becomes `_`; a leading `.` becomes `_`.
/// Refuses what is empty, `.`/`..`, or longer than `MAX_NAME_BYTES` afterwards.
pub fn sanitize_file_name(raw: &str) -> Result<String, Refusal> {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') {
        name.replace_range(0..1, "_");
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(Refusal::bad_request(format!(
            "invalid file name {raw:?}: nothing left after making it safe"
        )));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Refusal::bad_request(format!(
            "file name too long: {} bytes, at most {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(name)
}

/// True when `name` is exactly what `sanitize_file_name` would produce from it: the only names
/// that may become a path on disk.
pub fn is_safe_name(name: &str) -> bool {
    matches!(sanitize_file_name(name), Ok(ref safe) if safe == name)
}

/// Decodes one URL path segment to UTF-8, or `None` when it is not valid UTF-8 after decoding.
pub fn percent_decode_segment(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Decodes every `/`-separated segment of a URL path; `None` when one is not UTF-8.
pub fn percent_decode_path(raw: &str) -> Option<Vec<String>> {
    raw.split('/').map(percent_decode_segment).collect()
}

/// True when a name as it arrived in a PUT/GET URL stands for `expected`: raw, percent-encoded
/// once, or encoded twice (a known client and server bug, BEHAVIOUR.md §3).
pub fn url_name_matches(segment: &str, expected: &str) -> bool {
    if segment == expected {
        return true;
    }
    let Some(once) = percent_decode_segment(segment) else {
        return false;
    };
    if once == expected {
        return true;
    }
    matches!(percent_decode_segment(&once), Some(twice) if twice == expected)
}

/// Percent-encodes a name for use as one URL path segment.
pub fn percent_encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT_KEEP).to_string()
}

/// A plain decimal number as HTTP and our query parameters write it: ASCII digits only (no
/// sign, no spaces, which `str::parse` would let through as `+5`), up to `u64::MAX`.
pub fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Splits an `application/x-www-form-urlencoded` query into decoded pairs (`+` is a space).
/// A second `?` is taken as a separator too: ejabberd appends `?jid=..` to a `service_url` that
/// may already carry `?secret=..`. Refuses a pair that does not decode to UTF-8.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, Refusal> {
    let mut pairs = Vec::new();
    for part in query.split(['&', '?']).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        pairs.push((form_decode(key)?, form_decode(value)?));
    }
    Ok(pairs)
}

/// The value of the first `key` in pairs from [`parse_query`] (`None` when absent).
pub fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn form_decode(text: &str) -> Result<String, Refusal> {
    let spaced = text.replace('+', " ");
    percent_decode_segment(&spaced).ok_or_else(|| {
        Refusal::bad_request(format!("query text {text:?} is not UTF-8 after decoding"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_letters_of_every_script() {
        assert_eq!(sanitize_file_name("Отчёт.pdf").unwrap(), "Отчёт.pdf");
        assert_eq!(sanitize_file_name("صورة.jpg").unwrap(), "صورة.jpg");
        assert_eq!(sanitize_file_name("写真.png").unwrap(), "写真.png");
    }

    #[test]
    fn replaces_spaces_slashes_and_emoji() {
        assert_eq!(sanitize_file_name("my file.txt").unwrap(), "my_file.txt");
        assert_eq!(
            sanitize_file_name("../etc/passwd").unwrap(),
            "_._etc_passwd"
        );
        assert_eq!(sanitize_file_name("a\\b\0c").unwrap(), "a_b_c");
        assert_eq!(sanitize_file_name("🎉.png").unwrap(), "_.png");
    }

    #[test]
    fn no_leading_dot() {
        assert_eq!(sanitize_file_name(".htaccess").unwrap(), "_htaccess");
        assert_eq!(sanitize_file_name("..").unwrap(), "_.");
    }

    #[test]
    fn refuses_empty_and_too_long() {
        assert!(sanitize_file_name("").is_err());
        assert!(sanitize_file_name(&"a".repeat(256)).is_err());
        assert!(sanitize_file_name(&"a".repeat(255)).is_ok());
        // 128 two-byte letters are 256 bytes.
        assert!(sanitize_file_name(&"я".repeat(128)).is_err());
    }

    #[test]
    fn safe_names() {
        assert!(is_safe_name("photo.jpg"));
        assert!(!is_safe_name(".part"));
        assert!(!is_safe_name("a/b"));
        assert!(!is_safe_name(".."));
        assert!(!is_safe_name("a b"));
    }

    #[test]
    fn url_names_raw_once_twice() {
        assert!(url_name_matches("Отчёт.pdf", "Отчёт.pdf"));
        assert!(url_name_matches("%D0%9E.pdf", "О.pdf"));
        assert!(url_name_matches("%d0%9e.pdf", "О.pdf"));
        assert!(url_name_matches("%25D0%259E.pdf", "О.pdf"));
        assert!(!url_name_matches("%2525D0%25259E.pdf", "О.pdf"));
        assert!(!url_name_matches("other.pdf", "О.pdf"));
        assert!(!url_name_matches("%FF.pdf", "О.pdf"));
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal("18446744073709551616"), None);
        assert_eq!(parse_decimal("+5"), None);
        assert_eq!(parse_decimal("-5"), None);
        assert_eq!(parse_decimal(" 5"), None);
        assert_eq!(parse_decimal(""), None);
    }

    #[test]
    fn encode_segment() {
        assert_eq!(percent_encode_segment("a b~.pdf"), "a%20b~.pdf");
        assert_eq!(percent_encode_segment("О"), "%D0%9E");
    }

    #[test]
    fn query_value_first_wins() {
        let q = parse_query("a=1&b=&a=2").unwrap();
        assert_eq!(query_value(&q, "a"), Some("1"));
        assert_eq!(query_value(&q, "b"), Some(""));
        assert_eq!(query_value(&q, "c"), None);
        assert_eq!(query_value(&q, "A"), None);
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("jid=a%40b.c&name=my+file&x&size=3").unwrap();
        assert_eq!(q[0], ("jid".into(), "a@b.c".into()));
        assert_eq!(q[1], ("name".into(), "my file".into()));
        assert_eq!(q[2], ("x".into(), "".into()));
        let q = parse_query("secret=s?jid=a@b").unwrap();
        assert_eq!(q[1], ("jid".into(), "a@b".into()));
        assert!(parse_query("name=%FF").is_err());
    }
}
