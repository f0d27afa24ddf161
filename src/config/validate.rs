//! From the TOML shape (`raw`) to the validated `Config`: one function per key or table, each
//! naming the key and line of what it refuses. Defaults are set here. Reads the file and
//! nothing else of the system (`reach` checks what the config names, for `check-config`).

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use toml::Spanned;

use super::error::{ConfigError, Locator};
use super::human::{parse_human_duration, parse_human_size};
use super::raw::{Quantity, RawConfig, RawRule, RawSignedPrefix, RawSlotApi, RawWindow};
use super::{
    Config, DEFAULT_PUT_TIMEOUT, DEFAULT_RETENTION, Downloads, ListenAddress, SignedPrefix,
    SlotApiAccess,
};
use crate::rules::{Action, Limits, Pattern, Rule, Window};

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::whole_file(&file, format!("cannot read this configuration: {e}"))
        })?;
        Config::parse(&source, &file)
    }

    /// Validates configuration text; `file` names it in messages.
    pub fn parse(source: &str, file: &str) -> Result<Config, ConfigError> {
        let at = Locator { file, source };
        let raw: RawConfig = toml::from_str(source).map_err(|e| at.toml_error(&e))?;

        let upload_root = absolute_path(&at, "upload_root", raw.upload_root)?;
        let database = database(&at, raw.database)?;
        let base_url = raw.base_url.map(|url| base_url(&at, url)).transpose()?;
        let slot_prefix = prefix(&at, "slot_prefix", raw.slot_prefix, "/http_upload")?;
        let put_prefix = prefix(&at, "put_prefix", raw.put_prefix, "/upload")?;
        let get_prefix = prefix(&at, "get_prefix", raw.get_prefix, &put_prefix)?;
        let put_timeout = raw
            .put_timeout
            .map(|q| duration(&at, "put_timeout", q))
            .transpose()?
            .unwrap_or(DEFAULT_PUT_TIMEOUT);
        let retention = raw
            .retention
            .map(|q| duration(&at, "retention", q))
            .transpose()?
            .unwrap_or(DEFAULT_RETENTION);
        let downloads = match raw.webserver_download {
            Some(false) => Downloads::Program,
            // The shipped nginx, Apache and shared-hosting configurations serve GETs themselves.
            Some(true) | None => Downloads::WebServer,
        };
        let workers = raw.workers.map(|w| workers(&at, w)).transpose()?;
        let slot_api = slot_api_access(&at, raw.slot_api)?;
        let rules = raw
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, r)| rule(&at, index, r))
            .collect::<Result<Vec<_>, _>>()?;
        let signed = |table: &str, entries: Vec<RawSignedPrefix>| {
            entries
                .into_iter()
                .enumerate()
                .map(|(index, raw)| signed_prefix(&at, &format!("{table}[{index}]"), raw))
                .collect::<Result<Vec<_>, _>>()
        };
        let external = signed("external", raw.external)?;
        let file_share = signed("file_share", raw.file_share)?;
        let config = Config {
            upload_root,
            database,
            base_url,
            slot_prefix,
            put_prefix,
            get_prefix,
            put_timeout,
            retention,
            downloads,
            listen: raw.listen.map(|l| listen(&at, l)).transpose()?,
            workers,
            slot_api,
            rules,
            external,
            file_share,
        };
        prefixes_apart(&at, &config)?;
        Ok(config)
    }
}

/// Each signed prefix must own its URLs: it may neither hold nor lie inside another prefix.
fn prefixes_apart(at: &Locator, config: &Config) -> Result<(), ConfigError> {
    let mut taken = vec![
        config.slot_prefix.clone(),
        config.put_prefix.clone(),
        config.get_prefix.clone(),
    ];
    let keyed = (config.external.iter().enumerate())
        .map(|(i, s)| (format!("external[{i}].prefix"), s))
        .chain(
            (config.file_share.iter().enumerate())
                .map(|(i, s)| (format!("file_share[{i}].prefix"), s)),
        );
    for (key, signed) in keyed {
        if let Some(other) = taken.iter().find(|p| paths_overlap(p, &signed.prefix)) {
            return Err(at.key_error(
                &key,
                format!(
                    "{:?} overlaps {other:?}; each protocol needs its own prefix",
                    signed.prefix
                ),
            ));
        }
        taken.push(signed.prefix.clone());
    }
    Ok(())
}

