//! Expiry: slots nobody used, uploads that never landed, files past retention (slot uploads
//! and external-protocol uploads alike), and the directories they leave empty. Safe to run
//! while the server serves: it only removes what no request can still complete, and never a
//! directory that is not empty.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::App;
use crate::files::{Entry, SafePath};
use crate::refusal::Error;

/// How long an authorized upload may take to land before its slot is given up, and how long a
/// temporary file may sit untouched before it is taken for the leftover of a crash.
pub const TRANSFER_GRACE: i64 = 86_400;

/// What one run removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Slots never used within the PUT timeout.
    pub unused_slots: Vec<String>,
    /// Authorized PUTs whose file never appeared.
    pub failed_uploads: Vec<String>,
    /// Files past retention, as paths under the upload root.
    pub expired_files: Vec<String>,
    /// Temporary files of interrupted uploads.
    pub stale_parts: Vec<String>,
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

/// Runs one cleanup at `now` (unix seconds).
pub fn run(app: &App, now: i64) -> Result<Report, Error> {
    let mut report = Report::default();
    let put_timeout = i64::try_from(app.config.put_timeout).unwrap_or(i64::MAX);
    let retention_cutoff =
        now.saturating_sub(i64::try_from(app.config.retention).unwrap_or(i64::MAX));

    for slot in app
        .store
        .unconfirmed_before(now.saturating_sub(put_timeout))?
    {
        let path = SafePath::for_slot(&slot).ok();
        if let Some(modified) = path.as_ref().and_then(|p| app.uploads.modified(p)) {
            // The web server wrote it after our authorization: from now on retention counts.
            app.store
                .mark_uploaded(&slot.token, unix_seconds(modified))?;
            report.confirmed += 1;
            continue;
        }
        match slot.authorized {
            None => report.unused_slots.push(slot.token.clone()),
            // Give a large authorized transfer a day to land before giving up on it.
            Some(at) if at <= now.saturating_sub(TRANSFER_GRACE) => {
                report.failed_uploads.push(slot.token.clone())
            }
            Some(_) => continue,
        }
        app.store.delete_slot(&slot.token)?;
        if let Some(path) = &path {
            app.uploads.remove_parent_if_empty(path);
        }
    }

    // Uploads of the JWT protocol go at their own `expires`.
    for slot in app.store.expiring_before(now)? {
        if let Ok(path) = SafePath::for_slot(&slot)
            && app.uploads.remove(&path)?
        {
            report.expired_files.push(path.to_string());
        }
        app.store.delete_slot(&slot.token)?;
    }

    for entry in app.uploads.slot_files()? {
        if expire(app, &entry, "", now, retention_cutoff, &mut report)? {
            app.store.delete_slot(entry.parent_name())?;
        }
    }
    // HMAC uploads have no slot; a JWT upload's slot is named by its directory.
    let external_dirs = app.config.external.iter().map(|e| (&e.dir, false));
    let file_share_dirs = app.config.file_share.iter().map(|f| (&f.dir, true));
    for (dir, has_slots) in external_dirs.chain(file_share_dirs) {
        for entry in app.uploads.tree_files(dir)? {
            if expire(app, &entry, dir, now, retention_cutoff, &mut report)? && has_slots {
                app.store.delete_slot(entry.parent_name())?;
            }
        }
    }
    // Slots of uploads whose file is gone by other means.
    app.store.delete_uploaded_before(retention_cutoff)?;
    Ok(report)
}

/// Removes `entry` if it is a stale temporary file or a file past retention; true when it
/// removed a stored file.
fn expire(
    app: &App,
    entry: &Entry,
    area: &str,
    now: i64,
    retention_cutoff: i64,
    report: &mut Report,
) -> Result<bool, Error> {
    let modified = unix_seconds(entry.modified);
    let shown = entry
        .path
        .strip_prefix(app.uploads.root())
        .unwrap_or(&entry.path)
        .display()
        .to_string();
    if entry.is_partial() {
        if modified <= now.saturating_sub(TRANSFER_GRACE) {
            app.uploads.remove_entry(entry, area)?;
            report.stale_parts.push(shown);
        }
        return Ok(false);
    }
    if modified > retention_cutoff {
        return Ok(false);
    }
    app.uploads.remove_entry(entry, area)?;
    report.expired_files.push(shown);
    Ok(true)
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}
