//! The administrator's commands on what the service holds: `files` and `purge` (one JID),
//! `usage` (totals and the JIDs storing most) and `check` (the database against the upload
//! directory, both ways, and `--repair`). Each returns a report that prints as text
//! (`Display`) or JSON (`Serialize`); `main` chooses.
//!
//! Safe while the program serves: every change is one `store` call that other processes'
//! transactions wait for, and nothing an upload still in progress needs is removed. This module
//! does not expire anything by age (that is `cleanup`), speak SQL (`store`) or touch the upload
//! directory other than through `files`.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::App;
use crate::cleanup::TRANSFER_GRACE;
use crate::files::{Entry, SafePath};
use crate::name::percent_encode_segment;
use crate::refusal::Error;
use crate::store::Slot;

/// The `--jid` argument as the database keeps it (bare, lower-case), or a one-line error.
pub fn jid_argument(jid: &str) -> Result<String, String> {
    crate::slot::bare_jid(jid).map_err(|r| format!("--jid: {}", r.message))
}

/// One upload of a JID, as `files` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileEntry {
    /// The download URL (a path only when no `base_url` is configured).
    pub url: String,
    /// Relative to `upload_root`.
    pub path: String,
    pub name: String,
    pub size: u64,
    /// `stored` (the file is complete on disk), `uploading` (its PUT was allowed, the file is not
    /// confirmed yet) or `waiting` (a slot whose PUT has not come).
    pub state: &'static str,
    /// `slot` (slot API) or `jwt` (Prosody's mod_http_file_share).
    pub protocol: &'static str,
    /// When the slot was handed out (unix seconds).
    pub created: i64,
    /// When the upload was allowed or stored (unix seconds).
    pub uploaded: Option<i64>,
    /// When cleanup deletes the file (unix seconds), as far as it is known now.
    pub expires: Option<i64>,
}

/// What `files --jid` found.
#[derive(Debug, Clone, Serialize)]
pub struct FilesReport {
    pub jid: String,
    pub files: Vec<FileEntry>,
    /// Sum of `size` over `files`.
    pub bytes: u64,
}

impl fmt::Display for FilesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for file in &self.files {
            writeln!(
                f,
                "{}  {:>12}  {:<9}  uploaded {}  expires {}  {}",
                file.url,
                file.size,
                file.state,
                file.uploaded.map(utc).unwrap_or_else(|| "-".into()),
                file.expires.map(utc).unwrap_or_else(|| "-".into()),
                file.name
            )?;
        }
        writeln!(
            f,
            "{}: {} files, {} bytes",
            self.jid,
            self.files.len(),
            self.bytes
        )
    }
}

/// The uploads of `jid` (bare, lower-case), oldest first.
pub fn files(app: &App, jid: &str) -> Result<FilesReport, Error> {
    let files: Vec<FileEntry> = app
        .store
        .slots_of(jid)?
        .iter()
        .map(|slot| file_entry(app, slot))
        .collect();
    Ok(FilesReport {
        jid: jid.to_string(),
        bytes: files.iter().fold(0u64, |sum, f| sum.saturating_add(f.size)),
        files,
    })
}

fn file_entry(app: &App, slot: &Slot) -> FileEntry {
    let config = &app.config;
    let prefix = match &slot.area {
        None => config.get_prefix.as_str(),
        Some(area) => config
            .file_share
            .iter()
            .find(|share| &share.dir == area)
            .map(|share| share.prefix.as_str())
            .unwrap_or(""),
    };
    let url = format!(
        "{}{prefix}/{}/{}",
        config.base_url.as_deref().unwrap_or(""),
        slot.token,
        percent_encode_segment(&slot.name)
    );
    let state = match (slot.authorized, slot.uploaded) {
        (_, Some(_)) => "stored",
        (Some(_), None) => "uploading",
        (None, None) => "waiting",
    };
    let uploaded = slot.uploaded.or(slot.authorized);
    let put_timeout = config.put_timeout;
    let expires = match uploaded {
        Some(at) => {
            let retention = slot.retention.unwrap_or(config.retention);
            let by_retention = at.saturating_add(retention);
            Some(slot.expires.map_or(by_retention, |e| e.min(by_retention)))
        }
        // An unused slot goes when its PUT timeout has passed.
        None => Some(slot.created.saturating_add(put_timeout)),
    };
    FileEntry {
        url,
        path: SafePath::in_area(slot.area.as_deref(), &slot.token, &slot.name)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        name: slot.name.clone(),
        size: slot.size,
        state,
        protocol: if slot.area.is_some() { "jwt" } else { "slot" },
        created: slot.created,
        uploaded,
        expires,
    }
}

