//! The shipper's HTTP/1.1 client: one TLS connection over a std
//! `TcpStream`, requests with `Content-Length` bodies streamed from a
//! `Read`, responses parsed by `http`.
//!
//! ```text
//! resolve -> connect (connect_timeout) -> TLS handshake -> request*
//! request: head --(Expect: 100-continue)--> wait <= 1 s for an interim answer
//!            100 or silence -> body -> final answer
//!            final answer   -> body never sent, connection closed after
//! ```
//! Every socket read and write has `io_timeout`, set before the handshake,
//! so a silent receiver ends a run instead of hanging it. Errors carry the
//! stage they happened in, which `--ping` prints and the exit code follows.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

mod error;
pub mod pace;
mod session;

pub use error::{ClientError, Stage};
pub use session::Session;

use error::{classify, tls_error};
use pace::Pace;

use crate::config::ReceiverUrl;
use crate::fault;
use crate::http::{self, Headers, Limits, ReadHeadError};
use crate::protocol::Reply;

/// How long to wait for `100 Continue` before sending the body anyway
/// (RFC 9110 §10.1.1: a client need not wait indefinitely).
const CONTINUE_WAIT: Duration = Duration::from_secs(1);
/// Largest response body we read; ours are small JSON documents.
const MAX_RESPONSE_BODY: u64 = 64 * 1024;
/// How long to look for an answer after a body write failed: the receiver
/// writes its error answer before it closes, so it is already in our
/// socket buffer or arrives at once.
const EARLY_ANSWER_WAIT: Duration = Duration::from_secs(2);

/// The receiver and how to reach it.
pub struct Endpoint {
    pub url: ReceiverUrl,
    pub tls: Arc<ClientConfig>,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    /// `max_upload_rate`, bytes per second: request bodies are paced to it.
    pub upload_rate: Option<u64>,
}

/// What a handshake established, for `--ping`.
pub struct Handshake {
    pub protocol: String,
    pub cipher: String,
    pub server_cert: Option<Vec<u8>>,
}

impl Endpoint {
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, ClientError> {
        let err = |source| ClientError::Resolve {
            host: self.url.host.clone(),
            source,
        };
        let addrs: Vec<SocketAddr> = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .map_err(err)?
            .collect();
        if addrs.is_empty() {
            return Err(err(io::Error::new(io::ErrorKind::NotFound, "no addresses")));
        }
        Ok(addrs)
    }

    /// Tries each address in turn, `connect_timeout` each.
    pub fn connect(&self, addrs: &[SocketAddr]) -> Result<TcpStream, ClientError> {
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(a, self.connect_timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    s.set_read_timeout(Some(self.io_timeout))
                        .and_then(|()| s.set_write_timeout(Some(self.io_timeout)))
                        .map_err(|e| ClientError::Connect {
                            target: a.to_string(),
                            source: e,
                        })?;
                    return Ok(s);
                }
                Err(e) => last = Some((a, e)),
            }
        }
        let (a, e) = last.expect("resolve returns at least one address");
        let target = if addrs.len() > 1 {
            format!(
                "{} ({} addresses, last {a})",
                self.url.authority(),
                addrs.len()
            )
        } else {
            a.to_string()
        };
        Err(ClientError::Connect { target, source: e })
    }

    pub fn handshake(&self, mut tcp: TcpStream) -> Result<(Connection, Handshake), ClientError> {
        let name = ServerName::try_from(self.url.host.clone()).map_err(|_| ClientError::Tls {
            detail: format!("`{}` is not a valid server name", self.url.host),
            hint: "set `receiver` to the host name or IP address in the receiver's certificate",
        })?;
        let mut conn =
            ClientConnection::new(Arc::clone(&self.tls), name).map_err(|e| tls_error(&e))?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                // A TLS alert is a certificate verdict; EOF or a reset
                // mid-handshake is a receiver restarting or overloaded as
                // often as a misconfigured one, so it is not (--once
                // retries next pass).
                return Err(classify(e, Stage::Tls, false));
            }
        }
        let info = Handshake {
            protocol: conn
                .protocol_version()
                .map_or("?".into(), |v| format!("{v:?}")),
            cipher: conn
                .negotiated_cipher_suite()
                .map_or("?".into(), |c| format!("{:?}", c.suite())),
            server_cert: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec()),
        };
        Ok((
            Connection {
                tls: StreamOwned::new(conn, tcp),
                write_failed: false,
                buf: Vec::new(),
                reusable: true,
                requests: 0,
                upload_rate: self.upload_rate,
                answers_head: false,
            },
            info,
        ))
    }

    /// resolve + connect + handshake.
    pub fn open(&self) -> Result<Connection, ClientError> {
        let addrs = self.resolve()?;
        let tcp = self.connect(&addrs)?;
        Ok(self.handshake(tcp)?.0)
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// The JSON body, when it is one of ours.
    pub reply: Option<Reply>,
}

