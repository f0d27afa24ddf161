//! The FastCGI front end: choosing the listening socket, turning a FastCGI request into a
//! `Request`, routing it, and handing the `Response` back.
//!
//! The protocol itself is ours, in three parts: `record` (the wire format, pure), `conn` (one
//! connection: heads, streamed bodies, records out) and `server` (the worker pool waiting on one
//! epoll set, shutdown). It replaced the `fastcgi` crate (1.0.0, unmaintained), which panicked on
//! kept connections, dropped parameters after a non-UTF-8 byte, recursed per parameter and
//! started a thread per connection (README, "Performance").
//!
//! What this file does not do: HTTP logic (that is `route`), or CGI (that is `cgi`).

#![warn(missing_docs)]
pub mod conn;
pub mod record;
pub mod server;

use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::{fmt, io};

use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};

use crate::App;
use crate::config::ListenAddress;
use crate::request::{Request, Response};
use crate::route;
pub use record::{Params, Role};
pub use server::{Exchange, Listener, Settings};

/// Where to accept FastCGI connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// An already listening socket we inherited (fd 0 from mod_fcgid/spawn-fcgi, fd 3 from systemd).
    Inherited(RawFd),
    /// An address we bind (`--listen` or the `listen` key).
    At(ListenAddress),
}

impl Listen {
    /// Opens (or takes over) the listening socket.
    pub fn open(self) -> io::Result<Listener> {
        match self {
            Listen::Inherited(fd) => {
                log::info!("FastCGI on inherited socket (fd {fd})");
                inherited_listener(fd)
            }
            Listen::At(ListenAddress::Tcp(addr)) => {
                let listener = TcpListener::bind(&addr)?;
                log::info!("FastCGI on {addr}");
                Ok(Listener::Tcp(listener))
            }
            Listen::At(ListenAddress::Unix(path)) => {
                // A socket file left by an earlier run would make bind fail.
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(&path)?;
                }
                let listener = UnixListener::bind(&path)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
                log::info!("FastCGI on unix:{}", path.display());
                Ok(Listener::Unix(listener))
            }
        }
    }
}

/// What the socket is, for messages: the address as written, or the inherited descriptor.
impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Inherited(fd) => write!(f, "the inherited socket (fd {fd})"),
            Listen::At(address) => address.fmt(f),
        }
    }
}

/// Takes ownership of an inherited listening socket, TCP or Unix by its address family.
fn inherited_listener(fd: RawFd) -> io::Result<Listener> {
    // SAFETY: `fd` is a listening socket this process inherited (checked by the callers:
    // `LISTEN_FDS` names fd 3 as ours, or fd 0 answered SO_ACCEPTCONN), and nothing else in
    // the process uses or closes it: from here on the listener owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let family = getsockname::<SockaddrStorage>(owned.as_raw_fd())
        .map_err(io::Error::from)?
        .family();
    match family {
        Some(AddressFamily::Unix) => Ok(Listener::Unix(UnixListener::from(owned))),
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            Ok(Listener::Tcp(TcpListener::from(owned)))
        }
        other => Err(io::Error::other(format!(
            "fd {fd} is a socket of family {other:?}, not TCP or Unix"
        ))),
    }
}

/// A listening socket handed over by systemd socket activation (`LISTEN_FDS`) or on fd 0.
pub fn inherited_socket() -> Option<RawFd> {
    let ours = std::env::var("LISTEN_PID").ok()? == std::process::id().to_string();
    if ours && std::env::var("LISTEN_FDS").is_ok_and(|n| n == "1") {
        return Some(3);
    }
    None
}

/// True when file descriptor 0 is a *listening* socket (mod_fcgid, spawn-fcgi, systemd
/// `StandardInput=socket`). A CGI program's stdin may be a pipe, a terminal, or — under
/// Apache's mod_cgid — a *connected* socket: those are not FastCGI.
pub fn stdin_is_listening_socket() -> bool {
    nix::sys::socket::getsockopt(&io::stdin().as_fd(), nix::sys::socket::sockopt::AcceptConn)
        .unwrap_or(false)
}

/// Serves FastCGI until SIGTERM; `workers`: the pool size (`None`: from the core count).
/// Returns an error only if the socket cannot be set up.
pub fn serve(app: Arc<App>, listen: Listen, workers: Option<usize>) -> io::Result<()> {
    let listener = listen.open()?;
    let mut settings = Settings::default();
    if let Some(workers) = workers {
        settings.workers = workers;
    }
    server::run(listener, settings, Arc::new(Program { app }))
}

/// The program as a FastCGI handler.
struct Program {
    app: Arc<App>,
}

impl server::Handler for Program {
    /// A PUT that the program receives itself (not a decision for the web server).
    fn streams_body(&self, role: Role, params: &Params) -> bool {
        role == Role::Responder
            && params.get_bytes("REQUEST_METHOD") == Some(b"PUT")
            && params.get_bytes("XHU_AUTHORIZE") != Some(b"1")
    }

    /// One FastCGI request: build the `Request` and route it.
    fn answer(&self, exchange: &mut Exchange<'_>) -> Response {
        let authorizer = exchange.role == Role::Authorizer;
        let request = Request::from_params(|key| exchange.params.get(key), authorizer);
        if request.decide_only {
            // mod_fcgid sends an authorizer no stdin at all: reading it would block (BEHAVIOUR.md §8).
            return route::handle(&self.app, &request, &mut io::empty());
        }
        route::handle(&self.app, &request, exchange.body())
    }
}