/// What `purge --jid` removed (or, with `--dry-run`, would remove).
#[derive(Debug, Clone, Serialize, Default)]
pub struct PurgeReport {
    pub jid: String,
    pub dry_run: bool,
    /// Records forgotten (slots of every state).
    pub slots: usize,
    /// Files removed, relative to `upload_root`.
    pub removed_files: Vec<String>,
    /// Bytes of the removed files, as recorded.
    pub removed_bytes: u64,
    /// Uploads allowed but not landed yet: cleanup removes their files when they land.
    pub in_flight: Vec<String>,
    /// What could not be removed (cleanup tries again).
    pub errors: Vec<String>,
}

impl PurgeReport {
    /// `Err` with one line when something could not be removed.
    pub fn result(&self) -> Result<(), String> {
        match self.errors.len() {
            0 => Ok(()),
            n => Err(format!(
                "purge of {}: {n} files could not be removed (the next cleanup tries again)",
                self.jid
            )),
        }
    }
}

impl fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for file in &self.removed_files {
            writeln!(f, "{verb} {file}")?;
        }
        for file in &self.in_flight {
            writeln!(
                f,
                "upload in flight: {file} (its file is removed by cleanup when it lands)"
            )?;
        }
        for error in &self.errors {
            writeln!(f, "could not remove: {error}")?;
        }
        writeln!(
            f,
            "purge {}{}: {verb} {} slots, {} files, {} bytes; {} uploads in flight",
            self.jid,
            if self.dry_run { " (dry run)" } else { "" },
            self.slots,
            self.removed_files.len(),
            self.removed_bytes,
            self.in_flight.len()
        )
    }
}

/// Removes every slot of `jid` with its file and token directory. The records go first, in
/// one transaction (so no quota, listing or download sees them any more); a file whose PUT was
/// allowed but has not landed stays on record for cleanup (`store::purge_jid`), and a file the
/// program is still receiving is removed by that upload itself when it finds its slot gone.
pub fn purge(app: &App, jid: &str, dry_run: bool, now: i64) -> Result<PurgeReport, Error> {
    let mut report = PurgeReport {
        jid: jid.to_string(),
        dry_run,
        ..PurgeReport::default()
    };
    let slots = if dry_run {
        app.store.slots_of(jid)?
    } else {
        app.store.purge_jid(jid, now)?
    };
    report.slots = slots.len();
    for slot in &slots {
        let Ok(path) = SafePath::in_area(slot.area.as_deref(), &slot.token, &slot.name) else {
            // A record whose name could never be a file: nothing on disk to remove.
            if !dry_run {
                app.store.forget_purged(&slot.token)?;
            }
            continue;
        };
        let removed = if dry_run {
            Ok(app.uploads.exists(&path))
        } else {
            app.uploads.remove(&path)
        };
        match removed {
            Ok(true) => {
                report.removed_files.push(path.to_string());
                report.removed_bytes = report.removed_bytes.saturating_add(slot.size);
            }
            Ok(false) if slot.authorized.is_some() && slot.uploaded.is_none() => {
                report.in_flight.push(path.to_string());
                // Stays in `purged`: the web server may still write it.
                continue;
            }
            Ok(false) => {}
            Err(error) => {
                report.errors.push(error.to_string());
                continue;
            }
        }
        if !dry_run {
            app.store.forget_purged(&slot.token)?;
        }
    }
    Ok(report)
}

/// One JID in `usage`'s top list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JidUsage {
    pub jid: String,
    pub files: u64,
    pub bytes: u64,
}

/// What `usage` counts.
#[derive(Debug, Clone, Serialize, Default)]
pub struct UsageReport {
    /// Files complete on disk (slot API and JWT).
    pub files: u64,
    pub bytes: u64,
    /// PUTs allowed whose file is not confirmed yet.
    pub uploading: u64,
    pub uploading_bytes: u64,
    /// Slots handed out and still waiting for their PUT.
    pub slots_waiting: u64,
    /// Unused slots past the PUT timeout (the next cleanup removes them).
    pub slots_expired: u64,
    /// Uploads of the HMAC protocol (their URLs carry no JID).
    pub signed_files: u64,
    pub signed_bytes: u64,
    /// JIDs with files or uploads.
    pub jids: u64,
    /// The JIDs storing most bytes (files and uploads), largest first.
    pub top: Vec<JidUsage>,
    /// The counters of `<slot_prefix>/metrics` (without the `xmpp_http_upload_` prefix).
    pub counters: Vec<CounterValue>,
}

