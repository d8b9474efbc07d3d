//! What the shipper does with the outcome of an upload: the receiver's
//! answer (`verdict`, the table of docs/transport.md "Upload" in code) or a
//! failure to get one (`on_error`). `queue` applies the verdict (moves
//! files, logs, counts); nothing here touches a file or a socket.

use crate::exit;
use crate::protocol::{status, Reply};
use crate::shipper::client::{ClientError, Stage};

/// Why a pass stops early (the rest of the queue would meet the same fate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// 401/403: this host's token or certificate is refused (77).
    Credentials,
    /// 503: every connection slot is taken (75).
    Busy,
    /// 503 `unavailable`: the object store the receiver publishes to did
    /// not take the upload (75); the receiver's operator is needed if it
    /// lasts.
    StoreUnavailable,
    /// 507: the receiver's store is full (75).
    OutOfSpace,
    /// No connection at all: DNS, TCP, or a handshake cut short (75).
    Unreachable,
    /// The TLS handshake failed on certificates (69): a human must act.
    Tls,
}

impl Stop {
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Credentials => exit::NOPERM,
            Stop::Busy | Stop::StoreUnavailable | Stop::OutOfSpace | Stop::Unreachable => {
                exit::TEMPFAIL
            }
            Stop::Tls => exit::UNAVAILABLE,
        }
    }

    /// How the log line names it.
    pub fn what(self) -> &'static str {
        match self {
            Stop::Credentials => "receiver refused our credentials",
            Stop::Busy => "receiver busy",
            Stop::StoreUnavailable => "receiver's object store unavailable",
            Stop::OutOfSpace => "receiver out of space",
            Stop::Unreachable => "receiver unreachable",
            Stop::Tls => "TLS failed",
        }
    }
}

/// The shipper's decision for one answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 201 (`stored: true`) or 200: the receiver holds exactly these bytes.
    Retire { stored: bool },
    /// 409: other bytes are stored under this id (their digest, if given).
    Quarantine { theirs: Option<String> },
    /// 400 `digest_mismatch`: our tarball or its recorded digest is wrong;
    /// drop both and pack again next pass (75).
    Repack,
    /// Stop the pass; everything is kept.
    Stop(Stop),
    /// A temporary failure of this upload: 408, 5xx (75).
    Retry,
    /// The receiver refuses this upload and will again: a human is needed
    /// (65). Everything is kept.
    Rejected,
}

impl Verdict {
    /// Whether the answer shows the whole path working: the receiver
    /// authenticated us and judged the upload itself (stored, present,
    /// conflict, digest mismatch, rejected). Busy, full, timeouts and 5xx
    /// do not count, nor does a refusal of our credentials. Recorded as
    /// the last contact, which escalation goes by.
    pub fn is_contact(&self) -> bool {
        matches!(
            self,
            Verdict::Retire { .. }
                | Verdict::Quarantine { .. }
                | Verdict::Repack
                | Verdict::Rejected
        )
    }
}

/// The verdict for an answer with HTTP `code` and JSON body `reply`.
pub fn verdict(code: u16, reply: Option<&Reply>) -> Verdict {
    match code {
        201 => Verdict::Retire { stored: true },
        200 => Verdict::Retire { stored: false },
        // Another connection is appending to this upload right now; or the
        // receiver still disagrees about the offset after one more try.
        409 if reply.is_some_and(|r| {
            r.status == status::UPLOAD_IN_PROGRESS || r.status == status::OFFSET_MISMATCH
        }) =>
        {
            Verdict::Retry
        }
        409 => Verdict::Quarantine {
            theirs: reply.and_then(|r| r.sha256.clone()),
        },
        400 if reply.is_some_and(|r| r.status == status::DIGEST_MISMATCH) => Verdict::Repack,
        401 | 403 => Verdict::Stop(Stop::Credentials),
        503 if reply.is_some_and(|r| r.status == status::UNAVAILABLE) => {
            Verdict::Stop(Stop::StoreUnavailable)
        }
        503 => Verdict::Stop(Stop::Busy),
        507 => Verdict::Stop(Stop::OutOfSpace),
        408 => Verdict::Retry,
        c if c >= 500 => Verdict::Retry,
        _ => Verdict::Rejected,
    }
}

