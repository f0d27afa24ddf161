//! The SQLite store (`Backend` over one database file): the embedded default, for one host.
//!
//! One table of slots. Quota decisions run in one `BEGIN IMMEDIATE` transaction (read usage,
//! check, insert), so several processes sharing the file (mod_fcgid spawns many) cannot both
//! pass a limit. WAL lets readers run beside the one writer; the busy timeout makes writers of
//! different processes wait for each other instead of failing. Within one process all writes
//! go through one connection (`group_commit`): threads queue for it instead of meeting in
//! SQLite's busy handler, which sleeps in steps of up to 100 ms (measured: p99 of 90 ms at 16
//! connections before, 19 ms after), and the decisions of concurrent requests share one
//! transaction and one commit. The schema version lives in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::group_commit::{Counts, Writer};
use super::{
    Backend, PUT_ALLOWED_JWT, PUT_ALLOWED_SLOT, Purged, PutCheck, Quota, SLOT_GRANTED, Slot, Tally,
    first_put,
};
use crate::refusal::{DatabaseFailure, Error, Outcome, Refusal};
use crate::rules::Held;

/// How long a writer waits for another process's transaction before giving up (→ 503).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection opened on a WAL larger than this checkpoints it first (about 30 slot requests
/// of CGI processes, each of which reads the WAL on start).
const WAL_CHECKPOINT_AT: u64 = 256 * 1024;
/// The page cache of one connection, in KiB.
const CACHE_KIB: i64 = 512;
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
    // 4: uploads of the HMAC protocol have no slot. Each signed path the program allowed is
    // recorded once: a second PUT of the same URL cannot be allowed while the first may still
    // be writing, and retention counts from `authorized` (our clock), not from the file's mtime
    // (nginx sets that from the client's `Date` header).
    "CREATE TABLE signed_upload (
        path       TEXT PRIMARY KEY, -- relative to upload_root: <prefix dir>/<segments...>
        size       INTEGER NOT NULL,
        authorized INTEGER NOT NULL  -- unix seconds: the PUT was allowed
    ) WITHOUT ROWID;
    CREATE INDEX signed_upload_authorized ON signed_upload (authorized);",
    // 5: `purge` forgets a JID's slots at once; a file of one of them that may still land (its
    // PUT was allowed, the web server may still be writing it) or that could not be removed
    // is remembered here until cleanup has removed it.
    "CREATE TABLE purged (
        token  TEXT PRIMARY KEY,
        area   TEXT,             -- as in slot
        name   TEXT NOT NULL,
        purged INTEGER NOT NULL  -- unix seconds
    ) WITHOUT ROWID;",
    // 6: the retention of the rule that allowed the upload, recorded with it, so that a later
    // change of the rule neither extends nor cuts what was promised (`cleanup --reapply-rules`
    // applies the rules as they stand). NULL: the global `retention` when cleanup runs.
    "ALTER TABLE slot ADD COLUMN retention INTEGER; -- seconds after `uploaded`",
    // 7: an approval is never forgotten while its body could still land (nginx bounds only the
    // pause between two reads of a body, not its whole time): a signed path whose file went at
    // retention stays refused for `SIGNED_TOMBSTONE_KEEP` (HMAC URLs carry no expiry of their
    // own). Slots need no column: an allowed slot keeps its row until its retention.
    "ALTER TABLE signed_upload ADD COLUMN removed INTEGER; -- unix seconds: its file went
    CREATE INDEX signed_upload_removed ON signed_upload (removed) WHERE removed IS NOT NULL;",
    // 8: counters for `<slot_prefix>/metrics`, shared by every process on the database and kept
    // across restarts. `labels` is the rendered label set (`protocol="slot",reason="gone"`).
    "CREATE TABLE counter (
        name   TEXT NOT NULL,
        labels TEXT NOT NULL,
        value  INTEGER NOT NULL,
        PRIMARY KEY (name, labels)
    ) WITHOUT ROWID;",
];

/// Raises a counter by `?3`, inside whatever transaction it runs in (the writer's batches).
const BUMP: &str = "INSERT INTO counter (name, labels, value) VALUES (?1, ?2, ?3)
     ON CONFLICT (name, labels) DO UPDATE SET value = value + ?3";

