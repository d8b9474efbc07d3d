//! HTTP/1.1 framing, sans sockets: parse request and response heads under
//! strict limits, decide a request's framing, write heads byte for byte.
//!
//! Shared by the receiver (parses requests) and the shipper (parses
//! responses). In scope: `Content-Length` framing, a chunked `PUT` (the
//! framing decision here, the body's decoding in `chunked`), keep-alive,
//! `Expect: 100-continue`. Out of scope, refused rather than guessed: any
//! other `Transfer-Encoding`, chunked on other methods or with
//! `Content-Length`, obs-fold, bare CR or LF, absolute-form targets,
//! HTTP/2. The catalogue this is built to is ../shared/reference/bad-inputs.md
//! (F1-F17, L1); the tests below name the entries they cover.
//!
//! The only I/O here is [`read_head`], generic over `Read`, so that tests can
//! feed it byte by byte (split invariance, F14).

use std::fmt;
use std::io::{self, Read};

/// Bounds for one head. Defaults follow hyper and h11: 16 KiB head, 100
/// headers, 8 KiB request line.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
            max_line_bytes: 8 * 1024,
        }
    }
}

/// A malformed or oversized head; `status()` is what a server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// 400, with what was wrong.
    Malformed(&'static str),
    /// 414: the request line alone exceeds `max_line_bytes`.
    UriTooLong,
    /// 431: the head exceeds `max_head_bytes` or `max_headers`.
    TooLarge,
    /// 505
    Version,
    /// The peer closed after sending part of a head.
    Truncated,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) | HeadError::Truncated => 400,
            HeadError::UriTooLong => 414,
            HeadError::TooLarge => 431,
            HeadError::Version => 505,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::Malformed(why) => write!(f, "malformed HTTP head: {why}"),
            HeadError::UriTooLong => f.write_str("request line too long"),
            HeadError::TooLarge => f.write_str("HTTP head too large"),
            HeadError::Version => f.write_str("HTTP version not supported"),
            HeadError::Truncated => f.write_str("connection closed in the middle of an HTTP head"),
        }
    }
}

