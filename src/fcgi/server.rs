//! The FastCGI server loop: one thread that waits on the listening socket, every idle
//! connection and the shutdown signal (`poll(2)`), and a fixed pool of worker threads that
//! each serve one request at a time.
//!
//! A connection is handed to a worker only once a whole request head has arrived (or a
//! management record, or something to refuse), so a worker never waits for a web server that
//! is slow to send its head; a kept connection goes back to the idle set after each request,
//! so idle connections hold no worker (php-fpm's trap, `FASTCGI.md`). Requests that stream a
//! body may take all workers but `reserve`: slot requests and authorizations keep being
//! answered however many slow uploads there are. SIGTERM/SIGINT stop accepting, let requests
//! in flight finish within `grace`, then `run` returns.
//!
//! What it does not do: parse records (`record`, `conn`) or know what a request means (the
//! `Handler`). No thread is started per connection or per request.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
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
    /// at once; the others wait their turn in the poll loop, not in a worker.
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

/// A connection handed to a worker, with its head when the poll loop already parsed it.
struct Job {
    conn: Conn,
    head: Option<PeekedHead>,
    /// Counted against the body limit.
    body: bool,
}

/// What a worker sends back after a request: the connection if it is kept, and whether the
/// request was counted against the body limit.
struct Back {
    conn: Option<Conn>,
    body: bool,
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

/// A connection waiting for its next request.
struct Idle {
    conn: Conn,
    deadline: Instant,
}

/// Serves FastCGI on `listener` until SIGTERM or SIGINT; then finishes what is in flight
/// (at most `settings.grace`) and returns.
pub fn run(listener: Listener, settings: Settings, handler: Arc<dyn Handler>) -> io::Result<()> {
    // The signals are taken from a file descriptor in the poll set; blocked here, before the
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
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (back_tx, back_rx) = mpsc::channel::<Back>();
    let (wake_rx, wake_tx) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    let wake_tx = Arc::new(wake_tx);
    for n in 0..workers {
        let (jobs, back, wake) = (job_rx.clone(), back_tx.clone(), wake_tx.clone());
        let handler = handler.clone();
        std::thread::Builder::new()
            .name(format!("fcgi-{n}"))
            .spawn(move || worker(&jobs, &back, &wake, &*handler))?;
    }
    log::info!(
        "FastCGI: {workers} workers ({} may stream bodies at once)",
        workers - reserve(workers)
    );
    let mut poller = Poller {
        listener: Some(listener),
        settings,
        limits,
        handler,
        idle: Vec::new(),
        in_flight: 0,
        bodies: 0,
        body_limit: workers - reserve(workers),
        waiting: VecDeque::new(),
        jobs: job_tx,
        accept_paused_until: None,
        accept_backoff: Duration::ZERO,
        stopping: None,
    };
    poller.run(&signal_fd, &wake_rx, &back_rx)
}

fn worker(
    jobs: &Mutex<Receiver<Job>>,
    back: &Sender<Back>,
    wake: &UnixStream,
    handler: &dyn Handler,
) {
    loop {
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(Job { conn, head, body }) = job else {
            return; // the server is gone
        };
        // The handler runs under its own catch_unwind; this one keeps the pool whole should
        // the layer itself ever panic (the connection is then dropped, i.e. closed).
        let kept = catch_unwind(AssertUnwindSafe(|| serve_one(conn, head, handler)))
            .ok()
            .flatten();
        if back.send(Back { conn: kept, body }).is_err() {
            return;
        }
        // A full wake-up socket already holds a wake-up.
        let _ = (&*wake).write(&[1]);
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

/// The thread that owns the listener and the idle connections.
struct Poller {
    listener: Option<Listener>,
    settings: Settings,
    limits: conn::Limits,
    handler: Arc<dyn Handler>,
    idle: Vec<Idle>,
    /// Connections handed to workers and not yet back.
    in_flight: usize,
    /// Of those, requests that stream a body; at most `body_limit`.
    bodies: usize,
    body_limit: usize,
    /// Requests that stream a body, waiting for a worker (their heads are parsed).
    waiting: VecDeque<(Conn, PeekedHead)>,
    jobs: Sender<Job>,
    accept_paused_until: Option<Instant>,
    accept_backoff: Duration,
    /// When SIGTERM came.
    stopping: Option<Instant>,
}

impl Poller {
    fn run(
        &mut self,
        signal_fd: &SignalFd,
        wake: &UnixStream,
        back: &Receiver<Back>,
    ) -> io::Result<()> {
        loop {
            while let Ok(done) = back.try_recv() {
                self.in_flight -= 1;
                if done.body {
                    self.bodies -= 1;
                }
                if let Some(conn) = done.conn {
                    self.kept(conn);
                }
            }
            while self.bodies < self.body_limit {
                let Some((conn, head)) = self.waiting.pop_front() else {
                    break;
                };
                self.dispatch(conn, Some(head), true);
            }
            if let Some(since) = self.stopping {
                if self.in_flight + self.waiting.len() == 0 {
                    log::info!("FastCGI: stopped");
                    return Ok(());
                }
                if since.elapsed() >= self.settings.grace {
                    log::warn!(
                        "FastCGI: stopping with {} requests unfinished after {:?}",
                        self.in_flight + self.waiting.len(),
                        self.settings.grace
                    );
                    return Ok(());
                }
            }
            let now = Instant::now();
            self.idle.retain(|idle| {
                let keep = idle.deadline > now;
                if !keep {
                    log::debug!("FastCGI: idle connection timed out");
                }
                keep
            });
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
            }
            let accepting = self.stopping.is_none()
                && self.accept_paused_until.is_none()
                && self.idle.len() + self.in_flight + self.waiting.len() < self.settings.max_conns;

            let mut deadline = self.idle.iter().map(|i| i.deadline).min();
            for t in [
                self.accept_paused_until,
                self.stopping.map(|s| s + self.settings.grace),
            ] {
                deadline = match (deadline, t) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(t) => {
                    let ms = t.saturating_duration_since(now).as_millis() + 1;
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
                }
            };

            let readable = PollFlags::POLLIN;
            let mut fds = vec![
                PollFd::new(signal_fd.as_fd(), readable),
                PollFd::new(wake.as_fd(), readable),
            ];
            let listener_slot = match (&self.listener, accepting) {
                (Some(listener), true) => {
                    fds.push(PollFd::new(listener.as_fd(), readable));
                    true
                }
                _ => false,
            };
            let first_conn = fds.len();
            fds.extend(
                self.idle
                    .iter()
                    .map(|i| PollFd::new(i.conn.as_fd(), readable)),
            );
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let events: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);

            if !events[0].is_empty() {
                self.signalled(signal_fd);
            }
            if !events[1].is_empty() {
                let mut sink = [0u8; 64];
                while matches!((&*wake).read(&mut sink), Ok(n) if n > 0) {}
            }
            // Idle connections first (their indices refer to the set as polled), then new ones.
            let ready: Vec<usize> = events[first_conn..]
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.is_empty())
                .map(|(i, _)| i)
                .collect();
            for &i in ready.iter().rev() {
                let idle = self.idle.swap_remove(i);
                self.readable(idle);
            }
            if listener_slot && !events[2].is_empty() {
                self.accept_all();
            }
        }
    }

