//! The PostgreSQL store (`Backend` over a `postgres://` URL): one database shared by several
//! hosts, so that slots, quotas and cleanup are one view for all of them. Speaks SQL to
//! PostgreSQL only; the quota arithmetic is `Quota::decide`, the schema versions are this
//! file's `MIGRATIONS` (counted in the table `schema_version`), and which PostgreSQL error
//! means "try again" (503) is `failure_of`.
//!
//! Quotas hold across hosts: `reserve_slot` takes a per-JID `pg_advisory_xact_lock` before it
//! reads the JID's usage, so two hosts deciding for one JID take turns, and JIDs do not wait
//! for each other. (SERIALIZABLE with retry is exact too; measured, it retried about once per
//! slot, since every slot bumps one counter row, failed some after 20 retries, and ran at
//! 0.5-0.9× the rate: bench/results/2026-12-01-postgres/report.md.) Every method is one
//! transaction; a connection lost midway rolls back on the server, so nothing is half-written.
//! A connection lost with the COMMIT of a decision sent leaves its outcome to the server: it
//! is asked (`txid_status`) on another connection, so that a decision that stands is not
//! answered 503 (`Store::committed`).
//!
//! The pool is a few lines of our own (`Pool`): at most `MAX_CONNECTIONS` per process, a
//! request waiting for a free one at most `WAIT`. An idle connection found dead (the server
//! restarted, or the connection was killed) is replaced before anything was sent on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Row, Statement, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Backend, PUT_ALLOWED_JWT, PUT_ALLOWED_SLOT, Purged, PutCheck, Quota, SLOT_GRANTED, Slot, Tally,
    first_put, pg_tls,
};
use crate::refusal::{DatabaseFailure, Error, Outcome, Refusal};
use crate::rules::Held;

/// Connections one process keeps open at most (PostgreSQL's default `max_connections` is 100,
/// shared by every host and process).
const MAX_CONNECTIONS: usize = 16;
/// How long a request waits for a connection of the pool, for a lock held by another host
/// (`lock_timeout`), or for the server to answer a connect, before it gets a 503.
const WAIT: Duration = Duration::from_secs(10);

/// Silence on a connection before the first TCP keepalive probe (`client_config`): half of
/// `WAIT`, so that several probes go out before the user timeout ends the connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Between two TCP keepalive probes on a silent connection (`client_config`).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Guards the migrations: two hosts starting at once migrate one after the other.
const MIGRATION_LOCK: i64 = 0x7868_7570_6d69_6772; // "xhupmigr"

/// Schema migrations, applied in order; the one row of `schema_version` counts those applied.
/// (Its own numbering: the SQLite store's history is not replayed here.)
const MIGRATIONS: &[&str] = &[
    // 1: what SQLite's schema 8 holds. Sizes and times are BIGINT (unix seconds).
    "CREATE TABLE slot (
        token        TEXT PRIMARY KEY,
        jid          TEXT NOT NULL,
        name         TEXT NOT NULL,
        size         BIGINT NOT NULL,
        content_type TEXT,
        created      BIGINT NOT NULL,
        authorized   BIGINT,  -- first PUT allowed; counts for quotas from then on
        uploaded     BIGINT,  -- the file is known to be complete on disk
        area         TEXT,    -- NULL: <upload_root>/<token>/<name>; else <area>/<token>/<name>
        expires      BIGINT,  -- delete the file at this time
        retention    BIGINT   -- seconds after `uploaded`; NULL: the global retention
    );
    CREATE INDEX slot_usage ON slot (jid, created) INCLUDE (authorized, size);
    CREATE INDEX slot_expires ON slot (expires) WHERE expires IS NOT NULL;
    CREATE TABLE signed_upload (
        path       TEXT PRIMARY KEY,
        size       BIGINT NOT NULL,
        authorized BIGINT NOT NULL,
        removed    BIGINT
    );
    CREATE INDEX signed_upload_authorized ON signed_upload (authorized);
    CREATE INDEX signed_upload_removed ON signed_upload (removed) WHERE removed IS NOT NULL;
    CREATE TABLE purged (
        token  TEXT PRIMARY KEY,
        area   TEXT,
        name   TEXT NOT NULL,
        purged BIGINT NOT NULL
    );
    CREATE TABLE counter (
        name   TEXT NOT NULL,
        labels TEXT NOT NULL,
        value  BIGINT NOT NULL,
        PRIMARY KEY (name, labels)
    );",
    // 2: a JID's slots found by a hash index. A B-tree key holds at most about 2700 bytes, and
    // a bare JID may have 3071 (`jid::bare_jid`): one that does not compress made the INSERT
    // of its slot fail. The quota and `slots_of` look a JID up by equality only.
    "DROP INDEX slot_usage;
    CREATE INDEX slot_jid ON slot USING hash (jid);",
];

/// The columns `slot_from_row` reads, in its order.
macro_rules! slot_columns {
    () => {
        "token, jid, name, size, content_type, created, authorized, uploaded, area, expires, retention"
    };
}

/// Raises a counter, inside whatever transaction it runs in.
const BUMP: &str = "INSERT INTO counter (name, labels, value) VALUES ($1, $2, 1)
     ON CONFLICT (name, labels) DO UPDATE SET value = counter.value + 1";

/// `BUMP` inside a transaction that records a decision (every one does, with its counter),
/// answering the transaction's id: if the connection dies with the COMMIT sent, `txid_status`
/// on another connection tells whether the decision stands. One round trip fewer than asking
/// for the id apart.
const BUMP_TXID: &str = "INSERT INTO counter (name, labels, value) VALUES ($1, $2, 1)
     ON CONFLICT (name, labels) DO UPDATE SET value = counter.value + 1
     RETURNING txid_current()";

