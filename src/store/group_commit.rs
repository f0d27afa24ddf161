//! The process's one writing SQLite connection, shared by every request thread through group
//! commit, its checkpointer thread, and the counters kept in memory until the next commit.
//! It knows no table: `store` hands it closures. It does not open connections either (the
//! `connect` it is given does).
//!
//! # Group commit
//! A request hands its write (a [`Writer::submit`] job) to the writer and waits. Whoever finds
//! the writer idle takes the turn (no writer thread: a lone request runs its own job on its own
//! thread, no hand-over, no timer) and runs everything queued, at most [`MAX_BATCH`] jobs, in
//! one `BEGIN IMMEDIATE` transaction: each job in its own `SAVEPOINT` (a job that fails is
//! rolled back alone; a refusal is an `Ok` value that wrote nothing), then the counters, then
//! one `COMMIT`, and only then answers each job. Jobs queued while a batch runs go in the next
//! one, run by one of their own threads. Inside a batch, jobs run one after the other on one
//! transaction, so quota decisions see each other; across processes `BEGIN IMMEDIATE` still
//! serialises. One commit (one WAL append, one lock round) per batch instead of per request.
//!
//! # Checkpoints
//! The writer does not checkpoint (`wal_autocheckpoint = 0`): a commit that leaves the WAL
//! past [`CHECKPOINT_AT`] wakes a checkpointer thread (started on first need, with its own
//! connection), which copies the WAL into the database PASSIVE-ly, beside the requests (it
//! never blocks a writer; its fsync is not on a request's path). Under steady load commits
//! land while it copies, and SQLite starts a WAL over only once all of it was copied: so when
//! a passive checkpoint left few frames ([`TAIL_FRAMES`]), the rest is copied in a turn of the
//! writer (writes wait for that short tail), and the next commit starts the WAL over. Past
//! [`RESTART_AT`] the checkpointer restarts the WAL in a writer turn whatever it costs. A CGI
//! process never gets that far: its connection checkpoints on open when the WAL is past a
//! much smaller size (`store`).
//!
//! # Counters
//! Counters are added up in memory ([`Counts`]) and written as one upsert per counter with
//! the batch that decided them (a job's counts only if the job is kept), or, for counts of
//! their own (refusals, cleanup runs), with the next batch: [`Writer::count`] runs that batch at
//! once when the writer is idle, and a turn never ends with counts unwritten.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use crate::refusal::Error;

/// At most this many jobs share a transaction (a bound on what one failed commit takes with
/// it, and on the wait of the last job of a batch).
pub const MAX_BATCH: usize = 64;

/// A commit leaving the WAL larger than this wakes the checkpointer (SQLite's own automatic
/// checkpoint would run at 1000 pages, about 4 MiB, on the committing request's thread).
pub const CHECKPOINT_AT: u64 = 4 << 20;

/// The WAL's size is looked at after every this many commits.
const WAL_LOOK_EVERY: u64 = 16;

/// A WAL larger than this is restarted by the checkpointer on the writer's connection,
/// holding up writes for that one checkpoint.
pub const RESTART_AT: u64 = 64 << 20;

/// A passive checkpoint that left at most this many WAL frames is finished in a turn of the
/// writer (see `Checkpointer::run`).
pub const TAIL_FRAMES: i64 = 256;

/// What is left of the WAL file of a process that checkpoints (has started the
/// checkpointer) when the WAL starts over (`journal_size_limit`).
const BUSY_WAL_KEPT: i64 = 16 << 20;

/// The shortest pause between two checkpoints (each one fsyncs the database).
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(50);

/// Counts not yet written: (metric name, rendered labels) → how many.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts(BTreeMap<(String, String), u64>);

impl Counts {
    /// Adds one to `name{labels}`.
    pub fn add(&mut self, name: &str, labels: &str) {
        *self
            .0
            .entry((name.to_string(), labels.to_string()))
            .or_insert(0) += 1;
    }

    /// True when nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds everything `other` counted.
    fn merge(&mut self, other: Counts) {
        for (key, n) in other.0 {
            *self.0.entry(key).or_insert(0) += n;
        }
    }

