//! The FastCGI front end, over the `fastcgi` crate: choosing the listening socket, turning a
//! FastCGI request into a `Request`, and writing the `Response` back.
//!
//! The crate runs one thread per connection, so a slow upload never holds up a slot request.
//! Its requests are not `Send` and it has no panic handling: each request runs under
//! `catch_unwind` and answers 500 rather than nothing (SPEC 8). Heads go out as one record;
//! bodies through a `BufWriter` so that each record is large.

use std::io::{self, BufWriter, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;

use crate::App;
use crate::request::{Request, Response};
use crate::route;

/// Where to accept FastCGI connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// An already listening socket we inherited (fd 0 from mod_fcgid/spawn-fcgi, fd 3 from systemd).
    Inherited(RawFd),
    /// `host:port`.
    Tcp(String),
    /// `unix:/path`: a Unix socket we create (mode 0660: give the web server our group).
    Unix(PathBuf),
}

impl Listen {
    /// Parses `unix:/path` or `host:port`.
    pub fn parse(text: &str) -> Listen {
        match text.strip_prefix("unix:") {
            Some(path) => Listen::Unix(PathBuf::from(path)),
            None => Listen::Tcp(text.to_string()),
        }
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

/// Accepts FastCGI connections forever. Returns only if the socket cannot be set up.
pub fn serve(app: Arc<App>, listen: Listen) -> io::Result<()> {
    let handler = move |request: fastcgi::Request| answer(&app, request);
    match listen {
        Listen::Inherited(fd) => {
            log::info!("FastCGI on inherited socket (fd {fd})");
            fastcgi::run_raw(handler, fd);
        }
        Listen::Tcp(addr) => {
            let listener = TcpListener::bind(&addr)?;
            log::info!("FastCGI on {addr}");
            fastcgi::run_tcp(handler, &listener);
        }
        Listen::Unix(path) => {
            // A socket file left by an earlier run would make bind fail.
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(&path)?;
            }
            let listener = UnixListener::bind(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
            log::info!("FastCGI on unix:{}", path.display());
            fastcgi::run_raw(handler, listener.as_raw_fd());
        }
    }
    Ok(())
}

/// One FastCGI request: build the `Request`, route it, write the answer.
fn answer(app: &App, mut fcgi: fastcgi::Request) {
    let authorizer = matches!(fcgi.role(), fastcgi::Role::Authorizer);
    let request = Request::from_params(|key| fcgi.param(key), authorizer);
    let response = catch_unwind(AssertUnwindSafe(|| {
        if request.decide_only {
            // mod_fcgid sends an authorizer no stdin at all: reading it would block (SPEC 8).
            route::handle(app, &request, &mut io::empty())
        } else {
            route::handle(app, &request, &mut fcgi.stdin())
        }
    }))
    .unwrap_or_else(|_| {
        Response::text(
            500,
            "text/plain; charset=utf-8",
            "internal error; the server log says more\n",
        )
    });
    let head = response.cgi_head();
    let mut out = BufWriter::with_capacity(64 * 1024, fcgi.stdout());
    let written = out
        .write_all(&head)
        .and_then(|()| response.write_body(&mut out))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        log::debug!("client went away while answering {}: {e}", request.path);
    }
}