impl Response {
    /// `message` or `status` from the JSON body, else the raw start of it.
    pub fn explain(&self) -> String {
        match &self.reply {
            Some(r) => r.message.clone().unwrap_or_else(|| r.status.clone()),
            None => String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
                .trim()
                .to_owned(),
        }
    }
}

/// The receiving side of a connection. Normally `StreamOwned::read`; after
/// a failed write, rustls's own TLS reading only: `StreamOwned::read` first
/// flushes pending TLS output, which fails again on the broken socket and
/// hides the answer the peer sent before it closed.
struct Incoming<'a> {
    tls: &'a mut StreamOwned<ClientConnection, TcpStream>,
    write_failed: bool,
}

impl Read for Incoming<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.write_failed {
            return self.tls.read(buf);
        }
        let StreamOwned { conn, sock } = &mut *self.tls;
        loop {
            match conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if conn.read_tls(sock)? == 0 {
                return Ok(0);
            }
            conn.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

/// A request body streamed from a reader.
pub struct Body<'a> {
    pub reader: &'a mut dyn Read,
    pub len: u64,
}

/// How a request's body is delimited.
#[derive(Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked,
}

/// Room before a chunk's data for its size line: 16 hex digits and CRLF.
const CHUNK_HEADROOM: usize = 18;
/// A chunk goes out once this much is buffered (zstd writes up to about
/// 128 KiB at a time; fewer, larger chunks mean fewer TLS records).
const CHUNK_MIN: usize = 64 * 1024;

/// A request body written as it is produced: `Transfer-Encoding: chunked`,
/// paced to `max_upload_rate`. Each chunk is framed in place (the size
/// line goes into the headroom before the data) and written with one call,
/// so a chunk is one run of TLS records, not three.
///
/// A failed write does not fail the writer: the body's producer (packing)
/// also writes a file, which must be finished whatever the link does, so
/// the error is kept for [`ChunkedBody::finish`] and later writes are
/// dropped.
pub struct ChunkedBody<'c> {
    conn: &'c mut Connection,
    /// `CHUNK_HEADROOM` bytes, then the data not sent yet.
    buf: Vec<u8>,
    pace: Option<Pace>,
    sent: u64,
    broken: Option<ClientError>,
}

