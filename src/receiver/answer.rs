//! What the receiver says, as data: an [`Answer`] (a [`Status`], its JSON
//! body unless it has none, extra header fields), the bytes that carry it,
//! the request's log line, and whether the connection stays open afterwards
//! ([`next`]).
//!
//! Two kinds of answer carry no body: a `204` (an upload's offset), and any
//! answer to a `HEAD` (RFC 9110 §9.3.2; [`Answer::without_body`]). They are
//! sent without `Content-Type` and `Content-Length`: a `204` must not have
//! one, and for a `HEAD` there is no `GET` whose length it could state.
//!
//! Pure: no sockets here (`conn` arms the write deadline, logs and writes,
//! in that order, through one function), and no choice of which answer a
//! request earns (`admit` decides from the head; the body's end is
//! [`Answer::outcome`], a table over what the store did).

use std::net::SocketAddr;

use crate::hashing::to_hex;
use crate::http::{self, HeadError};
use crate::protocol::{self, resumable, Reply, Status};
use crate::receiver::store::{Outcome, StoreError};

/// The interim answer to `Expect: 100-continue`: no body, no log line.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One final answer. Its JSON `status` is always `status.word()`: the only
/// way to make one is [`Answer::new`] and the helpers below.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    status: Status,
    /// Boxed: answers travel in `Result`s, and most are errors.
    reply: Box<Reply>,
    /// Extra fields, in the order they are written.
    headers: Vec<(&'static str, String)>,
    /// Whether the JSON body is sent (not for a `204`, nor to a `HEAD`).
    body: bool,
}

