//! `runserver`: a small HTTP server for development, so that a newcomer can request a slot,
//! upload and download with curl without setting up a web server. Same router, same checks as
//! behind nginx; the program itself receives PUTs and serves GETs. Not for production: no TLS,
//! no limits on connections, one request per connection (`Connection: close`).
//!
//! HTTP/1.1 is parsed here, on bytes, rather than by a library: the request line of
//! `curl --path-as-is` may hold raw UTF-8 (`PUT /http_upload/upload/<token>/сырой.txt`), which
//! nginx accepts, and tiny_http (used before) closed such a connection without any answer
//! because it insists on ASCII. Here the bytes of a path that are not ASCII are
//! percent-encoded — the same path once decoded — and a head that cannot be read gets a 400
//! with one line. What this does not do: keep-alive, chunked bodies (the router refuses them
//! with 411 anyway), pipelining.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::App;
use crate::request::{Request, Response};
use crate::route;

/// Longest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 100;
/// How long a client may take to send its head, and to pause within a body.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// What is read of a body nobody wants, after the answer, so that closing does not reset it.
const DRAIN_MAX_BYTES: u64 = 1 << 20;

/// Serves HTTP on `addr` (e.g. `127.0.0.1:8000`) until the process ends.
pub fn run(app: Arc<App>, addr: &str) -> io::Result<()> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("listening on {addr}: {e}")))?;
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let app = Arc::clone(&app);
                thread::spawn(move || serve_connection(&app, stream));
            }
            // E.g. out of file descriptors: the next connection may work again.
            Err(e) => log::warn!("accepting a connection: {e}"),
        }
    }
    Ok(())
}

/// The request line and headers as received.
struct Head {
    method: String,
    /// The request target, bytes beyond ASCII percent-encoded.
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// Why a head could not be read: answered with this status and line (`None`: the client
/// left before a request began; nothing to answer).
type HeadError = Option<(u16, String)>;

fn serve_connection(app: &App, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let remote_addr = stream.peer_addr().ok().map(|a| a.ip().to_string());
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let head = match read_head(&mut reader) {
        Ok(head) => head,
        Err(None) => return,
        Err(Some((status, message))) => {
            let response = Response::text(status, "text/plain; charset=utf-8", message + "\n");
            finish(stream, reader, response, "a malformed request");
            return;
        }
    };
    let (path, query) = match head.target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (head.target.clone(), String::new()),
    };
    let request = Request {
        method: head.method.clone(),
        path,
        query,
        content_length: head.header("Content-Length"),
        content_type: head.header("Content-Type"),
        transfer_encoding: head.header("Transfer-Encoding"),
        content_range: head.header("Content-Range"),
        host: head.header("Host"),
        https: false,
        remote_addr,
        authorization: head.header("Authorization"),
        range: head.header("Range"),
        if_none_match: head.header("If-None-Match"),
        if_modified_since: head.header("If-Modified-Since"),
        if_range: head.header("If-Range"),
        decide_only: false,
    };
    // A chunked body is refused by the router before it is read; no Content-Length, no body.
    let length = match request.transfer_encoding {
        Some(_) => 0,
        None => request
            .content_length
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0),
    };
    let expects_continue = head
        .header("Expect")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    let response = {
        let mut body = Body {
            reader: (&mut reader).take(length),
            stream: &stream,
            continue_pending: expects_continue,
        };
        route::handle(app, &request, &mut body)
    };
    finish(stream, reader, response, &request.path);
}

/// Reads the request line and headers, at most `MAX_HEAD` bytes.
fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Head, HeadError> {
    let mut total = 0;
    let mut line = Vec::new();
    let mut read_line = |line: &mut Vec<u8>| -> Result<(), HeadError> {
        line.clear();
        let limit = (MAX_HEAD - total) as u64 + 1;
        let n = reader
            .by_ref()
            .take(limit)
            .read_until(b'\n', line)
            .map_err(|_| None)?;
        total += n;
        if total > MAX_HEAD {
            return Err(Some((431, "request head too large".into())));
        }
        if n == 0 || line.last() != Some(&b'\n') {
            return Err(None);
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(())
    };
    read_line(&mut line)?;
    let bad = |what: &str| Some((400, what.to_string()));
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !version.starts_with(b"HTTP/1.") || !method.iter().all(u8::is_ascii_uppercase) {
        return Err(bad("malformed request line"));
    }
    let method = String::from_utf8_lossy(method).into_owned();
    let target = encode_beyond_ascii(target);
    let mut headers = Vec::new();
    loop {
        read_line(&mut line)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(Some((431, "too many header lines".into())));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(bad("malformed header line"));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| bad("malformed header name"))?;
        let value =
            std::str::from_utf8(value).map_err(|_| bad(&format!("header {name} is not UTF-8")))?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Head {
        method,
        target,
        headers,
    })
}

/// The request target with every byte that is not printable ASCII percent-encoded: a raw
/// UTF-8 path reads the same as its encoded form once the router decodes it.
fn encode_beyond_ascii(target: &[u8]) -> String {
    let mut out = String::with_capacity(target.len());
    for &byte in target {
        if byte.is_ascii_graphic() {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The body of a request: at most its Content-Length, with `100 Continue` sent when the
/// router first reads it (so a refusal goes out without inviting the body).
struct Body<'a, R: Read> {
    reader: io::Take<R>,
    stream: &'a TcpStream,
    continue_pending: bool,
}

impl<R: Read> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.continue_pending {
            self.continue_pending = false;
            let mut stream = self.stream;
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        self.reader.read(buf)
    }
}

/// Writes the answer, then ends the connection without resetting it: the write side is shut
/// first, and a little of an unread body is read, so the client gets the answer even when it
/// was refused mid-body.
fn finish(stream: TcpStream, mut reader: BufReader<TcpStream>, response: Response, what: &str) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, &stream);
    let written = out
        .write_all(&http_head(&response))
        .and_then(|()| response.write_body(&mut out))
        .and_then(|()| out.flush());
    drop(out);
    if let Err(e) = written {
        log::debug!("client went away while answering {what}: {e}");
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = io::copy(&mut (&mut reader).take(DRAIN_MAX_BYTES), &mut io::sink());
}

/// The response head in HTTP/1.1 form: the CGI head (where header values are made safe) with
/// a status line instead of `Status:`, and `Connection: close`.
fn http_head(response: &Response) -> Vec<u8> {
    let cgi = response.cgi_head();
    let rest = cgi
        .iter()
        .position(|&b| b == b'\n')
        .map_or(&cgi[..0], |end| &cgi[end + 1..]);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\n",
        response.status,
        crate::request::reason_phrase(response.status)
    )
    .into_bytes();
    head.extend_from_slice(rest);
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_utf8_in_a_path_is_percent_encoded() {
        assert_eq!(
            encode_beyond_ascii("/u/сы р.txt?a=b".as_bytes()),
            "/u/%D1%81%D1%8B%20%D1%80.txt?a=b"
        );
        assert_eq!(encode_beyond_ascii(b"/a\xff"), "/a%FF");
    }

    #[test]
    fn the_http_head_has_a_status_line() {
        let head = http_head(&Response::text(201, "text/plain", "created\n"));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Type: text/plain\r\n\
             Content-Length: 8\r\n\r\n"
        );
    }
}
