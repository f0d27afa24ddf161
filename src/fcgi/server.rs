//! The FastCGI server: a fixed pool of worker threads that all wait on one `epoll` set (the
//! listening socket, every idle connection, the shutdown signal), each serving one request at
//! a time, and `run`'s thread keeping the time.
//!
//! Every descriptor is armed one-shot, so an event wakes exactly one worker, and that worker
//! serves what it found itself: a request costs no hand-off from a poll thread to a worker and
//! back (the context switches that were 20 % of a loaded program's time). A worker that wakes
//! for a connection reads what arrived without waiting; only once a whole request head is
//! buffered (or a management record, or something to refuse) does it serve, so a web server
//! that is slow to send its head never holds a worker. After the request a kept connection is
//! armed again in the idle set, so idle connections hold no worker (php-fpm's trap,
//! `FASTCGI.md`). Requests that stream a body may take all workers but `reserve`: the others
//! wait their turn in a queue, not in a worker, and slot requests and authorizations keep being
//! answered however many slow uploads there are. SIGTERM/SIGINT stop accepting, close idle
//! connections, let requests in flight finish within `grace`, then `run` returns.
//!
//! What it does not do: parse records (`record`, `conn`) or know what a request means (the
//! `Handler`). No thread is started per connection or per request.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::conn::{self, Conn, HeadOutcome, Stdin, Stream};
use super::record::{Params, PeekedHead, Role, peek_head, scan_head};
use crate::request::Response;

/// How the server behaves; `Settings::default()` is what the program uses.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Worker threads (each serves one request at a time).
    pub workers: usize,
    /// How long a new connection may take to send its first request.
    pub first_request: Duration,
    /// How long a kept connection may stay idle between requests. Longer than the web
    /// server's own (nginx `keepalive_timeout`, 60 s in the shipped config), so that the web
    /// server, not we, closes idle connections and never sends on one we just closed.
    pub idle: Duration,
    /// How long one read or write may wait for the peer inside a request.
    pub stall: Duration,
    /// Bytes of a body left unread that are read away to keep the connection.
    pub drain: u64,
    /// How long requests in flight may take to finish after SIGTERM.
    pub grace: Duration,
    /// At most this many connections open at once (the rest wait in the listen backlog).
    pub max_conns: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            workers: default_workers(),
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(120),
            stall: Duration::from_secs(60),
            drain: 1 << 20,
            grace: Duration::from_secs(20),
            max_conns: 1024,
        }
    }
}

/// Four workers per core, at least 8: requests are short and mostly wait on the disk or the
/// database lock, and some of them may be uploads that the program receives itself, each
/// holding a worker for as long as its client takes to send it. An idle thread costs a few
/// KiB of memory.
pub fn default_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (4 * cores).max(8)
}

/// Workers kept free of body-streaming requests.
fn reserve(workers: usize) -> usize {
    (workers / 4).max(1)
}

/// What the program does with a request.
pub trait Handler: Send + Sync {
    /// Whether answering this request means receiving a body that a client may send slowly
    /// (an upload the program stores itself). At most `workers - reserve` of those are served
    /// at once; the others wait their turn in a queue, not in a worker.
    fn streams_body(&self, _role: Role, _params: &Params) -> bool {
        false
    }

    /// Answers one request.
    fn answer(&self, exchange: &mut Exchange<'_>) -> Response;
}

/// What the handler gets for one request: its role, its parameters, and its body.
pub struct Exchange<'a> {
    /// The FastCGI role (Responder or Authorizer; other roles never reach the handler).
    pub role: Role,
    /// The parameters, as sent.
    pub params: &'a Params,
    stdin: Stdin<'a>,
}

impl Exchange<'_> {
    /// The request body (the STDIN stream), read as it arrives.
    pub fn body(&mut self) -> &mut dyn Read {
        &mut self.stdin
    }
}

/// A listening socket, TCP or Unix.
pub enum Listener {
    /// `host:port`, or an inherited TCP socket.
    Tcp(TcpListener),
    /// A Unix socket path, or an inherited Unix socket.
    Unix(UnixListener),
}

impl Listener {
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l) => l.set_nonblocking(true),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept()?;
                // Records are written whole; no need to wait for more.
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l) => l.as_fd(),
        }
    }
}

/// Epoll tokens of the server's own descriptors. A connection's token is its slot's index
/// plus `FIRST_CONN` in the low 32 bits and the slot's generation in the high 32, so that an
/// event that arrives for a connection closed meanwhile never reaches the slot's next one.
const SIGNAL: u64 = 0;
const LISTENER: u64 = 1;
const EXIT: u64 = 2;
const FIRST_CONN: u64 = 3;

