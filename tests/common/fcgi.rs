//! A small FastCGI 1.0 *client*, written from the specification, for driving the built binary.
//!
//! It plays the web server's part: one request per connection (flags 0, no keep-conn), in the
//! Responder role (nginx, and nginx's `auth_request` subrequests) or the Authorizer role (Apache
//! mod_fcgid's `FcgidAccessChecker`). It sends BEGIN_REQUEST, the params as name-value pairs,
//! the empty PARAMS record, then the body as STDIN records of at most 65535 bytes and the empty
//! STDIN record, and reads STDOUT/STDERR until END_REQUEST. The CGI-style STDOUT is parsed into a
//! status (from `Status:`, default 200), headers and body.
//!
//! [`KeptConnection`] plays nginx with `fastcgi_keep_conn on`: FCGI_KEEP_CONN set, many
//! requests one after the other on one connection, request id 1 each time (as nginx does).
//!
//! With `XHU_TEST_FCGI_KEEP=1` in the environment, [`request`] sends every request whose body can
//! be sent again over a kept connection (one per thread and address, reopened when the program
//! closed it), so that any wire test runs over kept connections too:
//! `XHU_TEST_FCGI_KEEP=1 cargo test --test upload`.
//!
//! What it deliberately does not do: multiplexing, the Filter role.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

const VERSION_1: u8 = 1;
/// Record types (FastCGI 1.0, section 8), for tests that write records by hand.
pub const BEGIN_REQUEST: u8 = 1;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
const STDERR: u8 = 7;
pub const GET_VALUES: u8 = 9;
pub const GET_VALUES_RESULT: u8 = 10;
pub const UNKNOWN_TYPE: u8 = 11;

/// The request id we use: one request per connection, so any non-zero id will do.
const REQUEST_ID: u16 = 1;
/// The largest content a single record can carry (16-bit length).
pub const MAX_RECORD_CONTENT: usize = 65535;
/// How long a test waits for the program before calling it hung.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The FastCGI role of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// FCGI_RESPONDER: the normal request/response role.
    Responder = 1,
    /// FCGI_AUTHORIZER: "may this request proceed?" (Apache mod_fcgid access checkers).
    Authorizer = 2,
}

/// Where the FastCGI server listens.
#[derive(Clone, Debug)]
pub enum Address {
    /// A Unix domain socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

/// What the application sent back.
#[derive(Debug)]
pub struct Response {
    /// From the `Status:` header; 200 when there is none.
    pub status: u16,
    /// Every header line except `Status:`, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Everything after the blank line.
    pub body: Vec<u8>,
    /// The FCGI_STDERR stream.
    pub stderr: Vec<u8>,
    /// END_REQUEST's appStatus.
    pub app_status: u32,
    /// END_REQUEST's protocolStatus (0 = REQUEST_COMPLETE).
    pub protocol_status: u8,
}

impl Response {
    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy, for messages and assertions).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} body={:?}",
            self.status,
            self.headers,
            self.text()
        )
    }
}

/// The body to send on FCGI_STDIN.
pub enum Body<'a> {
    /// Send no STDIN records at all (what mod_fcgid does for authorizers).
    None,
    /// Send the empty STDIN record only.
    Empty,
    /// Send these bytes, then the empty STDIN record.
    Bytes(&'a [u8]),
    /// Stream everything this reader yields, then the empty STDIN record.
    Reader(&'a mut dyn Read),
}

trait Stream: Read + Write + std::os::fd::AsRawFd {}
impl Stream for UnixStream {}
impl Stream for TcpStream {}

fn connect(address: &Address) -> io::Result<Box<dyn Stream>> {
    let stream: Box<dyn Stream> = match address {
        Address::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            Box::new(s)
        }
        Address::Tcp(addr) => {
            let s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            Box::new(s)
        }
    };
    Ok(stream)
}

