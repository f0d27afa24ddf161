//! The seam between the front ends (FastCGI, CGI, development server) and the logic:
//! a transport-neutral `Request` built from CGI-style parameters, and the `Response` every
//! endpoint returns. Only this module and the front ends know CGI parameter names.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::refusal::{Error, Refusal, RefusalKind};

/// What the logic needs to know about one HTTP request. The body is passed beside it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `GET`, `PUT`, ... as sent.
    pub method: String,
    /// The raw (still percent-encoded) path, without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// The declared body size as sent (`None` when absent or empty).
    pub content_length: Option<String>,
    /// The body's media type as sent.
    pub content_type: Option<String>,
    /// `Transfer-Encoding` as sent: `chunked` uploads are refused.
    pub transfer_encoding: Option<String>,
    /// `Content-Range` as sent: a PUT carrying one is refused (Apache's mod_dav would write
    /// the range into the file, at any offset).
    pub content_range: Option<String>,
    /// `Host` header, to build URLs when no `base_url` is configured.
    pub host: Option<String>,
    /// Whether the client spoke HTTPS to the web server.
    pub https: bool,
    /// The client's address as the web server saw it.
    pub remote_addr: Option<String>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// `Range` as sent: a download the program serves answers one range with 206.
    pub range: Option<String>,
    /// `If-None-Match` as sent: 304 when it names the file's ETag.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since` as sent: 304 when the file is not newer.
    pub if_modified_since: Option<String>,
    /// `If-Range` as sent: the `Range` holds only while the file is this version.
    pub if_range: Option<String>,
    /// Decide whether this PUT may proceed, without receiving it (nginx `auth_request` with
    /// `XHU_AUTHORIZE=1`, or the FastCGI Authorizer role).
    pub decide_only: bool,
}

impl Request {
    /// The credentials of `Authorization: Bearer <token>`, trimmed; `None` for another scheme
    /// or none. The scheme is case-insensitive (RFC 7235 2.1): `bearer x` is `Bearer x`.
    pub fn bearer_token(&self) -> Option<&str> {
        bearer_token(self.authorization.as_deref()?)
    }

    /// Builds a request from CGI/FastCGI parameters. `param` returns a parameter's value;
    /// `authorizer_role` is true for the FastCGI Authorizer role (Apache `FcgidAccessChecker`).
    pub fn from_params(param: impl Fn(&str) -> Option<String>, authorizer_role: bool) -> Request {
        let non_empty = |key: &str| param(key).filter(|v| !v.is_empty());
        let uri = non_empty("REQUEST_URI").unwrap_or_default();
        let (path, uri_query) = match uri.split_once('?') {
            Some((path, query)) => (path.to_string(), query.to_string()),
            None => (uri.clone(), String::new()),
        };
        // nginx's auth_request subrequest has the query only inside REQUEST_URI (BEHAVIOUR.md §8).
        let query = non_empty("QUERY_STRING").unwrap_or(uri_query);
        let https = non_empty("HTTPS").is_some_and(|v| v.eq_ignore_ascii_case("on"))
            || non_empty("REQUEST_SCHEME").is_some_and(|v| v.eq_ignore_ascii_case("https"));
        Request {
            method: non_empty("REQUEST_METHOD").unwrap_or_default(),
            path,
            query,
            content_length: non_empty("CONTENT_LENGTH")
                .or_else(|| non_empty("HTTP_CONTENT_LENGTH")),
            content_type: non_empty("CONTENT_TYPE").or_else(|| non_empty("HTTP_CONTENT_TYPE")),
            transfer_encoding: non_empty("HTTP_TRANSFER_ENCODING"),
            content_range: non_empty("HTTP_CONTENT_RANGE"),
            host: non_empty("HTTP_HOST"),
            https,
            remote_addr: non_empty("REMOTE_ADDR"),
            authorization: non_empty("HTTP_AUTHORIZATION"),
            range: non_empty("HTTP_RANGE"),
            if_none_match: non_empty("HTTP_IF_NONE_MATCH"),
            if_modified_since: non_empty("HTTP_IF_MODIFIED_SINCE"),
            if_range: non_empty("HTTP_IF_RANGE"),
            decide_only: authorizer_role || non_empty("XHU_AUTHORIZE").is_some_and(|v| v == "1"),
        }
    }
}

