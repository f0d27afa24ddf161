//! Access rules and quota arithmetic (BEHAVIOUR.md §4): which rule decides for a JID, and whether a new
//! upload of a given size fits the rule's limits given what the JID already used.
//!
//! Pure: the usage figures come from `store`, which runs this check inside the same
//! `BEGIN IMMEDIATE` transaction that records the slot.

use regex::Regex;

use crate::refusal::{Refusal, RefusalKind};

/// One entry of the ordered rule list: a pattern searched in the JID, and what it decides.
#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: Regex,
    pub action: Action,
}

/// What a matching rule decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deny,
    Allow(Limits),
}

/// The limits of an allowing rule; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_file_size: Option<u64>,
    pub max_total_size: Option<u64>,
    pub bytes_per_window: Option<Window>,
    pub uploads_per_window: Option<Window>,
    /// How long this rule's uploads are kept, in seconds, recorded with each slot at upload;
    /// `None`: the global `retention`, as it stands when cleanup runs.
    pub retention: Option<i64>,
}

/// "At most `amount` (bytes or uploads) within any `seconds` long window ending now".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub seconds: i64,
    pub amount: u64,
}

/// What a JID already holds, as counted by `store` (uploads and unexpired unused slots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub total_bytes: u64,
    pub window_bytes: u64,
    pub window_uploads: u64,
}

/// The first rule whose pattern matches somewhere in `jid` (search, not full match).
pub fn first_match<'a>(rules: &'a [Rule], jid: &str) -> Option<&'a Rule> {
    rules.iter().find(|rule| rule.pattern.is_match(jid))
}

/// The limits that apply to `jid`, or the refusal when no rule allows it.
pub fn limits_for<'a>(rules: &'a [Rule], jid: &str) -> Result<&'a Limits, Refusal> {
    match first_match(rules, jid) {
        Some(Rule {
            action: Action::Allow(limits),
            ..
        }) => Ok(limits),
        Some(rule) => Err(Refusal::forbidden(format!(
            "{jid} may not upload (rule {:?})",
            rule.pattern.as_str()
        ))),
        None => Err(Refusal::forbidden(format!(
            "{jid} may not upload (no rule matches)"
        ))),
    }
}

/// 413 when one file of `size` bytes is over the rule's `max_file_size`.
pub fn check_file_size(limits: &Limits, size: u64) -> Result<(), Refusal> {
    check_max_file_size(limits.max_file_size, size)
}

/// 413 when one file of `size` bytes is over `max` (if there is one): for the rules and for
/// the per-prefix maximum of the signed protocols.
pub fn check_max_file_size(max: Option<u64>, size: u64) -> Result<(), Refusal> {
    match max {
        Some(max) if size > max => Err(Refusal::new(
            RefusalKind::TooLarge,
            format!("file of {size} bytes is larger than the maximum of {max} bytes"),
        )),
        _ => Ok(()),
    }
}

/// Whether one more upload of `size` bytes fits next to `usage`. Reaching a limit exactly is allowed.
pub fn check_quota(limits: &Limits, size: u64, usage: Usage) -> Result<(), Refusal> {
    check_file_size(limits, size)?;
    if let Some(max) = limits.max_total_size
        && usage.total_bytes.saturating_add(size) > max
    {
        return Err(Refusal::forbidden(format!(
            "total size limit reached: {} of {max} bytes stored, {size} more requested",
            usage.total_bytes
        )));
    }
    if let Some(window) = limits.bytes_per_window
        && usage.window_bytes.saturating_add(size) > window.amount
    {
        return Err(Refusal::new(
            RefusalKind::QuotaExceeded,
            format!(
                "upload quota reached: {} of {} bytes per {} s used, {size} more requested",
                usage.window_bytes, window.amount, window.seconds
            ),
        ));
    }
    if let Some(window) = limits.uploads_per_window
        && usage.window_uploads.saturating_add(1) > window.amount
    {
        return Err(Refusal::new(
            RefusalKind::QuotaExceeded,
            format!(
                "upload quota reached: {} of {} uploads per {} s used",
                usage.window_uploads, window.amount, window.seconds
            ),
        ));
    }
    Ok(())
}

