//! One HTTP/1.1 connection to the object store, plain or over rustls:
//! a request head written by `http`, a body from memory or from a range
//! of a file, and the answer read under limits. Sans signing: `api` builds
//! the head; this module moves bytes.
//!
//! ```text
//! connect (connect_timeout) -> [TLS handshake] -> request* (kept alive while
//! the store allows)
//! request: head -> body (a file range, IO_CHUNK at a time) -> answer head
//!          -> answer body (Content-Length, chunked or to EOF; 1 MiB at most)
//! ```
//!
//! Why not the shipper's client (`shipper::client`): it speaks TLS only,
//! sends `Expect: 100-continue` and reads our own JSON answers; the store
//! is plain HTTP on a gateway on the same machine as often as TLS, and it
//! answers in XML, often chunked. What both need of HTTP is shared: heads
//! are written and parsed by `crate::http`, TLS is configured by
//! `crate::tls`.
//!
//! Waiting for an answer can take long (a store finishing a large object),
//! and the receiver must meanwhile tell its own client it is still there
//! (`102 Processing`, see `receiver::conn`). So answers are read with a
//! short socket timeout ([`POLL`]), and every time it expires the caller's
//! `beat` runs; the connection gives up only when nothing at all arrived
//! for `io_timeout`. While a body is sent, `beat` runs between chunks.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::config::s3::S3Endpoint;
use crate::http::{self, Headers, Limits, ReadHeadError};

/// How often `beat` runs while an answer is awaited.
pub const POLL: Duration = Duration::from_secs(1);
/// The largest answer body read: the store's are small XML documents (an
/// error, an upload id, a completed multipart upload).
const MAX_ANSWER_BODY: usize = 1 << 20;

/// Where to connect, and how patiently.
pub struct Target {
    pub endpoint: S3Endpoint,
    /// `Some` for an `https://` endpoint.
    pub tls: Option<Arc<ClientConfig>>,
    pub connect_timeout: Duration,
    /// Per socket write; and the longest silence while an answer is awaited.
    pub io_timeout: Duration,
}

/// A request body.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`: a spooled upload, or one part of it.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
    },
}

impl Body<'_> {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The store's answer. `body` is empty for a `HEAD`.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// How a request failed before an answer was read.
#[derive(Debug)]
pub enum ConnError {
    /// The socket or TLS: connect, handshake, send, receive, timeout.
    Net(io::Error),
    /// Reading the body to send from the spool file failed (or it was
    /// shorter than announced): a local problem, not the store's.
    Local(io::Error),
}

enum Io {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => &s.sock,
        }
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

/// An open connection; [`Conn::is_open`] says whether it may carry another
/// request.
pub struct Conn {
    io: Io,
    io_timeout: Duration,
    /// Bytes read past the last answer (none, as we never pipeline).
    buf: Vec<u8>,
    open: bool,
}

fn is_poll_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A reader that waits out [`POLL`] timeouts, running `beat` at each,
/// until nothing has arrived for `limit`.
struct Patient<'a> {
    io: &'a mut Io,
    beat: &'a mut dyn FnMut(),
    limit: Duration,
}

