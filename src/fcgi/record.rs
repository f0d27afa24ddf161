//! The FastCGI 1.0 wire format, as pure functions over bytes: record headers, the
//! BEGIN_REQUEST body, name-value pairs (PARAMS and GET_VALUES), and the records we send
//! (STDOUT, END_REQUEST, GET_VALUES_RESULT, UNKNOWN_TYPE).
//!
//! What it does not do: any I/O, any notion of a connection or a request's state (that is
//! `conn`), any decision about what a parameter means (that is `Request::from_params`).
//! Every length read from the wire is checked against the bytes at hand and against the
//! limits below before anything is allocated; nothing here recurses.

use std::fmt;

/// The only protocol version there is.
pub const VERSION_1: u8 = 1;
/// Bytes of a record header.
pub const HEADER_LEN: usize = 8;
/// The largest content one record can carry (its length field has 16 bits).
pub const MAX_CONTENT: usize = 65_535;
/// How much output we put in one STDOUT record: the largest multiple of 8 that fits, so that
/// full records need no padding.
pub const STDOUT_CHUNK: usize = 65_528;

// Record types (FastCGI 1.0, section 8).
/// Starts a request: role and flags.
pub const BEGIN_REQUEST: u8 = 1;
/// The web server gives up on a request.
pub const ABORT_REQUEST: u8 = 2;
/// We end a request: app status and protocol status.
pub const END_REQUEST: u8 = 3;
/// The request's name-value pairs; an empty record ends them.
pub const PARAMS: u8 = 4;
/// The request body; an empty record ends it.
pub const STDIN: u8 = 5;
/// Our answer (CGI-style head and body).
pub const STDOUT: u8 = 6;
/// The Filter role's second input stream (never read).
pub const DATA: u8 = 8;
/// A management query for our limits.
pub const GET_VALUES: u8 = 9;
/// Our answer to GET_VALUES.
pub const GET_VALUES_RESULT: u8 = 10;
/// Our answer to a management record we do not know.
pub const UNKNOWN_TYPE: u8 = 11;

// END_REQUEST protocol statuses.
/// The request was answered.
pub const REQUEST_COMPLETE: u8 = 0;
/// A second request on a connection that serves one at a time.
pub const CANT_MPX_CONN: u8 = 1;
/// A role we do not play.
pub const UNKNOWN_ROLE: u8 = 3;

/// BEGIN_REQUEST flag: keep the connection open after this request.
const KEEP_CONN: u8 = 1;

/// At most this many parameters in one request. nginx with the shipped snippet sends about 20,
/// Apache about 30 plus one per request header (Apache's own cap is 100 headers).
pub const MAX_PARAMS: usize = 1_000;
/// At most this many bytes of PARAMS stream (names, values and their lengths) in one request.
pub const MAX_PARAMS_BYTES: usize = 256 * 1024;

/// A FastCGI role we may be asked to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Answer the request (nginx, including `auth_request` subrequests; CGI-like).
    Responder,
    /// Decide whether the request may proceed (Apache mod_fcgid `FcgidAccessChecker`).
    Authorizer,
    /// Any other role number (the Filter role, or garbage): answered UNKNOWN_ROLE.
    Other(u16),
}

/// A record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Must be `VERSION_1`; anything else ends the connection.
    pub version: u8,
    /// The record type.
    pub kind: u8,
    /// 0 for management records, else the request the record belongs to.
    pub request_id: u16,
    /// Bytes of content after the header.
    pub content_len: usize,
    /// Bytes of padding after the content (ignored).
    pub padding_len: usize,
}

impl Header {
    /// Reads the 8 header bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: bytes[0],
            kind: bytes[1],
            request_id: u16::from_be_bytes([bytes[2], bytes[3]]),
            content_len: usize::from(u16::from_be_bytes([bytes[4], bytes[5]])),
            padding_len: usize::from(bytes[6]),
        }
    }

    /// The header at the start of `buf`, if all 8 bytes are there.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Header::parse(bytes))
    }

    /// Header, content and padding together.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.content_len + self.padding_len
    }
}