/// A connection and the statements prepared on it (the hot ones: a round trip saved each).
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// The transaction a method runs in, with its connection's prepared statements.
struct Tx<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    statements: &'a mut HashMap<&'static str, Statement>,
    /// The transaction's id, once `bump` recorded a decision in it.
    txid: Option<i64>,
}

impl Tx<'_, '_> {
    /// `sql` prepared once per connection.
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.tx.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.prepared(sql)?;
        self.tx.execute(&statement, params)
    }
    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.prepared(sql)?;
        self.tx.query(&statement, params)
    }
    /// Raises `tally` with the decision it counts; notes the transaction's id (`BUMP_TXID`).
    fn bump(&mut self, tally: Tally) -> Result<(), postgres::Error> {
        let statement = self.prepared(BUMP_TXID)?;
        let row = self
            .tx
            .query_one(&statement, &[&tally.name, &tally.labels])?;
        self.txid = Some(row.try_get(0)?);
        Ok(())
    }
}

/// Open connections: the idle ones, and how many exist (idle or in use).
struct Pool {
    idle: Vec<(Conn, Instant)>,
    open: usize,
}

/// A handle on one PostgreSQL database, shared by all request threads.
pub struct Store {
    config: postgres::Config,
    /// TLS as the URL's `sslmode` asks (`pg_tls`); shared by every connection.
    tls: MakeRustlsConnect,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// The schema is known to be current (checked on the first connection that works).
    migrated: std::sync::atomic::AtomicBool,
}

/// Why a transaction failed: before anything was sent on the connection (`BEGIN` failed), or
/// after.
struct Failed {
    began: bool,
    error: postgres::Error,
}

/// A connection taken from the pool: given back by `give_back`, else (an error that lost it, or
/// a panic unwinding) dropped and counted out, so that the pool never counts a connection
/// that no longer exists.
struct Lease<'a> {
    store: &'a Store,
    conn: Option<Conn>,
}

impl Lease<'_> {
    fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            self.store.give_back(conn);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn);
            self.store.discard();
        }
    }
}

