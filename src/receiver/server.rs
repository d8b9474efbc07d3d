//! Listeners, connection threads and shutdown. The server owns the
//! configuration, the store, each listener's TLS configuration and its own
//! counters; it hands each connection to `conn` with what it needs, and
//! never looks inside one.
//!
//! One thread accepts per listener; each connection gets its own thread up
//! to `max_connections`, under the fairness rules of `slots` (a cap per
//! source address, a bounded share for connections that have not
//! authenticated yet, eviction of the likeliest attacker rather than
//! refusal of a newcomer). A newcomer that cannot be admitted gets a 503
//! from one of a few extra short-lived threads (the shipper reads it as
//! "retry later"), or is closed at once when those are busy too or its
//! address is over its cap: a thread per connection makes idle connections
//! the cheapest attack, so the limits are hard. Refusals and evictions are
//! logged at most once per reason every 10 s, with counts.
//!
//! The accept loop never panics and never keeps a dead listener: a thread
//! that cannot be started (a pids limit: EAGAIN) closes that one
//! connection, and a loop that has failed to start any thread, or to
//! accept, for a while ends the process with an error line and a non-zero
//! exit, so systemd's `Restart=on-failure` brings a working one back.
//!
//! Shutdown: SIGTERM/SIGINT are blocked in every thread and awaited by the
//! main thread (see `signal`). It stops the accept loops, lets running
//! requests finish for a grace period, and returns. An upload cut off by the
//! grace period leaves its partial, for the client to resume.
//!
//! Under systemd the server says `READY=1` once every listener listens,
//! `STOPPING=1` when it starts draining, and refreshes a `STATUS=` line
//! (see `notify`).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;

use crate::config::ReceiverConfig;
use crate::log::{Level, Throttle};
use crate::protocol::Status;
use crate::receiver::conn::{self, Env};
use crate::receiver::report::{self, Counters};
use crate::receiver::slots::{Admitted, Limits, Refusal, Slots, Source, Ticket};
use crate::receiver::store::{Bounds, Store};
use crate::{error, exit, fault, info, notify, signal, warn};

/// Extra threads that only answer 503 when all connection slots are taken.
const BUSY_ANSWERERS: usize = 16;
/// How long shutdown waits for running requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// An accept loop gives up after failing this long (at least; see
/// `give_up_after`) without starting a single connection thread.
const GIVE_UP_MIN: Duration = Duration::from_secs(5);

/// Refused and evicted connections: an attacker causes them at will.
static REFUSALS: Throttle = Throttle::new(Duration::from_secs(10));

/// The receiver, ready to run: [`Server::new`], then [`Server::run`].
pub struct Server {
    config: ReceiverConfig,
    store: Store,
    /// For the `listen` listener; required when it is set.
    tls: Option<Arc<ServerConfig>>,
    /// The live connections and the fairness rules.
    slots: Slots,
    /// Busy answerers running.
    busy_answerers: AtomicUsize,
    /// Set at shutdown: accept loops and connections stop taking work.
    stopping: AtomicBool,
    /// Connections accepted since start, for the status line.
    accepted: AtomicU64,
    /// Answers by status, for the metrics.
    counters: Counters,
    started: SystemTime,
}

/// Why the server could not start (or go on).
#[derive(Debug)]
pub enum ServeError {
    /// SIGTERM/SIGINT could not be blocked (done before any thread starts).
    Signals(io::Error),
    /// `listen` is set without a TLS configuration: the TLS listener never
    /// serves plain HTTP.
    NoTls(SocketAddr),
    /// bind(2) failed: the address is taken or not ours. Exit 69.
    Bind(SocketAddr, io::Error),
    /// The bound listener's own address could not be read.
    LocalAddr(SocketAddr, io::Error),
    /// The listener's accept thread could not be started.
    AcceptThread(SocketAddr, io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Signals(e) => write!(f, "cannot block SIGTERM and SIGINT: {e}"),
            ServeError::NoTls(a) => write!(
                f,
                "listen = {a} needs cert_file and key_file: the TLS listener never serves plain HTTP"
            ),
            ServeError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
            ServeError::LocalAddr(a, e) => {
                write!(f, "cannot read the address of the listener on {a}: {e}")
            }
            ServeError::AcceptThread(a, e) => write!(
                f,
                "cannot start the accept thread for {a}: {e}; check the unit's TasksMax"
            ),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServeError::Signals(e)
            | ServeError::Bind(_, e)
            | ServeError::LocalAddr(_, e)
            | ServeError::AcceptThread(_, e) => Some(e),
            ServeError::NoTls(_) => None,
        }
    }
}

