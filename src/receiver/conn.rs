//! One connection: TLS handshake, then requests until the peer closes, an
//! error, a timeout or shutdown.
//!
//! Every decision that can be made from the head is made before a body byte
//! is read or `100 Continue` is sent: auth, identity, framing, size, and
//! whether the id is already stored. Keep-alive survives only a request
//! whose body was consumed exactly and answered with 200/201; any error
//! answer closes, after a bounded "lingering" read so a client still
//! sending its body sees the status rather than a reset (bad-inputs.md L7).
//!
//! Timeouts (bad-inputs.md L3-L5): the handshake and the first request head
//! share one *total* deadline (`head_timeout_s`); a kept-alive connection
//! waits at most `idle_timeout_s` in total for its next request. Body reads
//! time out after `body_timeout_s` each, and the whole body must arrive
//! before a deadline that allows a minimum rate; every answer gets
//! `body_timeout_s` to be written. Each phase arms its deadline on the
//! socket wrapper (`deadline`), which re-arms the socket timeout before
//! every socket read and write, including the ones rustls makes inside a
//! handshake or a TLS record: a trickle cannot hold a thread past the
//! deadline however the bytes are spread. Every cut is logged, at most one
//! line per reason per 10 s (`CUTS`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::log::{Level, Throttle};
use crate::receiver::deadline::DeadlineStream;

use rustls::pki_types::CertificateDer;
use rustls::{ServerConnection, StreamOwned};

use crate::auth::{self, Credentials};
use crate::hashing::to_hex;
use crate::http::{self, Limits, ReadHeadError, RequestHead};
use crate::protocol::{self, status, Reply, Route, RouteError};
use crate::receiver::server::Shared;
use crate::receiver::slots::Ticket;
use crate::receiver::store::{Existing, Outcome};
use crate::{fault, info, timefmt, tls, warn};

/// Slowest accepted upload rate, after `body_timeout_s` of grace.
const MIN_BODY_RATE: u64 = 16 * 1024;
/// Lingering close: how long and how much to read and discard.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 << 20;
const BODY_CHUNK: usize = 256 * 1024;

/// Connections cut for being too slow, and failed handshakes: what an
/// unauthenticated peer can cause at will, so one line per reason per 10 s.
static CUTS: Throttle = Throttle::new(Duration::from_secs(10));

/// A TCP stream under its deadline, wrapped in TLS or not, and how long an
/// answer may take to write.
struct Stream {
    io: Io,
    answer_timeout: Duration,
}

enum Io {
    Plain(DeadlineStream),
    Tls(Box<StreamOwned<ServerConnection, DeadlineStream>>),
}

