//! The bodies the program moves itself: receiving a PUT (shared hosting, development server)
//! and serving a GET/HEAD (`webserver_download = false`), with the headers that keep an
//! uploaded file from running script on our origin.

use std::io::Read;

use crate::App;
use crate::authorize::{allow_put, media_type};
use crate::files::SafePath;
use crate::name::{is_safe_name, percent_decode_segment, percent_encode_segment, url_name_matches};
use crate::refusal::{Outcome, Refusal};
use crate::request::{Body, Request, Response};

/// Security headers on every download (BEHAVIOUR.md §5).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// `PUT <put_prefix>/<token>/<name>` received by the program: same checks as the authorizer,
/// then the body is streamed to disk. 201 on success.
pub fn receive(
    app: &App,
    req: &Request,
    token: &str,
    raw_name: &str,
    body: &mut dyn Read,
    now: i64,
) -> Result<Response, Outcome> {
    let slot = allow_put(app, req, token, raw_name, now)?;
    let path = SafePath::slot(token, &slot.name)?;
    app.uploads.receive(&path, slot.size, body)?;
    confirm_stored(app, token, &path)?;
    Ok(created())
}

/// Records that the file at `path` of slot `token` is stored. When the slot is gone — purged
/// (`xmpp-http-upload purge`) while the body was on its way — the file goes too: a purged
/// account keeps nothing, and the client hears that the upload did not stay.
pub fn confirm_stored(app: &App, token: &str, path: &SafePath) -> Result<(), Outcome> {
    if app.store.mark_uploaded(token, crate::unix_now())? {
        return Ok(());
    }
    app.uploads.remove(path)?;
    Err(Refusal::new(
        crate::refusal::RefusalKind::Gone,
        "this upload's slot was withdrawn (its account's files were purged) while it was sent",
    )
    .into())
}

/// 201 for an upload the program stored, in every protocol.
pub fn created() -> Response {
    with_cors(Response::text(
        201,
        "text/plain; charset=utf-8",
        "created\n",
    ))
}

/// The type of a stored file that has no recorded one, from its name's extension.
pub fn guessed_type(name: &str) -> &'static str {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

/// `GET`/`HEAD <get_prefix>/<token>/<name>` served by the program.
pub fn serve(app: &App, req: &Request, token: &str, raw_name: &str) -> Result<Response, Outcome> {
    let not_found = || Refusal::not_found(format!("no file at {:?}", req.path));
    let name = match app.store.slot(token)? {
        Some(slot) if url_name_matches(raw_name, &slot.name) => slot.name,
        Some(_) => return Err(not_found().into()),
        // A file without a slot (the slot was forgotten): serve it by its decoded name.
        None => {
            let once = percent_decode_segment(raw_name).ok_or_else(not_found)?;
            if is_safe_name(&once) {
                once
            } else {
                percent_decode_segment(&once)
                    .filter(|n| is_safe_name(n))
                    .ok_or_else(not_found)?
            }
        }
    };
    // The type comes from the name, as nginx and Apache derive it when they serve the file:
    // never from what the uploader declared (`text/html` for a `.png` stays `image/png`).
    serve_file(
        app,
        req,
        &SafePath::slot(token, &name)?,
        guessed_type(&name),
    )
}

/// Serves a stored file with the download headers; HEAD sends the head only.
pub fn serve_file(
    app: &App,
    req: &Request,
    path: &SafePath,
    content_type: &str,
) -> Result<Response, Outcome> {
    let stored = app.uploads.open_stored(path)?;
    let response = Response {
        status: 200,
        headers: Vec::new(),
        body: Body::File(stored),
        head_only: req.method == "HEAD",
    };
    Ok(with_cors(download_headers(
        response,
        path.file_name(),
        content_type,
    )))
}

/// `OPTIONS` on an upload or download URL: the CORS preflight of browser clients.
pub fn preflight() -> Response {
    with_cors(Response::empty(204))
        .with_header("Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS")
        .with_header(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type",
        )
        .with_header("Access-Control-Max-Age", "86400")
}

/// CORS for browser XMPP clients (Converse.js, Movim).
pub fn with_cors(response: Response) -> Response {
    response.with_header("Access-Control-Allow-Origin", "*")
}

/// Content-Type, Content-Disposition (inline only for media and plain text), nosniff and CSP.
fn download_headers(response: Response, name: &str, content_type: &str) -> Response {
    let media = media_type(content_type);
    let inline = (media.starts_with("image/") && media != "image/svg+xml")
        || media.starts_with("video/")
        || media.starts_with("audio/")
        || media == "text/plain";
    let disposition = if inline { "inline" } else { "attachment" };
    response
        .with_header("Content-Type", content_type.to_string())
        .with_header(
            "Content-Disposition",
            format!(
                "{disposition}; filename*=UTF-8''{}",
                percent_encode_segment(name)
            ),
        )
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
}