impl std::error::Error for HeadError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Header fields in arrival order; names compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn count(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// Whether a comma-separated header (e.g. `Connection`) lists `token`,
    /// case-insensitively, in any of its lines.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub headers: Headers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

/// Where a head ends in `buf`, checking line endings as it goes: a bare LF
/// or a CR not followed by LF is an error at once, not a wait for more bytes.
/// Returns `Ok(Some(len))` with the head's length including the blank line.
/// `scan_from` lets a caller resume where the previous call stopped.
pub fn find_head_end(buf: &[u8], scan_from: usize) -> Result<Option<usize>, HeadError> {
    for i in scan_from..buf.len() {
        match buf[i] {
            b'\n' if i == 0 || buf[i - 1] != b'\r' => {
                return Err(HeadError::Malformed("bare LF line ending"))
            }
            b'\n' if i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n" => return Ok(Some(i + 1)),
            _ => {}
        }
        if i > 0 && buf[i - 1] == b'\r' && buf[i] != b'\n' {
            return Err(HeadError::Malformed("bare CR"));
        }
    }
    Ok(None)
}

/// Reads one head from `r` into `buf`, which may already hold bytes left
/// over from the previous message on this connection (pipelining). On
/// success `buf[..len]` is the head and the rest is what followed it.
///
/// `before_read` runs before every read; the receiver uses it to shrink the
/// socket timeout to what is left of a total deadline (a per-read timeout
/// alone lets a client trickle one byte at a time forever, L3).
///
/// `Ok(None)`: the peer closed cleanly before sending anything but empty
/// lines (F13). Empty lines before a request line are skipped, as RFC 9112
/// §2.2 allows.
pub fn read_head<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limits: &Limits,
    before_read: &mut dyn FnMut() -> io::Result<()>,
) -> Result<Option<usize>, ReadHeadError> {
    let mut scan = 0;
    let mut chunk = [0u8; 4096];
    loop {
        // Drop leading CRLFs so they count against nothing.
        let lead = buf.chunks(2).take_while(|c| *c == b"\r\n").count() * 2;
        if lead > 0 {
            buf.drain(..lead);
            scan = 0;
        }
        // Fail fast on what cannot be HTTP (a TLS ClientHello on the plain
        // port, binary noise) instead of waiting for the head deadline: a
        // start line is printable ASCII and starts with a letter (F13).
        if let Some(&c) = buf.first().filter(|_| buf != b"\r") {
            let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
            if !c.is_ascii_uppercase()
                || line
                    .iter()
                    .any(|&b| !(0x20..0x7f).contains(&b) && b != b'\r')
            {
                return Err(HeadError::Malformed("not an HTTP/1.1 message").into());
            }
        }
        if let Some(end) = find_head_end(buf, scan)? {
            if end > limits.max_head_bytes {
                return Err(HeadError::TooLarge.into());
            }
            return Ok(Some(end));
        }
        scan = buf.len().saturating_sub(3);
        let first_line_done = buf.contains(&b'\n');
        if !first_line_done && buf.len() > limits.max_line_bytes {
            return Err(HeadError::UriTooLong.into());
        }
        if buf.len() > limits.max_head_bytes {
            return Err(HeadError::TooLarge.into());
        }
        before_read()?;
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadHeadError::Io(e)),
        };
        if n == 0 {
            return if buf.is_empty() || buf == b"\r" {
                Ok(None)
            } else {
                Err(HeadError::Truncated.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[derive(Debug)]
pub enum ReadHeadError {
    Head(HeadError),
    Io(io::Error),
}

impl From<HeadError> for ReadHeadError {
    fn from(e: HeadError) -> Self {
        ReadHeadError::Head(e)
    }
}

impl From<io::Error> for ReadHeadError {
    fn from(e: io::Error) -> Self {
        ReadHeadError::Io(e)
    }
}

impl fmt::Display for ReadHeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadHeadError::Head(e) => e.fmt(f),
            ReadHeadError::Io(e) => e.fmt(f),
        }
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    // find_head_end guaranteed CRLF endings; the last two are the blank line.
    let body = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    body.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// Field lines (each without its CRLF) under the head's strict syntax: no
/// obs-fold, no whitespace before the colon, a token for a name, a
/// printable value; at most `limits.max_headers` of them. A head's fields,
/// and a chunked body's trailer section (`chunked`).
pub fn parse_fields<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
    limits: &Limits,
) -> Result<Headers, HeadError> {
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= limits.max_headers {
            return Err(HeadError::TooLarge);
        }
        if line.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
            return Err(HeadError::Malformed(
                "obs-fold or whitespace before a header name",
            ));
        }
        let colon = line
            .iter()
            .position(|&c| c == b':')
            .ok_or(HeadError::Malformed("header line without a colon"))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() {
            return Err(HeadError::Malformed("empty header name"));
        }
        if !name.iter().all(|&c| is_tchar(c)) {
            // Includes whitespace between name and colon (RFC 9112 §5.1).
            return Err(HeadError::Malformed("invalid character in a header name"));
        }
        let value = trim_ows(value);
        if value.iter().any(|&c| (c < 0x20 && c != b'\t') || c >= 0x7f) {
            return Err(HeadError::Malformed(
                "control or non-ASCII byte in a header value",
            ));
        }
        // Checked above: all ASCII, so from_utf8 cannot fail.
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        headers.push((name, value));
    }
    Ok(Headers(headers))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn parse_version(v: &[u8]) -> Result<Version, HeadError> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Err(HeadError::Version)
        }
        _ => Err(HeadError::Malformed("bad HTTP version")),
    }
}

