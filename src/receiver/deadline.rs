//! A TCP stream whose every read and write is bounded by a deadline.
//!
//! A socket timeout (`SO_RCVTIMEO`) bounds one `read(2)`, not a phase.
//! rustls's `complete_io` (the handshake) and `StreamOwned::read` (one TLS
//! record) loop over as many socket reads as they need, so a timeout set
//! once before them lets a peer that sends one byte just inside it hold the
//! connection for as long as it likes: a 517-byte ClientHello at one byte
//! per 8 s lasts 69 minutes, a request head dribbled inside one TLS record
//! outlives any head deadline. This wrapper sits *under* rustls (it is the
//! `T` of `StreamOwned<ServerConnection, T>`): before every read and every
//! write it re-arms the socket timeout to what is left of the current
//! deadline, capped by a per-operation limit, and once the deadline has
//! passed it fails without touching the socket.
//!
//! It is also the one place where a socket timeout's `WouldBlock` (EAGAIN
//! from `SO_RCVTIMEO`/`SO_SNDTIMEO`) becomes `TimedOut`, so callers test one
//! kind.
//!
//! Which deadline applies (handshake and first head, idle keep-alive, body,
//! answer, lingering close) is the connection's business (`conn`); this
//! module only enforces whichever one is armed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub struct DeadlineStream {
    tcp: TcpStream,
    until: Instant,
    per_op: Duration,
}

impl DeadlineStream {
    /// Wraps `tcp`; every read and write must end by `until`, and none may
    /// block longer than `per_op`.
    pub fn new(tcp: TcpStream, until: Instant, per_op: Duration) -> DeadlineStream {
        DeadlineStream { tcp, until, per_op }
    }

    /// Starts a new phase with its own deadline.
    pub fn arm(&mut self, until: Instant, per_op: Duration) {
        self.until = until;
        self.per_op = per_op;
    }

    /// Whether the armed deadline has passed (to tell "too slow overall"
    /// from "stalled" after a `TimedOut`).
    pub fn expired(&self) -> bool {
        self.left().is_err()
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The timeout for the next operation: what is left of the deadline,
    /// at most `per_op`. Never zero: a zero socket timeout means "block
    /// forever".
    fn left(&self) -> io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
        } else {
            Ok(left.min(self.per_op).max(Duration::from_millis(1)))
        }
    }
}

/// `SO_RCVTIMEO`/`SO_SNDTIMEO` expiry shows up as EAGAIN (`WouldBlock`) on
/// Linux; everything above this module sees `TimedOut` only.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "socket timed out")
    } else {
        e
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = self.left()?;
        self.tcp.set_read_timeout(Some(t))?;
        self.tcp.read(buf).map_err(timed_out)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = self.left()?;
        self.tcp.set_write_timeout(Some(t))?;
        self.tcp.write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn a_trickle_cannot_outlive_the_deadline() {
        let (mut client, server) = pair();
        let start = Instant::now();
        let mut s = DeadlineStream::new(
            server,
            start + Duration::from_millis(300),
            Duration::from_secs(10),
        );
        let mut got = 0;
        let err = loop {
            // Each byte arrives well inside any per-read timeout.
            client.write_all(b"x").unwrap();
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(got >= 2, "{got}");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(s.expired());
    }

    #[test]
    fn silence_times_out_as_timed_out_not_would_block() {
        let (_client, server) = pair();
        let mut s = DeadlineStream::new(
            server,
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(100),
        );
        let err = s.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(!s.expired(), "only the per-read limit passed");
        s.arm(Instant::now(), Duration::from_secs(1));
        let err = s.write(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