impl Stream {
    fn sock(&self) -> &DeadlineStream {
        match &self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => &s.sock,
        }
    }

    fn sock_mut(&mut self) -> &mut DeadlineStream {
        match &mut self.io {
            Io::Plain(s) => s,
            Io::Tls(s) => &mut s.sock,
        }
    }

    fn tcp(&self) -> &TcpStream {
        self.sock().tcp()
    }

    /// Starts a phase: every socket read and write from now on ends by
    /// `until`, and none blocks longer than `per_op`.
    fn arm(&mut self, until: Instant, per_op: Duration) {
        self.sock_mut().arm(until, per_op);
    }

    /// An answer (or `100 Continue`) is about to be written.
    fn arm_answer(&mut self) {
        let t = self.answer_timeout;
        self.arm(Instant::now() + t, t);
    }

    fn peer_cert(&self) -> Option<CertificateDer<'static>> {
        match &self.io {
            Io::Plain(_) => None,
            Io::Tls(s) => s
                .conn
                .peer_certificates()?
                .first()
                .map(|c| c.clone().into_owned()),
        }
    }

    /// Ends the conversation: TLS close_notify, then a TCP half-close.
    fn finish(&mut self) {
        if let Io::Tls(s) = &mut self.io {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }

    /// Half-close, then read and discard for a bounded time, so a client
    /// still writing its body reads our answer instead of a reset. The
    /// discarded bytes are read below TLS: nobody needs them decrypted.
    fn linger(&mut self) {
        self.arm(Instant::now() + LINGER_TIME, LINGER_TIME);
        self.finish();
        let sock = self.sock_mut();
        let mut sink = [0u8; 16 * 1024];
        let mut total = 0u64;
        while total < LINGER_BYTES {
            match sock.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.io {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

/// `deadline` turns every socket timeout into `TimedOut`.
fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
}

/// Why a handshake did not complete.
enum HandshakeError {
    /// The deadline armed on the socket passed.
    TimedOut,
    Failed(String),
}

/// The TLS handshake for a connection from the TLS listener (`tls`),
/// bounded as a whole by the deadline armed on `sock` (rustls's reads
/// inside `complete_io` go through it); nothing for the plain listener.
fn handshake(
    shared: &Shared,
    mut sock: DeadlineStream,
    tls: bool,
    answer_timeout: Duration,
) -> Result<Stream, HandshakeError> {
    let (true, Some(config)) = (tls, &shared.tls) else {
        return Ok(Stream {
            io: Io::Plain(sock),
            answer_timeout,
        });
    };
    let mut conn =
        ServerConnection::new(config.clone()).map_err(|e| HandshakeError::Failed(e.to_string()))?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Err(HandshakeError::TimedOut),
            Err(e) => {
                // Flush any alert rustls queued (e.g. certificate_required),
                // so the client learns why.
                let _ = conn.write_tls(&mut sock);
                return Err(HandshakeError::Failed(e.to_string()));
            }
        }
    }
    Ok(Stream {
        io: Io::Tls(Box::new(StreamOwned::new(conn, sock))),
        answer_timeout,
    })
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
    /// An early answer while the body may still be arriving.
    Linger,
}

struct Ctx<'a> {
    shared: &'a Shared,
    peer: SocketAddr,
    cert: Option<CertificateDer<'static>>,
    /// Whether this connection came through our TLS listener (else the
    /// loopback plain listener, behind a proxy that did TLS itself).
    tls: bool,
    /// This connection's slot.
    ticket: &'a Ticket<'a>,
    /// Whether `ticket` has been told that a request passed auth.
    authenticated: std::cell::Cell<bool>,
}