/// Parses a complete request head (as delimited by [`find_head_end`]).
pub fn parse_request_head(head: &[u8], limits: &Limits) -> Result<RequestHead, HeadError> {
    if head.len() > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    find_head_end(head, 0)?.ok_or(HeadError::Truncated)?;
    let mut lines = lines(head);
    let line = lines.next().ok_or(HeadError::Malformed("empty head"))?;
    if line.len() > limits.max_line_bytes {
        return Err(HeadError::UriTooLong);
    }
    let mut parts = line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(
            "request line must be METHOD SP TARGET SP VERSION",
        ));
    };
    if method.is_empty() || !method.iter().all(|c| c.is_ascii_uppercase()) {
        return Err(HeadError::Malformed("method must be upper-case letters"));
    }
    if target.is_empty() || !target.iter().all(|&c| (0x21..0x7f).contains(&c)) {
        return Err(HeadError::Malformed("invalid byte in the request target"));
    }
    let version = parse_version(version)?;
    let headers = parse_fields(lines, limits)?;
    Ok(RequestHead {
        // Checked above: ASCII only.
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        version,
        headers,
    })
}

/// Parses a complete response head.
pub fn parse_response_head(head: &[u8], limits: &Limits) -> Result<ResponseHead, HeadError> {
    if head.len() > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    find_head_end(head, 0)?.ok_or(HeadError::Truncated)?;
    let mut lines = lines(head);
    let line = lines.next().ok_or(HeadError::Malformed("empty head"))?;
    let mut parts = line.splitn(3, |&c| c == b' ');
    let version = parse_version(parts.next().unwrap_or_default())?;
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("status code must be three digits"));
    }
    let status = code
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("status code out of range"));
    }
    let reason = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let headers = parse_fields(lines, limits)?;
    Ok(ResponseHead {
        version,
        status,
        reason,
        headers,
    })
}

/// How a request's body is delimited and what the connection does next,
/// or the status that refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFraming {
    /// `None`: no Content-Length (a body-less request, a chunked `PUT`, or
    /// a request that earns 411).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` (a `PUT` over HTTP/1.1 only): the body
    /// is decoded by `chunked`, its length known once it has ended.
    pub chunked: bool,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// A request the server refuses from its head alone. The connection is
/// always closed after answering one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
}

const fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal { status, message }
}

/// Decides framing from a parsed request head. Strict by design: our only
/// legitimate peers are our own shipper and curl (bad-inputs.md F1-F6, F12,
/// L8), so every ambiguity is refused rather than resolved.
///
/// `Transfer-Encoding` is accepted in exactly one form: the single value
/// `chunked` (lower case, as our shipper and curl send it), on a `PUT`,
/// over HTTP/1.1, without `Content-Length`. With `Content-Length` → 400
/// (RFC 9112 §6.1: the classic smuggling shape); on HTTP/1.0, repeated or
/// malformed → 400; chunked on another method → 411 (only an upload that
/// is packed while it is sent needs it); any other coding or list
/// (`gzip`, `chunked, identity`, `Chunked`) → 501.
pub fn request_framing(h: &RequestHead) -> Result<RequestFraming, Refusal> {
    let hs = &h.headers;
    let chunked = hs.count("transfer-encoding") > 0;
    if chunked {
        if hs.count("content-length") > 0 {
            return Err(refuse(
                400,
                "Transfer-Encoding together with Content-Length",
            ));
        }
        if h.version == Version::Http10 || hs.count("transfer-encoding") > 1 {
            return Err(refuse(400, "malformed Transfer-Encoding"));
        }
        let te = hs.get("transfer-encoding").unwrap_or_default();
        if te == "chunked" {
            if h.method != "PUT" {
                return Err(refuse(
                    411,
                    "chunked bodies are accepted on PUT only: send Content-Length",
                ));
            }
        } else if te.is_empty() || !te.bytes().all(|c| is_tchar(c) || c == b',' || c == b' ') {
            return Err(refuse(400, "malformed Transfer-Encoding"));
        } else {
            return Err(refuse(
                501,
                "Transfer-Encoding other than chunked is not supported: send Content-Length",
            ));
        }
    }
    let content_length = match hs.count("content-length") {
        0 => None,
        1 => Some(
            parse_content_length(hs.get("content-length").unwrap_or_default())
                .ok_or(refuse(400, "invalid Content-Length"))?,
        ),
        _ => return Err(refuse(400, "duplicate Content-Length")),
    };
    if h.version == Version::Http11 && hs.count("host") != 1 {
        return Err(refuse(400, "HTTP/1.1 needs exactly one Host header"));
    }
    for unique in [
        "host",
        "authorization",
        "content-digest",
        "expect",
        "content-type",
    ] {
        if hs.count(unique) > 1 {
            return Err(refuse(400, "a header that must be unique is repeated"));
        }
    }
    let expect_continue = match (hs.get("expect"), h.version) {
        (None, _) | (Some(_), Version::Http10) => false,
        (Some(v), _) if v.eq_ignore_ascii_case("100-continue") => true,
        (Some(_), _) => return Err(refuse(417, "only Expect: 100-continue is supported")),
    };
    let keep_alive = h.version == Version::Http11 && !hs.has_token("connection", "close");
    Ok(RequestFraming {
        content_length,
        chunked,
        keep_alive,
        expect_continue,
    })
}

