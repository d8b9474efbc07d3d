//! One connection: after the handshake, requests until the peer closes, an
//! error, a timeout or shutdown. This module sequences the I/O of a
//! request; the decisions are pure functions elsewhere: which answer a head
//! earns (`admit`), what an answer says and whether the connection stays
//! open afterwards (`answer`), how a body ended (`body`). The socket, TLS
//! and the deadlines' enforcement are `stream`'s and `deadline`'s; the
//! files are `store`'s; the connection's slot is `slots`'.
//!
//! Every decision that can be made from the head is made before a body byte
//! is read or `100 Continue` is sent. Keep-alive survives only a request
//! whose body was consumed exactly and answered with 200/201; any other
//! answer closes, after a bounded "lingering" read when the body may still
//! be arriving, so a client still sending it sees the status rather than a
//! reset (bad-inputs.md L7).
//!
//! Timeouts (bad-inputs.md L3-L5): the handshake and the first request head
//! share one *total* deadline (`head_timeout_s`); a kept-alive connection
//! waits at most `idle_timeout_s` in total for its next request. Body reads
//! time out after `body_timeout_s` each, and the whole body must arrive
//! before a deadline that allows a minimum rate; every answer gets
//! `body_timeout_s` to be written. Each phase arms its deadline on the
//! stream, which re-arms the socket timeout before every socket read and
//! write, including the ones rustls makes inside a handshake or a TLS
//! record: a trickle cannot hold a thread past the deadline however the
//! bytes are spread. Every cut is logged, at most one line per reason per
//! 10 s (`CUTS`).

use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;

use crate::chunked::{self, ChunkError, ChunkedReader};
use crate::config::ReceiverConfig;
use crate::http::{self, Headers, Limits, ReadHeadError, RequestHead};
use crate::log::{self, Level, Throttle};
use crate::protocol::Status;
use crate::receiver::admit::{
    self, Admitted, AfterLookup, Append, CertCheck, Facts, Probe, ProbeStep, Put, Streamed, Who,
};
use crate::receiver::answer::{self, Answer, Next};
use crate::receiver::body::{self, BodyReader, CopyError, Cut, Wire};
use crate::receiver::deadline::DeadlineStream;
use crate::receiver::report::Counters;
use crate::receiver::slots::Ticket;
use crate::receiver::store::{PartialName, Pending, ResumeError, Store, StoreError};
use crate::receiver::stream::{self, is_timeout, HandshakeError, Stream};
use crate::{fault, info, timefmt, warn};

/// Slowest accepted upload rate, after `body_timeout_s` of grace. A body
/// of known length must arrive by `body_timeout_s` + length ÷ this; a
/// chunked one, whose length is known only at its end, must keep this
/// rate on average from its start: before every read its deadline is
/// moved to `body_timeout_s` + the bytes decoded so far ÷ this.
const MIN_BODY_RATE: u64 = 16 * 1024;

/// How often a client whose upload is being published to the object
/// store (`s3_*`: seconds to minutes for a large episode, after the body
/// was read) hears `102 Processing`. The shipper's timeout is per read
/// (`io_timeout_s`, default 60): each interim answer is a read that
/// arrives, so a long publish never looks like a silent receiver to a
/// client that waits longer than this (plus the store's own pauses, a
/// second at most between beats unless a write to it stalls).
const PROCESSING_EVERY: Duration = Duration::from_secs(2);

/// The partial a request works on: the one its `Upload-Key` names, else
/// its digest's.
fn partial_of(key: Option<[u8; 16]>, digest: &[u8; 32]) -> PartialName {
    key.map_or(PartialName::Digest(*digest), PartialName::Key)
}

/// Connections cut for being too slow, and failed handshakes: what an
/// unauthenticated peer can cause at will, so one line per reason per 10 s.
static CUTS: Throttle = Throttle::new(Duration::from_secs(10));

/// What every connection needs from the server: shared and read-only.
pub struct Env<'a> {
    pub config: &'a ReceiverConfig,
    pub store: &'a Store,
    /// Set at shutdown: finish the request under way, start no other.
    pub stopping: &'a AtomicBool,
    /// Answers by status, for the metrics.
    pub counters: &'a Counters,
}

