//! One connection's byte stream: a TCP socket under its deadline
//! (`deadline`), wrapped in TLS when it came through the TLS listener.
//! Owns the handshake, the phases' deadlines as the connection arms them,
//! writing an answer's bytes, and the two ways to end (a clean finish, a
//! lingering close).
//!
//! Whether a listener speaks TLS is one value, its
//! `Option<Arc<ServerConfig>>`: `Some` always means a handshake, so no flag
//! can disagree with a configuration and serve plain HTTP by mistake. What
//! is said over the stream is `conn`'s business.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::receiver::body::Deadlined;
use crate::receiver::deadline::DeadlineStream;

/// Lingering close: how long and how much to read and discard.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 << 20;

/// A TCP stream under its deadline, wrapped in TLS or not, and how long an
/// answer may take to write.
pub struct Stream {
    io: Io,
    answer_timeout: Duration,
}

enum Io {
    Plain(DeadlineStream),
    Tls(Box<StreamOwned<ServerConnection, DeadlineStream>>),
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The deadline armed on the socket passed first.
    TimedOut,
    /// rustls would not start a session with this configuration.
    Setup(rustls::Error),
    /// The peer or the network ended it: not TLS, a certificate refused,
    /// a reset.
    Failed(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::TimedOut => f.write_str("TLS handshake not finished in time"),
            HandshakeError::Setup(e) => write!(f, "cannot start a TLS session: {e}"),
            HandshakeError::Failed(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::TimedOut => None,
            HandshakeError::Setup(e) => Some(e),
            HandshakeError::Failed(e) => Some(e),
        }
    }
}

/// `deadline` turns every socket timeout into `TimedOut`.
pub fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
}

/// Starts a connection: the TLS handshake when `tls` is set, bounded as a
/// whole by the deadline armed on `sock` (rustls's reads inside
/// `complete_io` go through it); nothing for a plain listener.
pub fn handshake(
    mut sock: DeadlineStream,
    tls: Option<&Arc<ServerConfig>>,
    answer_timeout: Duration,
) -> Result<Stream, HandshakeError> {
    let Some(config) = tls else {
        return Ok(Stream {
            io: Io::Plain(sock),
            answer_timeout,
        });
    };
    let mut conn = ServerConnection::new(Arc::clone(config)).map_err(HandshakeError::Setup)?;
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => return Err(HandshakeError::TimedOut),
            Err(e) => {
                // Flush any alert rustls queued (e.g. certificate_required),
                // so the client learns why.
                let _ = conn.write_tls(&mut sock);
                return Err(HandshakeError::Failed(e));
            }
        }
    }
    Ok(Stream {
        io: Io::Tls(Box::new(StreamOwned::new(conn, sock))),
        answer_timeout,
    })
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

    /// Starts a phase: every socket read and write from now on ends by
    /// `until`, and none blocks longer than `per_op`.
    pub fn arm(&mut self, until: Instant, per_op: Duration) {
        self.sock_mut().arm(until, per_op);
    }

    /// The certificate the client presented in the handshake, if any.
    pub fn peer_cert(&self) -> Option<CertificateDer<'static>> {
        match &self.io {
            Io::Plain(_) => None,
            Io::Tls(s) => s
                .conn
                .peer_certificates()?
                .first()
                .map(|c| c.clone().into_owned()),
        }
    }

    /// Writes the bytes of an answer (or `100 Continue`) within the answer
    /// timeout (`body_timeout_s`).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let t = self.answer_timeout;
        self.arm(Instant::now() + t, t);
        self.write_all(bytes)?;
        self.flush()
    }

    /// Ends the conversation: TLS close_notify, then a TCP half-close.
    pub fn finish(&mut self) {
        if let Io::Tls(s) = &mut self.io {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.sock().tcp().shutdown(Shutdown::Write);
    }

    /// Half-close, then read and discard for a bounded time, so a client
    /// still writing its body reads our answer instead of a reset. The
    /// discarded bytes are read below TLS: nobody needs them decrypted.
    pub fn linger(&mut self) {
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

impl Deadlined for Stream {
    fn expired(&self) -> bool {
        self.sock().expired()
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
