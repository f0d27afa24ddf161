//! The database behind one interface: `Backend`, implemented by SQLite (`sqlite.rs`, the
//! embedded default: a path) and PostgreSQL (`postgres.rs`: a `postgres://` URL, shared by
//! several hosts). Here: the shared types, which store `database` names (`Location`), and the
//! quota decision both stores run inside their transaction (`Quota`, whose arithmetic is
//! `rules::decide_quota`). No SQL here: each store owns its statements, its schema versions
//! and the meaning of its error codes.

mod group_commit;
mod pg_tls;
mod pg_url;
mod postgres;
mod sqlite;

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use crate::refusal::{Error, Outcome, Refusal, RefusalKind};
use crate::rules::{Held, Limits, decide_quota, needs_usage};

/// A counter to raise by one with the write that records what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// The metric name without the `xmpp_http_upload_` prefix.
    pub name: &'static str,
    /// The rendered, escaped label set (may be empty).
    pub labels: &'static str,
}

/// A slot handed out by the slot API.
pub const SLOT_GRANTED: Tally = Tally {
    name: "slots_granted_total",
    labels: "",
};
/// A PUT of a slot-API slot allowed.
pub const PUT_ALLOWED_SLOT: Tally = Tally {
    name: "puts_allowed_total",
    labels: "protocol=\"slot\"",
};
/// A PUT of the HMAC protocol allowed.
pub const PUT_ALLOWED_HMAC: Tally = Tally {
    name: "puts_allowed_total",
    labels: "protocol=\"hmac\"",
};
/// A PUT of the JWT protocol allowed.
pub const PUT_ALLOWED_JWT: Tally = Tally {
    name: "puts_allowed_total",
    labels: "protocol=\"jwt\"",
};

/// How long a signed path stays refused after its file went at retention.
pub const SIGNED_TOMBSTONE_KEEP: i64 = 365 * 86_400;

/// A slot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub token: String,
    pub jid: String,
    pub name: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub created: i64,
    pub authorized: Option<i64>,
    pub uploaded: Option<i64>,
    /// Directory under the upload root for uploads of the JWT protocol; `None` for slot-API slots.
    pub area: Option<String>,
    /// When the file is to be deleted (JWT `expires`); `None`: by retention only.
    pub expires: Option<i64>,
    /// Seconds after `uploaded` that the file is kept (the allowing rule's `retention`);
    /// `None`: the global `retention`.
    pub retention: Option<i64>,
}

/// A purged slot whose file cleanup still has to make sure is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    pub token: String,
    /// As `Slot::area`.
    pub area: Option<String>,
    pub name: String,
    /// When it was purged (unix seconds).
    pub purged: i64,
}

/// The quota decision a store runs inside the transaction that records a slot: the store
/// reads what the JID holds (`unused_since` says which unused slots still count), hands it to
/// `decide`, and records the slot only when that says yes. It owns what it needs, so that a
/// store may hand it to another thread (a writer that batches decisions).
#[derive(Debug, Clone)]
pub struct Quota {
    limits: Limits,
    size: u64,
    now: i64,
    unused_since: i64,
}

impl Quota {
    /// False when no limit needs the JID's usage: the store need not read it.
    pub fn needs_usage(&self) -> bool {
        needs_usage(&self.limits)
    }
    /// Unused slots created at or before this still count? No: only those created after it
    /// (younger than `put_timeout`) and every authorized one count.
    pub fn unused_since(&self) -> i64 {
        self.unused_since
    }
    /// Yes, or the refusal (with its `Retry-After`), given the `(created, size)` of every
    /// upload and counting unused slot of the JID.
    pub fn decide(&self, held: &[Held]) -> Result<(), Refusal> {
        decide_quota(&self.limits, self.size, self.now, held)
    }
}

