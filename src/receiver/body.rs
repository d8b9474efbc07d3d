//! A request body as a `Read`: exactly `Content-Length` bytes, first those
//! that arrived with the head, then the connection's; and, when it ends
//! early, which way it failed ([`Cut`]). Also the rule for `100 Continue`.
//!
//! The deadlines themselves are armed on the socket (`deadline`, by
//! `conn`); this adapter only tells, after a `TimedOut`, whether the whole
//! body deadline had passed (too slow) or one read waited its
//! `body_timeout_s` for nothing (stalled). Hashing is not done here: the
//! store's `HashingWriter` hashes exactly the bytes that reach the temp
//! file, so the digest that is compared is that of what would be published.

use std::io::{self, Read, Write};

use crate::fault;

/// A connection that knows whether the deadline armed on it has passed.
pub trait Deadlined: Read {
    fn expired(&self) -> bool;
}

/// Why a body ended before `Content-Length` bytes.
#[derive(Debug)]
pub enum Cut {
    /// The client closed the connection (EOF): nothing to answer.
    Closed,
    /// One read waited `body_timeout_s` and got nothing: 408.
    Stalled,
    /// Bytes kept coming, but too slowly for the minimum rate: the whole
    /// body deadline passed. 408.
    TooSlow,
    /// The connection failed (reset, a TLS error): nothing to answer.
    Failed(io::Error),
}

/// A body being read. Every read asks for at most what is left of it, so
/// pipelined bytes after it stay unread for the next request.
pub struct BodyReader<'a, R> {
    /// Bytes read with the head and not yet consumed (body first, then
    /// possibly a pipelined request); consumed from the front.
    early: &'a mut Vec<u8>,
    conn: &'a mut R,
    length: u64,
    received: u64,
    halfway: bool,
    /// The crash point hit halfway through the bytes from the wire.
    halfway_point: &'static str,
    cut: Option<Cut>,
}

impl<'a, R: Deadlined> BodyReader<'a, R> {
    pub fn new(early: &'a mut Vec<u8>, conn: &'a mut R, length: u64) -> BodyReader<'a, R> {
        BodyReader {
            early,
            conn,
            length,
            received: 0,
            halfway: false,
            halfway_point: "recv.mid_body",
            cut: None,
        }
    }

    /// Names the crash point hit halfway (`recv.mid_body` unless told):
    /// an append's is `recv.mid_append`, so a test can kill the receiver
    /// inside a `PATCH` without hitting the `PUT` before it.
    pub fn halfway_point(mut self, name: &'static str) -> BodyReader<'a, R> {
        self.halfway_point = name;
        self
    }

    /// Body bytes handed out so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    /// Why the last `Read::read` failed, once it has.
    pub fn cut(&self) -> Option<&Cut> {
        self.cut.as_ref()
    }

    /// `Read::read` with the failure typed. `Ok(0)` only once the whole
    /// body has been handed out (or `buf` is empty).
    pub fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, Cut> {
        let left = self.length - self.received;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        if !self.early.is_empty() {
            let n = want.min(self.early.len());
            buf[..n].copy_from_slice(&self.early[..n]);
            self.early.drain(..n);
            self.received += n as u64;
            return Ok(n);
        }
        loop {
            // Asked before the read: a read that fails because the whole
            // deadline had already passed means bytes kept coming, but
            // too slowly; otherwise the read itself waited for nothing.
            let too_slow = self.conn.expired();
            match self.conn.read(&mut buf[..want]) {
                Ok(0) => return Err(Cut::Closed),
                Ok(n) => {
                    self.received += n as u64;
                    // Halfway through the bytes that come from the wire
                    // (a body that came whole with its head never waits).
                    if !self.halfway && self.length - self.received <= self.length / 2 {
                        self.halfway = true;
                        fault::point(self.halfway_point);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(if too_slow { Cut::TooSlow } else { Cut::Stalled })
                }
                Err(e) => return Err(Cut::Failed(e)),
            }
        }
    }
}

impl<R: Deadlined> Read for BodyReader<'_, R> {
    /// Fails with `UnexpectedEof` (closed early) or `TimedOut` (stalled,
    /// too slow), or the connection's own error; [`BodyReader::cut`] says
    /// which.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_body(buf).map_err(|cut| {
            let e = match &cut {
                Cut::Closed => {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "client closed mid-body")
                }
                Cut::Stalled => io::Error::new(io::ErrorKind::TimedOut, "body stalled"),
                Cut::TooSlow => io::Error::new(io::ErrorKind::TimedOut, "body too slow"),
                Cut::Failed(e) => io::Error::new(e.kind(), e.to_string()),
            };
            self.cut = Some(cut);
            e
        })
    }
}

/// How a copy of the body ended early.
#[derive(Debug)]
pub enum CopyError {
    /// Reading from the connection.
    Read(Cut),
    /// Writing into the sink (the store's temp file).
    Write(io::Error),
}

/// Copies the whole body into `sink`, `crate::IO_CHUNK` at a time; stops
/// at the first failure of either side.
pub fn copy<R: Deadlined, W: Write>(
    body: &mut BodyReader<'_, R>,
    sink: &mut W,
) -> Result<(), CopyError> {
    let mut chunk = vec![0u8; crate::IO_CHUNK];
    loop {
        let n = match body.read_body(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(cut) => return Err(CopyError::Read(cut)),
        };
        sink.write_all(&chunk[..n]).map_err(CopyError::Write)?;
    }
}

