//! TEMPORARY stand-in; replaced by the helper's version.
use sha2::{Digest, Sha256};
use std::io::{self, Write};
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}
impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.count)
    }
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
    pub fn count(&self) -> u64 {
        self.count
    }
}
impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
pub fn sha256_file(path: &std::path::Path) -> io::Result<([u8; 32], u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut f, &mut w)?;
    let (_, d, n) = w.finish();
    Ok((d, n))
}