impl Read for Patient<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let since = Instant::now();
        loop {
            match self.io.read(buf) {
                Err(e) if is_poll_timeout(&e) => {
                    if since.elapsed() >= self.limit {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no answer for {}s", self.limit.as_secs()),
                        ));
                    }
                    (self.beat)();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Conn {
    /// Resolves, connects (each address in turn) and, for `https://`,
    /// completes the handshake.
    pub fn open(t: &Target) -> io::Result<Conn> {
        let e = &t.endpoint;
        let addrs: Vec<SocketAddr> = (e.host.as_str(), e.port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, t.connect_timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        tcp.set_read_timeout(Some(t.io_timeout))?;
        tcp.set_write_timeout(Some(t.io_timeout))?;
        let io = match &t.tls {
            None => Io::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from(e.host.clone()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{}` is not a valid TLS server name", e.host),
                    )
                })?;
                let conn = ClientConnection::new(Arc::clone(config), name)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let mut s = StreamOwned::new(conn, tcp);
                while s.conn.is_handshaking() {
                    s.conn.complete_io(&mut s.sock)?;
                }
                Io::Tls(Box::new(s))
            }
        };
        Ok(Conn {
            io,
            io_timeout: t.io_timeout,
            buf: Vec::new(),
            open: true,
        })
    }

    /// Whether another request may go on this connection.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Sends `head` and `body`, then reads the final answer. `beat` runs
    /// between body chunks and every [`POLL`] while the answer is awaited;
    /// `sent` counts the body bytes written. A `HEAD`'s answer has no body.
    pub fn exchange(
        &mut self,
        head: &[u8],
        is_head: bool,
        body: Body<'_>,
        sent: &mut u64,
        beat: &mut dyn FnMut(),
    ) -> Result<Answer, ConnError> {
        // Anything but a clean, fully read answer leaves the connection
        // in an unknown state.
        self.open = false;
        self.io.write_all(head).map_err(ConnError::Net)?;
        self.send_body(body, sent, beat)?;
        self.io.flush().map_err(ConnError::Net)?;
        let answer = self.answer(is_head, beat).map_err(ConnError::Net)?;
        Ok(answer)
    }

    fn send_body(
        &mut self,
        body: Body<'_>,
        sent: &mut u64,
        beat: &mut dyn FnMut(),
    ) -> Result<(), ConnError> {
        match body {
            Body::Empty => Ok(()),
            Body::Bytes(b) => {
                self.io.write_all(b).map_err(ConnError::Net)?;
                *sent += b.len() as u64;
                Ok(())
            }
            Body::File { file, offset, len } => {
                let mut chunk = vec![0u8; crate::IO_CHUNK];
                let mut done = 0u64;
                while done < len {
                    let want = chunk
                        .len()
                        .min(usize::try_from(len - done).unwrap_or(usize::MAX));
                    let n = match file.read_at(&mut chunk[..want], offset + done) {
                        Ok(0) => {
                            return Err(ConnError::Local(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the spooled upload is shorter than its length",
                            )))
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(ConnError::Local(e)),
                    };
                    self.io.write_all(&chunk[..n]).map_err(ConnError::Net)?;
                    if done < len / 2 && done + n as u64 >= len / 2 {
                        // Halfway through an object's (or a part's) bytes.
                        crate::fault::point("s3.mid_data");
                    }
                    done += n as u64;
                    *sent += n as u64;
                    beat();
                }
                Ok(())
            }
        }
    }

    /// Reads the final answer (1xx skipped), its body under the limit, and
    /// whether the connection stays open.
    fn answer(&mut self, is_head: bool, beat: &mut dyn FnMut()) -> io::Result<Answer> {
        self.io.tcp().set_read_timeout(Some(POLL))?;
        let limit = self.io_timeout;
        let result = loop {
            let mut r = Patient {
                io: &mut self.io,
                beat: &mut *beat,
                limit,
            };
            let head = match read_answer_head(&mut r, &mut self.buf) {
                Ok(h) => h,
                Err(e) => break Err(e),
            };
            if head.status < 200 {
                continue;
            }
            let body = read_answer_body(&mut r, &mut self.buf, &head, is_head);
            break body.map(|(body, framed)| {
                let close = head.version == http::Version::Http10
                    || head.headers.has_token("connection", "close");
                self.open = framed && !close;
                Answer {
                    status: head.status,
                    headers: head.headers,
                    body,
                }
            });
        };
        self.io.tcp().set_read_timeout(Some(self.io_timeout))?;
        result
    }
}

fn protocol(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

fn read_answer_head(r: &mut dyn Read, buf: &mut Vec<u8>) -> io::Result<http::ResponseHead> {
    let limits = Limits::default();
    let end = match http::read_head(r, buf, &limits, &mut || Ok(())) {
        Ok(Some(end)) => end,
        Ok(None) => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the store closed the connection without answering",
            ))
        }
        Err(ReadHeadError::Io(e)) => return Err(e),
        Err(ReadHeadError::Head(e)) => return Err(protocol(format!("answer head: {e}"))),
    };
    let head = http::parse_response_head(&buf[..end], &limits)
        .map_err(|e| protocol(format!("answer head: {e}")))?;
    buf.drain(..end);
    Ok(head)
}

/// The body of an answer with this head, and whether it was delimited
/// (so the connection may carry another request).
fn read_answer_body(
    r: &mut dyn Read,
    buf: &mut Vec<u8>,
    head: &http::ResponseHead,
    is_head: bool,
) -> io::Result<(Vec<u8>, bool)> {
    if is_head || head.status == 204 || head.status == 304 {
        return Ok((Vec::new(), true));
    }
    let mut src = Source { r, buf };
    if head.headers.count("transfer-encoding") > 0 {
        if !head.headers.has_token("transfer-encoding", "chunked") {
            return Err(protocol("a transfer coding other than chunked"));
        }
        return dechunk(&mut src).map(|b| (b, true));
    }
    match head.headers.count("content-length") {
        0 => {
            // Delimited by the close.
            let mut out = Vec::new();
            loop {
                let n = src.fill()?;
                if n == 0 {
                    return Ok((out, false));
                }
                src.take(n, &mut out)?;
            }
        }
        1 => {
            let n = head
                .headers
                .get("content-length")
                .and_then(http::parse_content_length)
                .ok_or_else(|| protocol("invalid Content-Length"))?;
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_ANSWER_BODY)
                .ok_or_else(|| protocol(format!("answer body of {n} bytes is too large")))?;
            let mut out = Vec::with_capacity(n);
            src.exact(n, &mut out)?;
            Ok((out, true))
        }
        _ => Err(protocol("duplicate Content-Length")),
    }
}

/// Bytes from a reader, through a buffer that may already hold some.
struct Source<'a> {
    r: &'a mut dyn Read,
    buf: &'a mut Vec<u8>,
}

impl Source<'_> {
    /// Reads more into the buffer; how many arrived (0: EOF).
    fn fill(&mut self) -> io::Result<usize> {
        if !self.buf.is_empty() {
            return Ok(self.buf.len());
        }
        let mut chunk = [0u8; 8192];
        let n = self.r.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Moves `n` buffered bytes to `out`, within the body limit.
    fn take(&mut self, n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        if out.len() + n > MAX_ANSWER_BODY {
            return Err(protocol("answer body too large"));
        }
        out.extend(self.buf.drain(..n));
        Ok(())
    }

    fn exact(&mut self, mut n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        while n > 0 {
            let have = self.fill()?;
            if have == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "answer body cut short",
                ));
            }
            let k = have.min(n);
            self.take(k, out)?;
            n -= k;
        }
        Ok(())
    }

    /// One CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                if line.len() + i > 4096 {
                    return Err(protocol("chunk line too long"));
                }
                line.extend(self.buf.drain(..i));
                self.buf.drain(..2);
                return Ok(line);
            }
            // Keep a lone trailing CR for the next read.
            let keep = usize::from(self.buf.last() == Some(&b'\r'));
            let n = self.buf.len() - keep;
            line.extend(self.buf.drain(..n));
            if line.len() > 4096 {
                return Err(protocol("chunk line too long"));
            }
            let mut chunk = [0u8; 8192];
            let got = self.r.read(&mut chunk)?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "chunked answer cut short",
                ));
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
    }
}

/// A chunked body (RFC 9112 §7.1): sizes in hex, extensions and trailers
/// ignored, at most [`MAX_ANSWER_BODY`] bytes.
fn dechunk(src: &mut Source<'_>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = src.line()?;
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 8)
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| protocol("bad chunk size"))?;
        if size == 0 {
            // Trailer fields, then the empty line.
            while !src.line()?.is_empty() {}
            return Ok(out);
        }
        if out.len() + size > MAX_ANSWER_BODY {
            return Err(protocol("answer body too large"));
        }
        src.exact(size, &mut out)?;
        if !src.line()?.is_empty() {
            return Err(protocol("chunk not followed by CRLF"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(raw: &[u8], is_head: bool) -> io::Result<(u16, Vec<u8>, bool)> {
        // One byte per read: every boundary is a read boundary.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = Trickle(raw);
        let mut buf = Vec::new();
        let head = read_answer_head(&mut r, &mut buf)?;
        let (body, framed) = read_answer_body(&mut r, &mut buf, &head, is_head)?;
        Ok((head.status, body, framed))
    }

    #[test]
    fn answer_bodies_by_their_framing() {
        let (s, b, framed) =
            body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap();
        assert_eq!((s, b.as_slice(), framed), (200, &b"hello"[..], true));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                        4;x=y\r\n<Err\r\nA\r\nor></Error\r\n0\r\nX-T: 1\r\n\r\n";
        let (s, b, framed) = body_of(chunked, false).unwrap();
        assert_eq!(
            (s, b.as_slice(), framed),
            (404, &b"<Error></Error"[..], true)
        );
        let (_, b, framed) = body_of(b"HTTP/1.1 200 OK\r\n\r\nto the end", false).unwrap();
        assert_eq!((b.as_slice(), framed), (&b"to the end"[..], false));
        let (_, b, _) = body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).unwrap();
        assert!(b.is_empty(), "a HEAD's answer has no body");
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        ] {
            assert!(
                body_of(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
