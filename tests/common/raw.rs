//! Raw HTTP/1.1 against the receiver, for the resumable-upload and
//! streamed-upload tests: request heads and chunked bodies written byte for
//! byte, answers read until the server closes, and the fields a resume
//! needs. Over the loopback plain listener (the functions taking a
//! `SocketAddr`), or over TLS with a client certificate as the shipper
//! connects ([`Target`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use sha2::{Digest, Sha256};

use super::{Identity, TestPki, TOKEN_A};

/// Where raw requests go: the loopback plain listener, or the TLS listener
/// with a client certificate.
#[allow(dead_code)]
pub enum Target {
    Plain(SocketAddr),
    Tls(SocketAddr, Arc<ClientConfig>),
}

/// One connection to a [`Target`].
#[allow(dead_code)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// A TLS client config trusting the test CA, presenting `ident`.
#[allow(dead_code)]
pub fn client_config(pki: &TestPki, ident: &Identity) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca_file).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&ident.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&ident.key).unwrap();
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    Arc::new(cfg)
}

#[allow(dead_code)]
impl Target {
    /// The TLS listener at `addr`, trusting the test CA, presenting `ident`.
    pub fn tls(addr: SocketAddr, pki: &TestPki, ident: &Identity) -> Target {
        Target::Tls(addr, client_config(pki, ident))
    }

    /// A new connection (the TLS handshake done), reads timing out after 10 s.
    pub fn connect(&self) -> Conn {
        let addr = match self {
            Target::Plain(a) | Target::Tls(a, _) => *a,
        };
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        match self {
            Target::Plain(_) => Conn::Plain(tcp),
            Target::Tls(_, cfg) => {
                let name = ServerName::try_from("localhost").unwrap();
                let mut c = ClientConnection::new(Arc::clone(cfg), name).unwrap();
                while c.is_handshaking() {
                    c.complete_io(&mut tcp).unwrap();
                }
                Conn::Tls(Box::new(StreamOwned::new(c, tcp)))
            }
        }
    }

    /// Sends `bytes` on a new connection, then reads until the server closes.
    pub fn exchange(&self, bytes: &[u8]) -> String {
        let mut c = self.connect();
        let _ = c.send(bytes);
        c.read_until_close()
    }

    /// Sends the first `n` of `bytes` on a new connection, then ends it
    /// (a FIN without TLS close_notify: a connection that broke) and waits
    /// for the server to close its side. Half-closed rather than dropped:
    /// a socket closed with unread bytes (TLS 1.3 session tickets) sends a
    /// reset, and the server would lose the bytes still in its buffer.
    pub fn send_cut(&self, bytes: &[u8], n: usize) -> String {
        let mut c = self.connect();
        c.send(&bytes[..n]).unwrap();
        c.tcp().shutdown(std::net::Shutdown::Write).unwrap();
        c.read_until_close()
    }
}