/// What a BEGIN_REQUEST asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// The role to play.
    pub role: Role,
    /// FCGI_KEEP_CONN: the web server will send further requests on this connection.
    pub keep_conn: bool,
}

/// Reads a BEGIN_REQUEST body (8 bytes; role and flags are the first three, so a shorter body
/// that has them is accepted, a body without them is not).
pub fn parse_begin(content: &[u8]) -> Option<Begin> {
    let [role_hi, role_lo, flags, ..] = *content else {
        return None;
    };
    let role = match u16::from_be_bytes([role_hi, role_lo]) {
        1 => Role::Responder,
        2 => Role::Authorizer,
        other => Role::Other(other),
    };
    Some(Begin {
        role,
        keep_conn: flags & KEEP_CONN != 0,
    })
}

/// Appends one record (header, content, padding to a multiple of 8) to `out`.
/// `content` must not exceed `MAX_CONTENT`; longer content is cut there (callers chunk first).
pub fn push_record(out: &mut Vec<u8>, kind: u8, request_id: u16, content: &[u8]) {
    let content = &content[..content.len().min(MAX_CONTENT)];
    let padding = (8 - content.len() % 8) % 8;
    push_header(out, kind, request_id, content.len(), padding);
    out.extend_from_slice(content);
    out.resize(out.len() + padding, 0);
}

/// Appends a record header only (the caller appends `content_len` bytes and `padding` zeros).
pub fn push_header(
    out: &mut Vec<u8>,
    kind: u8,
    request_id: u16,
    content_len: usize,
    padding: usize,
) {
    let len = u16::try_from(content_len).unwrap_or(u16::MAX);
    out.push(VERSION_1);
    out.push(kind);
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(u8::try_from(padding).unwrap_or(0));
    out.push(0);
}

/// Appends an END_REQUEST record.
pub fn push_end_request(out: &mut Vec<u8>, request_id: u16, app_status: u32, protocol_status: u8) {
    let mut body = [0u8; 8];
    body[..4].copy_from_slice(&app_status.to_be_bytes());
    body[4] = protocol_status;
    push_record(out, END_REQUEST, request_id, &body);
}

/// Appends the UNKNOWN_TYPE answer to a management record of type `kind`.
pub fn push_unknown_type(out: &mut Vec<u8>, kind: u8) {
    let mut body = [0u8; 8];
    body[0] = kind;
    push_record(out, UNKNOWN_TYPE, 0, &body);
}

/// Appends the GET_VALUES_RESULT for a GET_VALUES `query`: the variables we know
/// (`FCGI_MAX_CONNS`, `FCGI_MAX_REQS`, `FCGI_MPXS_CONNS`), in the order asked; others are left
/// out, as the specification says. A malformed query gets an empty answer.
pub fn push_get_values_result(out: &mut Vec<u8>, query: &[u8], max_conns: usize, max_reqs: usize) {
    let mut answer = Vec::new();
    let query = parse_pairs(query.to_vec(), MAX_PARAMS).unwrap_or_default();
    for name in query.names() {
        let value = match name {
            b"FCGI_MAX_CONNS" => max_conns.to_string(),
            b"FCGI_MAX_REQS" => max_reqs.to_string(),
            b"FCGI_MPXS_CONNS" => "0".to_string(),
            _ => continue,
        };
        push_pair(&mut answer, name, value.as_bytes());
    }
    push_record(out, GET_VALUES_RESULT, 0, &answer);
}

