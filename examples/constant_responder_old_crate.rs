//! The anchor we beat: a FastCGI responder on the `fastcgi` crate (1.0.0, the design card's
//! choice, replaced by our own layer in `src/fcgi/`) that answers every request with a constant
//! `200` (empty body) and does nothing else. `bench/run.sh` puts it behind nginx configured as
//! the program was before the replacement (`fastcgi_keep_conn off`, no upstream keepalive: the
//! crate panics a thread on every idle close of a kept connection), so that its row is the
//! ceiling the old design had. The crate stays a dev-dependency for this example only.
//!
//! Usage: `cargo run --release --example constant_responder_old_crate -- unix:/path/to/sock`
//! (or `127.0.0.1:9000`).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;

/// The whole answer, head and (empty) body, written as one FastCGI record.
const ANSWER: &[u8] = b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n";

fn answer(mut request: fastcgi::Request) {
    // The client may have gone away; there is nothing useful to do about it here.
    let _ = request.stdout().write_all(ANSWER);
}

fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_string());
    match listen.strip_prefix("unix:") {
        Some(path) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            let listener = UnixListener::bind(path)?;
            fastcgi::run_raw(answer, listener.as_raw_fd());
        }
        None => {
            let listener = std::net::TcpListener::bind(&listen)?;
            fastcgi::run_tcp(answer, &listener);
        }
    }
    Ok(())
}