#[allow(dead_code)]
impl Conn {
    /// The TCP socket beneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    /// Writes all of `bytes` and flushes them onto the wire.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)?;
        self.flush()
    }

    /// Everything until the server closes (or 10 s pass).
    pub fn read_until_close(&mut self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match self.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// One head, up to its blank line (an interim `100 Continue`, or an
    /// answer without a body).
    pub fn read_head(&mut self) -> String {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while !out.ends_with(b"\r\n\r\n") {
            self.read_exact(&mut b).unwrap();
            out.push(b[0]);
        }
        String::from_utf8(out).unwrap()
    }

    /// One answer on a kept-alive connection: its head, then its body by
    /// `Content-Length` (none if it has no such field).
    pub fn read_answer(&mut self) -> String {
        let head = self.read_head();
        let len: usize = field(&head, "Content-Length").map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0u8; len];
        self.read_exact(&mut body).unwrap();
        head + &String::from_utf8_lossy(&body)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A streamed (chunked) PUT's head for lab-01's `id` (token A,
/// `Connection: close`, the trailer announced); `extra` header lines go
/// before the blank line.
#[allow(dead_code)]
pub fn stream_head(id: &str, extra: &str) -> String {
    format!(
        "PUT /v1/episodes/lab-01/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
         Content-Type: application/zstd\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Digest\r\n\
         Connection: close\r\n{extra}\r\n"
    )
}

/// `body` as chunks of the given sizes (cycled; a size of 0 is skipped:
/// it would end the body), without the last chunk.
#[allow(dead_code)]
pub fn chunks(body: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    for &size in sizes.iter().filter(|&&n| n > 0).cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(size.min(rest.len()));
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
        rest = after;
    }
    out
}

/// `body` chunked as `chunks` does, then the last chunk and the trailer
/// section: `trailer` holds whole field lines, each ending in CRLF.
#[allow(dead_code)]
pub fn chunked(body: &[u8], sizes: &[usize], trailer: &str) -> Vec<u8> {
    let mut out = chunks(body, sizes);
    out.extend_from_slice(format!("0\r\n{trailer}\r\n").as_bytes());
    out
}

/// The trailer field line that carries `body`'s digest.
#[allow(dead_code)]
pub fn digest_line(body: &[u8]) -> String {
    format!("Content-Digest: {}\r\n", digest_of(body))
}

/// A 32-hex-digit `Upload-Key`, different for every seed.
#[allow(dead_code)]
pub fn upload_key(seed: u64) -> String {
    format!(
        "{seed:016x}{:016x}",
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

/// A request head with one more field line (before the blank line).
#[allow(dead_code)]
pub fn with_field(head: &str, line: &str) -> String {
    let head = head.strip_suffix("\r\n\r\n").expect("a whole head");
    format!("{head}\r\n{line}\r\n\r\n")
}

/// `sha-256=:<base64>:` of `body`.
#[allow(dead_code)]
pub fn digest_of(body: &[u8]) -> String {
    cis490::protocol::content_digest(&Sha256::digest(body).into())
}

/// The lowercase hex sha256 of `body`.
#[allow(dead_code)]
pub fn hex_of(body: &[u8]) -> String {
    cis490::hashing::to_hex(&Sha256::digest(body))
}

/// A PUT of `body` to lab-01's `id` (token A), `Connection: close`.
#[allow(dead_code)]
pub fn put_head(id: &str, body: &[u8]) -> String {
    format!(
        "PUT /v1/episodes/lab-01/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
         Content-Length: {}\r\nContent-Digest: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        digest_of(body)
    )
}

/// A HEAD asking how much of the upload of `whole` (its digest) is held.
#[allow(dead_code)]
pub fn head_req(id: &str, whole: &[u8]) -> String {
    format!(
        "HEAD /v1/episodes/lab-01/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
         Repr-Digest: {}\r\nConnection: close\r\n\r\n",
        digest_of(whole)
    )
}

/// A PATCH appending `whole[offset..offset + len]`, completing the upload
/// when that reaches its end; `extra` header lines go before the blank line.
#[allow(dead_code)]
pub fn patch_head(id: &str, whole: &[u8], offset: usize, len: usize, extra: &str) -> String {
    let complete = offset + len == whole.len();
    format!(
        "PATCH /v1/episodes/lab-01/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN_A}\r\n\
         Content-Type: application/partial-upload\r\nContent-Length: {len}\r\nRepr-Digest: {}\r\n\
         Upload-Offset: {offset}\r\nUpload-Complete: {}\r\nConnection: close\r\n{extra}\r\n",
        digest_of(whole),
        if complete { "?1" } else { "?0" }
    )
}

/// The PATCH head and its bytes.
#[allow(dead_code)]
pub fn patch(id: &str, whole: &[u8], offset: usize, len: usize) -> Vec<u8> {
    let mut req = patch_head(id, whole, offset, len, "").into_bytes();
    req.extend_from_slice(&whole[offset..offset + len]);
    req
}

/// Sends `bytes`, then reads until the server closes (at most 10 s).
#[allow(dead_code)]
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    read_until_close(&mut s)
}

#[allow(dead_code)]
pub fn read_until_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of an answer.
#[allow(dead_code)]
pub fn status_of(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {resp:?}"))
}

/// A header field's value in an answer (name case-insensitive).
#[allow(dead_code)]
pub fn field<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `Upload-Offset` of an answer, which must have one.
#[allow(dead_code)]
pub fn offset_of(resp: &str) -> usize {
    field(resp, "Upload-Offset")
        .unwrap_or_else(|| panic!("no Upload-Offset in {resp:?}"))
        .parse()
        .unwrap()
}

/// Sends a PUT's head and the first `sent` bytes of `body`, then closes:
/// a connection cut mid-body.
#[allow(dead_code)]
pub fn cut_put(addr: SocketAddr, id: &str, body: &[u8], sent: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(put_head(id, body).as_bytes()).unwrap();
    s.write_all(&body[..sent]).unwrap();
}

/// Bytes that do not repeat in any short period (so an append at a wrong
/// offset could never hash right by accident).
#[allow(dead_code)]
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
