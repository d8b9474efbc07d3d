//! A request body as a `Read`: exactly `Content-Length` bytes, first those
//! that arrived with the head, then the connection's ([`BodyReader`]); or a
//! chunked body's raw bytes, buffered for the decoder (`chunked`) that
//! finds its end ([`Wire`], [`copy_chunked`]); and, when either ends early,
//! which way it failed ([`Cut`]). Also the rule for `100 Continue`.
//!
//! The deadlines themselves are armed on the socket (`deadline`, by
//! `conn`); these adapters only tell, after a `TimedOut`, whether the whole
//! body deadline had passed (too slow) or one read waited its
//! `body_timeout_s` for nothing (stalled). A chunked body has no length to
//! derive a deadline from, so [`copy_chunked`] lets `conn` re-arm it from
//! the decoded bytes before every read. Hashing is not done here: the
//! store's `Appender` hashes exactly the bytes that reach the file, so the
//! digest that is compared is that of what would be published.

use std::io::{self, BufRead, Read, Write};

use crate::chunked::{ChunkError, ChunkedReader};
use crate::fault;

/// How much of a chunked body [`Wire`] reads ahead for the decoder's lines
/// (its data is read straight into the caller's buffer when none is held).
const WIRE_BUF: usize = 64 * 1024;

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
        let n = read_conn(self.conn, &mut buf[..want])?;
        self.received += n as u64;
        // Halfway through the bytes that come from the wire (a body that
        // came whole with its head never waits).
        if !self.halfway && self.length - self.received <= self.length / 2 {
            self.halfway = true;
            fault::point(self.halfway_point);
        }
        Ok(n)
    }
}

/// One read from the connection, its failure typed.
fn read_conn<R: Deadlined>(conn: &mut R, buf: &mut [u8]) -> Result<usize, Cut> {
    loop {
        // Asked before the read: a read that fails because the whole
        // deadline had already passed means bytes kept coming, but too
        // slowly; otherwise the read itself waited for nothing.
        let too_slow = conn.expired();
        match conn.read(buf) {
            Ok(0) => return Err(Cut::Closed),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(if too_slow { Cut::TooSlow } else { Cut::Stalled })
            }
            Err(e) => return Err(Cut::Failed(e)),
        }
    }
}

/// A cut as the `io::Error` a `Read` returns: `UnexpectedEof` (closed
/// early) or `TimedOut` (stalled, too slow), or the connection's own.
fn cut_error(cut: &Cut) -> io::Error {
    match cut {
        Cut::Closed => io::Error::new(io::ErrorKind::UnexpectedEof, "client closed mid-body"),
        Cut::Stalled => io::Error::new(io::ErrorKind::TimedOut, "body stalled"),
        Cut::TooSlow => io::Error::new(io::ErrorKind::TimedOut, "body too slow"),
        Cut::Failed(e) => io::Error::new(e.kind(), e.to_string()),
    }
}

impl<R: Deadlined> Read for BodyReader<'_, R> {
    /// Fails with `UnexpectedEof` (closed early) or `TimedOut` (stalled,
    /// too slow), or the connection's own error; [`BodyReader::cut`] says
    /// which.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_body(buf).map_err(|cut| {
            let e = cut_error(&cut);
            self.cut = Some(cut);
            e
        })
    }
}

/// A chunked body's bytes as they come: those that arrived with the head,
/// then the connection's, as a `BufRead` for the decoder, which reads its
/// lines through `fill_buf` and never consumes a byte past the body's end.
/// A connection that fails is typed as for [`BodyReader`] ([`Wire::take_cut`]).
/// Dropped, it leaves in `early` exactly the bytes not consumed: a
/// pipelined request's, for the next head.
pub struct Wire<'a, R: Deadlined> {
    /// Its first `pos` bytes are consumed.
    early: &'a mut Vec<u8>,
    pos: usize,
    conn: &'a mut R,
    cut: Option<Cut>,
}