/// Serves one connection from a listener whose TLS configuration is `tls`
/// (`None`: the loopback plain listener, behind a proxy that did TLS).
pub fn serve(tcp: TcpStream, tls: Option<&Arc<ServerConfig>>, env: &Env, ticket: &Ticket) {
    let peer = tcp
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let cfg = env.config;
    // One deadline for the handshake and the first request head together.
    let sock = DeadlineStream::new(tcp, Instant::now() + cfg.head_timeout, cfg.head_timeout);
    let mut stream = match stream::handshake(sock, tls, cfg.body_timeout) {
        Ok(s) => s,
        Err(HandshakeError::TimedOut) => {
            let head_s = cfg.head_timeout.as_secs();
            CUTS.log(Level::Warn, "handshake", || {
                format!(
                    "{peer}: TLS handshake not finished within head_timeout_s ({head_s}s); closed"
                )
            });
            return;
        }
        Err(e) => {
            CUTS.log(Level::Warn, "handshake failed", || format!("{peer}: {e}"));
            return;
        }
    };
    let conn = Conn {
        env,
        peer,
        // The plain listener is loopback-only, for a proxy that terminated
        // TLS (and client certificates) itself: there the token alone
        // identifies.
        cert_required: tls.is_some() && cfg.client_ca_file.is_some(),
        cert: stream.peer_cert(),
        ticket,
        authenticated: Cell::new(false),
    };
    conn.requests(&mut stream);
}

/// All connection slots are taken: answer 503 quickly and close. The
/// accept loop has logged it (throttled) before handing the socket over;
/// there is no request, so no request line.
///
/// The handshake, the answer and the lingering close each get `quick` at
/// most, enforced per socket read and write like everywhere else, so the
/// few busy answerers cannot be held by a slow peer either.
pub fn answer_busy(tcp: TcpStream, tls: Option<&Arc<ServerConfig>>, head_timeout: Duration) {
    let quick = Duration::from_secs(2).min(head_timeout);
    let sock = DeadlineStream::new(tcp, Instant::now() + quick, quick);
    let Ok(mut stream) = stream::handshake(sock, tls, quick) else {
        return;
    };
    let _ = send(&mut stream, &Answer::busy(), false);
    stream.linger();
}

struct Conn<'a> {
    env: &'a Env<'a>,
    peer: SocketAddr,
    /// TLS with `client_ca_file`: the certificate must name the host.
    cert_required: bool,
    cert: Option<CertificateDer<'static>>,
    ticket: &'a Ticket<'a>,
    /// Whether `ticket` has been told that a request passed auth.
    authenticated: Cell<bool>,
}

/// The request being answered, as its log line names it.
struct Request<'h> {
    host: Option<&'h str>,
    method: &'h str,
    target: &'h str,
    started: Instant,
}

impl Request<'_> {
    /// A head that could not be parsed.
    fn unparsed(started: Instant) -> Request<'static> {
        Request {
            host: None,
            method: "-",
            target: "-",
            started,
        }
    }
}

/// How much of a request's body had been read when it was answered.
#[derive(Clone, Copy)]
enum BodyRead {
    /// None: answered from the head; the body may still be arriving.
    Unread,
    /// Cut off after this many bytes.
    Partly(u64),
    /// All of it (none, for a ping).
    Whole(u64),
}

/// What `Pending::commit_with` runs while an upload is published: a `102
/// Processing` every `PROCESSING_EVERY`, to a client that sent `Expect:
/// 100-continue` (it reads interim answers, RFC 9110 §15.2, and is not
/// HTTP/1.0, which gets none); until one cannot be written.
fn processing(s: &mut Stream, enabled: bool) -> impl FnMut() + '_ {
    let (mut enabled, mut last) = (enabled, Instant::now());
    move || {
        if enabled && last.elapsed() >= PROCESSING_EVERY {
            last = Instant::now();
            enabled = s.send(answer::PROCESSING).is_ok();
        }
    }
}

/// Writes an answer's bytes. A crash here leaves the work done and the
/// client without its answer (`recv.before_response`).
fn send(s: &mut Stream, answer: &Answer, keep_alive: bool) -> io::Result<()> {
    fault::point("recv.before_response");
    s.send(&answer::encode(answer, keep_alive))
}

