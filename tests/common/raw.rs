//! Raw HTTP/1.1 against the receiver's loopback plain listener, for the
//! resumable-upload tests: request heads written byte for byte, answers
//! read until the server closes, and the fields a resume needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::TOKEN_A;

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
