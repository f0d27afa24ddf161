//! One FastCGI connection: its socket and read buffer, reading one request's head, streaming
//! its STDIN to the handler, writing STDOUT records and END_REQUEST, and the management records
//! that may arrive in between.
//!
//! What it does not do: decide which connection is served when (that is `server`), or what a
//! request means (that is the handler). Record bytes are parsed by `record`. All reads here
//! block, bounded by the socket timeouts `server` sets; a connection that breaks the protocol
//! is marked unusable and closed by `server`, never answered with a guess.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv};

use super::record::{
    self, ABORT_REQUEST, BEGIN_REQUEST, CANT_MPX_CONN, DATA, GET_VALUES, HEADER_LEN, Header,
    MAX_PARAMS_BYTES, PARAMS, Params, ParamsError, REQUEST_COMPLETE, Role, STDIN, STDOUT,
    STDOUT_CHUNK, UNKNOWN_ROLE, VERSION_1,
};

/// The read buffer grows to this: room for the largest record (header, 65,535 bytes, 255 of
/// padding) and a little more. It starts small, so that idle connections cost little.
pub const BUFFER: usize = 72 * 1024;
const FIRST_BUFFER: usize = 8 * 1024;

/// An accepted connection, over TCP or a Unix socket.
pub enum Stream {
    /// From a TCP listener.
    Tcp(TcpStream),
    /// From a Unix socket listener.
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

/// The limits one connection works under, and what GET_VALUES reports.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long one read or write may wait for the peer in the middle of a request.
    pub stall: Duration,
    /// Bytes of an unread body we read and discard to keep a connection usable.
    pub drain: u64,
    /// FCGI_MAX_CONNS: connections open at once.
    pub max_conns: usize,
    /// FCGI_MAX_REQS: requests served at once.
    pub max_reqs: usize,
}

/// A connection and what it has buffered.
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Set once the byte stream can no longer be trusted (a protocol error, an I/O error, a
    /// body left unread): the connection is closed after the current answer.
    pub broken: bool,
    limits: Limits,
    /// Where the current request's STDIN stream stands.
    body: BodyState,
}

/// Where a request's STDIN stream stands, kept across the handler's reads and the drain.
#[derive(Debug, Clone, Copy, Default)]
struct BodyState {
    /// Content bytes of the current STDIN record not yet read, and its padding after them.
    left: usize,
    padding: usize,
    /// The empty STDIN record was read: the body is complete.
    done: bool,
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// The head of one request: what BEGIN_REQUEST and PARAMS said.
pub struct Head {
    /// The request id the web server chose.
    pub id: u16,
    /// The role to play.
    pub role: Role,
    /// Keep the connection after this request.
    pub keep_conn: bool,
    /// The parameters, as bytes.
    pub params: Params,
}

/// What reading a head came to.
pub enum HeadOutcome {
    /// A request to answer.
    Request(Head),
    /// The peer closed the connection between requests: normal, silent.
    Closed,
    /// Management records were answered and nothing else is buffered: back to the idle set.
    Idle,
    /// The request was answered already (unknown role, aborted, refused parameters); keep the
    /// connection if `keep` and it is not broken.
    Answered {
        /// Whether the web server asked to keep the connection.
        keep: bool,
    },
}

impl Conn {
    /// Wraps an accepted stream; blocking reads and writes wait at most `limits.stall`.
    pub fn new(stream: Stream, limits: Limits) -> io::Result<Conn> {
        stream.set_timeouts(limits.stall)?;
        Ok(Conn {
            stream,
            buf: vec![0; FIRST_BUFFER],
            start: 0,
            end: 0,
            broken: false,
            limits,
            body: BodyState::default(),
        })
    }

