//! A chunked request body (RFC 9112 §7.1) as a `Read`: the decoded bytes,
//! then EOF once the last chunk and the trailer section have been read, and
//! the trailer's fields ([`ChunkedReader::trailer`]). Used by the receiver
//! for a streamed `PUT` (docs/transport.md, "Upload while packing").
//!
//! In scope, decided here, strictly: the chunk-size line (1 to 16 hex
//! digits, optional extensions after `;`, ignored, CRLF, at most
//! `max_line_bytes`), the CRLF after each chunk's data, the trailer
//! section (the head's field syntax, `http::parse_fields`, at most
//! `max_trailer_bytes` and `max_trailer_fields`), and the decoded total
//! against `max_body_bytes` (checked when a chunk announces its size, so
//! an oversized body is refused before its bytes are read). Out of scope:
//! what a trailer field means (the receiver reads `Content-Digest`), and
//! sockets, deadlines and how a connection failed: those come from the
//! `BufRead` beneath, whose errors are passed through unchanged.
//!
//! ```text
//! Size --n>0--> Data(n) --all handed out--> DataEnd --CRLF--> Size
//!   \--0--> Trailer --empty line--> Done (read returns 0)
//! any malformed input -> Failed (every later read fails too)
//! ```
//!
//! The decoder reads through `BufRead` so that it never takes a byte past
//! the body's end: what follows the trailer (a pipelined request) stays in
//! the reader beneath. Line state survives an I/O error (a `WouldBlock`,
//! say), so a read may be retried; EOF inside the body is `UnexpectedEof`.

use std::fmt;
use std::io::{self, BufRead, Read};

use crate::http::{self, HeadError, Headers};

/// Bounds for one chunked body.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A chunk-size line, extensions and CRLF included. Defaults to 4 KiB.
    pub max_line_bytes: usize,
    /// The trailer section, every CRLF and the final empty line included.
    /// Defaults to 16 KiB (the head's own limit).
    pub max_trailer_bytes: usize,
    /// Fields in the trailer section. Defaults to 100 (the head's).
    pub max_trailer_fields: usize,
    /// The decoded body. Defaults to no limit.
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line_bytes: 4 * 1024,
            max_trailer_bytes: 16 * 1024,
            max_trailer_fields: 100,
            max_body_bytes: u64::MAX,
        }
    }
}

/// Malformed or oversized chunked framing; `status()` is what a server
/// answers. The connection cannot be trusted past one of these: close it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// 400: a chunk-size line that is not hex digits, optional extensions
    /// and CRLF.
    BadSize(&'static str),
    /// 400: more than 16 hex digits (the size would overflow 64 bits).
    SizeOverflow,
    /// 400: a chunk-size line over `max_line_bytes`.
    LineTooLong,
    /// 400: a bare LF, or a CR not followed by LF, in a line.
    BadLineEnd,
    /// 400: a chunk's data not followed by CRLF.
    MissingCrlf,
    /// 400: the trailer section over `max_trailer_bytes` or
    /// `max_trailer_fields`.
    TrailerTooLarge,
    /// 400: a trailer field breaking the head's syntax.
    Trailer(&'static str),
    /// 413: the chunks announce more than `max_body_bytes` in total.
    TooLarge(u64),
}

impl ChunkError {
    pub fn status(&self) -> u16 {
        match self {
            ChunkError::TooLarge(_) => 413,
            _ => 400,
        }
    }
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::BadSize(why) => write!(f, "malformed chunk size: {why}"),
            ChunkError::SizeOverflow => f.write_str("chunk size of more than 16 hex digits"),
            ChunkError::LineTooLong => f.write_str("chunk-size line too long"),
            ChunkError::BadLineEnd => {
                f.write_str("bare LF or CR in a chunked body: lines end with CRLF")
            }
            ChunkError::MissingCrlf => f.write_str("chunk data not followed by CRLF"),
            ChunkError::TrailerTooLarge => f.write_str("trailer section too large"),
            ChunkError::Trailer(why) => write!(f, "malformed trailer: {why}"),
            ChunkError::TooLarge(max) => {
                write!(f, "chunked body exceeds max_body_bytes ({max})")
            }
        }
    }
}

