//! `ConfigError`: what is wrong with the configuration, and where — file, line, key — so that
//! an admin can fix the file without reading code; and the `Locator` that turns the TOML
//! parser's byte spans into lines. Nothing here decides what is valid.

use std::fmt;
use std::ops::Range;

/// A configuration that could not be used: printed as `file:line: key: message` (line and
/// key when they are known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file, as given.
    pub file: String,
    /// The line (from 1) the bad value is on; `None` for a missing key or a whole-file problem.
    pub line: Option<usize>,
    /// The key, with its table and index (`rules[2].max_file_size`); `None` when the TOML
    /// parser could not tell.
    pub key: Option<String>,
    /// What is wrong, quoting the bad value.
    pub message: String,
}

impl ConfigError {
    /// A problem of the file as a whole (it cannot be read, is no TOML...).
    pub fn whole_file(file: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            line: None,
            key: None,
            message: message.to_string(),
        }
    }

    /// A problem of `key` that no single line shows (a key missing, two keys together).
    pub fn of_key(file: &str, key: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError {
            key: Some(key.to_string()),
            ..ConfigError::whole_file(file, message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The configuration text and its file name, to turn spans into errors.
pub(super) struct Locator<'a> {
    /// The file name, for messages.
    pub(super) file: &'a str,
    /// The whole text.
    pub(super) source: &'a str,
}

impl Locator<'_> {
    /// The error of `key`, whose value spans `span`.
    pub(super) fn error(
        &self,
        span: &Range<usize>,
        key: &str,
        message: impl fmt::Display,
    ) -> ConfigError {
        ConfigError {
            line: Some(self.line_of(span)),
            ..ConfigError::of_key(self.file, key, message)
        }
    }

    /// The error of `key` as a whole, on no one line.
    pub(super) fn key_error(&self, key: &str, message: impl fmt::Display) -> ConfigError {
        ConfigError::of_key(self.file, key, message)
    }

    /// The TOML parser's own error, with the key taken from the line when it does not name it.
    pub(super) fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let message = error.message().trim();
        let Some(span) = error.span() else {
            return ConfigError::whole_file(self.file, message);
        };
        match self.key_on_line(&span) {
            // The toml crate does not name the key of a wrong value: take it from the line.
            Some(key) if !message.contains(&format!("`{key}`")) => self.error(&span, &key, message),
            _ => ConfigError {
                line: Some(self.line_of(&span)),
                ..ConfigError::whole_file(self.file, message)
            },
        }
    }

    /// The key assigned on the line holding `span`, if that line is a `key = value` line.
    fn key_on_line(&self, span: &Range<usize>) -> Option<String> {
        let start = floor_char_boundary(self.source, span.start);
        let line_start = self.source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = self.source[line_start..].lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        plain.then(|| key.to_string())
    }

    /// The line (from 1) on which `span` starts.
    fn line_of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.source.len());
        self.source.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// `index`, or the nearest character boundary before it: a span from the parser may point
/// inside a multi-byte character of hostile text, and slicing there would panic.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_line_and_key() {
        let at = Locator {
            file: "c.toml",
            source: "a = 1\nworkers = 1\n",
        };
        let e = at.error(&(16..17), "workers", "1 is not between 2 and 1024");
        assert_eq!(e.line, Some(2));
        assert_eq!(
            e.to_string(),
            "c.toml:2: workers: 1 is not between 2 and 1024"
        );
    }

    #[test]
    fn display_without_line() {
        let e = ConfigError::of_key("c.toml", "slot_api", "allow_from is empty");
        assert_eq!(e.to_string(), "c.toml: slot_api: allow_from is empty");
        let e = ConfigError::whole_file("c.toml", "expected `=`");
        assert_eq!(e.to_string(), "c.toml: expected `=`");
    }

    #[test]
    fn key_taken_from_the_line() {
        let at = Locator {
            file: "c",
            source: "x = 1\n\"webserver_download\" = \"yes\"\n",
        };
        assert_eq!(
            at.key_on_line(&(30..31)).as_deref(),
            Some("webserver_download")
        );
        assert_eq!(at.key_on_line(&(0..1)).as_deref(), Some("x"));
    }

    #[test]
    fn span_inside_a_character_does_not_panic() {
        let at = Locator {
            file: "c",
            source: "k = \"ä\"\n",
        };
        assert_eq!(at.key_on_line(&(6..7)).as_deref(), Some("k"));
    }
}
