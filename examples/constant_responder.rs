//! The ceiling for our design: a FastCGI responder on the program's own FastCGI layer
//! (`xmpp_http_upload::fcgi::server`, the same worker pool and epoll set) that answers every request
//! with a constant `200` (empty body) and does nothing else. `bench/run.sh` puts it behind the
//! same nginx configuration as the program, so the ratio program / constant responder measures
//! what our own work (parsing, rules, SQLite) costs on top of the layer and nginx's FastCGI
//! round trip.
//!
//! Usage: `cargo run --release --example constant_responder -- unix:/path/to/sock`
//! (or `127.0.0.1:9000`).

use std::sync::Arc;

use xmpp_http_upload::fcgi::{Listen, Settings, server};
use xmpp_http_upload::request::Response;

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let listener = Listen::At(listen.parse().map_err(std::io::Error::other)?).open()?;
    server::run(listener, Settings::default(), Arc::new(Constant))
}

/// Answers every request the same.
struct Constant;

impl server::Handler for Constant {
    fn answer(&self, _: &mut server::Exchange<'_>) -> Response {
        Response::text(200, "text/plain", "")
    }
}
