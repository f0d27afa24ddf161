//! Expiry: slots nobody used, uploads that never landed, files past retention (slot uploads
//! and external-protocol uploads alike), and the directories they leave empty. Safe to run
//! while the server serves: it only removes what no request can still complete, and never a
//! directory that is not empty. Ages come from the program's records (or the kernel's inode
//! change time), never from a file's mtime, which a client can choose through nginx.

use crate::App;
use crate::files::{Entry, SafePath};
use crate::refusal::Error;
use crate::rules::{Action, Rule, first_match};
use crate::store::SIGNED_TOMBSTONE_KEEP;

/// How long a temporary file may sit untouched before it is taken for a crash's leftover, and
/// how long a purge waits at least for bodies already allowed. (An allowed upload itself is
/// never given up before its retention: nginx bounds only the pauses of a body, not its time.)
pub const TRANSFER_GRACE: i64 = 86_400;

/// What one run removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Slots never used within the PUT timeout.
    pub unused_slots: Vec<String>,
    /// Authorized PUTs whose file did not appear within their retention.
    pub failed_uploads: Vec<String>,
    /// Files past retention, as paths under the upload root.
    pub expired_files: Vec<String>,
    /// Temporary files of interrupted uploads.
    pub stale_parts: Vec<String>,
    /// Files of purged slots that landed (or stayed) after `purge`.
    pub purged_files: Vec<String>,
    /// Uploads written by the web server that are now known to be complete.
    pub confirmed: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for token in &self.unused_slots {
            writeln!(f, "removed unused slot {token}")?;
        }
        for token in &self.failed_uploads {
            writeln!(f, "removed slot {token} whose upload never completed")?;
        }
        for file in &self.expired_files {
            writeln!(f, "removed expired file {file}")?;
        }
        for file in &self.stale_parts {
            writeln!(f, "removed stale temporary file {file}")?;
        }
        for file in &self.purged_files {
            writeln!(f, "removed file {file} of a purged account")?;
        }
        write!(
            f,
            "cleanup: {} unused slots, {} failed uploads, {} expired files, {} temporary files removed; {} uploads confirmed",
            self.unused_slots.len(),
            self.failed_uploads.len(),
            self.expired_files.len(),
            self.stale_parts.len(),
            self.confirmed
        )
    }
}

/// What `cleanup --reapply-rules` changed before cleaning up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reapplied {
    /// Slots whose recorded retention changed.
    pub changed: usize,
    /// Slots whose JID no rule allows any more: they keep what was recorded.
    pub kept: usize,
}

impl std::fmt::Display for Reapplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reapplied rules: retention of {} slots changed; {} slots of JIDs no rule allows keep theirs",
            self.changed, self.kept
        )
    }
}

/// Records, for every slot, the `retention` of the rule that allows its JID now (none: the
/// global one), so that the next cleanup judges old uploads by today's rules. The admin asks
/// for this; a changed configuration alone never moves the deletion of a file already uploaded.
pub fn reapply_rules(app: &App) -> Result<Reapplied, Error> {
    let mut report = Reapplied::default();
    let mut changes = Vec::new();
    app.store
        .for_each_slot(|slot| match first_match(&app.config.rules, &slot.jid) {
            Some(Rule {
                action: Action::Allow(limits),
                ..
            }) => {
                let retention = limits.retention;
                if retention != slot.retention {
                    changes.push((slot.token, retention));
                }
            }
            _ => report.kept += 1,
        })?;
    report.changed = changes.len();
    app.store.set_retentions(&changes)?;
    Ok(report)
}

/// Runs one cleanup at `now` (unix seconds).
///
/// Every age is judged on the program's own clock: the times it recorded when it allowed a PUT
/// (or stored the file itself), and for a file it has no record of, the inode's change time —
/// never the file's mtime, which nginx sets from the client's `Date` header.
/// Each run is counted (`cleanup_runs_total{result}` of `<slot_prefix>/metrics`).
pub fn run(app: &App, now: i64) -> Result<Report, Error> {
    let result = sweep(app, now);
    crate::metrics::count_cleanup(app, result.is_ok());
    result
}

fn sweep(app: &App, now: i64) -> Result<Report, Error> {
    let mut report = Report::default();
    let put_timeout = app.config.put_timeout;
    let retention_cutoff = now.saturating_sub(app.config.retention);
    let grace_cutoff = now.saturating_sub(TRANSFER_GRACE);

    let retention = app.config.retention;
    settle_unconfirmed_slots(
        app,
        now,
        now.saturating_sub(put_timeout),
        retention,
        &mut report,
    )?;

    // Uploads of the JWT protocol go at their own `expires`.
    for slot in app.store.expiring_before(now)? {
        if let Ok(path) = SafePath::in_area(slot.area.as_deref(), &slot.token, &slot.name)
            && app.uploads.remove(&path)?
        {
            report.expired_files.push(path.to_string());
        }
        app.store.delete_slot(&slot.token)?;
    }

    // Uploads of slots (slot API and JWT) past retention, counted from their recorded upload:
    // the retention of the rule that allowed it, recorded then, or the global one.
    for slot in app.store.past_retention(now, retention)? {
        if let Ok(path) = SafePath::in_area(slot.area.as_deref(), &slot.token, &slot.name)
            && app.uploads.remove(&path)?
        {
            report.expired_files.push(path.to_string());
        }
        app.store.delete_slot(&slot.token)?;
    }

    expire_signed_uploads(app, now, retention_cutoff, &mut report)?;
    remove_purged(app, retention_cutoff, &mut report)?;

    // What no record covers: temporary files of interrupted uploads, and files whose record
    // is gone (or that someone put there), by the inode's change time.
    for entry in app.uploads.slot_files()? {
        let recorded = app.store.slot(entry.parent_name())?.is_some();
        expire_unrecorded(
            app,
            &entry,
            "",
            recorded,
            retention_cutoff,
            grace_cutoff,
            &mut report,
        )?;
    }
    for share in &app.config.file_share {
        for entry in app.uploads.tree_files(&share.dir)? {
            let recorded = app.store.slot(entry.parent_name())?.is_some();
            expire_unrecorded(
                app,
                &entry,
                &share.dir,
                recorded,
                retention_cutoff,
                grace_cutoff,
                &mut report,
            )?;
        }
    }
    for ext in &app.config.external {
        for entry in app.uploads.tree_files(&ext.dir)? {
            let relative = app.uploads.relative(&entry.path);
            let recorded = app.store.signed_upload_authorized(&relative)?.is_some();
            expire_unrecorded(
                app,
                &entry,
                &ext.dir,
                recorded,
                retention_cutoff,
                grace_cutoff,
                &mut report,
            )?;
        }
    }
    Ok(report)
}

