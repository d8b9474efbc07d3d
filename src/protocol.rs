//! The protocol both sides speak, apart from sockets: the routes, the
//! `Content-Digest` header (RFC 9530), the answers ([`Status`]: code, word
//! and log level) and their JSON bodies. Not here: HTTP framing (`http`),
//! and which answer a request earns (`receiver::admit`).
//!
//! ```text
//! POST /v1/ping                              -> 200 {"status":"ok","host_id",..}
//! PUT   /v1/episodes/{host_id}/{episode_id}  -> 201 stored | 200 present
//!                                               | 409 conflict | 4xx/5xx
//!       (chunked, digest in the trailer)     -> as PUT | 428 digest_required
//!                                               | 400 digest_missing
//! HEAD  /v1/episodes/{host_id}/{episode_id}  -> 204 (Upload-Offset) | 200 ?1 | 409
//! PATCH /v1/episodes/{host_id}/{episode_id}  -> 204 (Upload-Offset) | as PUT
//! ```
//! docs/transport.md is the prose version; keep the two in step.

use crate::ids;
use crate::log::Level;

pub const PING_PATH: &str = "/v1/ping";
pub const EPISODES_PREFIX: &str = "/v1/episodes/";
pub const CONTENT_TYPE: &str = "application/zstd";

/// The methods an episode's path accepts, for `Allow`.
pub const EPISODE_METHODS: &str = "PUT, HEAD, PATCH";

/// What a request target names, decided from the raw bytes of the path.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Ping,
    /// `PUT`: a whole upload.
    Episode {
        host_id: String,
        episode_id: String,
    },
    /// `HEAD`: how much of an upload the receiver holds (docs/transport.md,
    /// "Resumable uploads").
    Offset {
        host_id: String,
        episode_id: String,
    },
    /// `PATCH`: bytes appended to an upload.
    Append {
        host_id: String,
        episode_id: String,
    },
}

/// Why a target or method was refused, with the status it earns.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// 400: malformed path (never decoded, never touches the disk).
    BadPath(&'static str),
    /// 400: a host or episode id outside `ids::RULE`.
    BadId,
    /// 404
    NotFound,
    /// 405, with the `Allow` value.
    MethodNotAllowed(&'static str),
}

/// Maps a method and request target to a route. The path is never
/// percent-decoded: a `%` anywhere is a 400, so `%2e%2e` can never become
/// `..` at some later layer; the raw bytes must pass the id rule.
pub fn route(method: &str, target: &str) -> Result<Route, RouteError> {
    if !target.starts_with('/') {
        return Err(RouteError::BadPath("the target must be an absolute path"));
    }
    if target.contains('%') {
        return Err(RouteError::BadPath(
            "percent-encoding is not accepted in paths",
        ));
    }
    if target.contains(['?', '#']) {
        return Err(RouteError::BadPath(
            "queries and fragments are not accepted",
        ));
    }
    if target == PING_PATH {
        return match method {
            "POST" => Ok(Route::Ping),
            _ => Err(RouteError::MethodNotAllowed("POST")),
        };
    }
    let Some(rest) = target.strip_prefix(EPISODES_PREFIX) else {
        return Err(RouteError::NotFound);
    };
    let mut parts = rest.split('/');
    let (Some(host), Some(episode), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(RouteError::BadPath(
            "expected /v1/episodes/{host_id}/{episode_id}",
        ));
    };
    if !ids::is_valid(host) || !ids::is_valid(episode) {
        return Err(RouteError::BadId);
    }
    let (host_id, episode_id) = (host.to_owned(), episode.to_owned());
    match method {
        "PUT" => Ok(Route::Episode {
            host_id,
            episode_id,
        }),
        "HEAD" => Ok(Route::Offset {
            host_id,
            episode_id,
        }),
        "PATCH" => Ok(Route::Append {
            host_id,
            episode_id,
        }),
        _ => Err(RouteError::MethodNotAllowed(EPISODE_METHODS)),
    }
}

pub fn episode_path(host_id: &str, episode_id: &str) -> String {
    format!("{EPISODES_PREFIX}{host_id}/{episode_id}")
}

/// `sha-256=:<base64>:` for a digest.
pub fn content_digest(sha256: &[u8; 32]) -> String {
    format!("sha-256=:{}:", base64_encode(sha256))
}

/// Extracts the sha-256 member of a `Content-Digest` dictionary. Other
/// algorithms may be present and are ignored; a missing, repeated or
/// malformed sha-256 is an error whose text goes into the 400 answer.
pub fn parse_content_digest(value: &str) -> Result<[u8; 32], &'static str> {
    sha256_member(value).map_err(|e| e.text(false))
}