/// Appends one name-value pair in the PARAMS encoding.
pub fn push_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for len in [name.len(), value.len()] {
        match u8::try_from(len) {
            Ok(short) if short < 0x80 => out.push(short),
            _ => {
                let long = u32::try_from(len).unwrap_or(0x7fff_ffff) | 0x8000_0000;
                out.extend_from_slice(&long.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// Why a PARAMS stream was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsError {
    /// More pairs than `MAX_PARAMS`.
    TooMany,
    /// More bytes than `MAX_PARAMS_BYTES`.
    TooLarge,
    /// A length points past the end of the stream.
    Truncated,
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamsError::TooMany => write!(f, "more than {MAX_PARAMS} FastCGI parameters"),
            ParamsError::TooLarge => {
                write!(f, "FastCGI parameters larger than {MAX_PARAMS_BYTES} bytes")
            }
            ParamsError::Truncated => write!(f, "FastCGI parameters cut off inside a pair"),
        }
    }
}

/// A request's parameters, names and values as the bytes sent: the PARAMS stream as it came,
/// and where each pair's name and value lie in it. One parse makes two allocations whatever
/// the number of pairs (a copy per name and value was a fifth of a slot request's `malloc`
/// calls, each a turn at the allocator's one lock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    stream: Vec<u8>,
    pairs: Vec<Pair>,
}

/// One pair's place in the stream: the name is `start..value`, the value `value..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair {
    start: usize,
    value: usize,
    end: usize,
}

impl Params {
    /// Parses a whole PARAMS stream (the contents of its records, concatenated).
    pub fn parse(stream: Vec<u8>) -> Result<Params, ParamsError> {
        if stream.len() > MAX_PARAMS_BYTES {
            return Err(ParamsError::TooLarge);
        }
        parse_pairs(stream, MAX_PARAMS)
    }

    /// The value of `name` as bytes (the last one if sent twice, as a CGI environment would have it).
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .rev()
            .find(|pair| &self.stream[pair.start..pair.value] == name.as_bytes())
            .map(|pair| &self.stream[pair.value..pair.end])
    }

    /// The value of `name` as text: `None` when absent *or not UTF-8* (that parameter only).
    pub fn get(&self, name: &str) -> Option<String> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    }

    /// The names, in the order sent.
    fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.pairs
            .iter()
            .map(|pair| &self.stream[pair.start..pair.value])
    }

    /// How many pairs were sent.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when no pair was sent.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Reads one pair length at `at`: one byte below 0x80, else four bytes with the top bit set.
fn read_len(stream: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *stream.get(at)?;
    if first < 0x80 {
        return Some((usize::from(first), at + 1));
    }
    let bytes: [u8; 4] = stream.get(at..at + 4)?.try_into().ok()?;
    let len = u32::from_be_bytes(bytes) & 0x7fff_ffff;
    Some((usize::try_from(len).ok()?, at + 4))
}

/// Parses name-value pairs one after the other (a loop, never recursion), at most `max` of them.
fn parse_pairs(stream: Vec<u8>, max: usize) -> Result<Params, ParamsError> {
    // nginx's shipped configuration sends about 30 pairs.
    let mut pairs = Vec::with_capacity(32);
    let mut at = 0;
    while at < stream.len() {
        if pairs.len() == max {
            return Err(ParamsError::TooMany);
        }
        let (name_len, next) = read_len(&stream, at).ok_or(ParamsError::Truncated)?;
        let (value_len, next) = read_len(&stream, next).ok_or(ParamsError::Truncated)?;
        // Checked against the bytes at hand before a pair is recorded.
        let name_end = next.checked_add(name_len).ok_or(ParamsError::Truncated)?;
        let value_end = name_end
            .checked_add(value_len)
            .ok_or(ParamsError::Truncated)?;
        if value_end > stream.len() {
            return Err(ParamsError::Truncated);
        }
        pairs.push(Pair {
            start: next,
            value: name_end,
            end: value_end,
        });
        at = value_end;
    }
    Ok(Params { stream, pairs })
}