    /// Writes the counts on `conn`'s transaction with `bump` (`name`, `labels`, how many).
    fn write(&self, conn: &Connection, bump: &str) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(bump)?;
        for ((name, labels), n) in &self.0 {
            stmt.execute(params![name, labels, i64::try_from(*n).unwrap_or(i64::MAX)])?;
        }
        Ok(())
    }
}

/// Opens a connection on the database (the writer's, and the checkpointer's).
pub type Connect = Box<dyn Fn() -> Result<Connection, Error> + Send + Sync>;

/// The one writing connection of a process, shared by group commit.
pub struct Writer {
    state: Mutex<State>,
    /// Signalled when a turn ends and a write waits to run alone (`exclusive`).
    turn: Condvar,
    connect: Connect,
    /// The statement raising a counter: `?1` name, `?2` labels, `?3` how many.
    bump: &'static str,
    /// The database's `-wal` file, whose size decides checkpoints.
    wal: PathBuf,
    /// How long a write may wait, queueing included, before it is answered "busy".
    busy_timeout: Duration,
    checkpointer: Mutex<Option<Arc<Checkpointer>>>,
    /// This writer, for the checkpointer thread.
    me: Weak<Writer>,
    /// Batches committed so far (tests look at it).
    batches: AtomicU64,
    /// Commits (batches and exclusive writes) since start, for `after_commit`.
    commits: AtomicU64,
}

struct State {
    /// `None` before first use, and while the turn's holder has it.
    conn: Option<Connection>,
    /// Someone holds the turn (runs a batch, or an exclusive write).
    busy: bool,
    queue: VecDeque<Box<dyn Job>>,
    /// Counted with no job, to be written with the next batch.
    counts: Counts,
    /// Threads waiting in `exclusive` for the turn (on the condition variable).
    exclusive_waiting: usize,
}

/// A write waiting for its batch, its type erased.
trait Job: Send {
    fn queued(&self) -> Instant;
    /// The thread waiting for the answer (woken by `unpark`: it alone, no herd).
    fn waiter(&self) -> &Thread;
    /// Runs the write on the batch's transaction, adding to `counts`; true to keep it.
    fn run(&mut self, conn: &Connection, counts: &mut Counts) -> bool;
    /// Answers: with the job's own result if `failed` is `None`, else with that failure
    /// (the batch did not commit, so a kept job's write is gone).
    fn answer(self: Box<Self>, failed: Option<&Error>);
}

/// Where a job's answer goes; the submitter waits for it.
type Reply<T> = Arc<Mutex<Option<Result<T, Error>>>>;

struct Task<T, F> {
    f: Option<F>,
    result: Option<Result<T, Error>>,
    reply: Reply<T>,
    queued: Instant,
    waiter: Thread,
}

impl<T, F> Job for Task<T, F>
where
    T: Send,
    F: FnOnce(&Connection, &mut Counts) -> Result<T, Error> + Send,
{
    fn queued(&self) -> Instant {
        self.queued
    }

    fn waiter(&self) -> &Thread {
        &self.waiter
    }

    fn run(&mut self, conn: &Connection, counts: &mut Counts) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // A panic in a job must not end the turn with everyone else waiting: it is this job's
        // failure (its savepoint is rolled back), answered as an error (a 500, as before).
        let result = catch_unwind(AssertUnwindSafe(|| f(conn, counts))).unwrap_or_else(|_| {
            Err(failure(
                "writing to the database",
                "the write panicked (a bug: see the log)",
            ))
        });
        let kept = result.is_ok();
        self.result = Some(result);
        kept
    }

    fn answer(self: Box<Self>, failed: Option<&Error>) {
        let Task { result, reply, .. } = *self;
        let result = match (failed, result) {
            // A write that failed by itself keeps its own error.
            (_, Some(Err(e))) => Err(e),
            (Some(failed), _) => Err(copy_error(failed)),
            (None, Some(ok)) => ok,
            (None, None) => Err(failure("writing to the database", "the write did not run")),
        };
        *reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    }
}

/// An error of `context` with a message and no SQLite error under it.
fn failure(context: &str, message: &str) -> Error {
    let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR);
    Error::sqlite(
        context,
        rusqlite::Error::SqliteFailure(code, Some(message.into())),
    )
}

/// The same failure for another job of the batch (`Error` is not `Clone`): its kind is kept,
/// so that "busy" stays a 503 and "disk full" a 507.
fn copy_error(error: &Error) -> Error {
    error.copy()
}