pub fn serve(tcp: TcpStream, tls: bool, shared: &Shared, ticket: &Ticket) {
    let peer = tcp
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let cfg = &shared.config;
    let head_s = cfg.head_timeout.as_secs();
    // One deadline for the handshake and the first request head together.
    let sock = DeadlineStream::new(tcp, Instant::now() + cfg.head_timeout, cfg.head_timeout);
    let mut stream = match handshake(shared, sock, tls, cfg.body_timeout) {
        Ok(s) => s,
        Err(HandshakeError::TimedOut) => {
            CUTS.log(Level::Warn, "handshake", || {
                format!(
                    "{peer}: TLS handshake not finished within head_timeout_s ({head_s}s); closed"
                )
            });
            return;
        }
        Err(HandshakeError::Failed(e)) => {
            CUTS.log(Level::Warn, "handshake failed", || {
                format!("{peer}: TLS handshake failed: {e}")
            });
            return;
        }
    };
    let ctx = Ctx {
        shared,
        peer,
        cert: stream.peer_cert(),
        tls,
        ticket,
        authenticated: std::cell::Cell::new(false),
    };
    let limits = Limits::default();
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        if shared
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            break;
        }
        // The deadline armed on the socket bounds the whole head, whatever
        // the reads inside TLS records: nothing to do between reads.
        let got = http::read_head(&mut stream, &mut buf, &limits, &mut || Ok(()));
        let end = match got {
            Ok(Some(end)) => end,
            Ok(None) => break,
            Err(ReadHeadError::Head(e)) => {
                let reply = Reply::status("bad_request").with_message(e.to_string());
                let _ = respond(&mut stream, e.status(), &[], &reply, false);
                log_request(&ctx, None, "-", "-", e.status(), 0, Instant::now());
                stream.linger();
                return;
            }
            Err(ReadHeadError::Io(e)) if is_timeout(&e) && (first || !buf.is_empty()) => {
                // Behind TLS, `buf` may be empty while bytes were arriving:
                // a record is only decrypted once complete.
                let got = buf.len();
                let (key, secs) = if first {
                    ("head_timeout_s", head_s)
                } else {
                    ("idle_timeout_s", cfg.idle_timeout.as_secs())
                };
                CUTS.log(Level::Warn, "head", || {
                    format!("{peer}: request head not complete within {key} ({secs}s; {got} bytes of it decrypted); closed")
                });
                if got > 0 {
                    let reply =
                        Reply::status("timeout").with_message("request head not received in time");
                    let _ = respond(&mut stream, 408, &[], &reply, false);
                }
                break;
            }
            Err(ReadHeadError::Io(e)) if is_timeout(&e) => {
                let idle_s = cfg.idle_timeout.as_secs();
                CUTS.log(Level::Info, "idle", || {
                    format!(
                        "{peer}: kept-alive connection idle for idle_timeout_s ({idle_s}s); closed"
                    )
                });
                break;
            }
            Err(ReadHeadError::Io(_)) => break, // reset, EOF mid-TLS
        };
        first = false;
        let started = Instant::now();
        let head = http::parse_request_head(&buf[..end], &limits);
        buf.drain(..end);
        let next = match head {
            Ok(head) => handle(&ctx, &mut stream, &head, &mut buf, started),
            Err(e) => {
                let reply = Reply::status("bad_request").with_message(e.to_string());
                let _ = respond(&mut stream, e.status(), &[], &reply, false);
                log_request(&ctx, None, "-", "-", e.status(), 0, started);
                Next::Linger
            }
        };
        match next {
            Next::KeepAlive => {
                let idle = shared.config.idle_timeout;
                stream.arm(Instant::now() + idle, idle);
            }
            Next::Close => break,
            Next::Linger => {
                stream.linger();
                return;
            }
        }
    }
    stream.finish();
}

/// Writes one answer with a JSON body.
fn respond(
    s: &mut Stream,
    code: u16,
    extra: &[(&str, &str)],
    reply: &Reply,
    keep_alive: bool,
) -> io::Result<()> {
    fault::point("recv.before_response");
    s.arm_answer();
    let body = reply.to_json();
    let len = body.len().to_string();
    let mut headers: Vec<(&str, &str)> = vec![
        ("Content-Type", "application/json"),
        ("Content-Length", &len),
    ];
    if !keep_alive {
        headers.push(("Connection", "close"));
    }
    headers.extend_from_slice(extra);
    let mut out = http::write_response_head(code, &headers);
    out.extend_from_slice(body.as_bytes());
    s.write_all(&out)?;
    s.flush()
}

fn log_request(
    ctx: &Ctx,
    host: Option<&str>,
    method: &str,
    target: &str,
    code: u16,
    bytes: u64,
    started: Instant,
) {
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        0.0
    };
    info!(
        "{} host={} {method} {target} {code} bytes={bytes} secs={secs:.3} MB/s={rate:.1}",
        ctx.peer,
        host.unwrap_or("-")
    );
}

/// Answers with an error status and ends the connection.
#[allow(clippy::too_many_arguments)] // flat on purpose: every call site reads as one line of policy
fn refuse(
    ctx: &Ctx,
    s: &mut Stream,
    head: &RequestHead,
    host: Option<&str>,
    code: u16,
    reply: Reply,
    extra: &[(&str, &str)],
    started: Instant,
) -> Next {
    // Logged before answering, so the line exists once the client has its
    // answer (tests, and operators correlating logs, rely on that order).
    log_request(ctx, host, &head.method, &head.target, code, 0, started);
    let _ = respond(s, code, extra, &reply, false);
    Next::Linger
}