impl Write for ChunkedBody<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.broken.is_none() {
            self.buf.extend_from_slice(data);
            if self.buf.len() - CHUNK_HEADROOM >= CHUNK_MIN {
                self.emit();
            }
        }
        Ok(data.len())
    }

    /// Chunks go out as they fill; the rest with `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ChunkedBody<'_> {
    /// Body bytes (chunk data, not framing) sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether a write failed (the rest of the body is being dropped).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    fn emit(&mut self) {
        let n = self.buf.len() - CHUNK_HEADROOM;
        if n == 0 || self.broken.is_some() {
            return;
        }
        let size = format!("{n:x}\r\n");
        let start = CHUNK_HEADROOM - size.len();
        self.buf[start..CHUNK_HEADROOM].copy_from_slice(size.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        if let Some(p) = &mut self.pace {
            p.wait(n);
        }
        match self.conn.tls.write_all(&self.buf[start..]) {
            Ok(()) => {
                if self.sent == 0 {
                    // Some of the body is out, its end is not.
                    fault::point("stream.mid_body");
                }
                self.sent += n as u64;
            }
            Err(e) => {
                self.conn.reusable = false;
                self.broken = Some(classify(e, Stage::Send, false));
            }
        }
        self.buf.truncate(CHUNK_HEADROOM);
    }

    /// Sends what is buffered, the last chunk and `trailer`, and reads the
    /// final answer; with the body bytes sent. After a failed write: the
    /// answer the receiver sent before it closed, if any, else that
    /// failure.
    pub fn finish(mut self, trailer: &[(&str, &str)]) -> (Result<Response, ClientError>, u64) {
        self.emit();
        let sent = self.sent;
        (self.end(trailer), sent)
    }

    fn end(&mut self, trailer: &[(&str, &str)]) -> Result<Response, ClientError> {
        if let Some(e) = self.broken.take() {
            return self.conn.answer_after_failed_send().ok_or(e);
        }
        let mut end = b"0\r\n".to_vec();
        for (name, value) in trailer {
            end.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        end.extend_from_slice(b"\r\n");
        if let Err(e) = self
            .conn
            .tls
            .write_all(&end)
            .and_then(|()| self.conn.tls.flush())
        {
            self.conn.reusable = false;
            let e = classify(e, Stage::Send, false);
            return self.conn.answer_after_failed_send().ok_or(e);
        }
        fault::point("stream.after_trailer");
        self.conn.read_final_after_body()
    }

    /// Gives the body up without its last chunk, so the receiver never
    /// takes it for a whole one: the connection is shut down at once.
    pub fn abandon(self) {
        self.conn.reusable = false;
        let _ = self.conn.tls.sock.shutdown(std::net::Shutdown::Both);
    }
}

pub struct Connection {
    tls: StreamOwned<ClientConnection, TcpStream>,
    /// A write failed: read what the peer sent without writing (see `Incoming`).
    write_failed: bool,
    /// Bytes read past the previous response (none in practice).
    buf: Vec<u8>,
    reusable: bool,
    requests: u32,
    upload_rate: Option<u64>,
    /// The request in flight is a `HEAD`: its answer has no body, whatever
    /// its `Content-Length` says (RFC 9110 §9.3.2).
    answers_head: bool,
}

impl Connection {
    /// Whether another request may go on this connection.
    pub fn is_reusable(&self) -> bool {
        self.reusable
    }