/// One record: 8-byte header, content, padding to a multiple of 8 (as the spec recommends).
fn record(kind: u8, content: &[u8]) -> Vec<u8> {
    assert!(content.len() <= MAX_RECORD_CONTENT);
    let padding = (8 - content.len() % 8) % 8;
    let mut out = Vec::with_capacity(8 + content.len() + padding);
    out.push(VERSION_1);
    out.push(kind);
    out.extend_from_slice(&REQUEST_ID.to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.push(padding as u8);
    out.push(0);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
    out
}

/// One record of request `id` without padding, for tests that write record streams by hand
/// (several requests on one connection, records split at odd places).
pub fn unpadded_record(kind: u8, id: u16, content: &[u8]) -> Vec<u8> {
    let mut out = vec![VERSION_1, kind];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(content.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(content);
    out
}

/// A name-value pair length: one byte below 128, else four bytes with the top bit set.
fn encode_length(len: usize, out: &mut Vec<u8>) {
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    }
}

/// The PARAMS stream content for these pairs (bytes, so that tests can send non-UTF-8 as a web
/// server passing a raw URI would).
pub fn encode_params<N: AsRef<[u8]>, V: AsRef<[u8]>>(params: &[(N, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in params {
        let (name, value) = (name.as_ref(), value.as_ref());
        encode_length(name.len(), &mut out);
        encode_length(value.len(), &mut out);
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out
}

/// Writes, treating a peer that stopped reading (it answered early) as "done sending".
fn write_or_stop(stream: &mut dyn Stream, bytes: &[u8]) -> io::Result<bool> {
    match stream.write_all(bytes) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn send_request<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    stream: &mut dyn Stream,
    role: Role,
    params: &[(N, V)],
    body: Body<'_>,
) -> io::Result<()> {
    send_request_flags(stream, role, 0, params, body)
}

/// Like `send_request`, with the BEGIN_REQUEST flags given (1 = FCGI_KEEP_CONN).
fn send_request_flags<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    stream: &mut dyn Stream,
    role: Role,
    flags: u8,
    params: &[(N, V)],
    body: Body<'_>,
) -> io::Result<()> {
    let mut begin = Vec::with_capacity(8);
    begin.extend_from_slice(&(role as u16).to_be_bytes());
    begin.push(flags);
    begin.extend_from_slice(&[0; 5]);
    let mut head = record(BEGIN_REQUEST, &begin);
    for chunk in encode_params(params).chunks(MAX_RECORD_CONTENT) {
        head.extend_from_slice(&record(PARAMS, chunk));
    }
    head.extend_from_slice(&record(PARAMS, &[]));
    if !write_or_stop(stream, &head)? {
        return Ok(());
    }
    match body {
        Body::None => return Ok(()),
        Body::Empty => {}
        Body::Bytes(bytes) => {
            for chunk in bytes.chunks(MAX_RECORD_CONTENT) {
                if !write_or_stop(stream, &record(STDIN, chunk))? {
                    return Ok(());
                }
            }
        }
        Body::Reader(reader) => {
            let mut buf = vec![0u8; MAX_RECORD_CONTENT];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if !write_or_stop(stream, &record(STDIN, &buf[..n]))? {
                    return Ok(());
                }
            }
        }
    }
    write_or_stop(stream, &record(STDIN, &[]))?;
    Ok(())
}

/// Reads records until END_REQUEST; returns (stdout, stderr, app status, protocol status).
fn read_response(stream: &mut dyn Stream) -> io::Result<(Vec<u8>, Vec<u8>, u32, u8)> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    loop {
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "connection ended before END_REQUEST ({e}); stdout so far: {:?}",
                    String::from_utf8_lossy(&stdout)
                ),
            )
        })?;
        if header[0] != VERSION_1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("record with version {}", header[0]),
            ));
        }
        let kind = header[1];
        let length = u16::from_be_bytes([header[4], header[5]]) as usize;
        let padding = header[6] as usize;
        let mut content = vec![0u8; length + padding];
        stream.read_exact(&mut content)?;
        content.truncate(length);
        match kind {
            STDOUT => stdout.extend_from_slice(&content),
            STDERR => stderr.extend_from_slice(&content),
            END_REQUEST => {
                if content.len() < 8 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "short END_REQUEST body",
                    ));
                }
                let app = u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
                return Ok((stdout, stderr, app, content[4]));
            }
            UNKNOWN_TYPE => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "application answered UNKNOWN_TYPE",
                ));
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected record type {other}"),
                ));
            }
        }
    }
}