/// Which database `database` names: a path is SQLite's file, a `postgres://` (or
/// `postgresql://`) URL a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// Reads the `database` setting: a URL of PostgreSQL (checked by the client's own parser),
    /// or else an absolute path. The error is one line, without the password.
    pub fn parse(text: &str) -> Result<Location, String> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            // `sslmode` and `sslrootcert` are libpq's, read by `pg_tls`; the rest the client's.
            return match pg_tls::read_url(text) {
                Ok((url, _)) => match url.parse::<::postgres::Config>() {
                    Ok(_) => Ok(Location::Postgres(text.to_string())),
                    Err(e) => Err(format!(
                        "{} is not a PostgreSQL URL: {e}",
                        pg_url::redact(text)
                    )),
                },
                Err(e) => Err(format!("{}: {e}", pg_url::redact(text))),
            };
        }
        let path = PathBuf::from(text);
        if !path.is_absolute() {
            // A URL of another scheme (a typo) may hold a password too.
            let shown = if text.contains("://") {
                pg_url::redact(text)
            } else {
                text.to_string()
            };
            return Err(format!(
                "{shown} is neither an absolute path (SQLite) nor a postgres:// URL"
            ));
        }
        Ok(Location::Sqlite(path))
    }

    /// The SQLite file, if that is what this names.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    /// For logs and `check-config`: the path, or the URL with its password hidden.
    pub fn display(&self) -> impl fmt::Display + '_ {
        struct Shown<'a>(&'a Location);
        impl fmt::Display for Shown<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Location::Sqlite(path) => write!(f, "{}", path.display()),
                    Location::Postgres(url) => write!(f, "{}", pg_url::redact(url)),
                }
            }
        }
        Shown(self)
    }
}

/// The checks of a PUT on its slot, run inside `Backend::authorize_first_put`'s transaction.
pub type PutCheck = Box<dyn Fn(&Slot) -> Result<(), Refusal> + Send + Sync>;

/// `authorize_first_put` once a store has read the slot (`None`: there is none), inside its
/// transaction: `check` it, then `authorize` it (true: this call recorded the authorization,
/// false: an earlier PUT had).
fn first_put<E>(
    slot: Option<Slot>,
    check: &PutCheck,
    authorize: impl FnOnce() -> Result<bool, E>,
) -> Result<Result<Option<Slot>, Refusal>, E> {
    let Some(slot) = slot else {
        return Ok(Ok(None));
    };
    if let Err(refusal) = check(&slot) {
        return Ok(Err(refusal));
    }
    if !authorize()? {
        return Ok(Err(Refusal::already_authorized(&slot.name)));
    }
    Ok(Ok(Some(slot)))
}

/// What every store does. The methods are the program's whole use of the database; each is
/// one transaction, so a failure leaves nothing half-written.
pub trait Backend: Send + Sync {
    /// Records `slot` if `quota.decide` allows it, on what `slot.jid` holds read in the same
    /// transaction (so that no two processes or hosts both pass a limit), with the counter of
    /// what it is: a slot recorded already authorized is a JWT PUT allowed
    /// (`PUT_ALLOWED_JWT`), any other a slot granted (`SLOT_GRANTED`). A token recorded
    /// already is a 409 (`Refusal::already_authorized`).
    fn reserve_slot(&self, slot: &Slot, quota: &Quota) -> Result<(), Outcome>;

    /// The slot with this token, if any.
    fn slot(&self, token: &str) -> Result<Option<Slot>, Error>;

    /// The whole decision on a PUT whose body the web server writes, in one transaction:
    /// reads the slot of `token`, hands it to `check` (the PUT's checks, which read nothing
    /// else; a refusal writes nothing), then records the authorization and counts the PUT
    /// allowed. `Ok(None)`: no slot has this token. One authorization per slot, however many
    /// PUTs race (one `UPDATE ... WHERE authorized IS NULL` decides): an earlier PUT may still
    /// be writing, and nginx renames each finished body into place, so a second body would
    /// replace the first; the losers are refused as `Refusal::already_authorized`. (`check` may run
    /// more than once: a store may retry a transaction that could not begin.)
    fn authorize_first_put(
        &self,
        token: &str,
        now: i64,
        check: PutCheck,
    ) -> Result<Option<Slot>, Outcome>;

    /// Records that a PUT of the HMAC protocol was allowed for `path` (relative to the upload
    /// root). With `once` (the web server writes the body) only the first call for a path
    /// succeeds; without (the program writes, and never overwrites) a repeated call keeps the
    /// first record and succeeds too, unless its file went at retention. True when the PUT may
    /// go ahead; then `tally`, if any, is raised in the same transaction.
    fn claim_signed_path(
        &self,
        path: &str,
        size: u64,
        now: i64,
        once: bool,
        tally: Option<Tally>,
    ) -> Result<bool, Error>;

