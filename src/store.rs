//! The SQLite database: the only module that speaks SQL.
//!
//! One table of slots. Quota decisions run in one `BEGIN IMMEDIATE` transaction (read usage,
//! check, insert), so several processes sharing the file (mod_fcgid spawns many) cannot both
//! pass a limit. WAL lets readers run beside the one writer; the busy timeout makes writers of
//! different processes wait for each other instead of failing. Within one process all writes
//! go through one connection behind a mutex: threads queue on the mutex instead of meeting in
//! SQLite's busy handler, which sleeps in steps of up to 100 ms (measured: p99 of 90 ms at 16
//! connections before, 19 ms after). The schema version lives in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::refusal::{Error, Outcome, Refusal, RefusalKind};
use crate::rules::{Limits, Usage, check_quota};

/// How long a writer waits for another process's transaction before giving up (→ 503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection opened on a WAL larger than this checkpoints it first (about 30 slot requests
/// of CGI processes, each of which reads the WAL on start).
const WAL_CHECKPOINT_AT: u64 = 256 * 1024;
/// What is left of the WAL file after it starts over.
const WAL_KEPT_BYTES: i64 = 64 * 1024;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: slots.
    "CREATE TABLE slot (
        token        TEXT PRIMARY KEY,
        jid          TEXT NOT NULL,
        name         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        content_type TEXT,
        created      INTEGER NOT NULL, -- unix seconds
        authorized   INTEGER,          -- first PUT allowed; counts for quotas from then on
        uploaded     INTEGER           -- the file is known to be complete on disk
    );
    CREATE INDEX slot_jid_created ON slot (jid, created);
    CREATE INDEX slot_created ON slot (created);",
    // 2: uploads of the JWT protocol live under a prefix directory and carry their own expiry.
    "ALTER TABLE slot ADD COLUMN area TEXT;     -- NULL: <upload_root>/<token>/<name>; else <area>/<token>/<name>
    ALTER TABLE slot ADD COLUMN expires INTEGER; -- delete the file at this time (unix seconds)
    CREATE INDEX slot_expires ON slot (expires) WHERE expires IS NOT NULL;",
    // 3: fewer pages written per slot, and a quota read that needs no table lookups:
    // the table is keyed by token alone (no rowid, no second index on token), the usage index
    // covers what the quota query reads, and the index on `created` (cleanup only) is gone.
    "CREATE TABLE slot_v3 (
        token        TEXT PRIMARY KEY,
        jid          TEXT NOT NULL,
        name         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        content_type TEXT,
        created      INTEGER NOT NULL,
        authorized   INTEGER,
        uploaded     INTEGER,
        area         TEXT,
        expires      INTEGER
    ) WITHOUT ROWID;
    INSERT INTO slot_v3 SELECT token, jid, name, size, content_type, created, authorized,
        uploaded, area, expires FROM slot;
    DROP TABLE slot;
    ALTER TABLE slot_v3 RENAME TO slot;
    CREATE INDEX slot_usage ON slot (jid, created, authorized, size);
    CREATE INDEX slot_expires ON slot (expires) WHERE expires IS NOT NULL;",
];

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
}

/// The columns `slot_from_row` reads, in its order.
const SLOT_COLUMNS: &str =
    "token, jid, name, size, content_type, created, authorized, uploaded, area, expires";