/// One bound listener, and whether it speaks TLS: `Some` always means a
/// handshake (the loopback plain listener has `None`).
struct Listener {
    socket: TcpListener,
    local: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
}

/// Counts a busy answerer; freed however the thread ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// `tls` serves the `listen` address (built from `cert_file`,
    /// `key_file` and `client_ca_file`); the plain listener never uses it.
    pub fn new(config: ReceiverConfig, store: Store, tls: Option<Arc<ServerConfig>>) -> Server {
        let slots = Slots::new(Limits::new(
            config.max_connections,
            config.max_connections_per_ip,
        ));
        let store = store.bound(Bounds {
            ttl: config.partial_ttl,
            per_host: config.max_partial_bytes_per_host,
        });
        Server {
            config,
            store,
            tls,
            slots,
            busy_answerers: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            counters: Counters::default(),
            started: SystemTime::now(),
        }
    }

    /// What the metrics report, now.
    fn facts(&self) -> report::Facts<'_> {
        report::Facts {
            config: &self.config,
            counters: &self.counters,
            open_connections: self.slots.count(),
            accepted: self.accepted.load(Ordering::Relaxed),
            started: self.started,
            s3: self.store.s3().map(|s3| s3.stats()),
        }
    }

    /// The status line systemd shows.
    fn status(&self) -> String {
        let (open, accepted) = (self.slots.count(), self.accepted.load(Ordering::Relaxed));
        let stored = self.counters.count(Status::Stored);
        format!(
            "{open} connection(s) open, {accepted} accepted, {stored} upload(s) stored since start"
        )
    }

    /// What a connection needs from the server.
    fn env(&self) -> Env<'_> {
        Env {
            config: &self.config,
            store: &self.store,
            stopping: &self.stopping,
            counters: &self.counters,
        }
    }

    /// Binds the listeners, serves until SIGTERM/SIGINT, then lets running
    /// requests finish for a grace period.
    pub fn run(self) -> Result<(), ServeError> {
        signal::block_termination().map_err(ServeError::Signals)?;
        // Partials left by an earlier run: bounded before anything is
        // served (each deletion is logged).
        self.store.sweep(SystemTime::now());
        let mut listeners = Vec::new();
        if let Some(addr) = self.config.listen {
            let tls = self.tls.clone().ok_or(ServeError::NoTls(addr))?;
            listeners.push(bind(addr, Some(tls))?);
        }
        if let Some(addr) = self.config.listen_plain {
            listeners.push(bind(addr, None)?);
        }
        let server = Arc::new(self);
        let mut wake = Vec::new();
        let mut accepters = Vec::new();
        for listener in listeners {
            let local = listener.local;
            // The readiness signal tests and operators wait for.
            let scheme = if listener.tls.is_some() {
                "https"
            } else {
                "http"
            };
            info!("listening on {scheme}://{local}");
            wake.push(local);
            let server = Arc::clone(&server);
            let accepter = std::thread::Builder::new()
                .spawn(move || {
                    // Belt and braces: should the loop ever panic, the
                    // process must not live on with a closed listener.
                    let run = std::panic::AssertUnwindSafe(|| accept_loop(listener, server));
                    if std::panic::catch_unwind(run).is_err() {
                        fatal(&format!("the accept loop on {local} panicked"));
                    }
                })
                .map_err(|e| ServeError::AcceptThread(local, e))?;
            accepters.push(accepter);
        }
        // systemd (Type=notify): ready now that every listener listens.
        notify::ready(&server.status());
        report::check_certificate(&server.config);
        report::write_metrics(&server.facts());
        let watched = Arc::clone(&server);
        // Housekeeping: partial uploads kept within partial_ttl_hours and
        // max_partial_bytes_per_host, the metrics file, systemd's status
        // line, the daily certificate check. A thread that cannot start
        // costs only these (and partials are still bounded when an upload
        // begins).
        let _ = std::thread::Builder::new()
            .name("housekeeping".to_owned())
            .spawn(move || {
                let mut daily = report::Daily::new();
                loop {
                    std::thread::sleep(report::REFRESH_EVERY);
                    if watched.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    watched.store.sweep(SystemTime::now());
                    notify::notify(&notify::status(&watched.status()));
                    report::write_metrics(&watched.facts());
                    if daily.due() {
                        report::check_certificate(&watched.config);
                    }
                }
            });
        let sig = signal::wait_termination();
        info!(
            "{sig} received: no new connections; waiting up to {}s for running requests",
            SHUTDOWN_GRACE.as_secs()
        );
        server.stopping.store(true, Ordering::SeqCst);
        notify::stopping(&format!("draining {} connection(s)", server.slots.count()));
        for addr in wake {
            // accept() has no timeout; a connection of our own wakes it.
            let _ = TcpStream::connect_timeout(&wakeup_addr(addr), Duration::from_secs(1));
        }
        for a in accepters {
            let _ = a.join();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while server.slots.count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = server.slots.count();
        if left > 0 {
            warn!(
                "stopping with {left} connection(s) still open; their unfinished uploads are kept to resume"
            );
        }
        report::write_metrics(&server.facts());
        info!("stopped");
        Ok(())
    }
}