/// Where one connection slot stands.
enum Slot {
    /// No connection.
    Free,
    /// Waiting for its next request (or the rest of its head), armed in the epoll set.
    Idle { conn: Conn, deadline: Instant },
    /// A worker has it (reading what arrived, serving a request), or it waits for a body turn.
    Busy,
}

struct Entry {
    slot: Slot,
    generation: u32,
}

/// What the workers share, under one lock, held only for bookkeeping (never across I/O with
/// a peer).
struct State {
    entries: Vec<Entry>,
    free: Vec<usize>,
    /// Connections open: idle, with a worker, or waiting for a body turn.
    open: usize,
    /// Requests being served.
    in_flight: usize,
    /// Of those, requests that stream a body; at most `body_limit`.
    bodies: usize,
    /// Requests that stream a body, waiting for a turn (heads parsed), with their slots.
    waiting: VecDeque<(usize, Conn, PeekedHead)>,
    listener: Option<Listener>,
    /// The listener is armed in the epoll set.
    listening: bool,
    accept_paused_until: Option<Instant>,
    accept_backoff: Duration,
    /// When SIGTERM came.
    stopping: Option<Instant>,
}

/// The server: one epoll set that every worker waits on, and the shared state.
struct Server {
    epoll: Epoll,
    state: Mutex<State>,
    /// Wakes `run`'s thread (which keeps the time: idle deadlines, accept back-off, the grace
    /// period) ahead of its next deadline.
    tick: Condvar,
    settings: Settings,
    limits: conn::Limits,
    body_limit: usize,
    handler: Arc<dyn Handler>,
    signal_fd: SignalFd,
    /// Written once `run` returns; level-triggered, so that every worker sees it and ends.
    exit: (UnixStream, UnixStream),
    exiting: AtomicBool,
}

/// What a worker does next, in order (a kept connection's next request, buffered already,
/// and an upload whose turn came can both fall to the same worker).
enum Work {
    /// Look at what a connection has buffered.
    Check(usize, Conn, Instant),
    /// Serve the request at the head of the buffer (counted in `in_flight`, and in `bodies`
    /// when the bool says so).
    Serve(usize, Conn, Option<PeekedHead>, bool),
}

fn oneshot(token: u64) -> EpollEvent {
    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, token)
}

fn conn_token(index: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | (index as u64 + FIRST_CONN)
}

/// Serves FastCGI on `listener` until SIGTERM or SIGINT; then finishes what is in flight
/// (at most `settings.grace`) and returns.
pub fn run(listener: Listener, settings: Settings, handler: Arc<dyn Handler>) -> io::Result<()> {
    // The signals are taken from a file descriptor in the epoll set; blocked here, before the
    // workers start, so that no thread gets them the ordinary way.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().map_err(io::Error::from)?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(io::Error::from)?;
    listener.set_nonblocking()?;

    let workers = settings.workers.max(2);
    let limits = conn::Limits {
        stall: settings.stall,
        drain: settings.drain,
        max_conns: settings.max_conns,
        max_reqs: workers,
    };
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
    let exit = UnixStream::pair()?;
    exit.1.set_nonblocking(true)?;
    epoll
        .add(signal_fd.as_fd(), oneshot(SIGNAL))
        .and_then(|()| epoll.add(listener.as_fd(), oneshot(LISTENER)))
        .and_then(|()| epoll.add(exit.0.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, EXIT)))
        .map_err(io::Error::from)?;
    let server = Arc::new(Server {
        epoll,
        state: Mutex::new(State {
            entries: Vec::new(),
            free: Vec::new(),
            open: 0,
            in_flight: 0,
            bodies: 0,
            waiting: VecDeque::new(),
            listener: Some(listener),
            listening: true,
            accept_paused_until: None,
            accept_backoff: Duration::ZERO,
            stopping: None,
        }),
        tick: Condvar::new(),
        settings,
        limits,
        body_limit: workers - reserve(workers),
        handler,
        signal_fd,
        exit,
        exiting: AtomicBool::new(false),
    });
    for n in 0..workers {
        let server = server.clone();
        std::thread::Builder::new()
            .name(format!("fcgi-{n}"))
            .spawn(move || server.worker())?;
    }
    log::info!(
        "FastCGI: {workers} workers ({} may stream bodies at once)",
        server.body_limit
    );
    server.keep_time();
    server.exiting.store(true, Ordering::SeqCst);
    let _ = (&server.exit.1).write(&[1]);
    Ok(())
}