impl<'a, R: Deadlined> Wire<'a, R> {
    pub fn new(early: &'a mut Vec<u8>, conn: &'a mut R) -> Wire<'a, R> {
        Wire {
            early,
            pos: 0,
            conn,
            cut: None,
        }
    }

    /// The connection (to arm its deadline).
    pub fn conn(&mut self) -> &mut R {
        self.conn
    }

    /// Why the connection failed, once it has.
    pub fn take_cut(&mut self) -> Option<Cut> {
        self.cut.take()
    }

    fn failed(&mut self, cut: Cut) -> io::Error {
        let e = cut_error(&cut);
        self.cut = Some(cut);
        e
    }
}

impl<R: Deadlined> Read for Wire<'_, R> {
    /// What is buffered first; else straight from the connection into
    /// `buf` (a chunk's data is not copied twice).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.early.len() {
            let n = buf.len().min(self.early.len() - self.pos);
            buf[..n].copy_from_slice(&self.early[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        read_conn(self.conn, buf).map_err(|cut| self.failed(cut))
    }
}

impl<R: Deadlined> BufRead for Wire<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.early.len() {
            self.early.clear();
            self.pos = 0;
            self.early.resize(WIRE_BUF, 0);
            match read_conn(self.conn, &mut self.early[..]) {
                Ok(n) => self.early.truncate(n),
                Err(cut) => {
                    self.early.clear();
                    return Err(self.failed(cut));
                }
            }
        }
        Ok(&self.early[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.early.len());
    }
}

impl<R: Deadlined> Drop for Wire<'_, R> {
    fn drop(&mut self) {
        self.early.drain(..self.pos);
    }
}

/// How a copy of the body ended early.
#[derive(Debug)]
pub enum CopyError {
    /// Reading from the connection.
    Read(Cut),
    /// Writing into the sink (the store's temp file).
    Write(io::Error),
    /// A chunked body's framing is malformed (or over `max_body_bytes`).
    Framing(ChunkError),
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

/// Copies a chunked body's decoded bytes into `sink` until its last chunk
/// and trailer have been read (then `body.trailer()` holds the fields);
/// stops at the first failure of either side. `before_read` runs before
/// every read with the connection and the bytes decoded so far: `conn`
/// arms the body's deadline from them there. Crash point
/// `recv.mid_chunked`: once the first chunk's data is in the sink.
pub fn copy_chunked<R: Deadlined, W: Write>(
    body: &mut ChunkedReader<Wire<'_, R>>,
    sink: &mut W,
    before_read: &mut dyn FnMut(&mut R, u64),
) -> Result<(), CopyError> {
    let mut chunk = vec![0u8; crate::IO_CHUNK];
    let mut first_chunk_in = false;
    loop {
        let decoded = body.decoded();
        before_read(body.get_mut().conn(), decoded);
        let n = match body.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) => {
                let fault = body.error().cloned();
                return Err(match (fault, body.get_mut().take_cut()) {
                    (Some(fault), _) => CopyError::Framing(fault),
                    (None, Some(cut)) => CopyError::Read(cut),
                    (None, None) => CopyError::Read(Cut::Failed(e)),
                });
            }
        };
        sink.write_all(&chunk[..n]).map_err(CopyError::Write)?;
        if !first_chunk_in && body.at_chunk_end() {
            first_chunk_in = true;
            fault::point("recv.mid_chunked");
        }
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