/// One counter of `usage`, as the metrics endpoint shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CounterValue {
    pub name: String,
    /// The label set as rendered (`protocol="slot",reason="gone"`), empty for none.
    pub labels: String,
    pub value: u64,
}

impl fmt::Display for UsageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "files          {:>10}  {:>16} bytes",
            self.files, self.bytes
        )?;
        writeln!(
            f,
            "uploading      {:>10}  {:>16} bytes",
            self.uploading, self.uploading_bytes
        )?;
        writeln!(
            f,
            "signed (HMAC)  {:>10}  {:>16} bytes",
            self.signed_files, self.signed_bytes
        )?;
        writeln!(f, "slots waiting  {:>10}", self.slots_waiting)?;
        writeln!(
            f,
            "slots expired  {:>10}  (removed by the next cleanup)",
            self.slots_expired
        )?;
        writeln!(f, "JIDs           {:>10}", self.jids)?;
        if !self.top.is_empty() {
            writeln!(f, "top {} JIDs by bytes:", self.top.len())?;
            for user in &self.top {
                writeln!(
                    f,
                    "  {:>16} bytes {:>8} files  {}",
                    user.bytes, user.files, user.jid
                )?;
            }
        }
        if !self.counters.is_empty() {
            writeln!(f, "counters (also at <slot_prefix>/metrics):")?;
            for counter in &self.counters {
                let series = if counter.labels.is_empty() {
                    counter.name.clone()
                } else {
                    format!("{}{{{}}}", counter.name, counter.labels)
                };
                writeln!(f, "  {:>16}  {series}", counter.value)?;
            }
        }
        Ok(())
    }
}

/// Totals at `now`, and the `top` JIDs by bytes (`0`: every JID).
pub fn usage(app: &App, top: usize, now: i64) -> Result<UsageReport, Error> {
    let mut report = UsageReport::default();
    let unused_cutoff = now.saturating_sub(app.config.put_timeout);
    let mut per_jid: HashMap<String, (u64, u64)> = HashMap::new();
    app.store.for_each_slot(|slot| {
        let counted = match (slot.authorized, slot.uploaded) {
            (_, Some(_)) => {
                report.files += 1;
                report.bytes = report.bytes.saturating_add(slot.size);
                true
            }
            (Some(_), None) => {
                report.uploading += 1;
                report.uploading_bytes = report.uploading_bytes.saturating_add(slot.size);
                true
            }
            (None, None) if slot.created > unused_cutoff => {
                report.slots_waiting += 1;
                false
            }
            (None, None) => {
                report.slots_expired += 1;
                false
            }
        };
        if counted {
            let entry = per_jid.entry(slot.jid).or_default();
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(slot.size);
        }
    })?;
    for (_, size, _) in app.store.signed_uploads()? {
        report.signed_files += 1;
        report.signed_bytes = report.signed_bytes.saturating_add(size);
    }
    report.jids = per_jid.len() as u64;
    let mut users: Vec<JidUsage> = per_jid
        .into_iter()
        .map(|(jid, (files, bytes))| JidUsage { jid, files, bytes })
        .collect();
    users.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.jid.cmp(&b.jid)));
    if top > 0 {
        users.truncate(top);
    }
    report.top = users;
    report.counters = app
        .store
        .counters()?
        .into_iter()
        .map(|(name, labels, value)| CounterValue {
            name,
            labels,
            value,
        })
        .collect();
    Ok(report)
}

/// One difference between the database and the upload directory.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// `file_without_record`, `record_without_file`, `size_differs`, `leftover_temporary`,
    /// `unconfirmed_upload` or `purged_file`.
    pub kind: &'static str,
    /// Relative to `upload_root`.
    pub path: String,
    /// What is wrong, in words.
    pub detail: String,
    /// What `--repair` does about it (`None`: nothing can be done without losing an upload).
    pub repair: Option<String>,
    /// Whether this run repaired it.
    pub repaired: bool,
}