impl Answer {
    pub fn new(status: Status) -> Answer {
        Answer {
            status,
            reply: Box::new(Reply::status(status.word())),
            headers: Vec::new(),
            body: status != Status::Partial,
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn reply(&self) -> &Reply {
        &self.reply
    }

    /// The first extra header (`Allow`, `WWW-Authenticate`, `Retry-After`).
    pub fn header(&self) -> Option<(&'static str, &str)> {
        self.headers.first().map(|(n, v)| (*n, v.as_str()))
    }

    /// The value of an extra header.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the JSON body is sent.
    pub fn has_body(&self) -> bool {
        self.body
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Answer {
        self.reply.message = Some(message.into());
        self
    }

    pub fn with_sha256(mut self, digest: &[u8; 32]) -> Answer {
        self.reply.sha256 = Some(to_hex(digest));
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    /// The same answer to a `HEAD`: status and fields, no body.
    pub fn without_body(mut self) -> Answer {
        self.body = false;
        self
    }

    /// A head `http` could not parse (or a start that is not HTTP at all).
    pub fn bad_head(e: &HeadError) -> Answer {
        Answer::new(Status::refusing(e.status())).with_message(e.to_string())
    }

    /// The 200 to an authenticated ping.
    pub fn pong(host: &str, server_time: String) -> Answer {
        let mut a = Answer::new(Status::Ok);
        a.reply.host_id = Some(host.to_owned());
        a.reply.version = Some(crate::VERSION.to_owned());
        a.reply.server_time = Some(server_time);
        a
    }

    /// 409 with the digest of what is stored, so the shipper can name both.
    pub fn conflict(theirs: &[u8; 32]) -> Answer {
        Answer::new(Status::Conflict)
            .with_sha256(theirs)
            .with_message("other bytes are already stored under this id")
    }

    /// A storage error. The client learns the category (507: retry later;
    /// 500); the detail, with paths, goes to the log only.
    pub fn storage(e: &StoreError) -> Answer {
        Answer::new(e.status()).with_message("storage error")
    }

    /// The end of an upload whose body was read in full: what the store
    /// did with it (docs/transport.md, "Upload").
    pub fn outcome(outcome: &Outcome, expected: &[u8; 32]) -> Answer {
        match outcome {
            Outcome::Stored => Answer::new(Status::Stored).with_sha256(expected),
            Outcome::AlreadyPresent => Answer::new(Status::Present).with_sha256(expected),
            Outcome::Conflict(theirs) => Answer::conflict(theirs),
            Outcome::DigestMismatch(actual) => {
                Answer::new(Status::DigestMismatch).with_message(format!(
                    "body sha256 is {}, Content-Digest says {}; nothing stored",
                    to_hex(actual),
                    to_hex(expected)
                ))
            }
        }
    }

    /// `HEAD`: the receiver holds `offset` bytes of this upload, durably
    /// (and knows its whole length, if a `PUT` began it).
    pub fn offset(offset: u64, length: Option<u64>) -> Answer {
        let a = Answer::new(Status::Partial)
            .with_header(resumable::UPLOAD_OFFSET, offset.to_string())
            .with_header(resumable::UPLOAD_COMPLETE, resumable::complete(false));
        let a = match length {
            Some(n) => a.with_header(resumable::UPLOAD_LENGTH, n.to_string()),
            None => a,
        };
        a.with_header("Cache-Control", "no-store")
    }

    /// `HEAD` of an upload whose bytes are stored (`length` of them).
    pub fn complete(digest: &[u8; 32], length: u64) -> Answer {
        Answer::new(Status::Present)
            .with_sha256(digest)
            .with_header(resumable::UPLOAD_COMPLETE, resumable::complete(true))
            .with_header(resumable::UPLOAD_OFFSET, length.to_string())
            .with_header("Cache-Control", "no-store")
    }

    /// `HEAD` of an upload while other bytes are stored under the id: the
    /// digest of those, as a field since the answer has no body.
    pub fn conflict_head(theirs: &[u8; 32]) -> Answer {
        Answer::conflict(theirs)
            .with_header(resumable::REPR_DIGEST, protocol::content_digest(theirs))
    }

    /// An append whose `Upload-Offset` is not where the upload stands:
    /// where it does.
    pub fn offset_mismatch(theirs: u64, ours: u64) -> Answer {
        Answer::new(Status::OffsetMismatch)
            .with_message(format!(
                "Upload-Offset is {theirs}, but the receiver holds {ours} bytes of this upload; \
                 append from {ours}"
            ))
            .with_header(resumable::UPLOAD_OFFSET, ours.to_string())
    }

    /// Another connection is appending to this upload right now.
    pub fn in_progress() -> Answer {
        Answer::new(Status::UploadInProgress)
            .with_message("another connection is appending to this upload; retry when it has ended")
    }

    /// The end of an append that completed an upload: as [`Answer::outcome`],
    /// but a mismatch speaks of the whole upload, whose partial is gone.
    pub fn upload_outcome(outcome: &Outcome, expected: &[u8; 32]) -> Answer {
        match outcome {
            Outcome::DigestMismatch(actual) => {
                Answer::new(Status::DigestMismatch).with_message(format!(
                    "the upload's sha256 is {}, Repr-Digest says {}; its bytes are deleted: \
                     pack again and upload from the start",
                    to_hex(actual),
                    to_hex(expected)
                ))
            }
            _ => Answer::outcome(outcome, expected),
        }
    }

    /// A streamed `PUT` without a digest in its head, for an id already
    /// stored: nothing is read; the client says the digest first (and
    /// learns 200 or 409 from the head alone).
    pub fn digest_required() -> Answer {
        Answer::new(Status::DigestRequired).with_message(
            "this id is already stored: send Content-Digest in the head (not only in the trailer)",
        )
    }

    /// A streamed `PUT` that ended with no digest in its head or trailer
    /// (a proxy may have dropped the trailer). `kept`: its bytes are held
    /// as the partial its `Upload-Key` names, for an empty completing
    /// `PATCH`.
    pub fn digest_missing(kept: Option<u64>) -> Answer {
        let a = Answer::new(Status::DigestMissing);
        match kept {
            Some(n) => a
                .with_message(format!(
                    "no Content-Digest in the head or the trailer; the {n} bytes are kept: \
                     complete the upload with PATCH, Upload-Key, Repr-Digest, \
                     Upload-Offset: {n}, Upload-Complete: ?1"
                ))
                .with_header(resumable::UPLOAD_OFFSET, n.to_string()),
            None => a.with_message(
                "no Content-Digest in the head or the trailer, and no Upload-Key: nothing kept",
            ),
        }
    }

    /// Every connection slot is taken.
    pub fn busy() -> Answer {
        Answer::new(Status::Busy)
            .with_message("too many connections; retry later")
            .with_header("Retry-After", "60")
    }
}

/// The bytes of a final answer: status line, `Content-Type`,
/// `Content-Length`, `Connection: close` unless the connection stays open,
/// the extra headers, then the JSON body. An answer without a body has
/// neither the body nor the two fields that describe it.
pub fn encode(answer: &Answer, keep_alive: bool) -> Vec<u8> {
    let body = if answer.body {
        answer.reply.to_json()
    } else {
        String::new()
    };
    let len = body.len().to_string();
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if answer.body {
        headers.push(("Content-Type", "application/json"));
        headers.push(("Content-Length", &len));
    }
    if !keep_alive {
        headers.push(("Connection", "close"));
    }
    headers.extend(answer.headers.iter().map(|(n, v)| (*n, v.as_str())));
    let mut out = http::write_response_head(answer.status.code(), &headers);
    out.extend_from_slice(body.as_bytes());
    out
}

/// What the connection does after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the next request (pipelined bytes first).
    KeepAlive,
    /// Close now: nothing more of this request can arrive.
    Close,
    /// Half-close, then read and discard for a bounded time: the answer
    /// went out before the body was read, and a client still sending it
    /// must read the answer, not a reset (bad-inputs.md L7).
    Linger,
}

/// docs/transport.md, "Keep-alive": a connection stays open only after a
/// 200/201/204 whose body (none, for a ping or a `HEAD`) was consumed
/// exactly (so a `HEAD` and the `PATCH` it leads to share one), and only if
/// the client asked for it (HTTP/1.1, no `Connection: close`). An answer
/// sent while body bytes may still be arriving lingers; any other closes.
/// Pipelined requests after an error are never executed: there is no next
/// request once the connection closes.
pub fn next(status: Status, keep_alive: bool, body_consumed: bool) -> Next {
    if !body_consumed {
        Next::Linger
    } else if keep_alive && matches!(status.code(), 200 | 201 | 204) {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// One request's log line: source, authenticated host, request line, the
/// answer's code, body bytes received and the rate. Method and target are
/// `-` when the head could not be parsed.
pub fn log_line(
    peer: SocketAddr,
    host: Option<&str>,
    method: &str,
    target: &str,
    status: Status,
    bytes: u64,
    secs: f64,
) -> String {
    let rate = if secs > 0.0 {
        bytes as f64 / secs / 1e6
    } else {
        0.0
    };
    format!(
        "{peer} host={} {method} {target} {} bytes={bytes} secs={secs:.3} MB/s={rate:.1}",
        host.unwrap_or("-"),
        status.code()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::path::PathBuf;

    fn text(answer: &Answer, keep_alive: bool) -> String {
        String::from_utf8(encode(answer, keep_alive)).unwrap()
    }

    #[test]
    fn answers_are_written_byte_for_byte() {
        let a = Answer::new(Status::MethodNotAllowed)
            .with_message("use PUT")
            .with_header("Allow", "PUT");
        let body = "{\"status\":\"method_not_allowed\",\"message\":\"use PUT\"}\n";
        assert_eq!(
            text(&a, false),
            format!(
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\nAllow: PUT\r\n\r\n{body}",
                body.len()
            )
        );
        let stored = Answer::outcome(&Outcome::Stored, &[0xab; 32]);
        let t = text(&stored, true);
        assert!(t.starts_with("HTTP/1.1 201 Created\r\n"), "{t}");
        assert!(!t.contains("Connection"), "kept alive: {t}");
        assert!(
            t.ends_with(&format!("\"sha256\":\"{}\"}}\n", "ab".repeat(32))),
            "{t}"
        );
        assert!(CONTINUE.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn answers_without_a_body() {
        let t = text(&Answer::offset(12, Some(20)), true);
        assert_eq!(
            t,
            "HTTP/1.1 204 No Content\r\nUpload-Offset: 12\r\nUpload-Complete: ?0\r\n\
             Upload-Length: 20\r\nCache-Control: no-store\r\n\r\n"
        );
        let t = text(&Answer::offset(0, None), false);
        assert!(
            t.contains("Upload-Offset: 0\r\n") && !t.contains("Upload-Length"),
            "{t}"
        );
        assert!(
            t.contains("Connection: close\r\n") && t.ends_with("\r\n\r\n"),
            "{t}"
        );
        let d = [0xab; 32];
        let t = text(&Answer::complete(&d, 7).without_body(), true);
        assert!(
            t.starts_with("HTTP/1.1 200 OK\r\nUpload-Complete: ?1\r\nUpload-Offset: 7\r\n"),
            "{t}"
        );
        assert!(
            !t.contains("Content-Length") && t.ends_with("\r\n\r\n"),
            "{t}"
        );
        let t = text(&Answer::conflict_head(&d).without_body(), false);
        assert!(t.starts_with("HTTP/1.1 409 Conflict\r\n"), "{t}");
        assert!(
            t.contains(&format!(
                "\r\nRepr-Digest: {}\r\n",
                protocol::content_digest(&d)
            )),
            "{t}"
        );
        assert!(t.ends_with("\r\n\r\n"), "no body: {t}");
        // An error to a HEAD: the code and fields, never the JSON.
        let t = text(&Answer::busy().without_body(), false);
        assert!(
            t.contains("Retry-After: 60\r\n") && t.ends_with("\r\n\r\n"),
            "{t}"
        );
        let m = Answer::offset_mismatch(5, 9);
        assert_eq!(
            (m.status().code(), m.field("upload-offset")),
            (409, Some("9"))
        );
        assert_eq!(m.reply().status, "offset_mismatch");
        assert_eq!(Answer::in_progress().reply().status, "upload_in_progress");
    }

    #[test]
    fn busy_says_when_to_retry() {
        let t = text(&Answer::busy(), false);
        assert!(t.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{t}");
        assert!(t.contains("\r\nRetry-After: 60\r\n"), "{t}");
        assert!(t.contains("\"status\":\"busy\""), "{t}");
    }

    #[test]
    fn the_end_of_an_upload_as_a_table() {
        let ours = [1u8; 32];
        let theirs = [2u8; 32];
        let table = [
            (Outcome::Stored, Status::Stored, Some(ours)),
            (Outcome::AlreadyPresent, Status::Present, Some(ours)),
            (Outcome::Conflict(theirs), Status::Conflict, Some(theirs)),
            (
                Outcome::DigestMismatch(theirs),
                Status::DigestMismatch,
                None,
            ),
        ];
        for (outcome, status, sha) in table {
            let a = Answer::outcome(&outcome, &ours);
            assert_eq!(a.status(), status, "{outcome:?}");
            assert_eq!(a.reply().status, status.word());
            assert_eq!(a.reply().sha256, sha.map(|d| to_hex(&d)), "{outcome:?}");
        }
        let m = Answer::outcome(&Outcome::DigestMismatch(theirs), &ours);
        let msg = m.reply().message.clone().unwrap();
        assert!(
            msg.contains(&to_hex(&theirs)) && msg.contains(&to_hex(&ours)),
            "{msg}"
        );
    }

    #[test]
    fn storage_errors_tell_the_client_only_the_category() {
        let p = PathBuf::from("/store/h/.upload-e.1.0");
        let full = StoreError::NoSpace("writing", p.clone(), io::Error::from_raw_os_error(28));
        let eio = StoreError::Io("syncing", p, io::Error::from_raw_os_error(5));
        for (e, code, word) in [(full, 507, "no_space"), (eio, 500, "error")] {
            let a = Answer::storage(&e);
            assert_eq!((a.status().code(), a.reply().status.as_str()), (code, word));
            assert!(!text(&a, false).contains("/store"), "no paths to clients");
        }
    }

    #[test]
    fn head_errors_keep_their_code() {
        for e in [
            HeadError::Malformed("x"),
            HeadError::Truncated,
            HeadError::UriTooLong,
            HeadError::TooLarge,
            HeadError::Version,
        ] {
            let a = Answer::bad_head(&e);
            assert_eq!(a.status().code(), e.status(), "{e:?}");
            assert_eq!(a.reply().status, "bad_request");
        }
    }

    #[test]
    fn keep_alive_only_after_a_consumed_success() {
        use Status::*;
        #[rustfmt::skip]
        let table = [
            // (status, client asked to keep alive, body consumed) -> next
            (Stored, true, true, Next::KeepAlive),
            (Present, true, true, Next::KeepAlive),
            (Ok, true, true, Next::KeepAlive),
            (Partial, true, true, Next::KeepAlive),      // a HEAD, or an append: PATCH may follow
            (Partial, false, true, Next::Close),
            (OffsetMismatch, true, false, Next::Linger), // PATCH refused from its head
            (UploadInProgress, true, true, Next::Close), // HEAD has no body
            (Stored, false, true, Next::Close),          // Connection: close, or HTTP/1.0
            (DigestMismatch, true, true, Next::Close),   // an error closes
            (Error, true, true, Next::Close),
            (Present, true, false, Next::Linger),        // 200 from the head: body may follow
            (Conflict, true, false, Next::Linger),
            (Timeout, true, false, Next::Linger),        // 408 mid-body
            (NoSpace, false, false, Next::Linger),       // 507 mid-body
            (BadRequest, true, false, Next::Linger),
        ];
        for (status, keep, consumed, want) in table {
            assert_eq!(
                next(status, keep, consumed),
                want,
                "{status:?} {keep} {consumed}"
            );
        }
    }

    #[test]
    fn log_lines() {
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            log_line(peer, Some("lab-01"), "PUT", "/v1/episodes/lab-01/e", Status::Stored, 2_000_000, 2.0),
            "127.0.0.1:4000 host=lab-01 PUT /v1/episodes/lab-01/e 201 bytes=2000000 secs=2.000 MB/s=1.0"
        );
        assert_eq!(
            log_line(peer, None, "-", "-", Status::BadRequest, 0, 0.0),
            "127.0.0.1:4000 host=- - - 400 bytes=0 secs=0.000 MB/s=0.0"
        );
    }
}
