//! One `match` from a `Request` to its endpoint, and from the outcome to a `Response`, with one
//! log line per decision. The front ends call `handle`; nothing here knows the transport.

use std::io::Read;

use crate::config::{Downloads, SignedPrefix};
use crate::files::SafePath;
use crate::refusal::{Outcome, Refusal, RefusalKind};
use crate::request::{Request, Response};
use crate::{App, authorize, external, file_share, metrics, slot, transfer, unix_now};

/// Where a request path points.
#[derive(Debug)]
enum Endpoint<'a> {
    Slot,
    MaxSize,
    Metrics,
    /// `<prefix>/<token>/<name>` under the PUT prefix, the GET prefix, or both.
    File {
        token: &'a str,
        raw_name: &'a str,
        put: bool,
        get: bool,
    },
    /// `<prefix>/<path...>` of an HMAC-protocol prefix.
    External {
        ext: &'a SignedPrefix,
        raw_rest: &'a str,
    },
    /// `<prefix>/<slot>/<name>` of a JWT-protocol prefix.
    FileShare {
        share: &'a SignedPrefix,
        raw_rest: &'a str,
    },
    Unknown,
}

/// Answers one request. `body` is the request body (empty for decide-only requests).
pub fn handle(app: &App, req: &Request, body: &mut dyn Read) -> Response {
    let outcome = dispatch(app, req, body);
    match outcome {
        Ok(response) => {
            if req.decide_only {
                log::info!("PUT allowed: {}", req.path);
            }
            response
        }
        Err(Outcome::Refused(refusal)) => {
            log::info!("refused {} {}: {}", req.method, req.path, refusal);
            count_refusal(app, req, &refusal);
            if req.decide_only {
                // nginx turns any status but 2xx/401/403 into a 500 for the client (BEHAVIOUR.md §8);
                // a 401 passes through with its WWW-Authenticate. The web server answers the
                // client, not us: the real status and the reason travel in headers it can
                // pass on (nginx: auth_request_set + error_page; Apache: they reach the
                // client with mod_fcgid's 401).
                let status = refusal.kind.status();
                let answer = if refusal.kind == RefusalKind::Unauthorized {
                    Response::refusal(&refusal)
                } else {
                    Response::refusal(&Refusal::new(RefusalKind::Forbidden, &*refusal.message))
                };
                answer.with_refusal_headers(status, &refusal.message)
            } else {
                Response::refusal(&refusal)
            }
        }
        Err(Outcome::Failed(error)) => {
            log::error!("failed {} {}: {error}", req.method, req.path);
            Response::failure(&error)
        }
    }
}

fn dispatch(app: &App, req: &Request, body: &mut dyn Read) -> Result<Response, Outcome> {
    let now = unix_now();
    let method = req.method.as_str();
    if req.decide_only {
        return decide(app, req, now);
    }
    match (method, endpoint(app, &req.path)) {
        ("GET", Endpoint::Slot) => slot::request_slot(app, req, now),
        ("GET", Endpoint::MaxSize) => slot::max_size(app, req),
        ("GET", Endpoint::Metrics) => metrics::serve(app, req),
        (_, Endpoint::Slot | Endpoint::MaxSize | Endpoint::Metrics) => {
            Err(method_not_allowed(method))
        }
        (
            "PUT",
            Endpoint::File {
                token,
                raw_name,
                put: true,
                ..
            },
        ) => transfer::receive(app, req, token, raw_name, body, now),
        (
            "GET" | "HEAD",
            Endpoint::File { get: true, .. }
            | Endpoint::External { .. }
            | Endpoint::FileShare { .. },
        ) if app.config.downloads == Downloads::WebServer => Err(served_by_web_server(req)),
        (
            "GET" | "HEAD",
            Endpoint::File {
                token,
                raw_name,
                get: true,
                ..
            },
        ) => transfer::serve(app, req, token, raw_name),
        ("PUT", Endpoint::External { ext, raw_rest }) => {
            external::receive(app, ext, req, raw_rest, body, now)
        }
        ("GET" | "HEAD", Endpoint::External { ext, raw_rest }) => {
            external::serve(app, ext, req, raw_rest)
        }
        ("PUT", Endpoint::FileShare { share, raw_rest }) => {
            file_share::receive(app, share, req, raw_rest, body, now)
        }
        ("GET" | "HEAD", Endpoint::FileShare { share, raw_rest }) => {
            file_share::serve(app, share, req, raw_rest)
        }
        (
            "OPTIONS",
            Endpoint::File { .. } | Endpoint::External { .. } | Endpoint::FileShare { .. },
        ) => Ok(transfer::preflight()),
        (_, Endpoint::File { .. } | Endpoint::External { .. } | Endpoint::FileShare { .. }) => {
            Err(method_not_allowed(method))
        }
        (_, Endpoint::Unknown) => {
            Err(Refusal::not_found(format!("nothing at {:?}", req.path)).into())
        }
    }
}