    /// When the PUT of a signed `path` was allowed, if it was recorded.
    fn signed_upload_authorized(&self, path: &str) -> Result<Option<i64>, Error>;

    /// Signed uploads allowed at or before `cutoff` whose file has not gone yet: their paths
    /// relative to the upload root, and when they were allowed.
    fn signed_uploads_before(&self, cutoff: i64) -> Result<Vec<(String, i64)>, Error>;

    /// Notes that the file of a signed upload went (at retention): from now on its path is
    /// refused, until `forget_signed_tombstones` drops the note.
    fn mark_signed_removed(&self, path: &str, now: i64) -> Result<(), Error>;

    /// Drops the notes of signed uploads whose file went at or before `cutoff`; how many.
    fn forget_signed_tombstones(&self, cutoff: i64) -> Result<usize, Error>;

    /// Forgets the record of a signed upload.
    fn delete_signed_upload(&self, path: &str) -> Result<(), Error>;

    /// Notes the first time a PUT for this slot was allowed (from then on it counts as an
    /// upload), and counts the PUT allowed, in one transaction.
    fn mark_authorized(&self, token: &str, now: i64) -> Result<(), Error>;

    /// Raises the counter `name{labels}` by one in a write of its own (refusals, cleanup runs:
    /// what no other write records).
    fn count(&self, name: &str, labels: &str) -> Result<(), Error>;

    /// Every counter: name, rendered labels, value; by name, then labels.
    fn counters(&self) -> Result<Vec<(String, String, u64)>, Error>;

    /// Files stored or landing (a PUT was allowed, the file has not gone) and their bytes, by
    /// protocol: `[slot, jwt, hmac]`.
    fn stored(&self) -> Result<[(u64, u64); 3], Error>;

    /// Notes that the slot's file is complete on disk. False when the slot is gone (purged
    /// while its body was on its way): the caller removes the file it just stored.
    fn mark_uploaded(&self, token: &str, when: i64) -> Result<bool, Error>;

    /// Forgets a slot.
    fn delete_slot(&self, token: &str) -> Result<(), Error>;

    /// Slots whose upload is not confirmed: every authorized one (its PUT may or may not have
    /// landed), and the unused ones created at or before `cutoff`.
    fn unconfirmed(&self, cutoff: i64) -> Result<Vec<Slot>, Error>;

    /// Uploads whose own expiry (JWT `expires`) is at or before `now`.
    fn expiring_before(&self, now: i64) -> Result<Vec<Slot>, Error>;

    /// Slots whose upload is past its retention at `now`: its own (recorded from the rule that
    /// allowed it) or else `default_retention` (seconds after the recorded upload).
    fn past_retention(&self, now: i64, default_retention: i64) -> Result<Vec<Slot>, Error>;

    /// Records new retentions (`cleanup --reapply-rules`), all in one transaction.
    fn set_retentions(&self, changes: &[(String, Option<i64>)]) -> Result<(), Error>;

    /// Every slot of `jid` (lower-cased bare JID), oldest first.
    fn slots_of(&self, jid: &str) -> Result<Vec<Slot>, Error>;

    /// Forgets every slot of `jid` in one transaction and returns them. Each is remembered
    /// in `purged` (see `purged`), so that a file still landing or not removable now is
    /// removed by cleanup later; the caller forgets those it removed (`forget_purged`).
    fn purge_jid(&self, jid: &str, now: i64) -> Result<Vec<Slot>, Error>;

    /// The files of purged slots that may still be on disk.
    fn purged(&self) -> Result<Vec<Purged>, Error>;

    /// Forgets a purged slot whose file is known to be gone.
    fn forget_purged(&self, token: &str) -> Result<(), Error>;

    /// Calls `f` with every slot, in no particular order (for `usage` and `check`: one pass,
    /// no list of all slots in memory).
    fn for_each_slot(&self, f: &mut dyn FnMut(Slot)) -> Result<(), Error>;

    /// Every recorded upload of the HMAC protocol whose file has not gone: (path, size, authorized).
    fn signed_uploads(&self) -> Result<Vec<(String, u64, i64)>, Error>;