/// Why a digest dictionary (`Content-Digest`, `Repr-Digest`: the same
/// syntax, RFC 9530) has no usable sha-256 member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DigestFault {
    Member,
    Twice,
    Colons,
    Base64,
    Length,
    Missing,
}

impl DigestFault {
    /// The 400 answer's text, naming the field (static: it goes into an
    /// `Answer` without allocation, as every framing refusal does).
    fn text(self, repr: bool) -> &'static str {
        use DigestFault::*;
        match (self, repr) {
            (Member, false) => "Content-Digest members must look like sha-256=:<base64>:",
            (Twice, false) => "Content-Digest names sha-256 twice",
            (Colons, false) => {
                "Content-Digest sha-256 value must be wrapped in colons: sha-256=:<base64>:"
            }
            (Base64, false) => "Content-Digest sha-256 value is not valid base64",
            (Length, false) => "Content-Digest sha-256 value is not 32 bytes",
            (Missing, false) => "Content-Digest has no sha-256 member",
            (Member, true) => "Repr-Digest members must look like sha-256=:<base64>:",
            (Twice, true) => "Repr-Digest names sha-256 twice",
            (Colons, true) => {
                "Repr-Digest sha-256 value must be wrapped in colons: sha-256=:<base64>:"
            }
            (Base64, true) => "Repr-Digest sha-256 value is not valid base64",
            (Length, true) => "Repr-Digest sha-256 value is not 32 bytes",
            (Missing, true) => "Repr-Digest has no sha-256 member",
        }
    }
}

