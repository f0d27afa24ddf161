//! The configuration file: TOML → `Config`, with every value checked before the program starts.
//!
//! Every message names the key and the line it is on, so that an admin can fix the file without
//! reading code. Sizes are integers of bytes or text like `"10 MiB"` / `"10 MB"`; durations are
//! integers of seconds or text like `"360s"`, `"5m"`, `"2h"`, `"30d"`, `"1w"`.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::Spanned;

use crate::rules::{Action, Limits, Rule, Window};

/// Where the configuration is read from when neither `--config` nor the environment says.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/xmpp-http-upload/config.toml";
/// The environment variable naming the configuration file (for mod_fcgid and CGI).
pub const CONFIG_ENV: &str = "XMPP_HTTP_UPLOAD_CONFIG";

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
    /// How long after its creation a slot accepts its PUT, in seconds.
    pub put_timeout: u64,
    /// How long a stored file is kept, in seconds.
    pub retention: u64,
    /// Whether the web server serves downloads (documentation for the web-server configs; the
    /// program answers a GET that reaches it either way).
    pub webserver_download: bool,
    /// `host:port` or `unix:/path` to listen on for FastCGI when none is given on the command line.
    pub listen: Option<String>,
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

/// A configuration that could not be used: the file, the line, the key, and what is wrong.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    upload_root: Spanned<PathBuf>,
    database: Spanned<String>,
    base_url: Option<Spanned<String>>,
    slot_prefix: Option<Spanned<String>>,
    put_prefix: Option<Spanned<String>>,
    get_prefix: Option<Spanned<String>>,
    put_timeout: Option<Spanned<Quantity>>,
    retention: Option<Spanned<Quantity>>,
    webserver_download: Option<bool>,
    listen: Option<Spanned<String>>,
    workers: Option<Spanned<i64>>,
    slot_api: Option<RawSlotApi>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    external: Vec<RawExternal>,
    #[serde(default)]
    file_share: Vec<RawExternal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    prefix: Spanned<String>,
    secret: Spanned<String>,
    max_file_size: Option<Spanned<Quantity>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Quantity {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlotApi {
    allow_from: Option<Vec<Spanned<String>>>,
    secret: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    #[serde(default)]
    deny: bool,
    max_file_size: Option<Spanned<Quantity>>,
    max_total_size: Option<Spanned<Quantity>>,
    bytes_per_window: Option<RawWindow>,
    uploads_per_window: Option<RawWindow>,
    retention: Option<Spanned<Quantity>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    window: Spanned<Quantity>,
    bytes: Option<Spanned<Quantity>>,
    uploads: Option<Spanned<Quantity>>,
}

/// Turns spans into "file:line: key: message".
struct Locator<'a> {
    file: &'a str,
    source: &'a str,
}