/// Splits CGI output (`Header: value` lines, a blank line, the body) into status, headers, body
/// (`stderr` empty, statuses 0). Lines may end in `\r\n` or `\n`.
pub fn parse_cgi_output(output: &[u8]) -> io::Result<Response> {
    let mut headers = Vec::new();
    let mut status = 200;
    let mut rest = output;
    loop {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "CGI output has no blank line after its headers: {:?}",
                    String::from_utf8_lossy(output)
                ),
            ));
        };
        let line = &rest[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        rest = &rest[end + 1..];
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(line);
        let Some((name, value)) = line.split_once(':') else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("header line without colon: {line:?}"),
            ));
        };
        let (name, value) = (name.trim().to_string(), value.trim().to_string());
        if name.eq_ignore_ascii_case("Status") {
            let code = value.split_whitespace().next().unwrap_or("");
            status = code.parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad Status: {value:?}"))
            })?;
        } else {
            headers.push((name, value));
        }
    }
    Ok(Response {
        status,
        headers,
        body: rest.to_vec(),
        stderr: Vec::new(),
        app_status: 0,
        protocol_status: 0,
    })
}

/// Sends one request and reads the whole answer (over a kept connection when
/// `XHU_TEST_FCGI_KEEP=1` and the body can be sent again).
pub fn request<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    address: &Address,
    role: Role,
    params: &[(N, V)],
    body: Body<'_>,
) -> io::Result<Response> {
    let resendable = !matches!(body, Body::Reader(_));
    if resendable && std::env::var_os("XHU_TEST_FCGI_KEEP").is_some_and(|v| v == "1") {
        return request_kept(address, role, params, body);
    }
    let mut stream = connect(address)?;
    send_request(stream.as_mut(), role, params, body)?;
    let (stdout, stderr, app_status, protocol_status) = read_response(stream.as_mut())?;
    let mut response = parse_cgi_output(&stdout)?;
    response.stderr = stderr;
    response.app_status = app_status;
    response.protocol_status = protocol_status;
    Ok(response)
}

thread_local! {
    /// The kept connections of `XHU_TEST_FCGI_KEEP=1`, by address.
    static KEPT: std::cell::RefCell<Vec<(String, KeptConnection)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn request_kept<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    address: &Address,
    role: Role,
    params: &[(N, V)],
    body: Body<'_>,
) -> io::Result<Response> {
    let key = format!("{address:?}");
    let cached = KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        let at = kept.iter().position(|(k, _)| *k == key)?;
        Some(kept.swap_remove(at).1)
    });
    let (mut conn, reused) = match cached.filter(|c| !c.is_stale()) {
        Some(conn) => (conn, true),
        None => (KeptConnection::open(address)?, false),
    };
    let body_again = match &body {
        Body::None => Body::None,
        Body::Empty => Body::Empty,
        Body::Bytes(bytes) => Body::Bytes(bytes),
        Body::Reader(_) => unreachable!("only resendable bodies come here"),
    };
    let response = match conn.request(role, params, body) {
        // The program may close a kept connection after an answer (a body it did not read
        // to its end); a reused connection gets one more try on a fresh one.
        Err(_) if reused => {
            conn = KeptConnection::open(address)?;
            conn.request(role, params, body_again)?
        }
        other => other?,
    };
    KEPT.with(|kept| kept.borrow_mut().push((key, conn)));
    Ok(response)
}

