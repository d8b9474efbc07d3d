//! Listeners, connection threads and shutdown.
//!
//! One thread accepts per listener; each connection gets its own thread up
//! to `max_connections`. Beyond that, a small number of extra short-lived
//! threads answer 503 (the shipper reads it as "retry later") and anything
//! past those is closed at once: a thread per connection makes idle
//! connections the cheapest attack, so the limit is hard.
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
use crate::receiver::conn;
use crate::receiver::store::Store;
use crate::{info, signal, warn};

/// Extra threads that only answer 503 when all connection slots are taken.
const BUSY_ANSWERERS: usize = 16;
/// How long shutdown waits for running requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

pub struct Shared {
    pub config: ReceiverConfig,
    pub store: Store,
    pub tls: Option<Arc<ServerConfig>>,
    pub active: AtomicUsize,
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

/// Counts a live connection; the slot is freed however the thread ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
    while shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = shared.active.load(Ordering::SeqCst);
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
        let max = shared.config.max_connections;
        if shared.active.fetch_add(1, Ordering::SeqCst) >= max {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            if shared.busy_answerers.fetch_add(1, Ordering::SeqCst) < BUSY_ANSWERERS {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _slot = Slot(&shared.busy_answerers);
                    conn::answer_busy(stream, tls, &shared);
                });
            } else {
                shared.busy_answerers.fetch_sub(1, Ordering::SeqCst);
                drop(stream);
            }
            continue;
        }
        let for_thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().spawn(move || {
            let _slot = Slot(&for_thread.active);
            conn::serve(stream, tls, &for_thread);
        });
        if let Err(e) = spawned {
            // The closure, and with it the stream, is gone; free the slot.
            shared.active.fetch_sub(1, Ordering::SeqCst);
            warn!("cannot start a connection thread: {e}");
        }
    }
}