impl std::error::Error for ChunkError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: how many bytes of its CRLF were seen.
    DataEnd(u8),
    /// After the last chunk: field lines until an empty one.
    Trailer,
    Done,
    Failed,
}

/// Why a step stopped: the reader beneath, or the framing.
enum Fault {
    Io(io::Error),
    Chunk(ChunkError),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Fault {
        Fault::Io(e)
    }
}

impl From<ChunkError> for Fault {
    fn from(e: ChunkError) -> Fault {
        Fault::Chunk(e)
    }
}

/// Decodes the chunked body read from `R`.
pub struct ChunkedReader<R> {
    inner: R,
    limits: Limits,
    state: State,
    /// The line being read (a chunk-size line or a trailer field), CRLF
    /// included, kept across reads.
    line: Vec<u8>,
    /// Trailer field lines so far (without CRLF), and their bytes.
    trailer_lines: Vec<Vec<u8>>,
    trailer_bytes: usize,
    trailer: Option<Headers>,
    /// Sizes announced so far (checked against `max_body_bytes`).
    announced: u64,
    /// Data bytes handed out.
    decoded: u64,
    error: Option<ChunkError>,
}

impl<R: BufRead> ChunkedReader<R> {
    pub fn new(inner: R, limits: Limits) -> ChunkedReader<R> {
        ChunkedReader {
            inner,
            limits,
            state: State::Size,
            line: Vec::new(),
            trailer_lines: Vec::new(),
            trailer_bytes: 0,
            trailer: None,
            announced: 0,
            decoded: 0,
            error: None,
        }
    }

    /// Data bytes handed out so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// The trailer's fields, once the body has ended (`read` returned 0).
    pub fn trailer(&self) -> Option<&Headers> {
        self.trailer.as_ref()
    }

    /// The framing fault that failed a read, if one did.
    pub fn error(&self) -> Option<&ChunkError> {
        self.error.as_ref()
    }

    /// Whether every data byte of the current chunk has been handed out
    /// (the next read starts with its CRLF).
    pub fn at_chunk_end(&self) -> bool {
        self.state == State::DataEnd(0)
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Appends to `self.line` up to and including the next LF. `Ok(false)`:
    /// not yet a whole line within `max` bytes, and `over` is the fault.
    fn read_line(&mut self, max: usize, over: ChunkError) -> Result<(), Fault> {
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if avail.is_empty() {
                return Err(eof().into());
            }
            let (take, whole) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            // Never hold more than the limit allows, however the bytes come.
            let room = max.saturating_sub(self.line.len());
            if take > room {
                return Err(over.into());
            }
            self.line.extend_from_slice(&avail[..take]);
            self.inner.consume(take);
            if whole {
                return check_crlf(&self.line).map_err(Fault::from);
            }
        }
    }

    /// One byte of the CRLF after a chunk's data.
    fn read_crlf(&mut self, seen: u8) -> Result<(), Fault> {
        let want = if seen == 0 { b'\r' } else { b'\n' };
        let avail = self.inner.fill_buf()?;
        let Some(&b) = avail.first() else {
            return Err(eof().into());
        };
        if b != want {
            return Err(ChunkError::MissingCrlf.into());
        }
        self.inner.consume(1);
        self.state = if seen == 0 {
            State::DataEnd(1)
        } else {
            State::Size
        };
        Ok(())
    }