impl Conn<'_> {
    fn requests(&self, s: &mut Stream) {
        let cfg = self.env.config;
        let limits = Limits::default();
        let mut buf = Vec::new();
        let mut first = true;
        loop {
            if self.env.stopping.load(Ordering::SeqCst) {
                break;
            }
            // The deadline armed on the socket bounds the whole head,
            // whatever the reads inside TLS records: nothing to do between
            // reads.
            let next = match http::read_head(s, &mut buf, &limits, &mut || Ok(())) {
                Ok(None) => break,
                Ok(Some(end)) => {
                    first = false;
                    let started = Instant::now();
                    let head = http::parse_request_head(&buf[..end], &limits);
                    buf.drain(..end);
                    match head {
                        Ok(head) => self.handle(s, &head, &mut buf, started),
                        Err(e) => self.bad_head(s, &e, started),
                    }
                }
                Err(ReadHeadError::Head(e)) => self.bad_head(s, &e, Instant::now()),
                Err(ReadHeadError::Io(e)) if is_timeout(&e) && (first || !buf.is_empty()) => {
                    self.head_timeout(s, first, buf.len());
                    break;
                }
                Err(ReadHeadError::Io(e)) if is_timeout(&e) => {
                    let (peer, idle_s) = (self.peer, cfg.idle_timeout.as_secs());
                    CUTS.log(Level::Info, "idle", || {
                        format!("{peer}: kept-alive connection idle for idle_timeout_s ({idle_s}s); closed")
                    });
                    break;
                }
                Err(ReadHeadError::Io(_)) => break, // reset, EOF mid-TLS
            };
            match next {
                Next::KeepAlive => s.arm(Instant::now() + cfg.idle_timeout, cfg.idle_timeout),
                Next::Close => break,
                Next::Linger => {
                    s.linger();
                    return;
                }
            }
        }
        s.finish();
    }

    /// The one way a request is answered: its log line first, then the
    /// answer, so the line exists once the client has its answer (tests,
    /// and operators correlating logs, rely on that order). Then what the
    /// connection does next (`answer::next`); a failed write ends a
    /// kept-alive connection.
    fn answer(
        &self,
        s: &mut Stream,
        req: &Request,
        answer: &Answer,
        body: BodyRead,
        keep_alive: bool,
    ) -> Next {
        // RFC 9110 §9.3.2: whatever a HEAD earns, it gets no body.
        let bodiless;
        let answer = if req.method == "HEAD" && answer.has_body() {
            bodiless = answer.clone().without_body();
            &bodiless
        } else {
            answer
        };
        let status = answer.status();
        self.env.counters.answered(status);
        let (bytes, consumed) = match body {
            BodyRead::Unread => (0, false),
            BodyRead::Partly(n) => (n, false),
            BodyRead::Whole(n) => (n, true),
        };
        let secs = req.started.elapsed().as_secs_f64();
        let line = answer::log_line(
            self.peer, req.host, req.method, req.target, status, bytes, secs,
        );
        log::log(status.level(), &line);
        let next = answer::next(status, keep_alive, consumed);
        match send(s, answer, next == Next::KeepAlive) {
            Err(_) if next == Next::KeepAlive => Next::Close,
            _ => next,
        }
    }

    fn bad_head(&self, s: &mut Stream, e: &http::HeadError, started: Instant) -> Next {
        let req = Request::unparsed(started);
        self.answer(s, &req, &Answer::bad_head(e), BodyRead::Unread, false)
    }

    /// A head not complete by its deadline. Not a request (there is no
    /// head to log): the cut is logged, throttled, and a 408 sent only to
    /// a client that had started one.
    fn head_timeout(&self, s: &mut Stream, first: bool, got: usize) {
        let cfg = self.env.config;
        // Behind TLS, `got` may be 0 while bytes were arriving: a record
        // is only decrypted once complete.
        let (key, secs) = if first {
            ("head_timeout_s", cfg.head_timeout.as_secs())
        } else {
            ("idle_timeout_s", cfg.idle_timeout.as_secs())
        };
        let peer = self.peer;
        CUTS.log(Level::Warn, "head", || {
            format!("{peer}: request head not complete within {key} ({secs}s; {got} bytes of it decrypted); closed")
        });
        if got > 0 {
            let answer =
                Answer::new(Status::Timeout).with_message("request head not received in time");
            let _ = send(s, &answer, false);
        }
    }

    fn handle(
        &self,
        s: &mut Stream,
        head: &RequestHead,
        buf: &mut Vec<u8>,
        started: Instant,
    ) -> Next {
        fault::point("recv.after_head");
        let cfg = self.env.config;
        let facts = Facts {
            hosts: &cfg.hosts,
            max_body_bytes: cfg.max_body_bytes,
            cert: if self.cert_required {
                CertCheck::MustName(self.cert.as_ref())
            } else {
                CertCheck::TokenOnly
            },
        };
        let verdict = admit::request(head, &facts);
        // A known host is talking: this connection may no longer be
        // evicted to make room for newcomers (see `slots`).
        if matches!(verdict.who, Who::Host(_)) && !self.authenticated.replace(true) {
            self.ticket.authenticated();
        }
        let req = Request {
            host: verdict.who.host(),
            method: &head.method,
            target: &head.target,
            started,
        };
        match verdict.decision {
            Err(refusal) => self.answer(s, &req, &refusal, BodyRead::Unread, false),
            Ok(Admitted::Ping { host, keep_alive }) => {
                let pong = Answer::pong(host, timefmt::now());
                self.answer(s, &req, &pong, BodyRead::Whole(0), keep_alive)
            }
            Ok(Admitted::Put(put)) => self.upload(s, &req, &put, buf),
            Ok(Admitted::Streamed(put)) => self.streamed(s, &req, &put, buf),
            Ok(Admitted::Probe(probe)) => self.probe(s, &req, &probe),
            Ok(Admitted::Append(append)) => self.append(s, &req, &append, buf),
        }
    }

    /// A storage error: logged with its paths, answered with its category.
    fn failed(&self, host: &str, episode: &str, e: &StoreError) -> Answer {
        warn!("{host}/{episode}: {e}");
        Answer::storage(e)
    }

    /// An answer sent before the body was read (it may still be arriving).
    fn early(&self, s: &mut Stream, req: &Request, answer: &Answer) -> Next {
        self.answer(s, req, answer, BodyRead::Unread, false)
    }

    /// The store holds the id, these bytes or others: the answer the head
    /// earned (200 after making the name durable, or 409). Partials of the
    /// id can never be published now, so they go.
    fn already_stored(&self, host: &str, episode: &str, after: AfterLookup) -> Option<Answer> {
        let store = self.env.store;
        let answer = match after {
            AfterLookup::ReadBody => return None,
            AfterLookup::ConfirmThen(present) => match store.confirm(host) {
                Ok(()) => present,
                Err(e) => return Some(self.failed(host, episode, &e)),
            },
            AfterLookup::Answer(answer) => answer,
        };
        store.drop_partials_of(host, episode);
        Some(answer)
    }

    /// A `HEAD`: how much of the upload the store holds (docs/transport.md,
    /// "Resumable uploads"): all of it (200), other bytes (409), or the
    /// partial's durable offset (204).
    fn probe(&self, s: &mut Stream, req: &Request, probe: &Probe) -> Next {
        let store = self.env.store;
        let (host, episode) = (probe.host.as_str(), probe.episode.as_str());
        let found = match store.lookup(host, episode) {
            Ok(found) => found,
            Err(e) => {
                let answer = self.failed(host, episode, &e);
                return self.answer(s, req, &answer, BodyRead::Whole(0), false);
            }
        };
        let answer = match admit::probe_against_store(probe, found) {
            ProbeStep::Complete => {
                let done = store
                    .confirm(host)
                    .and_then(|()| store.stored_len(host, episode));
                store.drop_partials_of(host, episode);
                match done {
                    Ok(len) => Answer::complete(&probe.digest, len),
                    Err(e) => self.failed(host, episode, &e),
                }
            }
            ProbeStep::Answer(answer) => {
                store.drop_partials_of(host, episode);
                answer
            }
            ProbeStep::Offset => {
                match store.offset(host, episode, &partial_of(probe.key, &probe.digest)) {
                    Ok(held) => {
                        // The offset is durable (fsynced); the client has not
                        // heard it yet.
                        fault::point("recv.before_offset");
                        Answer::offset(held.offset, held.length)
                    }
                    Err(e) => self.failed(host, episode, &e),
                }
            }
        };
        self.answer(s, req, &answer, BodyRead::Whole(0), probe.keep_alive)
    }

    /// A `PATCH`: the store's verdict on the id, the partial claimed and
    /// its offset checked, then the body appended; the upload published
    /// (`Upload-Complete: ?1`) or its new offset made durable and reported.
    fn append(&self, s: &mut Stream, req: &Request, a: &Append, buf: &mut Vec<u8>) -> Next {
        let store = self.env.store;
        let (host, episode) = (a.host.as_str(), a.episode.as_str());
        let found = match store.lookup(host, episode) {
            Ok(found) => found,
            Err(e) => return self.early(s, req, &self.failed(host, episode, &e)),
        };
        if let Some(answer) =
            self.already_stored(host, episode, admit::against_stored(&a.digest, found))
        {
            return self.early(s, req, &answer);
        }
        let resume = match store.resume(host, episode, &partial_of(a.key, &a.digest)) {
            Ok(r) => r,
            Err(ResumeError::Busy) => return self.early(s, req, &Answer::in_progress()),
            Err(ResumeError::Store(e)) => {
                return self.early(s, req, &self.failed(host, episode, &e))
            }
        };
        let held = resume.held();
        if let Err(answer) = admit::against_partial(a, held) {
            return self.early(s, req, &answer);
        }
        // For an append that completes the upload, this may read back its
        // durable prefix: before `100 Continue`, and before the body's
        // deadline starts.
        let pending = match resume.start(a.end(), a.complete) {
            Ok(p) => p,
            Err(e) => return self.early(s, req, &self.failed(host, episode, &e)),
        };
        let pending = match self.receive(
            s,
            req,
            pending,
            buf,
            BodyFacts::of_append(a),
            Instant::now(),
        ) {
            Ok(p) => p,
            Err(next) => return next,
        };
        let answer = if a.complete {
            match pending.commit_with(&a.digest, &mut processing(s, a.expect_continue)) {
                Ok(outcome) => Answer::upload_outcome(&outcome, &a.digest),
                Err(e) => self.failed(host, episode, &e),
            }
        } else {
            match pending.pause() {
                Ok(offset) => {
                    fault::point("recv.before_offset");
                    Answer::offset(offset, held.length)
                }
                Err(e) => self.failed(host, episode, &e),
            }
        };
        self.answer(s, req, &answer, BodyRead::Whole(a.length), a.keep_alive)
    }

    /// Reads a body into `pending`, after `100 Continue` if the client
    /// waits for it, and gives it back. A cut is logged (and answered when
    /// the client can still read an answer) once `pending` is dropped: the
    /// bytes written so far stay in its partial, released for a resume
    /// before the line saying so. `from`: when the body's deadline starts.
    fn receive<'p>(
        &self,
        s: &mut Stream,
        req: &Request,
        mut pending: Pending<'p>,
        buf: &mut Vec<u8>,
        body: BodyFacts<'_>,
        from: Instant,
    ) -> Result<Pending<'p>, Next> {
        let cfg = self.env.config;
        let (host, episode, length) = (body.host, body.episode, body.length);
        if body::sends_continue(body.expect_continue, buf) && s.send(answer::CONTINUE).is_err() {
            return Err(Next::Close);
        }
        // Each body read may wait `body_timeout`, and the whole body must
        // come by a deadline that allows the minimum rate.
        let deadline = from + cfg.body_timeout + Duration::from_secs(length / MIN_BODY_RATE);
        s.arm(deadline, cfg.body_timeout);
        let mut reader = BodyReader::new(buf, s, length).halfway_point(body.halfway_point);
        let copied = body::copy(&mut reader, &mut pending);
        let got = reader.received();
        match copied {
            Ok(()) => Ok(pending),
            Err(e) => {
                let sofar = format!("{got} of {length} bytes");
                Err(self.body_failed(s, req, pending, e, (host, episode), got, &sofar))
            }
        }
    }

    /// A body that ended early: `pending` is dropped (a partial stays,
    /// released for a resume, before the line saying so), the cut is
    /// logged, and answered when the client can still read an answer.
    /// `sofar`: how much of the body came, in words.
    #[allow(clippy::too_many_arguments)]
    fn body_failed(
        &self,
        s: &mut Stream,
        req: &Request,
        pending: Pending,
        e: CopyError,
        (host, episode): (&str, &str),
        got: u64,
        sofar: &str,
    ) -> Next {
        /// Why, once `pending` is gone.
        enum Failure {
            Store(StoreError),
            Cut(Cut),
            Framing(ChunkError),
        }
        // A write error names the file: taken while `pending` is alive.
        let failure = match e {
            CopyError::Write(e) => Failure::Store(pending.write_failed(e)),
            CopyError::Read(cut) => Failure::Cut(cut),
            CopyError::Framing(f) => Failure::Framing(f),
        };
        let kept = if matches!(failure, Failure::Framing(_)) {
            // Refused, not cut: what came is no upload to resume.
            pending.abandon();
            "nothing kept".to_owned()
        } else {
            let kept = if pending.is_resumable() {
                format!("{} bytes kept to resume", pending.len())
            } else {
                "nothing kept".to_owned()
            };
            drop(pending);
            kept
        };
        let timeout = |why: &str| Answer::new(Status::Timeout).with_message(why.to_owned());
        let partly = BodyRead::Partly(got);
        let cut = match failure {
            Failure::Store(e) => {
                let answer = self.failed(host, episode, &e);
                info!("{host}/{episode}: the upload failed after {sofar}; {kept}");
                return self.answer(s, req, &answer, partly, false);
            }
            Failure::Framing(f) => {
                info!("{host}/{episode}: chunked body refused after {sofar} ({f}); nothing stored, {kept}");
                let status = match f.status() {
                    413 => Status::TooLarge,
                    _ => Status::BadRequest,
                };
                let answer = Answer::new(status).with_message(f.to_string());
                return self.answer(s, req, &answer, partly, false);
            }
            Failure::Cut(cut) => cut,
        };
        match cut {
            Cut::Closed => {
                warn!("{host}/{episode}: client closed after {sofar}; nothing stored, {kept}");
                Next::Close
            }
            Cut::Stalled => {
                warn!("{host}/{episode}: body stalled after {sofar}; nothing stored, {kept}");
                self.answer(s, req, &timeout("body stalled"), partly, false)
            }
            Cut::TooSlow => {
                warn!("{host}/{episode}: body too slow ({sofar} by the deadline); dropped, {kept}");
                self.answer(s, req, &timeout("body too slow"), partly, false)
            }
            Cut::Failed(e) => {
                warn!("{host}/{episode}: connection failed after {sofar} ({e}); nothing stored, {kept}");
                Next::Close
            }
        }
    }

    /// Reads a chunked body into `pending`, after `100 Continue` if the
    /// client waits for it; gives it back with the trailer's fields and the
    /// decoded length. What follows the body stays in `buf` (pipelining).
    /// The body's deadline moves with the decoded bytes (`MIN_BODY_RATE`);
    /// each read may wait `body_timeout_s`. A cut, a malformed chunk or a
    /// body over `max_body_bytes` is handled as in `receive`.
    fn receive_chunked<'p>(
        &self,
        s: &mut Stream,
        req: &Request,
        mut pending: Pending<'p>,
        buf: &mut Vec<u8>,
        put: &Streamed,
    ) -> Result<(Pending<'p>, Headers, u64), Next> {
        let cfg = self.env.config;
        if body::sends_continue(put.expect_continue, buf) && s.send(answer::CONTINUE).is_err() {
            return Err(Next::Close);
        }
        let (from, grace) = (req.started, cfg.body_timeout);
        let limits = chunked::Limits {
            max_body_bytes: cfg.max_body_bytes,
            ..chunked::Limits::default()
        };
        let mut body = ChunkedReader::new(Wire::new(buf, s), limits);
        let copied = body::copy_chunked(&mut body, &mut pending, &mut |s: &mut Stream, decoded| {
            s.arm(
                from + grace + Duration::from_secs(decoded / MIN_BODY_RATE),
                grace,
            )
        });
        let got = body.decoded();
        let mut trailer = body.trailer().cloned().unwrap_or_default();
        if fault::io("recv.trailer").is_err() {
            // Tests: a proxy in front that drops trailers.
            trailer = Default::default();
        }
        // Gives back to `buf` what followed the body.
        drop(body);
        match copied {
            Ok(()) => Ok((pending, trailer, got)),
            Err(e) => {
                let sofar = format!("{got} bytes of a chunked body");
                let at = (put.host.as_str(), put.episode.as_str());
                Err(self.body_failed(s, req, pending, e, at, got, &sofar))
            }
        }
    }

    /// An upload whose head passed: the store's verdict on the id, then the
    /// body into the upload's partial, then the store's verdict on the body.
    fn upload(&self, s: &mut Stream, req: &Request, put: &Put, buf: &mut Vec<u8>) -> Next {
        let store = self.env.store;
        let (host, episode, length) = (put.host.as_str(), put.episode.as_str(), put.length);
        let failed = |e: &StoreError| self.failed(host, episode, e);
        let early = |s: &mut Stream, answer: &Answer| self.early(s, req, answer);
        let found = match store.lookup(host, episode) {
            Ok(found) => found,
            Err(e) => return early(s, &failed(&e)),
        };
        if let Some(answer) = self.already_stored(host, episode, admit::against_store(put, found)) {
            return early(s, &answer);
        }
        let name = partial_of(put.key, &put.digest);
        let pending = match store.begin_upload(host, episode, &name, Some(length)) {
            Ok(p) => p,
            Err(e) => return early(s, &failed(&e)),
        };
        let pending = match self.receive(s, req, pending, buf, BodyFacts::of_put(put), req.started)
        {
            Ok(p) => p,
            Err(next) => return next,
        };
        let answer = match pending.commit_with(&put.digest, &mut processing(s, put.expect_continue))
        {
            Ok(outcome) => Answer::outcome(&outcome, &put.digest),
            Err(e) => failed(&e),
        };
        self.answer(s, req, &answer, BodyRead::Whole(length), put.keep_alive)
    }

    /// A chunked `PUT` (docs/transport.md, "Upload while packing"): the
    /// store's verdict on the id from the head (428 for a stored id when
    /// the head has no digest), the body decoded into the partial its
    /// `Upload-Key` names (else its head digest's, else a private temp),
    /// then the digest from the head or the trailer: published as a `PUT`
    /// is, or, with no digest anywhere, kept for a completing `PATCH`.
    fn streamed(&self, s: &mut Stream, req: &Request, put: &Streamed, buf: &mut Vec<u8>) -> Next {
        let store = self.env.store;
        let (host, episode) = (put.host.as_str(), put.episode.as_str());
        let failed = |e: &StoreError| self.failed(host, episode, e);
        let early = |s: &mut Stream, answer: &Answer| self.early(s, req, answer);
        let found = match store.lookup(host, episode) {
            Ok(found) => found,
            Err(e) => return early(s, &failed(&e)),
        };
        let after = admit::stream_against_store(put, found);
        if let Some(answer) = self.already_stored(host, episode, after) {
            return early(s, &answer);
        }
        let begun = match (put.key, put.digest) {
            (Some(key), _) => store.begin_upload(host, episode, &PartialName::Key(key), None),
            (None, Some(d)) => store.begin_upload(host, episode, &PartialName::Digest(d), None),
            (None, None) => store.begin(host, episode),
        };
        let pending = match begun {
            Ok(p) => p,
            Err(e) => return early(s, &failed(&e)),
        };
        let (pending, trailer, length) = match self.receive_chunked(s, req, pending, buf, put) {
            Ok(got) => got,
            Err(next) => return next,
        };
        // The whole body and its trailer are in; nothing is decided yet.
        fault::point("recv.after_trailer");
        let whole = BodyRead::Whole(length);
        let digest = match admit::streamed_digest(put.digest, &trailer, length) {
            Ok(d) => d,
            Err(answer) => {
                // A whole body whose digest fields are broken is refused,
                // not cut: nothing is kept (gone before the client hears).
                pending.abandon();
                return self.answer(s, req, &answer, whole, false);
            }
        };
        let answer = match digest {
            // Published exactly as a `PUT`'s partial is (to the object
            // store too, with `102 Processing` meanwhile).
            Some(d) => match pending.commit_with(&d, &mut processing(s, put.expect_continue)) {
                Ok(outcome) => Answer::outcome(&outcome, &d),
                Err(e) => failed(&e),
            },
            None => match pending.keep() {
                Ok(kept) => {
                    let what = match kept {
                        Some(n) => format!("{n} bytes kept to complete"),
                        None => "nothing kept (no Upload-Key)".to_owned(),
                    };
                    info!("{host}/{episode}: streamed upload ended with no digest; {what}");
                    Answer::digest_missing(kept)
                }
                Err(e) => failed(&e),
            },
        };
        self.answer(s, req, &answer, whole, put.keep_alive)
    }
}