impl Store {
    /// Prepares the pool for the database at `url` and brings its schema up to date. A
    /// server that cannot be reached now is not fatal: the program starts, answers 503, and
    /// migrates on its first connection that works. Anything else (a wrong password, a schema
    /// newer than this program) is.
    pub fn open(url: &str) -> Result<Store, Error> {
        let (config, tls) = client_config(url)?;
        let store = Store {
            config,
            tls,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            migrated: std::sync::atomic::AtomicBool::new(false),
        };
        match store.with_tx("checking the database schema", |_| Ok(())) {
            Ok(()) => Ok(store),
            Err(e) if e.is_unavailable() => {
                log::warn!("{e}; answering 503 until PostgreSQL can be reached");
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }

    /// A new connection, its session set up and (once per process) the schema migrated.
    fn connect(&self, what: &str) -> Result<Conn, Error> {
        let lost = |error| pg_error(what, error);
        let mut client = connect_within(&self.config, &self.tls)
            .map_err(|overdue| overdue.error(what))?
            .map_err(lost)?;
        // A lock another host holds (a JID's advisory lock, a row) is waited for this long.
        // Commits do not wait for the WAL's fsync: the durability of the SQLite store (WAL,
        // `synchronous = NORMAL`), for the same reason. Every slot bumps one counter row, so
        // commits queue on that row's lock; with a flush each they ran at one per fsync
        // (about 1,000 slots/s on the bench machine, whatever the connections). A crash of
        // PostgreSQL or of its machine may lose the commits of the last moments (at most three
        // times `wal_writer_delay`, 0.6 s by default: slots granted, PUTs allowed; never a
        // stored file), and the database stays consistent.
        //
        // A statement the server takes longer than `WAIT` over (a disk that stalls, a query
        // stuck behind a vacuum) is cancelled by the server: a 503 (57014) then, instead of a
        // request that holds one of the program's few workers for as long as the server
        // takes. (`for_each_slot` and the migrations lift it: they may rightly take long.)
        client
            .batch_execute(&format!(
                "SET lock_timeout = {ms}; SET statement_timeout = {ms}; \
                 SET synchronous_commit = off",
                ms = WAIT.as_millis()
            ))
            .map_err(lost)?;
        if !self.migrated.load(std::sync::atomic::Ordering::Acquire) {
            migrate(&mut client).map_err(lost)?;
            self.migrated
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    /// An idle connection (and whether it was used before), or a new one if fewer than
    /// `MAX_CONNECTIONS` are open; else waits for one to be freed, at most `WAIT`.
    fn checkout(&self, what: &str) -> Result<(Conn, bool), Error> {
        let deadline = Instant::now() + WAIT;
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some((conn, _)) = pool.idle.pop() {
                return Ok((conn, true));
            }
            if pool.open < MAX_CONNECTIONS {
                pool.open += 1;
                drop(pool);
                return match self.connect(what) {
                    Ok(conn) => Ok((conn, false)),
                    Err(error) => {
                        self.discard();
                        Err(error)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::database(
                    what,
                    DatabaseFailure::Busy,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("all {MAX_CONNECTIONS} connections busy for {WAIT:?}"),
                    ),
                ));
            }
            pool = self
                .freed
                .wait_timeout(pool, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Returns a healthy connection to the pool.
    fn give_back(&self, conn: Conn) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.idle.push((conn, Instant::now()));
        drop(pool);
        self.freed.notify_one();
    }

    /// Counts a connection (already dropped) out of the pool.
    fn discard(&self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.open = pool.open.saturating_sub(1);
        drop(pool);
        self.freed.notify_one();
    }

    /// Drops every idle connection: one was found dead, so the server went away and its
    /// siblings are dead too.
    fn forget_idle(&self) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = pool.idle.len();
        pool.idle.clear();
        pool.open = pool.open.saturating_sub(dropped);
        drop(pool);
        self.freed.notify_all();
    }

    /// Runs `f` in one transaction (committed when it returns `Ok`) on a pooled connection.
    /// A pooled connection whose `BEGIN` fails as lost died while idle: nothing was sent, so
    /// the transaction runs once more on a new connection. A failure after `BEGIN` rolls back
    /// (on the server, if the connection is gone) and becomes an `Error` sorted by
    /// `failure_of`; the client then gets 503 for a server away or busy.
    fn with_tx<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Tx) -> Result<T, postgres::Error>,
    ) -> Result<T, Error> {
        let fail = |failed: Failed| pg_error(what, failed.error);
        let (conn, mut reused) = self.checkout(what)?;
        let mut lease = Lease {
            store: self,
            conn: Some(conn),
        };
        loop {
            let Some(conn) = lease.conn.as_mut() else {
                unreachable!("a lease holds its connection until it ends")
            };
            match run(conn, &mut f) {
                Ran::Committed(value) => {
                    lease.give_back();
                    return Ok(value);
                }
                Ran::Unsure { value, txid, error } => {
                    drop(lease);
                    self.forget_idle();
                    // Answering 503 for a decision that stands would leave it both refused
                    // and recorded: a slot's one PUT spent, a slot counted in a quota.
                    return match self.committed(txid) {
                        Ok(true) => Ok(value),
                        Ok(false) => Err(pg_error(what, error)),
                        Err(e) => {
                            log::error!(
                                "{what}: the connection was lost at COMMIT, and whether \
                                 transaction {txid} committed is unknown: {e}"
                            );
                            Err(pg_error(what, error))
                        }
                    };
                }
                Ran::Failed(failed) if reused && !failed.began && is_lost(&failed.error) => {
                    drop(lease);
                    self.forget_idle();
                    let (conn, fresh) = self.checkout(what)?;
                    (lease, reused) = (
                        Lease {
                            store: self,
                            conn: Some(conn),
                        },
                        fresh,
                    );
                }
                Ran::Failed(failed) => {
                    if is_lost(&failed.error) || conn.client.is_closed() {
                        drop(lease);
                        self.forget_idle();
                    } else {
                        lease.give_back();
                    }
                    return Err(fail(failed));
                }
            }
        }
    }

    /// Whether transaction `txid`, whose COMMIT was sent on a connection lost before its
    /// answer came, committed: asked on another connection (`txid_status`). While the server
    /// has not yet seen that connection end, the transaction is still in progress: asked
    /// again, for at most `WAIT`.
    fn committed(&self, txid: i64) -> Result<bool, Error> {
        let what = "finding out whether a commit was done";
        let deadline = Instant::now() + WAIT;
        loop {
            let status: Option<String> = self.with_tx(what, |tx| {
                tx.tx
                    .query_one("SELECT txid_status($1)", &[&txid])?
                    .try_get(0)
            })?;
            match status.as_deref() {
                Some("committed") => return Ok(true),
                Some("aborted") => return Ok(false),
                Some(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    return Err(Error::database(
                        what,
                        DatabaseFailure::Unavailable,
                        std::io::Error::other(format!(
                            "transaction {txid} is {}",
                            status.as_deref().unwrap_or("too old to know")
                        )),
                    ));
                }
            }
        }
    }

    /// A list of slots by one statement (the rare ones: cleanup and admin, not prepared).
    fn slots(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Slot>, Error> {
        self.with_tx(what, |tx| {
            tx.tx
                .query(sql, params)?
                .iter()
                .map(slot_from_row)
                .collect()
        })
    }

    /// One write statement in a transaction of its own.
    fn write(
        &self,
        what: &str,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.with_tx(what, |tx| tx.execute(sql, params))
    }
}

/// How a transaction of `run` ended.
enum Ran<T> {
    Committed(T),
    /// The connection was lost with the COMMIT of a recorded decision (transaction `txid`)
    /// sent: it may have committed or not, and only the server knows (`Store::committed`).
    Unsure {
        value: T,
        txid: i64,
        error: postgres::Error,
    },
    Failed(Failed),
}

/// `f` in a transaction on `conn`, committed when it returns `Ok`.
fn run<T>(conn: &mut Conn, f: &mut impl FnMut(&mut Tx) -> Result<T, postgres::Error>) -> Ran<T> {
    let mut tx = match conn.client.transaction() {
        Ok(tx) => tx,
        Err(error) => {
            return Ran::Failed(Failed {
                began: false,
                error,
            });
        }
    };
    let mut inside = Tx {
        tx: &mut tx,
        statements: &mut conn.statements,
        txid: None,
    };
    let value = f(&mut inside);
    let txid = inside.txid;
    let value = match value {
        Ok(value) => value,
        Err(error) => return Ran::Failed(Failed { began: true, error }),
    };
    match (tx.commit(), txid) {
        (Ok(()), _) => Ran::Committed(value),
        (Err(error), Some(txid)) if is_lost(&error) => Ran::Unsure { value, txid, error },
        (Err(error), _) => Ran::Failed(Failed { began: true, error }),
    }
}

impl Backend for Store {
    fn reserve_slot(&self, slot: &Slot, quota: &Quota) -> Result<(), Outcome> {
        let size = i64::try_from(slot.size).unwrap_or(i64::MAX);
        let tally = if slot.authorized.is_some() {
            PUT_ALLOWED_JWT
        } else {
            SLOT_GRANTED
        };
        let decided = self.with_tx("reserving a slot", |tx| {
            if quota.needs_usage() {
                // Every host deciding for this JID queues here until this transaction ends;
                // a hash collision of two JIDs only makes them take turns.
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                    &[&slot.jid],
                )?;
                let held = tx
                    .query(
                        "SELECT created, size FROM slot
                         WHERE jid = $1 AND (authorized IS NOT NULL OR created > $2)",
                        &[&slot.jid, &quota.unused_since()],
                    )?
                    .iter()
                    .map(|row| {
                        let size: i64 = row.try_get(1)?;
                        Ok((row.try_get(0)?, u64::try_from(size).unwrap_or(0)))
                    })
                    .collect::<Result<Vec<Held>, postgres::Error>>()?;
                if let Err(refusal) = quota.decide(&held) {
                    return Ok(Err(refusal));
                }
            } else if let Err(refusal) = quota.decide(&[]) {
                return Ok(Err(refusal));
            }
            // The token may exist already (two PUTs of one JWT token racing): the primary key
            // decides, the loser is a 409; nothing else was written.
            let inserted = tx.execute(
                "INSERT INTO slot (token, jid, name, size, content_type, created, authorized,
                                   area, expires, retention)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (token) DO NOTHING",
                &[
                    &slot.token,
                    &slot.jid,
                    &slot.name,
                    &size,
                    &slot.content_type,
                    &slot.created,
                    &slot.authorized,
                    &slot.area,
                    &slot.expires,
                    &slot.retention,
                ],
            )?;
            if inserted == 0 {
                return Ok(Err(Refusal::already_authorized(&slot.name)));
            }
            tx.bump(tally)?;
            Ok(Ok(()))
        })?;
        decided.map_err(Outcome::Refused)
    }

    fn slot(&self, token: &str) -> Result<Option<Slot>, Error> {
        self.with_tx("looking up a slot", |tx| {
            tx.query(
                concat!("SELECT ", slot_columns!(), " FROM slot WHERE token = $1"),
                &[&token],
            )?
            .first()
            .map(slot_from_row)
            .transpose()
        })
    }

    // Two PUTs of one slot may both read it unauthorized here (READ COMMITTED); the second
    // UPDATE waits for the first's row lock, then finds `authorized` set and changes nothing.
    fn authorize_first_put(
        &self,
        token: &str,
        now: i64,
        check: PutCheck,
    ) -> Result<Option<Slot>, Outcome> {
        let decided = self.with_tx("authorizing a slot", |tx| {
            let slot = tx
                .query(
                    concat!("SELECT ", slot_columns!(), " FROM slot WHERE token = $1"),
                    &[&token],
                )?
                .first()
                .map(slot_from_row)
                .transpose()?;
            first_put(slot, &check, || {
                let won = tx.execute(
                    "UPDATE slot SET authorized = $2 WHERE token = $1 AND authorized IS NULL",
                    &[&token, &now],
                )? == 1;
                if won {
                    tx.bump(PUT_ALLOWED_SLOT)?;
                }
                Ok(won)
            })
        })?;
        decided.map_err(Outcome::Refused)
    }

    fn claim_signed_path(
        &self,
        path: &str,
        size: u64,
        now: i64,
        once: bool,
        tally: Option<Tally>,
    ) -> Result<bool, Error> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.with_tx("recording a signed upload", |tx| {
            let inserted = tx.execute(
                "INSERT INTO signed_upload (path, size, authorized) VALUES ($1, $2, $3)
                 ON CONFLICT (path) DO NOTHING",
                &[&path, &size, &now],
            )? == 1;
            let allowed = if inserted {
                true
            } else if once {
                false
            } else {
                // The program writes: a retry is fine unless the file already went at retention.
                let removed: Option<i64> = tx
                    .query(
                        "SELECT removed FROM signed_upload WHERE path = $1",
                        &[&path],
                    )?
                    .first()
                    .map(|row| row.try_get(0))
                    .transpose()?
                    .flatten();
                removed.is_none()
            };
            if allowed && let Some(tally) = tally {
                tx.bump(tally)?;
            }
            Ok(allowed)
        })
    }