/// The header of a decide-only refusal that holds its real status (nginx reads it as
/// `$upstream_http_xhu_status`, see nginx/xmpp-http-upload.conf).
pub const REFUSAL_STATUS_HEADER: &str = "XHU-Status";
/// The header of a decide-only refusal that holds its one-line reason
/// (`$upstream_http_xhu_reason`).
pub const REFUSAL_REASON_HEADER: &str = "XHU-Reason";

/// What a response carries after its head.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of a stored file from `offset` on (the whole file, or one range of it).
    File(FilePart),
}

/// The bytes of an open file a download sends: `len` bytes from `offset`. Any open file: this
/// module does not know where it came from (that is `files`, opened for `download`).
pub struct FilePart {
    pub file: File,
    pub offset: u64,
    pub len: u64,
}

impl FilePart {
    /// The whole file, `len` bytes long.
    pub fn whole(file: File, len: u64) -> FilePart {
        FilePart {
            file,
            offset: 0,
            len,
        }
    }

    /// The file positioned at `offset`, limited to `len` bytes.
    fn into_reader(self) -> io::Result<io::Take<File>> {
        let mut file = self.file;
        file.seek(SeekFrom::Start(self.offset))?;
        Ok(file.take(self.len))
    }
}

/// An HTTP response, written by each front end in its own framing.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// HEAD: send the head (with the body's Content-Length) but not the body.
    pub head_only: bool,
}