/// Whether to send `100 Continue` before reading the body: when the client
/// asked for it and has not started sending the body anyway (bytes after
/// the head mean it stopped waiting, and an interim answer then would only
/// arrive in the middle of its upload).
pub fn sends_continue(expect_continue: bool, early: &[u8]) -> bool {
    expect_continue && early.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Steps = Vec<io::Result<Vec<u8>>>;

    /// A scripted connection: each step is what one read returns.
    struct Script {
        steps: Steps,
        expired_from: usize,
        reads: usize,
    }

    impl Script {
        fn new(steps: Steps) -> Script {
            Script {
                steps,
                expired_from: usize::MAX,
                reads: 0,
            }
        }
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.steps.is_empty() {
                return Ok(0);
            }
            match self.steps.remove(0) {
                Ok(mut bytes) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.steps.insert(0, Ok(bytes.split_off(n)));
                    }
                    Ok(n)
                }
                Err(e) => Err(e),
            }
        }
    }

    impl Deadlined for Script {
        fn expired(&self) -> bool {
            self.reads >= self.expired_from
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "socket timed out")
    }

    #[test]
    fn yields_exactly_the_length_early_bytes_first_and_leaves_the_rest() {
        let mut early = b"abcNEXT".to_vec();
        let mut conn = Script::new(vec![Ok(b"de".to_vec()), Ok(b"fgPIPELINED".to_vec())]);
        let mut body = BodyReader::new(&mut early, &mut conn, 10);
        let mut out = Vec::new();
        // Through `Read`, as any std adapter would use it.
        io::copy(&mut body, &mut out).unwrap();
        assert_eq!(out, b"abcNEXTdef");
        assert_eq!(body.received(), 10);
        assert!(body.cut().is_none());
        // Never asked the connection for more than the body: "gPIPELINED"
        // is still there for the next request.
        assert_eq!(conn.steps.len(), 1);

        let mut early = b"abcGET / HTTP/1.1".to_vec();
        let mut conn = Script::new(vec![]);
        let mut body = BodyReader::new(&mut early, &mut conn, 3);
        let mut out = Vec::new();
        copy(&mut body, &mut out).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(early, b"GET / HTTP/1.1", "a pipelined head stays");
        assert_eq!(conn.reads, 0, "a body that came with its head never waits");
    }

    #[test]
    fn says_how_a_body_ended_early() {
        let reset = || io::Error::new(io::ErrorKind::ConnectionReset, "reset");
        let interrupted = || io::Error::new(io::ErrorKind::Interrupted, "EINTR");
        // (what, reads, expired from read #, bytes received, cut)
        let cases: Vec<(&str, Steps, usize, u64, &str)> = vec![
            ("EOF", vec![Ok(b"ab".to_vec())], usize::MAX, 2, "Closed"),
            (
                "one read times out",
                vec![Ok(b"ab".to_vec()), Err(timed_out())],
                usize::MAX,
                2,
                "Stalled",
            ),
            (
                "the whole deadline passed",
                vec![Ok(b"ab".to_vec()), Err(timed_out())],
                1,
                2,
                "TooSlow",
            ),
            ("reset", vec![Err(reset())], usize::MAX, 0, "Failed"),
            (
                "EINTR is retried",
                vec![Err(interrupted()), Ok(b"a".to_vec())],
                usize::MAX,
                1,
                "Closed",
            ),
        ];
        for (what, steps, expired_from, received, cut) in cases {
            let mut early = Vec::new();
            let mut conn = Script::new(steps);
            conn.expired_from = expired_from;
            let mut body = BodyReader::new(&mut early, &mut conn, 100);
            let Err(CopyError::Read(got)) = copy(&mut body, &mut Vec::new()) else {
                panic!("{what}: not a read failure")
            };
            assert_eq!(body.received(), received, "{what}");
            let got = format!("{got:?}");
            assert!(got.starts_with(cut), "{what}: {got}");
        }
        // Through `Read`: an io::Error of the matching kind, and `cut()`.
        let mut early = Vec::new();
        let mut conn = Script::new(vec![Ok(b"ab".to_vec())]);
        let mut body = BodyReader::new(&mut early, &mut conn, 3);
        let err = io::copy(&mut body, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(matches!(body.cut(), Some(Cut::Closed)));
    }

    #[test]
    fn a_failing_sink_stops_the_copy() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut early = b"ab".to_vec();
        let mut conn = Script::new(vec![Ok(b"cd".to_vec())]);
        let mut body = BodyReader::new(&mut early, &mut conn, 4);
        let err = copy(&mut body, &mut Full).unwrap_err();
        assert!(matches!(err, CopyError::Write(e) if e.raw_os_error() == Some(28)));
        assert_eq!(conn.reads, 0, "stopped at once: the rest is not read");
    }

    #[test]
    fn continue_only_while_the_client_waits() {
        assert!(sends_continue(true, b""));
        assert!(!sends_continue(true, b"body bytes already here"));
        assert!(!sends_continue(false, b""));
    }
}