/// What `check` found (and repaired).
#[derive(Debug, Clone, Serialize, Default)]
pub struct CheckReport {
    pub repair: bool,
    /// Slot records and HMAC records read.
    pub records: u64,
    /// Files found under the upload root (temporaries included).
    pub files: u64,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// `Err` with one line while differences remain unrepaired.
    pub fn result(&self) -> Result<(), String> {
        let open = self.findings.iter().filter(|f| !f.repaired).count();
        let repairable = self
            .findings
            .iter()
            .filter(|f| !f.repaired && f.repair.is_some())
            .count();
        match (open, repairable) {
            (0, _) => Ok(()),
            (n, 0) => Err(format!(
                "check: {n} differences remain that cannot be repaired"
            )),
            (n, r) => Err(format!(
                "check: {n} differences remain; `check --repair` fixes {r} of them"
            )),
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let action = match (&finding.repair, finding.repaired) {
                (Some(repair), true) => format!("repaired: {repair}"),
                (Some(repair), false) => format!("--repair would: {repair}"),
                (None, _) => "left alone".to_string(),
            };
            writeln!(
                f,
                "{}: {}: {} ({action})",
                finding.kind, finding.path, finding.detail
            )?;
        }
        writeln!(
            f,
            "check: {} records, {} files, {} differences, {} repaired",
            self.records,
            self.files,
            self.findings.len(),
            self.findings.iter().filter(|f| f.repaired).count()
        )
    }
}

/// Compares the records with the upload directory; with `repair`, fixes what can be fixed
/// without losing an upload: a leftover temporary file (older than a day) is removed, a record
/// whose file is gone is forgotten, a size is corrected to the file's, an unconfirmed upload
/// whose file is there is confirmed, a file of a purged slot is removed, a signed-URL file
/// without a record is recorded (so that its URL cannot be used again). A slot file without a
/// record stays: only cleanup removes it, `retention` after its inode last changed.
pub fn check(app: &App, repair: bool, now: i64) -> Result<CheckReport, Error> {
    let grace_cutoff = now.saturating_sub(TRANSFER_GRACE);
    let mut report = CheckReport {
        repair,
        ..CheckReport::default()
    };
    let mut slots: HashMap<String, Slot> = HashMap::new();
    app.store.for_each_slot(|slot| {
        slots.insert(slot.token.clone(), slot);
    })?;
    let purged: HashSet<String> = app.store.purged()?.into_iter().map(|p| p.token).collect();
    let mut seen: HashSet<String> = HashSet::new();

    let mut areas: Vec<(Option<&str>, Vec<Entry>)> = vec![(None, app.uploads.slot_files()?)];
    for share in &app.config.file_share {
        areas.push((Some(&share.dir), app.uploads.tree_files(&share.dir)?));
    }
    for (area, entries) in &areas {
        for entry in entries {
            report.files += 1;
            let shown = app.uploads.relative(&entry.path);
            if leftover_temporary(
                app,
                entry,
                area.unwrap_or(""),
                grace_cutoff,
                repair,
                &mut report,
            )? {
                continue;
            }
            let token = entry.parent_name();
            let slot = slots
                .get(token)
                .filter(|s| s.area.as_deref() == *area && s.name == entry.name());
            let Some(slot) = slot else {
                if purged.contains(token) {
                    let repaired = repair && {
                        app.uploads.remove_entry(entry, area.unwrap_or(""))?;
                        true
                    };
                    report.findings.push(Finding {
                        kind: "purged_file",
                        path: shown,
                        detail: "file of a purged account".into(),
                        repair: Some("remove it".into()),
                        repaired,
                    });
                } else {
                    report.findings.push(Finding {
                        kind: "file_without_record",
                        path: shown,
                        detail: format!("no slot {token:?} with this name"),
                        repair: None,
                        repaired: false,
                    });
                }
                continue;
            };
            seen.insert(slot.token.clone());
            if entry.len != slot.size {
                let repaired = repair && {
                    app.store.set_slot_size(&slot.token, entry.len)?;
                    true
                };
                report.findings.push(Finding {
                    kind: "size_differs",
                    path: shown.clone(),
                    detail: format!("{} bytes on disk, {} recorded", entry.len, slot.size),
                    repair: Some("record the size on disk".into()),
                    repaired,
                });
            }
            if slot.uploaded.is_none() {
                let repaired = repair && {
                    app.store
                        .mark_uploaded(&slot.token, slot.authorized.unwrap_or(slot.created))?;
                    true
                };
                report.findings.push(Finding {
                    kind: "unconfirmed_upload",
                    path: shown,
                    detail: "the file is there, its upload is not confirmed".into(),
                    repair: Some("confirm it (cleanup would too)".into()),
                    repaired,
                });
            }
        }
    }
    report.records += slots.len() as u64;
    for slot in slots.values() {
        if seen.contains(&slot.token) {
            continue;
        }
        let gone = match (slot.authorized, slot.uploaded) {
            (_, Some(_)) => "its upload was confirmed, the file is gone",
            // Waiting for its PUT, or still being written — however long ago it was allowed:
            // nginx bounds only the pauses of a body, and a record forgotten now would let
            // a late file land outside every quota. Cleanup gives it up and, at its
            // retention, removes it.
            _ => continue,
        };
        let path = SafePath::in_area(slot.area.as_deref(), &slot.token, &slot.name)
            .map(|p| p.to_string())
            .unwrap_or_else(|_| slot.token.clone());
        let repaired = repair && {
            app.store.delete_slot(&slot.token)?;
            true
        };
        report.findings.push(Finding {
            kind: "record_without_file",
            path,
            detail: gone.into(),
            repair: Some("forget the record".into()),
            repaired,
        });
    }
    check_signed_uploads(app, repair, grace_cutoff, &mut report)?;
    Ok(report)
}

