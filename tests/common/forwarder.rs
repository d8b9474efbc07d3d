//! A TCP forwarder on 127.0.0.1 between the shipper and the receiver, for
//! the faults a lab's link has: it counts the bytes that go through, and
//! can cut a connection after N bytes from the client, or stall it. Plain
//! std threads; TLS passes through untouched (it forwards bytes).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to do to the client's bytes, for every connection from now on.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Close both sides once this many bytes came from the client (summed
    /// over every connection since the fault was set).
    CutAfter(u64),
    /// Forward this many bytes from the client, then nothing more either
    /// way, holding both connections open (a link that went silent), until
    /// the fault is changed: then close them (the link is back and the
    /// peers learn the connection is gone).
    StallAfter(u64),
}

#[allow(dead_code)]
pub struct Forwarder {
    pub addr: SocketAddr,
    /// Client-to-server bytes forwarded so far.
    up: Arc<AtomicU64>,
    fault: Arc<std::sync::Mutex<(Fault, u64)>>,
    stop: Arc<AtomicBool>,
}

#[allow(dead_code)]
impl Forwarder {
    /// Listens on 127.0.0.1:0 and forwards every connection to `to`.
    pub fn start(to: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicU64::new(0));
        let fault = Arc::new(std::sync::Mutex::new((Fault::None, 0u64)));
        let stop = Arc::new(AtomicBool::new(false));
        let (up2, fault2, stop2) = (Arc::clone(&up), Arc::clone(&fault), Arc::clone(&stop));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let (up, fault) = (Arc::clone(&up2), Arc::clone(&fault2));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                // Server to client: as is.
                std::thread::spawn(move || pipe(s2, c2, None));
                // Client to server: counted, and cut when the fault says.
                std::thread::spawn(move || pipe(client, server, Some((up, fault))));
            }
        });
        Forwarder {
            addr,
            up,
            fault,
            stop,
        }
    }

    /// Client-to-server bytes forwarded so far.
    pub fn up_bytes(&self) -> u64 {
        self.up.load(Ordering::SeqCst)
    }

    /// Sets the fault for what follows (counting from now).
    pub fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = (f, self.up_bytes());
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

#[allow(dead_code)]
type Counted = (Arc<AtomicU64>, Arc<std::sync::Mutex<(Fault, u64)>>);

#[allow(dead_code)]
fn pipe(mut from: TcpStream, mut to: TcpStream, counted: Option<Counted>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut n = n;
        let mut cut = None;
        if let Some((up, fault)) = &counted {
            let (f, base) = *fault.lock().unwrap();
            if let Fault::CutAfter(limit) | Fault::StallAfter(limit) = f {
                let so_far = up.load(Ordering::SeqCst) - base;
                if so_far + n as u64 >= limit {
                    n = limit.saturating_sub(so_far) as usize;
                    cut = Some(f);
                }
            }
            up.fetch_add(n as u64, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(f) = cut {
            if let (Fault::StallAfter(_), Some((_, fault))) = (f, &counted) {
                // Silent: the client's writes fill the socket buffers
                // and block; the server hears nothing more.
                while matches!(fault.lock().unwrap().0, Fault::StallAfter(_)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
