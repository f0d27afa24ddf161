//! What `check-config` prints of a valid `Config`: each setting as the program understood it,
//! one line each, in seconds and bytes (no secrets). Deciding what is valid is `validate`'s.

use std::fmt::Write as _;

use super::{Config, Downloads};
use crate::rules::Action;

impl Config {
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
        let downloads = match self.downloads {
            Downloads::WebServer => {
                "true (the web server serves GET URLs; the program refuses them)"
            }
            Downloads::Program => "false (the program serves GET URLs)",
        };
        let _ = writeln!(out, "webserver_download {downloads}");
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
