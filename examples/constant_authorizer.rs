//! The ceiling for authorized uploads: an authorizer on the program's own FastCGI layer that
//! allows every decide-only request (nginx `auth_request` with `XHU_AUTHORIZE=1`, or the FastCGI
//! Authorizer role of Apache's `FcgidAccessChecker`) with an empty `200`, and answers anything
//! else `404`. It reads no database and no file: `bench/run.sh` puts it where the program sits
//! behind nginx's `auth_request`, so the ratio program / constant authorizer for small PUTs
//! measures what our own decision (token, slot lookup, marking it) costs.
//!
//! Usage: `cargo run --release --example constant_authorizer -- unix:/path/to/sock`
//! (or `127.0.0.1:9000`).

use std::sync::Arc;

use xmpp_http_upload::fcgi::{Listen, Role, Settings, server};
use xmpp_http_upload::request::Response;

/// Allows every decision, answers nothing else.
struct Constant;

impl server::Handler for Constant {
    fn answer(&self, exchange: &mut server::Exchange<'_>) -> Response {
        let decide_only = exchange.role == Role::Authorizer
            || exchange.params.get_bytes("XHU_AUTHORIZE") == Some(b"1");
        if decide_only {
            Response::empty(200)
        } else {
            Response::empty(404)
        }
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let listener = Listen::At(listen.parse().map_err(std::io::Error::other)?).open()?;
    server::run(listener, Settings::default(), Arc::new(Constant))
}
