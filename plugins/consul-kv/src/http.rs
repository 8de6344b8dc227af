//! A pure HTTP/1.1 codec: bytes in, whole requests out, and a response writer. No I/O.
//!
//! [`Parser`] buffers whatever TCP chunks arrive and hands out complete requests one at a
//! time (pipelined requests stay buffered until asked for). "Not enough bytes yet" is
//! `Ok(None)`, never an error; an error means the stream can not be framed any more and
//! the connection must be answered and closed. Bodies are framed by `Content-Length` or
//! `Transfer-Encoding: chunked`. A `Content-Length` body over the limit is skipped (not
//! buffered) and the request handed out marked [`Request::body_too_large`], so the
//! connection survives; a chunked body over the limit is an error.

use std::fmt;

/// The most bytes a request line plus headers may take.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The longest chunk-size line accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent (origin form `/path?query`, or absolute form).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names lower-cased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The declared body was over the limit: it was skipped and `body` is empty.
    pub body_too_large: bool,
}

impl Request {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after the response (HTTP/1.1 default yes,
    /// HTTP/1.0 only with `Connection: keep-alive`).
    pub fn keep_alive(&self) -> bool {
        if self.connection_has("close") {
            return false;
        }
        self.minor_version >= 1 || self.connection_has("keep-alive")
    }

    fn expects_continue(&self) -> bool {
        self.minor_version >= 1
            && self
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// Why a byte stream is not HTTP/1.1 we can serve. Every one ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Not a well-formed request (the text says what).
    Malformed(String),
    /// The request line and headers exceed [`MAX_HEAD_BYTES`].
    HeadTooLarge,
    /// A chunked body grew over the limit (in bytes).
    BodyTooLarge(usize),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "malformed HTTP request: {why}"),
            HttpError::HeadTooLarge => write!(f, "request header fields too large"),
            HttpError::BodyTooLarge(limit) => write!(f, "body over {limit} bytes"),
        }
    }
}