/// The SQLITE_BUSY answer of a write that waited its whole busy timeout in the queue.
fn busy() -> Error {
    let code = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY);
    Error::sqlite(
        "waiting for the database",
        rusqlite::Error::SqliteFailure(code, None),
    )
}

/// Holding the turn: the connection is out of the shared state. Dropping it (also when
/// unwinding from a panic) puts the connection back, ends the turn and wakes the waiters.
struct Turn<'a> {
    writer: &'a Writer,
    conn: Option<Connection>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.is_autocommit() {
                // Only after a panic between BEGIN and COMMIT: nothing of it was answered.
                let _ = conn.execute_batch("ROLLBACK");
            }
            self.writer.lock().conn = Some(conn);
        }
        let mut state = self.writer.lock();
        state.busy = false;
        // The next turn: the oldest queued job's thread, or a write waiting to run alone.
        if let Some(next) = state.queue.front() {
            next.waiter().unpark();
        }
        if state.exclusive_waiting > 0 {
            self.writer.turn.notify_all();
        }
    }
}

impl Writer {
    /// A writer on the database whose WAL file is `wal`; `connect` opens its connection on
    /// first use, `bump` raises a counter (`?1` name, `?2` labels, `?3` how many). Writes
    /// wait at most `busy_timeout` in all.
    pub fn new(
        connect: Connect,
        bump: &'static str,
        wal: PathBuf,
        busy_timeout: Duration,
    ) -> Arc<Writer> {
        Arc::new_cyclic(|me| Writer {
            state: Mutex::new(State {
                conn: None,
                busy: false,
                queue: VecDeque::new(),
                counts: Counts::default(),
                exclusive_waiting: 0,
            }),
            turn: Condvar::new(),
            connect,
            bump,
            wal,
            busy_timeout,
            checkpointer: Mutex::new(None),
            me: me.clone(),
            batches: AtomicU64::new(0),
            commits: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in the next batch (its own savepoint of one shared transaction) and returns
    /// its result once the batch has committed. An `Err` from `f` rolls back `f`'s writes and
    /// counts only; a batch that fails to commit answers every job with that failure.
    pub fn submit<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Counts) -> Result<T, Error> + Send + 'static,
    {
        let reply: Reply<T> = Arc::new(Mutex::new(None));
        let mut state = self.lock();
        state.queue.push_back(Box::new(Task {
            f: Some(f),
            result: None,
            reply: reply.clone(),
            queued: Instant::now(),
            waiter: std::thread::current(),
        }));
        loop {
            // Answers are set while the state is locked (see `lead`): none is missed here.
            if let Some(result) = reply.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return result;
            }
            if !state.busy {
                state = self.lead(state);
                continue;
            }
            // Woken alone: when the answer is in, or to take the next turn (`Turn::drop`).
            // An unpark before the park is not lost (the thread's token), and a spurious
            // wake-up only loops.
            drop(state);
            std::thread::park();
            state = self.lock();
        }
    }

    /// Counts one `name{labels}`, written with the next batch: at once (a batch of its own)
    /// when the writer is idle, else by the turn running now before it ends.
    pub fn count(&self, name: &str, labels: &str) {
        let mut state = self.lock();
        state.counts.add(name, labels);
        if !state.busy {
            drop(self.lead(state));
        }
    }

    /// Waits until everything counted or submitted before this call is committed.
    pub fn flush(&self) -> Result<(), Error> {
        self.submit(|_, _| Ok(()))
    }

    /// Runs `f` alone on the writing connection, outside any batch (it opens its own
    /// transactions, or writes in autocommit mode). Waiting for the turn counts against the
    /// busy timeout, so that a database locked by another process answers every waiting
    /// request within it (503), not one timeout after another.
    pub fn exclusive<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let queued = Instant::now();
        let mut state = self.lock();
        while state.busy {
            state.exclusive_waiting += 1;
            state = self.turn.wait(state).unwrap_or_else(|p| p.into_inner());
            state.exclusive_waiting -= 1;
        }
        state.busy = true;
        let mut turn = Turn {
            writer: self,
            conn: state.conn.take(),
        };
        drop(state);
        let left = self.busy_timeout.saturating_sub(queued.elapsed());
        if left.is_zero() {
            return Err(busy());
        }
        let conn = self.connection(&mut turn)?;
        conn.busy_timeout(left)
            .map_err(|e| Error::sqlite("setting the busy timeout", e))?;
        let result = f(conn);
        self.after_commit();
        // Counts that came in meanwhile are written before the turn ends.
        let state = self.lock();
        drop(self.rounds(state, turn));
        result
    }