/// Counts `tally` once, written with the batch of the write that decided it (`group_commit`).
fn bump(counts: &mut Counts, tally: Tally) {
    counts.add(tally.name, tally.labels);
}

/// The columns `slot_from_row` reads, in its order.
const SLOT_COLUMNS: &str =
    "token, jid, name, size, content_type, created, authorized, uploaded, area, expires, retention";

/// A handle on the database, shared by all request threads: pooled connections for reads,
/// one connection for writes.
pub struct Store {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    /// Every write of this process: the decisions of requests in group commit, the rest
    /// (admin, cleanup) alone on the same connection (`group_commit`).
    writer: Arc<Writer>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// A database or directory the program creates is private to its user (0600/0700,
    /// whatever the umask): it holds every token, so every download URL.
    pub fn open(path: &Path) -> Result<Store, Error> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let private = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("making {} private", p.display()), e))
        };
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            private(dir, 0o700)?;
        }
        // Made here, before SQLite would make it 0644; its -wal and -shm files take its mode.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => private(path, 0o600)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
        }
        let for_writer = path.to_path_buf();
        let mut wal = path.to_path_buf().into_os_string();
        wal.push("-wal");
        let store = Store {
            path: path.to_path_buf(),
            readers: Mutex::new(Vec::new()),
            writer: Writer::new(
                Box::new(move || Store::connect(&for_writer)),
                BUMP,
                PathBuf::from(wal),
                BUSY_TIMEOUT,
            ),
        };
        store.with_writer(migrate)?;
        Ok(store)
    }

    /// Opens a connection on the database at `path` (the writer's, a reader's, the
    /// checkpointer's), set up as every connection of the program is.
    fn connect(path: &Path) -> Result<Connection, Error> {
        let context = || format!("opening database {}", path.display());
        let conn = Connection::open(path).map_err(|e| Error::sqlite(context(), e))?;
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
        // the WAL over, cut to `journal_size_limit`. A long-running FastCGI process
        // checkpoints on a thread of its own, off the request path (`group_commit`). Durability is that of WAL with `synchronous =
        // NORMAL`, in every mode: a commit survives the program's crash; an OS crash or power
        // loss may roll back the commits since the last checkpoint (slots granted in the last
        // moments, never a stored file), and the database stays consistent.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| Error::sqlite(context(), e))?;
        conn.pragma_update(None, "journal_size_limit", WAL_KEPT_BYTES)
            .map_err(|e| Error::sqlite(context(), e))?;
        // Memory: each connection caches at most `CACHE_KIB` of pages (SQLite's default is
        // 2 MiB each, for the writer and every pooled reader); the pages it misses come from
        // the OS's page cache.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(|e| Error::sqlite(context(), e))?;
        let mut wal = path.to_path_buf().into_os_string();
        wal.push("-wal");
        if std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_CHECKPOINT_AT) {
            // Busy (another process checkpoints or writes): the next connection tries again.
            let checkpoint = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            if let Err(e) = checkpoint {
                log::debug!("checkpoint of {} skipped: {e}", path.display());
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
            None => Store::connect(&self.path)?,
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
        self.writer.exclusive(f)
    }

    /// Runs a decision's write in the writer's next batch, in `BEGIN IMMEDIATE` with the
    /// writes of other requests (`group_commit`): `f` runs in a savepoint of its own, its
    /// `Err` rolls back `f` alone, and the result comes back once the batch has committed.
    fn in_batch<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Counts) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.writer.submit(f)
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

impl Backend for Store {
    // The contract of each method is the `Backend` trait's (store/mod.rs); what is said here is
    // how SQLite keeps it.