    /// Advances until data can be handed out or the body has ended.
    fn step(&mut self, buf: &mut [u8]) -> Result<usize, Fault> {
        loop {
            match self.state {
                State::Size => {
                    self.read_line(self.limits.max_line_bytes, ChunkError::LineTooLong)?;
                    let line = std::mem::take(&mut self.line);
                    let size = parse_size(&line[..line.len() - 2])?;
                    self.announced = self
                        .announced
                        .checked_add(size)
                        .filter(|&t| t <= self.limits.max_body_bytes)
                        .ok_or(ChunkError::TooLarge(self.limits.max_body_bytes))?;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = loop {
                        match self.inner.read(&mut buf[..want]) {
                            Ok(n) => break n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e.into()),
                        }
                    };
                    if n == 0 {
                        return Err(eof().into());
                    }
                    self.decoded += n as u64;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd(0)
                    } else {
                        State::Data(left)
                    };
                    return Ok(n);
                }
                State::DataEnd(seen) => self.read_crlf(seen)?,
                State::Trailer => {
                    let room = self.limits.max_trailer_bytes - self.trailer_bytes;
                    self.read_line(room, ChunkError::TrailerTooLarge)?;
                    let mut line = std::mem::take(&mut self.line);
                    self.trailer_bytes += line.len();
                    line.truncate(line.len() - 2);
                    if !line.is_empty() {
                        if self.trailer_lines.len() >= self.limits.max_trailer_fields {
                            return Err(ChunkError::TrailerTooLarge.into());
                        }
                        self.trailer_lines.push(line);
                        continue;
                    }
                    let limits = http::Limits {
                        max_headers: self.limits.max_trailer_fields,
                        ..http::Limits::default()
                    };
                    let fields =
                        http::parse_fields(self.trailer_lines.iter().map(Vec::as_slice), &limits)
                            .map_err(|e| match e {
                            HeadError::Malformed(why) => ChunkError::Trailer(why),
                            _ => ChunkError::TrailerTooLarge,
                        })?;
                    self.trailer_lines = Vec::new();
                    self.trailer = Some(fields);
                    self.state = State::Done;
                }
                State::Done => return Ok(0),
                State::Failed => {
                    return Err(Fault::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "chunked body already failed",
                    )))
                }
            }
        }
    }
}

impl<R: BufRead> Read for ChunkedReader<R> {
    /// Decoded bytes; `Ok(0)` once the body has ended (and `trailer()` is
    /// set). A framing fault fails with `InvalidData` (and `error()` says
    /// which); the reader's own errors come through as they are.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.step(buf) {
            Ok(n) => Ok(n),
            Err(Fault::Io(e)) => Err(e),
            Err(Fault::Chunk(c)) => {
                self.state = State::Failed;
                self.error = Some(c.clone());
                Err(io::Error::new(io::ErrorKind::InvalidData, c))
            }
        }
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed inside a chunked body",
    )
}

/// A whole line ends with CRLF, and has no other CR or LF.
fn check_crlf(line: &[u8]) -> Result<(), ChunkError> {
    match line {
        [rest @ .., b'\r', b'\n'] if !rest.contains(&b'\r') => Ok(()),
        _ => Err(ChunkError::BadLineEnd),
    }
}

