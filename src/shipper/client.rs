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

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

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
const BODY_CHUNK: usize = 256 * 1024;

/// Where in the path a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Resolve,
    Connect,
    Tls,
    Send,
    Receive,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Resolve => "resolve",
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Send => "send",
            Stage::Receive => "receive",
        })
    }
}

#[derive(Debug)]
pub enum ClientError {
    /// DNS: no address for the receiver's host.
    Resolve { host: String, source: io::Error },
    /// TCP: every address refused, timed out or was unreachable.
    Connect { target: String, source: io::Error },
    /// TLS: the handshake failed or the receiver rejected our certificate.
    Tls { detail: String, hint: &'static str },
    /// Timed out waiting on an established connection.
    Timeout { stage: Stage },
    /// The connection broke. `before_response`: nothing of an answer was
    /// read, so on a reused connection the request can be retried.
    Io {
        stage: Stage,
        source: io::Error,
        before_response: bool,
    },
    /// The receiver answered something that is not valid HTTP for us.
    Protocol(String),
    /// Reading the body to send (our own tarball) failed: a local disk
    /// problem, not the network's.
    Body(io::Error),
}

impl ClientError {
    pub fn stage(&self) -> Stage {
        match self {
            ClientError::Resolve { .. } => Stage::Resolve,
            ClientError::Connect { .. } => Stage::Connect,
            ClientError::Tls { .. } => Stage::Tls,
            ClientError::Timeout { stage } | ClientError::Io { stage, .. } => *stage,
            ClientError::Protocol(_) => Stage::Receive,
            ClientError::Body(_) => Stage::Send,
        }
    }

    /// What an operator should check, one sentence.
    pub fn hint(&self) -> &'static str {
        match self {
            ClientError::Resolve { .. } => "check `receiver` in the config and this host's DNS (/etc/resolv.conf, /etc/hosts)",
            ClientError::Connect { .. } => {
                "check that cis490-receiver runs and listens on that port, and that the network path (WireGuard, firewall) is up"
            }
            ClientError::Tls { hint, .. } => hint,
            ClientError::Timeout { .. } => "the receiver accepted the connection but stopped answering: check its load and logs; io_timeout_s sets the limit",
            ClientError::Io { stage: Stage::Tls, .. } => {
                "the receiver closed the connection during the TLS handshake: is `receiver` its TLS port? its log says why (e.g. a client certificate it does not accept)"
            }
            ClientError::Io { .. } => "the connection broke: check the receiver's logs and the network; the next pass retries",
            ClientError::Protocol(_) => "is `receiver` pointing at cis490-receiver (or a proxy in front of it)?",
            ClientError::Body(_) => "the outbox tarball could not be read: check the lab host's disk (dmesg); the next pass repacks if it is gone",
        }
    }

    /// TLS failures need a human (certificates); everything else may heal.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientError::Tls { .. })
    }

    /// A kept-alive connection closed by the receiver just as we reused it.
    pub fn is_stale_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Io {
                before_response: true,
                ..
            }
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            ClientError::Connect { target, source } => {
                write!(f, "cannot connect to {target}: {source}")
            }
            ClientError::Tls { detail, .. } => write!(f, "TLS failed: {detail}"),
            ClientError::Timeout { stage } => write!(f, "timed out ({stage})"),
            ClientError::Io { stage, source, .. } => {
                write!(f, "connection failed ({stage}): {source}")
            }
            ClientError::Protocol(m) => write!(f, "unexpected answer from the receiver: {m}"),
            ClientError::Body(e) => write!(f, "reading the tarball to send: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Resolve { source, .. }
            | ClientError::Connect { source, .. }
            | ClientError::Io { source, .. }
            | ClientError::Body(source) => Some(source),
            _ => None,
        }
    }
}

/// Turns an I/O error on an established connection into a `ClientError`,
/// recognising TLS alerts (in TLS 1.3 a rejected client certificate shows up
/// only here, on the first read after the handshake) and timeouts.
fn classify(e: io::Error, stage: Stage, before_response: bool) -> ClientError {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return tls_error(tls);
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout { stage },
        _ => ClientError::Io {
            stage,
            source: e,
            before_response,
        },
    }
}

fn tls_error(e: &rustls::Error) -> ClientError {
    use rustls::AlertDescription as A;
    let (detail, hint) = match e {
        rustls::Error::InvalidCertificate(c) => (
            format!("server certificate verification failed: {c:?}"),
            "check ca_file is the CA that issued the receiver's certificate, and that the host in `receiver` is one of the certificate's names",
        ),
        rustls::Error::AlertReceived(A::CertificateRequired) => (
            "the receiver requires a client certificate".into(),
            "set cert_file and key_file to this host's certificate (scripts/pki.sh host HOST_ID)",
        ),
        rustls::Error::AlertReceived(a @ (A::BadCertificate | A::UnknownCA | A::CertificateExpired | A::CertificateUnknown | A::UnsupportedCertificate | A::AccessDenied)) => (
            format!("the receiver rejected our client certificate ({a:?})"),
            "cert_file must be issued by the receiver's client_ca_file CA, be valid now, and carry clientAuth",
        ),
        other => (
            other.to_string(),
            "check both sides' certificates and that `receiver` points at a TLS listener",
        ),
    };
    ClientError::Tls { detail, hint }
}

/// The receiver and how to reach it.
pub struct Endpoint {
    pub url: ReceiverUrl,
    pub tls: Arc<ClientConfig>,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
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
                return Err(match e.kind() {
                    io::ErrorKind::InvalidData => e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<rustls::Error>())
                        .map(tls_error)
                        .unwrap_or_else(|| classify(e, Stage::Tls, false)),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        ClientError::Timeout { stage: Stage::Tls }
                    }
                    // EOF or reset mid-handshake: a receiver restarting or
                    // overloaded as often as a misconfigured one, so it is
                    // not a certificate verdict; --once retries next pass.
                    _ => ClientError::Io {
                        stage: Stage::Tls,
                        source: e,
                        before_response: false,
                    },
                });
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

pub struct Connection {
    tls: StreamOwned<ClientConnection, TcpStream>,
    /// A write failed: read what the peer sent without writing (see `Incoming`).
    write_failed: bool,
    /// Bytes read past the previous response (none in practice).
    buf: Vec<u8>,
    reusable: bool,
    requests: u32,
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
        self.requests += 1;
        let len;
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(b) = &body {
            len = b.len.to_string();
            all.push(("Content-Length", &len));
            all.push(("Expect", "100-continue"));
        }
        let head = http::write_request_head(method, target, host, &all);
        self.tls
            .write_all(&head)
            .and_then(|()| self.tls.flush())
            .map_err(|e| classify(e, Stage::Send, true))?;
        fault::point("up.after_head");
        let Some(body) = body else {
            return self.read_final();
        };
        // Wait briefly for 100 Continue or an early final answer.
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
            Ok(r) if r.status == 100 => {}
            Ok(r) if r.status < 200 => {} // other interim answers: ignore
            Ok(r) => {
                // Final answer before the body: the receiver closes after it.
                self.reusable = false;
                return Ok(r);
            }
            Err(ClientError::Timeout { .. }) => {} // no interim answer: send anyway
            Err(e) => return Err(e),
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
        // Once the body went out, a dead connection is no stale keep-alive:
        // the receiver died while handling this request (the next pass
        // repeats it; no blind retry here).
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
        let mut chunk = vec![0u8; BODY_CHUNK];
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
                let before = fresh && self.buf.is_empty();
                if !matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    self.reusable = false;
                }
                return Err(classify(e, Stage::Receive, before));
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
        if head.status < 200 {
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