    // Read, decide and insert in one `BEGIN IMMEDIATE` transaction: the writer lock of the
    // file is what keeps two processes from both passing a limit.
    fn reserve_slot(&self, slot: &Slot, quota: &Quota) -> Result<(), Outcome> {
        let stored_size = i64::try_from(slot.size).unwrap_or(i64::MAX);
        let tally = if slot.authorized.is_some() {
            PUT_ALLOWED_JWT
        } else {
            SLOT_GRANTED
        };
        // The batch's thread runs it: it owns what it reads.
        let (slot, quota) = (slot.clone(), quota.clone());
        self.in_batch(move |tx, counts| {
            let (slot, quota) = (&slot, &quota);
            let fail = |e| Error::sqlite("reserving a slot", e);
            // Reading usage costs a query: only when a limit needs it. The size limit of one
            // file is checked either way.
            let held = if quota.needs_usage() {
                held(tx, &slot.jid, quota.unused_since()).map_err(fail)?
            } else {
                Vec::new()
            };
            if let Err(refusal) = quota.decide(&held) {
                return Ok(Err(refusal));
            }
            // The slot may exist already: a JWT slot is recorded by its first allowed PUT, and
            // two PUTs of one token can race here. The primary key decides; the loser is a 409.
            let inserted = execute_cached(
                tx,
                "INSERT INTO slot (token, jid, name, size, content_type, created, authorized, area, expires, retention)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    slot.token,
                    slot.jid,
                    slot.name,
                    stored_size,
                    slot.content_type,
                    slot.created,
                    slot.authorized,
                    slot.area,
                    slot.expires,
                    slot.retention
                ],
            );
            match inserted {
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => return Ok(Err(Refusal::already_authorized(&slot.name))),
                Err(e) => return Err(fail(e)),
            }
            bump(counts, tally);
            Ok(Ok(()))
        })?
        .map_err(Outcome::Refused)
    }

    fn slot(&self, token: &str) -> Result<Option<Slot>, Error> {
        self.with_reader(|conn| {
            // Cached: every PUT decision looks its slot up.
            conn.prepare_cached(&format!("SELECT {SLOT_COLUMNS} FROM slot WHERE token = ?1"))
                .and_then(|mut stmt| stmt.query_row([token], slot_from_row))
                .optional()
                .map_err(|e| Error::sqlite("looking up a slot", e))
        })
    }

    // In the writer's batch (`BEGIN IMMEDIATE`): no other write, of this process or another,
    // comes between the read and the update.
    fn authorize_first_put(
        &self,
        token: &str,
        now: i64,
        check: PutCheck,
    ) -> Result<Option<Slot>, Outcome> {
        let token = token.to_string();
        self.in_batch(move |tx, counts| {
            let fail = |e| Error::sqlite("authorizing a slot", e);
            let slot = tx
                .prepare_cached(&format!("SELECT {SLOT_COLUMNS} FROM slot WHERE token = ?1"))
                .and_then(|mut stmt| stmt.query_row([&token], slot_from_row))
                .optional()
                .map_err(fail)?;
            first_put(slot, &check, || {
                let won = execute_cached(
                    tx,
                    "UPDATE slot SET authorized = ?2 WHERE token = ?1 AND authorized IS NULL",
                    params![token, now],
                )
                .map_err(fail)?
                    == 1;
                if won {
                    bump(counts, PUT_ALLOWED_SLOT);
                }
                Ok(won)
            })
        })?
        .map_err(Outcome::Refused)
    }

    fn claim_signed_path(
        &self,
        path: &str,
        size: u64,
        now: i64,
        once: bool,
        tally: Option<Tally>,
    ) -> Result<bool, Error> {
        let stored_size = i64::try_from(size).unwrap_or(i64::MAX);
        let path = path.to_string();
        self.in_batch(move |tx, counts| {
            let fail = |e| Error::sqlite("recording a signed upload", e);
            let allowed = claim_signed(tx, &path, stored_size, now, once).map_err(fail)?;
            if allowed && let Some(tally) = tally {
                bump(counts, tally);
            }
            Ok(allowed)
        })
    }

    fn signed_upload_authorized(&self, path: &str) -> Result<Option<i64>, Error> {
        self.with_reader(|conn| {
            conn.query_row(
                "SELECT authorized FROM signed_upload WHERE path = ?1 AND removed IS NULL",
                [path],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| Error::sqlite("looking up a signed upload", e))
        })
    }

    fn signed_uploads_before(&self, cutoff: i64) -> Result<Vec<(String, i64)>, Error> {
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("listing signed uploads", e);
            let mut stmt = conn
                .prepare(
                    "SELECT path, authorized FROM signed_upload
                     WHERE authorized <= ?1 AND removed IS NULL",
                )
                .map_err(fail)?;
            let rows = stmt
                .query_map([cutoff], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fail)
        })
    }

    fn mark_signed_removed(&self, path: &str, now: i64) -> Result<(), Error> {
        self.execute(
            "noting a removed signed upload",
            "UPDATE signed_upload SET removed = ?2 WHERE path = ?1 AND removed IS NULL",
            params![path, now],
        )
    }

    fn forget_signed_tombstones(&self, cutoff: i64) -> Result<usize, Error> {
        self.with_writer(|conn| {
            conn.execute("DELETE FROM signed_upload WHERE removed <= ?1", [cutoff])
                .map_err(|e| Error::sqlite("forgetting removed signed uploads", e))
        })
    }

    fn delete_signed_upload(&self, path: &str) -> Result<(), Error> {
        self.execute(
            "deleting a signed upload",
            "DELETE FROM signed_upload WHERE path = ?1",
            params![path],
        )
    }

    fn mark_authorized(&self, token: &str, now: i64) -> Result<(), Error> {
        let token = token.to_string();
        self.in_batch(move |tx, counts| {
            let fail = |e| Error::sqlite("marking a slot authorized", e);
            execute_cached(
                tx,
                "UPDATE slot SET authorized = COALESCE(authorized, ?2) WHERE token = ?1",
                params![token, now],
            )
            .map_err(fail)?;
            bump(counts, PUT_ALLOWED_SLOT);
            Ok(())
        })
    }

    // Raises the counter `name{labels}` by one (refusals, cleanup runs: what no other write
    // records). Counted in memory and written with the writer's next batch, at once when the
    // writer is idle (`group_commit`); a failure to write is logged there and the count kept
    // for the batch after, so this never fails.
    fn count(&self, name: &str, labels: &str) -> Result<(), Error> {
        self.writer.count(name, labels);
        Ok(())
    }

    // Every counter: name, rendered labels, value; by name, then labels. Exact for this
    // process: what it counted before the call is committed first.
    fn counters(&self) -> Result<Vec<(String, String, u64)>, Error> {
        self.writer.flush()?;
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("reading the counters", e);
            let mut stmt = conn
                .prepare("SELECT name, labels, value FROM counter ORDER BY name, labels")
                .map_err(fail)?;
            let rows = stmt
                .query_map([], |row| {
                    let value: i64 = row.get(2)?;
                    Ok((row.get(0)?, row.get(1)?, u64::try_from(value).unwrap_or(0)))
                })
                .map_err(fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fail)
        })
    }

    fn stored(&self) -> Result<[(u64, u64); 3], Error> {
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("totalling stored files", e);
            let pair = |row: &rusqlite::Row| -> rusqlite::Result<(u64, u64)> {
                let (files, bytes): (i64, i64) = (row.get(0)?, row.get(1)?);
                Ok((
                    u64::try_from(files).unwrap_or(0),
                    u64::try_from(bytes).unwrap_or(0),
                ))
            };
            let slots = |area: &str| {
                conn.query_row(
                    &format!(
                        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM slot
                         WHERE authorized IS NOT NULL AND area {area}"
                    ),
                    [],
                    pair,
                )
            };
            let slot = slots("IS NULL").map_err(fail)?;
            let jwt = slots("IS NOT NULL").map_err(fail)?;
            let hmac = conn
                .query_row(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM signed_upload WHERE removed IS NULL",
                    [],
                    pair,
                )
                .map_err(fail)?;
            Ok([slot, jwt, hmac])
        })
    }

    fn mark_uploaded(&self, token: &str, when: i64) -> Result<bool, Error> {
        self.with_writer(|conn| {
            conn.execute(
                "UPDATE slot SET authorized = COALESCE(authorized, ?2), uploaded = COALESCE(uploaded, ?2)
                 WHERE token = ?1",
                params![token, when],
            )
            .map(|changed| changed == 1)
            .map_err(|e| Error::sqlite("marking a slot uploaded", e))
        })
    }

    fn delete_slot(&self, token: &str) -> Result<(), Error> {
        self.execute(
            "deleting a slot",
            "DELETE FROM slot WHERE token = ?1",
            params![token],
        )
    }

    fn unconfirmed(&self, cutoff: i64) -> Result<Vec<Slot>, Error> {
        self.with_reader(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {SLOT_COLUMNS} FROM slot
                     WHERE uploaded IS NULL AND (authorized IS NOT NULL OR created <= ?1)"
                ))
                .map_err(|e| Error::sqlite("listing expired slots", e))?;
            let rows = stmt
                .query_map([cutoff], slot_from_row)
                .map_err(|e| Error::sqlite("listing expired slots", e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::sqlite("listing expired slots", e))
        })
    }

    fn expiring_before(&self, now: i64) -> Result<Vec<Slot>, Error> {
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

    fn past_retention(&self, now: i64, default_retention: i64) -> Result<Vec<Slot>, Error> {
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("listing old uploads", e);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {SLOT_COLUMNS} FROM slot
                     WHERE uploaded IS NOT NULL AND uploaded <= ?1 - COALESCE(retention, ?2)"
                ))
                .map_err(fail)?;
            let rows = stmt
                .query_map([now, default_retention], slot_from_row)
                .map_err(fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fail)
        })
    }

    fn set_retentions(&self, changes: &[(String, Option<i64>)]) -> Result<(), Error> {
        self.with_writer(|conn| {
            let fail = |e| Error::sqlite("recording retentions", e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            {
                let mut stmt = tx
                    .prepare("UPDATE slot SET retention = ?2 WHERE token = ?1")
                    .map_err(fail)?;
                for (token, retention) in changes {
                    stmt.execute(params![token, retention]).map_err(fail)?;
                }
            }
            tx.commit().map_err(fail)
        })
    }

    fn slots_of(&self, jid: &str) -> Result<Vec<Slot>, Error> {
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("listing a JID's slots", e);
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {SLOT_COLUMNS} FROM slot WHERE jid = ?1 ORDER BY created, token"
                ))
                .map_err(fail)?;
            let rows = stmt.query_map([jid], slot_from_row).map_err(fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fail)
        })
    }

    fn purge_jid(&self, jid: &str, now: i64) -> Result<Vec<Slot>, Error> {
        self.with_writer(|conn| {
            let fail = |e| Error::sqlite("purging a JID's slots", e);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let slots = {
                let mut stmt = tx
                    .prepare(&format!(
                        "DELETE FROM slot WHERE jid = ?1 RETURNING {SLOT_COLUMNS}"
                    ))
                    .map_err(fail)?;
                let rows = stmt.query_map([jid], slot_from_row).map_err(fail)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(fail)?
            };
            for slot in &slots {
                tx.execute(
                    "INSERT INTO purged (token, area, name, purged) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (token) DO NOTHING",
                    params![slot.token, slot.area, slot.name, now],
                )
                .map_err(fail)?;
            }
            tx.commit().map_err(fail)?;
            Ok(slots)
        })
    }

    fn purged(&self) -> Result<Vec<Purged>, Error> {
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("listing purged slots", e);
            let mut stmt = conn
                .prepare("SELECT token, area, name, purged FROM purged")
                .map_err(fail)?;
            let rows = stmt
                .query_map([], |row| {
                    Ok(Purged {
                        token: row.get(0)?,
                        area: row.get(1)?,
                        name: row.get(2)?,
                        purged: row.get(3)?,
                    })
                })
                .map_err(fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fail)
        })
    }

    fn forget_purged(&self, token: &str) -> Result<(), Error> {
        self.execute(
            "forgetting a purged slot",
            "DELETE FROM purged WHERE token = ?1",
            params![token],
        )
    }

    fn for_each_slot(&self, f: &mut dyn FnMut(Slot)) -> Result<(), Error> {
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("reading all slots", e);
            let mut stmt = conn
                .prepare(&format!("SELECT {SLOT_COLUMNS} FROM slot"))
                .map_err(fail)?;
            let mut rows = stmt.query([]).map_err(fail)?;
            while let Some(row) = rows.next().map_err(fail)? {
                f(slot_from_row(row).map_err(fail)?);
            }
            Ok(())
        })
    }

    fn signed_uploads(&self) -> Result<Vec<(String, u64, i64)>, Error> {
        self.with_reader(|conn| {
            let fail = |e| Error::sqlite("listing signed uploads", e);
            let mut stmt = conn
                .prepare("SELECT path, size, authorized FROM signed_upload WHERE removed IS NULL")
                .map_err(fail)?;
            let rows = stmt
                .query_map([], |row| {
                    let size: i64 = row.get(1)?;
                    Ok((row.get(0)?, u64::try_from(size).unwrap_or(0), row.get(2)?))
                })
                .map_err(fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fail)
        })
    }

    fn set_slot_size(&self, token: &str, size: u64) -> Result<(), Error> {
        self.execute(
            "correcting a slot's size",
            "UPDATE slot SET size = ?2 WHERE token = ?1",
            params![token, i64::try_from(size).unwrap_or(i64::MAX)],
        )
    }

    fn set_signed_upload_size(&self, path: &str, size: u64) -> Result<(), Error> {
        self.execute(
            "correcting a signed upload's size",
            "UPDATE signed_upload SET size = ?2 WHERE path = ?1",
            params![path, i64::try_from(size).unwrap_or(i64::MAX)],
        )
    }
}