fn handle(
    ctx: &Ctx,
    s: &mut Stream,
    head: &RequestHead,
    buf: &mut Vec<u8>,
    started: Instant,
) -> Next {
    fault::point("recv.after_head");
    let cfg = &ctx.shared.config;
    let framing = match http::request_framing(head) {
        Ok(f) => f,
        Err(r) => {
            let reply = Reply::status("bad_request").with_message(r.message);
            return refuse(ctx, s, head, None, r.status, reply, &[], started);
        }
    };
    let route = match protocol::route(&head.method, &head.target) {
        Ok(r) => r,
        Err(RouteError::BadPath(why)) => {
            return refuse(
                ctx,
                s,
                head,
                None,
                400,
                Reply::status("bad_request").with_message(why),
                &[],
                started,
            )
        }
        Err(RouteError::NotFound) => {
            return refuse(
                ctx,
                s,
                head,
                None,
                404,
                Reply::status("not_found").with_message("no such endpoint"),
                &[],
                started,
            )
        }
        Err(RouteError::MethodNotAllowed(allow)) => {
            let reply = Reply::status("method_not_allowed").with_message(format!("use {allow}"));
            return refuse(ctx, s, head, None, 405, reply, &[("Allow", allow)], started);
        }
    };
    // Who is asking: the token names the host; under mTLS the certificate
    // must name the same host.
    let unauthorized = |why: &str| Reply::status("unauthorized").with_message(why.to_owned());
    let token = match auth::parse_authorization(head.headers.get("authorization")) {
        Credentials::Bearer(t) => t,
        Credentials::Missing => {
            let reply = unauthorized("send Authorization: Bearer <token>");
            return refuse(
                ctx,
                s,
                head,
                None,
                401,
                reply,
                &[("WWW-Authenticate", "Bearer")],
                started,
            );
        }
        Credentials::Invalid => {
            let reply = unauthorized("malformed Authorization: expected Bearer <token>");
            return refuse(
                ctx,
                s,
                head,
                None,
                401,
                reply,
                &[("WWW-Authenticate", "Bearer error=\"invalid_request\"")],
                started,
            );
        }
    };
    let Some(host) = auth::host_for_token(&cfg.hosts, token) else {
        let reply = unauthorized("unknown token");
        return refuse(
            ctx,
            s,
            head,
            None,
            401,
            reply,
            &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
            started,
        );
    };
    // The plain listener is loopback-only, for a proxy that terminated TLS
    // (and client certificates) itself: there the token alone identifies.
    if ctx.tls && cfg.client_ca_file.is_some() {
        let bound = match &ctx.cert {
            Some(c) => tls::cert_names_host(c, host),
            None => Err("no client certificate"),
        };
        if let Err(why) = bound {
            let reply = Reply::status("forbidden")
                .with_message(format!("token is for host {host}, but {why}"));
            return refuse(ctx, s, head, Some(host), 403, reply, &[], started);
        }
    }
    // A known host is talking: this connection may no longer be evicted
    // to make room for newcomers (see `slots`).
    if !ctx.authenticated.replace(true) {
        ctx.ticket.authenticated();
    }
    match route {
        Route::Ping => ping(
            ctx,
            s,
            head,
            host,
            framing.content_length,
            framing.keep_alive,
            started,
        ),
        Route::Episode {
            host_id,
            episode_id,
        } => {
            if host_id != host {
                let reply = Reply::status("forbidden")
                    .with_message(format!("authenticated as {host}, not {host_id}"));
                return refuse(ctx, s, head, Some(host), 403, reply, &[], started);
            }
            upload(ctx, s, head, host, &episode_id, &framing, buf, started)
        }
    }
}

