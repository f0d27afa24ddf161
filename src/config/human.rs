//! Human sizes (`"10 MiB"`, `"10MB"`, `"100"`) and durations (`"360s"`, `"5m"`, `"30d"`) as
//! INTERFACE.md documents them, each turned into one number: bytes as `u64`, seconds as `i64`.
//!
//! Pure text → number; what the number may be (not zero, not negative) is the config's check,
//! not this module's. Why not `humantime` / `bytesize`: both accept more than we document
//! (`humantime`: months, years, milliseconds, and no bare number; `bytesize`: `"10 M"`,
//! fractions, any case), and an admin's `"10 M"` must be an error, not a guess.

use std::fmt;

/// Why a size or duration text could not be read; the message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HumanError {
    text: String,
    kind: HumanErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HumanErrorKind {
    NoNumber,
    TooLarge,
    UnknownSizeUnit(String),
    UnknownDurationUnit(String),
}

impl HumanError {
    fn new(text: &str, kind: HumanErrorKind) -> HumanError {
        HumanError {
            text: text.to_string(),
            kind,
        }
    }
}

impl fmt::Display for HumanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.text;
        match &self.kind {
            HumanErrorKind::NoNumber => write!(f, "{text:?} does not start with a number"),
            HumanErrorKind::TooLarge => write!(f, "{text:?} is too large"),
            HumanErrorKind::UnknownSizeUnit(unit) => write!(
                f,
                "{text:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ),
            HumanErrorKind::UnknownDurationUnit(unit) => {
                write!(f, "{text:?}: unknown unit {unit:?} (use s, m, h, d or w)")
            }
        }
    }
}

impl std::error::Error for HumanError {}

/// Parses "10 MiB", "10MB", "512 KiB", "1 GiB", "2 TB", "100 B" or "100" into bytes.
pub fn parse_human_size(text: &str) -> Result<u64, HumanError> {
    let (number, unit) = split_number(text)?;
    let factor: u64 = match unit {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => {
            let kind = HumanErrorKind::UnknownSizeUnit(unit.to_string());
            return Err(HumanError::new(text, kind));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| HumanError::new(text, HumanErrorKind::TooLarge))
}

/// Parses "360s", "5m", "5min", "2h", "30d", "1w" or "90" (seconds) into seconds.
pub fn parse_human_duration(text: &str) -> Result<i64, HumanError> {
    let (number, unit) = split_number(text)?;
    let factor: u64 = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            let kind = HumanErrorKind::UnknownDurationUnit(unit.to_string());
            return Err(HumanError::new(text, kind));
        }
    };
    number
        .checked_mul(factor)
        .and_then(|seconds| i64::try_from(seconds).ok())
        .ok_or_else(|| HumanError::new(text, HumanErrorKind::TooLarge))
}

/// The leading decimal digits and the rest (the unit), both without surrounding spaces.
fn split_number(text: &str) -> Result<(u64, &str), HumanError> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits_end == 0 {
        return Err(HumanError::new(trimmed, HumanErrorKind::NoNumber));
    }
    let number = trimmed[..digits_end]
        .parse::<u64>()
        .map_err(|_| HumanError::new(trimmed, HumanErrorKind::TooLarge))?;
    Ok((number, trimmed[digits_end..].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_binary_suffix() {
        assert_eq!(parse_human_size("10 MiB"), Ok(10 << 20));
        assert_eq!(parse_human_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn size_decimal_suffix() {
        assert_eq!(parse_human_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_human_size("2 kB"), Ok(2_000));
    }

    #[test]
    fn size_bare_number_is_bytes() {
        assert_eq!(parse_human_size("7"), Ok(7));
        assert_eq!(parse_human_size(" 100 B "), Ok(100));
    }

    #[test]
    fn size_unknown_unit_names_the_unit() {
        let e = parse_human_size("10 M").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10 M\": unknown unit \"M\" (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
        );
    }

    #[test]
    fn size_negative_has_no_number() {
        assert_eq!(
            parse_human_size("-1").unwrap_err().to_string(),
            "\"-1\" does not start with a number"
        );
    }

    #[test]
    fn size_overflow() {
        assert_eq!(
            parse_human_size("99999999999 TiB").unwrap_err().to_string(),
            "\"99999999999 TiB\" is too large"
        );
        assert!(parse_human_size("99999999999999999999").is_err());
    }

    #[test]
    fn duration_units() {
        assert_eq!(parse_human_duration("360s"), Ok(360));
        assert_eq!(parse_human_duration("5m"), Ok(300));
        assert_eq!(parse_human_duration("5min"), Ok(300));
        assert_eq!(parse_human_duration("2h"), Ok(7_200));
        assert_eq!(parse_human_duration("30 d"), Ok(30 * 86_400));
        assert_eq!(parse_human_duration("1w"), Ok(7 * 86_400));
        assert_eq!(parse_human_duration("90"), Ok(90));
    }

    #[test]
    fn duration_unknown_unit() {
        assert!(parse_human_duration("3y").is_err());
        assert!(parse_human_duration("100ms").is_err());
        assert!(parse_human_duration("soon").is_err());
    }

    #[test]
    fn duration_beyond_i64_is_too_large() {
        // 2^63 seconds: fits u64, not the i64 every time in the program is.
        let e = parse_human_duration("9223372036854775808").unwrap_err();
        assert_eq!(e.to_string(), "\"9223372036854775808\" is too large");
        assert_eq!(parse_human_duration("9223372036854775807"), Ok(i64::MAX));
    }
}
