//! SHA-256 and byte counting for streams: `HashingWriter` sits at the bottom
//! of the pack stack (`tar → zstd → HashingWriter<File>`) so the digest of a
//! tarball is known the moment it is written, without reading it back;
//! `CountingWriter` counts the raw tar bytes above the compressor;
//! `sha256_file` re-hashes a finished file when its recorded digest is lost.
//!
//! This module owns only the arithmetic over bytes. It does not know about
//! tar, zstd, the outbox or how a digest is recorded; it never flushes or
//! syncs on its own (the caller finishes each layer explicitly).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// A writer that hashes (SHA-256) and counts the bytes its inner writer
/// accepted.
///
/// Only the prefix of each buffer that `inner.write` reports as written is
/// hashed, so after a short write or an error the digest still describes
/// exactly the bytes that reached the inner writer (the model is ripgrep's
/// `CounterWriter`).
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`, starting from an empty digest and a count of zero.
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The number of bytes the inner writer accepted so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// A reference to the inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Gives back the inner writer, the SHA-256 of every byte it accepted and
    /// their count.
    ///
    /// This does not flush: flushing can fail, and the caller must see that
    /// error rather than have it folded into a digest of bytes that may not
    /// have landed. Flush (and `sync_all`) before or after, as the layer needs.
    pub fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // `n <= buf.len()` is the `Write` contract; a writer that breaks it
        // would make us panic here rather than hash bytes it never took.
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that counts the bytes its inner writer accepted.
///
/// `pack` puts it between the tar builder and the zstd encoder to learn the
/// size of the raw (uncompressed) tar stream.
#[derive(Debug)]
pub struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    /// Wraps `inner` with a count of zero.
    pub fn new(inner: W) -> CountingWriter<W> {
        CountingWriter { inner, count: 0 }
    }

    /// The number of bytes the inner writer accepted so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// A reference to the inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Gives back the inner writer and the count. Does not flush.
    pub fn into_inner(self) -> (W, u64) {
        (self.inner, self.count)
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Lowercase hexadecimal of `bytes` (a digest as it is written in file names,
/// manifests and HTTP headers).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// 64 lowercase hex digits as 32 bytes (the form `sha256sum` prints and
/// `to_hex` writes); anything else is `None`.
pub fn from_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let nib = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = (nib(pair[0]) << 4) | nib(pair[1]);
    }
    Some(out)
}

/// A digest sidecar's content, in `sha256sum` format so `sha256sum -c`
/// checks it: `<hex>  <file name>`. Both the shipper's outbox and the
/// receiver's store keep one beside each tarball.
pub fn sidecar_line(sha256: &[u8; 32], file_name: &str) -> String {
    format!("{}  {file_name}\n", to_hex(sha256))
}

/// The digest recorded in a sidecar, or `None` if it is missing or does not
/// hold one (the caller then re-hashes: a sidecar is never trusted blindly).
pub fn read_sidecar(path: &Path) -> Option<[u8; 32]> {
    let mut text = String::new();
    // A sidecar is one short line; a huge file is not one.
    File::open(path)
        .ok()?
        .take(512)
        .read_to_string(&mut text)
        .ok()?;
    from_hex32(text.split_whitespace().next()?)
}

/// SHA-256 and length of the file at `path`, read as a stream (memory stays at
/// one 256 KiB buffer whatever the size).
///
/// Used to re-hash an outbox tarball whose recorded digest is missing, e.g.
/// after a crash between the rename and the write of the digest. The error is
/// the bare `io::Error`; the caller names the path in its own error.
pub fn sha256_file(path: &Path) -> io::Result<([u8; 32], u64)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; crate::IO_CHUNK];
    let mut count = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        count += n as u64;
    }
    Ok((hasher.finalize().into(), count))
}

/// Reads `len` bytes of `file` from `offset` with positional reads, one
/// `IO_CHUNK` buffer at a time, handing each piece to `each` (which hashes
/// it, or more). Memory stays one buffer whatever `len` is; a file shorter
/// than `offset + len` is an `UnexpectedEof`.
pub fn for_each_chunk_at(
    file: &File,
    offset: u64,
    len: u64,
    each: &mut dyn FnMut(&[u8]),
) -> io::Result<()> {
    let mut chunk = vec![0u8; crate::IO_CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = chunk
            .len()
            .min(usize::try_from(len - at).unwrap_or(usize::MAX));
        file.read_exact_at(&mut chunk[..n], offset + at)?;
        each(&chunk[..n]);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }

    /// A writer that accepts at most `max` bytes a call, then fails once
    /// `budget` bytes have been taken: exercises short writes and errors.
    struct Stingy {
        out: Vec<u8>,
        max: usize,
        budget: usize,
    }

    impl Write for Stingy {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "full"));
            }
            let n = buf.len().min(self.max).min(self.budget);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn temp_dir() -> std::path::PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cis490-hashing-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn hex_is_lowercase_and_known() {
        assert_eq!(to_hex(&[]), "");
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(
            to_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_what_was_written() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(w.count(), 11);
        assert_eq!(w.get_ref().len(), 11);
        let (out, digest, n) = w.finish();
        assert_eq!(out, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(digest, sha256(b"hello world"));
    }

    #[test]
    fn empty_stream_is_sha256_of_nothing() {
        let (_, digest, n) = HashingWriter::new(io::sink()).finish();
        assert_eq!(n, 0);
        assert_eq!(
            to_hex(&digest),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn short_writes_hash_only_accepted_prefix() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut w = HashingWriter::new(Stingy {
            out: Vec::new(),
            max: 33,
            budget: usize::MAX,
        });
        let n = w.write(&data).unwrap();
        assert_eq!(n, 33);
        w.write_all(&data[n..]).unwrap();
        let (inner, digest, count) = w.finish();
        assert_eq!(inner.out, data);
        assert_eq!(count, 1000);
        assert_eq!(digest, sha256(&data));
    }

    #[test]
    fn error_mid_stream_leaves_digest_of_accepted_bytes() {
        let data = [7u8; 100];
        let mut w = HashingWriter::new(Stingy {
            out: Vec::new(),
            max: 30,
            budget: 70,
        });
        let err = w.write_all(&data).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let (inner, digest, count) = w.finish();
        assert_eq!(count, 70);
        assert_eq!(inner.out.len(), 70);
        assert_eq!(digest, sha256(&data[..70]));
    }

    #[test]
    fn counting_writer_counts_accepted_bytes() {
        let mut w = CountingWriter::new(Stingy {
            out: Vec::new(),
            max: 5,
            budget: usize::MAX,
        });
        w.write_all(&[1u8; 12]).unwrap();
        assert_eq!(w.count(), 12);
        assert_eq!(w.get_ref().out.len(), 12);
        let (inner, n) = w.into_inner();
        assert_eq!((inner.out.len(), n), (12, 12));
    }

    #[test]
    fn what_a_power_cut_leaves_of_a_sidecar_is_no_digest() {
        // The receiver writes its sidecars without fsync: an unsynced file
        // may come back empty or zero-filled, and must then be re-hashed.
        let dir = std::env::temp_dir().join(format!("cis490-sidecar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("e.tar.zst.sha256");
        let line = sidecar_line(&[0xab; 32], "e.tar.zst");
        for (bytes, want) in [
            (line.clone().into_bytes(), Some([0xab; 32])),
            (Vec::new(), None),
            (vec![0u8; line.len()], None),
            (line.as_bytes()[..40].to_vec(), None),
        ] {
            std::fs::write(&p, &bytes).unwrap();
            assert_eq!(read_sidecar(&p), want, "{bytes:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sha256_file_matches_in_memory_digest() {
        let dir = temp_dir();
        // Spans several reads of the 256 KiB buffer and ends mid-buffer.
        let data: Vec<u8> = (0..(crate::IO_CHUNK * 3 + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let path = dir.join("f");
        std::fs::write(&path, &data).unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            (sha256(&data), data.len() as u64)
        );

        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(sha256_file(&empty).unwrap(), (sha256(b""), 0));

        let err = sha256_file(&dir.join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
