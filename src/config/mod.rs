//! The configuration: the validated `Config` every part of the program reads, and where it
//! comes from. Every value is checked before the program starts, and every message names the
//! file, the line and the key (`ConfigError`), so that an admin can fix the file without
//! reading code.
//!
//! Layout: `raw` is the TOML shape as written; `human` reads sizes (`"10 MiB"`) and durations
//! (`"5m"`); `validate` turns the one into a `Config`, with the defaults; `describe` is what
//! `check-config` prints; `reach` what it checks on disk; `limits` the web server's body limits
//! it compares `max_file_size` with; `listen` the FastCGI address. Times are seconds as `i64`,
//! converted once here, as every time in the program is.

mod describe;
mod error;
mod human;
mod limits;
mod listen;
mod raw;
mod reach;
mod validate;

use std::path::{Path, PathBuf};

use ipnet::IpNet;

pub use error::ConfigError;
pub use human::{HumanError, parse_human_duration, parse_human_size};
pub use limits::{APACHE_SITE, BodyLimit, NGINX_FILES_SNIPPET, SHIPPED_BODY_LIMIT};
pub use listen::ListenAddress;

use crate::rules::{Action, Limits, Pattern, Rule};

/// Where the configuration is read from when neither `--config` nor the environment says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/xmpp-http-upload/config.toml";
/// The environment variable naming the configuration file (for mod_fcgid and CGI).
pub const CONFIG_ENV: &str = "XMPP_HTTP_UPLOAD_CONFIG";
/// `put_timeout` when the file does not set it: the Django app's 360 s.
pub const DEFAULT_PUT_TIMEOUT: i64 = 360;
/// `retention` when the file does not set it: 30 days.
pub const DEFAULT_RETENTION: i64 = 30 * 86_400;

/// Everything the program needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Files live at `<upload_root>/<token>/<name>`.
    pub upload_root: PathBuf,
    /// The database: SQLite's file (a path), or PostgreSQL (a `postgres://` URL).
    pub database: crate::store::Location,
    /// Scheme + host (+ port) for the URLs we hand out; `None`: taken from each request.
    pub base_url: Option<String>,
    /// The slot API lives at `<slot_prefix>/slot/` and `<slot_prefix>/max_size/`; no trailing `/`.
    pub slot_prefix: String,
    /// PUT URLs are `<put_prefix>/<token>/<name>`; no trailing `/`.
    pub put_prefix: String,
    /// GET URLs are `<get_prefix>/<token>/<name>`; no trailing `/`.
    pub get_prefix: String,
    /// How long after its creation a slot accepts its PUT, in seconds (> 0).
    pub put_timeout: i64,
    /// How long a stored file is kept, in seconds (> 0).
    pub retention: i64,
    /// Who serves the GET URLs (`webserver_download`).
    pub downloads: Downloads,
    /// Where to serve FastCGI when the command line names no address.
    pub listen: Option<ListenAddress>,
    /// FastCGI worker threads; `None`: four per core, at least 8.
    pub workers: Option<usize>,
    /// Who may call the slot API.
    pub slot_api: SlotApiAccess,
    /// The ordered access rules.
    pub rules: Vec<Rule>,
    /// Prefixes served with the HMAC protocol of `mod_http_upload_external` / `external_secret`.
    pub external: Vec<SignedPrefix>,
    /// Prefixes served with the JWT protocol of Prosody's `mod_http_file_share`.
    pub file_share: Vec<SignedPrefix>,
}

/// Who serves the GET (and HEAD) URLs of uploaded files: the `webserver_download` key, the
/// Django app's `XMPP_HTTP_UPLOAD_WEBSERVER_DOWNLOAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downloads {
    /// `webserver_download = true`, the default: the web server serves the files from
    /// `upload_root` (the shipped nginx site, the Apache site and the shared-hosting
    /// `.htaccess` all do). A GET that still reaches the program is refused with 404 and a
    /// line naming the setting: the web server was meant to answer it, so the program does not
    /// quietly serve around the web server's own headers and access rules, and a redirect
    /// could only point at the same URL again.
    WebServer,
    /// `webserver_download = false`: the program serves the files itself, with the download
    /// headers, ranges and conditional GETs (`runserver`; a web server that passes GETs on).
    Program,
}

/// A URL prefix whose uploads the XMPP server authorizes itself by signing them with a secret
/// it shares with us (the HMAC protocol of BEHAVIOUR.md §7 or the JWT protocol of BEHAVIOUR.md §7b).
#[derive(Clone)]
pub struct SignedPrefix {
    /// URL path prefix, no trailing `/`: uploads are `<prefix>/<path...>?v=<mac>`.
    pub prefix: String,
    /// Directory under `upload_root` holding this prefix's files: the prefix without its `/`.
    pub dir: String,
    /// The shared secret, as bytes for the HMAC key.
    pub secret: Vec<u8>,
    /// Larger PUTs are refused with 413.
    pub max_file_size: Option<u64>,
}

impl std::fmt::Debug for SignedPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("SignedPrefix")
            .field("prefix", &self.prefix)
            .field("max_file_size", &self.max_file_size)
            .finish_non_exhaustive()
    }
}

/// Who may call the slot API: both conditions that are set must hold.
#[derive(Debug, Clone, Default)]
pub struct SlotApiAccess {
    /// The caller's address (`REMOTE_ADDR`) must be in one of these; empty: any address.
    pub allow_from: Vec<IpNet>,
    /// If set, the caller must present it (`secret=` or `Authorization: Bearer`).
    pub secret: Option<String>,
}

impl Config {
    /// The development configuration of `runserver`: everything under `data_dir`, the slot API
    /// open to loopback, every JID allowed, the program serving downloads.
    pub fn for_development(data_dir: &Path) -> Config {
        Config {
            upload_root: data_dir.join("files"),
            database: crate::store::Location::Sqlite(data_dir.join("uploads.sqlite3")),
            base_url: None,
            slot_prefix: "/http_upload".into(),
            put_prefix: "/http_upload/upload".into(),
            get_prefix: "/http_upload/upload".into(),
            put_timeout: DEFAULT_PUT_TIMEOUT,
            retention: DEFAULT_RETENTION,
            downloads: Downloads::Program,
            listen: None,
            workers: None,
            slot_api: SlotApiAccess {
                allow_from: ["127.0.0.1/32", "::1/128"]
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .collect(),
                secret: None,
            },
            rules: vec![Rule {
                pattern: Pattern::new("").expect("the empty pattern is valid"),
                action: Action::Allow(Limits::default()),
            }],
            external: Vec::new(),
            file_share: Vec::new(),
        }
    }

    /// What is allowed but probably not meant: one line each, for `check-config` and the log
    /// when serving.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.slot_api.secret.is_none() {
            let tcp_listen = match &self.listen {
                Some(ListenAddress::Tcp(addr)) => Some(addr),
                Some(ListenAddress::Unix(_)) | None => None,
            };
            let loopback_callers = self
                .slot_api
                .allow_from
                .iter()
                .any(|net| net.addr().is_loopback());
            if let Some(addr) = tcp_listen {
                warnings.push(format!(
                    "slot_api has no secret and FastCGI listens on TCP ({addr}): any local user \
                     can connect, claim any REMOTE_ADDR and mint slots; set [slot_api] secret or \
                     listen on a unix: socket"
                ));
            }
            if loopback_callers {
                warnings.push(
                    "slot_api has no secret and allows loopback callers: any local user can mint \
                     slots through the web server's loopback slot API; set [slot_api] secret \
                     (sent as Authorization: Bearer)"
                        .to_string(),
                );
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests;