impl Response {
    /// A response with a text body (one line for messages, or a slot answer).
    pub fn text(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: Body::Bytes(body.into()),
            head_only: false,
        }
    }

    /// An empty response with this status.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            head_only: false,
        }
    }

    /// 201 for an upload the program stored, in every protocol.
    pub fn created() -> Response {
        Response::text(201, "text/plain; charset=utf-8", "created\n").with_cors()
    }

    /// `OPTIONS` on an upload or download URL: the CORS preflight of browser clients.
    pub fn preflight() -> Response {
        Response::empty(204)
            .with_cors()
            .with_header("Access-Control-Allow-Methods", "GET, HEAD, PUT, OPTIONS")
            .with_header(
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type",
            )
            .with_header("Access-Control-Max-Age", "86400")
    }

    /// CORS for browser XMPP clients (Converse.js, Movim): on every upload and download answer.
    pub fn with_cors(self) -> Response {
        self.with_header("Access-Control-Allow-Origin", "*")
    }

    /// The answer for a refusal: its status and its one line.
    pub fn refusal(refusal: &Refusal) -> Response {
        let response = Response::text(
            refusal.kind.status(),
            "text/plain; charset=utf-8",
            format!("{}\n", refusal.message),
        );
        if refusal.kind == RefusalKind::Unauthorized {
            // RFC 6750: a 401 names the scheme the client should use.
            return response.with_header("WWW-Authenticate", "Bearer");
        }
        if let Some(seconds) = refusal.retry_after {
            // RFC 9110 10.2.3: when the quota window will have room for this upload.
            return response.with_header("Retry-After", seconds.to_string());
        }
        response
    }

    /// The answer for a failure on our side: no detail for the client (that goes to the log).
    pub fn failure(error: &Error) -> Response {
        match Response::failure_status(error) {
            Some((status, message)) => {
                Response::text(status, "text/plain; charset=utf-8", format!("{message}\n"))
            }
            None => Response::internal_error(),
        }
    }

    /// The status and line of a failure that is not a 500 (the client may try again, or the
    /// disk is full); `None` for a 500.
    pub fn failure_status(error: &Error) -> Option<(u16, &'static str)> {
        if error.is_storage_full() {
            Some((507, "insufficient storage on the server"))
        } else if error.is_busy() {
            Some((503, "server busy, try again"))
        } else if error.is_unavailable() {
            Some((503, "database unavailable, try again"))
        } else {
            None
        }
    }

    /// 500 with one line and no detail (the detail goes to the log): a failure on our side,
    /// or a handler that panicked.
    pub fn internal_error() -> Response {
        Response::text(
            500,
            "text/plain; charset=utf-8",
            "internal error; the server log says more\n",
        )
    }

    /// Adds the headers that carry a decide-only refusal to the web server, which answers the
    /// client: [`REFUSAL_STATUS_HEADER`] (the status the refusal has when the program answers
    /// itself) and [`REFUSAL_REASON_HEADER`] (its one line).
    pub fn with_refusal_headers(self, status: u16, reason: &str) -> Response {
        self.with_header(REFUSAL_STATUS_HEADER, status.to_string())
            .with_header(REFUSAL_REASON_HEADER, reason)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The body's length, known for every kind of body.
    pub fn body_len(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
            Body::Bytes(bytes) => bytes.len() as u64,
            Body::File(part) => part.len,
        }
    }

    /// The head in CGI form (`Status:` line, headers, `Content-Length`, blank line), built in
    /// one buffer so that FastCGI sends it as one record.
    pub fn cgi_head(&self) -> Vec<u8> {
        let mut head = format!("Status: {} {}\r\n", self.status, reason_phrase(self.status));
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            // Values are checked where they come from; this keeps a line break that slipped
            // through from ever starting a header of its own.
            head.extend(value.chars().map(|c| if c.is_control() { ' ' } else { c }));
            head.push_str("\r\n");
        }
        // A 304 has no body, and the length of the one it stands for is not ours to guess
        // (RFC 9110 8.6): nginx sends none either.
        if self.status != 304 {
            head.push_str(&format!("Content-Length: {}\r\n", self.body_len()));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// The body as a reader (for front ends that pull), with its length.
    pub fn into_body_reader(self) -> (Box<dyn Read + Send>, u64) {
        let len = self.body_len();
        let reader: Box<dyn Read + Send> = match self.body {
            Body::Empty => Box::new(io::empty()),
            Body::Bytes(bytes) => Box::new(io::Cursor::new(bytes)),
            Body::File(part) => match part.into_reader() {
                Ok(reader) => Box::new(reader),
                // The head promised `len` bytes; a short body makes the web server drop
                // the answer rather than store a wrong one.
                Err(e) => {
                    log::warn!("seeking in a stored file: {e}");
                    Box::new(io::empty())
                }
            },
        };
        (reader, len)
    }

    /// Writes the body (unless HEAD) to `out`.
    pub fn write_body(self, out: &mut dyn Write) -> io::Result<()> {
        if self.head_only {
            return Ok(());
        }
        match self.body {
            Body::Empty => Ok(()),
            Body::Bytes(bytes) => out.write_all(&bytes),
            Body::File(part) => io::copy(&mut part.into_reader()?, out).map(|_| ()),
        }
    }
}

/// The reason phrase for the statuses we send.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// The token of an `Authorization` value whose scheme is `Bearer` in any case (RFC 7235 2.1),
/// trimmed of the spaces around it.
fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
    }

    #[test]
    fn bearer_other_schemes_and_shapes() {
        assert_eq!(bearer_token("Basic YTpi"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), Some(""));
    }

    #[test]
    fn a_line_break_in_a_header_value_cannot_start_a_header() {
        let response = Response::empty(200).with_header("Content-Type", "text/plain\r\nX-Evil: 1");
        let head = String::from_utf8(response.cgi_head()).unwrap();
        assert!(
            head.contains("Content-Type: text/plain  X-Evil: 1\r\n"),
            "{head:?}"
        );
        assert!(!head.contains("\r\nX-Evil"), "{head:?}");
    }

    #[test]
    fn head_has_status_and_length() {
        let head = Response::text(201, "text/plain", "created\n").cgi_head();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "Status: 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\n"
        );
    }
}