/// What the bytes buffered on an idle connection allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// A worker can act on the buffer without waiting for the peer: a whole request head
    /// (BEGIN_REQUEST up to the empty PARAMS record), a management record, or something wrong
    /// that it must answer or close on.
    pub ready: bool,
    /// Bytes at the start that belong to no request (STDIN/DATA/ABORT records sent after a
    /// request ended, before the next BEGIN_REQUEST): they may be dropped.
    pub stray: usize,
}

/// Looks at what an idle connection has sent so far; `limit` is the most a head may take
/// before a worker is woken to refuse it.
pub fn scan_head(buf: &[u8], limit: usize) -> Scan {
    let mut at = 0;
    let mut stray = 0;
    let mut begun = false;
    while let Some(header) = Header::peek(&buf[at..]) {
        if header.version != VERSION_1 {
            return Scan { ready: true, stray };
        }
        let complete = buf.len() - at >= header.record_len();
        match header.kind {
            STDIN | DATA | ABORT_REQUEST if !begun => {
                if !complete {
                    break;
                }
                at += header.record_len();
                stray = at;
                continue;
            }
            BEGIN_REQUEST if !begun => begun = true,
            PARAMS if begun && header.content_len == 0 => return Scan { ready: true, stray },
            PARAMS if begun => {}
            // A management record, or a record out of place: the worker answers or closes.
            _ => {
                return Scan {
                    ready: complete,
                    stray,
                };
            }
        }
        if !complete {
            break;
        }
        at += header.record_len();
    }
    Scan {
        ready: buf.len() - stray > limit,
        stray,
    }
}

/// A request head found whole at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedHead {
    /// The request id.
    pub id: u16,
    /// What BEGIN_REQUEST asked for (the role is Responder or Authorizer).
    pub begin: Begin,
    /// The parameters.
    pub params: Params,
    /// Bytes of the buffer the head took.
    pub len: usize,
}