/// A handle on the database, shared by all request threads: pooled connections for reads,
/// one connection for writes.
pub struct Store {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    /// Opened on first use; every write transaction of this process runs on it, one at a time.
    writer: Mutex<Option<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let store = Store {
            path: path.to_path_buf(),
            readers: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
        };
        store.with_writer(migrate)?;
        Ok(store)
    }

    fn connect(&self) -> Result<Connection, Error> {
        let context = || format!("opening database {}", self.path.display());
        let conn = Connection::open(&self.path).map_err(|e| Error::sqlite(context(), e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| Error::sqlite(context(), e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| Error::sqlite(context(), e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| Error::sqlite(context(), e))?;
        // The last connection of a process would checkpoint the WAL into the database and
        // delete it on close: 4 fsyncs and a file created and removed per CGI request, which
        // cost more than the request itself. Instead the WAL stays between processes; a
        // connection opened on a WAL grown past `WAL_CHECKPOINT_AT` checkpoints it first
        // (passively: it never waits for another process), after which the next commit starts
        // the WAL over, cut to `journal_size_limit`. A long-running FastCGI process also
        // checkpoints every 1000 pages as usual. Durability is that of WAL with `synchronous =
        // NORMAL`, in every mode: a commit survives the program's crash; an OS crash or power
        // loss may roll back the commits since the last checkpoint (slots granted in the last
        // moments, never a stored file), and the database stays consistent.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| Error::sqlite(context(), e))?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEPT_BYTES)
            .map_err(|e| Error::sqlite(context(), e))?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_CHECKPOINT_AT) {
            // Busy (another process checkpoints or writes): the next connection tries again.
            let checkpoint = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            if let Err(e) = checkpoint {
                log::debug!("checkpoint of {} skipped: {e}", self.path.display());
            }
        }
        Ok(conn)
    }

    /// Runs a read on a pooled connection (opening one if none is idle) and returns it to the pool.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let result = f(&mut conn);
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        result
    }

    /// Runs a write on the process's one writing connection. The time spent queueing for it
    /// counts against the busy timeout, so that a database locked by another process answers
    /// every waiting request within `BUSY_TIMEOUT` (503), not one timeout after another.
    /// (A panic inside `f` poisons the mutex; the connection is still sound — its open
    /// transaction rolled back on unwind.)
    fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let queued = Instant::now();
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let left = BUSY_TIMEOUT.saturating_sub(queued.elapsed());
        if left.is_zero() {
            let busy = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY);
            return Err(Error::sqlite(
                "waiting for the database",
                rusqlite::Error::SqliteFailure(busy, None),
            ));
        }
        let conn = match writer.as_mut() {
            Some(conn) => conn,
            None => writer.insert(self.connect()?),
        };
        conn.busy_timeout(left)
            .map_err(|e| Error::sqlite("setting the busy timeout", e))?;
        f(conn)
    }

    /// Records a new slot if `limits` allow it (its size, and next to what `slot.jid` already holds).
    /// Usage counts slots that were authorized (uploads) and unused slots younger than
    /// `put_timeout`; read, check and insert happen in one `BEGIN IMMEDIATE` transaction.
    pub fn reserve_slot(
        &self,
        slot: &Slot,
        limits: &Limits,
        put_timeout: u64,
    ) -> Result<(), Outcome> {
        // SQLite integers are signed: a size it cannot hold is one no upload can have.
        let Ok(stored_size) = i64::try_from(slot.size) else {
            return Err(Refusal::new(
                RefusalKind::TooLarge,
                format!("size {} is larger than {}", slot.size, i64::MAX),
            )
            .into());
        };
        self.with_writer(|conn| {
            let fail = |e| Error::sqlite("reserving a slot", e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let needs_usage = limits.max_total_size.is_some()
                || limits.bytes_per_window.is_some()
                || limits.uploads_per_window.is_some();
            // Reading usage costs a query: only when a limit needs it. The size limit of one
            // file is checked either way.
            let usage = if needs_usage {
                usage(&tx, slot, limits, put_timeout).map_err(fail)?
            } else {
                Usage::default()
            };
            if let Err(refusal) = check_quota(limits, slot.size, usage) {
                return Ok(Err(refusal));
            }
            tx.execute(
                "INSERT INTO slot (token, jid, name, size, content_type, created, authorized, area, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    slot.token,
                    slot.jid,
                    slot.name,
                    stored_size,
                    slot.content_type,
                    slot.created,
                    slot.authorized,
                    slot.area,
                    slot.expires
                ],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
            Ok(Ok(()))
        })?
        .map_err(Outcome::Refused)
    }

    /// The slot with this token, if any.
    pub fn slot(&self, token: &str) -> Result<Option<Slot>, Error> {
        self.with_reader(|conn| {
            conn.query_row(
                &format!("SELECT {SLOT_COLUMNS} FROM slot WHERE token = ?1"),
                [token],
                slot_from_row,
            )
            .optional()
            .map_err(|e| Error::sqlite("looking up a slot", e))
        })
    }

    /// Notes the first time a PUT for this slot was allowed (from then on it counts as an upload).
    pub fn mark_authorized(&self, token: &str, now: i64) -> Result<(), Error> {
        self.execute(
            "marking a slot authorized",
            "UPDATE slot SET authorized = COALESCE(authorized, ?2) WHERE token = ?1",
            params![token, now],
        )
    }

    /// Notes that the slot's file is complete on disk.
    pub fn mark_uploaded(&self, token: &str, when: i64) -> Result<(), Error> {
        self.execute(
            "marking a slot uploaded",
            "UPDATE slot SET authorized = COALESCE(authorized, ?2), uploaded = COALESCE(uploaded, ?2)
             WHERE token = ?1",
            params![token, when],
        )
    }

    /// Forgets a slot.
    pub fn delete_slot(&self, token: &str) -> Result<(), Error> {
        self.execute(
            "deleting a slot",
            "DELETE FROM slot WHERE token = ?1",
            params![token],
        )
    }

    /// Slots created at or before `cutoff` whose upload was never confirmed: unused ones
    /// (never authorized) and ones whose authorized PUT may or may not have landed.
    pub fn unconfirmed_before(&self, cutoff: i64) -> Result<Vec<Slot>, Error> {
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {SLOT_COLUMNS} FROM slot WHERE uploaded IS NULL AND created <= ?1"
                ))
                .map_err(|e| Error::sqlite("listing expired slots", e))?;
            let rows = stmt
                .query_map([cutoff], slot_from_row)
                .map_err(|e| Error::sqlite("listing expired slots", e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::sqlite("listing expired slots", e))
        })
    }

    /// Uploads whose own expiry (JWT `expires`) is at or before `now`.
    pub fn expiring_before(&self, now: i64) -> Result<Vec<Slot>, Error> {
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("listing expiring uploads", e);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {SLOT_COLUMNS} FROM slot WHERE expires <= ?1"
                ))
                .map_err(fail)?;
            let rows = stmt.query_map([now], slot_from_row).map_err(fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fail)
        })
    }

    /// Deletes the slots of uploads confirmed at or before `cutoff` (their files are past
    /// retention); returns how many.
    pub fn delete_uploaded_before(&self, cutoff: i64) -> Result<usize, Error> {
        self.with_writer(|conn| {
            conn.execute("DELETE FROM slot WHERE uploaded <= ?1", [cutoff])
                .map_err(|e| Error::sqlite("deleting old uploads", e))
        })
    }

    /// One write statement.
    fn execute(&self, what: &str, sql: &str, params: impl rusqlite::Params) -> Result<(), Error> {
        self.with_writer(|conn| {
            conn.execute(sql, params)
                .map(|_| ())
                .map_err(|e| Error::sqlite(what, e))
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let fail = |e| Error::sqlite("migrating the database schema", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(fail)?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Error::io(
            "checking the database schema",
            std::io::Error::other(format!(
                "database schema version {version} is newer than this program knows ({}); \
                 upgrade the program",
                MIGRATIONS.len()
            )),
        ));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)
            .map_err(fail)?;
    }
    tx.commit().map_err(fail)
}

