//! Expiry: slots nobody used, uploads that never landed, files past retention, and the token
//! directories they leave empty. Safe to run while the server serves: it only removes what no
//! request can still complete, and `files` never removes a directory that is not empty.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::App;
use crate::files::PART_SUFFIX;
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
    /// Files past retention, as `token/name`.
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
    let retention = i64::try_from(app.config.retention).unwrap_or(i64::MAX);

    for slot in app
        .store
        .unconfirmed_before(now.saturating_sub(put_timeout))?
    {
        if let Some(modified) = app.uploads.modified(&slot.token, &slot.name) {
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
        app.uploads.remove_dir_if_empty(&slot.token);
    }

    let retention_cutoff = now.saturating_sub(retention);
    for (token, name, modified) in app.uploads.list()? {
        let modified = unix_seconds(modified);
        if name.starts_with('.') && name.ends_with(PART_SUFFIX) {
            if modified <= now.saturating_sub(TRANSFER_GRACE) {
                app.uploads.remove_listed(&token, &name)?;
                report.stale_parts.push(format!("{token}/{name}"));
            }
        } else if modified <= retention_cutoff {
            app.uploads.remove_listed(&token, &name)?;
            app.store.delete_slot(&token)?;
            report.expired_files.push(format!("{token}/{name}"));
        } else {
            continue;
        }
        app.uploads.remove_dir_if_empty(&token);
    }
    // Slots of uploads whose file is gone by other means.
    app.store.delete_uploaded_before(retention_cutoff)?;
    Ok(report)
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        .try_into()
        .unwrap_or(i64::MAX)
}