/// A request sent piece by piece: for uploads that stall or are cut off halfway.
pub struct Connection {
    stream: Box<dyn Stream>,
}

impl Connection {
    /// Connects and sends BEGIN_REQUEST and the params (with the closing empty PARAMS record).
    pub fn open<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        address: &Address,
        role: Role,
        params: &[(N, V)],
    ) -> io::Result<Connection> {
        let mut stream = connect(address)?;
        send_request(stream.as_mut(), role, params, Body::None)?;
        Ok(Connection { stream })
    }

    /// Sends bytes as STDIN records (no closing record); false when the peer stopped reading.
    pub fn send_stdin(&mut self, bytes: &[u8]) -> io::Result<bool> {
        for chunk in bytes.chunks(MAX_RECORD_CONTENT) {
            if !write_or_stop(self.stream.as_mut(), &record(STDIN, chunk))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends the closing empty STDIN record and reads the answer.
    pub fn finish(mut self) -> io::Result<Response> {
        write_or_stop(self.stream.as_mut(), &record(STDIN, &[]))?;
        let (stdout, stderr, app_status, protocol_status) = read_response(self.stream.as_mut())?;
        let mut response = parse_cgi_output(&stdout)?;
        response.stderr = stderr;
        response.app_status = app_status;
        response.protocol_status = protocol_status;
        Ok(response)
    }
}

/// The CGI variable name for an HTTP header: `Content-Type` → `HTTP_CONTENT_TYPE`.
pub fn http_variable(header: &str) -> String {
    let mut name = String::from("HTTP_");
    for c in header.chars() {
        name.push(if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        });
    }
    name
}

/// The params a web server sends for `method uri` with these request headers, as nginx's
/// stock `fastcgi_params` does: the query in `QUERY_STRING`, `CONTENT_LENGTH`/`CONTENT_TYPE` from
/// their headers, every header also as `HTTP_*`, `REMOTE_ADDR` 127.0.0.1.
pub fn request_params(method: &str, uri: &str, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut params: Vec<(String, String)> = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        ("SERVER_SOFTWARE".into(), "fcgi-test-client".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("SERVER_NAME".into(), "upload.example.org".into()),
        ("SERVER_PORT".into(), "443".into()),
        ("REQUEST_SCHEME".into(), "https".into()),
        ("HTTPS".into(), "on".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("REMOTE_PORT".into(), "54321".into()),
        ("REQUEST_METHOD".into(), method.into()),
        ("REQUEST_URI".into(), uri.into()),
        ("SCRIPT_NAME".into(), path.into()),
        ("DOCUMENT_URI".into(), path.into()),
        ("QUERY_STRING".into(), query.into()),
        ("CONTENT_LENGTH".into(), String::new()),
        ("CONTENT_TYPE".into(), String::new()),
    ];
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("Content-Length") {
            set_param(&mut params, "CONTENT_LENGTH", value);
        }
        if name.eq_ignore_ascii_case("Content-Type") {
            set_param(&mut params, "CONTENT_TYPE", value);
        }
        set_param(&mut params, &http_variable(name), value);
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("Host")) {
        set_param(&mut params, "HTTP_HOST", "upload.example.org");
    }
    params
}

/// Sets (or replaces) one param.
pub fn set_param(params: &mut Vec<(String, String)>, name: &str, value: &str) {
    if let Some(entry) = params.iter_mut().find(|(n, _)| n == name) {
        entry.1 = value.to_string();
    } else {
        params.push((name.to_string(), value.to_string()));
    }
}

/// Removes one param if present.
pub fn remove_param(params: &mut Vec<(String, String)>, name: &str) {
    params.retain(|(n, _)| n != name);
}