fn sha256_member(value: &str) -> Result<[u8; 32], DigestFault> {
    let mut found = None;
    // Base64 has no commas, so a plain split is exact for this dictionary.
    for member in value.split(',') {
        let member = member.trim_matches([' ', '\t']);
        let Some((key, val)) = member.split_once('=') else {
            return Err(DigestFault::Member);
        };
        if key != "sha-256" {
            continue;
        }
        if found.is_some() {
            return Err(DigestFault::Twice);
        }
        let inner = val
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or(DigestFault::Colons)?;
        let bytes = base64_decode(inner).ok_or(DigestFault::Base64)?;
        let digest: [u8; 32] = bytes.try_into().map_err(|_| DigestFault::Length)?;
        found = Some(digest);
    }
    found.ok_or(DigestFault::Missing)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict standard base64 with padding: anything else is `None`.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| B64.iter().position(|&x| x == c).map(|p| p as u32);
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, q) in s.chunks(4).enumerate() {
        let last = i == s.len() / 4 - 1;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Reject non-canonical encodings (stray low bits before the padding).
        if bytes[3 - pad..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

pub use reply::Reply;

// nanoserde's derive expands to code clippy would write with `?`.
#[allow(clippy::question_mark)]
mod reply {
    use nanoserde::SerJson;

    /// Every JSON answer the receiver sends. `status` is always present; the
    /// rest depends on the route and outcome.
    #[derive(SerJson, Debug, Default, Clone, PartialEq)]
    pub struct Reply {
        pub status: String,
        /// The digest stored under the id, lowercase hex (uploads).
        pub sha256: Option<String>,
        pub message: Option<String>,
        /// Ping: the host the credentials authenticate as.
        pub host_id: Option<String>,
        /// Ping: the receiver's version.
        pub version: Option<String>,
        /// Ping: the receiver's clock, RFC 3339 UTC.
        pub server_time: Option<String>,
    }

    impl Reply {
        pub fn status(status: &str) -> Reply {
            Reply {
                status: status.to_owned(),
                ..Reply::default()
            }
        }

        pub fn with_message(mut self, msg: impl Into<String>) -> Reply {
            self.message = Some(msg.into());
            self
        }

        pub fn with_sha256(mut self, hex: impl Into<String>) -> Reply {
            self.sha256 = Some(hex.into());
            self
        }

        pub fn to_json(&self) -> String {
            let mut s = self.serialize_json();
            s.push('\n');
            s
        }

        /// Reads an answer leniently (`crate::json`): the string fields we
        /// know, whatever else the object holds. `None` only if the body is
        /// not a JSON object; a missing `status` reads as empty.
        pub fn from_json(body: &[u8]) -> Option<Reply> {
            let mut m = crate::json::string_members(std::str::from_utf8(body).ok()?.trim())?;
            let mut take = |k: &str| m.remove(k);
            Some(Reply {
                status: take("status").unwrap_or_default(),
                sha256: take("sha256"),
                message: take("message"),
                host_id: take("host_id"),
                version: take("version"),
                server_time: take("server_time"),
            })
        }
    }
}

/// Every answer the receiver sends, each with its HTTP code, the `status`
/// word of its JSON body and the level of the request's log line: written
/// here once, so that no call site pairs a code with a word (docs/transport.md,
/// "Upload", is the table this follows).
///
/// Several variants share a code: 200 is `ok` (ping) or `present`, 400 is
/// `bad_request` or `digest_mismatch`, and the shipper acts on the word.
/// Refusals of a malformed head or framing (414, 417, 431, 501, 505) keep
/// the word `bad_request`: the code says what HTTP says about it, the word
/// what the shipper does (reject, 65), the same for all of them.
///
/// Levels: `warning` where the operator has something to do on the central
/// node (a storage error, a full disk, too few connection slots); `info`
/// for everything a client caused or can fix itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200 `ok`: a ping.
    Ok,
    /// 200 `present`: these exact bytes are already stored.
    Present,
    /// 201 `stored`: published and durable.
    Stored,
    /// 400 `bad_request`: malformed request, path, digest header, empty body.
    BadRequest,
    /// 400 `digest_mismatch`: the body's sha256 is not its `Content-Digest`.
    DigestMismatch,
    /// 400 `digest_missing`: a streamed (chunked) `PUT` ended with no
    /// `Content-Digest` in its head or trailer; a keyed upload's bytes are
    /// kept for an empty completing `PATCH`.
    DigestMissing,
    /// 401 `unauthorized`: no token, another scheme, an unknown token.
    Unauthorized,
    /// 403 `forbidden`: certificate of another host, or another host's path.
    Forbidden,
    /// 404 `not_found`
    NotFound,
    /// 405 `method_not_allowed` (with `Allow`)
    MethodNotAllowed,
    /// 408 `timeout`: head or body too slow.
    Timeout,
    /// 409 `conflict`: other bytes are stored under this id.
    Conflict,
    /// 411 `length_required`: no `Content-Length` (a `PATCH`, or a `PUT`
    /// that is not chunked), or a chunked body on a method other than `PUT`.
    LengthRequired,
    /// 413 `too_large`: over `max_body_bytes`.
    TooLarge,
    /// 414 `bad_request`: request line too long.
    UriTooLong,
    /// 417 `bad_request`: an expectation other than `100-continue`.
    ExpectationFailed,
    /// 431 `bad_request`: head too large or too many headers.
    HeadTooLarge,
    /// 500 `error`: a storage error other than a full disk.
    Error,
    /// 501 `bad_request`: a `Transfer-Encoding` other than chunked.
    NotImplemented,
    /// 503 `busy`: every connection slot is taken (with `Retry-After`).
    Busy,
    /// 505 `bad_request`: an HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// 507 `no_space`: the store is full.
    NoSpace,
    /// 409 `upload_in_progress`: another connection is appending to this
    /// upload right now; try again later (the shipper's next pass).
    UploadInProgress,
    /// 409 `offset_mismatch`: an append's `Upload-Offset` is not the offset
    /// the receiver holds (sent back in `Upload-Offset`).
    OffsetMismatch,
    /// 204 (no body): an upload's offset (`HEAD`), or an append that did
    /// not complete it (`PATCH` with `Upload-Complete: ?0`).
    Partial,
    /// 428 `digest_required`: a streamed `PUT` without a digest in its head,
    /// for an id already stored: say the digest first (decided from the
    /// head, nothing read).
    DigestRequired,
}

impl Status {
    /// Every answer, for counting them (`receiver::report`).
    pub const ALL: [Status; 26] = [
        Status::Ok,
        Status::Present,
        Status::Stored,
        Status::BadRequest,
        Status::DigestMismatch,
        Status::Unauthorized,
        Status::Forbidden,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::Timeout,
        Status::Conflict,
        Status::LengthRequired,
        Status::TooLarge,
        Status::UriTooLong,
        Status::ExpectationFailed,
        Status::HeadTooLarge,
        Status::Error,
        Status::NotImplemented,
        Status::Busy,
        Status::VersionNotSupported,
        Status::NoSpace,
        Status::UploadInProgress,
        Status::OffsetMismatch,
        Status::Partial,
        Status::DigestMissing,
        Status::DigestRequired,
    ];

    /// Its place in `ALL`.
    pub fn index(self) -> usize {
        Status::ALL
            .iter()
            .position(|s| *s == self)
            .expect("ALL lists every status")
    }

    pub const fn code(self) -> u16 {
        match self {
            Status::Ok | Status::Present => 200,
            Status::Stored => 201,
            Status::BadRequest | Status::DigestMismatch | Status::DigestMissing => 400,
            Status::Unauthorized => 401,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::Timeout => 408,
            Status::Conflict | Status::UploadInProgress | Status::OffsetMismatch => 409,
            Status::Partial => 204,
            Status::LengthRequired => 411,
            Status::DigestRequired => 428,
            Status::TooLarge => 413,
            Status::UriTooLong => 414,
            Status::ExpectationFailed => 417,
            Status::HeadTooLarge => 431,
            Status::Error => 500,
            Status::NotImplemented => 501,
            Status::Busy => 503,
            Status::VersionNotSupported => 505,
            Status::NoSpace => 507,
        }
    }

    /// The JSON body's `status`.
    pub const fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Present => "present",
            Status::Stored => "stored",
            Status::BadRequest
            | Status::UriTooLong
            | Status::ExpectationFailed
            | Status::HeadTooLarge
            | Status::NotImplemented
            | Status::VersionNotSupported => "bad_request",
            Status::DigestMismatch => "digest_mismatch",
            Status::DigestMissing => "digest_missing",
            Status::DigestRequired => "digest_required",
            Status::Unauthorized => "unauthorized",
            Status::Forbidden => "forbidden",
            Status::NotFound => "not_found",
            Status::MethodNotAllowed => "method_not_allowed",
            Status::Timeout => "timeout",
            Status::Conflict => "conflict",
            Status::LengthRequired => "length_required",
            Status::TooLarge => "too_large",
            Status::Error => "error",
            Status::Busy => "busy",
            Status::NoSpace => "no_space",
            Status::UploadInProgress => "upload_in_progress",
            Status::OffsetMismatch => "offset_mismatch",
            Status::Partial => "partial",
        }
    }

    /// The level of the line that logs a request so answered.
    pub const fn level(self) -> Level {
        match self {
            Status::Error | Status::Busy | Status::NoSpace => Level::Warn,
            _ => Level::Info,
        }
    }

    /// The answer to a head or framing that `http` refused with `code`
    /// (`HeadError::status`, `Refusal::status`). `http` speaks HTTP codes
    /// only; this is where they meet the protocol's words. It only ever
    /// produces the codes matched here (a test in `receiver::admit` holds
    /// it to that); any other would be a malformed request, 400.
    pub const fn refusing(code: u16) -> Status {
        match code {
            411 => Status::LengthRequired,
            414 => Status::UriTooLong,
            417 => Status::ExpectationFailed,
            431 => Status::HeadTooLarge,
            501 => Status::NotImplemented,
            505 => Status::VersionNotSupported,
            _ => Status::BadRequest,
        }
    }
}