    fn decoder<'a>(
        early: &'a mut Vec<u8>,
        conn: &'a mut Script,
        max: u64,
    ) -> ChunkedReader<Wire<'a, Script>> {
        let limits = crate::chunked::Limits {
            max_body_bytes: max,
            ..crate::chunked::Limits::default()
        };
        ChunkedReader::new(Wire::new(early, conn), limits)
    }

    #[test]
    fn a_chunked_body_early_bytes_first_and_what_follows_stays() {
        // The head's read took the first chunk and part of the second.
        let mut early = b"3\r\nabc\r\n4\r\nde".to_vec();
        let mut conn = Script::new(vec![
            Ok(b"fg\r\n0\r\nContent-Digest: x\r\n".to_vec()),
            Ok(b"\r\nGET /next HTTP/1.1\r\n".to_vec()),
            Ok(b"never read".to_vec()),
        ]);
        let mut seen = Vec::new();
        let mut out = Vec::new();
        {
            let mut body = decoder(&mut early, &mut conn, u64::MAX);
            copy_chunked(&mut body, &mut out, &mut |_, decoded| seen.push(decoded)).unwrap();
            assert_eq!(body.trailer().unwrap().get("content-digest"), Some("x"));
            assert_eq!(body.decoded(), 7);
        }
        assert_eq!(out, b"abcdefg");
        assert_eq!(early, b"GET /next HTTP/1.1\r\n", "a pipelined head stays");
        assert_eq!(conn.steps.len(), 1, "nothing read past the body");
        assert_eq!(seen.first(), Some(&0));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(seen.last(), Some(&7), "asked before the read that ended it");
    }

    #[test]
    fn a_chunked_body_says_how_it_ended_early() {
        use crate::chunked::ChunkError;
        // (what, early, reads, expired from read #, max, outcome)
        #[rustfmt::skip]
        type Case = (&'static str, &'static [u8], Steps, usize, u64, &'static str);
        let cases: Vec<Case> = vec![
            (
                "EOF in the data",
                b"5\r\nab",
                vec![],
                usize::MAX,
                100,
                "Read(Closed",
            ),
            (
                "EOF in a size line",
                b"5\r\nabcde\r\n1",
                vec![],
                usize::MAX,
                100,
                "Read(Closed",
            ),
            (
                "EOF before the trailer ends",
                b"1\r\na\r\n0\r\nX: 1\r\n",
                vec![],
                usize::MAX,
                100,
                "Read(Closed",
            ),
            (
                "a read times out",
                b"5\r\nab",
                vec![Err(timed_out())],
                usize::MAX,
                100,
                "Read(Stalled",
            ),
            (
                "the deadline passed",
                b"5\r\nab",
                vec![Ok(b"c".to_vec()), Err(timed_out())],
                1,
                100,
                "Read(TooSlow",
            ),
            (
                "a malformed size",
                b"5x\r\nabcde\r\n0\r\n\r\n",
                vec![],
                usize::MAX,
                100,
                "Framing(BadSize",
            ),
            (
                "no CRLF after data",
                b"1\r\nab",
                vec![],
                usize::MAX,
                100,
                "Framing(MissingCrlf",
            ),
            (
                "over max_body_bytes",
                b"5\r\nabcde\r\n6\r\n",
                vec![],
                usize::MAX,
                10,
                "Framing(TooLarge(10",
            ),
        ];
        for (what, early, steps, expired_from, max, want) in cases {
            let mut early = early.to_vec();
            let mut conn = Script::new(steps);
            conn.expired_from = expired_from;
            let mut body = decoder(&mut early, &mut conn, max);
            let err = copy_chunked(&mut body, &mut Vec::new(), &mut |_, _| {}).unwrap_err();
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "{what}: {got}");
        }
        let _ = ChunkError::MissingCrlf;
    }

    #[test]
    fn a_chunked_body_one_byte_per_read() {
        let wire = b"a;x=1\r\n0123456789\r\n2\r\nab\r\n0\r\nT: v\r\n\r\n";
        let mut early = Vec::new();
        let mut conn = Script::new(wire.iter().map(|b| Ok(vec![*b])).collect());
        let mut out = Vec::new();
        let mut body = decoder(&mut early, &mut conn, u64::MAX);
        copy_chunked(&mut body, &mut out, &mut |_, _| {}).unwrap();
        assert_eq!(out, b"0123456789ab");
        assert_eq!(body.trailer().unwrap().get("t"), Some("v"));
    }
}