    /// The bytes buffered and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops `n` buffered bytes (records found to belong to no request).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads what the socket has without waiting. `Ok(0)`: the peer closed; `WouldBlock`:
    /// nothing there. Stops when the buffer is full (the caller then hands it to a worker).
    pub fn fill_nonblocking(&mut self) -> io::Result<usize> {
        self.compact();
        if self.end == self.buf.len() {
            if self.buf.len() >= BUFFER {
                return Err(io::Error::other("buffer full"));
            }
            self.buf.resize(BUFFER, 0);
        }
        let fd = self.stream.as_fd().as_raw_fd();
        recv(fd, &mut self.buf[self.end..], MsgFlags::MSG_DONTWAIT)
            .inspect(|&n| self.end += n)
            .map_err(io::Error::from)
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// True when the buffer is as large as it gets and full.
    pub fn is_full(&self) -> bool {
        self.start == 0 && self.end >= BUFFER
    }

    /// Blocks until at least `n` bytes are buffered (`n` ≤ `BUFFER`). `Ok(false)`: the peer
    /// closed first.
    fn fill_to(&mut self, n: usize) -> io::Result<bool> {
        while self.end - self.start < n {
            if self.start + n > self.buf.len() {
                self.compact();
                if n > self.buf.len() {
                    self.buf.resize(BUFFER.max(n), 0);
                }
            }
            let got = self.stream.read(&mut self.buf[self.end..])?;
            if got == 0 {
                return Ok(false);
            }
            self.end += got;
        }
        Ok(true)
    }

    /// The next whole record: its header, and its content at `buffered()[..content_len]` until
    /// the next call (the caller then calls `consume(header.record_len())`).
    /// `Ok(None)`: the peer closed cleanly before a new record began.
    fn next_record(&mut self) -> io::Result<Option<Header>> {
        if !self.fill_to(HEADER_LEN)? {
            if self.end > self.start {
                return Err(truncated());
            }
            return Ok(None);
        }
        let Some(header) = Header::peek(self.buffered()) else {
            return Err(truncated());
        };
        if header.version != VERSION_1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("record of FastCGI version {}", header.version),
            ));
        }
        if !self.fill_to(header.record_len())? {
            return Err(truncated());
        }
        Ok(Some(header))
    }

    /// Content of the record `next_record` just returned.
    fn content(&self, header: &Header) -> &[u8] {
        &self.buffered()[HEADER_LEN..HEADER_LEN + header.content_len]
    }

    /// Answers a management record (request id 0) or a record for a request we are not
    /// serving (a second BEGIN_REQUEST gets CANT_MPX_CONN; the rest is ignored), and consumes it.
    fn answer_aside(&mut self, header: &Header, current: Option<u16>) -> io::Result<()> {
        let mut out = Vec::new();
        if header.request_id == 0 {
            if header.kind == GET_VALUES {
                let (max_conns, max_reqs) = (self.limits.max_conns, self.limits.max_reqs);
                record::push_get_values_result(&mut out, self.content(header), max_conns, max_reqs);
            } else {
                record::push_unknown_type(&mut out, header.kind);
            }
        } else if header.kind == BEGIN_REQUEST && current.is_some() {
            // One request at a time per connection (FCGI_MPXS_CONNS is 0).
            record::push_end_request(&mut out, header.request_id, 0, CANT_MPX_CONN);
        }
        // Anything else for a request id we do not serve is ignored, as the spec says.
        self.consume(header.record_len());
        if !out.is_empty() {
            self.stream.write_all(&out)?;
        }
        Ok(())
    }

    /// Takes a head found whole in the buffer (`record::peek_head`).
    pub fn take_head(&mut self, peeked: record::PeekedHead) -> Head {
        self.consume(peeked.len);
        self.body = BodyState::default();
        Head {
            id: peeked.id,
            role: peeked.begin.role,
            keep_conn: peeked.begin.keep_conn,
            params: peeked.params,
        }
    }

    /// Reads BEGIN_REQUEST and the PARAMS stream of the next request, answering management
    /// records on the way.
    pub fn read_head(&mut self) -> io::Result<HeadOutcome> {
        // Before BEGIN_REQUEST: management records, and leftovers of the last request.
        self.body = BodyState::default();
        let mut answered_aside = false;
        let (id, begin) = loop {
            if self.buffered().is_empty() && answered_aside {
                return Ok(HeadOutcome::Idle);
            }
            let Some(header) = self.next_record()? else {
                return Ok(HeadOutcome::Closed);
            };
            match header.kind {
                BEGIN_REQUEST if header.request_id != 0 => {
                    let begin = record::parse_begin(self.content(&header));
                    let id = header.request_id;
                    self.consume(header.record_len());
                    let Some(begin) = begin else {
                        self.broken = true;
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "BEGIN_REQUEST without role and flags",
                        ));
                    };
                    break (id, begin);
                }
                STDIN | DATA | ABORT_REQUEST if header.request_id != 0 => {
                    self.consume(header.record_len())
                }
                _ => {
                    answered_aside = true;
                    self.answer_aside(&header, None)?
                }
            }
        };
        if let Role::Other(role) = begin.role {
            log::debug!("FastCGI role {role} refused (UNKNOWN_ROLE)");
            self.end_request(id, UNKNOWN_ROLE)?;
            // Its PARAMS and STDIN may follow; they belong to no request we serve.
            return Ok(HeadOutcome::Answered {
                keep: begin.keep_conn,
            });
        }
        let mut stream = Vec::new();
        let mut too_large = false;
        loop {
            let Some(header) = self.next_record()? else {
                return Err(truncated());
            };
            if header.request_id != id {
                self.answer_aside(&header, Some(id))?;
                continue;
            }
            match header.kind {
                PARAMS if header.content_len == 0 => {
                    self.consume(header.record_len());
                    break;
                }
                PARAMS => {
                    // Past the limit the rest is read and dropped, to answer in order.
                    if stream.len() + header.content_len > MAX_PARAMS_BYTES {
                        too_large = true;
                    }
                    if !too_large {
                        stream.extend_from_slice(self.content(&header));
                    } else if !stream.is_empty() {
                        stream = Vec::new();
                    }
                    self.consume(header.record_len());
                }
                ABORT_REQUEST => {
                    self.consume(header.record_len());
                    self.end_request(id, REQUEST_COMPLETE)?;
                    return Ok(HeadOutcome::Answered {
                        keep: begin.keep_conn,
                    });
                }
                _ => {
                    self.broken = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("record type {} before the end of PARAMS", header.kind),
                    ));
                }
            }
        }
        let parsed = if too_large {
            Err(ParamsError::TooLarge)
        } else {
            Params::parse(stream)
        };
        match parsed {
            Ok(params) => Ok(HeadOutcome::Request(Head {
                id,
                role: begin.role,
                keep_conn: begin.keep_conn,
                params,
            })),
            Err(error) => {
                log::warn!("FastCGI request refused: {error}");
                let message = format!(
                    "Status: 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{error}\n"
                );
                let mut out = self.stdout(id);
                out.write_all(message.as_bytes())?;
                out.finish()?;
                // Its STDIN may follow: read it away or close.
                if begin.role == Role::Responder {
                    self.drain_stdin(id);
                }
                Ok(HeadOutcome::Answered {
                    keep: begin.keep_conn,
                })
            }
        }
    }

    /// Sends END_REQUEST alone.
    fn end_request(&mut self, id: u16, protocol_status: u8) -> io::Result<()> {
        let mut out = Vec::with_capacity(16);
        record::push_end_request(&mut out, id, 0, protocol_status);
        self.stream.write_all(&out)
    }

    /// Whether the current request's STDIN stream has ended.
    pub fn body_done(&self) -> bool {
        self.body.done
    }

    /// The request's STDIN stream as a `Read`.
    pub fn stdin(&mut self, id: u16) -> Stdin<'_> {
        Stdin { conn: self, id }
    }

    /// A writer of STDOUT records for request `id`; `finish` ends the request.
    pub fn stdout(&mut self, id: u16) -> Stdout<'_> {
        let mut buf = Vec::with_capacity(HEADER_LEN + STDOUT_CHUNK + 32);
        buf.resize(HEADER_LEN, 0);
        Stdout {
            conn: self,
            id,
            buf,
        }
    }

    /// Reads the rest of request `id`'s STDIN (at most `limits.drain` bytes) so that the next
    /// request on this connection starts at a record boundary; marks the connection broken
    /// when the end is not reached.
    pub fn drain_stdin(&mut self, id: u16) {
        let limit = self.limits.drain;
        let drained = io::copy(&mut self.stdin(id).take(limit), &mut io::sink());
        if drained.is_err() || !self.body.done {
            self.broken = true;
        }
    }
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed inside a record",
    )
}