/// What `slot.jid` holds now: summed in Rust with saturating arithmetic (sizes go up to 2^63-1,
/// SQLite's SUM would overflow).
fn usage(
    tx: &rusqlite::Transaction,
    slot: &Slot,
    limits: &Limits,
    put_timeout: u64,
) -> rusqlite::Result<Usage> {
    let now = slot.created;
    let since = |seconds: u64| now.saturating_sub(i64::try_from(seconds).unwrap_or(i64::MAX));
    let unused_cutoff = since(put_timeout);
    let bytes_since = limits.bytes_per_window.map(|w| since(w.seconds));
    let uploads_since = limits.uploads_per_window.map(|w| since(w.seconds));
    let mut stmt = tx.prepare_cached(
        "SELECT size, created FROM slot
         WHERE jid = ?1 AND (authorized IS NOT NULL OR created > ?2)",
    )?;
    let mut rows = stmt.query(params![slot.jid, unused_cutoff])?;
    let mut usage = Usage::default();
    while let Some(row) = rows.next()? {
        let size = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
        let created: i64 = row.get(1)?;
        usage.total_bytes = usage.total_bytes.saturating_add(size);
        if bytes_since.is_some_and(|t| created > t) {
            usage.window_bytes = usage.window_bytes.saturating_add(size);
        }
        if uploads_since.is_some_and(|t| created > t) {
            usage.window_uploads += 1;
        }
    }
    Ok(usage)
}