    fn signed_upload_authorized(&self, path: &str) -> Result<Option<i64>, Error> {
        self.with_tx("looking up a signed upload", |tx| {
            tx.query(
                "SELECT authorized FROM signed_upload WHERE path = $1 AND removed IS NULL",
                &[&path],
            )?
            .first()
            .map(|row| row.try_get(0))
            .transpose()
        })
    }

    fn signed_uploads_before(&self, cutoff: i64) -> Result<Vec<(String, i64)>, Error> {
        self.with_tx("listing signed uploads", |tx| {
            tx.tx
                .query(
                    "SELECT path, authorized FROM signed_upload
                     WHERE authorized <= $1 AND removed IS NULL",
                    &[&cutoff],
                )?
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect()
        })
    }

    fn mark_signed_removed(&self, path: &str, now: i64) -> Result<(), Error> {
        self.write(
            "noting a removed signed upload",
            "UPDATE signed_upload SET removed = $2 WHERE path = $1 AND removed IS NULL",
            &[&path, &now],
        )
        .map(|_| ())
    }

    fn forget_signed_tombstones(&self, cutoff: i64) -> Result<usize, Error> {
        self.write(
            "forgetting removed signed uploads",
            "DELETE FROM signed_upload WHERE removed <= $1",
            &[&cutoff],
        )
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn delete_signed_upload(&self, path: &str) -> Result<(), Error> {
        self.write(
            "deleting a signed upload",
            "DELETE FROM signed_upload WHERE path = $1",
            &[&path],
        )
        .map(|_| ())
    }

    fn mark_authorized(&self, token: &str, now: i64) -> Result<(), Error> {
        self.with_tx("marking a slot authorized", |tx| {
            tx.execute(
                "UPDATE slot SET authorized = COALESCE(authorized, $2) WHERE token = $1",
                &[&token, &now],
            )?;
            tx.bump(PUT_ALLOWED_SLOT)
        })
    }

    fn count(&self, name: &str, labels: &str) -> Result<(), Error> {
        self.write("counting", BUMP, &[&name, &labels]).map(|_| ())
    }

    fn counters(&self) -> Result<Vec<(String, String, u64)>, Error> {
        self.with_tx("reading the counters", |tx| {
            tx.tx
                .query(
                    "SELECT name, labels, value FROM counter ORDER BY name, labels",
                    &[],
                )?
                .iter()
                .map(|row| {
                    let value: i64 = row.try_get(2)?;
                    Ok((
                        row.try_get(0)?,
                        row.try_get(1)?,
                        u64::try_from(value).unwrap_or(0),
                    ))
                })
                .collect()
        })
    }

    fn stored(&self) -> Result<[(u64, u64); 3], Error> {
        self.with_tx("totalling stored files", |tx| {
            // SUM of BIGINT is NUMERIC: capped to what BIGINT holds.
            let pair = |row: &Row| -> Result<(u64, u64), postgres::Error> {
                let (files, bytes): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                Ok((
                    u64::try_from(files).unwrap_or(0),
                    u64::try_from(bytes).unwrap_or(0),
                ))
            };
            let row = tx.tx.query_one(
                "SELECT
                   COUNT(*) FILTER (WHERE area IS NULL),
                   LEAST(COALESCE(SUM(size) FILTER (WHERE area IS NULL), 0), 9223372036854775807)::BIGINT,
                   COUNT(*) FILTER (WHERE area IS NOT NULL),
                   LEAST(COALESCE(SUM(size) FILTER (WHERE area IS NOT NULL), 0), 9223372036854775807)::BIGINT
                 FROM slot WHERE authorized IS NOT NULL",
                &[],
            )?;
            let slot = pair(&row)?;
            let jwt = {
                let (files, bytes): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
                (
                    u64::try_from(files).unwrap_or(0),
                    u64::try_from(bytes).unwrap_or(0),
                )
            };
            let hmac = pair(&tx.tx.query_one(
                "SELECT COUNT(*), LEAST(COALESCE(SUM(size), 0), 9223372036854775807)::BIGINT
                 FROM signed_upload WHERE removed IS NULL",
                &[],
            )?)?;
            Ok([slot, jwt, hmac])
        })
    }

    fn mark_uploaded(&self, token: &str, when: i64) -> Result<bool, Error> {
        self.write(
            "marking a slot uploaded",
            "UPDATE slot SET authorized = COALESCE(authorized, $2), uploaded = COALESCE(uploaded, $2)
             WHERE token = $1",
            &[&token, &when],
        )
        .map(|changed| changed == 1)
    }

    fn delete_slot(&self, token: &str) -> Result<(), Error> {
        self.write(
            "deleting a slot",
            "DELETE FROM slot WHERE token = $1",
            &[&token],
        )
        .map(|_| ())
    }

    fn unconfirmed(&self, cutoff: i64) -> Result<Vec<Slot>, Error> {
        self.slots(
            "listing expired slots",
            concat!(
                "SELECT ",
                slot_columns!(),
                " FROM slot WHERE uploaded IS NULL AND (authorized IS NOT NULL OR created <= $1)"
            ),
            &[&cutoff],
        )
    }

    fn expiring_before(&self, now: i64) -> Result<Vec<Slot>, Error> {
        self.slots(
            "listing expiring uploads",
            concat!("SELECT ", slot_columns!(), " FROM slot WHERE expires <= $1"),
            &[&now],
        )
    }

    fn past_retention(&self, now: i64, default_retention: i64) -> Result<Vec<Slot>, Error> {
        self.slots(
            "listing old uploads",
            concat!(
                "SELECT ",
                slot_columns!(),
                " FROM slot WHERE uploaded IS NOT NULL AND uploaded <= $1 - COALESCE(retention, $2)"
            ),
            &[&now, &default_retention],
        )
    }

    fn set_retentions(&self, changes: &[(String, Option<i64>)]) -> Result<(), Error> {
        // By token: two hosts running `cleanup --reapply-rules` at once lock the rows in one
        // order, so neither waits for a row the other holds while holding one it wants.
        let mut changes: Vec<&(String, Option<i64>)> = changes.iter().collect();
        changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.with_tx("recording retentions", |tx| {
            for (token, retention) in &changes {
                tx.execute(
                    "UPDATE slot SET retention = $2 WHERE token = $1",
                    &[token, retention],
                )?;
            }
            Ok(())
        })
    }

    fn slots_of(&self, jid: &str) -> Result<Vec<Slot>, Error> {
        self.slots(
            "listing a JID's slots",
            concat!(
                "SELECT ",
                slot_columns!(),
                " FROM slot WHERE jid = $1 ORDER BY created, token"
            ),
            &[&jid],
        )
    }

    fn purge_jid(&self, jid: &str, now: i64) -> Result<Vec<Slot>, Error> {
        self.with_tx("purging a JID's slots", |tx| {
            let slots = tx
                .tx
                .query(
                    concat!(
                        "DELETE FROM slot WHERE jid = $1 RETURNING ",
                        slot_columns!()
                    ),
                    &[&jid],
                )?
                .iter()
                .map(slot_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            for slot in &slots {
                tx.execute(
                    "INSERT INTO purged (token, area, name, purged) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (token) DO NOTHING",
                    &[&slot.token, &slot.area, &slot.name, &now],
                )?;
            }
            Ok(slots)
        })
    }

    fn purged(&self) -> Result<Vec<Purged>, Error> {
        self.with_tx("listing purged slots", |tx| {
            tx.tx
                .query("SELECT token, area, name, purged FROM purged", &[])?
                .iter()
                .map(|row| {
                    Ok(Purged {
                        token: row.try_get(0)?,
                        area: row.try_get(1)?,
                        name: row.try_get(2)?,
                        purged: row.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    fn forget_purged(&self, token: &str) -> Result<(), Error> {
        self.write(
            "forgetting a purged slot",
            "DELETE FROM purged WHERE token = $1",
            &[&token],
        )
        .map(|_| ())
    }

    fn for_each_slot(&self, f: &mut dyn FnMut(Slot)) -> Result<(), Error> {
        self.with_tx("reading all slots", |tx| {
            // `f` may take its time per slot (`check` looks at each file): no statement
            // timeout on this one.
            tx.tx.batch_execute("SET LOCAL statement_timeout = 0")?;
            let no_params: [&str; 0] = [];
            let mut rows = tx
                .tx
                .query_raw(concat!("SELECT ", slot_columns!(), " FROM slot"), no_params)?;
            while let Some(row) = rows.next()? {
                f(slot_from_row(&row)?);
            }
            Ok(())
        })
    }

    fn signed_uploads(&self) -> Result<Vec<(String, u64, i64)>, Error> {
        self.with_tx("listing signed uploads", |tx| {
            tx.tx
                .query(
                    "SELECT path, size, authorized FROM signed_upload WHERE removed IS NULL",
                    &[],
                )?
                .iter()
                .map(|row| {
                    let size: i64 = row.try_get(1)?;
                    Ok((
                        row.try_get(0)?,
                        u64::try_from(size).unwrap_or(0),
                        row.try_get(2)?,
                    ))
                })
                .collect()
        })
    }

    fn set_slot_size(&self, token: &str, size: u64) -> Result<(), Error> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.write(
            "correcting a slot's size",
            "UPDATE slot SET size = $2 WHERE token = $1",
            &[&token, &size],
        )
        .map(|_| ())
    }

    fn set_signed_upload_size(&self, path: &str, size: u64) -> Result<(), Error> {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.write(
            "correcting a signed upload's size",
            "UPDATE signed_upload SET size = $2 WHERE path = $1",
            &[&path, &size],
        )
        .map(|_| ())
    }
}

/// The client's settings from `url`, with our defaults where the URL sets none, and the TLS
/// connector its `sslmode` asks for (`pg_tls`).
fn client_config(url: &str) -> Result<(postgres::Config, MakeRustlsConnect), Error> {
    let other = |what: &str, e: String| {
        Error::database(what, DatabaseFailure::Other, std::io::Error::other(e))
    };
    let (url, tls) = pg_tls::read_url(url).map_err(|e| other("reading the PostgreSQL URL", e))?;
    let connector = tls
        .connector()
        .map_err(|e| other("setting up TLS to PostgreSQL", e))?;
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| Error::database("reading the PostgreSQL URL", DatabaseFailure::Other, e))?;
    config.ssl_mode(tls.mode());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(WAIT);
    }
    // A server gone without a word (its machine off, the network cut): what was sent and
    // never acknowledged ends the connection after `WAIT`, not after the kernel's
    // retransmissions (about 15 minutes), and the request gets its 503.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(WAIT);
    }
    // A server gone while the program waits for its answer (its machine lost power after
    // acknowledging the query): nothing is left unacknowledged, so only TCP keepalives notice.
    // The client's default sends the first probe after two hours, and until then the request
    // held its worker. A probe after `KEEPALIVE_IDLE` of silence, then one a second: the user
    // timeout above (counted from the last packet received) ends the connection once `WAIT`
    // passed without an answer to any of them, so one probe lost on the way costs nothing. A
    // live server's kernel answers the probes however long its query takes, so they end no
    // connection to a slow server.
    let set_in_url = |name: &str| {
        let query = super::pg_url::UrlParts::of(&url).query.unwrap_or("");
        super::pg_url::query_params(query).any(|(param, _, _)| param == name)
    };
    if !set_in_url("keepalives_idle") {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_application_name().is_none() {
        config.application_name("xmpp-http-upload");
    }
    Ok((config, connector))
}

/// What `check-config` finds at the database of `url`, without changing anything there: it
/// connects as the program would, and reads whether the program will be able to start on it
/// (make or migrate its tables, use them). `Ok`: one line saying what it found; `Err`: one line
/// saying what stops the program, and what to do about it.
pub fn check(url: &str) -> Result<String, String> {
    let (config, tls) = client_config(url).map_err(|e| e.to_string())?;
    let cannot = |why: String| {
        format!(
            "cannot connect to PostgreSQL at {}: {why}",
            super::pg_url::redact(url)
        )
    };
    let mut client = connect_within(&config, &tls)
        .map_err(|overdue| cannot(overdue.to_string()))?
        .map_err(|e| cannot(Shown(e).to_string()))?;
    let read = |e| format!("cannot read the database: {}", Shown(e));
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text,
                    current_setting('server_version'), current_schema()::text,
                    to_regclass('schema_version') IS NOT NULL",
            &[],
        )
        .map_err(read)?;
    let (user, database, server): (String, String, String) = (
        row.try_get(0).map_err(read)?,
        row.try_get(1).map_err(read)?,
        row.try_get(2).map_err(read)?,
    );
    let schema: Option<String> = row.try_get(3).map_err(read)?;
    let has_tables: bool = row.try_get(4).map_err(read)?;
    let at = format!("PostgreSQL {server}, database {database} as user {user}");
    let known = MIGRATIONS.len();
    if !has_tables {
        // The first start creates every table in the schema that `search_path` names first.
        let Some(schema) = schema else {
            return Err(format!(
                "{at}: no schema of its search_path exists, so the program has nowhere to \
                 create its tables (ALTER ROLE {user} SET search_path = public)"
            ));
        };
        let may_create: bool = client
            .query_one("SELECT has_schema_privilege($1, 'CREATE')", &[&schema])
            .and_then(|row| row.try_get(0))
            .map_err(read)?;
        if !may_create {
            return Err(format!(
                "{at}: this user may not create tables in schema {schema} (since PostgreSQL \
                 15 only the database's owner may in `public`): make it the owner \
                 (ALTER DATABASE {database} OWNER TO {user}) or GRANT CREATE ON SCHEMA \
                 {schema} TO {user}"
            ));
        }
        return Ok(format!(
            "{at}: no tables yet; the program creates them when it starts"
        ));
    }
    // The tables are the program's to read and write (they may have been made by another
    // user, e.g. an admin who ran the program as the database's owner once).
    let usable: bool = client
        .query_one(
            "SELECT bool_and(has_table_privilege(t, 'SELECT, INSERT, UPDATE, DELETE'))
             FROM unnest(ARRAY['schema_version', 'slot', 'signed_upload', 'purged', 'counter']) AS t
             WHERE to_regclass(t) IS NOT NULL",
            &[],
        )
        .and_then(|row| row.try_get::<_, Option<bool>>(0))
        .map_err(read)?
        .unwrap_or(true);
    if !usable {
        return Err(format!(
            "{at}: this user may not read and write the program's tables \
             (schema_version, slot, signed_upload, purged, counter): GRANT SELECT, INSERT, UPDATE, DELETE ON them \
             TO {user}, or make it their owner"
        ));
    }
    let version: Option<i32> = client
        .query_opt("SELECT version FROM schema_version", &[])
        .and_then(|row| row.map(|row| row.try_get(0)).transpose())
        .map_err(read)?;
    let version = version.map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX));
    if version > known {
        return Err(format!(
            "{at}: its schema version {version} is newer than this program knows ({known}): \
             upgrade the program"
        ));
    }
    if version < known {
        // A migration changes the tables (ALTER, CREATE INDEX): only their owner may.
        let owns: bool = client
            .query_one(
                "SELECT coalesce(bool_and(pg_has_role(c.relowner, 'USAGE')), true)
                 FROM pg_class c
                 WHERE c.oid IN (SELECT to_regclass(t)
                                 FROM unnest(ARRAY['schema_version', 'slot', 'signed_upload',
                                                   'purged', 'counter']) AS t)",
                &[],
            )
            .and_then(|row| row.try_get(0))
            .map_err(read)?;
        if !owns {
            return Err(format!(
                "{at}: the tables are at schema version {version} and need migrating to \
                 {known}, which only their owner may do: start the program once as their \
                 owner, or make {user} their owner (ALTER TABLE ... OWNER TO {user})"
            ));
        }
        return Ok(format!(
            "{at}: tables at schema version {version}; the program brings them to {known} \
             when it starts"
        ));
    }
    Ok(format!("{at}: tables current (schema version {known})"))
}

/// Brings the schema up to date, in one transaction under `MIGRATION_LOCK`.
fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    // "relation schema_version already exists, skipping" is no news: not a line in the log of
    // every process and every `cleanup` run.
    tx.batch_execute("SET LOCAL client_min_messages = warning")?;
    // A migration may take long on a big table, and another host starting meanwhile waits
    // for it rather than failing.
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0")?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let version: Option<i32> = tx
        .query_opt("SELECT version FROM schema_version", &[])?
        .map(|row| row.try_get(0))
        .transpose()?;
    let known = MIGRATIONS.len();
    let version = version.map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX));
    if version > known {
        // Raised as the server would, so that it is one line in the log and fatal at start.
        tx.batch_execute(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'database schema version {version} is newer than this \
             program knows ({known}); upgrade the program'; END $$"
        ))?;
    }
    for sql in MIGRATIONS.iter().skip(version) {
        tx.batch_execute(sql)?;
    }
    let known = i32::try_from(known).unwrap_or(i32::MAX);
    if version == 0 {
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&known],
        )?;
    } else if version < MIGRATIONS.len() {
        tx.execute("UPDATE schema_version SET version = $1", &[&known])?;
    }
    // (Nothing written when the schema is current: every process of every host starts here.)
    tx.commit()
}

