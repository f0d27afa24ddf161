//! What `check-config` compares with the web server in front of the program: a `max_file_size`
//! (or none, which is any size) above the largest PUT body the web server lets through grants
//! slots whose upload the web server then refuses with its own 413 — the client was promised a
//! slot it can never use. The limits are read from the web-server files we ship, where they are
//! installed (nginx's files snippet, the Apache site, the shared-hosting `.htaccess` files beside
//! `upload_root`); where none is, the shipped values are assumed. Reads files only, changes
//! nothing; which web server is really in front is not known here, hence "the web server".

use std::path::{Path, PathBuf};

use super::Config;
use crate::rules::Action;

/// Where the Debian package (and INSTALL.md) puts nginx's snippet for the file locations.
pub const NGINX_FILES_SNIPPET: &str = "/etc/nginx/snippets/xmpp-http-upload-files.conf";
/// Where the Debian package (and INSTALL.md) puts the Apache site.
pub const APACHE_SITE: &str = "/etc/apache2/sites-available/xmpp-http-upload.conf";
/// The body limit of the shipped nginx snippet (`client_max_body_size 1g`) and of the shipped
/// Apache site (`LimitRequestBody 1073741824`); also Apache's own default since 2.4.54, which
/// the shared-hosting `.htaccess` files (setting none) get. A unit test keeps it in step with
/// nginx/ and apache/.
pub const SHIPPED_BODY_LIMIT: u64 = 1 << 30;

/// One place that limits PUT bodies: what it says, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyLimit {
    /// The largest body in bytes; `None`: no limit (`0` in both servers' syntax).
    pub bytes: Option<u64>,
    /// The directive as the admin would look for it (`client_max_body_size 1g`).
    pub directive: String,
    /// The file to change.
    pub file: PathBuf,
    /// True when the file was read; false when the shipped value is assumed.
    pub read: bool,
}

impl Config {
    /// The PUT body limits of the web servers this configuration may sit behind, read from the
    /// installed files at `nginx_snippet` and `apache_site` and from the shared-hosting
    /// `.htaccess` files around `upload_root` (`public_html/.htaccess` and
    /// `public_html/xmpp-http-upload/.htaccess`, the later winning, as Apache merges them).
    /// Where none of them exists, the shipped nginx and Apache values are assumed.
    pub fn web_server_body_limits(
        &self,
        nginx_snippet: &Path,
        apache_site: &Path,
    ) -> Vec<BodyLimit> {
        let mut limits = Vec::new();
        if let Ok(text) = std::fs::read_to_string(nginx_snippet) {
            limits.push(nginx_limit(&text, nginx_snippet));
        }
        if let Ok(text) = std::fs::read_to_string(apache_site) {
            limits.push(
                apache_limit(&text, apache_site).unwrap_or_else(|| BodyLimit {
                    bytes: Some(SHIPPED_BODY_LIMIT),
                    directive: "LimitRequestBody (not set: Apache's default, 1073741824)".into(),
                    file: apache_site.to_path_buf(),
                    read: true,
                }),
            );
        }
        if let Some(public_html) = self.upload_root.parent() {
            let top = public_html.join(".htaccess");
            let cgi = public_html.join("xmpp-http-upload/.htaccess");
            if let Ok(text) = std::fs::read_to_string(&top) {
                let cgi_limit = std::fs::read_to_string(&cgi)
                    .ok()
                    .and_then(|text| apache_limit(&text, &cgi));
                limits.push(
                    cgi_limit
                        .or_else(|| apache_limit(&text, &top))
                        .unwrap_or(BodyLimit {
                            bytes: Some(SHIPPED_BODY_LIMIT),
                            directive: "LimitRequestBody (not set: Apache's default, 1073741824)"
                                .into(),
                            file: top,
                            read: true,
                        }),
                );
            }
        }
        if limits.is_empty() {
            limits.push(BodyLimit {
                bytes: Some(SHIPPED_BODY_LIMIT),
                directive: "client_max_body_size 1g".into(),
                file: PathBuf::from(NGINX_FILES_SNIPPET),
                read: false,
            });
            limits.push(BodyLimit {
                bytes: Some(SHIPPED_BODY_LIMIT),
                directive: format!("LimitRequestBody {SHIPPED_BODY_LIMIT}"),
                file: PathBuf::from(APACHE_SITE),
                read: false,
            });
        }
        limits
    }