/// Decide-only: may this PUT proceed? On yes, the directory for the file exists (Apache's
/// mod_dav does not create it; nginx would) and the web server writes the body.
fn decide(app: &App, req: &Request, now: i64) -> Result<Response, Outcome> {
    let method = req.method.as_str();
    let path = match endpoint(app, &req.path) {
        Endpoint::File {
            token,
            raw_name,
            put: true,
            ..
        } if method == "PUT" => {
            let slot = authorize::allow_put(app, req, token, raw_name, now)?;
            SafePath::slot(token, &slot.name)?
        }
        Endpoint::External { ext, raw_rest } if method == "PUT" => {
            external::allow_put(app, ext, req, raw_rest, now)?
        }
        Endpoint::FileShare { share, raw_rest } if method == "PUT" => {
            file_share::allow_put(app, share, req, raw_rest, now)?.0
        }
        _ => {
            return Err(
                Refusal::forbidden(format!("not an upload URL: {method} {}", req.path)).into(),
            );
        }
    };
    app.uploads.create_parent(&path)?;
    Ok(Response::empty(200))
}

/// The one place refusals are counted: a refused slot request by its reason, a refused PUT
/// (decided or received) by its protocol and reason. Other refusals (downloads, unknown
/// URLs, `max_size`, `metrics`) are not counted.
fn count_refusal(app: &App, req: &Request, refusal: &Refusal) {
    let protocol = match endpoint(app, &req.path) {
        Endpoint::Slot => None,
        _ if req.method != "PUT" => return,
        Endpoint::File { put: true, .. } => Some("slot"),
        Endpoint::External { .. } => Some("hmac"),
        Endpoint::FileShare { .. } => Some("jwt"),
        _ => return,
    };
    metrics::count_refusal(app, protocol, refusal);
}

/// A GET or HEAD of a file under `webserver_download = true`: the web server was meant to
/// answer it (config::Downloads says why this is a refusal, not a redirect).
fn served_by_web_server(req: &Request) -> Outcome {
    Refusal::not_found(format!(
        "{} {:?} is for the web server to serve (webserver_download = true), not this program",
        req.method, req.path
    ))
    .into()
}

fn method_not_allowed(method: &str) -> Outcome {
    Refusal::new(
        RefusalKind::MethodNotAllowed,
        format!("method {method:?} not allowed here"),
    )
    .into()
}

fn endpoint<'a>(app: &'a App, path: &'a str) -> Endpoint<'a> {
    let config = &app.config;
    if let Some(rest) = path.strip_prefix(config.slot_prefix.as_str()) {
        match rest {
            "/slot" | "/slot/" => return Endpoint::Slot,
            "/max_size" | "/max_size/" => return Endpoint::MaxSize,
            "/metrics" | "/metrics/" => return Endpoint::Metrics,
            _ => {}
        }
    }
    for ext in &config.external {
        if let Some(raw_rest) = path
            .strip_prefix(ext.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            return Endpoint::External { ext, raw_rest };
        }
    }
    for share in &config.file_share {
        if let Some(raw_rest) = path
            .strip_prefix(share.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            return Endpoint::FileShare { share, raw_rest };
        }
    }
    let file_under = |prefix: &str| {
        let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
        let (token, raw_name) = rest.split_once('/')?;
        (!token.is_empty() && !raw_name.is_empty() && !raw_name.contains('/'))
            .then_some((token, raw_name))
    };
    let put = file_under(&config.put_prefix);
    let get = file_under(&config.get_prefix);
    match put.or(get) {
        Some((token, raw_name)) => Endpoint::File {
            token,
            raw_name,
            put: put.is_some(),
            get: get.is_some(),
        },
        None => Endpoint::Unknown,
    }
}
