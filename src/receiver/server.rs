//! Listeners, connection threads and shutdown.
//!
//! One thread accepts per listener; each connection gets its own thread up
//! to `max_connections`, under the fairness rules of `admission` (a cap per
//! source address, a bounded share for connections that have not
//! authenticated yet, eviction of the likeliest attacker rather than
//! refusal of a newcomer). A newcomer that cannot be admitted gets a 503
//! from one of a few extra short-lived threads (the shipper reads it as
//! "retry later"), or is closed at once when those are busy too or its
//! address is over its cap: a thread per connection makes idle connections
//! the cheapest attack, so the limits are hard. Refusals and evictions are
//! logged at most once per reason every 10 s, with counts.
//!
//! Shutdown: SIGTERM/SIGINT are blocked in every thread and awaited by the
//! main thread (see `signal`). It stops the accept loops, lets running
//! requests finish for a grace period, and returns. An upload cut off by the
//! grace period leaves only a temp, removed at the next start.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::config::ReceiverConfig;
use crate::log::{Level, Throttle};
use crate::receiver::admission::{Admission, Admitted, Refusal, Source};
use crate::receiver::conn;
use crate::receiver::store::Store;
use crate::{info, signal, warn};

/// Extra threads that only answer 503 when all connection slots are taken.
const BUSY_ANSWERERS: usize = 16;
/// How long shutdown waits for running requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Refused and evicted connections: an attacker causes them at will.
static REFUSALS: Throttle = Throttle::new(Duration::from_secs(10));

pub struct Shared {
    pub config: ReceiverConfig,
    pub store: Store,
    pub tls: Option<Arc<ServerConfig>>,
    /// The live connections and the fairness rules.
    pub admission: Admission,
    pub busy_answerers: AtomicUsize,
    pub shutting_down: AtomicBool,
}

#[derive(Debug)]
pub enum ServeError {
    Setup(String),
    Bind(SocketAddr, io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Setup(m) => f.write_str(m),
            ServeError::Bind(a, e) => write!(f, "cannot listen on {a}: {e}"),
        }
    }
}

/// Counts a busy answerer; freed however the thread ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An admitted connection's place in `Admission`; given back however the
/// thread ends.
pub struct Ticket<'a> {
    admission: &'a Admission,
    id: u64,
}

impl Ticket<'_> {
    /// A request on this connection passed the token and certificate check.
    pub fn authenticated(&self) {
        self.admission.authenticated(self.id);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.admission.release(self.id);
    }
}

pub fn serve(shared: Shared) -> Result<(), ServeError> {
    signal::block_termination()
        .map_err(|e| ServeError::Setup(format!("cannot block signals: {e}")))?;
    let shared = Arc::new(shared);
    let mut listeners = Vec::new();
    if let Some(addr) = shared.config.listen {
        listeners.push((bind(addr)?, true));
    }
    if let Some(addr) = shared.config.listen_plain {
        listeners.push((bind(addr)?, false));
    }
    let mut wake = Vec::new();
    let mut accepters = Vec::new();
    for (listener, tls) in listeners {
        let local = listener
            .local_addr()
            .map_err(|e| ServeError::Setup(e.to_string()))?;
        // The readiness signal tests and operators wait for.
        info!(
            "listening on {}://{local}",
            if tls { "https" } else { "http" }
        );
        wake.push(local);
        let shared = Arc::clone(&shared);
        accepters.push(std::thread::spawn(move || {
            accept_loop(listener, tls, shared)
        }));
    }
    let sig = signal::wait_termination();
    info!(
        "{sig} received: no new connections; waiting up to {}s for running requests",
        SHUTDOWN_GRACE.as_secs()
    );
    shared.shutting_down.store(true, Ordering::SeqCst);
    for addr in wake {
        // accept() has no timeout; a connection of our own wakes it.
        let _ = TcpStream::connect_timeout(&wakeup_addr(addr), Duration::from_secs(1));
    }
    for a in accepters {
        let _ = a.join();
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while shared.admission.count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = shared.admission.count();
    if left > 0 {
        warn!("stopping with {left} connection(s) still open; unfinished uploads are discarded");
    }
    info!("stopped");
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).map_err(|e| ServeError::Bind(addr, e))
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

fn accept_loop(listener: TcpListener, tls: bool, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.shutting_down.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().ok();
        let source = match (tls, peer) {
            (true, Some(p)) => Source::tls(p.ip()),
            _ => Source::Proxy,
        };
        let id = match shared.admission.admit(source, &stream) {
            Admitted::Yes { id, evicted } => {
                if let Some(from) = evicted {
                    log_eviction(&shared, from, peer);
                }
                id
            }
            Admitted::No(Refusal::PerAddress) => {
                let cap = shared.admission.limits().per_ip;
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
                answer_busy(&shared, stream, tls, peer);
                continue;
            }
        };
        let for_thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().spawn(move || {
            let ticket = Ticket {
                admission: &for_thread.admission,
                id,
            };
            conn::serve(stream, tls, &for_thread, &ticket);
        });
        if let Err(e) = spawned {
            // The closure, and with it the stream, is gone; free the slot.
            shared.admission.release(id);
            warn!("cannot start a connection thread: {e}");
        }
    }
}

fn describe(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_owned(), |p| p.to_string())
}

fn log_eviction(shared: &Shared, from: Source, newcomer: Option<SocketAddr>) {
    let limits = shared.admission.limits();
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
/// when all of those are busy too.
fn answer_busy(shared: &Arc<Shared>, stream: TcpStream, tls: bool, peer: Option<SocketAddr>) {
    let max = shared.config.max_connections;
    if shared.busy_answerers.fetch_add(1, Ordering::SeqCst) < BUSY_ANSWERERS {
        REFUSALS.log(Level::Warn, "busy", || {
            format!(
                "answered 503 to {}: all max_connections ({max}) slots are taken",
                describe(peer)
            )
        });
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            let _slot = Slot(&shared.busy_answerers);
            conn::answer_busy(stream, tls, &shared);
        });
    } else {
        shared.busy_answerers.fetch_sub(1, Ordering::SeqCst);
        REFUSALS.log(Level::Warn, "busy, unanswered", || {
            format!(
                "closed a connection from {} without an answer: all max_connections ({max}) \
                 slots and all {BUSY_ANSWERERS} busy answerers are taken",
                describe(peer)
            )
        });
    }
}