/// Connection attempts still running past their deadline (`connect_within`).
static OVERDUE: AtomicUsize = AtomicUsize::new(0);

/// A connection attempt that did not end within its deadline (or could not be made): why.
#[derive(Debug)]
struct Overdue(String);

impl Overdue {
    fn after(limit: Duration) -> Overdue {
        Overdue(format!(
            "no answer within {} s of connecting (connect_timeout)",
            limit.as_secs_f64()
        ))
    }
}

impl Overdue {
    /// As the store's error: the server away (503).
    fn error(&self, what: &str) -> Error {
        Error::database(
            what,
            DatabaseFailure::Unavailable,
            std::io::Error::other(self.to_string()),
        )
    }
}

impl std::fmt::Display for Overdue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Connects, giving up after `connect_timeout` per host, as libpq does. The client bounds only
/// the TCP connect by it, not the TLS handshake and the startup exchange after it: a server
/// that accepts and then never answers (its process stopped, a middlebox that swallows the
/// traffic) would hold the caller, and with it one of the program's workers, without end. So
/// the attempt runs on a thread of its own, and an attempt past its deadline is left to end
/// by itself (its connection, if it comes, is dropped); while `MAX_CONNECTIONS` of those are
/// still running, a new attempt gives up at once rather than start another thread.
fn connect_within(
    config: &postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<Result<Client, postgres::Error>, Overdue> {
    struct Attempt {
        result: Option<Result<Client, postgres::Error>>,
        abandoned: bool,
    }
    let hosts = u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
    let limit = config.get_connect_timeout().copied().unwrap_or(WAIT) * hosts;
    if OVERDUE.load(Ordering::Acquire) >= MAX_CONNECTIONS {
        return Err(Overdue(format!(
            "{MAX_CONNECTIONS} earlier connection attempts are still unanswered"
        )));
    }
    let shared = Arc::new((
        Mutex::new(Attempt {
            result: None,
            abandoned: false,
        }),
        Condvar::new(),
    ));
    let (config, tls, theirs) = (config.clone(), tls.clone(), Arc::clone(&shared));
    let spawned = std::thread::Builder::new()
        .name("pg-connect".into())
        .spawn(move || {
            let result = connect_preferring_tls(&config, tls);
            let (attempt, done) = &*theirs;
            let mut attempt = attempt.lock().unwrap_or_else(|p| p.into_inner());
            if attempt.abandoned {
                OVERDUE.fetch_sub(1, Ordering::AcqRel);
            } else {
                attempt.result = Some(result);
                done.notify_one();
            }
        });
    if let Err(e) = spawned {
        // No thread to spare (the process's limit): the attempt is not made.
        return Err(Overdue(format!(
            "no thread for the connection attempt: {e}"
        )));
    }
    let (attempt, done) = &*shared;
    let attempt = attempt.lock().unwrap_or_else(|p| p.into_inner());
    let (mut attempt, _) = done
        .wait_timeout_while(attempt, limit, |a| a.result.is_none())
        .unwrap_or_else(|p| p.into_inner());
    match attempt.result.take() {
        Some(result) => Ok(result),
        None => {
            attempt.abandoned = true;
            OVERDUE.fetch_add(1, Ordering::AcqRel);
            Err(Overdue::after(limit))
        }
    }
}

/// Connects; with `sslmode=prefer` (the default), a TLS handshake that fails is followed by
/// an attempt without TLS, as libpq does (`prefer` never promised more than "TLS if it
/// works"): a server whose TLS rustls cannot speak (below TLS 1.2, no suite in common, a key
/// under 2048 bits) is reached as it was before the program spoke TLS at all.
fn connect_preferring_tls(
    config: &postgres::Config,
    tls: MakeRustlsConnect,
) -> Result<Client, postgres::Error> {
    match config.connect(tls.clone()) {
        Err(e)
            if config.get_ssl_mode() == postgres::config::SslMode::Prefer
                && e.to_string().starts_with("error performing TLS handshake") =>
        {
            log::warn!(
                "PostgreSQL: {}; connecting without TLS (sslmode=prefer; set sslmode=disable \
                 to skip the attempt, or fix the server's TLS)",
                Shown(e)
            );
            let mut plain = config.clone();
            plain.ssl_mode(postgres::config::SslMode::Disable);
            plain.connect(tls)
        }
        other => other,
    }
}

/// A PostgreSQL error while doing `what`, sorted by `failure_of`.
fn pg_error(what: &str, error: postgres::Error) -> Error {
    Error::database(what, failure_of(&error), Shown(error))
}

/// A PostgreSQL error as one line: the server's message and SQLSTATE, or the client's error
/// and its cause (`postgres::Error` alone shows "db error").
#[derive(Debug)]
struct Shown(postgres::Error);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
            None => match std::error::Error::source(&self.0) {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => write!(f, "{}", self.0),
            },
        }
    }
}