    /// The turn's connection, opened on first use (the writer does not checkpoint: see the
    /// module's comment).
    fn connection<'t>(&self, turn: &'t mut Turn) -> Result<&'t mut Connection, Error> {
        if turn.conn.is_none() {
            let conn = (self.connect)()?;
            let fail = |e| Error::sqlite("opening the writing connection", e);
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(fail)?;
            turn.conn = Some(conn);
        }
        turn.conn
            .as_mut()
            .ok_or_else(|| failure("opening the writing connection", "no connection"))
    }

    /// Takes the turn (the writer is idle) and runs batches until nothing of this turn is
    /// left: queued jobs beyond one batch are handed to their own threads (the turn ends and
    /// they wake), counts without a job are written before the turn ends.
    fn lead<'s>(&'s self, mut state: MutexGuard<'s, State>) -> MutexGuard<'s, State> {
        state.busy = true;
        let turn = Turn {
            writer: self,
            conn: state.conn.take(),
        };
        self.rounds(state, turn)
    }

    /// Batches on `turn` while there is something to write and nobody else to write it;
    /// returns the state locked, with the turn ended.
    fn rounds<'s>(
        &'s self,
        mut state: MutexGuard<'s, State>,
        mut turn: Turn<'s>,
    ) -> MutexGuard<'s, State> {
        let mut first = true;
        loop {
            // After the first batch, queued jobs are left to their own threads (each waits
            // in `submit` and one takes the next turn): this thread has its answer to give.
            let nothing_left = state.queue.is_empty() && state.counts.is_empty();
            if nothing_left || (!first && !state.queue.is_empty()) {
                break;
            }
            first = false;
            let take = state.queue.len().min(MAX_BATCH);
            let mut jobs: Vec<Box<dyn Job>> = state.queue.drain(..take).collect();
            let pending = std::mem::take(&mut state.counts);
            drop(state);
            let failed = match self.connection(&mut turn) {
                Ok(conn) => self.batch(conn, &mut jobs, &pending).err(),
                Err(e) => Some(e),
            };
            if failed.is_none() {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.after_commit();
            }
            state = self.lock();
            if let Some(e) = &failed {
                // Counted decisions stand even when this batch failed: write them next time.
                state.counts.merge(pending);
                if jobs.is_empty() {
                    log::warn!("counters not written yet: {e}");
                }
            }
            for job in jobs {
                let waiter = job.waiter().clone();
                job.answer(failed.as_ref());
                waiter.unpark();
            }
            if failed.is_some() {
                break;
            }
        }
        drop(state);
        drop(turn);
        self.lock()
    }

    /// One transaction: every job in its savepoint, the counts, one commit. `Err`: nothing
    /// of the batch was committed (kept jobs are answered with this error).
    fn batch(
        &self,
        conn: &mut Connection,
        jobs: &mut [Box<dyn Job>],
        pending: &Counts,
    ) -> Result<(), Error> {
        let oldest = jobs.iter().map(|j| j.queued()).min();
        let left = oldest.map_or(self.busy_timeout, |t| {
            self.busy_timeout.saturating_sub(t.elapsed())
        });
        if left.is_zero() {
            return Err(busy());
        }
        let fail = |e| Error::sqlite("writing to the database", e);
        conn.busy_timeout(left)
            .map_err(|e| Error::sqlite("setting the busy timeout", e))?;
        conn.prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
            .map_err(fail)?;
        // A lone job with nothing else to write needs no savepoint: if it fails, the whole
        // transaction is its own.
        let solo = jobs.len() == 1 && pending.is_empty();
        let written = (|| {
            let mut counts = pending.clone();
            for job in jobs.iter_mut() {
                if !solo {
                    conn.prepare_cached("SAVEPOINT job")
                        .and_then(|mut s| s.execute([]))
                        .map_err(fail)?;
                }
                let mut own = Counts::default();
                let kept = job.run(conn, &mut own);
                if solo && !kept {
                    // Answered with its own error (`Task::answer`); nothing to commit.
                    conn.execute_batch("ROLLBACK").map_err(fail)?;
                    return Ok(());
                }
                if conn.is_autocommit() {
                    // SQLite rolled back the whole transaction (I/O error, disk full, ...):
                    // the jobs before this one lost their writes too.
                    return Err(failure(
                        "writing to the database",
                        "the transaction was rolled back by an error of another write",
                    ));
                }
                if kept {
                    counts.merge(own);
                } else {
                    conn.prepare_cached("ROLLBACK TO job")
                        .and_then(|mut s| s.execute([]))
                        .map_err(fail)?;
                }
                if !solo {
                    conn.prepare_cached("RELEASE job")
                        .and_then(|mut s| s.execute([]))
                        .map_err(fail)?;
                }
            }
            counts
                .write(conn, self.bump)
                .map_err(|e| Error::sqlite("counting", e))?;
            conn.prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]))
                .map(|_| ())
                .map_err(|e| Error::sqlite("committing", e))
        })();
        if written.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        written
    }

    /// After a commit: wakes the checkpointer if the WAL has grown past `CHECKPOINT_AT`
    /// (looked at every `WAL_LOOK_EVERY` commits: a commit adds a few pages).
    fn after_commit(&self) {
        if !self
            .commits
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(WAL_LOOK_EVERY)
        {
            return;
        }
        let size = std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        if size <= CHECKPOINT_AT {
            return;
        }
        let mut slot = self.checkpointer.lock().unwrap_or_else(|p| p.into_inner());
        let checkpointer = match slot.as_ref() {
            Some(c) => c.clone(),
            None => match self.start_checkpointer() {
                Some(c) => slot.insert(c).clone(),
                None => return,
            },
        };
        drop(slot);
        *checkpointer
            .wanted
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(size);
        checkpointer.wake.notify_one();
    }

    /// Starts the checkpointer thread with a connection of its own; `None` (logged) when it
    /// cannot start: the WAL then waits for the next connection that checkpoints on open.
    fn start_checkpointer(&self) -> Option<Arc<Checkpointer>> {
        let conn = match (self.connect)() {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("cannot start checkpointing: {e}");
                return None;
            }
        };
        let checkpointer = Arc::new(Checkpointer {
            wanted: Mutex::new(None),
            wake: Condvar::new(),
            writer: self.me.clone(),
        });
        let shared = checkpointer.clone();
        let started = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || shared.run(conn));
        match started {
            Ok(_) => Some(checkpointer),
            Err(e) => {
                log::warn!("cannot start checkpointing: {e}");
                None
            }
        }
    }

    /// Checkpoints (`mode`: PASSIVE or RESTART) on the writer's own connection, in a turn of
    /// its own: writes wait for it, so that no commit comes in between and the next one starts
    /// the WAL over.
    fn finish_checkpoint(&self, mode: &str) {
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        let done = self.exclusive(|conn| {
            conn.query_row(&sql, [], |_| Ok(()))
                .map_err(|e| Error::sqlite("checkpointing", e))
        });
        if let Err(e) = done {
            log::debug!("checkpoint skipped: {e}");
        }
    }
}