    /// One line for each allowing rule and `[[external]]` prefix whose `max_file_size` (or its
    /// absence: any size) is above one of `limits`, naming both numbers and the file to change.
    /// `[[file_share]]` entries without one are left out: the rules apply to JWT uploads too.
    pub fn body_limit_warnings(&self, limits: &[BodyLimit]) -> Vec<String> {
        let mut entries: Vec<(String, Option<u64>)> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if let Action::Allow(l) = &rule.action {
                entries.push((
                    format!("rules[{i}] ({:?})", rule.pattern.as_str()),
                    l.max_file_size,
                ));
            }
        }
        for (i, ext) in self.external.iter().enumerate() {
            entries.push((format!("external[{i}] ({})", ext.prefix), ext.max_file_size));
        }
        for (i, share) in self.file_share.iter().enumerate() {
            if share.max_file_size.is_some() {
                entries.push((
                    format!("file_share[{i}] ({})", share.prefix),
                    share.max_file_size,
                ));
            }
        }
        let mut warnings = Vec::new();
        for (entry, max) in entries {
            let over: Vec<String> = limits
                .iter()
                .filter_map(|limit| {
                    let bytes = limit.bytes?;
                    max.is_none_or(|max| max > bytes).then(|| {
                        format!(
                            "{bytes} bytes (`{}` in {}{})",
                            limit.directive,
                            limit.file.display(),
                            if limit.read { "" } else { ", as shipped" }
                        )
                    })
                })
                .collect();
            if over.is_empty() {
                continue;
            }
            let wanted = match max {
                Some(max) => format!("max_file_size {max} bytes"),
                None => "no max_file_size (any size)".to_string(),
            };
            warnings.push(format!(
                "{entry} grants slots with {wanted}, but the web server takes PUTs of at most {}, \
                 and refuses larger ones with 413 after the slot was given: raise the limit there \
                 or lower max_file_size",
                over.join(" or ")
            ));
        }
        warnings
    }
}

/// The last `client_max_body_size` at the top level of the files snippet (the one that holds
/// in the file locations); the shipped value when the snippet sets none (nginx's own default,
/// 1m, would then hold — but the snippet we ship sets it, and an edit that drops it is odd
/// enough to be told as the shipped value's file).
fn nginx_limit(text: &str, file: &Path) -> BodyLimit {
    let value = directive_values(text, "client_max_body_size", ';')
        .last()
        .cloned();
    match value {
        Some(value) => BodyLimit {
            bytes: nginx_size(&value).unwrap_or(Some(SHIPPED_BODY_LIMIT)),
            directive: format!("client_max_body_size {value}"),
            file: file.to_path_buf(),
            read: true,
        },
        None => BodyLimit {
            bytes: Some(1 << 20),
            directive: "client_max_body_size (not set: nginx's default, 1m)".into(),
            file: file.to_path_buf(),
            read: true,
        },
    }
}

/// The last `LimitRequestBody` of an Apache file, if any.
fn apache_limit(text: &str, file: &Path) -> Option<BodyLimit> {
    let value = directive_values(text, "LimitRequestBody", '\n')
        .last()?
        .clone();
    let bytes: u64 = value.parse().ok()?;
    Some(BodyLimit {
        bytes: (bytes != 0).then_some(bytes),
        directive: format!("LimitRequestBody {value}"),
        file: file.to_path_buf(),
        read: true,
    })
}

/// The values of `name` in `text`, one per line that starts with it (comments and leading
/// blanks skipped), up to `end`.
fn directive_values(text: &str, name: &str, end: char) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            rest.starts_with([' ', '\t']).then(|| {
                let value = rest.split(end).next().unwrap_or("");
                value.split('#').next().unwrap_or("").trim().to_string()
            })
        })
        .collect()
}

/// nginx's size syntax: digits with an optional k, m or g (either case); `0` is no limit
/// (`Some(None)`). `None`: not a size.
fn nginx_size(text: &str) -> Option<Option<u64>> {
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, ' '),
    };
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        ' ' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return None,
    };
    Some((n != 0).then(|| n.saturating_mul(factor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_files_let_through_the_shipped_limit() {
        let nginx = nginx_limit(
            include_str!("../../nginx/snippets/xmpp-http-upload-files.conf"),
            Path::new("files.conf"),
        );
        assert_eq!(nginx.bytes, Some(SHIPPED_BODY_LIMIT), "{nginx:?}");
        let apache = apache_limit(
            include_str!("../../apache/xmpp-http-upload.conf"),
            Path::new("site.conf"),
        );
        assert_eq!(apache.and_then(|l| l.bytes), Some(SHIPPED_BODY_LIMIT));
        // The shared-hosting files set none: Apache's default holds.
        for text in [
            include_str!("../../apache/shared-hosting/.htaccess"),
            include_str!("../../apache/shared-hosting/xmpp-http-upload/.htaccess"),
        ] {
            assert_eq!(apache_limit(text, Path::new(".htaccess")), None);
        }
    }

    #[test]
    fn nginx_sizes() {
        assert_eq!(nginx_size("1g"), Some(Some(1 << 30)));
        assert_eq!(nginx_size("512M"), Some(Some(512 << 20)));
        assert_eq!(nginx_size("100k"), Some(Some(100 << 10)));
        assert_eq!(nginx_size("12345"), Some(Some(12345)));
        assert_eq!(nginx_size("0"), Some(None));
        assert_eq!(nginx_size("1t"), None);
        assert_eq!(nginx_size("g"), None);
        assert_eq!(nginx_size(""), None);
    }

    #[test]
    fn directives_in_comments_do_not_count() {
        let text = "# client_max_body_size 5g;\n  client_max_body_size 2g; # big\n";
        assert_eq!(nginx_limit(text, Path::new("f")).bytes, Some(2 << 30));
        let text = "LimitRequestBody 0\n#LimitRequestBody 5\n";
        assert_eq!(
            apache_limit(text, Path::new("f")).map(|l| l.bytes),
            Some(None)
        );
    }
}
