//! The configuration file's TOML shape, exactly as written: every key the file may hold, with
//! its span for messages. No checks beyond TOML types and unknown keys (`validate` does them).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

/// The top level of `config.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) upload_root: Spanned<PathBuf>,
    pub(super) database: Spanned<String>,
    pub(super) base_url: Option<Spanned<String>>,
    pub(super) slot_prefix: Option<Spanned<String>>,
    pub(super) put_prefix: Option<Spanned<String>>,
    pub(super) get_prefix: Option<Spanned<String>>,
    pub(super) put_timeout: Option<Spanned<Quantity>>,
    pub(super) retention: Option<Spanned<Quantity>>,
    pub(super) webserver_download: Option<bool>,
    pub(super) listen: Option<Spanned<String>>,
    pub(super) workers: Option<Spanned<i64>>,
    pub(super) slot_api: Option<RawSlotApi>,
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
    #[serde(default)]
    pub(super) external: Vec<RawSignedPrefix>,
    #[serde(default)]
    pub(super) file_share: Vec<RawSignedPrefix>,
}

/// One `[[external]]` or `[[file_share]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignedPrefix {
    pub(super) prefix: Spanned<String>,
    pub(super) secret: Spanned<String>,
    pub(super) max_file_size: Option<Spanned<Quantity>>,
}

/// A size, duration or count: an integer, or text with a unit (`"10 MiB"`, `"5m"`).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Quantity {
    Number(i64),
    Text(String),
}

/// `[slot_api]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlotApi {
    pub(super) allow_from: Option<Vec<Spanned<String>>>,
    pub(super) secret: Option<Spanned<String>>,
}

/// One `[[rules]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    #[serde(rename = "match")]
    pub(super) pattern: Spanned<String>,
    #[serde(default)]
    pub(super) deny: bool,
    pub(super) max_file_size: Option<Spanned<Quantity>>,
    pub(super) max_total_size: Option<Spanned<Quantity>>,
    pub(super) bytes_per_window: Option<RawWindow>,
    pub(super) uploads_per_window: Option<RawWindow>,
    pub(super) retention: Option<Spanned<Quantity>>,
}

/// `{ window = "1h", bytes = "100 MiB" }` or `{ window = "1h", uploads = 30 }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) window: Spanned<Quantity>,
    pub(super) bytes: Option<Spanned<Quantity>>,
    pub(super) uploads: Option<Spanned<Quantity>>,
}