impl Server {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker: waits on the epoll set, takes one event at a time, and serves what it found.
    /// The worker that sees a connection's request serves it: no hand-off between threads.
    fn worker(&self) {
        let mut events = [EpollEvent::empty()];
        loop {
            match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    log::error!("FastCGI: epoll_wait failed: {e}; worker ends");
                    return;
                }
            }
            if self.exiting.load(Ordering::SeqCst) {
                // Pass it on: each write wakes one more waiting worker.
                let _ = (&self.exit.1).write(&[1]);
                return;
            }
            match events[0].data() {
                SIGNAL => self.signalled(),
                LISTENER => self.accept_all(),
                EXIT => {}
                token => self.readable(token),
            }
        }
    }

    /// Keeps the time on `run`'s thread: closes connections idle past their deadline, resumes
    /// accepting after a back-off, and returns once stopped and drained (or the grace is over).
    fn keep_time(&self) {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            if let Some(since) = st.stopping {
                if st.in_flight + st.waiting.len() == 0 {
                    log::info!("FastCGI: stopped");
                    return;
                }
                if since.elapsed() >= self.settings.grace {
                    log::warn!(
                        "FastCGI: stopping with {} requests unfinished after {:?}",
                        st.in_flight + st.waiting.len(),
                        self.settings.grace
                    );
                    return;
                }
            }
            let mut next = now + Duration::from_secs(1);
            let mut expired = Vec::new();
            for index in 0..st.entries.len() {
                let Slot::Idle { deadline, .. } = st.entries[index].slot else {
                    continue;
                };
                if deadline > now {
                    next = next.min(deadline);
                    continue;
                }
                if let Some(conn) = Self::release(&mut st, index) {
                    log::debug!("FastCGI: idle connection timed out");
                    expired.push(conn);
                }
            }
            if let Some(until) = st.accept_paused_until {
                if until <= now {
                    st.accept_paused_until = None;
                } else {
                    next = next.min(until);
                }
            }
            if let Some(since) = st.stopping {
                next = next.min(since + self.settings.grace);
            }
            self.arm_listener(&mut st);
            drop(expired);
            st = self
                .tick
                .wait_timeout(st, next.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Frees a slot and takes its connection (if idle) out, to be closed by dropping it.
    fn release(st: &mut State, index: usize) -> Option<Conn> {
        let entry = &mut st.entries[index];
        let conn = match std::mem::replace(&mut entry.slot, Slot::Free) {
            Slot::Idle { conn, .. } => Some(conn),
            _ => None,
        };
        entry.generation = entry.generation.wrapping_add(1);
        st.free.push(index);
        st.open -= 1;
        conn
    }

    /// Closes a connection a worker had (dropping it closes the socket, which also takes it
    /// out of the epoll set).
    fn close(&self, index: usize, conn: Conn) {
        let mut st = self.lock();
        Self::release(&mut st, index);
        self.arm_listener(&mut st);
        drop(st);
        drop(conn);
    }

    /// Arms the listener again if accepting is allowed now.
    fn arm_listener(&self, st: &mut State) {
        if st.listening
            || st.stopping.is_some()
            || st.accept_paused_until.is_some()
            || st.open >= self.settings.max_conns
        {
            return;
        }
        if let Some(listener) = &st.listener {
            let mut event = oneshot(LISTENER);
            match self.epoll.modify(listener.as_fd(), &mut event) {
                Ok(()) => st.listening = true,
                Err(e) => log::error!("FastCGI: cannot watch the listening socket: {e}"),
            }
        }
    }

    /// Puts a connection back in the idle set, armed: the next bytes wake one worker.
    fn park(&self, index: usize, conn: Conn, deadline: Instant) {
        let mut st = self.lock();
        let entry = &mut st.entries[index];
        let token = conn_token(index, entry.generation);
        entry.slot = Slot::Idle { conn, deadline };
        let Slot::Idle { conn, .. } = &entry.slot else {
            return;
        };
        let mut event = oneshot(token);
        if let Err(e) = self.epoll.modify(conn.as_fd(), &mut event) {
            log::debug!("FastCGI connection closed: cannot watch it: {e}");
            Self::release(&mut st, index);
            self.arm_listener(&mut st);
        }
    }

    fn signalled(&self) {
        let mut closing = Vec::new();
        let mut st = self.lock();
        while let Ok(Some(info)) = self.signal_fd.read_signal() {
            if st.stopping.is_none() {
                log::info!(
                    "FastCGI: signal {} — no new connections; finishing {} requests",
                    info.ssi_signo,
                    st.in_flight
                );
                st.stopping = Some(Instant::now());
                // Dropping our listener stops accepting; under systemd socket activation the
                // socket itself stays open in systemd for the next start.
                st.listener = None;
                st.listening = false;
                for index in 0..st.entries.len() {
                    if matches!(st.entries[index].slot, Slot::Idle { .. }) {
                        closing.extend(Self::release(&mut st, index));
                    }
                }
                self.tick.notify_one();
            }
        }
        let mut event = oneshot(SIGNAL);
        if let Err(e) = self.epoll.modify(self.signal_fd.as_fd(), &mut event) {
            log::error!("FastCGI: cannot watch for signals: {e}");
        }
        drop(st);
        drop(closing);
    }

    fn accept_all(&self) {
        let mut st = self.lock();
        st.listening = false; // the event disarmed it
        // A bounded batch, so that the lock is not held for long.
        for _ in 0..64 {
            if st.open >= self.settings.max_conns {
                break;
            }
            let Some(listener) = &st.listener else {
                return;
            };
            match listener.accept() {
                Ok(stream) => {
                    st.accept_backoff = Duration::ZERO;
                    match Conn::new(stream, self.limits) {
                        Ok(conn) => self.add(&mut st, conn),
                        Err(e) => log::warn!("FastCGI: cannot set up a connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: not the end of the program. Stop
                    // accepting for a while (connections wait in the backlog) and try again.
                    st.accept_backoff = (st.accept_backoff * 2)
                        .clamp(Duration::from_millis(50), Duration::from_secs(2));
                    log::error!(
                        "FastCGI: accept failed: {e}; retrying in {:?}",
                        st.accept_backoff
                    );
                    st.accept_paused_until = Some(Instant::now() + st.accept_backoff);
                    self.tick.notify_one();
                    return;
                }
            }
        }
        self.arm_listener(&mut st);
    }

    /// A new connection: idle until its first request, armed in the epoll set.
    fn add(&self, st: &mut State, conn: Conn) {
        let index = st.free.pop().unwrap_or_else(|| {
            st.entries.push(Entry {
                slot: Slot::Free,
                generation: 0,
            });
            st.entries.len() - 1
        });
        st.open += 1;
        let deadline = Instant::now() + self.settings.first_request;
        let entry = &mut st.entries[index];
        let token = conn_token(index, entry.generation);
        entry.slot = Slot::Idle { conn, deadline };
        let Slot::Idle { conn, .. } = &entry.slot else {
            return;
        };
        if let Err(e) = self.epoll.add(conn.as_fd(), oneshot(token)) {
            log::warn!("FastCGI: cannot watch a new connection: {e}");
            Self::release(st, index);
        }
    }

    /// A connection's event: take it, read what arrived, and serve it if a head is whole.
    fn readable(&self, token: u64) {
        let (generation, low) = ((token >> 32) as u32, token & 0xffff_ffff);
        let Some(index) = low.checked_sub(FIRST_CONN).map(|i| i as usize) else {
            return;
        };
        let taken = {
            let mut st = self.lock();
            match st.entries.get_mut(index) {
                Some(entry) if entry.generation == generation => {
                    match std::mem::replace(&mut entry.slot, Slot::Busy) {
                        Slot::Idle { conn, deadline } => Some((conn, deadline)),
                        other => {
                            entry.slot = other;
                            None
                        }
                    }
                }
                _ => None, // closed meanwhile (timed out, SIGTERM)
            }
        };
        let Some((mut conn, deadline)) = taken else {
            return;
        };
        let first = match conn.fill_nonblocking() {
            Ok(0) => return self.close(index, conn), // closed by the web server: normal
            Ok(_) => Work::Check(index, conn, deadline),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return self.park(index, conn, deadline);
            }
            Err(e) if e.kind() == io::ErrorKind::Other && conn.is_full() => {
                self.lock().in_flight += 1;
                Work::Serve(index, conn, None, false)
            }
            Err(e) => {
                log::debug!("FastCGI connection closed: {e}");
                return self.close(index, conn);
            }
        };
        let mut work = VecDeque::from([first]);
        while let Some(next) = work.pop_front() {
            match next {
                Work::Check(index, conn, deadline) => {
                    work.extend(self.check(index, conn, deadline))
                }
                Work::Serve(index, conn, head, body) => {
                    self.serve(index, conn, head, body, &mut work)
                }
            }
        }
    }

    /// What a connection's buffer is enough for: a request to serve (counted), an upload
    /// that waits for a turn, or nothing yet (back to the idle set).
    fn check(&self, index: usize, mut conn: Conn, deadline: Instant) -> Option<Work> {
        let scan = scan_head(conn.buffered(), conn::BUFFER - 1);
        conn.consume(scan.stray);
        if !(scan.ready || conn.is_full()) {
            self.park(index, conn, deadline);
            return None;
        }
        let head = peek_head(conn.buffered());
        let body = head
            .as_ref()
            .is_some_and(|h| self.handler.streams_body(h.begin.role, &h.params));
        let mut st = self.lock();
        match head {
            Some(head) if body && st.bodies >= self.body_limit => {
                st.waiting.push_back((index, conn, head));
                None
            }
            head => {
                st.in_flight += 1;
                if body {
                    st.bodies += 1;
                }
                Some(Work::Serve(index, conn, head, body))
            }
        }
    }

    /// Serves one request; then the connection goes back to the idle set (or is looked at
    /// again at once if its next request is buffered already), and an upload waiting for a
    /// turn gets the one this request freed.
    fn serve(
        &self,
        index: usize,
        conn: Conn,
        head: Option<PeekedHead>,
        body: bool,
        work: &mut VecDeque<Work>,
    ) {
        // The handler runs under its own catch_unwind; this one keeps the worker alive should
        // the layer itself ever panic (the connection is then dropped, i.e. closed).
        let kept = catch_unwind(AssertUnwindSafe(|| serve_one(conn, head, &*self.handler)))
            .ok()
            .flatten();
        let mut st = self.lock();
        st.in_flight -= 1;
        if body {
            st.bodies -= 1;
            if let Some((index, conn, head)) = st.waiting.pop_front() {
                st.in_flight += 1;
                st.bodies += 1;
                work.push_back(Work::Serve(index, conn, Some(head), true));
            }
        }
        let stopping = st.stopping.is_some();
        if stopping {
            self.tick.notify_one();
        }
        drop(st);
        match kept {
            Some(conn) if !stopping => {
                let deadline = Instant::now() + self.settings.idle;
                if conn.buffered().is_empty() {
                    self.park(index, conn, deadline);
                } else {
                    // The web server sent more already; the socket will not say so again.
                    work.push_front(Work::Check(index, conn, deadline));
                }
            }
            Some(conn) => self.close(index, conn),
            None => {
                let mut st = self.lock();
                Self::release(&mut st, index);
                self.arm_listener(&mut st);
            }
        }
    }
}

/// Serves the request whose head is buffered on `conn`; returns the connection if it is kept.
fn serve_one(mut conn: Conn, peeked: Option<PeekedHead>, handler: &dyn Handler) -> Option<Conn> {
    let read = match peeked {
        Some(peeked) => Ok(HeadOutcome::Request(conn.take_head(peeked))),
        None => conn.read_head(),
    };
    let head = match read {
        Ok(HeadOutcome::Request(head)) => head,
        Ok(HeadOutcome::Idle) => return Some(conn),
        Ok(HeadOutcome::Closed) => return None,
        Ok(HeadOutcome::Answered { keep }) => return (keep && !conn.broken).then_some(conn),
        Err(e) => {
            log::debug!("FastCGI connection closed: {e}");
            return None;
        }
    };
    let response = {
        let mut exchange = Exchange {
            role: head.role,
            params: &head.params,
            stdin: conn.stdin(head.id),
        };
        catch_unwind(AssertUnwindSafe(|| handler.answer(&mut exchange)))
            .unwrap_or_else(|_| Response::internal_error())
    };
    let mut out = conn.stdout(head.id);
    let written = out
        .write_all(&response.cgi_head())
        .and_then(|()| response.write_body(&mut out))
        .and_then(|()| out.finish());
    if let Err(e) = written {
        log::debug!("web server went away while we answered: {e}");
        return None;
    }
    // A body the handler did not read to its end (a refused upload, or one that the web
    // server sends although nobody asked): read it away so that the next request starts on a
    // record boundary, or close.
    if head.role == Role::Responder && !conn.body_done() && !conn.broken {
        conn.drain_stdin(head.id);
    }
    (head.keep_conn && !conn.broken).then_some(conn)
}
