//! Access rules and quota arithmetic (BEHAVIOUR.md §4): which rule decides for a JID, and whether a new
//! upload of a given size fits the rule's limits given what the JID already used.
//!
//! Pure: `decide_quota` is the one quota decision of every store. The store reads what the
//! JID holds and calls it inside the transaction that records the slot (SQLite: `BEGIN
//! IMMEDIATE`; PostgreSQL: under a per-JID advisory lock), so the decision holds across
//! processes and hosts; the arithmetic is here, not in either store.

use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

use crate::refusal::{Refusal, RefusalKind};

/// One entry of the ordered rule list: a pattern searched in the JID, and what it decides.
#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: Pattern,
    pub action: Action,
}

/// A rule's regular expression, searched ignoring case, compiled on its first use.
///
/// Why lazily: a CGI process answers one request, and compiling every rule (Unicode case
/// folding, `.` as any Unicode scalar) was a quarter of a CGI slot request's own time; most
/// requests are decided by one of the first rules. The syntax is checked when the
/// configuration is loaded (`new`), with the parser the compiler itself uses, so a pattern that
/// would not compile is refused there with the same message. What only compiling can find (a
/// pattern over the compiled size limit) is found at start by `serve`, `check-config` and every
/// other command (`compile`); a CGI process that meets it refuses the request (`is_match`).
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    compiled: OnceLock<Result<Regex, String>>,
}

impl Pattern {
    /// Checks `source`'s syntax as the compiler would (ignoring case); compiles nothing yet.
    /// The error is the compiler's own text (several lines; the last one says what is wrong).
    pub fn new(source: &str) -> Result<Pattern, String> {
        regex_syntax::ParserBuilder::new()
            .case_insensitive(true)
            .build()
            .parse(source)
            .map_err(|e| e.to_string())?;
        Ok(Pattern {
            source: source.to_owned(),
            compiled: OnceLock::new(),
        })
    }