/// What `receive` needs of a request with a known-length body (a `PUT`
/// or a `PATCH`): where it goes, its length, whether the client waits for
/// `100 Continue`, and the crash point halfway through its bytes.
struct BodyFacts<'a> {
    host: &'a str,
    episode: &'a str,
    length: u64,
    expect_continue: bool,
    halfway_point: &'static str,
}

impl<'a> BodyFacts<'a> {
    fn of_put(p: &'a Put) -> BodyFacts<'a> {
        BodyFacts {
            host: &p.host,
            episode: &p.episode,
            length: p.length,
            expect_continue: p.expect_continue,
            halfway_point: "recv.mid_body",
        }
    }

    fn of_append(a: &'a Append) -> BodyFacts<'a> {
        BodyFacts {
            host: &a.host,
            episode: &a.episode,
            length: a.length,
            expect_continue: a.expect_continue,
            halfway_point: "recv.mid_append",
        }
    }
}

/// In-process tests: `serve` on one end of a loopback socket, the test on
/// the other, with a real store in a temp dir; no binary, no TLS (the
/// request code is the same behind TLS, and tests/ covers TLS end to end).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Token;
    use crate::hashing::to_hex;
    use crate::receiver::slots::{self, Limits, Slots, Source};
    use sha2::{Digest, Sha256};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::path::PathBuf;

    const TOKEN: &str = "token-for-lab-01";

    struct Fixture {
        dir: PathBuf,
        config: ReceiverConfig,
        store: Store,
        stopping: AtomicBool,
        /// Two connections, one of them unauthenticated, at most.
        slots: Slots,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let dir =
                std::env::temp_dir().join(format!("cis490-conn-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("receiver.toml");
            let hash = to_hex(&Token::new(TOKEN).unwrap().hash().0);
            let toml = format!(
                "listen_plain = \"127.0.0.1:1\"\nstore_dir = \"{}\"\n[hosts]\n\"lab-01\" = \"{hash}\"\n",
                dir.join("store").display()
            );
            std::fs::write(&path, toml).unwrap();
            let config = ReceiverConfig::load(&path).unwrap();
            let (store, _) = Store::open(&config.store_dir).unwrap();
            Fixture {
                dir,
                config,
                store,
                stopping: AtomicBool::new(false),
                slots: Slots::new(Limits::new(2, 8)),
            }
        }

        /// Runs `client` against one connection served by `serve`.
        fn connect<T>(&self, client: impl FnOnce(TcpStream) -> T) -> T {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::scope(|sc| {
                sc.spawn(|| {
                    let (tcp, _) = listener.accept().unwrap();
                    let slots::Admitted::Yes { id, .. } = self.slots.admit(Source::Proxy, &tcp)
                    else {
                        panic!("no slot for the test's connection")
                    };
                    let ticket = Ticket::new(&self.slots, id);
                    let counters = Counters::default();
                    let env = Env {
                        config: &self.config,
                        store: &self.store,
                        stopping: &self.stopping,
                        counters: &counters,
                    };
                    serve(tcp, None, &env, &ticket);
                });
                let c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                client(c)
            })
        }

        fn stored(&self, episode: &str) -> Option<Vec<u8>> {
            std::fs::read(
                self.config
                    .store_dir
                    .join(format!("lab-01/{episode}.tar.zst")),
            )
            .ok()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn put_head(episode: &str, body: &[u8], extra: &str) -> String {
        let digest: [u8; 32] = Sha256::digest(body).into();
        format!(
            "PUT /v1/episodes/lab-01/{episode} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\nContent-Digest: {}\r\n{extra}\r\n",
            body.len(),
            crate::protocol::content_digest(&digest)
        )
    }

    const PING: &str =
        "POST /v1/ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer token-for-lab-01\r\n\r\n";

    fn read_to_close(c: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// One answer, by its Content-Length (on a connection that stays open).
    fn read_answer(c: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while !out.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).unwrap();
            out.push(byte[0]);
        }
        let head = String::from_utf8(out).unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap();
        head + &String::from_utf8(body).unwrap()
    }

    #[test]
    fn pipelined_requests_on_one_kept_alive_connection() {
        let f = Fixture::new("keepalive");
        let all = f.connect(|mut c| {
            let req = format!("{}abc{PING}", put_head("e", b"abc", ""));
            c.write_all(req.as_bytes()).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            read_to_close(&mut c)
        });
        let answers: Vec<&str> = all.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(answers.len(), 2, "{all}");
        assert!(answers[0].starts_with("201 Created\r\n"), "{all}");
        assert!(
            !answers[0].contains("Connection: close"),
            "kept alive: {all}"
        );
        assert!(
            answers[1].starts_with("200 OK\r\n") && answers[1].contains("\"host_id\":\"lab-01\""),
            "{all}"
        );
        assert_eq!(f.stored("e").unwrap(), b"abc");
    }

    #[test]
    fn continue_comes_before_the_body_and_only_when_awaited() {
        let f = Fixture::new("continue");
        let body = b"tarball";
        let answer = f.connect(|mut c| {
            let head = put_head("e", body, "Expect: 100-continue\r\nConnection: close\r\n");
            c.write_all(head.as_bytes()).unwrap();
            let mut interim = [0u8; answer::CONTINUE.len()];
            c.read_exact(&mut interim).unwrap();
            assert_eq!(&interim, answer::CONTINUE);
            c.write_all(body).unwrap();
            read_to_close(&mut c)
        });
        assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        // Bytes already after the head: the client stopped waiting; no 100.
        let answer = f.connect(|mut c| {
            let head = put_head("e2", body, "Expect: 100-continue\r\nConnection: close\r\n");
            c.write_all(format!("{head}tarball").as_bytes()).unwrap();
            read_to_close(&mut c)
        });
        assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
    }

    #[test]
    fn stored_bytes_are_confirmed_from_the_head_without_reading_the_body() {
        let f = Fixture::new("present");
        f.connect(|mut c| {
            c.write_all(
                format!("{}abc", put_head("e", b"abc", "Connection: close\r\n")).as_bytes(),
            )
            .unwrap();
            assert!(read_to_close(&mut c).starts_with("HTTP/1.1 201"));
        });
        let answer = f.connect(|mut c| {
            // Expect, and no body sent: the answer must come from the head.
            c.write_all(put_head("e", b"abc", "Expect: 100-continue\r\n").as_bytes())
                .unwrap();
            read_to_close(&mut c)
        });
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("\"status\":\"present\""), "{answer}");
        assert!(
            answer.contains("Connection: close"),
            "body unread: {answer}"
        );
        assert!(!answer.contains("100 Continue"), "{answer}");
    }

    #[test]
    fn an_authenticated_request_frees_the_unauthenticated_share() {
        let f = Fixture::new("ticket");
        // Limits::new(2, _): one unauthenticated connection at most, and
        // the proxy's connections are never evicted.
        f.connect(|mut c| {
            // Wait until the server thread holds the connection's slot.
            let t = Instant::now();
            while f.slots.count() == 0 {
                assert!(t.elapsed() < Duration::from_secs(5), "never admitted");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                matches!(f.slots.admit(Source::Proxy, &c), slots::Admitted::No(_)),
                "before a request, the connection under test holds the share"
            );
            c.write_all(PING.as_bytes()).unwrap();
            assert!(read_answer(&mut c).starts_with("HTTP/1.1 200 OK\r\n"));
            // The answer went out after the ticket was told.
            let slots::Admitted::Yes { id, .. } = f.slots.admit(Source::Proxy, &c) else {
                panic!("an authenticated connection still counted as unauthenticated")
            };
            f.slots.release(id);
        });
    }
}