    fn signalled(&mut self, signal_fd: &SignalFd) {
        while let Ok(Some(info)) = signal_fd.read_signal() {
            if self.stopping.is_none() {
                log::info!(
                    "FastCGI: signal {} — no new connections; finishing {} requests",
                    info.ssi_signo,
                    self.in_flight
                );
                self.stopping = Some(Instant::now());
                // Dropping our listener stops accepting; under systemd socket activation the
                // socket itself stays open in systemd for the next start.
                self.listener = None;
                self.idle.clear();
            }
        }
    }

    /// A connection a worker is done with: idle again, or straight back to work if the web
    /// server already sent its next request.
    fn kept(&mut self, conn: Conn) {
        if self.stopping.is_some() {
            return;
        }
        let deadline = Instant::now() + self.settings.idle;
        self.check(Idle { conn, deadline });
    }

    /// Reads what an idle connection sent; dispatches it, keeps waiting, or closes it.
    fn readable(&mut self, mut idle: Idle) {
        match idle.conn.fill_nonblocking() {
            Ok(0) => {} // closed by the web server: normal between requests
            Ok(_) => self.check(idle),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.idle.push(idle),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.idle.push(idle),
            Err(e) if e.kind() == io::ErrorKind::Other && idle.conn.is_full() => {
                self.dispatch(idle.conn, None, false)
            }
            Err(e) => log::debug!("FastCGI connection closed: {e}"),
        }
    }

    /// Dispatches the connection if what it buffered is enough for a worker, else keeps it idle.
    fn check(&mut self, mut idle: Idle) {
        let scan = scan_head(idle.conn.buffered(), conn::BUFFER - 1);
        idle.conn.consume(scan.stray);
        if !(scan.ready || idle.conn.is_full()) {
            self.idle.push(idle);
            return;
        }
        let head = peek_head(idle.conn.buffered());
        let body = head
            .as_ref()
            .is_some_and(|h| self.handler.streams_body(h.begin.role, &h.params));
        match head {
            Some(head) if body && self.bodies >= self.body_limit => {
                self.waiting.push_back((idle.conn, head))
            }
            head => self.dispatch(idle.conn, head, body),
        }
    }

    fn dispatch(&mut self, conn: Conn, head: Option<PeekedHead>, body: bool) {
        if self.jobs.send(Job { conn, head, body }).is_ok() {
            self.in_flight += 1;
            if body {
                self.bodies += 1;
            }
        }
    }

    fn accept_all(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        // A bounded batch, so that idle connections are looked at again soon.
        for _ in 0..64 {
            match listener.accept() {
                Ok(stream) => {
                    self.accept_backoff = Duration::ZERO;
                    match Conn::new(stream, self.limits) {
                        Ok(conn) => self.idle.push(Idle {
                            conn,
                            deadline: Instant::now() + self.settings.first_request,
                        }),
                        Err(e) => log::warn!("FastCGI: cannot set up a connection: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: not the end of the program. Stop
                    // accepting for a while (connections wait in the backlog) and try again.
                    self.accept_backoff = (self.accept_backoff * 2)
                        .clamp(Duration::from_millis(50), Duration::from_secs(2));
                    log::error!(
                        "FastCGI: accept failed: {e}; retrying in {:?}",
                        self.accept_backoff
                    );
                    self.accept_paused_until = Some(Instant::now() + self.accept_backoff);
                    return;
                }
            }
        }
    }
}