/// A request's body: the contents of its STDIN records, up to the empty one.
pub struct Stdin<'a> {
    conn: &'a mut Conn,
    id: u16,
}

impl Stdin<'_> {
    /// Moves to the next STDIN record of our request; false at the end of the body.
    fn next_stdin(&mut self) -> io::Result<bool> {
        let body = &mut self.conn.body;
        if body.padding > 0 {
            let skip = body.padding;
            body.padding = 0;
            if !self.conn.fill_to(skip)? {
                return Err(truncated());
            }
            self.conn.consume(skip);
        }
        loop {
            let Some(header) = self.conn.next_record()? else {
                return Err(truncated());
            };
            if header.request_id != self.id {
                self.conn.answer_aside(&header, Some(self.id))?;
                continue;
            }
            match header.kind {
                STDIN if header.content_len == 0 => {
                    self.conn.consume(header.record_len());
                    self.conn.body.done = true;
                    return Ok(false);
                }
                STDIN => {
                    self.conn.consume(HEADER_LEN);
                    self.conn.body.left = header.content_len;
                    self.conn.body.padding = header.padding_len;
                    return Ok(true);
                }
                ABORT_REQUEST => {
                    self.conn.consume(header.record_len());
                    self.conn.broken = true;
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the web server aborted the request",
                    ));
                }
                BEGIN_REQUEST => {
                    // The same id again: this request's body never ended. Do not read the new
                    // request as a body; the connection cannot be trusted.
                    self.conn.broken = true;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a new request began before the end of this one's body",
                    ));
                }
                // DATA (the Filter role's second stream) and anything else: not ours to read.
                _ => self.conn.consume(header.record_len()),
            }
        }
    }
}

