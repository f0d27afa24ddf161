//! Media types, for every protocol: whether a type a client declares may be recorded (it is
//! served back as a header), the bare media type two declarations are compared by, and the
//! type a stored file is served with. Pure functions, no I/O.
//!
//! Not here: which PUT must send which type (`put::check_media_type`), nor the download
//! headers built from the type (`download`).

use crate::refusal::Refusal;

/// What a file whose type is unknown is sent as; also what ejabberd declares when the client
/// gave no type.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// A media type with optional parameters, made only of characters safe in a header (it is
/// served back as the download's Content-Type); trimmed.
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

/// `Text/Plain; charset=UTF-8` → `text/plain`.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The type of a stored file, from its name's extension, as nginx and Apache derive it when
/// they serve the file: never what the uploader declared (`text/html` for a `.png` stays
/// `image/png`).
pub fn guessed_type(name: &str) -> &'static str {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or(OCTET_STREAM)
}

/// Whether a browser may show a download of this type in place: media and plain text, never
/// a type that can carry script (SVG, HTML). Anything else is an attachment.
pub fn shown_inline(content_type: &str) -> bool {
    let media = media_type(content_type);
    (media.starts_with("image/") && media != "image/svg+xml")
        || media.starts_with("video/")
        || media.starts_with("audio/")
        || media == "text/plain"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_types() {
        assert_eq!(
            valid_content_type(" text/plain; charset=utf-8").unwrap(),
            "text/plain; charset=utf-8"
        );
        assert!(valid_content_type("image/png").is_ok());
    }

    #[test]
    fn invalid_types() {
        assert!(valid_content_type("text").is_err());
        assert!(valid_content_type("text/").is_err());
        assert!(valid_content_type("text/plain\r\nSet-Cookie: a=b").is_err());
        assert!(valid_content_type(&format!("text/{}", "x".repeat(300))).is_err());
    }

    #[test]
    fn media_type_drops_parameters_and_case() {
        assert_eq!(media_type("Text/Plain; charset=UTF-8"), "text/plain");
        assert_eq!(media_type(""), "");
    }

    #[test]
    fn guessed_from_the_name() {
        assert_eq!(guessed_type("a.png"), "image/png");
        assert_eq!(guessed_type("no-extension"), OCTET_STREAM);
    }

    #[test]
    fn inline_only_for_media_and_plain_text() {
        assert!(shown_inline("image/png"));
        assert!(shown_inline("Text/Plain; charset=utf-8"));
        assert!(!shown_inline("image/svg+xml"));
        assert!(!shown_inline("text/html"));
        assert!(!shown_inline(OCTET_STREAM));
    }
}