impl std::error::Error for Shown {}

/// True when the connection is gone (closed, or never made): nothing more can be sent on it.
fn is_lost(error: &postgres::Error) -> bool {
    failure_of(error) == DatabaseFailure::Unavailable
}

/// What a PostgreSQL error means for the client. The SQLSTATE classes: 08 (connection
/// exceptions), 57P01-57P03 (the server shutting down, crashed, starting) and 53300 (too many
/// connections) are the server away; 55P03 (`lock_timeout`), 57014 (a query cancelled), 40001
/// and 40P01 (serialization, deadlock) are busy; 53100 a full disk. No SQLSTATE but an I/O
/// failure, a closed connection or a timeout is the server away too.
fn failure_of(error: &postgres::Error) -> DatabaseFailure {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        return match code {
            _ if code.starts_with("08") => DatabaseFailure::Unavailable,
            "57P01" | "57P02" | "57P03" | "53300" => DatabaseFailure::Unavailable,
            "55P03" | "57014" | "40001" | "40P01" => DatabaseFailure::Busy,
            "53100" => DatabaseFailure::Full,
            _ => DatabaseFailure::Other,
        };
    }
    let io = std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>());
    if error.is_closed() || io || error.to_string().starts_with("timeout") {
        DatabaseFailure::Unavailable
    } else {
        DatabaseFailure::Other
    }
}

