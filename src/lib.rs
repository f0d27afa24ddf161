//! xmpp-http-upload: the HTTP side of XMPP HTTP File Upload (XEP-0363) as a FastCGI program.
//!
//! # The request path
//!
//! 1. A front end (`fcgi`, `cgi` or `devserver`) turns what the web server sent into a
//!    transport-neutral [`request::Request`] and hands it, with the body, to [`route::handle`].
//! 2. `route` finds the endpoint: the slot API (`slot`), a PUT to decide or to receive
//!    (`authorize`, `external`, `file_share`: each checks and records its one allowance, so that
//!    when the web server writes the body a slot or signed URL is allowed once, at the exact
//!    path it will write), or a download (`transfer`).
//! 3. `slot` asks `rules` which rule decides for the JID and lets `store` check the quotas and
//!    record the slot in one transaction; `authorize` checks a PUT against its slot; `files`
//!    is the only module that touches the upload directory.
//! 4. Each endpoint returns a [`request::Response`] or a [`refusal::Refusal`] (a normal "no"
//!    with a status and one line); `route` logs one line per decision; the front end writes it.
//!
//! # Modules
//!
//! - `config`: TOML file → `Config`, every error with key and line.
//! - `request`: `Request` / `Response`, the seam between front ends and logic.
//! - `refusal`: `Refusal` (status + message) and `Error` (I/O, SQLite).
//! - `fcgi`, `cgi`, `devserver`: the three front ends (`fcgi` is our own FastCGI layer:
//!   `record` the wire format, `conn` one connection, `server` the poll loop and worker pool).
//! - `route`: dispatch.
//! - `slot`, `authorize`, `transfer`: the endpoints of the slot API and its uploads.
//! - `external`: the HMAC protocol of `mod_http_upload_external` / ejabberd `external_secret`.
//! - `file_share`: the JWT protocol of Prosody's `mod_http_file_share` (external mode).
//! - `rules`, `name`: pure logic (access rules and quotas; file names, URL and query decoding).
//! - `crypto`: HMAC-SHA256 and random hex, for every protocol.
//! - `store`: SQLite; `group_commit`: its one writing connection per process, shared by
//!   group commit, and its checkpoints. `files`: the upload directory. `cleanup`: expiry.
//! - `admin`: the administrator's commands (`files`, `purge`, `usage`, `check`).

pub mod admin;
pub mod authorize;
pub mod cgi;
pub mod cleanup;
pub mod config;
pub mod crypto;
pub mod devserver;
pub mod external;
pub mod fcgi;
pub mod file_share;
pub mod files;
pub mod group_commit;
pub mod metrics;
pub mod name;
pub mod refusal;
pub mod request;
pub mod route;
pub mod rules;
pub mod slot;
pub mod store;
pub mod transfer;

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
