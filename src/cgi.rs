//! The plain CGI front end (shared hosting): one request from the environment and stdin, the
//! answer on stdout. The web server starts the program once per request.
//!
//! Under CGI the request is the only input. Apache's mod_cgi/mod_cgid hand a query without `=`
//! to the program as its command line (RFC 3875 §4.4), so [`run`] reads no argument, no
//! subcommand and no `listen` from the configuration: `?runserver+--listen+...` is just a
//! query. A body is read under time bounds (a trickling client must not hold one of the host's
//! CGI processes for ever), and what a refused request leaves unread costs a bounded amount
//! before the answer goes out. This module does not decide anything about the request itself:
//! that is `route`'s.

use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{Shutdown, shutdown};

use crate::App;
use crate::config::{CONFIG_ENV, Config, DEFAULT_CONFIG_PATH};
use crate::fcgi;
use crate::request::{Request, Response};
use crate::route;

/// Longest pause between two pieces of a body (shorter when `put_timeout` is shorter).
pub const MAX_IDLE: Duration = Duration::from_secs(60);
/// Slowest average rate a body may arrive at once `put_timeout` of grace has passed: 8 KiB/s
/// (64 kbit/s, a poor mobile link). A 50 MiB upload may so take up to about 1 h 50 min, a
/// 1 MiB one 6 min 8 s with the default `put_timeout` of 360 s.
pub const MIN_RATE: u64 = 8 * 1024;
/// At most this much of a refused request's body is read before the answer.
const DRAIN_MAX_BYTES: u64 = 1 << 20;
/// At most this long is spent reading a refused request's body before the answer.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// True when the web server started us as CGI: `GATEWAY_INTERFACE` is set and fd 0 is not a
/// listening socket (mod_fcgid also starts its FastCGI processes from a CGI-like environment).
pub fn started_as_cgi() -> bool {
    std::env::var_os("GATEWAY_INTERFACE").is_some() && !fcgi::stdin_is_listening_socket()
}