/// Digits only (after OWS trimming, done by the header parser), at most 20
/// of them, no overflow: `+10`, `-1`, `0x10`, `1 0`, `1e3`, `""` all fail.
pub fn parse_content_length(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.bytes().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        428 => "Precondition Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// A response head: status line, the given headers, CRLF.
pub fn write_response_head(status: u16, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A request head: request line, `Host`, the given headers, CRLF.
pub fn write_request_head(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<RequestHead, HeadError> {
        parse_request_head(s.as_bytes(), &Limits::default())
    }

    fn framing(s: &str) -> Result<RequestFraming, u16> {
        request_framing(&req(s).expect("head parses")).map_err(|r| r.status)
    }

    const PUT: &str = "PUT /v1/episodes/a/b HTTP/1.1\r\nHost: x\r\n";

    #[test]
    fn parses_a_good_put() {
        let h = req(&format!(
            "{PUT}Content-Length: 10\r\nExpect: 100-continue\r\n\r\n"
        ))
        .unwrap();
        assert_eq!(h.method, "PUT");
        assert_eq!(h.target, "/v1/episodes/a/b");
        assert_eq!(h.headers.get("content-length"), Some("10"));
        let f = request_framing(&h).unwrap();
        assert_eq!(f.content_length, Some(10));
        assert!(f.keep_alive && f.expect_continue);
    }

    #[test]
    fn f1_f2_transfer_encoding_chunked_put_only() {
        assert_eq!(
            framing(&format!(
                "{PUT}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            )),
            Err(400)
        );
        assert_eq!(
            framing(&format!(
                "{PUT}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
            )),
            Err(400)
        );
        // A chunked PUT over HTTP/1.1 is framed by its chunks (upload while
        // packing); chunked on any other method is still 411.
        let f = framing(&format!("{PUT}Transfer-Encoding: chunked\r\n\r\n")).unwrap();
        assert!(f.chunked && f.content_length.is_none() && f.keep_alive);
        for method in ["PATCH", "POST", "HEAD", "GET"] {
            let head =
                format!("{PUT}Transfer-Encoding: chunked\r\n\r\n").replacen("PUT", method, 1);
            assert_eq!(framing(&head), Err(411), "{method}");
        }
        for te in [
            "gzip",
            "identity",
            "chunked, identity",
            "gzip, chunked",
            "xchunked",
            "Chunked",
        ] {
            assert_eq!(
                framing(&format!("{PUT}Transfer-Encoding: {te}\r\n\r\n")),
                Err(501),
                "{te}"
            );
        }
        assert_eq!(
            framing(&format!(
                "{PUT}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
            )),
            Err(400)
        );
        assert_eq!(
            framing("PUT /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(400)
        );
        // ` chunked`: leading OWS is trimmed by the parser, then it is chunked.
        assert!(
            framing(&format!("{PUT}Transfer-Encoding:  chunked\r\n\r\n"))
                .unwrap()
                .chunked
        );
        // The rest of the head's rules still apply to a chunked PUT.
        let chunked = format!("{PUT}Transfer-Encoding: chunked\r\n");
        assert_eq!(
            framing("PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(400),
            "no Host"
        );
        assert_eq!(
            framing(&format!(
                "{chunked}Content-Digest: a\r\nContent-Digest: a\r\n\r\n"
            )),
            Err(400)
        );
        assert_eq!(framing(&format!("{chunked}Expect: foo\r\n\r\n")), Err(417));
        let f = framing(&format!(
            "{chunked}Expect: 100-continue\r\nConnection: close\r\n\r\n"
        ))
        .unwrap();
        assert!(f.chunked && f.expect_continue && !f.keep_alive);
        assert!(
            !framing(&format!("{PUT}Content-Length: 3\r\n\r\n"))
                .unwrap()
                .chunked
        );
    }

    #[test]
    fn f3_underscore_names_are_unknown_headers() {
        let f = framing(&format!(
            "{PUT}Transfer_Encoding: chunked\r\nContent_Length: 5\r\n\r\n"
        ))
        .unwrap();
        assert_eq!(f.content_length, None);
    }

    #[test]
    fn f4_f5_content_length_strictness() {
        assert_eq!(
            framing(&format!(
                "{PUT}Content-Length: 10\r\nContent-Length: 10\r\n\r\n"
            )),
            Err(400)
        );
        for bad in [
            "10, 10",
            "+10",
            "-1",
            "0x10",
            "1 0",
            "1e3",
            "",
            "１",
            "123456789012345678901",
            "18446744073709551616",
        ] {
            let head = format!("{PUT}Content-Length: {bad}\r\n\r\n");
            match req(&head) {
                Ok(h) => assert_eq!(request_framing(&h).map_err(|r| r.status), Err(400), "{bad}"),
                Err(e) => assert_eq!(e.status(), 400, "{bad}"),
            }
        }
        assert_eq!(
            framing(&format!("{PUT}Content-Length:  42 \r\n\r\n"))
                .unwrap()
                .content_length,
            Some(42)
        );
        assert_eq!(parse_content_length("18446744073709551615"), Some(u64::MAX));
    }

    #[test]
    fn f9_header_syntax() {
        for bad in [
            format!("{PUT}Content-Length : 1\r\n\r\n"),
            format!("{PUT}X: a\r\n  folded\r\n\r\n"),
            format!("{PUT}: empty\r\n\r\n"),
            format!("{PUT}X\"y: 1\r\n\r\n"),
            format!("{PUT}X: a\0b\r\n\r\n"),
            "PUT /x HTTP/1.1\r\n Host: x\r\n\r\n".to_string(),
            format!("{PUT}X: caf\u{e9}\r\n\r\n"),
            format!("{PUT}NoColon\r\n\r\n"),
        ] {
            assert_eq!(req(&bad).map_err(|e| e.status()), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn f10_bare_cr_and_lf() {
        assert!(matches!(
            find_head_end(b"PUT / HTTP/1.1\nHost: x\n\n", 0),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            find_head_end(b"PUT / HTTP/1.1\rHost: x\r\n\r\n", 0),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            find_head_end(b"PUT / HTTP/1.1\r\nX: a\rb\r\n\r\n", 0),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn f11_request_line() {
        for (line, status) in [
            ("put /x HTTP/1.1", 400),
            ("PUT  /x HTTP/1.1", 400),
            ("PUT\t/x HTTP/1.1", 400),
            ("PUT /x", 400),
            ("PUT /x HTTP/1.2", 505),
            ("PUT /x HTTP/2.0", 505),
            ("PUT /x HTTP/1.1 x", 400),
            ("PUT /x\x7f HTTP/1.1", 400),
            ("PUT /x HTTPS/1.1", 400),
        ] {
            let head = format!("{line}\r\nHost: x\r\n\r\n");
            assert_eq!(req(&head).map_err(|e| e.status()), Err(status), "{line:?}");
        }
        let raw = b"PUT /x\xee HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_request_head(raw, &Limits::default()).map_err(|e| e.status()),
            Err(400)
        );
    }

    #[test]
    fn f12_host_and_unique_headers() {
        assert_eq!(
            framing("PUT /x HTTP/1.1\r\nContent-Length: 1\r\n\r\n"),
            Err(400)
        );
        assert_eq!(framing(&format!("{PUT}Host: y\r\n\r\n")), Err(400));
        for h in [
            "Authorization: Bearer a",
            "Content-Digest: x",
            "Expect: 100-continue",
        ] {
            assert_eq!(
                framing(&format!("{PUT}{h}\r\n{h}\r\n\r\n")),
                Err(400),
                "{h}"
            );
        }
        assert!(framing("PUT /x HTTP/1.0\r\n\r\n").is_ok());
    }

    #[test]
    fn l8_expect() {
        assert!(
            framing(&format!("{PUT}Expect: 100-Continue\r\n\r\n"))
                .unwrap()
                .expect_continue
        );
        assert_eq!(framing(&format!("{PUT}Expect: foo\r\n\r\n")), Err(417));
        assert!(
            !framing("PUT /x HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .expect_continue
        );
    }

    #[test]
    fn keep_alive_rules() {
        assert!(
            !framing(&format!("{PUT}Connection: keep-alive, close\r\n\r\n"))
                .unwrap()
                .keep_alive
        );
        assert!(!framing("PUT /x HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(framing(&format!("{PUT}\r\n")).unwrap().keep_alive);
    }

    fn read_all_split(input: &[u8], step: usize) -> Result<Option<(RequestHead, Vec<u8>)>, String> {
        struct Slices<'a>(&'a [u8], usize);
        impl Read for Slices<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(self.0.len()).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = Slices(input, step);
        let mut buf = Vec::new();
        let limits = Limits::default();
        match read_head(&mut r, &mut buf, &limits, &mut || Ok(())) {
            Ok(Some(end)) => {
                let head = parse_request_head(&buf[..end], &limits).map_err(|e| e.to_string())?;
                // What followed the head: read already, or still unread.
                let mut rest = buf[end..].to_vec();
                rest.extend_from_slice(r.0);
                Ok(Some((head, rest)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn f14_split_invariance_and_f8_leftovers() {
        let inputs: Vec<Vec<u8>> = vec![
            format!("{PUT}Content-Length: 3\r\n\r\nabcGET /sneaky HTTP/1.1\r\n").into_bytes(),
            b"\r\n\r\nPOST /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            b"PUT / HTTP/1.1\nHost: x\n\n".to_vec(),
            b"PUT / HTTP/1.1\r\nHost".to_vec(),
            b"\r\n".to_vec(),
            b"".to_vec(),
            vec![b'a'; 20_000],
            format!("PUT /{} HTTP/1.1\r\n\r\n", "x".repeat(65 * 1024)).into_bytes(),
        ];
        for input in &inputs {
            let whole = read_all_split(input, usize::MAX);
            for step in [1, 2, 3, 7, 4096] {
                assert_eq!(read_all_split(input, step), whole, "step {step}");
            }
        }
        let (h, rest) = read_all_split(&inputs[0], 1).unwrap().unwrap();
        assert_eq!(h.method, "PUT");
        assert_eq!(rest, b"abcGET /sneaky HTTP/1.1\r\n");
        assert_eq!(read_all_split(&inputs[4], 1), Ok(None));
        assert_eq!(read_all_split(&inputs[5], 1), Ok(None));
        assert!(read_all_split(&inputs[3], 1)
            .unwrap_err()
            .contains("closed"));
    }

    #[test]
    fn l1_limits() {
        let limits = Limits::default();
        let mut buf = Vec::new();
        let long_target = format!("PUT /{} HTTP/1.1\r\n\r\n", "x".repeat(65 * 1024));
        let err = read_head(&mut long_target.as_bytes(), &mut buf, &limits, &mut || {
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, ReadHeadError::Head(HeadError::UriTooLong)));
        let mut big = String::from("PUT /x HTTP/1.1\r\n");
        while big.len() < 17 * 1024 {
            big.push_str("X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        big.push_str("\r\n");
        buf.clear();
        let err = read_head(&mut big.as_bytes(), &mut buf, &limits, &mut || Ok(())).unwrap_err();
        assert!(matches!(err, ReadHeadError::Head(HeadError::TooLarge)));
        let mut many = String::from("PUT /x HTTP/1.1\r\n");
        for i in 0..101 {
            many.push_str(&format!("X-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(req(&many).map_err(|e| e.status()), Err(431));
    }

    #[test]
    fn f17_responses() {
        let l = Limits::default();
        let r = parse_response_head(b"HTTP/1.1 201\r\nContent-Length: 2\r\n\r\n", &l).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (201, ""));
        let r = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n", &l).unwrap();
        assert_eq!(r.version, Version::Http10);
        assert!(parse_response_head(b"HTTP/1.1 2x1 OK\r\n\r\n", &l).is_err());
        assert!(parse_response_head(b"HTTP/1.1 20 OK\r\n\r\n", &l).is_err());
        assert!(parse_response_head(b"HTTP/1.1 600 OK\r\n\r\n", &l).is_err());
    }

    /// A small fuzz loop (no dependency, deterministic): mutations of
    /// well-formed and hostile heads must never panic, must respect the
    /// limits, and must give the same verdict whatever the read sizes (F14).
    #[test]
    fn mutated_heads_never_panic_and_are_split_invariant() {
        let seeds: Vec<Vec<u8>> = vec![
            format!("{PUT}Content-Length: 3\r\nContent-Digest: sha-256=:AAAA:\r\n\r\nabc")
                .into_bytes(),
            b"POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n".to_vec(),
            format!("{PUT}Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n").into_bytes(),
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let interesting =
            b"\r\n :\t\0\x7f\xff%/.-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let limits = Limits::default();
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].clone();
            for _ in 0..(1 + next() % 4) {
                let pos = (next() as usize) % (input.len() + 1);
                match next() % 4 {
                    0 if !input.is_empty() => {
                        input.remove(pos.min(input.len() - 1));
                    }
                    1 => input.insert(pos, interesting[(next() as usize) % interesting.len()]),
                    2 if !input.is_empty() => {
                        let p = pos.min(input.len() - 1);
                        input[p] = interesting[(next() as usize) % interesting.len()];
                    }
                    _ => {
                        let start = pos.min(input.len());
                        let piece: Vec<u8> = input[start..].iter().take(16).copied().collect();
                        input.splice(start..start, piece);
                    }
                }
            }
            // Same verdict: the same head and rest, or the same status. (With
            // two faults in one head, which is reported first may depend on
            // where a read ends; the status does not.)
            let verdict = |step| match read_all_split(&input, step) {
                Ok(v) => Ok(v),
                Err(msg) => Err(if msg.contains("too long") {
                    414
                } else if msg.contains("too large") {
                    431
                } else if msg.contains("version not supported") {
                    505
                } else {
                    400
                }),
            };
            let whole = verdict(usize::MAX);
            let step = 1 + (next() as usize) % 7;
            assert_eq!(
                verdict(step),
                whole,
                "input {:?} step {step}",
                String::from_utf8_lossy(&input)
            );
            if let Ok(Some((head, _))) = &whole {
                assert!(head.headers.0.len() <= limits.max_headers);
                let _ = request_framing(head);
            }
            if let Some(end) = find_head_end(&input, 0).ok().flatten() {
                let _ = parse_response_head(&input[..end], &limits);
                let _ = parse_request_head(&input[..end], &limits);
            }
        }
    }

    #[test]
    fn heads_are_written_byte_for_byte() {
        assert_eq!(
            write_request_head(
                "PUT",
                "/v1/episodes/a/b",
                "r:8443",
                &[("Content-Length", "5")]
            ),
            b"PUT /v1/episodes/a/b HTTP/1.1\r\nHost: r:8443\r\nContent-Length: 5\r\n\r\n"
        );
        assert_eq!(
            write_response_head(409, &[("Content-Length", "0")]),
            b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n"
        );
    }
}
