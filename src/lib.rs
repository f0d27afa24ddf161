//! xmpp-http-upload: the HTTP side of XMPP HTTP File Upload (XEP-0363) as a FastCGI program.
//!
//! # A PUT, from the FastCGI record to the decision and back
//!
//! A worker of `fcgi::server` (all wait on one epoll set: `Server::worker`, `Server::check`)
//! reads what a connection sent until it has buffered a request's BEGIN_REQUEST and PARAMS
//! records (`record::scan_head`, `record::peek_head`), then runs `server::serve_one`. There
//! `fcgi::Program::answer` builds the transport-neutral [`request::Request`]
//! (`Request::from_params`: `decide_only` is the Authorizer role or `XHU_AUTHORIZE=1`) and calls
//! [`route::handle`] with the body, a reader of the STDIN records (`Exchange::body`; empty
//! when the web server writes the body). `route::handle` reads the clock once (`unix_now`);
//! `route::endpoint` turns the path into an `Endpoint` — here a `FileUrl` of one of the three
//! protocols — and `route::dispatch` sends the PUT to `route::upload`, which asks that
//! protocol: [`slot::allow_put`] (the slot from `store`, the name via `name`, its age, the
//! exact length and type via [`put::size_matches`] and [`put::media_type_matches`]; when the
//! web server writes, all of it in one transaction, `Store::authorize_first_put`, else
//! `Store::slot` then `Store::mark_authorized`), [`hmac::allow_put`] (the URL's
//! signature, `Store::claim_signed_path`) or [`jwt::allow_put`] (the token, then `rules` and
//! `Store::reserve_slot`). Each answers with the same [`put::Allowed`] — the path to write,
//! the exact length, the slot to mark stored — or a [`refusal::Refusal`]. The same yes then
//! ends one of two ways: [`put::hand_to_web_server`] makes the file's directory
//! (`UploadDir::create_parent`) and answers 200, and nginx or mod_dav writes the body; or
//! [`put::receive`] streams exactly that many bytes into place (`UploadDir::receive`), marks
//! the slot uploaded (`Store::mark_uploaded`) and answers 201. Back in `route::handle` a
//! refusal becomes its status (decide-only: 403, or 401, with the real status and reason in
//! `XHU-Status`/`XHU-Reason` for the web server), is counted (`metrics::count_refusal`) and
//! logged in one line; `serve_one` writes the [`request::Response`] as STDOUT records
//! (`Response::cgi_head`, `Response::write_body`) and ends the request (`Stdout::finish`).
//! The CGI (`cgi::serve_one`) and development server (`devserver`) front ends call the same
//! `route::handle`.
//!
//! # Layout
//!
//! - `main`: the command line. `config`: TOML file → `Config`, every error with key and line.
//! - `fcgi` (`record` the wire format, `conn` one connection, `server` the worker pool on one
//!   epoll set), `cgi`, `devserver`: the three front ends; only they know the transport.
//! - `request`: `Request` / `Response`, the seam between the front ends and the rest.
//! - `route`: one `match` from a request to its endpoint, one log line per decision.
//! - `slot`, `hmac`, `jwt`: the three protocols, one module each, none borrowing from another.
//!   `slot` is our slot API (`request_slot`, `max_size`) with its PUTs and GETs;
//!   `hmac` the signed URLs of `mod_http_upload_external` / ejabberd `external_secret`; `jwt` the
//!   Bearer tokens of Prosody's `mod_http_file_share`. Each has `allow_put` and `serve`.
//! - `caller`: who may call the slot API and `metrics` (address, secret; `route` asks it once
//!   for all three URLs, before `slot` or `metrics` answers). `jid`: the bare,
//!   lower-case JID that rules, quotas and records meet (slot API, JWT `sub`, `--jid`).
//! - `put`: what every PUT shares (`Allowed`, the length and type checks, the two endings).
//! - `download`: a stored file served by the program (ranges, conditional GETs, safe headers).
//! - `metrics`: the counters. `admin`: the administrator's commands. `cleanup`: expiry.
//! - `rules`, `name`, `content_type`, `crypto`: pure logic (access rules and quotas; file names
//!   and URL decoding; media types; HMAC-SHA256 and random hex).
//! - `store`: the database (SQLite, or PostgreSQL for several hosts), the only module that
//!   speaks SQL; `store::group_commit` is SQLite's one writing connection per process, shared by
//!   the requests of a moment in one transaction, and its checkpoints off the request path. `files`: the upload directory, the only module that touches it. `refusal`: `Refusal` (a normal "no") and `Error` (a failure).

pub mod admin;
pub mod caller;
pub mod cgi;
pub mod cleanup;
pub mod config;
pub mod content_type;
pub mod crypto;
pub mod devserver;
pub mod download;
pub mod fcgi;
pub mod files;
pub mod hmac;
pub mod jid;
pub mod jwt;
pub mod metrics;
pub mod name;
pub mod put;
pub mod refusal;
pub mod request;
pub mod route;
pub mod rules;
pub mod slot;
pub mod store;

use config::Config;
use files::UploadDir;
use refusal::Error;
use store::Store;

/// Everything a request needs: the configuration, the database and the upload directory.
/// Shared by all request threads.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub uploads: UploadDir,
}

impl App {
    /// Opens the database (migrating it) and the upload directory named by `config`.
    pub fn open(config: Config) -> Result<App, Error> {
        let store = Store::open(&config.database)?;
        let uploads = UploadDir::open(&config.upload_root)?;
        Ok(App {
            config,
            store,
            uploads,
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