fn bind(addr: SocketAddr, tls: Option<Arc<ServerConfig>>) -> Result<Listener, ServeError> {
    let socket = TcpListener::bind(addr).map_err(|e| ServeError::Bind(addr, e))?;
    let local = socket
        .local_addr()
        .map_err(|e| ServeError::LocalAddr(addr, e))?;
    Ok(Listener { socket, local, tls })
}

/// Where to connect to reach a listener bound to a wildcard address.
fn wakeup_addr(mut a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// Ends the process with an error line and a non-zero exit, for systemd's
/// `Restart=on-failure`. Called from an accept thread, while the main
/// thread is parked in sigwait(2) and cannot be woken without a signal.
/// Nothing needs unwinding: an upload cut off here leaves its partial (or
/// a temp, removed at the next start), exactly as after a kill -9.
fn fatal(why: &str) -> ! {
    error!("{why}; exiting so that systemd restarts the receiver");
    std::process::exit(i32::from(exit::SOFTWARE))
}

/// Consecutive failures of an accept loop (accept(2) itself, or starting a
/// thread): tells a passing shortage from a loop that cannot go on.
#[derive(Debug, Default)]
struct Failures {
    since: Option<Instant>,
    count: u64,
}

impl Failures {
    /// Records a failure at `now`; true once the loop should give up: it
    /// has failed at least three times in a row, over at least `give_up`.
    fn fail(&mut self, now: Instant, give_up: Duration) -> bool {
        let since = *self.since.get_or_insert(now);
        self.count += 1;
        self.count >= 3 && now.saturating_duration_since(since) >= give_up
    }

    /// A connection got its thread: whatever was short is not any more.
    fn ok(&mut self) {
        *self = Failures::default();
    }
}

/// How long an accept loop may fail before it gives up: by the head
/// deadline, every unauthenticated connection that held a thread when the
/// trouble started has ended and freed it, so a shortage that outlasts it
/// is not our own passing load but a limit that will not lift (TasksMax,
/// RLIMIT_NPROC or RLIMIT_NOFILE below what `max_connections` needs).
fn give_up_after(config: &ReceiverConfig) -> Duration {
    config.head_timeout.max(GIVE_UP_MIN)
}

/// Starts a thread, or says why not (without panicking, unlike
/// `std::thread::spawn`). `recv.spawn` lets tests make it fail: CI runs as
/// root, where RLIMIT_NPROC is not enforced.
fn spawn(f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    fault::io("recv.spawn")?;
    std::thread::Builder::new().spawn(f).map(drop)
}

fn accept_loop(listener: Listener, server: Arc<Server>) {
    let local = listener.local;
    let give_up = give_up_after(&server.config);
    let mut failures = Failures::default();
    let failed = |e: &io::Error, what: &str, failures: &mut Failures| {
        if failures.fail(Instant::now(), give_up) {
            fatal(&format!(
                "listener {local}: {what} has failed {} times in a row over {}s (last: {e}); \
                 check the unit's TasksMax and LimitNOFILE against max_connections ({}) \
                 + {BUSY_ANSWERERS} threads, or lower max_connections",
                failures.count,
                give_up.as_secs(),
                server.config.max_connections
            ));
        }
    };
    for stream in listener.socket.incoming() {
        if server.stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            // The peer gave up before we accepted: about that connection,
            // not the listener.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                REFUSALS.log(Level::Warn, "accept", || format!("accept failed: {e}"));
                failed(&e, "accepting connections", &mut failures);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        server.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        let source = match (&listener.tls, peer) {
            (Some(_), Some(p)) => Source::tls(p.ip()),
            _ => Source::Proxy,
        };
        let id = match server.slots.admit(source, &stream) {
            Admitted::Yes { id, evicted } => {
                if let Some(from) = evicted {
                    log_eviction(&server.slots, from, peer);
                }
                id
            }
            Admitted::No(Refusal::PerAddress) => {
                let cap = server.slots.limits().per_ip;
                REFUSALS.log(Level::Warn, "per-address", || {
                    format!(
                        "refused a connection from {}: that address already holds \
                         max_connections_per_ip ({cap}) connections; closed",
                        describe(peer)
                    )
                });
                continue;
            }
            Admitted::No(Refusal::Busy) => {
                match answer_busy(&server, stream, &listener.tls, peer) {
                    Ok(()) => failures.ok(),
                    Err(e) => failed(&e, "starting a thread", &mut failures),
                }
                continue;
            }
        };
        let for_thread = Arc::clone(&server);
        let tls = listener.tls.clone();
        let spawned = spawn(move || {
            let ticket = Ticket::new(&for_thread.slots, id);
            conn::serve(stream, tls.as_ref(), &for_thread.env(), &ticket);
        });
        match spawned {
            Ok(()) => failures.ok(),
            Err(e) => {
                // The closure, and with it the stream, is gone (closed);
                // free the slot. The server goes on: threads end all the
                // time, and the next connection may get one.
                server.slots.release(id);
                let n = failures.count + 1;
                REFUSALS.log(Level::Error, "no thread", || {
                    format!(
                        "cannot start a thread for the connection from {}: {e}; closed it \
                         ({n} in a row)",
                        describe(peer)
                    )
                });
                failed(&e, "starting a thread", &mut failures);
            }
        }
    }
}

fn describe(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_owned(), |p| p.to_string())
}