    /// Corrects the recorded size of a slot to what is on disk (`check --repair`).
    fn set_slot_size(&self, token: &str, size: u64) -> Result<(), Error>;

    /// Corrects the recorded size of a signed upload to what is on disk (`check --repair`).
    fn set_signed_upload_size(&self, path: &str, size: u64) -> Result<(), Error>;
}

/// A handle on the database named by `database`, shared by all request threads. Its methods
/// are those of `Backend` (through `Deref`), and two that take friendlier arguments.
pub struct Store(Box<dyn Backend>);

impl Store {
    /// What `check-config` says of the database beyond the file permissions it checks itself
    /// (`Config::unreachable`): for PostgreSQL, what connecting and reading found
    /// (`postgres::check`), one line, `Err` when the program could not start on it. SQLite:
    /// `Ok(None)` (opening the file would create its `-wal`/`-shm` beside it, as whichever
    /// user runs `check-config`).
    pub fn check(location: &Location) -> Result<Option<String>, String> {
        match location {
            Location::Sqlite(_) => Ok(None),
            Location::Postgres(url) => postgres::check(url).map(Some),
        }
    }

    /// Opens the database (creating it if needed: SQLite's file, or PostgreSQL's tables in
    /// an existing database) and brings its schema up to date.
    pub fn open(location: &Location) -> Result<Store, Error> {
        Ok(match location {
            Location::Sqlite(path) => Store(Box::new(sqlite::Store::open(path)?)),
            Location::Postgres(url) => Store(Box::new(postgres::Store::open(url)?)),
        })
    }

    /// Records a new slot if `limits` allow it (its size, and next to what `slot.jid` already
    /// holds: its uploads and its unused slots younger than `put_timeout`); see
    /// `Backend::reserve_slot`.
    pub fn reserve_slot(
        &self,
        slot: &Slot,
        limits: &Limits,
        put_timeout: i64,
    ) -> Result<(), Outcome> {
        // Both stores keep sizes as signed 64-bit integers: a size they cannot hold is one no
        // upload can have.
        if i64::try_from(slot.size).is_err() {
            return Err(Refusal::new(
                RefusalKind::TooLarge,
                format!("size {} is larger than {}", slot.size, i64::MAX),
            )
            .into());
        }
        let quota = Quota {
            limits: limits.clone(),
            size: slot.size,
            now: slot.created,
            unused_since: slot.created.saturating_sub(put_timeout),
        };
        self.0.reserve_slot(slot, &quota)
    }

    /// Calls `f` with every slot; see `Backend::for_each_slot`.
    pub fn for_each_slot(&self, mut f: impl FnMut(Slot)) -> Result<(), Error> {
        self.0.for_each_slot(&mut f)
    }
}

impl Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &(dyn Backend + 'static) {
        &*self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_postgres_a_path_sqlite_and_the_password_never_shows() {
        assert_eq!(
            Location::parse("/var/lib/x/db.sqlite3"),
            Ok(Location::Sqlite("/var/lib/x/db.sqlite3".into()))
        );
        assert!(Location::parse("db.sqlite3").is_err());
        let url = "postgres://up:s3cret@db.example:5432/uploads?password=s3cret&sslmode=disable";
        let location = Location::parse(url).unwrap();
        assert!(location.sqlite_path().is_none());
        let shown = location.display().to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            shown,
            "postgres://up:***@db.example:5432/uploads?password=***&sslmode=disable"
        );
        let bad = Location::parse("postgres://up:s3cret@host/db?nonsense=1").unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
    }

    #[test]
    fn a_password_is_hidden_however_it_is_spelled() {
        // The client's parser ends the password at the first `@`, wherever a `/` or `?` is.
        for url in [
            "postgres://up:s3/cret@db.example/uploads",
            "postgres://up:s3?cret@db.example/uploads",
            "postgres://up:s3cret@db.example/uploads?pass%77ord=s3cret",
        ] {
            let location = Location::parse(url).unwrap();
            let shown = location.display().to_string();
            assert!(!shown.contains("cret"), "{url}: {shown}");
            assert!(shown.contains("db.example"), "{url}: {shown}");
        }
        // Nor when the scheme is mistyped: the error names the URL without it.
        let bad = Location::parse("postgre://up:s3cret@db.example/uploads").unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
    }
}