/// The uploads of the HMAC protocol: files under each `[[external]]` directory against
/// `signed_upload` records.
fn check_signed_uploads(
    app: &App,
    repair: bool,
    grace_cutoff: i64,
    report: &mut CheckReport,
) -> Result<(), Error> {
    let records: HashMap<String, (u64, i64)> = app
        .store
        .signed_uploads()?
        .into_iter()
        .map(|(path, size, authorized)| (path, (size, authorized)))
        .collect();
    report.records += records.len() as u64;
    let mut seen: HashSet<String> = HashSet::new();
    for ext in &app.config.external {
        for entry in app.uploads.tree_files(&ext.dir)? {
            report.files += 1;
            if leftover_temporary(app, &entry, &ext.dir, grace_cutoff, repair, report)? {
                continue;
            }
            let relative = app.uploads.relative(&entry.path);
            match records.get(&relative) {
                Some(&(size, _)) => {
                    seen.insert(relative.clone());
                    if size != entry.len {
                        let repaired = repair && {
                            app.store.set_signed_upload_size(&relative, entry.len)?;
                            true
                        };
                        report.findings.push(Finding {
                            kind: "size_differs",
                            path: relative,
                            detail: format!("{} bytes on disk, {size} recorded", entry.len),
                            repair: Some("record the size on disk".into()),
                            repaired,
                        });
                    }
                }
                None => {
                    let repaired = repair && {
                        app.store.claim_signed_path(
                            &relative,
                            entry.len,
                            entry.changed,
                            false,
                            None,
                        )?;
                        true
                    };
                    report.findings.push(Finding {
                        kind: "file_without_record",
                        path: relative,
                        detail: "no record of its signed PUT".into(),
                        repair: Some(
                            "record it as allowed when its inode last changed (its URL cannot be used again)"
                                .into(),
                        ),
                        repaired,
                    });
                }
            }
        }
    }
    // A record without a file is a PUT still on its way (however long ago it was allowed),
    // or a note that the path's file went at retention: neither is a difference. Only
    // cleanup, at retention, turns the first into the second.
    Ok(())
}

/// True when `entry` is a temporary file: a finding when it is older than `TRANSFER_GRACE`
/// (removed with `repair`), nothing when an upload may still be writing it.
fn leftover_temporary(
    app: &App,
    entry: &Entry,
    area: &str,
    grace_cutoff: i64,
    repair: bool,
    report: &mut CheckReport,
) -> Result<bool, Error> {
    if !entry.is_partial() {
        return Ok(false);
    }
    if entry.changed <= grace_cutoff {
        let repaired = repair && {
            app.uploads.remove_entry(entry, area)?;
            true
        };
        report.findings.push(Finding {
            kind: "leftover_temporary",
            path: app.uploads.relative(&entry.path),
            detail: "temporary file of an interrupted upload, untouched for over a day".into(),
            repair: Some("remove it".into()),
            repaired,
        });
    }
    Ok(true)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days of 400-year eras).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // March = 0
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn jid_argument_is_bare_and_lower_case() {
        assert_eq!(
            jid_argument("Bob@Example.org/phone").unwrap(),
            "bob@example.org"
        );
        assert!(jid_argument("").unwrap_err().starts_with("--jid: "));
        assert!(jid_argument("a@b@c").is_err());
    }
}