/// A chunk-size line without its CRLF: `1*16HEXDIG [ BWS ";" ext ]`, the
/// extensions printable ASCII (and ignored).
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkError::BadSize("expected hex digits"));
    }
    if digits > 16 {
        return Err(ChunkError::SizeOverflow);
    }
    let rest = &line[digits..];
    if !rest.is_empty() {
        let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
        if ext.map(|i| rest[i]) != Some(b';') {
            return Err(ChunkError::BadSize("only ;extensions may follow the size"));
        }
        if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b >= 0x7f) {
            return Err(ChunkError::BadSize(
                "control or non-ASCII byte in a chunk extension",
            ));
        }
    }
    // Checked above: 1 to 16 ASCII hex digits, which fit in 64 bits.
    let hex = std::str::from_utf8(&line[..digits]).unwrap_or("0");
    u64::from_str_radix(hex, 16).map_err(|_| ChunkError::SizeOverflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `BufRead` that hands out at most `step` bytes per `fill_buf`
    /// (and per `read`): the split-invariance harness.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(self.data.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    impl BufRead for Trickle<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let n = self.step.min(self.data.len());
            Ok(&self.data[..n])
        }
        fn consume(&mut self, n: usize) {
            self.data = &self.data[n..];
        }
    }

    /// What decoding `input` gives: the body, the trailer fields and the
    /// bytes left unread after it; or the framing fault; or, for a cut,
    /// the I/O error's kind.
    type Decoded =
        Result<(Vec<u8>, Vec<(String, String)>, Vec<u8>), Result<ChunkError, io::ErrorKind>>;

    fn decode(input: &[u8], step: usize, limits: Limits) -> Decoded {
        let mut r = ChunkedReader::new(Trickle { data: input, step }, limits);
        let mut out = Vec::new();
        // Odd read sizes, to cross chunk boundaries every way.
        let mut buf = [0u8; 7];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    return Err(match r.error() {
                        Some(c) => {
                            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                            Ok(c.clone())
                        }
                        None => Err(e.kind()),
                    })
                }
            }
        }
        assert_eq!(r.decoded(), out.len() as u64);
        let trailer = r.trailer().expect("a trailer once ended").0.clone();
        // Ended for good: more reads give 0.
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        Ok((out, trailer, r.into_inner().data.to_vec()))
    }

    fn ok(input: &[u8]) -> (Vec<u8>, Vec<(String, String)>, Vec<u8>) {
        decode(input, usize::MAX, Limits::default()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn decodes_chunks_extensions_and_trailer_leaving_what_follows() {
        let (body, trailer, rest) = ok(
            b"5\r\nhello\r\n1;name=value;x\r\n \r\n00A ;ext\r\n0123456789\r\n000\r\n\
              Content-Digest: sha-256=:AAAA:\r\nX-Other:  y \r\n\r\nGET / HTTP/1.1\r\n",
        );
        assert_eq!(body, b"hello 0123456789");
        assert_eq!(
            trailer,
            vec![
                ("Content-Digest".to_owned(), "sha-256=:AAAA:".to_owned()),
                ("X-Other".to_owned(), "y".to_owned())
            ]
        );
        assert_eq!(rest, b"GET / HTTP/1.1\r\n", "a pipelined request stays");
        let (body, trailer, rest) = ok(b"0\r\n\r\n");
        assert!(body.is_empty() && trailer.is_empty() && rest.is_empty());
        // Upper- and lower-case hex, sixteen digits with leading zeros.
        let (body, _, _) =
            ok(b"0000000000000003\r\nabc\r\nA\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!(body.len(), 23);
    }

    /// Every malformed case, by the fault it must give (the receiver
    /// answers its `status()` and closes).
    #[test]
    fn malformed_framing_as_a_table() {
        use ChunkError::*;
        let big_line = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(4096));
        let fields: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("1\r\na\r\n0\r\n{fields}\r\n");
        let long_trailer = format!("1\r\na\r\n0\r\nX: {}\r\n\r\n", "y".repeat(16 * 1024));
        #[rustfmt::skip]
        type Row = (&'static str, Vec<u8>, fn(&ChunkError) -> bool);
        let table: Vec<Row> = vec![
            ("empty size", b"\r\nabc\r\n0\r\n\r\n".to_vec(), |e| {
                matches!(e, BadSize(_))
            }),
            ("0x prefix", b"0x3\r\nabc\r\n0\r\n\r\n".to_vec(), |e| {
                matches!(e, BadSize(_))
            }),
            ("plus sign", b"+3\r\nabc\r\n0\r\n\r\n".to_vec(), |e| {
                matches!(e, BadSize(_))
            }),
            ("minus sign", b"-3\r\nabc\r\n0\r\n\r\n".to_vec(), |e| {
                matches!(e, BadSize(_))
            }),
            ("leading space", b" 3\r\nabc\r\n0\r\n\r\n".to_vec(), |e| {
                matches!(e, BadSize(_))
            }),
            (
                "trailing space, no extension",
                b"3 \r\nabc\r\n0\r\n\r\n".to_vec(),
                |e| matches!(e, BadSize(_)),
            ),
            ("not hex", b"3g\r\nabc\r\n0\r\n\r\n".to_vec(), |e| {
                matches!(e, BadSize(_))
            }),
            (
                "extension without ;",
                b"3 x\r\nabc\r\n0\r\n\r\n".to_vec(),
                |e| matches!(e, BadSize(_)),
            ),
            (
                "control byte in an extension",
                b"3;a\x01\r\nabc\r\n0\r\n\r\n".to_vec(),
                |e| matches!(e, BadSize(_)),
            ),
            (
                "non-ASCII in an extension",
                b"3;\xff\r\nabc\r\n0\r\n\r\n".to_vec(),
                |e| matches!(e, BadSize(_)),
            ),
            (
                "17 hex digits",
                b"00000000000000003\r\nabc\r\n0\r\n\r\n".to_vec(),
                |e| *e == SizeOverflow,
            ),
            ("u64 overflow", b"10000000000000000\r\n".to_vec(), |e| {
                *e == SizeOverflow
            }),
            ("line over 4 KiB", big_line.into_bytes(), |e| {
                *e == LineTooLong
            }),
            (
                "bare LF after the size",
                b"3\nabc\r\n0\r\n\r\n".to_vec(),
                |e| *e == BadLineEnd,
            ),
            (
                "bare CR in the size line",
                b"3\r;x\r\nabc\r\n0\r\n\r\n".to_vec(),
                |e| *e == BadLineEnd,
            ),
            (
                "data longer than its size",
                b"3\r\nabcd\r\n0\r\n\r\n".to_vec(),
                |e| *e == MissingCrlf,
            ),
            ("data then LF only", b"3\r\nabc\n0\r\n\r\n".to_vec(), |e| {
                *e == MissingCrlf
            }),
            (
                "data then CR and garbage",
                b"3\r\nabc\rx0\r\n\r\n".to_vec(),
                |e| *e == MissingCrlf,
            ),
            (
                "bare LF ends the trailer",
                b"3\r\nabc\r\n0\r\n\n".to_vec(),
                |e| *e == BadLineEnd,
            ),
            (
                "bare LF in a trailer field",
                b"3\r\nabc\r\n0\r\nX: 1\n\r\n".to_vec(),
                |e| *e == BadLineEnd,
            ),
            (
                "obs-fold in the trailer",
                b"3\r\nabc\r\n0\r\nX: 1\r\n  2\r\n\r\n".to_vec(),
                |e| matches!(e, Trailer(_)),
            ),
            (
                "space before a colon",
                b"3\r\nabc\r\n0\r\nX : 1\r\n\r\n".to_vec(),
                |e| matches!(e, Trailer(_)),
            ),
            ("no colon", b"3\r\nabc\r\n0\r\nX\r\n\r\n".to_vec(), |e| {
                matches!(e, Trailer(_))
            }),
            (
                "NUL in a value",
                b"3\r\nabc\r\n0\r\nX: a\0b\r\n\r\n".to_vec(),
                |e| matches!(e, Trailer(_)),
            ),
            (
                "non-ASCII value",
                b"3\r\nabc\r\n0\r\nX: caf\xc3\xa9\r\n\r\n".to_vec(),
                |e| matches!(e, Trailer(_)),
            ),
            ("101 trailer fields", many.into_bytes(), |e| {
                *e == TrailerTooLarge
            }),
            ("trailer over 16 KiB", long_trailer.into_bytes(), |e| {
                *e == TrailerTooLarge
            }),
        ];
        for (what, input, want) in table {
            for step in [usize::MAX, 1, 2, 5] {
                match decode(&input, step, Limits::default()) {
                    Err(Ok(e)) => {
                        assert!(want(&e), "{what}, step {step}: {e:?}");
                        assert_eq!(e.status(), 400, "{what}");
                    }
                    other => panic!("{what}, step {step}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn over_max_body_bytes_is_refused_when_announced() {
        let limits = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        let fits = b"4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n";
        assert_eq!(decode(fits, 3, limits).unwrap().0, b"abcdefghij");
        // The second chunk would make 11: refused before its data is read
        // (none follows here: no cut is reported, the size decides).
        let over = b"4\r\nabcd\r\n7\r\n";
        let Err(Ok(e)) = decode(over, 1, limits) else {
            panic!("not refused")
        };
        assert_eq!((e.clone(), e.status()), (ChunkError::TooLarge(10), 413));
        // A size that overflows the running total.
        let wrap = b"1\r\na\r\nffffffffffffffff\r\n";
        assert!(matches!(
            decode(wrap, 4, Limits::default()),
            Err(Ok(ChunkError::TooLarge(_)))
        ));
    }

    #[test]
    fn a_body_cut_anywhere_is_unexpected_eof_never_a_short_body() {
        let whole = b"5\r\nhello\r\n3;x\r\nabc\r\n0\r\nX: 1\r\n\r\n";
        for cut in 0..whole.len() {
            for step in [1, 3, usize::MAX] {
                assert_eq!(
                    decode(&whole[..cut], step, Limits::default()),
                    Err(Err(io::ErrorKind::UnexpectedEof)),
                    "cut at {cut}, step {step}"
                );
            }
        }
        assert!(decode(whole, 1, Limits::default()).is_ok());
    }

    /// F14 for chunks: one byte at a time, or any other split, gives the
    /// same body, trailer and leftover, or the same fault.
    #[test]
    fn split_invariance() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<&[u8]> = vec![
            b"5\r\nhello\r\n1;a=b\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nContent-Digest: x\r\n\r\nNEXT",
            b"3\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
        ];
        let interesting = b"\r\n ;:0123456789abcdefxX\t\0";
        for round in 0..3000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            if round >= seeds.len() {
                for _ in 0..(1 + next() % 3) {
                    let pos = (next() as usize) % input.len();
                    let c = interesting[(next() as usize) % interesting.len()];
                    match next() % 3 {
                        0 => input[pos] = c,
                        1 => input.insert(pos, c),
                        _ => {
                            input.remove(pos);
                        }
                    }
                }
            }
            let whole = decode(&input, usize::MAX, Limits::default());
            for step in [1, 2, 1 + (next() as usize) % 9] {
                assert_eq!(
                    decode(&input, step, Limits::default()),
                    whole,
                    "{:?} step {step}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn an_io_error_can_be_retried_without_losing_the_line() {
        /// Fails every other call with WouldBlock.
        struct Flaky<'a> {
            data: &'a [u8],
            fail: bool,
        }
        impl Read for Flaky<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.fill_buf()?.len().min(buf.len()).min(1);
                buf[..n].copy_from_slice(&self.data[..n]);
                self.consume(n);
                Ok(n)
            }
        }
        impl BufRead for Flaky<'_> {
            fn fill_buf(&mut self) -> io::Result<&[u8]> {
                self.fail = !self.fail;
                if self.fail {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(&self.data[..self.data.len().min(1)])
            }
            fn consume(&mut self, n: usize) {
                self.data = &self.data[n..];
            }
        }
        let input = b"3;e\r\nabc\r\n0\r\nX: 1\r\n\r\n";
        let mut r = ChunkedReader::new(
            Flaky {
                data: input,
                fail: false,
            },
            Limits::default(),
        );
        let mut out = Vec::new();
        let mut buf = [0u8; 4];
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 1000);
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
        }
        assert_eq!(out, b"abc");
        assert_eq!(r.trailer().unwrap().get("x"), Some("1"));
    }
}