    /// Requests sent so far; a failure on a connection with requests > 0
    /// before any answer may be a stale keep-alive.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    pub fn close(mut self) {
        self.tls.conn.send_close_notify();
        let _ = self.tls.flush();
    }

    /// Sends one request and reads its final answer. With a body, the head
    /// carries `Expect: 100-continue` so the receiver can refuse before any
    /// body byte is sent. `progress` gets the body bytes sent so far.
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: Option<Body<'_>>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Response, ClientError> {
        let framing = body.as_ref().map(|b| Framing::Length(b.len));
        self.send_head(method, target, host, headers, framing)?;
        let Some(body) = body else {
            return self.read_final();
        };
        if let Some(early) = self.await_continue()? {
            return Ok(early);
        }
        if let Err(e) = self.send_body(body, progress) {
            return match e {
                // The receiver may have answered and closed mid-body (507
                // out of space, 408): that answer, not "broken pipe", is
                // what happened, and it decides what the pass does next.
                ClientError::Io { .. } | ClientError::Timeout { .. } => {
                    self.answer_after_failed_send().ok_or(e)
                }
                e => Err(e),
            };
        }
        self.read_final_after_body()
    }

    /// Sends the head of a request whose body is streamed as it is made
    /// (`Transfer-Encoding: chunked`), and waits for `100 Continue`.
    /// `Ok(Some(answer))`: the receiver answered before the body (the
    /// connection closes after it); `Ok(None)`: write the body into
    /// [`Connection::chunked_body`].
    pub fn start_chunked(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
    ) -> Result<Option<Response>, ClientError> {
        self.send_head(method, target, host, headers, Some(Framing::Chunked))?;
        self.await_continue()
    }

    /// The body of the request [`Connection::start_chunked`] began.
    pub fn chunked_body(&mut self) -> ChunkedBody<'_> {
        let pace = self.upload_rate.map(|r| Pace::new(r, Instant::now()));
        let mut buf = Vec::with_capacity(CHUNK_HEADROOM + crate::IO_CHUNK + 2);
        buf.resize(CHUNK_HEADROOM, 0);
        ChunkedBody {
            conn: self,
            buf,
            pace,
            sent: 0,
            broken: None,
        }
    }

    fn send_head(
        &mut self,
        method: &str,
        target: &str,
        host: &str,
        headers: &[(&str, &str)],
        framing: Option<Framing>,
    ) -> Result<(), ClientError> {
        self.requests += 1;
        self.answers_head = method == "HEAD";
        let len;
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        match framing {
            None => {}
            Some(Framing::Length(n)) => {
                len = n.to_string();
                all.push(("Content-Length", &len));
                all.push(("Expect", "100-continue"));
            }
            Some(Framing::Chunked) => {
                all.push(("Transfer-Encoding", "chunked"));
                all.push(("Expect", "100-continue"));
            }
        }
        let head = http::write_request_head(method, target, host, &all);
        self.tls
            .write_all(&head)
            .and_then(|()| self.tls.flush())
            .map_err(|e| classify(e, Stage::Send, true))?;
        fault::point("up.after_head");
        Ok(())
    }

    /// Waits briefly for `100 Continue` or an early final answer (then
    /// returned: the receiver closes after it, and no body is sent).
    fn await_continue(&mut self) -> Result<Option<Response>, ClientError> {
        let sock = self
            .tls
            .sock
            .try_clone()
            .map_err(|e| classify(e, Stage::Send, true))?;
        sock.set_read_timeout(Some(CONTINUE_WAIT))
            .map_err(|e| classify(e, Stage::Send, true))?;
        let early = self.read_response();
        sock.set_read_timeout(self.tls.sock.write_timeout().ok().flatten())
            .map_err(|e| classify(e, Stage::Send, true))?;
        match early {
            Ok(r) if r.status < 200 => Ok(None), // 100, or another interim answer
            Ok(r) => {
                self.reusable = false;
                Ok(Some(r))
            }
            Err(ClientError::Timeout { .. }) => Ok(None), // no interim answer: send anyway
            Err(e) => Err(e),
        }
    }

    /// The final answer once the whole body went out. A dead connection
    /// then is no stale keep-alive: the receiver died while handling this
    /// request (the next pass repeats it; no blind retry here).
    fn read_final_after_body(&mut self) -> Result<Response, ClientError> {
        self.read_final().map_err(|e| match e {
            ClientError::Io { stage, source, .. } => ClientError::Io {
                stage,
                source,
                before_response: false,
            },
            e => e,
        })
    }

    fn send_body(
        &mut self,
        body: Body<'_>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ClientError> {
        let mut chunk = vec![0u8; crate::IO_CHUNK];
        let mut pace = self.upload_rate.map(|r| Pace::new(r, Instant::now()));
        let mut sent = 0u64;
        let mut mid_hit = false;
        let mut last_progress = Instant::now();
        while sent < body.len {
            let want = chunk
                .len()
                .min(usize::try_from(body.len - sent).unwrap_or(usize::MAX));
            let n = match body.reader.read(&mut chunk[..want]) {
                Ok(0) => {
                    self.reusable = false;
                    return Err(ClientError::Body(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the tarball is shorter than announced",
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.reusable = false;
                    return Err(ClientError::Body(e));
                }
            };
            if let Some(p) = &mut pace {
                p.wait(n);
            }
            if let Err(e) = self.tls.write_all(&chunk[..n]) {
                self.reusable = false;
                // The receiver may have answered and closed (507, 408):
                // that answer is more useful than "broken pipe".
                return Err(classify(e, Stage::Send, false));
            }
            sent += n as u64;
            if !mid_hit && sent >= body.len / 2 {
                mid_hit = true;
                fault::point("up.mid_body");
            }
            if last_progress.elapsed() >= Duration::from_millis(200) {
                progress(sent);
                last_progress = Instant::now();
            }
        }
        self.tls
            .flush()
            .map_err(|e| classify(e, Stage::Send, false))?;
        progress(sent);
        fault::point("up.after_body");
        Ok(())
    }

    /// After a failed body write: an answer the receiver sent before it
    /// closed, if one arrives within `EARLY_ANSWER_WAIT`.
    fn answer_after_failed_send(&mut self) -> Option<Response> {
        self.reusable = false;
        self.write_failed = true;
        let sock = self.tls.sock.try_clone().ok()?;
        sock.set_read_timeout(Some(EARLY_ANSWER_WAIT)).ok()?;
        let r = self.read_final().ok();
        let _ = sock.set_read_timeout(sock.write_timeout().ok().flatten());
        r
    }

    /// Reads answers until a final (non-1xx) one.
    fn read_final(&mut self) -> Result<Response, ClientError> {
        loop {
            let r = self.read_response()?;
            if r.status >= 200 {
                fault::point("up.after_status");
                return Ok(r);
            }
        }
    }

    fn read_response(&mut self) -> Result<Response, ClientError> {
        let limits = Limits::default();
        let fresh = self.buf.is_empty();
        let mut incoming = Incoming {
            tls: &mut self.tls,
            write_failed: self.write_failed,
        };
        let end = match http::read_head(&mut incoming, &mut self.buf, &limits, &mut || Ok(())) {
            Ok(Some(end)) => end,
            Ok(None) => {
                self.reusable = false;
                return Err(ClientError::Io {
                    stage: Stage::Receive,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the receiver closed the connection without answering",
                    ),
                    before_response: fresh,
                });
            }
            Err(ReadHeadError::Io(e)) => {
                let e = classify(e, Stage::Receive, fresh && self.buf.is_empty());
                // A timeout here may be the 1 s wait for `100 Continue`,
                // after which the body goes on this same connection.
                if !matches!(e, ClientError::Timeout { .. }) {
                    self.reusable = false;
                }
                return Err(e);
            }
            Err(ReadHeadError::Head(e)) => {
                self.reusable = false;
                return Err(ClientError::Protocol(e.to_string()));
            }
        };
        let head = http::parse_response_head(&self.buf[..end], &limits).map_err(|e| {
            self.reusable = false;
            ClientError::Protocol(e.to_string())
        })?;
        self.buf.drain(..end);
        // 1xx, 204 and 304 never have a body, nor does an answer to HEAD.
        if head.status < 200 || head.status == 204 || head.status == 304 || self.answers_head {
            if head.status >= 200
                && (head.version == http::Version::Http10
                    || head.headers.has_token("connection", "close"))
            {
                self.reusable = false;
            }
            return Ok(Response {
                status: head.status,
                headers: head.headers,
                body: Vec::new(),
                reply: None,
            });
        }
        let cl = match head.headers.count("content-length") {
            0 => None,
            1 => Some(
                head.headers
                    .get("content-length")
                    .and_then(http::parse_content_length)
                    .ok_or_else(|| ClientError::Protocol("invalid Content-Length".into()))?,
            ),
            _ => return Err(ClientError::Protocol("duplicate Content-Length".into())),
        };
        if head.version == http::Version::Http10
            || head.headers.has_token("connection", "close")
            || cl.is_none()
        {
            self.reusable = false;
        }
        let limit = cl.unwrap_or(MAX_RESPONSE_BODY).min(MAX_RESPONSE_BODY);
        if cl.is_some_and(|n| n > MAX_RESPONSE_BODY) {
            return Err(ClientError::Protocol(format!(
                "answer body of {} bytes is too large",
                cl.unwrap_or(0)
            )));
        }
        let mut body: Vec<u8> = Vec::new();
        let take = self.buf.len().min(limit as usize);
        body.extend(self.buf.drain(..take));
        let mut incoming = Incoming {
            tls: &mut self.tls,
            write_failed: self.write_failed,
        };
        let mut rest = (&mut incoming).take(limit - body.len() as u64);
        match rest.read_to_end(&mut body) {
            Ok(_) => {}
            // No Content-Length: the body ends at close; a TLS close without
            // close_notify is what a proxy often does, and our answers are
            // short JSON, so keep what arrived.
            Err(e) if cl.is_none() && e.kind() == io::ErrorKind::UnexpectedEof => {}
            Err(e) => {
                self.reusable = false;
                return Err(classify(e, Stage::Receive, false));
            }
        }
        if cl.is_some_and(|n| body.len() as u64 != n) {
            self.reusable = false;
            return Err(ClientError::Io {
                stage: Stage::Receive,
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "answer body cut short"),
                before_response: false,
            });
        }
        let reply = Reply::from_json(&body);
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
            reply,
        })
    }
}
