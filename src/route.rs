//! One `match` from a `Request` to its endpoint, and from the outcome to a `Response`, with one
//! log line per decision. The front ends call `handle`; nothing here knows the transport.
//! The slot API's own URLs are the XMPP server's alone: the caller is checked here, once for
//! all three (`caller`), before the endpoint answers.

use std::io::Read;

use crate::caller::check_caller;
use crate::config::{Downloads, SignedPrefix};
use crate::name::parse_query;
use crate::refusal::{Outcome, Refusal, RefusalKind};
use crate::request::{Request, Response};
use crate::{App, hmac, jwt, metrics, put, slot, unix_now};

/// Where a request path points: found once per request (`handle`), then dispatched on and
/// counted by.
#[derive(Debug, Clone, Copy)]
enum Endpoint<'a> {
    /// One of the slot API's own URLs, below `slot_prefix`.
    SlotApi(ApiUrl),
    /// The URL of a file of one protocol: a PUT may upload to it when `put`, a GET or HEAD
    /// download it when `get` (both, unless it is under only one of the slot API's prefixes).
    File {
        url: FileUrl<'a>,
        put: bool,
        get: bool,
    },
    Unknown,
}

/// The slot API's own URLs: `<slot_prefix>/slot/`, `/max_size/`, `/metrics`.
#[derive(Debug, Clone, Copy)]
enum ApiUrl {
    Slot,
    MaxSize,
    Metrics,
}

/// A file's URL, by protocol, still as sent (percent-encoded).
#[derive(Debug, Clone, Copy)]
enum FileUrl<'a> {
    /// `<put_prefix or get_prefix>/<token>/<name>` of the slot API.
    Slot { token: &'a str, raw_name: &'a str },
    /// `<prefix>/<path...>` of an HMAC-protocol prefix.
    Hmac {
        prefix: &'a SignedPrefix,
        raw_rest: &'a str,
    },
    /// `<prefix>/<slot>/<name>` of a JWT-protocol prefix.
    Jwt {
        prefix: &'a SignedPrefix,
        raw_rest: &'a str,
    },
}

impl FileUrl<'_> {
    /// The `protocol` label of the metrics.
    fn protocol(self) -> &'static str {
        match self {
            FileUrl::Slot { .. } => "slot",
            FileUrl::Hmac { .. } => "hmac",
            FileUrl::Jwt { .. } => "jwt",
        }
    }
}

/// Answers one request. `body` is the request body (empty for decide-only requests).
pub fn handle(app: &App, req: &Request, body: &mut dyn Read) -> Response {
    // The one clock reading of the request: every decision and record of it uses this `now`.
    let now = unix_now();
    let endpoint = endpoint(app, &req.path);
    let outcome = dispatch(app, req, endpoint, body, now);
    match outcome {
        Ok(response) => {
            if req.decide_only {
                log::info!("PUT allowed: {}", req.path);
            }
            response
        }
        Err(Outcome::Refused(refusal)) => {
            log::info!("refused {} {}: {}", req.method, req.path, refusal);
            count_refusal(app, req, endpoint, &refusal);
            if req.decide_only {
                // nginx turns any status but 2xx/401/403 into a 500 for the client (BEHAVIOUR.md §8);
                // a 401 passes through with its WWW-Authenticate. The web server answers the
                // client, not us: the real status and the reason travel in headers it can
                // pass on (nginx: auth_request_set + error_page; Apache: they reach the
                // client with mod_fcgid's 401).
                let status = refusal.kind.status();
                // A 402's Retry-After goes along too: the web server passes it on with the rest.
                let answer = if refusal.kind == RefusalKind::Unauthorized {
                    Response::refusal(&refusal)
                } else {
                    let mut forbidden = Refusal::new(RefusalKind::Forbidden, &*refusal.message);
                    forbidden.retry_after = refusal.retry_after;
                    Response::refusal(&forbidden)
                };
                answer.with_refusal_headers(status, &refusal.message)
            } else {
                Response::refusal(&refusal)
            }
        }
        Err(Outcome::Failed(error)) => {
            log::error!("failed {} {}: {error}", req.method, req.path);
            match Response::failure_status(&error) {
                // As for a refusal: nginx would turn a 503 or 507 of its subrequest into a
                // 500, mod_fcgid into a 401; the web server answers the status and line
                // it finds in the headers.
                Some((status, line)) if req.decide_only => {
                    Response::refusal(&Refusal::forbidden(line)).with_refusal_headers(status, line)
                }
                _ => Response::failure(&error),
            }
        }
    }
}

