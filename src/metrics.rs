//! `GET <slot_prefix>/metrics`: the counters and stored totals in Prometheus' text format, for
//! the callers the slot API admits. The counters live in the database (`store::Tally`,
//! `Store::count`), so every process serving it and every restart add to the same numbers;
//! this module names them, labels refusals, and renders. Counts wait in memory only until the
//! writer's next commit (`group_commit`), and the endpoint commits them before it reads.

use std::fmt::Write as _;

use crate::App;
use crate::refusal::{Outcome, Refusal};
use crate::request::Response;

/// Every metric's name starts with this.
const PREFIX: &str = "xmpp_http_upload_";

/// Slot requests refused, by `reason`.
pub const SLOTS_REFUSED: &str = "slots_refused_total";
/// PUTs refused, by `protocol` and `reason`.
pub const PUTS_REFUSED: &str = "puts_refused_total";
/// Cleanup runs, by `result` (`ok`, `failed`).
pub const CLEANUP_RUNS: &str = "cleanup_runs_total";

/// The counters, in output order: name, help, and whether it has labels (a counter without
/// labels is shown as 0 before its first count).
const COUNTERS: &[(&str, &str, bool)] = &[
    (
        "slots_granted_total",
        "Slots handed out by the slot API.",
        false,
    ),
    (
        SLOTS_REFUSED,
        "Slot requests refused, by reason (the HTTP status's name).",
        true,
    ),
    (
        "puts_allowed_total",
        "PUTs allowed, by protocol (slot, hmac, jwt).",
        true,
    ),
    (
        PUTS_REFUSED,
        "PUTs refused, by protocol (slot, hmac, jwt) and reason.",
        true,
    ),
    (CLEANUP_RUNS, "Cleanup runs, by result (ok, failed).", true),
];

/// A label value as the exposition format wants it: `\`, `"` and newline escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A rendered label set from `(name, value)` pairs: `a="x",b="y"`.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Counts a refusal of a slot request (`protocol: None`) or of a PUT of `protocol`, written
/// with the writer's next batch. A failure to count is logged, never turned into the request's answer.
pub fn count_refusal(app: &App, protocol: Option<&str>, refusal: &Refusal) {
    let reason = refusal.kind.label();
    let (name, set) = match protocol {
        None => (SLOTS_REFUSED, labels(&[("reason", reason)])),
        Some(protocol) => (
            PUTS_REFUSED,
            labels(&[("protocol", protocol), ("reason", reason)]),
        ),
    };
    if let Err(e) = app.store.count(name, &set) {
        log::warn!("counting a refusal: {e}");
    }
}

/// Counts one cleanup run; a failure to count is logged.
pub fn count_cleanup(app: &App, ok: bool) {
    let set = labels(&[("result", if ok { "ok" } else { "failed" })]);
    if let Err(e) = app.store.count(CLEANUP_RUNS, &set) {
        log::warn!("counting a cleanup run: {e}");
    }
}

/// `GET <slot_prefix>/metrics`: 200 with the text format (`route` has admitted the caller as
/// for the slot API).
pub fn serve(app: &App) -> Result<Response, Outcome> {
    let counters = app.store.counters()?;
    let stored = app.store.stored()?;
    let mut out = String::new();
    for &(name, help, labelled) in COUNTERS {
        let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
        let _ = writeln!(out, "# TYPE {PREFIX}{name} counter");
        let mut any = false;
        for (_, set, value) in counters.iter().filter(|(n, _, _)| n == name) {
            any = true;
            if set.is_empty() {
                let _ = writeln!(out, "{PREFIX}{name} {value}");
            } else {
                let _ = writeln!(out, "{PREFIX}{name}{{{set}}} {value}");
            }
        }
        if !any && !labelled {
            let _ = writeln!(out, "{PREFIX}{name} 0");
        }
    }
    let gauges = [
        (
            "files_stored",
            "Files stored or landing (PUT allowed, not yet removed), by protocol.",
            0,
        ),
        (
            "bytes_stored",
            "Bytes of the files stored or landing (declared sizes), by protocol.",
            1,
        ),
    ];
    for (name, help, field) in gauges {
        let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
        let _ = writeln!(out, "# TYPE {PREFIX}{name} gauge");
        for (protocol, totals) in ["slot", "jwt", "hmac"].iter().zip(stored) {
            let value = if field == 0 { totals.0 } else { totals.1 };
            let set = labels(&[("protocol", protocol)]);
            let _ = writeln!(out, "{PREFIX}{name}{{{set}}} {value}");
        }
    }
    Ok(Response::text(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(
            labels(&[("protocol", "slot"), ("reason", "gone")]),
            r#"protocol="slot",reason="gone""#
        );
    }
}