/// `status` words the shipper acts on (see [`Status`]).
pub mod status {
    use super::Status;

    pub const STORED: &str = Status::Stored.word();
    pub const PRESENT: &str = Status::Present.word();
    pub const CONFLICT: &str = Status::Conflict.word();
    pub const DIGEST_MISMATCH: &str = Status::DigestMismatch.word();
    pub const UPLOAD_IN_PROGRESS: &str = Status::UploadInProgress.word();
    pub const OFFSET_MISMATCH: &str = Status::OffsetMismatch.word();
    pub const DIGEST_MISSING: &str = Status::DigestMissing.word();
    pub const DIGEST_REQUIRED: &str = Status::DigestRequired.word();
}

/// Resumable uploads (docs/transport.md, "Resumable uploads"): the header
/// fields of draft-ietf-httpbis-resumable-upload that this protocol uses,
/// and their values (RFC 8941 structured fields, the two types we need).
pub mod resumable {
    /// `Content-Type` of an append (`PATCH`).
    pub const PARTIAL_UPLOAD: &str = "application/partial-upload";
    /// Bytes of the upload the receiver holds durably; where an append
    /// starts.
    pub const UPLOAD_OFFSET: &str = "Upload-Offset";
    /// `?1`: this request's content ends the upload; `?0`: more follows.
    pub const UPLOAD_COMPLETE: &str = "Upload-Complete";
    /// The whole upload's length.
    pub const UPLOAD_LENGTH: &str = "Upload-Length";
    /// RFC 9530: the digest of the whole tarball (the representation), as
    /// opposed to `Content-Digest`, the digest of this request's content.
    /// Which upload a `HEAD` or `PATCH` continues is (host, id, this).
    pub const REPR_DIGEST: &str = "Repr-Digest";
    /// 128 random bits, 32 lowercase hex digits, naming the upload (its
    /// partial) while its digest is not known yet: a streamed `PUT`, and
    /// the `HEAD` and `PATCH` that resume it (docs/transport.md, "Upload
    /// while packing").
    pub const UPLOAD_KEY: &str = "Upload-Key";