/// The request head at the start of `buf` if it is there whole and well-formed: BEGIN_REQUEST
/// for a role we play, then PARAMS records of the same request up to the empty one, within the
/// limits. Anything else (`None`) is left to the worker, which answers or refuses it.
pub fn peek_head(buf: &[u8]) -> Option<PeekedHead> {
    let begin_header = Header::peek(buf)?;
    if begin_header.version != VERSION_1
        || begin_header.kind != BEGIN_REQUEST
        || begin_header.request_id == 0
        || buf.len() < begin_header.record_len()
    {
        return None;
    }
    let begin = parse_begin(&buf[HEADER_LEN..HEADER_LEN + begin_header.content_len])?;
    if matches!(begin.role, Role::Other(_)) {
        return None;
    }
    let id = begin_header.request_id;
    let mut at = begin_header.record_len();
    let mut stream = Vec::new();
    loop {
        let header = Header::peek(&buf[at..])?;
        if header.version != VERSION_1
            || header.kind != PARAMS
            || header.request_id != id
            || buf.len() - at < header.record_len()
        {
            return None;
        }
        let content = &buf[at + HEADER_LEN..at + HEADER_LEN + header.content_len];
        at += header.record_len();
        if content.is_empty() {
            break;
        }
        stream.extend_from_slice(content);
    }
    let params = Params::parse(stream).ok()?;
    Some(PeekedHead {
        id,
        begin,
        params,
        len: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in list {
            push_pair(&mut out, name, value);
        }
        out
    }

    #[test]
    fn header_round_trip() {
        let mut out = Vec::new();
        push_record(&mut out, STDOUT, 7, b"hello");
        assert_eq!(out.len(), 16);
        let header = Header::peek(&out).unwrap();
        assert_eq!(
            header,
            Header {
                version: 1,
                kind: STDOUT,
                request_id: 7,
                content_len: 5,
                padding_len: 3
            }
        );
        assert_eq!(header.record_len(), 16);
    }

    #[test]
    fn short_and_long_lengths() {
        let stream = pairs(&[(b"A", &[b'x'; 127]), (&[b'N'; 128], b"")]);
        assert_eq!(stream[0], 1);
        assert_eq!(stream[1], 127);
        let params = Params::parse(stream.to_vec()).unwrap();
        assert_eq!(params.len(), 2);
        assert_eq!(params.get_bytes("A").unwrap().len(), 127);
        assert_eq!(params.get(&"N".repeat(128)).as_deref(), Some(""));
    }

    #[test]
    fn non_utf8_value_affects_that_parameter_only() {
        let stream = pairs(&[
            (b"REQUEST_URI", b"/a\xff"),
            (b"XHU_AUTHORIZE", b"1"),
            (b"\xfe", b"x"),
            (b"REQUEST_METHOD", b"PUT"),
        ]);
        let params = Params::parse(stream.to_vec()).unwrap();
        assert_eq!(params.get("REQUEST_URI"), None);
        assert_eq!(params.get_bytes("REQUEST_URI"), Some(&b"/a\xff"[..]));
        assert_eq!(params.get("XHU_AUTHORIZE").as_deref(), Some("1"));
        assert_eq!(params.get("REQUEST_METHOD").as_deref(), Some("PUT"));
    }

    #[test]
    fn a_repeated_name_reads_as_its_last_value() {
        let params = Params::parse(pairs(&[(b"A", b"1"), (b"A", b"2")])).unwrap();
        assert_eq!(params.get("A").as_deref(), Some("2"));
    }

    #[test]
    fn truncated_pairs_are_refused() {
        let stream = pairs(&[(b"NAME", b"value")]);
        for cut in 1..stream.len() {
            assert_eq!(
                Params::parse(stream[..cut].to_vec()),
                Err(ParamsError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_huge_declared_length_allocates_nothing() {
        // 2^31-1 bytes of name announced, none sent.
        let stream = [0xff, 0xff, 0xff, 0xff, 0x00];
        assert_eq!(Params::parse(stream.to_vec()), Err(ParamsError::Truncated));
    }

    #[test]
    fn ten_thousand_params_are_refused_without_recursion() {
        let mut stream = Vec::new();
        for i in 0..10_000 {
            push_pair(&mut stream, format!("P{i}").as_bytes(), b"x");
        }
        assert_eq!(Params::parse(stream.to_vec()), Err(ParamsError::TooMany));
        let exactly = pairs(&vec![(&b"P"[..], &b""[..]); MAX_PARAMS]);
        assert_eq!(Params::parse(exactly.to_vec()).unwrap().len(), MAX_PARAMS);
    }

    #[test]
    fn oversized_stream_is_refused() {
        let stream = pairs(&[(b"BIG", &vec![b'x'; MAX_PARAMS_BYTES])]);
        assert_eq!(Params::parse(stream.to_vec()), Err(ParamsError::TooLarge));
    }

    #[test]
    fn begin_request_roles_and_flags() {
        let begin = parse_begin(&[0, 1, 1, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            begin,
            Begin {
                role: Role::Responder,
                keep_conn: true
            }
        );
        let begin = parse_begin(&[0, 2, 0]).unwrap();
        assert_eq!(
            begin,
            Begin {
                role: Role::Authorizer,
                keep_conn: false
            }
        );
        assert_eq!(parse_begin(&[0, 3, 0]).unwrap().role, Role::Other(3));
        assert_eq!(parse_begin(&[0, 1]), None);
    }

    #[test]
    fn end_request_body() {
        let mut out = Vec::new();
        push_end_request(&mut out, 1, 0, CANT_MPX_CONN);
        assert_eq!(
            out,
            [1, END_REQUEST, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
        );
    }

    #[test]
    fn get_values_answers_what_we_know_in_order() {
        let query = pairs(&[
            (b"FCGI_MPXS_CONNS", b""),
            (b"OTHER", b""),
            (b"FCGI_MAX_REQS", b""),
        ]);
        let mut out = Vec::new();
        push_get_values_result(&mut out, &query, 64, 4);
        let header = Header::peek(&out).unwrap();
        assert_eq!((header.kind, header.request_id), (GET_VALUES_RESULT, 0));
        let answer = Params::parse(out[8..8 + header.content_len].to_vec()).unwrap();
        assert_eq!(answer.len(), 2);
        assert_eq!(answer.get("FCGI_MPXS_CONNS").as_deref(), Some("0"));
        assert_eq!(answer.get("FCGI_MAX_REQS").as_deref(), Some("4"));
    }

    #[test]
    fn unknown_type_names_the_type() {
        let mut out = Vec::new();
        push_unknown_type(&mut out, 42);
        assert_eq!(&out[..9], &[1, UNKNOWN_TYPE, 0, 0, 0, 8, 0, 0, 42]);
    }

    fn head(params: &[u8], keep: bool) -> Vec<u8> {
        let mut out = Vec::new();
        push_record(
            &mut out,
            BEGIN_REQUEST,
            1,
            &[0, 1, u8::from(keep), 0, 0, 0, 0, 0],
        );
        push_record(&mut out, PARAMS, 1, params);
        push_record(&mut out, PARAMS, 1, b"");
        out
    }

    #[test]
    fn peek_finds_a_whole_head_only() {
        let full = head(&pairs(&[(b"REQUEST_METHOD", b"PUT")]), true);
        for cut in 0..full.len() {
            assert_eq!(peek_head(&full[..cut]), None, "cut at {cut}");
        }
        let mut more = full.clone();
        push_record(&mut more, STDIN, 1, b"body");
        let peeked = peek_head(&more).unwrap();
        assert_eq!(peeked.len, full.len());
        assert_eq!((peeked.id, peeked.begin.keep_conn), (1, true));
        assert_eq!(peeked.params.get("REQUEST_METHOD").as_deref(), Some("PUT"));
    }

    #[test]
    fn peek_leaves_odd_heads_to_the_worker() {
        let mut other_role = Vec::new();
        push_record(&mut other_role, BEGIN_REQUEST, 1, &[0, 3, 0, 0, 0, 0, 0, 0]);
        push_record(&mut other_role, PARAMS, 1, b"");
        assert_eq!(peek_head(&other_role), None);
        let mut management = Vec::new();
        push_record(&mut management, GET_VALUES, 0, b"");
        assert_eq!(peek_head(&management), None);
        let truncated_pair = head(&[0x85, 1, b'A'], false);
        assert_eq!(peek_head(&truncated_pair), None);
    }

    #[test]
    fn scan_waits_for_the_whole_head() {
        let full = head(&pairs(&[(b"A", b"1")]), true);
        for cut in 0..full.len() {
            assert!(!scan_head(&full[..cut], 1 << 20).ready, "cut at {cut}");
        }
        assert!(scan_head(&full, 1 << 20).ready);
    }

    #[test]
    fn scan_skips_the_stdin_end_of_the_last_request() {
        let mut buf = Vec::new();
        push_record(&mut buf, STDIN, 1, b"");
        let stray = buf.len();
        assert_eq!(
            scan_head(&buf, 1 << 20),
            Scan {
                ready: false,
                stray
            }
        );
        buf.extend(head(b"", false));
        assert_eq!(scan_head(&buf, 1 << 20), Scan { ready: true, stray });
    }

    #[test]
    fn scan_wakes_a_worker_for_management_bad_versions_and_oversize() {
        let mut buf = Vec::new();
        push_record(&mut buf, GET_VALUES, 0, b"");
        assert!(scan_head(&buf, 1 << 20).ready);
        assert!(!scan_head(&buf[..5], 1 << 20).ready);
        assert!(scan_head(&[2, 1, 0, 1, 0, 0, 0, 0], 1 << 20).ready);
        let mut big = head(&pairs(&[(b"A", b"1")]), false);
        big.truncate(big.len() - 8);
        assert!(!scan_head(&big, 1 << 20).ready);
        assert!(scan_head(&big, 8).ready);
    }
}