    /// The compiled expression (compiled now if it was not yet).
    pub fn compile(&self) -> Result<&Regex, &str> {
        self.compiled
            .get_or_init(|| {
                // XMPP localparts and domains compare case-insensitively (JIDs are lower-cased
                // before the rules see them), so a pattern written with capitals must still
                // match: `^Blocked@` is meant to deny `blocked@`.
                RegexBuilder::new(&self.source)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Whether the pattern is found somewhere in `jid`. A pattern that cannot be compiled
    /// counts as found, and `limits_for` then refuses: a broken rule never lets anyone past it.
    pub fn is_match(&self, jid: &str) -> bool {
        self.compile().map_or(true, |regex| regex.is_match(jid))
    }

    /// Whether compiling failed (only a CGI process can get here: the other commands compile
    /// every pattern at start).
    fn broken(&self) -> bool {
        self.compile().is_err()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
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

/// What a JID already holds, summed by `usage_of` (uploads and unexpired unused slots).
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
        Some(rule) if rule.pattern.broken() => {
            log::error!(
                "rule {:?} cannot be compiled: {}; {jid} refused",
                rule.pattern.as_str(),
                rule.pattern.compile().err().unwrap_or("")
            );
            Err(Refusal::forbidden(format!(
                "{jid} may not upload (rule {:?} is broken)",
                rule.pattern.as_str()
            )))
        }
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

/// One upload or unexpired unused slot of a JID, as a store read it: `(created, size)`.
pub type Held = (i64, u64);

/// True when some limit of `limits` needs what the JID holds (else a store need not read it:
/// the size of one file is checked either way).
pub fn needs_usage(limits: &Limits) -> bool {
    limits.max_total_size.is_some()
        || limits.bytes_per_window.is_some()
        || limits.uploads_per_window.is_some()
}

/// The usage `check_quota` weighs, at `now`, from what the JID holds: summed with saturating
/// arithmetic (sizes go up to 2^63-1, a database's SUM would overflow).
pub fn usage_of(limits: &Limits, now: i64, held: &[Held]) -> Usage {
    let since = |window: Option<Window>| window.map(|w| now.saturating_sub(w.seconds));
    let bytes_since = since(limits.bytes_per_window);
    let uploads_since = since(limits.uploads_per_window);
    let mut usage = Usage::default();
    for &(created, size) in held {
        usage.total_bytes = usage.total_bytes.saturating_add(size);
        if bytes_since.is_some_and(|t| created > t) {
            usage.window_bytes = usage.window_bytes.saturating_add(size);
        }
        if uploads_since.is_some_and(|t| created > t) {
            usage.window_uploads += 1;
        }
    }
    usage
}

/// The quota decision for one more upload of `size` bytes at `now`, given what the JID holds:
/// `check_quota` on `usage_of`, and a 402 says when the windows that refused will have room.
pub fn decide_quota(limits: &Limits, size: u64, now: i64, held: &[Held]) -> Result<(), Refusal> {
    check_quota(limits, size, usage_of(limits, now, held))
        .map_err(|refusal| with_retry_after(refusal, limits, size, now, held))
}

/// A quota refusal (402) says when the windows that refused will have room for `size` more.
fn with_retry_after(
    refusal: Refusal,
    limits: &Limits,
    size: u64,
    now: i64,
    held: &[Held],
) -> Refusal {
    if refusal.kind != RefusalKind::QuotaExceeded {
        return refusal;
    }
    let windows = [
        (limits.bytes_per_window, true),
        (limits.uploads_per_window, false),
    ];
    let mut wait: Option<u64> = None;
    for (window, counts_bytes) in windows {
        let Some(window) = window else { continue };
        let since = now.saturating_sub(window.seconds);
        let inside: Vec<Held> = held
            .iter()
            .copied()
            .filter(|&(created, _)| created > since)
            .collect();
        match retry_after(window, counts_bytes, size, now, &inside) {
            Some(seconds) => wait = Some(wait.map_or(seconds, |w| w.max(seconds))),
            // This window never has room for it: no time to give.
            None => return refusal,
        }
    }
    match wait {
        Some(seconds) => refusal.with_retry_after(seconds),
        None => refusal,
    }
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
            pattern: Pattern::new(pattern).unwrap(),
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
    fn usage_counts_each_window_from_now() {
        let limits = Limits {
            bytes_per_window: Some(Window {
                seconds: 100,
                amount: 1000,
            }),
            uploads_per_window: Some(Window {
                seconds: 10,
                amount: 5,
            }),
            ..Limits::default()
        };
        // (created, size): one old, one inside 100 s, one inside 10 s; "inside" is strictly after
        let held = [(800, 7), (950, 20), (995, 300), (900, 1)];
        let usage = usage_of(&limits, 1000, &held);
        assert_eq!(
            usage,
            Usage {
                total_bytes: 328,
                window_bytes: 320,
                window_uploads: 1,
            }
        );
    }

    #[test]
    fn decide_quota_gives_the_402_its_retry_after() {
        let limits = Limits {
            uploads_per_window: Some(Window {
                seconds: 100,
                amount: 2,
            }),
            ..Limits::default()
        };
        let refused = decide_quota(&limits, 1, 1020, &[(1000, 1), (1010, 1)]).unwrap_err();
        assert_eq!(
            (refused.kind, refused.retry_after),
            (RefusalKind::QuotaExceeded, Some(80))
        );
        assert!(
            refused.message.ends_with("try again in 80 s"),
            "{}",
            refused.message
        );
        // 403 and 413 carry no time: waiting does not help
        let total = Limits {
            max_total_size: Some(1),
            ..Limits::default()
        };
        assert_eq!(
            decide_quota(&total, 1, 0, &[(0, 1)])
                .unwrap_err()
                .retry_after,
            None
        );
        assert!(decide_quota(&limits, 1, 1101, &[(1000, 1), (1010, 1)]).is_ok());
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