impl Locator<'_> {
    /// The key assigned on the line holding `span`, if that line is a `key = value` line.
    fn key_on_line(&self, span: &Range<usize>) -> Option<String> {
        let start = span.start.min(self.source.len());
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

    fn line_of(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.source.len());
        self.source.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error(
        &self,
        span: &Range<usize>,
        key: &str,
        message: impl std::fmt::Display,
    ) -> ConfigError {
        ConfigError(format!(
            "{}:{}: {key}: {message}",
            self.file,
            self.line_of(span)
        ))
    }
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!("cannot read configuration {}: {e}", path.display()))
        })?;
        Config::parse(&source, &path.display().to_string())
    }

    /// Validates configuration text; `file` names it in messages.
    pub fn parse(source: &str, file: &str) -> Result<Config, ConfigError> {
        let at = Locator { file, source };
        let raw: RawConfig = toml::from_str(source).map_err(|e| {
            let message = e.message().trim();
            match e.span() {
                // The toml crate does not name the key of a wrong value: take it from the line.
                Some(span) => match at.key_on_line(&span) {
                    Some(key) if !message.contains(&format!("`{key}`")) => {
                        at.error(&span, &key, message)
                    }
                    _ => ConfigError(format!("{file}:{}: {message}", at.line_of(&span))),
                },
                None => ConfigError(format!("{file}: {message}")),
            }
        })?;

        let upload_root = absolute_path(&at, "upload_root", raw.upload_root)?;
        let database = crate::store::Location::parse(raw.database.get_ref())
            .map_err(|e| at.error(&raw.database.span(), "database", e))?;
        let base_url = match raw.base_url {
            Some(url) => {
                let span = url.span();
                let url = url.into_inner();
                let trimmed = url.trim_end_matches('/');
                let rest = trimmed
                    .strip_prefix("https://")
                    .or_else(|| trimmed.strip_prefix("http://"));
                match rest {
                    Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => {
                        Some(trimmed.to_string())
                    }
                    _ => {
                        return Err(at.error(
                            &span,
                            "base_url",
                            format!(
                                "{url:?} is not http(s)://host[:port] (no path; prefixes are set apart)"
                            ),
                        ));
                    }
                }
            }
            None => None,
        };
        let slot_prefix = prefix(&at, "slot_prefix", raw.slot_prefix, "/http_upload")?;
        let put_prefix = prefix(&at, "put_prefix", raw.put_prefix, "/upload")?;
        let get_prefix = match raw.get_prefix {
            Some(p) => prefix(&at, "get_prefix", Some(p), "")?,
            None => put_prefix.clone(),
        };
        let put_timeout = match raw.put_timeout {
            Some(q) => duration(&at, "put_timeout", q)?,
            None => 360,
        };
        let retention = match raw.retention {
            Some(q) => duration(&at, "retention", q)?,
            None => 30 * 86_400,
        };
        let listen = raw.listen.map(|l| l.into_inner());
        let workers = match raw.workers {
            None => None,
            Some(w) => match usize::try_from(*w.get_ref()) {
                Ok(n) if (2..=1024).contains(&n) => Some(n),
                _ => {
                    let why = format!("{} is not between 2 and 1024", w.get_ref());
                    return Err(at.error(&w.span(), "workers", why));
                }
            },
        };
        let slot_api = slot_api_access(&at, raw.slot_api)?;
        let mut rules = Vec::new();
        for (index, raw_rule) in raw.rules.into_iter().enumerate() {
            rules.push(rule(&at, index, raw_rule)?);
        }
        let mut external = Vec::new();
        for (index, raw_external) in raw.external.into_iter().enumerate() {
            external.push(signed_prefix(
                &at,
                &format!("external[{index}]"),
                raw_external,
            )?);
        }
        let mut file_share = Vec::new();
        for (index, raw_share) in raw.file_share.into_iter().enumerate() {
            file_share.push(signed_prefix(
                &at,
                &format!("file_share[{index}]"),
                raw_share,
            )?);
        }
        let mut taken = vec![slot_prefix.clone(), put_prefix.clone(), get_prefix.clone()];
        for (index, signed) in external.iter().chain(&file_share).enumerate() {
            let key = if index < external.len() {
                format!("external[{index}]")
            } else {
                format!("file_share[{}]", index - external.len())
            };
            if let Some(other) = taken.iter().find(|p| paths_overlap(p, &signed.prefix)) {
                return Err(ConfigError(format!(
                    "{file}: {key}.prefix: {:?} overlaps {other:?}; each protocol needs its own prefix",
                    signed.prefix
                )));
            }
            taken.push(signed.prefix.clone());
        }
        Ok(Config {
            upload_root,
            database,
            base_url,
            slot_prefix,
            put_prefix,
            get_prefix,
            put_timeout,
            retention,
            webserver_download: raw.webserver_download.unwrap_or(true),
            listen,
            workers,
            slot_api,
            rules,
            external,
            file_share,
        })
    }

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
            put_timeout: 360,
            retention: 30 * 86_400,
            webserver_download: false,
            listen: None,
            workers: None,
            slot_api: SlotApiAccess {
                allow_from: loopback(),
                secret: None,
            },
            rules: vec![Rule {
                pattern: Regex::new("").expect("the empty pattern is valid"),
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
            let tcp_listen = self
                .listen
                .as_deref()
                .is_some_and(|listen| !listen.starts_with("unix:"));
            let loopback_callers = self
                .slot_api
                .allow_from
                .iter()
                .any(|net| net.addr().is_loopback());
            if tcp_listen {
                warnings.push(format!(
                    "slot_api has no secret and FastCGI listens on TCP ({}): any local user can \
                     connect, claim any REMOTE_ADDR and mint slots; set [slot_api] secret or \
                     listen on a unix: socket",
                    self.listen.as_deref().unwrap_or_default()
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

    /// A human-readable account of what was understood, for `check-config`. No secrets.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "upload_root        {}", self.upload_root.display());
        let _ = writeln!(out, "database           {}", self.database.display());
        let _ = writeln!(
            out,
            "base_url           {}",
            self.base_url
                .as_deref()
                .unwrap_or("(from each request's Host)")
        );
        let _ = writeln!(
            out,
            "slot API           {}/slot/  {}/max_size/",
            self.slot_prefix, self.slot_prefix
        );
        let _ = writeln!(out, "PUT URLs           {}/<token>/<name>", self.put_prefix);
        let _ = writeln!(out, "GET URLs           {}/<token>/<name>", self.get_prefix);
        let _ = writeln!(out, "put_timeout        {} s", self.put_timeout);
        let _ = writeln!(out, "retention          {} s", self.retention);
        let _ = writeln!(out, "webserver_download {}", self.webserver_download);
        if let Some(listen) = &self.listen {
            let _ = writeln!(out, "listen             {listen}");
        }
        if let Some(workers) = self.workers {
            let _ = writeln!(out, "workers            {workers}");
        }
        let allow: Vec<String> = self
            .slot_api
            .allow_from
            .iter()
            .map(|n| n.to_string())
            .collect();
        let _ = writeln!(
            out,
            "slot API callers   {}{}",
            if allow.is_empty() {
                "any address".to_string()
            } else {
                allow.join(", ")
            },
            if self.slot_api.secret.is_some() {
                " + shared secret"
            } else {
                ""
            }
        );
        for ext in &self.external {
            let _ = writeln!(
                out,
                "external (HMAC)    {}/<path>?v=..  files in {}/{}{}",
                ext.prefix,
                self.upload_root.display(),
                ext.dir,
                ext.max_file_size
                    .map(|m| format!(", max_file_size {m} B"))
                    .unwrap_or_default()
            );
        }
        for share in &self.file_share {
            let _ = writeln!(
                out,
                "file_share (JWT)   {}/<slot>/<name>  files in {}/{}",
                share.prefix,
                self.upload_root.display(),
                share.dir
            );
        }
        let _ = writeln!(
            out,
            "rules (first match decides, no match = deny; patterns ignore case):"
        );
        for (i, rule) in self.rules.iter().enumerate() {
            let _ = write!(out, "  {:>2}. {} → ", i + 1, rule.pattern.as_str());
            match &rule.action {
                Action::Deny => out.push_str("deny"),
                Action::Allow(l) => {
                    out.push_str("allow");
                    if let Some(m) = l.max_file_size {
                        let _ = write!(out, ", max_file_size {m} B");
                    }
                    if let Some(m) = l.max_total_size {
                        let _ = write!(out, ", max_total_size {m} B");
                    }
                    if let Some(w) = l.bytes_per_window {
                        let _ = write!(out, ", {} B per {} s", w.amount, w.seconds);
                    }
                    if let Some(w) = l.uploads_per_window {
                        let _ = write!(out, ", {} uploads per {} s", w.amount, w.seconds);
                    }
                    if let Some(r) = l.retention {
                        let _ = write!(out, ", retention {r} s");
                    }
                }
            }
            out.push('\n');
        }
        out
    }
}

/// True when one URL prefix equals the other or contains it as a path prefix.
fn paths_overlap(a: &str, b: &str) -> bool {
    let within = |outer: &str, inner: &str| {
        inner == outer || inner.starts_with(&format!("{outer}/")) || outer.is_empty()
    };
    within(a, b) || within(b, a)
}

fn signed_prefix(at: &Locator, name: &str, raw: RawExternal) -> Result<SignedPrefix, ConfigError> {
    let key = |field: &str| format!("{name}.{field}");
    let span = raw.prefix.span();
    let prefix = prefix(at, &key("prefix"), Some(raw.prefix), "")?;
    let dir = prefix.trim_start_matches('/').to_string();
    if dir.is_empty() || crate::files::is_token(dir.split('/').next().unwrap_or("")) {
        return Err(at.error(
            &span,
            &key("prefix"),
            format!("{prefix:?} cannot hold uploads: use a named path like \"/share\""),
        ));
    }
    if raw.secret.get_ref().is_empty() {
        return Err(at.error(&raw.secret.span(), &key("secret"), "is empty"));
    }
    let max_file_size = raw
        .max_file_size
        .map(|q| size(at, &key("max_file_size"), q))
        .transpose()?;
    Ok(SignedPrefix {
        prefix,
        dir,
        secret: raw.secret.into_inner().into_bytes(),
        max_file_size,
    })
}

fn loopback() -> Vec<IpNet> {
    ["127.0.0.1/32", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

fn absolute_path(at: &Locator, key: &str, value: Spanned<PathBuf>) -> Result<PathBuf, ConfigError> {
    let span = value.span();
    let path = value.into_inner();
    if !path.is_absolute() {
        return Err(at.error(
            &span,
            key,
            format!("{} is not an absolute path", path.display()),
        ));
    }
    Ok(path)
}

fn prefix(
    at: &Locator,
    key: &str,
    value: Option<Spanned<String>>,
    default: &str,
) -> Result<String, ConfigError> {
    let Some(value) = value else {
        return Ok(default.to_string());
    };
    let span = value.span();
    let text = value.into_inner();
    let valid = text.starts_with('/')
        && !text.contains(['?', '#', '%', ' ', '\\'])
        && !text.split('/').any(|seg| seg == "." || seg == "..");
    if !valid {
        return Err(at.error(
            &span,
            key,
            format!("{text:?} must be a URL path starting with / (no query, spaces, escapes or dot segments)"),
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn slot_api_access(at: &Locator, raw: Option<RawSlotApi>) -> Result<SlotApiAccess, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SlotApiAccess {
            allow_from: loopback(),
            secret: None,
        });
    };
    let allow_from = match raw.allow_from {
        None => loopback(),
        Some(list) => {
            let mut nets = Vec::new();
            for entry in list {
                let span = entry.span();
                let text = entry.into_inner();
                let net = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        at.error(
                            &span,
                            "slot_api.allow_from",
                            format!("{text:?} is not an IP address or CIDR network"),
                        )
                    })?;
                nets.push(net);
            }
            nets
        }
    };
    let secret = match raw.secret {
        Some(secret) if secret.get_ref().len() < 16 => {
            return Err(at.error(
                &secret.span(),
                "slot_api.secret",
                "too short: use at least 16 characters",
            ));
        }
        Some(secret) => Some(secret.into_inner()),
        None => None,
    };
    if allow_from.is_empty() && secret.is_none() {
        return Err(ConfigError(format!(
            "{}: slot_api: allow_from is empty and no secret is set: anybody could request slots; \
             set one of them",
            at.file
        )));
    }
    Ok(SlotApiAccess { allow_from, secret })
}

fn rule(at: &Locator, index: usize, raw: RawRule) -> Result<Rule, ConfigError> {
    let key = |field: &str| format!("rules[{index}].{field}");
    let span = raw.pattern.span();
    // XMPP localparts and domains compare case-insensitively (JIDs are lower-cased before the
    // rules see them), so a pattern written with capitals must still match: `^Blocked@` is
    // meant to deny `blocked@`.
    let pattern = RegexBuilder::new(raw.pattern.get_ref())
        .case_insensitive(true)
        .build()
        .map_err(|e| {
            let detail = e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            at.error(
                &span,
                &key("match"),
                format!(
                    "invalid regular expression {:?}: {detail}",
                    raw.pattern.get_ref()
                ),
            )
        })?;
    let has_limits = raw.max_file_size.is_some()
        || raw.max_total_size.is_some()
        || raw.bytes_per_window.is_some()
        || raw.uploads_per_window.is_some()
        || raw.retention.is_some();
    if raw.deny {
        if has_limits {
            return Err(at.error(&span, &key("deny"), "a denying rule cannot have limits"));
        }
        return Ok(Rule {
            pattern,
            action: Action::Deny,
        });
    }
    let max_file_size = raw
        .max_file_size
        .map(|q| size(at, &key("max_file_size"), q))
        .transpose()?;
    let max_total_size = raw
        .max_total_size
        .map(|q| size(at, &key("max_total_size"), q))
        .transpose()?;
    let bytes_per_window = raw
        .bytes_per_window
        .map(|w| window(at, &key("bytes_per_window"), w, "bytes"))
        .transpose()?;
    let uploads_per_window = raw
        .uploads_per_window
        .map(|w| window(at, &key("uploads_per_window"), w, "uploads"))
        .transpose()?;
    let retention = raw
        .retention
        .map(|q| duration(at, &key("retention"), q))
        .transpose()?;
    Ok(Rule {
        pattern,
        action: Action::Allow(Limits {
            max_file_size,
            max_total_size,
            bytes_per_window,
            uploads_per_window,
            retention,
        }),
    })
}

fn window(at: &Locator, key: &str, raw: RawWindow, counts: &str) -> Result<Window, ConfigError> {
    let seconds = duration(at, &format!("{key}.window"), raw.window)?;
    let (amount, wrong) = match counts {
        "bytes" => (raw.bytes, raw.uploads),
        _ => (raw.uploads, raw.bytes),
    };
    if let Some(wrong) = wrong {
        let other = if counts == "bytes" {
            "uploads"
        } else {
            "bytes"
        };
        return Err(at.error(
            &wrong.span(),
            key,
            format!("has `{other}`; this limit counts {counts}"),
        ));
    }
    let Some(amount) = amount else {
        return Err(ConfigError(format!(
            "{}: {key}: missing `{counts}`",
            at.file
        )));
    };
    let amount = if counts == "bytes" {
        size(at, &format!("{key}.bytes"), amount)?
    } else {
        count(at, &format!("{key}.uploads"), amount)?
    };
    Ok(Window { seconds, amount })
}

fn count(at: &Locator, key: &str, q: Spanned<Quantity>) -> Result<u64, ConfigError> {
    let span = q.span();
    match q.into_inner() {
        Quantity::Number(n) if n >= 0 => Ok(n as u64),
        Quantity::Number(n) => Err(at.error(&span, key, format!("{n} is negative"))),
        Quantity::Text(t) => t
            .trim()
            .parse::<u64>()
            .map_err(|_| at.error(&span, key, format!("{t:?} is not a whole number"))),
    }
}

fn size(at: &Locator, key: &str, q: Spanned<Quantity>) -> Result<u64, ConfigError> {
    let span = q.span();
    match q.into_inner() {
        Quantity::Number(n) if n >= 0 => Ok(n as u64),
        Quantity::Number(n) => Err(at.error(&span, key, format!("{n} is negative"))),
        Quantity::Text(t) => parse_human_size(&t).map_err(|why| at.error(&span, key, why)),
    }
}

fn duration(at: &Locator, key: &str, q: Spanned<Quantity>) -> Result<u64, ConfigError> {
    let span = q.span();
    let seconds = match q.into_inner() {
        Quantity::Number(n) if n >= 0 => n as u64,
        Quantity::Number(n) => return Err(at.error(&span, key, format!("{n} is negative"))),
        Quantity::Text(t) => parse_human_duration(&t).map_err(|why| at.error(&span, key, why))?,
    };
    if seconds == 0 {
        return Err(at.error(&span, key, "must be longer than 0 seconds"));
    }
    Ok(seconds)
}

/// Parses "10 MiB", "10MB", "512 KiB", "1 GiB", "2 TB", "100 B" or "100" into bytes.
pub fn parse_human_size(text: &str) -> Result<u64, String> {
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
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses "360s", "5m", "2h", "30d", "1w", "90" (seconds) into seconds.
pub fn parse_human_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let factor: u64 = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h, d or w)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn split_number(text: &str) -> Result<(u64, &str), String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(format!("{text:?} does not start with a number"));
    }
    let number = text[..digits_end]
        .parse::<u64>()
        .map_err(|_| format!("{text:?} is too large"))?;
    Ok((number, text[digits_end..].trim()))
}

impl Config {
    /// What the user running this cannot reach of what the program needs, one line each: the
    /// upload root (read, write, enter: the program makes token directories and deletes old
    /// files there), the database's directory (write, enter: SQLite makes its `-wal`/`-shm`
    /// files beside it), the database itself if it exists, and the directories of signed
    /// prefixes that exist. `check-config` run as the program's user tells whether the program
    /// will work; run as root it proves little (root reaches everything).
    pub fn unreachable(&self) -> Vec<String> {
        use nix::unistd::{AccessFlags, access};
        let all = AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK;
        let enter_write = AccessFlags::W_OK | AccessFlags::X_OK;
        let mut problems = Vec::new();
        let mut check = |what: &str,
                         path: &Path,
                         dir: bool,
                         needs: AccessFlags,
                         must_exist: bool| {
            let shown = path.display();
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if must_exist {
                        problems.push(format!("{what} {shown} does not exist"));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => problems.push(
                    format!("{what} {shown}: this user cannot reach it (a directory above is closed to it)"),
                ),
                Err(e) => problems.push(format!("{what} {shown}: {e}")),
                Ok(meta) if meta.is_dir() != dir => problems.push(format!(
                    "{what} {shown} is not a {}",
                    if dir { "directory" } else { "file" }
                )),
                Ok(_) => {
                    if let Err(e) = access(path, needs) {
                        let wanted = if needs.contains(AccessFlags::R_OK | AccessFlags::X_OK) {
                            "read, write and enter"
                        } else if needs.contains(AccessFlags::X_OK) {
                            "write and enter"
                        } else {
                            "read and write"
                        };
                        problems.push(format!(
                            "{what} {shown}: this user cannot {wanted} it ({})",
                            e.desc()
                        ));
                    }
                }
            }
        };
        check("upload_root", &self.upload_root, true, all, true);
        // PostgreSQL: nothing on this host to reach (connecting is `Store::open`'s to try).
        if let Some(database) = self.database.sqlite_path() {
            let db_dir = match database.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            check("the database's directory", db_dir, true, enter_write, true);
            check(
                "database",
                database,
                false,
                AccessFlags::R_OK | AccessFlags::W_OK,
                false,
            );
        }
        for signed in self.external.iter().chain(&self.file_share) {
            let dir = self.upload_root.join(&signed.dir);
            check(
                &format!("the directory of {}", signed.prefix),
                &dir,
                true,
                all,
                false,
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "upload_root = \"/srv/up\"\ndatabase = \"/srv/db.sqlite3\"\n";

    #[test]
    fn shipped_example_is_valid() {
        let c = Config::parse(
            include_str!("../config.example.toml"),
            "config.example.toml",
        )
        .unwrap();
        assert_eq!(c.rules.len(), 4);
        assert_eq!(c.rules[1].action, Action::Deny);
    }

    #[test]
    fn external_prefixes() {
        let text = format!(
            "{MINIMAL}[[external]]\nprefix = \"/share/\"\nsecret = \"s\"\nmax_file_size = \"1 MiB\"\n"
        );
        let c = Config::parse(&text, "c.toml").unwrap();
        assert_eq!(c.external[0].prefix, "/share");
        assert_eq!(c.external[0].dir, "share");
        assert_eq!(c.external[0].max_file_size, Some(1 << 20));
        assert!(!format!("{:?}", c.external[0]).contains("\"s\""));
        let clash = format!("{MINIMAL}[[external]]\nprefix = \"/upload/x\"\nsecret = \"s\"\n");
        assert!(
            Config::parse(&clash, "c.toml")
                .unwrap_err()
                .0
                .contains("overlaps")
        );
        let empty = format!("{MINIMAL}[[external]]\nprefix = \"/share\"\nsecret = \"\"\n");
        assert!(
            Config::parse(&empty, "c.toml")
                .unwrap_err()
                .0
                .starts_with("c.toml:5: external[0].secret")
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_human_size("10 MiB").unwrap(), 10 << 20);
        assert_eq!(parse_human_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_human_size("7").unwrap(), 7);
        assert!(parse_human_size("10 M").is_err());
        assert!(parse_human_size("-1").is_err());
        assert!(parse_human_size("99999999999 TiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_human_duration("360s").unwrap(), 360);
        assert_eq!(parse_human_duration("5m").unwrap(), 300);
        assert_eq!(parse_human_duration("30 d").unwrap(), 30 * 86_400);
        assert!(parse_human_duration("soon").is_err());
        assert!(parse_human_duration("3y").is_err());
    }

    #[test]
    fn defaults() {
        let c = Config::parse(MINIMAL, "c.toml").unwrap();
        assert_eq!(c.put_timeout, 360);
        assert_eq!(c.retention, 30 * 86_400);
        assert_eq!(c.slot_prefix, "/http_upload");
        assert_eq!(c.get_prefix, "/upload");
        assert_eq!(c.slot_api.allow_from.len(), 2);
        assert!(c.rules.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::parse(&format!("{MINIMAL}\nput_timout = 3\n"), "c.toml").unwrap_err();
        assert!(e.0.starts_with("c.toml:4:"), "{e}");
        assert!(e.0.contains("put_timout"), "{e}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = Config::parse(
            &format!("{MINIMAL}webserver_download = \"yes\"\n"),
            "c.toml",
        )
        .unwrap_err();
        assert!(e.0.starts_with("c.toml:3: webserver_download:"), "{e}");
    }

    #[test]
    fn bad_regex_names_rule_and_line() {
        let text = format!("{MINIMAL}[[rules]]\nmatch = \"(\"\n");
        let e = Config::parse(&text, "c.toml").unwrap_err();
        assert!(e.0.starts_with("c.toml:4: rules[0].match"), "{e}");
    }

    #[test]
    fn bad_size_and_duration() {
        let text = format!("{MINIMAL}[[rules]]\nmatch = \"x\"\nmax_file_size = \"ten\"\n");
        let e = Config::parse(&text, "c.toml").unwrap_err();
        assert!(e.0.starts_with("c.toml:5: rules[0].max_file_size"), "{e}");
        let e = Config::parse(&format!("{MINIMAL}retention = \"-3d\"\n"), "c.toml").unwrap_err();
        assert!(e.0.starts_with("c.toml:3: retention"), "{e}");
    }

    #[test]
    fn windows_and_deny() {
        let text = format!(
            "{MINIMAL}[[rules]]\nmatch = \"a\"\nbytes_per_window = {{ window = \"1h\", bytes = \"1 MiB\" }}\n\
             uploads_per_window = {{ window = \"1h\", uploads = 3 }}\n[[rules]]\nmatch = \".*\"\ndeny = true\n"
        );
        let c = Config::parse(&text, "c.toml").unwrap();
        assert_eq!(
            c.rules[0].action,
            Action::Allow(Limits {
                bytes_per_window: Some(Window {
                    seconds: 3600,
                    amount: 1 << 20
                }),
                uploads_per_window: Some(Window {
                    seconds: 3600,
                    amount: 3
                }),
                ..Limits::default()
            })
        );
        assert_eq!(c.rules[1].action, Action::Deny);
        let text = format!("{MINIMAL}[[rules]]\nmatch = \"a\"\ndeny = true\nmax_file_size = 3\n");
        assert!(Config::parse(&text, "c.toml").is_err());
    }

    #[test]
    fn patterns_ignore_case() {
        let text = format!("{MINIMAL}[[rules]]\nmatch = '^Blocked@Example\\.org$'\ndeny = true\n");
        let c = Config::parse(&text, "c.toml").unwrap();
        for jid in [
            "blocked@example.org",
            "BLOCKED@EXAMPLE.ORG",
            "Blocked@example.org",
        ] {
            assert!(c.rules[0].pattern.is_match(jid), "{jid}");
        }
        assert!(c.describe().contains("patterns ignore case"));
    }

    #[test]
    fn a_slot_api_without_secret_is_warned_about() {
        let open = Config::parse(MINIMAL, "c.toml").unwrap();
        assert!(open.warnings().iter().any(|w| w.contains("loopback")));
        let tcp = format!(
            "listen = \"127.0.0.1:9000\"\n{MINIMAL}[slot_api]\nallow_from = [\"192.0.2.1\"]\n"
        );
        let tcp = Config::parse(&tcp, "c.toml").unwrap();
        let warnings = tcp.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("TCP"), "{warnings:?}");
        let guarded = format!("{MINIMAL}[slot_api]\nsecret = \"0123456789abcdef0123\"\n");
        assert!(
            Config::parse(&guarded, "c.toml")
                .unwrap()
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn open_slot_api_is_refused() {
        let text = format!("{MINIMAL}[slot_api]\nallow_from = []\n");
        assert!(Config::parse(&text, "c.toml").is_err());
        let text =
            format!("{MINIMAL}[slot_api]\nallow_from = []\nsecret = \"0123456789abcdefgh\"\n");
        assert!(Config::parse(&text, "c.toml").is_ok());
    }

    #[test]
    fn prefixes_and_base_url() {
        let text =
            format!("{MINIMAL}put_prefix = \"/up/\"\nbase_url = \"https://h.example:8443/\"\n");
        let c = Config::parse(&text, "c.toml").unwrap();
        assert_eq!(c.put_prefix, "/up");
        assert_eq!(c.base_url.as_deref(), Some("https://h.example:8443"));
        assert!(Config::parse(&format!("{MINIMAL}put_prefix = \"up\"\n"), "c").is_err());
        assert!(Config::parse(&format!("{MINIMAL}base_url = \"ftp://h\"\n"), "c").is_err());
    }

    #[test]
    fn workers_between_2_and_1024() {
        let c = Config::parse(&format!("{MINIMAL}workers = 16\n"), "c.toml").unwrap();
        assert_eq!(c.workers, Some(16));
        assert_eq!(Config::parse(MINIMAL, "c.toml").unwrap().workers, None);
        let e = Config::parse(&format!("{MINIMAL}workers = 1\n"), "c.toml").unwrap_err();
        assert_eq!(e.0, "c.toml:3: workers: 1 is not between 2 and 1024");
        assert!(Config::parse(&format!("{MINIMAL}workers = -3\n"), "c.toml").is_err());
    }
}