fn log_eviction(slots: &Slots, from: Source, newcomer: Option<SocketAddr>) {
    let limits = slots.limits();
    let from = match from {
        Source::Addr(ip) => ip.to_string(),
        Source::Proxy => "the proxy".to_owned(),
    };
    REFUSALS.log(Level::Warn, "evicted", || {
        format!(
            "closed the oldest unauthenticated connection from {from} to admit {}: \
             connections that have not authenticated may hold {} of max_connections ({})",
            describe(newcomer),
            limits.unauthenticated,
            limits.max
        )
    });
}

/// No slot may be given: 503 from a short-lived thread, or a plain close
/// when all of those are busy too. Err: the thread could not be started
/// (the connection is closed).
fn answer_busy(
    server: &Arc<Server>,
    stream: TcpStream,
    tls: &Option<Arc<ServerConfig>>,
    peer: Option<SocketAddr>,
) -> io::Result<()> {
    let max = server.config.max_connections;
    if server.busy_answerers.fetch_add(1, Ordering::SeqCst) < BUSY_ANSWERERS {
        let for_thread = Arc::clone(server);
        let tls = tls.clone();
        let spawned = spawn(move || {
            let _slot = Slot(&for_thread.busy_answerers);
            for_thread.counters.answered(Status::Busy);
            conn::answer_busy(stream, tls.as_ref(), for_thread.config.head_timeout);
        });
        if let Err(e) = spawned {
            server.busy_answerers.fetch_sub(1, Ordering::SeqCst);
            REFUSALS.log(Level::Error, "no thread", || {
                format!(
                    "cannot start a thread to answer 503 to {}: {e}; closed the connection",
                    describe(peer)
                )
            });
            return Err(e);
        }
        REFUSALS.log(Level::Warn, "busy", || {
            format!(
                "answering 503 to {}: all max_connections ({max}) slots are taken",
                describe(peer)
            )
        });
    } else {
        server.busy_answerers.fetch_sub(1, Ordering::SeqCst);
        REFUSALS.log(Level::Warn, "busy, unanswered", || {
            format!(
                "closed a connection from {} without an answer: all max_connections ({max}) \
                 slots and all {BUSY_ANSWERERS} busy answerers are taken",
                describe(peer)
            )
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_give_up_only_when_persistent() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let give_up = s(5);
        let mut f = Failures::default();
        // One failure, even long after: a passing shortage.
        assert!(!f.fail(t0, give_up));
        assert!(!f.fail(t0 + s(1), give_up));
        assert!(!f.fail(t0 + s(4), give_up), "not yet 5 s");
        assert!(f.fail(t0 + s(5), give_up), "3 failures over 5 s");
        // A success in between starts over.
        let mut f = Failures::default();
        assert!(!f.fail(t0, give_up));
        assert!(!f.fail(t0 + s(3), give_up));
        f.ok();
        assert!(!f.fail(t0 + s(6), give_up));
        assert!(!f.fail(t0 + s(7), give_up));
        assert!(
            !f.fail(t0 + s(10), give_up),
            "only 4 s since the last success"
        );
        assert!(f.fail(t0 + s(11), give_up));
        // Many failures in a burst are not enough without the time.
        let mut f = Failures::default();
        for i in 0..100 {
            assert!(!f.fail(t0 + Duration::from_millis(i), give_up));
        }
    }
}
