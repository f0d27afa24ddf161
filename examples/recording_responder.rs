//! The ceiling for a program that records its slots: the constant responder of
//! `constant_responder.rs` (the program's own FastCGI layer, answering a constant `200` with an
//! empty body) that first stores one slot per request through the program's own store — a
//! fresh token as the program makes them, no limits, SQLite in WAL mode with group commit, the
//! answer after the commit — and does nothing else (no query parsing, rules, log line or URLs).
//! `bench/run.sh` puts it behind the same nginx configuration as the program: program ÷ this
//! is what the request's own work costs on top of the durable write every slot needs; this ÷
//! the constant responder is what that write costs.
//!
//! Usage: `cargo run --release --example recording_responder -- unix:/path/to/sock
//! /path/to/db.sqlite3` (or `127.0.0.1:9000` for the first).

use std::sync::Arc;

use xmpp_http_upload::fcgi::{Listen, Settings, server};
use xmpp_http_upload::request::Response;
use xmpp_http_upload::rules::Limits;
use xmpp_http_upload::slot::new_token;
use xmpp_http_upload::store::{Location, Slot, Store};
use xmpp_http_upload::unix_now;

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let database = args
        .next()
        .ok_or_else(|| std::io::Error::other("usage: recording_responder LISTEN DATABASE"))?;
    let store = Store::open(&Location::Sqlite(database.into())).map_err(std::io::Error::other)?;
    let listener = Listen::At(listen.parse().map_err(std::io::Error::other)?).open()?;
    server::run(listener, Settings::default(), Arc::new(Recording { store }))
}

/// Stores a slot, then answers the same as the constant responder.
struct Recording {
    store: Store,
}

impl server::Handler for Recording {
    fn answer(&self, _: &mut server::Exchange<'_>) -> Response {
        let Ok(token) = new_token() else {
            return Response::text(503, "text/plain", "no random bytes\n");
        };
        let slot = Slot {
            token,
            jid: "admin@example.com".into(),
            name: "f.txt".into(),
            size: 1000,
            content_type: None,
            created: unix_now(),
            authorized: None,
            uploaded: None,
            area: None,
            expires: None,
            retention: None,
        };
        match self.store.reserve_slot(&slot, &Limits::default(), 360) {
            Ok(()) => Response::text(200, "text/plain", ""),
            Err(_) => Response::text(503, "text/plain", "not stored\n"),
        }
    }
}