/// Seconds from `now` until a window quota lets one more upload of `size` bytes through, given
/// the uploads inside the window as `(created, size)`: each leaves it `window.seconds` after it
/// was created. `counts_bytes`: the window counts bytes, else uploads. `None` when waiting
/// cannot help (the one file is over the window's amount). At least 1.
pub fn retry_after(
    window: Window,
    counts_bytes: bool,
    size: u64,
    now: i64,
    in_window: &[(i64, u64)],
) -> Option<u64> {
    let cost = |bytes: u64| if counts_bytes { bytes } else { 1 };
    let wanted = cost(size);
    if wanted > window.amount {
        return None;
    }
    let mut entries = in_window.to_vec();
    entries.sort_unstable();
    let mut used = entries
        .iter()
        .fold(0u64, |sum, &(_, bytes)| sum.saturating_add(cost(bytes)));
    let seconds = window.seconds;
    for (created, bytes) in entries {
        if used.saturating_add(wanted) <= window.amount {
            break;
        }
        used = used.saturating_sub(cost(bytes));
        if used.saturating_add(wanted) <= window.amount {
            let wait = created.saturating_add(seconds).saturating_sub(now);
            return Some(u64::try_from(wait).unwrap_or(0).max(1));
        }
    }
    Some(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_when_enough_leaves_the_window() {
        let hour = Window {
            seconds: 3600,
            amount: 100,
        };
        // 60 + 30 bytes in the window, 20 more wanted: the 60 must leave (at 1000 + 3600)
        let entries = [(1500, 30), (1000, 60)];
        assert_eq!(retry_after(hour, true, 20, 2000, &entries), Some(2600));
        // 5 bytes fit once the older 60 leave too; 11 need both gone: at 1500 + 3600
        assert_eq!(retry_after(hour, true, 80, 2000, &entries), Some(3100));
        // larger than the window allows at all: waiting does not help
        assert_eq!(retry_after(hour, true, 101, 2000, &entries), None);
        // two uploads per hour: the first to leave frees one
        let two = Window {
            seconds: 3600,
            amount: 2,
        };
        assert_eq!(retry_after(two, false, 5, 2000, &entries), Some(2600));
        // never less than a second
        assert_eq!(retry_after(two, false, 5, 4600, &entries), Some(1));
    }

    fn rule(pattern: &str, action: Action) -> Rule {
        Rule {
            pattern: Regex::new(pattern).unwrap(),
            action,
        }
    }

    #[test]
    fn first_match_wins_and_no_match_denies() {
        let rules = vec![
            rule("^admin@x$", Action::Allow(Limits::default())),
            rule("@x$", Action::Deny),
        ];
        assert!(limits_for(&rules, "admin@x").is_ok());
        assert_eq!(
            limits_for(&rules, "bob@x").unwrap_err().kind,
            RefusalKind::Forbidden
        );
        assert!(limits_for(&rules, "bob@y").is_err());
        // search, not full match
        let rules = vec![rule("x", Action::Allow(Limits::default()))];
        assert!(limits_for(&rules, "bob@x.org").is_ok());
    }

    #[test]
    fn exact_limits_are_allowed() {
        let limits = Limits {
            max_file_size: Some(10),
            max_total_size: Some(30),
            bytes_per_window: Some(Window {
                seconds: 60,
                amount: 20,
            }),
            uploads_per_window: Some(Window {
                seconds: 60,
                amount: 2,
            }),
            retention: None,
        };
        let usage = Usage {
            total_bytes: 20,
            window_bytes: 10,
            window_uploads: 1,
        };
        assert!(check_quota(&limits, 10, usage).is_ok());
        assert_eq!(
            check_quota(&limits, 11, Usage::default()).unwrap_err().kind,
            RefusalKind::TooLarge
        );
        let full_total = Usage {
            total_bytes: 21,
            ..Usage::default()
        };
        assert_eq!(
            check_quota(&limits, 10, full_total).unwrap_err().kind,
            RefusalKind::Forbidden
        );
        let full_window = Usage {
            window_bytes: 11,
            ..Usage::default()
        };
        assert_eq!(
            check_quota(&limits, 10, full_window).unwrap_err().kind,
            RefusalKind::QuotaExceeded
        );
        let two_uploads = Usage {
            window_uploads: 2,
            ..Usage::default()
        };
        assert_eq!(
            check_quota(&limits, 1, two_uploads).unwrap_err().kind,
            RefusalKind::QuotaExceeded
        );
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        let limits = Limits {
            max_total_size: Some(u64::MAX - 1),
            ..Limits::default()
        };
        let usage = Usage {
            total_bytes: u64::MAX - 1,
            ..Usage::default()
        };
        assert!(check_quota(&limits, u64::MAX, usage).is_err());
    }
}