fn ping(
    ctx: &Ctx,
    s: &mut Stream,
    head: &RequestHead,
    host: &str,
    length: Option<u64>,
    keep_alive: bool,
    started: Instant,
) -> Next {
    if length.unwrap_or(0) != 0 {
        let reply = Reply::status("bad_request").with_message("ping takes no body");
        return refuse(ctx, s, head, Some(host), 400, reply, &[], started);
    }
    let reply = Reply {
        host_id: Some(host.to_owned()),
        version: Some(crate::VERSION.to_owned()),
        server_time: Some(timefmt::now()),
        ..Reply::status("ok")
    };
    log_request(ctx, Some(host), &head.method, &head.target, 200, 0, started);
    let ok = respond(s, 200, &[], &reply, keep_alive).is_ok();
    if ok && keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

#[allow(clippy::too_many_arguments)]
fn upload(
    ctx: &Ctx,
    s: &mut Stream,
    head: &RequestHead,
    host: &str,
    episode: &str,
    framing: &http::RequestFraming,
    buf: &mut Vec<u8>,
    started: Instant,
) -> Next {
    let cfg = &ctx.shared.config;
    let store = &ctx.shared.store;
    let bad = |why: &str| Reply::status("bad_request").with_message(why.to_owned());
    let Some(length) = framing.content_length else {
        let reply = Reply::status("length_required").with_message("send Content-Length");
        return refuse(ctx, s, head, Some(host), 411, reply, &[], started);
    };
    if length == 0 {
        // No tar.zst is empty; an empty PUT is a client bug.
        return refuse(
            ctx,
            s,
            head,
            Some(host),
            400,
            bad("empty body: an episode tarball is never empty"),
            &[],
            started,
        );
    }
    if length > cfg.max_body_bytes {
        let reply = Reply::status("too_large").with_message(format!(
            "body of {length} bytes exceeds max_body_bytes ({})",
            cfg.max_body_bytes
        ));
        return refuse(ctx, s, head, Some(host), 413, reply, &[], started);
    }
    let expected = match head
        .headers
        .get("content-digest")
        .map(protocol::parse_content_digest)
    {
        Some(Ok(d)) => d,
        Some(Err(why)) => return refuse(ctx, s, head, Some(host), 400, bad(why), &[], started),
        None => {
            return refuse(
                ctx,
                s,
                head,
                Some(host),
                400,
                bad("missing Content-Digest: sha-256=:<base64>:"),
                &[],
                started,
            )
        }
    };
    match store.lookup(host, episode) {
        Ok(Existing::Absent) => {}
        Ok(Existing::Present(d)) if d == expected => {
            if let Err(e) = store.confirm(host) {
                warn!("{host}/{episode}: {e}");
                let reply = Reply::status(e.status().word()).with_message("storage error");
                return refuse(
                    ctx,
                    s,
                    head,
                    Some(host),
                    e.status().code(),
                    reply,
                    &[],
                    started,
                );
            }
            let reply = Reply::status(status::PRESENT).with_sha256(to_hex(&d));
            return refuse(ctx, s, head, Some(host), 200, reply, &[], started);
        }
        Ok(Existing::Present(d)) => {
            let reply = Reply::status(status::CONFLICT)
                .with_sha256(to_hex(&d))
                .with_message("other bytes are already stored under this id");
            return refuse(ctx, s, head, Some(host), 409, reply, &[], started);
        }
        Err(e) => {
            warn!("{host}/{episode}: {e}");
            return refuse(
                ctx,
                s,
                head,
                Some(host),
                e.status().code(),
                Reply::status(e.status().word()).with_message("storage error"),
                &[],
                started,
            );
        }
    }
    let mut up = match store.begin(host, episode) {
        Ok(u) => u,
        Err(e) => {
            warn!("{host}/{episode}: {e}");
            let st = e.status().word();
            return refuse(
                ctx,
                s,
                head,
                Some(host),
                e.status().code(),
                Reply::status(st).with_message("storage error"),
                &[],
                started,
            );
        }
    };
    if framing.expect_continue && buf.is_empty() {
        s.arm_answer();
        if s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| s.flush())
            .is_err()
        {
            return Next::Close;
        }
    }
    // The body: what came with the head first, then the socket. Each read
    // may wait `body_timeout`, and the whole body must come by a deadline
    // that allows the minimum rate.
    let body_deadline = started + cfg.body_timeout + Duration::from_secs(length / MIN_BODY_RATE);
    s.arm(body_deadline, cfg.body_timeout);
    let mut left = length;
    let first = buf.len().min(usize::try_from(length).unwrap_or(usize::MAX));
    let mut write_err = up.write_all(&buf[..first]).err();
    buf.drain(..first);
    left -= first as u64;
    let mut chunk = vec![0u8; BODY_CHUNK];
    let mut mid_body_hit = false;
    while left > 0 && write_err.is_none() {
        // Bytes kept coming, but too slowly for the minimum rate.
        let too_slow = s.sock().expired();
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        match s.read(&mut chunk[..want]) {
            Ok(0) => {
                warn!(
                    "{host}/{episode}: client closed after {} of {length} bytes; nothing stored",
                    length - left
                );
                return Next::Close;
            }
            Ok(n) => {
                write_err = up.write_all(&chunk[..n]).err();
                left -= n as u64;
                if !mid_body_hit && left <= length / 2 {
                    mid_body_hit = true;
                    fault::point("recv.mid_body");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                // A read that waited its `body_timeout`, or the rest of the
                // whole-body deadline, and got nothing.
                let why = if too_slow {
                    warn!("{host}/{episode}: body too slow ({} of {length} bytes by the deadline); dropped", length - left);
                    "body too slow"
                } else {
                    warn!(
                        "{host}/{episode}: body stalled after {} of {length} bytes; nothing stored",
                        length - left
                    );
                    "body stalled"
                };
                let _ = respond(
                    s,
                    408,
                    &[],
                    &Reply::status("timeout").with_message(why),
                    false,
                );
                log_request(
                    ctx,
                    Some(host),
                    &head.method,
                    &head.target,
                    408,
                    length - left,
                    started,
                );
                return Next::Linger;
            }
            Err(e) => {
                warn!("{host}/{episode}: connection failed after {} of {length} bytes ({e}); nothing stored", length - left);
                return Next::Close;
            }
        }
    }
    if let Some(e) = write_err {
        let err = up.write_failed(e);
        warn!("{host}/{episode}: {err}");
        let st = err.status().word();
        return refuse(
            ctx,
            s,
            head,
            Some(host),
            err.status().code(),
            Reply::status(st).with_message("storage error"),
            &[],
            started,
        );
    }
    let outcome = up.commit(&expected);
    let (code, reply) = match outcome {
        Ok(Outcome::Stored) => (
            201,
            Reply::status(status::STORED).with_sha256(to_hex(&expected)),
        ),
        Ok(Outcome::AlreadyPresent) => (
            200,
            Reply::status(status::PRESENT).with_sha256(to_hex(&expected)),
        ),
        Ok(Outcome::Conflict(d)) => (
            409,
            Reply::status(status::CONFLICT)
                .with_sha256(to_hex(&d))
                .with_message("other bytes are already stored under this id"),
        ),
        Ok(Outcome::DigestMismatch(actual)) => (
            400,
            Reply::status(status::DIGEST_MISMATCH).with_message(format!(
                "body sha256 is {}, Content-Digest says {}; nothing stored",
                to_hex(&actual),
                to_hex(&expected)
            )),
        ),
        Err(e) => {
            warn!("{host}/{episode}: {e}");
            let st = e.status().word();
            (
                e.status().code(),
                Reply::status(st).with_message("storage error"),
            )
        }
    };
    let keep = framing.keep_alive && matches!(code, 200 | 201);
    log_request(
        ctx,
        Some(host),
        &head.method,
        &head.target,
        code,
        length,
        started,
    );
    let sent = respond(s, code, &[], &reply, keep).is_ok();
    if sent && keep {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// All connection slots are taken: answer 503 quickly and close.
///
/// The handshake, the answer and the lingering close each get `quick` at
/// most, enforced per socket read and write like everywhere else, so the
/// few busy answerers cannot be held by a slow peer either.
pub fn answer_busy(tcp: TcpStream, tls: bool, shared: &Shared) {
    let quick = Duration::from_secs(2).min(shared.config.head_timeout);
    let sock = DeadlineStream::new(tcp, Instant::now() + quick, quick);
    let Ok(mut stream) = handshake(shared, sock, tls, quick) else {
        return;
    };
    let reply = Reply::status("busy").with_message("too many connections; retry later");
    let _ = respond(&mut stream, 503, &[("Retry-After", "60")], &reply, false);
    stream.linger();
}