/// True when one URL prefix equals the other or contains it as a path prefix.
fn paths_overlap(a: &str, b: &str) -> bool {
    let within = |outer: &str, inner: &str| {
        inner == outer || inner.starts_with(&format!("{outer}/")) || outer.is_empty()
    };
    within(a, b) || within(b, a)
}

/// `database`: where the uploads' records are kept: an absolute path of an SQLite file, or a
/// `postgres://` URL (`store::Location`).
fn database(at: &Locator, value: Spanned<String>) -> Result<crate::store::Location, ConfigError> {
    crate::store::Location::parse(value.get_ref())
        .map_err(|e| at.error(&value.span(), "database", e))
}

fn absolute_path(at: &Locator, key: &str, value: Spanned<PathBuf>) -> Result<PathBuf, ConfigError> {
    let span = value.span();
    let path = value.into_inner();
    if !path.is_absolute() {
        let why = format!("{} is not an absolute path", path.display());
        return Err(at.error(&span, key, why));
    }
    Ok(path)
}

/// `base_url`: `http(s)://host[:port]`, kept without a trailing `/`.
fn base_url(at: &Locator, url: Spanned<String>) -> Result<String, ConfigError> {
    let span = url.span();
    let url = url.into_inner();
    let trimmed = url.trim_end_matches('/');
    let host = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"));
    match host {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => {
            Ok(trimmed.to_string())
        }
        _ => Err(at.error(
            &span,
            "base_url",
            format!("{url:?} is not http(s)://host[:port] (no path; prefixes are set apart)"),
        )),
    }
}

/// A URL path prefix, kept without a trailing `/`; `default` when the key is absent.
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

/// `listen`: `host:port` or `unix:/path`, parsed here once.
fn listen(at: &Locator, value: Spanned<String>) -> Result<ListenAddress, ConfigError> {
    ListenAddress::parse(value.get_ref()).map_err(|why| at.error(&value.span(), "listen", why))
}

fn workers(at: &Locator, value: Spanned<i64>) -> Result<usize, ConfigError> {
    match usize::try_from(*value.get_ref()) {
        Ok(n) if (2..=1024).contains(&n) => Ok(n),
        _ => {
            let why = format!("{} is not between 2 and 1024", value.get_ref());
            Err(at.error(&value.span(), "workers", why))
        }
    }
}