/// The decision of `Store::claim_signed_path`, on its transaction.
fn claim_signed(
    conn: &Connection,
    path: &str,
    stored_size: i64,
    now: i64,
    once: bool,
) -> rusqlite::Result<bool> {
    let inserted = execute_cached(
        conn,
        "INSERT INTO signed_upload (path, size, authorized) VALUES (?1, ?2, ?3)
         ON CONFLICT (path) DO NOTHING",
        params![path, stored_size, now],
    )?;
    if inserted == 1 {
        return Ok(true);
    }
    if once {
        return Ok(false);
    }
    // The program writes: a retry is fine unless the file already went at retention.
    let removed: Option<i64> = conn.query_row(
        "SELECT removed FROM signed_upload WHERE path = ?1",
        [path],
        |row| row.get(0),
    )?;
    Ok(removed.is_none())
}

fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let fail = |e| Error::sqlite("migrating the database schema", e);
    // Nearly every start (every CGI request) finds the schema current: one read says so,
    // without the write lock and its round of file locks.
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(fail)?;
    if usize::try_from(current).is_ok_and(|v| v == MIGRATIONS.len()) {
        return Ok(());
    }
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

/// `(created, size)` of every upload of `jid` and of its unused slots created after
/// `unused_since`: what `Quota::decide` weighs.
fn held(tx: &Connection, jid: &str, unused_since: i64) -> rusqlite::Result<Vec<Held>> {
    let mut stmt = tx.prepare_cached(
        "SELECT size, created FROM slot
         WHERE jid = ?1 AND (authorized IS NOT NULL OR created > ?2)",
    )?;
    let mut rows = stmt.query(params![jid, unused_since])?;
    let mut held = Vec::new();
    while let Some(row) = rows.next()? {
        let size = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
        held.push((row.get(1)?, size));
    }
    Ok(held)
}

