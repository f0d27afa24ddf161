//! `runserver`: a small HTTP server for development, so that a newcomer can request a slot,
//! upload and download with curl without setting up a web server. Same router, same checks as
//! behind nginx; the program itself receives PUTs and serves GETs. Not for production: no TLS,
//! no limits on connections.

use std::io;
use std::sync::Arc;
use std::thread;

use tiny_http::{Header, Server, StatusCode};

use crate::App;
use crate::request::{Request, Response};
use crate::route;

/// Serves HTTP on `addr` (e.g. `127.0.0.1:8000`) until the process ends.
pub fn run(app: Arc<App>, addr: &str) -> io::Result<()> {
    let server =
        Server::http(addr).map_err(|e| io::Error::other(format!("listening on {addr}: {e}")))?;
    for request in server.incoming_requests() {
        let app = Arc::clone(&app);
        thread::spawn(move || answer(&app, request));
    }
    Ok(())
}

fn answer(app: &App, mut http: tiny_http::Request) {
    let header = |name: &'static str| {
        http.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let url = http.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let request = Request {
        method: http.method().as_str().to_string(),
        path: path.to_string(),
        query: query.to_string(),
        content_length: header("Content-Length"),
        content_type: header("Content-Type"),
        transfer_encoding: header("Transfer-Encoding"),
        content_range: header("Content-Range"),
        host: header("Host"),
        https: false,
        remote_addr: http.remote_addr().map(|a| a.ip().to_string()),
        authorization: header("Authorization"),
        decide_only: false,
    };
    let response = route::handle(app, &request, http.as_reader());
    if let Err(e) = http.respond(to_tiny_http(response)) {
        log::debug!("client went away while answering {}: {e}", request.path);
    }
}

fn to_tiny_http(response: Response) -> tiny_http::Response<Box<dyn io::Read + Send>> {
    let headers: Vec<Header> = response
        .headers
        .iter()
        .filter_map(|(name, value)| Header::from_bytes(name.as_bytes(), value.as_bytes()).ok())
        .collect();
    let status = StatusCode(response.status);
    let (body, len) = response.into_body_reader();
    tiny_http::Response::new(status, headers, body, usize::try_from(len).ok(), None)
}