/// The endpoint's answer, or why not: the table of which method may do what where.
fn dispatch(
    app: &App,
    req: &Request,
    endpoint: Endpoint,
    body: &mut dyn Read,
    now: i64,
) -> Result<Response, Outcome> {
    let method = req.method.as_str();
    if req.decide_only {
        // The web server asks whether to let a request through: only a PUT to an upload URL.
        return match endpoint {
            Endpoint::File { url, put, .. } if put && method == "PUT" => {
                upload(app, req, url, body, now)
            }
            _ => {
                Err(Refusal::forbidden(format!("not an upload URL: {method} {}", req.path)).into())
            }
        };
    }
    match (method, endpoint) {
        ("GET", Endpoint::SlotApi(api)) => slot_api(app, req, api, now),
        (_, Endpoint::SlotApi(_)) => Err(method_not_allowed(method)),
        (_, Endpoint::File { url, put, get }) => match method {
            "PUT" if put => upload(app, req, url, body, now),
            "GET" | "HEAD" if get => download(app, req, url),
            "OPTIONS" => Ok(Response::preflight()),
            _ => Err(method_not_allowed(method)),
        },
        (_, Endpoint::Unknown) => {
            Err(Refusal::not_found(format!("nothing at {:?}", req.path)).into())
        }
    }
}

/// A GET of the slot API: only the XMPP server may ask (`caller`: its address, the secret);
/// then the endpoint answers from the query, parsed once here.
fn slot_api(app: &App, req: &Request, api: ApiUrl, now: i64) -> Result<Response, Outcome> {
    let query = parse_query(&req.query)?;
    check_caller(&app.config.slot_api, req, &query)?;
    match api {
        ApiUrl::Slot => slot::request_slot(app, req, &query, now),
        ApiUrl::MaxSize => slot::max_size(app, &query),
        ApiUrl::Metrics => metrics::serve(app),
    }
}

/// A PUT: its protocol decides whether it may proceed, and the yes is the same whoever writes
/// the body. Then the web server writes it (decide-only), or the program receives it.
fn upload(
    app: &App,
    req: &Request,
    url: FileUrl,
    body: &mut dyn Read,
    now: i64,
) -> Result<Response, Outcome> {
    let allowed = match url {
        FileUrl::Slot { token, raw_name } => slot::allow_put(app, req, token, raw_name, now),
        FileUrl::Hmac { prefix, raw_rest } => hmac::allow_put(app, prefix, req, raw_rest, now),
        FileUrl::Jwt { prefix, raw_rest } => jwt::allow_put(app, prefix, req, raw_rest, now),
    }?;
    if req.decide_only {
        put::hand_to_web_server(app, &allowed)
    } else {
        put::receive(app, &allowed, body, now)
    }
}

/// A GET or HEAD of a file, served by the program (`webserver_download = false`, or the
/// development server): its protocol finds the file.
fn download(app: &App, req: &Request, url: FileUrl) -> Result<Response, Outcome> {
    if app.config.downloads == Downloads::WebServer {
        return Err(served_by_web_server(req));
    }
    match url {
        FileUrl::Slot { token, raw_name } => slot::serve(app, req, token, raw_name),
        FileUrl::Hmac { prefix, raw_rest } => hmac::serve(app, prefix, req, raw_rest),
        FileUrl::Jwt { prefix, raw_rest } => jwt::serve(app, prefix, req, raw_rest),
    }
}

/// The one place refusals are counted: a refused slot request by its reason, a refused PUT
/// (decided or received) by its protocol and reason. Other refusals (downloads, unknown
/// URLs, `max_size`, `metrics`) are not counted.
fn count_refusal(app: &App, req: &Request, endpoint: Endpoint, refusal: &Refusal) {
    let protocol = match endpoint {
        Endpoint::SlotApi(ApiUrl::Slot) => None,
        _ if req.method != "PUT" => return,
        Endpoint::File { url, put, .. } if put => Some(url.protocol()),
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

/// 405 for a method the URL does not take.
fn method_not_allowed(method: &str) -> Outcome {
    Refusal::new(
        RefusalKind::MethodNotAllowed,
        format!("method {method:?} not allowed here"),
    )
    .into()
}

/// Where `path` points: the slot API's own URLs first, then the signed prefixes (HMAC, JWT) in
/// the configuration's order, then a slot's `<token>/<name>` under the PUT or GET prefix.
fn endpoint<'a>(app: &'a App, path: &'a str) -> Endpoint<'a> {
    let config = &app.config;
    if let Some(rest) = path.strip_prefix(config.slot_prefix.as_str()) {
        match rest {
            "/slot" | "/slot/" => return Endpoint::SlotApi(ApiUrl::Slot),
            "/max_size" | "/max_size/" => return Endpoint::SlotApi(ApiUrl::MaxSize),
            "/metrics" | "/metrics/" => return Endpoint::SlotApi(ApiUrl::Metrics),
            _ => {}
        }
    }
    let below =
        |prefix: &SignedPrefix| path.strip_prefix(prefix.prefix.as_str())?.strip_prefix('/');
    let signed = |url| Endpoint::File {
        url,
        put: true,
        get: true,
    };
    for prefix in &config.external {
        if let Some(raw_rest) = below(prefix) {
            return signed(FileUrl::Hmac { prefix, raw_rest });
        }
    }
    for prefix in &config.file_share {
        if let Some(raw_rest) = below(prefix) {
            return signed(FileUrl::Jwt { prefix, raw_rest });
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
            url: FileUrl::Slot { token, raw_name },
            put: put.is_some(),
            get: get.is_some(),
        },
        None => Endpoint::Unknown,
    }
}