impl Read for Stdin<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.conn.body.done {
            return Ok(0);
        }
        if self.conn.body.left == 0
            && !self.next_stdin().inspect_err(|_| self.conn.broken = true)?
        {
            return Ok(0);
        }
        let want = out.len().min(self.conn.body.left);
        let buffered = self.conn.buffered();
        let n = if !buffered.is_empty() {
            let n = want.min(buffered.len());
            out[..n].copy_from_slice(&buffered[..n]);
            self.conn.consume(n);
            n
        } else {
            // Large bodies go straight from the socket into the handler's buffer.
            match self.conn.stream.read(&mut out[..want]) {
                Ok(0) => {
                    self.conn.broken = true;
                    return Err(truncated());
                }
                Ok(n) => n,
                Err(e) => {
                    self.conn.broken = true;
                    return Err(e);
                }
            }
        };
        self.conn.body.left -= n;
        Ok(n)
    }
}

/// STDOUT records for one request: writes are gathered into records of up to
/// `STDOUT_CHUNK` bytes, each sent with one `write`; `finish` adds the empty STDOUT record and
/// END_REQUEST to the last one.
pub struct Stdout<'a> {
    conn: &'a mut Conn,
    id: u16,
    /// A header's room, then the pending content.
    buf: Vec<u8>,
}

impl Stdout<'_> {
    /// Puts the header in front of the pending content (and padding after it).
    fn seal(&mut self) {
        let len = self.buf.len() - HEADER_LEN;
        if len == 0 {
            self.buf.clear();
            return;
        }
        let padding = (8 - len % 8) % 8;
        let mut header = Vec::with_capacity(HEADER_LEN);
        record::push_header(&mut header, STDOUT, self.id, len, padding);
        self.buf[..HEADER_LEN].copy_from_slice(&header);
        self.buf.resize(self.buf.len() + padding, 0);
    }

    fn send(&mut self) -> io::Result<()> {
        self.seal();
        let sent = self.conn.stream.write_all(&self.buf);
        self.buf.clear();
        self.buf.resize(HEADER_LEN, 0);
        sent.inspect_err(|_| self.conn.broken = true)
    }

    /// Sends what is pending, the empty STDOUT record and END_REQUEST (REQUEST_COMPLETE).
    pub fn finish(mut self) -> io::Result<()> {
        self.seal();
        record::push_record(&mut self.buf, STDOUT, self.id, b"");
        record::push_end_request(&mut self.buf, self.id, 0, REQUEST_COMPLETE);
        let sent = self.conn.stream.write_all(&self.buf);
        sent.inspect_err(|_| self.conn.broken = true)
    }
}

impl Write for Stdout<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = HEADER_LEN + STDOUT_CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == HEADER_LEN + STDOUT_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.len() > HEADER_LEN {
            self.send()?;
        }
        Ok(())
    }
}