/// Slots whose upload is not confirmed: a file is there (the web server wrote it after our
/// "yes", and renames a body into place only when it is complete; its upload time is the time
/// of that "yes"), never used within `put_timeout` (removed), or allowed longer ago than its
/// retention and still without a file (removed). Until then an allowed slot keeps its row —
/// refused to a second PUT and counted in its JID's quota as the upload it may still become:
/// its body may still be on its way, and forgetting it would let the file land outside every
/// quota.
fn settle_unconfirmed_slots(
    app: &App,
    now: i64,
    created_cutoff: i64,
    default_retention: i64,
    report: &mut Report,
) -> Result<(), Error> {
    for slot in app.store.unconfirmed(created_cutoff)? {
        let path = SafePath::in_area(slot.area.as_deref(), &slot.token, &slot.name).ok();
        if path.as_ref().is_some_and(|p| app.uploads.exists(p)) {
            let allowed_at = slot.authorized.unwrap_or(slot.created);
            // (false only when the slot was purged meanwhile: its file is then in `purged`)
            app.store.mark_uploaded(&slot.token, allowed_at)?;
            report.confirmed += 1;
            continue;
        }
        let retention_cutoff = now.saturating_sub(slot.retention.unwrap_or(default_retention));
        match slot.authorized {
            None => report.unused_slots.push(slot.token.clone()),
            Some(at) if at <= retention_cutoff => report.failed_uploads.push(slot.token.clone()),
            Some(_) => continue,
        }
        app.store.delete_slot(&slot.token)?;
        if let Some(path) = &path {
            app.uploads.remove_parent_if_empty(path);
        }
    }
    Ok(())
}

/// Uploads of the HMAC protocol past retention from their recorded "yes": the file goes (if it
/// ever came), the record stays as a note that refuses the path for `SIGNED_TOMBSTONE_KEEP`
/// (the URL carries no expiry: without the note, whoever holds it could store new bytes behind
/// links already shared). A record without a file is kept until then as well: its body may
/// still land, and a second one must not be approved meanwhile.
fn expire_signed_uploads(
    app: &App,
    now: i64,
    retention_cutoff: i64,
    report: &mut Report,
) -> Result<(), Error> {
    for (recorded, _) in app.store.signed_uploads_before(retention_cutoff)? {
        let found = app.config.external.iter().find_map(|ext| {
            SafePath::stored_under(&ext.dir, &recorded).map(|path| (path, ext.dir.as_str()))
        });
        if let Some((path, dir)) = found {
            if app.uploads.remove_in(&path, dir)? {
                report.expired_files.push(path.to_string());
            } else {
                report.failed_uploads.push(recorded.clone());
            }
        }
        // (a prefix no longer configured: the note still refuses its path if it comes back)
        app.store.mark_signed_removed(&recorded, now)?;
    }
    app.store
        .forget_signed_tombstones(now.saturating_sub(SIGNED_TOMBSTONE_KEEP))?;
    Ok(())
}

/// Files of slots that `purge` forgot: removed whenever they are there (a PUT allowed before
/// the purge may have landed since); each record goes once a retention has passed since the
/// purge (a body may trickle in for longer than a day: nginx bounds only its pauses).
fn remove_purged(app: &App, retention_cutoff: i64, report: &mut Report) -> Result<(), Error> {
    for purged in app.store.purged()? {
        if let Ok(path) = SafePath::in_area(purged.area.as_deref(), &purged.token, &purged.name)
            && app.uploads.remove(&path)?
        {
            report.purged_files.push(path.to_string());
        }
        if purged.purged <= retention_cutoff {
            app.store.forget_purged(&purged.token)?;
        }
    }
    Ok(())
}

/// Removes `entry` if it is a temporary file untouched for `TRANSFER_GRACE`, or a stored file
/// without a record (`recorded` false) whose inode changed last before `retention_cutoff`.
fn expire_unrecorded(
    app: &App,
    entry: &Entry,
    area: &str,
    recorded: bool,
    retention_cutoff: i64,
    grace_cutoff: i64,
    report: &mut Report,
) -> Result<(), Error> {
    let shown = app.uploads.relative(&entry.path);
    if entry.is_partial() {
        if entry.changed <= grace_cutoff {
            app.uploads.remove_entry(entry, area)?;
            report.stale_parts.push(shown);
        }
        return Ok(());
    }
    if recorded || entry.changed > retention_cutoff {
        return Ok(());
    }
    app.uploads.remove_entry(entry, area)?;
    report.expired_files.push(shown);
    Ok(())
}