fn slot_from_row(row: &rusqlite::Row) -> rusqlite::Result<Slot> {
    Ok(Slot {
        token: row.get(0)?,
        jid: row.get(1)?,
        name: row.get(2)?,
        size: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        content_type: row.get(4)?,
        created: row.get(5)?,
        authorized: row.get(6)?,
        uploaded: row.get(7)?,
        area: row.get(8)?,
        expires: row.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::RefusalKind;
    use crate::rules::Window;

    fn temp_db(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xhu-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("db.sqlite3")
    }

    fn slot(token: &str, size: u64, created: i64) -> Slot {
        Slot {
            token: token.into(),
            jid: "a@b".into(),
            name: "f".into(),
            size,
            content_type: None,
            created,
            authorized: None,
            uploaded: None,
            area: None,
            expires: None,
        }
    }

    #[test]
    fn quota_counts_uploads_and_fresh_slots_only() {
        let path = temp_db("quota");
        let store = Store::open(&path).unwrap();
        let limits = Limits {
            max_total_size: Some(10),
            ..Limits::default()
        };
        store
            .reserve_slot(&slot("t1", 6, 1000), &limits, 360)
            .unwrap();
        // 6 + 5 > 10 while t1 is fresh.
        let refused = store.reserve_slot(&slot("t2", 5, 1100), &limits, 360);
        assert!(matches!(refused, Err(Outcome::Refused(r)) if r.kind == RefusalKind::Forbidden));
        // t1 expired unused: it no longer counts.
        store
            .reserve_slot(&slot("t3", 10, 2000), &limits, 360)
            .unwrap();
        store.mark_authorized("t3", 2001).unwrap();
        let refused = store.reserve_slot(&slot("t4", 1, 9000), &limits, 360);
        assert!(refused.is_err());
        // Reopening migrates nothing twice.
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.slot("t3").unwrap().unwrap().authorized, Some(2001));
        assert!(store.slot("t2").unwrap().is_none());
    }

    #[test]
    fn file_size_limit_alone_is_checked() {
        let store = Store::open(&temp_db("size")).unwrap();
        let limits = Limits {
            max_file_size: Some(5),
            ..Limits::default()
        };
        store
            .reserve_slot(&slot("s1", 5, 1000), &limits, 360)
            .unwrap();
        let refused = store.reserve_slot(&slot("s2", 6, 1000), &limits, 360);
        assert!(matches!(refused, Err(Outcome::Refused(r)) if r.kind == RefusalKind::TooLarge));
    }

    #[test]
    fn migrating_an_old_database_keeps_its_slots() {
        let path = temp_db("migrate");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO slot (token, jid, name, size, created, authorized) VALUES ('t', 'a@b', 'f', 7, 100, 101)",
            [],
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        let slot = store.slot("t").unwrap().unwrap();
        assert_eq!(
            (slot.size, slot.authorized, slot.area),
            (7, Some(101), None)
        );
    }

    #[test]
    fn sizes_beyond_i64_are_refused_not_wrapped() {
        let store = Store::open(&temp_db("huge")).unwrap();
        let refused = store.reserve_slot(&slot("h", u64::MAX, 1000), &Limits::default(), 360);
        assert!(matches!(refused, Err(Outcome::Refused(r)) if r.kind == RefusalKind::TooLarge));
        assert!(store.slot("h").unwrap().is_none());
    }

    #[test]
    fn window_quota() {
        let store = Store::open(&temp_db("window")).unwrap();
        let limits = Limits {
            uploads_per_window: Some(Window {
                seconds: 100,
                amount: 2,
            }),
            ..Limits::default()
        };
        store
            .reserve_slot(&slot("w1", 1, 1000), &limits, 360)
            .unwrap();
        store
            .reserve_slot(&slot("w2", 1, 1010), &limits, 360)
            .unwrap();
        let refused = store.reserve_slot(&slot("w3", 1, 1020), &limits, 360);
        assert!(
            matches!(refused, Err(Outcome::Refused(r)) if r.kind == RefusalKind::QuotaExceeded)
        );
        store
            .reserve_slot(&slot("w4", 1, 1101), &limits, 360)
            .unwrap();
    }
}