fn slot_from_row(row: &Row) -> Result<Slot, postgres::Error> {
    let size: i64 = row.try_get(3)?;
    Ok(Slot {
        token: row.try_get(0)?,
        jid: row.try_get(1)?,
        name: row.try_get(2)?,
        size: u64::try_from(size).unwrap_or(0),
        content_type: row.try_get(4)?,
        created: row.try_get(5)?,
        authorized: row.try_get(6)?,
        uploaded: row.try_get(7)?,
        area: row.try_get(8)?,
        expires: row.try_get(9)?,
        retention: row.try_get(10)?,
    })
}

#[cfg(test)]
mod tests {
    //! The client settings made of a URL (no server needed); the store itself is tested on a
    //! real cluster in tests/store.rs, tests/postgres_*.rs and tests/several_hosts.rs.
    use super::*;

    #[test]
    fn a_silent_connection_is_probed_and_ended_unless_the_url_says_otherwise() {
        let (config, _) = client_config("postgres://u:pw@db.example/upload").unwrap();
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(config.get_tcp_user_timeout(), Some(&WAIT));
        assert!(config.get_keepalives());

        let url = "postgres://u@db.example/upload?keepalives_idle=60&keepalives_interval=7\
                   &tcp_user_timeout=30";
        let (config, _) = client_config(url).unwrap();
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(60));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(30))
        );

        // The name in a password is not a parameter.
        let url = "postgres://u:keepalives_idle=60@db.example/upload";
        let (config, _) = client_config(url).unwrap();
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
    }
}