/// The verdict for an upload that got no answer. Failing to reach the
/// receiver at all (resolve, connect, handshake) stops the pass: every
/// later episode would fail the same way. A TLS verdict on certificates
/// needs a human. A failure in transit (send, receive, or reading our own
/// tarball) concerns this episode only; the others may still go.
pub fn on_error(e: &ClientError) -> Verdict {
    if e.is_tls() {
        return Verdict::Stop(Stop::Tls);
    }
    match e.stage() {
        Stage::Resolve | Stage::Connect | Stage::Tls => Verdict::Stop(Stop::Unreachable),
        Stage::Send | Stage::Receive => Verdict::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/transport.md, "Upload": every row, plus what the table leaves to
    /// "other".
    #[test]
    fn the_upload_table() {
        let with = |s: &str| Some(Reply::status(s));
        let conflict = Reply::status(status::CONFLICT).with_sha256("ab".repeat(32));
        let rows: Vec<(u16, Option<Reply>, Verdict)> = vec![
            (201, with("stored"), Verdict::Retire { stored: true }),
            (200, with("present"), Verdict::Retire { stored: false }),
            (
                409,
                Some(conflict),
                Verdict::Quarantine {
                    theirs: Some("ab".repeat(32)),
                },
            ),
            (409, None, Verdict::Quarantine { theirs: None }),
            (409, with("upload_in_progress"), Verdict::Retry),
            (409, with("offset_mismatch"), Verdict::Retry),
            (400, with("digest_mismatch"), Verdict::Repack),
            (400, with("bad_request"), Verdict::Rejected),
            (400, None, Verdict::Rejected),
            (401, with("unauthorized"), Verdict::Stop(Stop::Credentials)),
            (403, with("forbidden"), Verdict::Stop(Stop::Credentials)),
            (408, with("timeout"), Verdict::Retry),
            (411, with("length_required"), Verdict::Rejected),
            (413, with("too_large"), Verdict::Rejected),
            (503, with("busy"), Verdict::Stop(Stop::Busy)),
            (503, None, Verdict::Stop(Stop::Busy)),
            (
                503,
                with("unavailable"),
                Verdict::Stop(Stop::StoreUnavailable),
            ),
            (507, with("no_space"), Verdict::Stop(Stop::OutOfSpace)),
            (500, with("error"), Verdict::Retry),
            (502, None, Verdict::Retry),
            (404, with("not_found"), Verdict::Rejected),
            (405, with("method_not_allowed"), Verdict::Rejected),
            (414, with("bad_request"), Verdict::Rejected),
            (417, with("bad_request"), Verdict::Rejected),
            (431, with("bad_request"), Verdict::Rejected),
            (501, with("bad_request"), Verdict::Retry),
            (505, with("bad_request"), Verdict::Retry),
            (301, None, Verdict::Rejected),
        ];
        for (code, reply, want) in rows {
            assert_eq!(verdict(code, reply.as_ref()), want, "{code} {reply:?}");
        }
    }

    #[test]
    fn failures_without_an_answer() {
        use std::io;
        let io = |stage| ClientError::Io {
            stage,
            source: io::Error::from(io::ErrorKind::ConnectionReset),
            before_response: false,
        };
        let rows = [
            (
                ClientError::Resolve {
                    host: "r".into(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                },
                Verdict::Stop(Stop::Unreachable),
            ),
            (
                ClientError::Connect {
                    target: "r:1".into(),
                    source: io::Error::from(io::ErrorKind::ConnectionRefused),
                },
                Verdict::Stop(Stop::Unreachable),
            ),
            (io(Stage::Tls), Verdict::Stop(Stop::Unreachable)),
            (
                ClientError::Timeout { stage: Stage::Tls },
                Verdict::Stop(Stop::Unreachable),
            ),
            (
                ClientError::Tls {
                    detail: "bad cert".into(),
                    hint: "",
                },
                Verdict::Stop(Stop::Tls),
            ),
            (io(Stage::Send), Verdict::Retry),
            (io(Stage::Receive), Verdict::Retry),
            (
                ClientError::Timeout {
                    stage: Stage::Receive,
                },
                Verdict::Retry,
            ),
            (ClientError::Protocol("garbage".into()), Verdict::Retry),
            (
                ClientError::Body(io::Error::from(io::ErrorKind::NotFound)),
                Verdict::Retry,
            ),
        ];
        for (e, want) in rows {
            assert_eq!(on_error(&e), want, "{e:?}");
        }
    }

    #[test]
    fn stops_map_to_exit_codes() {
        assert_eq!(Stop::Credentials.exit_code(), exit::NOPERM);
        assert_eq!(Stop::Busy.exit_code(), exit::TEMPFAIL);
        assert_eq!(Stop::OutOfSpace.exit_code(), exit::TEMPFAIL);
        assert_eq!(Stop::OutOfSpace.what(), "receiver out of space");
    }
}