/// `sql` on a statement prepared once per connection (the decisions of the request path run
/// it on every request: parsing it was a few per cent of a slot's time).
fn execute_cached(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// True when `error` is a uniqueness violation (the row exists already).
fn is_duplicate_key(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

impl Error {
    /// A SQLite error while doing `context`, sorted for the client: locked past the busy
    /// timeout is busy (503), a full disk is full (507), anything else a 500.
    pub(crate) fn sqlite(context: impl Into<String>, err: rusqlite::Error) -> Error {
        let failure = match &err {
            rusqlite::Error::SqliteFailure(e, _) => match e.code {
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                    DatabaseFailure::Busy
                }
                rusqlite::ErrorCode::DiskFull => DatabaseFailure::Full,
                _ => DatabaseFailure::Other,
            },
            _ => DatabaseFailure::Other,
        };
        Error::database(context, failure, err)
    }
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
        retention: row.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    //! What only SQLite has: its schema history, and how it is compiled. The behaviour both
    //! stores share is tested on both in tests/store.rs.
    use super::*;

    fn temp_db(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xhu-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("db.sqlite3")
    }

    /// The SQLite compiled in is the one `.cargo/config.toml` asks for (a build that ignored
    /// it would carry the unused parts, and take a mutex on every allocation).
    #[test]
    fn sqlite_is_compiled_as_cargo_config_says() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for wanted in [
            "DEFAULT_MEMSTATUS=0",
            "DQS=0",
            "OMIT_JSON",
            "OMIT_SHARED_CACHE",
        ] {
            assert!(options.iter().any(|o| o == wanted), "{wanted}: {options:?}");
        }
        for unwanted in ["ENABLE_FTS3", "ENABLE_FTS5", "ENABLE_RTREE", "ENABLE_STAT4"] {
            assert!(
                !options.iter().any(|o| o == unwanted),
                "{unwanted}: {options:?}"
            );
        }
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
}