/// The checkpointer thread's mailbox: the WAL size that woke it.
struct Checkpointer {
    wanted: Mutex<Option<u64>>,
    wake: Condvar,
    /// The writer, for a restart of the WAL (weak: the thread must not keep it alive).
    writer: Weak<Writer>,
}

impl Checkpointer {
    /// Checkpoints PASSIVE-ly each time a commit asks, at most once per `CHECKPOINT_PAUSE`.
    /// The thread lives as long as the process (a process of one request never starts it).
    fn run(&self, conn: Connection) {
        // This process writes enough to need its own checkpoints: let its WAL file keep its
        // size when SQLite starts the WAL over. Cut back to the connection's default (64 KiB,
        // right for a process of one request), the file was regrown page by page, and every
        // new page of it cost the kernel an allocation (measured: a quarter of the CPU of a
        // stored slot); overwritten, its pages are already in the page cache.
        if let Some(writer) = self.writer.upgrade() {
            let kept = writer.exclusive(|conn| {
                conn.pragma_update(None, "journal_size_limit", BUSY_WAL_KEPT)
                    .map_err(|e| Error::sqlite("keeping the WAL file", e))
            });
            if let Err(e) = kept {
                log::debug!("WAL file not kept: {e}");
            }
        }
        loop {
            let size = {
                let mut wanted = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(size) = wanted.take() {
                        break size;
                    }
                    wanted = self.wake.wait(wanted).unwrap_or_else(|p| p.into_inner());
                }
            };
            let Some(writer) = self.writer.upgrade() else {
                return;
            };
            if size > RESTART_AT {
                writer.finish_checkpoint("RESTART");
            }
            // Busy (another process checkpoints): the next commit asks again.
            let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            });
            match passive {
                // Frames committed while it copied are left: a WAL is only started over
                // once all of it was copied, which under steady load a passive checkpoint
                // beside the writer never sees. The few left are copied in a turn of the
                // writer (the bulk was copied off the request path).
                Ok((0, log, copied)) if log - copied <= TAIL_FRAMES => {
                    writer.finish_checkpoint("PASSIVE")
                }
                Ok(_) => {}
                Err(e) => log::debug!("checkpoint skipped: {e}"),
            }
            drop(writer);
            std::thread::sleep(CHECKPOINT_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn temp_db(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xhu-gc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("db.sqlite3")
    }

    /// A writer on a fresh database with a table `t (k PRIMARY KEY)` and the counter table.
    fn writer(tag: &str) -> (Arc<Writer>, PathBuf) {
        let path = temp_db(tag);
        let open = path.clone();
        let connect: Connect = Box::new(move || {
            let conn = Connection::open(&open).map_err(|e| Error::sqlite("open", e))?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| Error::sqlite("wal", e))?;
            Ok(conn)
        });
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let bump = "INSERT INTO counter (name, labels, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (name, labels) DO UPDATE SET value = value + ?3";
        let w = Writer::new(connect, bump, PathBuf::from(wal), Duration::from_secs(2));
        w.exclusive(|conn| {
            conn.execute_batch(
                "CREATE TABLE t (k TEXT PRIMARY KEY);
                 CREATE TABLE counter (name TEXT, labels TEXT, value INTEGER,
                     PRIMARY KEY (name, labels));",
            )
            .map_err(|e| Error::sqlite("schema", e))
        })
        .unwrap();
        (w, path)
    }

    fn keys(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn counter(path: &Path, name: &str) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row(
            "SELECT COALESCE(SUM(value), 0) FROM counter WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn insert(k: &str) -> impl FnOnce(&Connection, &mut Counts) -> Result<(), Error> + use<> {
        let k = k.to_string();
        move |conn, counts| {
            conn.execute("INSERT INTO t (k) VALUES (?1)", [&k])
                .map_err(|e| Error::sqlite("insert", e))?;
            counts.add("inserted", "");
            Ok(())
        }
    }

    type BoxedJob<T> = Box<dyn FnOnce(&Connection, &mut Counts) -> Result<T, Error> + Send>;

    /// Submits `jobs` from threads of their own while the turn is held, so that they all
    /// queue, then lets the holder run them: one batch.
    fn in_one_batch<T: Send + 'static>(
        w: &Arc<Writer>,
        jobs: Vec<BoxedJob<T>>,
    ) -> Vec<Result<T, Error>> {
        let n = jobs.len();
        let mut threads = Vec::new();
        w.exclusive(|_| {
            // One at a time, so that the queue holds them in this order.
            for (queued, job) in jobs.into_iter().enumerate() {
                let submitter = w.clone();
                threads.push(std::thread::spawn(move || submitter.submit(job)));
                while w.lock().queue.len() <= queued {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            assert_eq!(w.lock().queue.len(), n);
            Ok(())
        })
        .unwrap();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn a_lone_job_commits_before_its_answer() {
        let (w, path) = writer("lone");
        w.submit(insert("a")).unwrap();
        assert_eq!(keys(&path), ["a"]);
        assert_eq!(counter(&path, "inserted"), 1);
        assert_eq!(w.batches.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_lone_failing_job_writes_nothing_and_the_writer_goes_on() {
        let (w, path) = writer("lonefail");
        let failed = w.submit(|conn: &Connection, counts: &mut Counts| {
            conn.execute("INSERT INTO t (k) VALUES ('bad')", [])
                .map_err(|e| Error::sqlite("insert", e))?;
            counts.add("inserted", "");
            Err::<(), _>(failure("test", "refused after writing"))
        });
        assert!(failed.is_err());
        assert!(keys(&path).is_empty());
        assert_eq!(counter(&path, "inserted"), 0);
        w.submit(insert("a")).unwrap();
        assert_eq!(keys(&path), ["a"]);
    }

    #[test]
    fn a_failing_or_panicking_job_is_rolled_back_alone() {
        let (w, path) = writer("fail");
        type J = BoxedJob<()>;
        let before = w.batches.load(Ordering::Relaxed);
        let jobs: Vec<J> = vec![
            Box::new(insert("a")),
            // Writes, counts, then fails: neither its row nor its count may stay.
            Box::new(|conn: &Connection, counts: &mut Counts| {
                conn.execute("INSERT INTO t (k) VALUES ('bad')", [])
                    .map_err(|e| Error::sqlite("insert", e))?;
                counts.add("inserted", "");
                Err(failure("test", "refused after writing"))
            }),
            Box::new(insert("b")),
            // A duplicate key: the statement fails, its neighbours stay.
            Box::new(insert("a")),
            Box::new(|conn: &Connection, _: &mut Counts| {
                conn.execute("INSERT INTO t (k) VALUES ('panic')", [])
                    .unwrap();
                panic!("a bug in a job");
            }),
            Box::new(insert("c")),
        ];
        let results = in_one_batch(&w, jobs);
        let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
        assert_eq!(ok, [true, false, true, false, false, true]);
        assert_eq!(keys(&path), ["a", "b", "c"]);
        assert_eq!(counter(&path, "inserted"), 3);
        assert_eq!(w.batches.load(Ordering::Relaxed), before + 1, "one commit");
        // The writer goes on.
        w.submit(insert("d")).unwrap();
        assert_eq!(keys(&path), ["a", "b", "c", "d"]);
    }

    #[test]
    fn jobs_of_one_batch_see_each_other() {
        let (w, _path) = writer("see");
        type J = BoxedJob<i64>;
        // Each job inserts only while fewer than 3 rows exist: a quota of 3.
        let jobs: Vec<J> = (0..8)
            .map(|i| {
                Box::new(move |conn: &Connection, _: &mut Counts| {
                    let n: i64 = conn
                        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
                        .map_err(|e| Error::sqlite("count", e))?;
                    if n < 3 {
                        conn.execute("INSERT INTO t (k) VALUES (?1)", [i.to_string()])
                            .map_err(|e| Error::sqlite("insert", e))?;
                        return Ok(1i64);
                    }
                    Ok(0i64)
                }) as J
            })
            .collect();
        let granted: i64 = in_one_batch(&w, jobs).into_iter().map(|r| r.unwrap()).sum();
        assert_eq!(granted, 3);
    }

    #[test]
    fn a_batch_that_cannot_begin_answers_every_job_and_keeps_the_counts() {
        let (w, path) = writer("busy");
        w.count("refused", "");
        assert_eq!(
            counter(&path, "refused"),
            1,
            "an idle writer writes a count at once"
        );
        // Another connection holds the write lock past the busy timeout (2 s).
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        w.count("refused", "");
        let failed = w.submit(insert("x"));
        assert!(failed.is_err_and(|e| e.is_busy()));
        other.execute_batch("COMMIT").unwrap();
        w.flush().unwrap();
        assert!(keys(&path).is_empty(), "the failed job wrote nothing");
        assert_eq!(
            counter(&path, "refused"),
            2,
            "the count waited for the next batch"
        );
    }

    #[test]
    fn many_threads_are_all_answered() {
        let (w, path) = writer("many");
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        w.submit(insert(&format!("{t:02}-{i:02}"))).unwrap();
                        if i % 10 == 0 {
                            w.count("refused", "");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        w.flush().unwrap();
        assert_eq!(keys(&path).len(), 800);
        assert_eq!(counter(&path, "inserted"), 800);
        assert_eq!(counter(&path, "refused"), 80);
    }
}