    /// An `Upload-Key`: exactly 32 lowercase hex digits (no sign, no
    /// whitespace inside, no upper case: one spelling per key, since it
    /// becomes part of a file name).
    pub fn parse_upload_key(v: &str) -> Result<[u8; 16], &'static str> {
        let v = v.trim_matches([' ', '\t']).as_bytes();
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut key = [0u8; 16];
        if v.len() != 32 {
            return Err("must be 32 lowercase hex digits");
        }
        for (i, pair) in v.chunks(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => key[i] = hi << 4 | lo,
                _ => return Err("must be 32 lowercase hex digits"),
            }
        }
        Ok(key)
    }

    /// The sha-256 member of a `Repr-Digest` (the digest of the whole
    /// tarball; the same dictionary syntax as `Content-Digest`), or the
    /// 400 answer's text.
    pub fn parse_repr_digest(v: &str) -> Result<[u8; 32], &'static str> {
        super::sha256_member(v).map_err(|e| e.text(true))
    }

    /// An sf-integer that is not negative (RFC 8941 §3.3.1: at most 15
    /// digits, no sign but `-`, no leading `+`, no whitespace inside).
    pub fn parse_offset(v: &str) -> Result<u64, &'static str> {
        let v = v.trim_matches([' ', '\t']);
        if v.starts_with('-') {
            return Err("must not be negative");
        }
        if v.is_empty() || v.len() > 15 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be a whole number of at most 15 digits");
        }
        v.parse().map_err(|_| "must be a whole number")
    }

    /// An sf-boolean: `?1` or `?0`, nothing else.
    pub fn parse_complete(v: &str) -> Result<bool, &'static str> {
        match v.trim_matches([' ', '\t']) {
            "?1" => Ok(true),
            "?0" => Ok(false),
            _ => Err("must be ?1 or ?0"),
        }
    }

    /// `?1` / `?0`.
    pub fn complete(done: bool) -> &'static str {
        if done {
            "?1"
        } else {
            "?0"
        }
    }

    /// Whether `v` is an `Upload-Key` exactly as sent and recorded (the
    /// shipper's sidecar `key` line): [`parse_upload_key`] without the
    /// optional whitespace a field value may carry around it.
    pub fn is_upload_key(v: &str) -> bool {
        v.len() == 32 && parse_upload_key(v).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumable_fields() {
        use resumable::*;
        assert_eq!(parse_offset("0"), Ok(0));
        assert_eq!(parse_offset(" 123456789012345 "), Ok(123_456_789_012_345));
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "0x10",
            "1 2",
            "1234567890123456",
            "abc",
        ] {
            assert!(parse_offset(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_complete("?1"), Ok(true));
        assert_eq!(parse_complete("?0"), Ok(false));
        for bad in ["1", "true", "?2", "", "? 1"] {
            assert!(parse_complete(bad).is_err(), "{bad:?}");
        }
        assert_eq!(complete(true), "?1");
        let key = "3f9c0a6e1b7d4c25a8e0f1d2c3b4a596";
        let parsed = parse_upload_key(key).unwrap();
        assert_eq!(crate::hashing::to_hex(&parsed), key);
        assert_eq!(parse_upload_key(&format!(" {key} ")), Ok(parsed));
        for bad in [
            "",
            &key[..31],
            &format!("{key}0"),
            &key.to_uppercase(),
            &key.replacen('3', "g", 1),
            &key.replacen('3', "-", 1),
            &format!("{} {}", &key[..16], &key[16..]),
        ] {
            assert!(parse_upload_key(bad).is_err(), "{bad:?}");
        }
        assert!(is_upload_key("0123456789abcdef0123456789abcdef"));
        assert!(!is_upload_key(&format!(" {}", &key[1..])), "no whitespace");
        for bad in [
            "",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert!(!is_upload_key(bad), "{bad:?}");
        }
        let d = [9u8; 32];
        assert_eq!(parse_repr_digest(&super::content_digest(&d)), Ok(d));
        let e = parse_repr_digest("sha-512=:AAAA:").unwrap_err();
        assert!(e.starts_with("Repr-Digest "), "{e}");
        let e = parse_content_digest("").unwrap_err();
        assert!(e.starts_with("Content-Digest "), "{e}");
    }

    #[test]
    fn routes() {
        assert_eq!(route("POST", "/v1/ping"), Ok(Route::Ping));
        assert_eq!(
            route("PUT", "/v1/episodes/lab-01/ep.1"),
            Ok(Route::Episode {
                host_id: "lab-01".into(),
                episode_id: "ep.1".into()
            })
        );
        assert_eq!(
            route("GET", "/v1/ping"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            route("GET", "/v1/episodes/a/b"),
            Err(RouteError::MethodNotAllowed("PUT, HEAD, PATCH"))
        );
        let (host_id, episode_id) = ("a".to_owned(), "b".to_owned());
        assert_eq!(
            route("HEAD", "/v1/episodes/a/b"),
            Ok(Route::Offset {
                host_id: host_id.clone(),
                episode_id: episode_id.clone()
            })
        );
        assert_eq!(
            route("PATCH", "/v1/episodes/a/b"),
            Ok(Route::Append {
                host_id,
                episode_id
            })
        );
        assert_eq!(
            route("PATCH", "/v1/ping"),
            Err(RouteError::MethodNotAllowed("POST"))
        );
        for hostile in ["/v1/episodes/a/..", "/v1/episodes/a/%2e"] {
            assert!(route("HEAD", hostile).is_err() && route("PATCH", hostile).is_err());
        }
        assert_eq!(route("PUT", "/v2/x"), Err(RouteError::NotFound));
    }

    #[test]
    fn hostile_paths_are_400() {
        for t in [
            "/v1/episodes/a/..",
            "/v1/episodes/a/.",
            "/v1/episodes/a/%2e%2e",
            "/v1/episodes/a/..%2f",
            "/v1/episodes/a/%252e%252e%252f",
            "/v1/episodes/a%2fb/c",
            "/v1/episodes/a/b%5cc",
            "/v1/episodes/a/b\\c",
            "/v1/episodes/a/b%00",
            "/v1/episodes/a/%c0%ae",
            "/v1/episodes/a/%",
            "/v1/episodes/a/%1",
            "/v1/episodes//b",
            "/v1/episodes/a/b/",
            "/v1/episodes/a",
            "/v1/episodes/a/b/c",
            "/v1/episodes/a/b?x=1",
            "/v1/episodes/a/b#f",
            "/v1/episodes/a/-rf",
            "http://x/v1/ping",
            "*",
        ] {
            assert!(
                matches!(
                    route("PUT", t),
                    Err(RouteError::BadPath(_) | RouteError::BadId)
                ),
                "{t}: {:?}",
                route("PUT", t)
            );
        }
        let long = format!("/v1/episodes/a/{}", "x".repeat(129));
        assert!(matches!(route("PUT", &long), Err(RouteError::BadId)));
        let ok = format!("/v1/episodes/a/{}", "x".repeat(128));
        assert!(route("PUT", &ok).is_ok());
    }

    #[test]
    fn base64_round_trip_and_strictness() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        for bad in [
            "Zm8",
            "Zm9=",
            "Z===",
            "Zm=8",
            "Zm8=Zm8=",
            "Zm8*",
            "Zm9v YmFy",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_digest_parsing() {
        let d = [7u8; 32];
        let v = content_digest(&d);
        assert_eq!(parse_content_digest(&v), Ok(d));
        let multi = format!("sha-512=:AAAA:, {v}");
        assert_eq!(parse_content_digest(&multi), Ok(d));
        assert!(parse_content_digest("sha-512=:AAAA:").is_err());
        assert!(parse_content_digest(&format!("{v},{v}")).is_err());
        assert!(parse_content_digest("sha-256=AAAA").is_err());
        assert!(parse_content_digest("sha-256=:AAAA:").is_err()); // 3 bytes
        assert!(parse_content_digest("sha-256=:!!!!:").is_err());
        assert!(parse_content_digest("").is_err());
    }

    #[test]
    fn every_status_has_the_code_and_word_of_the_transport_table() {
        // docs/transport.md, "Upload": code, `status`.
        #[rustfmt::skip]
        let table = [
            (Status::Stored, 201, "stored"), (Status::Present, 200, "present"),
            (Status::Conflict, 409, "conflict"), (Status::DigestMismatch, 400, "digest_mismatch"),
            (Status::BadRequest, 400, "bad_request"), (Status::Unauthorized, 401, "unauthorized"),
            (Status::Forbidden, 403, "forbidden"), (Status::Timeout, 408, "timeout"),
            (Status::LengthRequired, 411, "length_required"), (Status::TooLarge, 413, "too_large"),
            (Status::Busy, 503, "busy"), (Status::NoSpace, 507, "no_space"),
            (Status::Error, 500, "error"), (Status::Ok, 200, "ok"),
            (Status::DigestMissing, 400, "digest_missing"), (Status::DigestRequired, 428, "digest_required"),
        ];
        for (s, code, word) in table {
            assert_eq!((s.code(), s.word()), (code, word), "{s:?}");
        }
        for code in [400, 411, 414, 417, 431, 501, 505] {
            assert_eq!(Status::refusing(code).code(), code);
        }
        assert_eq!(status::DIGEST_MISMATCH, "digest_mismatch");
        assert_eq!(Status::NoSpace.level(), Level::Warn);
        assert_eq!(Status::Unauthorized.level(), Level::Info);
    }

    #[test]
    fn reply_json_round_trip() {
        let r = Reply::status(status::CONFLICT)
            .with_sha256("ab".repeat(32))
            .with_message("x \"quoted\"");
        let back = Reply::from_json(r.to_json().as_bytes()).unwrap();
        assert_eq!(back, r);
        let minimal = Reply::from_json(br#"{"status":"stored"}"#).unwrap();
        assert_eq!(minimal.status, "stored");
        assert_eq!(minimal.sha256, None);
    }
}