/// The whole life of a CGI process: the configuration from `$XMPP_HTTP_UPLOAD_CONFIG` (else
/// the default path), one request answered. Every failure still answers (a 500 with one line,
/// the detail in the web server's error log) rather than leaving Apache a broken head.
pub fn run() -> ExitCode {
    let path = std::env::var_os(CONFIG_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let opened = Config::load(&path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            if let Some(listen) = &config.listen {
                log::warn!(
                    "{}: `listen = {listen:?}` ignored: started as CGI, the program answers \
                     the one request it was started for",
                    path.display()
                );
            }
            App::open(config).map_err(|e| e.to_string())
        });
    let written = match opened {
        Ok(app) => serve_one(&app),
        Err(message) => {
            log::error!("cannot answer a CGI request: {message}");
            let mut body = StdinBody::new(BodyLimits::refused());
            stop_reading(&mut body);
            write_answer(Response::internal_error())
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::debug!("the web server went away before the answer was written: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Answers the one request of this process.
pub fn serve_one(app: &App) -> io::Result<()> {
    // A variable that is not UTF-8 reads as absent: a missing required value is refused.
    let request = Request::from_params(|key| std::env::var(key).ok(), false);
    let declared = request
        .content_length
        .as_deref()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let mut body = StdinBody::new(BodyLimits::for_upload(app.config.put_timeout, declared));
    // A panic must still answer (BEHAVIOUR.md §8): Apache would otherwise log a broken head only.
    let handled = catch_unwind(AssertUnwindSafe(|| route::handle(app, &request, &mut body)));
    let mut response = handled.unwrap_or_else(|_| Response::internal_error());
    if let Some(why) = body.too_slow.take() {
        // `route` saw an interrupted upload (and logged it); the client should hear why.
        response = Response::text(408, "text/plain; charset=utf-8", format!("{why}\n"));
    }
    stop_reading(&mut body);
    write_answer(response)
}

fn write_answer(response: Response) -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
    out.write_all(&response.cgi_head())?;
    response.write_body(&mut out)?;
    out.flush()
}

/// Ends reading the body before the answer is written. Under mod_cgid, stdin and stdout are one
/// Unix socket: closing it with body bytes still unread makes the kernel reset Apache's side,
/// and the answer is lost (the client sees a reset). So the read side is shut down first —
/// Apache's next write fails, and Apache itself soaks up the rest of the client's body
/// (`child_stopped_reading`) — and what is already queued is read, at most
/// `DRAIN_MAX_BYTES`/`DRAIN_MAX_TIME`. Under mod_cgi stdin is a pipe (no shutdown): the
/// bounded read is all there is, and the answer goes out on another pipe anyway.
fn stop_reading(body: &mut StdinBody) {
    let stdin = io::stdin();
    // ENOTSOCK for a pipe, ENOTCONN when Apache has gone: nothing to shut down then.
    let _ = shutdown(stdin.as_fd().as_raw_fd(), Shutdown::Read);
    body.limits = BodyLimits::refused();
    body.started = Instant::now();
    let _ = io::copy(
        &mut Read::by_ref(body).take(DRAIN_MAX_BYTES),
        &mut io::sink(),
    );
}

/// Time bounds on reading a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BodyLimits {
    /// No byte for this long ends the body.
    idle: Duration,
    /// The whole body must have arrived within this long.
    total: Duration,
}

impl BodyLimits {
    /// An upload of `declared` bytes: `put_timeout` of grace plus `declared` at `MIN_RATE`,
    /// pauses of at most `MAX_IDLE` (or `put_timeout`, when that is shorter, but 1 s at least).
    fn for_upload(put_timeout: i64, declared: u64) -> BodyLimits {
        // Durations in the config are seconds > 0 (i64, as every time in the program).
        let put_timeout = put_timeout.unsigned_abs();
        BodyLimits {
            idle: Duration::from_secs(put_timeout.clamp(1, MAX_IDLE.as_secs())),
            total: Duration::from_secs(put_timeout.saturating_add(declared / MIN_RATE + 1)),
        }
    }

    /// What is left of a body nobody wants: `DRAIN_MAX_TIME` in all.
    fn refused() -> BodyLimits {
        BodyLimits {
            idle: DRAIN_MAX_TIME,
            total: DRAIN_MAX_TIME,
        }
    }
}

/// The request body on fd 0, read without std's buffer (so that `poll` sees every byte that
/// has not been consumed) and given up with `TimedOut` when a bound of `limits` is passed.
struct StdinBody {
    limits: BodyLimits,
    started: Instant,
    /// Why the body was given up, once it was.
    too_slow: Option<String>,
}

impl StdinBody {
    fn new(limits: BodyLimits) -> StdinBody {
        StdinBody {
            limits,
            started: Instant::now(),
            too_slow: None,
        }
    }

    fn give_up(&mut self, why: String) -> io::Error {
        let error = io::Error::new(io::ErrorKind::TimedOut, why.clone());
        self.too_slow = Some(why);
        error
    }

    /// Waits until fd 0 is readable (or at its end), within the bounds.
    fn wait_readable(&mut self) -> io::Result<()> {
        let stdin = io::stdin();
        loop {
            let elapsed = self.started.elapsed();
            let left = self.limits.total.saturating_sub(elapsed);
            if left.is_zero() {
                return Err(self.give_up(format!(
                    "upload too slow: the body did not arrive within {} s",
                    self.limits.total.as_secs()
                )));
            }
            let wait = left.min(self.limits.idle);
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) if wait == self.limits.idle => {
                    return Err(self.give_up(format!(
                        "upload stalled: no data for {} s",
                        self.limits.idle.as_secs()
                    )));
                }
                // The total bound is reached: said on the next turn.
                Ok(0) => {}
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Read for StdinBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.wait_readable()?;
        let stdin = io::stdin();
        loop {
            match nix::unistd::read(stdin.as_fd(), buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_with_the_declared_size() {
        let small = BodyLimits::for_upload(360, 1000);
        assert_eq!(small.idle, MAX_IDLE);
        assert_eq!(small.total, Duration::from_secs(361));
        let big = BodyLimits::for_upload(360, 50 << 20);
        assert_eq!(big.total, Duration::from_secs(360 + 6400 + 1));
    }

    #[test]
    fn a_short_put_timeout_shortens_the_idle_bound() {
        assert_eq!(BodyLimits::for_upload(3, 0).idle, Duration::from_secs(3));
        assert_eq!(BodyLimits::for_upload(0, 0).idle, Duration::from_secs(1));
    }

    #[test]
    fn an_absurd_declared_size_does_not_overflow() {
        let limits = BodyLimits::for_upload(i64::MAX, u64::MAX);
        // put_timeout is an i64 now: the sum no longer reaches u64::MAX, but must not wrap.
        assert!(limits.total >= Duration::from_secs(i64::MAX.unsigned_abs()));
    }
}