/// The params of nginx's `auth_request` subrequest for a client's PUT (BEHAVIOUR.md §8):
/// original method and URI, empty `QUERY_STRING` and `CONTENT_LENGTH`, the declared size in
/// `HTTP_CONTENT_LENGTH`, and `XHU_AUTHORIZE=1`.
pub fn auth_subrequest_params(uri: &str, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params = request_params("PUT", uri, headers);
    set_param(&mut params, "QUERY_STRING", "");
    set_param(&mut params, "CONTENT_LENGTH", "");
    set_param(&mut params, "SCRIPT_NAME", "/_xhu_authorize");
    set_param(&mut params, "DOCUMENT_URI", "/_xhu_authorize");
    set_param(&mut params, "XHU_AUTHORIZE", "1");
    params
}

/// The params Apache mod_fcgid gives an access checker (Authorizer role) for a client's PUT:
/// no `CONTENT_LENGTH` (it is passed on as `HTTP_CONTENT_LENGTH` by the shipped config).
pub fn authorizer_params(uri: &str, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut params = request_params("PUT", uri, headers);
    remove_param(&mut params, "CONTENT_LENGTH");
    remove_param(&mut params, "CONTENT_TYPE");
    params
}

/// A connection kept open across requests (FCGI_KEEP_CONN), as nginx uses it with
/// `fastcgi_keep_conn on`.
pub struct KeptConnection {
    stream: Box<dyn Stream>,
}

impl KeptConnection {
    /// Connects.
    pub fn open(address: &Address) -> io::Result<KeptConnection> {
        Ok(KeptConnection {
            stream: connect(address)?,
        })
    }

    /// Sends one request with FCGI_KEEP_CONN and reads its whole answer.
    pub fn request<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        role: Role,
        params: &[(N, V)],
        body: Body<'_>,
    ) -> io::Result<Response> {
        send_request_flags(self.stream.as_mut(), role, 1, params, body)?;
        let (stdout, stderr, app_status, protocol_status) = read_response(self.stream.as_mut())?;
        let mut response = parse_cgi_output(&stdout)?;
        response.stderr = stderr;
        response.app_status = app_status;
        response.protocol_status = protocol_status;
        Ok(response)
    }

    /// Writes raw bytes (records of the test's own making).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one record: (type, request id, content).
    pub fn read_record(&mut self) -> io::Result<(u8, u16, Vec<u8>)> {
        let mut header = [0u8; 8];
        self.stream.read_exact(&mut header)?;
        let length = u16::from_be_bytes([header[4], header[5]]) as usize;
        let mut content = vec![0u8; length + header[6] as usize];
        self.stream.read_exact(&mut content)?;
        content.truncate(length);
        Ok((
            header[1],
            u16::from_be_bytes([header[2], header[3]]),
            content,
        ))
    }

    /// True when the program closed the connection or sent something unasked (looked at
    /// without waiting or consuming).
    pub fn is_stale(&self) -> bool {
        use nix::sys::socket::{MsgFlags, recv};
        let mut byte = [0u8; 1];
        let peeked = recv(
            self.stream.as_raw_fd(),
            &mut byte,
            MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
        );
        !matches!(peeked, Err(nix::errno::Errno::EAGAIN))
    }

    /// True when the program closed the connection (a read returns end of file).
    pub fn closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_one_or_four_bytes() {
        let mut out = Vec::new();
        encode_length(127, &mut out);
        encode_length(128, &mut out);
        assert_eq!(out, [127, 0x80, 0, 0, 128]);
    }

    #[test]
    fn records_are_padded_to_eight() {
        let r = record(STDIN, b"abc");
        assert_eq!(r.len(), 16);
        assert_eq!(&r[..8], &[1, STDIN, 0, 1, 0, 3, 5, 0]);
    }

    #[test]
    fn cgi_output_status_and_lf_only_lines() {
        let r =
            parse_cgi_output(b"Status: 403 Forbidden\nContent-Type: text/plain\n\nno\n").unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.headers, [("Content-Type".into(), "text/plain".into())]);
        assert_eq!(r.body, b"no\n");
    }
}