fn malformed(why: impl Into<String>) -> HttpError {
    HttpError::Malformed(why.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    TooLarge(u64),
    Chunked,
}

/// A parsed request line and headers whose body may still be arriving.
#[derive(Debug)]
struct Head {
    request: Request,
    len: usize,
    framing: Framing,
    continue_sent: bool,
}

/// The incremental request parser of one connection.
#[derive(Debug)]
pub struct Parser {
    buf: Vec<u8>,
    max_body: usize,
    /// Bytes of a skipped oversize body still to come.
    discard: u64,
    head: Option<Head>,
    failed: bool,
}

impl Parser {
    /// A parser refusing bodies over `max_body` bytes.
    pub fn new(max_body: usize) -> Parser {
        Parser {
            buf: Vec::new(),
            max_body,
            discard: 0,
            head: None,
            failed: false,
        }
    }

    /// Appends received bytes (after a failure they are dropped).
    pub fn push(&mut self, mut data: &[u8]) {
        if self.failed {
            return;
        }
        if self.discard > 0 {
            let n = usize::try_from(self.discard)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.discard -= n as u64;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete request, `Ok(None)` if more bytes are needed. After an error
    /// the parser stays failed and yields nothing more.
    pub fn next_request(&mut self) -> Result<Option<Request>, HttpError> {
        if self.failed {
            return Ok(None);
        }
        let outcome = self.parse();
        if outcome.is_err() {
            self.failed = true;
            self.buf = Vec::new();
            self.head = None;
        }
        outcome
    }

    /// True once per request whose head asked for `Expect: 100-continue` and whose body
    /// has not fully arrived: the caller then writes an interim `100 Continue`.
    pub fn take_continue(&mut self) -> bool {
        match &mut self.head {
            Some(head) if !head.continue_sent && head.request.expects_continue() => {
                head.continue_sent = true;
                true
            }
            _ => false,
        }
    }

    fn parse(&mut self) -> Result<Option<Request>, HttpError> {
        if self.head.is_none() {
            // RFC 9112 §2.2: ignore empty lines before a request line.
            let blank = self
                .buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            self.buf.drain(..blank);
            let Some(len) = head_end(&self.buf) else {
                if self.buf.len() > MAX_HEAD_BYTES {
                    return Err(HttpError::HeadTooLarge);
                }
                return Ok(None);
            };
            if len > MAX_HEAD_BYTES {
                return Err(HttpError::HeadTooLarge);
            }
            let (request, framing) = parse_head(&self.buf[..len], self.max_body)?;
            self.head = Some(Head {
                request,
                len,
                framing,
                continue_sent: false,
            });
        }
        let Some(head) = &self.head else {
            return Ok(None);
        };
        let start = head.len;
        let (body, used, too_large) = match head.framing {
            Framing::Empty => (Vec::new(), 0, false),
            Framing::Length(n) => {
                if self.buf.len() < start + n {
                    return Ok(None);
                }
                (self.buf[start..start + n].to_vec(), n, false)
            }
            Framing::TooLarge(n) => {
                let here = (self.buf.len() - start).min(usize::try_from(n).unwrap_or(usize::MAX));
                self.discard = n - here as u64;
                (Vec::new(), here, true)
            }
            Framing::Chunked => match decode_chunked(&self.buf[start..], self.max_body)? {
                Some((body, used)) => (body, used, false),
                None => return Ok(None),
            },
        };
        self.buf.drain(..start + used);
        let Some(head) = self.head.take() else {
            return Ok(None);
        };
        let mut request = head.request;
        request.body = body;
        request.body_too_large = too_large;
        Ok(Some(request))
    }
}

/// The length of the head (through its blank line), accepting bare LF line ends.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = buf[i..].iter().position(|b| *b == b'\n') {
        let nl = i + pos;
        let rest = &buf[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_head(bytes: &[u8], max_body: usize) -> Result<(Request, Framing), HttpError> {
    let text = std::str::from_utf8(bytes).map_err(|_| malformed("head is not UTF-8"))?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .take_while(|l| !l.is_empty());
    let line = lines.next().ok_or_else(|| malformed("no request line"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("bad request line"));
    };
    if !is_token(method) {
        return Err(malformed("bad method"));
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(malformed("bad request target"));
    }
    let minor_version = match version {
        "HTTP/1.1" => 1,
        "HTTP/1.0" => 0,
        _ => return Err(malformed("unsupported HTTP version")),
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(malformed("obsolete header line folding"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed("header without a colon"))?;
        if !is_token(name) {
            return Err(malformed("bad header name"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }

    let mut length: Option<u64> = None;
    let mut chunked = false;
    for (name, value) in &headers {
        match name.as_str() {
            "content-length" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(malformed("bad Content-Length"));
                }
                let n: u64 = value.parse().map_err(|_| malformed("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(malformed("conflicting Content-Length"));
                }
                length = Some(n);
            }
            "transfer-encoding" => {
                let codings: Vec<&str> = value.split(',').map(str::trim).collect();
                if chunked || codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
                    return Err(malformed("unsupported Transfer-Encoding"));
                }
                chunked = true;
            }
            _ => {}
        }
    }
    let framing = match (length, chunked) {
        (Some(_), true) => {
            return Err(malformed("both Content-Length and Transfer-Encoding"));
        }
        (None, true) => Framing::Chunked,
        (Some(0) | None, false) => Framing::Empty,
        (Some(n), false) => match usize::try_from(n) {
            Ok(n) if n <= max_body => Framing::Length(n),
            _ => Framing::TooLarge(n),
        },
    };
    let request = Request {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        headers,
        body: Vec::new(),
        body_too_large: false,
    };
    Ok((request, framing))
}

/// Decodes a whole chunked body at the start of `data`: the body and the bytes used, or
/// `None` if it has not all arrived.
fn decode_chunked(data: &[u8], max: usize) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_len) = data[pos..].iter().position(|b| *b == b'\n') else {
            if data.len() - pos > MAX_CHUNK_LINE {
                return Err(malformed("chunk size line too long"));
            }
            return Ok(None);
        };
        let line = &data[pos..pos + line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line).map_err(|_| malformed("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(malformed("bad chunk size"));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| malformed("bad chunk size"))?;
        pos += line_len + 1;
        if size == 0 {
            // Trailer fields until an empty line; they are read and dropped.
            loop {
                let Some(len) = data[pos..].iter().position(|b| *b == b'\n') else {
                    if data.len() - pos > MAX_HEAD_BYTES {
                        return Err(HttpError::HeadTooLarge);
                    }
                    return Ok(None);
                };
                let trailer = &data[pos..pos + len];
                pos += len + 1;
                if trailer.is_empty() || trailer == b"\r" {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if body.len() + size > max {
            return Err(HttpError::BodyTooLarge(max));
        }
        let end = pos + size;
        if data.len() < end + 1 {
            return Ok(None);
        }
        body.extend_from_slice(&data[pos..end]);
        pos = if data[end..].starts_with(b"\r\n") {
            end + 2
        } else if data[end] == b'\n' {
            end + 1
        } else if data.len() < end + 2 && data[end] == b'\r' {
            return Ok(None);
        } else {
            return Err(malformed("chunk not followed by CRLF"));
        };
    }
}

/// The reason phrase of the statuses this plugin sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes one HTTP/1.1 response: status line, `headers` in order, `Content-Length`,
/// then the body.
pub fn write_response(status: u16, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn all(parser: &mut Parser) -> Vec<Request> {
        let mut out = Vec::new();
        while let Some(r) = parser.next_request().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn simple_get() {
        let mut p = Parser::new(100);
        p.push(b"GET /v1/kv/a?raw HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = p.next_request().unwrap().unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/v1/kv/a?raw");
        assert_eq!(r.header("host"), Some("x"));
        assert!(r.keep_alive());
        assert!(r.body.is_empty());
        assert_eq!(p.next_request().unwrap(), None);
    }

    #[test]
    fn split_one_byte_at_a_time() {
        let raw = b"PUT /v1/kv/a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let mut p = Parser::new(100);
        let mut got = Vec::new();
        for b in raw.iter() {
            p.push(std::slice::from_ref(b));
            got.extend(all(&mut p));
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, b"hello");
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let mut p = Parser::new(100);
        p.push(b"PUT /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.0\r\n\r\n");
        let got = all(&mut p);
        let targets: Vec<_> = got.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["/a", "/b", "/c"]);
        assert_eq!(got[0].body, b"hi");
        assert!(!got[2].keep_alive());
    }

    #[test]
    fn bare_lf_and_leading_blank_lines() {
        let mut p = Parser::new(100);
        p.push(b"\r\nGET /a HTTP/1.1\nHost: x\n\n");
        assert_eq!(all(&mut p).len(), 1);
    }

    #[test]
    fn chunked_body_split() {
        let raw = b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        for split in 0..raw.len() {
            let mut p = Parser::new(100);
            p.push(&raw[..split]);
            let mut got = all(&mut p);
            p.push(&raw[split..]);
            got.extend(all(&mut p));
            assert_eq!(got.len(), 2, "split at {split}");
            assert_eq!(got[0].body, b"hello world");
            assert_eq!(got[1].target, "/b");
        }
    }

    #[test]
    fn malformed_requests() {
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET /a HTTP/2.0\r\n\r\n",
            b"GET /a HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET /a HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET /a HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"GET /a HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut p = Parser::new(100);
            p.push(raw);
            assert!(
                matches!(p.next_request(), Err(HttpError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
            // Stays failed.
            p.push(b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!(p.next_request(), Ok(None));
        }
    }

    #[test]
    fn head_too_large() {
        let mut p = Parser::new(100);
        p.push(b"GET /");
        p.push(&vec![b'a'; MAX_HEAD_BYTES + 1]);
        assert_eq!(p.next_request(), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn oversize_length_body_is_skipped() {
        let mut p = Parser::new(4);
        p.push(b"PUT /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123");
        let r = p.next_request().unwrap().unwrap();
        assert!(r.body_too_large);
        assert!(r.body.is_empty());
        p.push(b"456789GET /b HTTP/1.1\r\n\r\n");
        let r = p.next_request().unwrap().unwrap();
        assert_eq!(r.target, "/b");
        assert!(!r.body_too_large);
    }

    #[test]
    fn oversize_chunked_body_fails() {
        let mut p = Parser::new(4);
        p.push(b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(p.next_request(), Err(HttpError::BodyTooLarge(4)));
    }

    #[test]
    fn expect_continue_once_while_body_missing() {
        let mut p = Parser::new(100);
        p.push(b"PUT /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(p.next_request(), Ok(None));
        assert!(p.take_continue());
        assert!(!p.take_continue());
        p.push(b"ok");
        assert_eq!(p.next_request().unwrap().unwrap().body, b"ok");
        assert!(!p.take_continue());
    }

    #[test]
    fn connection_close() {
        let mut p = Parser::new(100);
        p.push(b"GET /a HTTP/1.1\r\nConnection: Close\r\n\r\nGET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let got = all(&mut p);
        assert!(!got[0].keep_alive());
        assert!(got[1].keep_alive());
    }

    #[test]
    fn writes_a_response() {
        let bytes = write_response(200, &[("Content-Type", "application/json".into())], b"true");
        assert_eq!(
            bytes,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\ntrue"
        );
    }
}