fn loopback() -> Vec<IpNet> {
    ["127.0.0.1/32", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `[slot_api]`; absent: loopback callers, no secret.
fn slot_api_access(at: &Locator, raw: Option<RawSlotApi>) -> Result<SlotApiAccess, ConfigError> {
    let Some(raw) = raw else {
        return Ok(SlotApiAccess {
            allow_from: loopback(),
            secret: None,
        });
    };
    let allow_from = match raw.allow_from {
        None => loopback(),
        Some(list) => list
            .into_iter()
            .map(|entry| {
                let text = entry.get_ref();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        let why = format!("{text:?} is not an IP address or CIDR network");
                        at.error(&entry.span(), "slot_api.allow_from", why)
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let secret = match raw.secret {
        Some(secret) if secret.get_ref().len() < 16 => {
            let why = "too short: use at least 16 characters";
            return Err(at.error(&secret.span(), "slot_api.secret", why));
        }
        Some(secret) => Some(secret.into_inner()),
        None => None,
    };
    if allow_from.is_empty() && secret.is_none() {
        return Err(at.key_error(
            "slot_api",
            "allow_from is empty and no secret is set: anybody could request slots; set one of them",
        ));
    }
    Ok(SlotApiAccess { allow_from, secret })
}

/// One `[[external]]` / `[[file_share]]` entry, `name` being `external[0]` and the like.
fn signed_prefix(
    at: &Locator,
    name: &str,
    raw: RawSignedPrefix,
) -> Result<SignedPrefix, ConfigError> {
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

/// One `[[rules]]` entry, the `index`th.
fn rule(at: &Locator, index: usize, raw: RawRule) -> Result<Rule, ConfigError> {
    let key = |field: &str| format!("rules[{index}].{field}");
    let span = raw.pattern.span();
    // Checked now, compiled on first use (`rules::Pattern`: a CGI process compiles only
    // the rules it reaches).
    let pattern = Pattern::new(raw.pattern.get_ref()).map_err(|text| {
        let detail = text.lines().last().unwrap_or("").trim();
        let why = format!(
            "invalid regular expression {:?}: {detail}",
            raw.pattern.get_ref()
        );
        at.error(&span, &key("match"), why)
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
    let sized =
        |q: Option<Spanned<Quantity>>, field: &str| q.map(|q| size(at, &key(field), q)).transpose();
    let windowed = |w: Option<RawWindow>, field: &str, counts: Counts| {
        w.map(|w| window(at, &key(field), w, counts)).transpose()
    };
    Ok(Rule {
        pattern,
        action: Action::Allow(Limits {
            max_file_size: sized(raw.max_file_size, "max_file_size")?,
            max_total_size: sized(raw.max_total_size, "max_total_size")?,
            bytes_per_window: windowed(raw.bytes_per_window, "bytes_per_window", Counts::Bytes)?,
            uploads_per_window: windowed(
                raw.uploads_per_window,
                "uploads_per_window",
                Counts::Uploads,
            )?,
            retention: raw
                .retention
                .map(|q| duration(at, &key("retention"), q))
                .transpose()?,
        }),
    })
}

/// What a window limit counts: `bytes_per_window` bytes, `uploads_per_window` uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counts {
    Bytes,
    Uploads,
}

impl Counts {
    /// The key of the amount in the window's table.
    fn key(self) -> &'static str {
        match self {
            Counts::Bytes => "bytes",
            Counts::Uploads => "uploads",
        }
    }
}

fn window(at: &Locator, key: &str, raw: RawWindow, counts: Counts) -> Result<Window, ConfigError> {
    let seconds = duration(at, &format!("{key}.window"), raw.window)?;
    let (amount, wrong, other) = match counts {
        Counts::Bytes => (raw.bytes, raw.uploads, Counts::Uploads),
        Counts::Uploads => (raw.uploads, raw.bytes, Counts::Bytes),
    };
    if let Some(wrong) = wrong {
        let why = format!("has `{}`; this limit counts {}", other.key(), counts.key());
        return Err(at.error(&wrong.span(), key, why));
    }
    let Some(amount) = amount else {
        return Err(at.key_error(key, format!("missing `{}`", counts.key())));
    };
    let amount_key = format!("{key}.{}", counts.key());
    let amount = match counts {
        Counts::Bytes => size(at, &amount_key, amount)?,
        Counts::Uploads => count(at, &amount_key, amount)?,
    };
    Ok(Window { seconds, amount })
}

fn count(at: &Locator, key: &str, q: Spanned<Quantity>) -> Result<u64, ConfigError> {
    let span = q.span();
    match q.into_inner() {
        Quantity::Number(n) => {
            u64::try_from(n).map_err(|_| at.error(&span, key, format!("{n} is negative")))
        }
        Quantity::Text(t) => t
            .trim()
            .parse::<u64>()
            .map_err(|_| at.error(&span, key, format!("{t:?} is not a whole number"))),
    }
}

fn size(at: &Locator, key: &str, q: Spanned<Quantity>) -> Result<u64, ConfigError> {
    let span = q.span();
    match q.into_inner() {
        Quantity::Number(n) => {
            u64::try_from(n).map_err(|_| at.error(&span, key, format!("{n} is negative")))
        }
        Quantity::Text(t) => parse_human_size(&t).map_err(|why| at.error(&span, key, why)),
    }
}

/// A duration in seconds, longer than 0: the one conversion of time in the program.
fn duration(at: &Locator, key: &str, q: Spanned<Quantity>) -> Result<i64, ConfigError> {
    let span = q.span();
    let seconds = match q.into_inner() {
        Quantity::Number(n) if n < 0 => {
            return Err(at.error(&span, key, format!("{n} is negative")));
        }
        Quantity::Number(n) => n,
        Quantity::Text(t) => parse_human_duration(&t).map_err(|why| at.error(&span, key, why))?,
    };
    if seconds == 0 {
        return Err(at.error(&span, key, "must be longer than 0 seconds"));
    }
    Ok(seconds)
}
