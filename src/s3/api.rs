//! The S3 operations the receiver uses, signed (SigV4, `crate::sigv4`) and
//! sent path-style (`/<bucket>/<key>`) over `conn`; each counted in
//! [`Stats`] by operation and outcome, with its time and the bytes sent.
//!
//! This layer returns the store's answer as it is (a 412 or a 404 is an
//! answer, not an error); only a request that got no usable answer is an
//! [`S3Error`]. What an answer means for an upload is `store`'s business.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use crate::config::s3::S3Config;
use crate::metrics::{Kind, Metrics};
use crate::protocol::Status;
use crate::s3::conn::{Answer, Body, Conn, ConnError, Target};
use crate::sigv4::{self, Credentials, Payload};
use crate::timefmt;

/// How long to wait for a TCP connection to the store.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Per socket write to the store, and the longest silence awaiting an answer.
const IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The requests the receiver makes, for errors, logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    HeadBucket,
    HeadName,
    HeadData,
    PutData,
    PutName,
    CreateMultipart,
    PutPart,
    CompleteMultipart,
    AbortMultipart,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::HeadBucket,
        Op::HeadName,
        Op::HeadData,
        Op::PutData,
        Op::PutName,
        Op::CreateMultipart,
        Op::PutPart,
        Op::CompleteMultipart,
        Op::AbortMultipart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::HeadBucket => "head_bucket",
            Op::HeadName => "head_name",
            Op::HeadData => "head_data",
            Op::PutData => "put_data",
            Op::PutName => "put_name",
            Op::CreateMultipart => "create_multipart",
            Op::PutPart => "put_part",
            Op::CompleteMultipart => "complete_multipart",
            Op::AbortMultipart => "abort_multipart",
        }
    }

    fn index(self) -> usize {
        Op::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// What became of a request, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    NotFound,
    PreconditionFailed,
    ClientError,
    ServerError,
    /// No answer: connection refused or cut, timeout, TLS.
    Unanswered,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::PreconditionFailed,
        Outcome::ClientError,
        Outcome::ServerError,
        Outcome::Unanswered,
    ];

    fn of(status: Option<u16>) -> Outcome {
        match status {
            None => Outcome::Unanswered,
            Some(200..=299) => Outcome::Ok,
            Some(404) => Outcome::NotFound,
            Some(412) => Outcome::PreconditionFailed,
            Some(500..) => Outcome::ServerError,
            Some(_) => Outcome::ClientError,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::PreconditionFailed => "precondition_failed",
            Outcome::ClientError => "client_error",
            Outcome::ServerError => "server_error",
            Outcome::Unanswered => "unanswered",
        }
    }

    /// An answer the protocol expects (a 404 on a lookup, a 412 on a
    /// conditional create), rather than the store failing us.
    fn is_expected(self) -> bool {
        matches!(
            self,
            Outcome::Ok | Outcome::NotFound | Outcome::PreconditionFailed
        )
    }
}

/// Requests to the store since start: counts, time, bytes.
#[derive(Default)]
pub struct Stats {
    requests: [[AtomicU64; Outcome::ALL.len()]; Op::ALL.len()],
    nanos: [AtomicU64; Op::ALL.len()],
    sent: AtomicU64,
    last_ok: AtomicU64,
    last_failed: AtomicU64,
}

impl Stats {
    fn record(&self, op: Op, status: Option<u16>, took: std::time::Duration, sent: u64) {
        let outcome = Outcome::of(status);
        self.requests[op.index()][outcome as usize].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[op.index()].fetch_add(nanos, Ordering::Relaxed);
        self.sent.fetch_add(sent, Ordering::Relaxed);
        let now = timefmt::unix(SystemTime::now());
        if outcome.is_expected() {
            self.last_ok.store(now, Ordering::Relaxed);
        } else {
            self.last_failed.store(now, Ordering::Relaxed);
        }
    }

    /// Requests of `op` that ended in `outcome` (by name), for tests.
    pub fn count(&self, op: Op, outcome: &str) -> u64 {
        Outcome::ALL
            .iter()
            .position(|o| o.name() == outcome)
            .map_or(0, |i| self.requests[op.index()][i].load(Ordering::Relaxed))
    }

    /// The store's families in the receiver's metrics file
    /// (docs/operating.md).
    pub fn write(&self, m: &mut Metrics) {
        let name = "cis490_receiver_s3_requests_total";
        m.family(
            name,
            Kind::Counter,
            "Requests to the object store since start, by operation and outcome.",
        );
        for op in Op::ALL {
            for outcome in Outcome::ALL {
                let n = self.requests[op.index()][outcome as usize].load(Ordering::Relaxed);
                m.sample(
                    name,
                    &[("op", op.name()), ("outcome", outcome.name())],
                    n as f64,
                );
            }
        }
        let name = "cis490_receiver_s3_request_seconds_total";
        m.family(
            name,
            Kind::Counter,
            "Time spent in requests to the object store since start, by operation \
             (divide by the requests for the mean).",
        );
        for op in Op::ALL {
            let nanos = self.nanos[op.index()].load(Ordering::Relaxed);
            m.sample(name, &[("op", op.name())], nanos as f64 / 1e9);
        }
        m.single(
            "cis490_receiver_s3_sent_bytes_total",
            Kind::Counter,
            "Body bytes sent to the object store since start (tarballs, parts, name objects).",
            self.sent.load(Ordering::Relaxed) as f64,
        )
        .single(
            "cis490_receiver_s3_last_success_timestamp_seconds",
            Kind::Gauge,
            "When the object store last gave an expected answer, seconds since the epoch (0: never).",
            self.last_ok.load(Ordering::Relaxed) as f64,
        )
        .single(
            "cis490_receiver_s3_last_failure_timestamp_seconds",
            Kind::Gauge,
            "When a request to the object store last failed (no answer, 5xx, refused), seconds \
             since the epoch (0: never).",
            self.last_failed.load(Ordering::Relaxed) as f64,
        );
    }
}

/// Why a request to the store did not give the answer wanted.
#[derive(Debug)]
pub enum ErrorKind {
    /// No answer: connect, TLS, send, receive, timeout.
    Net(io::Error),
    /// An answer other than the ones wanted, with the store's error code
    /// and message when its XML body had them.
    Status {
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },
    /// An answer that cannot be used (no upload id, bad metadata).
    Protocol(String),
    /// The spooled upload could not be read: this machine's disk.
    Local(io::Error),
    /// The spooled upload no longer has the sha256 it was verified to
    /// have (read again to be sent in parts): this machine's disk.
    SpoolChanged,
}

/// A request to the store that failed: which, on which key, and why.
#[derive(Debug)]
pub struct S3Error {
    pub op: Op,
    pub key: String,
    pub kind: ErrorKind,
}

impl S3Error {
    pub fn new(op: Op, key: &str, kind: ErrorKind) -> S3Error {
        S3Error {
            op,
            key: key.to_owned(),
            kind,
        }
    }

    /// An unwanted answer, with what its body says.
    pub fn status(op: Op, key: &str, a: &Answer) -> S3Error {
        let text = String::from_utf8_lossy(&a.body);
        S3Error::new(
            op,
            key,
            ErrorKind::Status {
                status: a.status,
                code: xml_text(&text, "Code"),
                message: xml_text(&text, "Message"),
            },
        )
    }

    /// The store refused the bytes it received as not the ones signed for
    /// (`x-amz-content-sha256`): they changed on this machine's disk.
    /// Or we found so ourselves before sending the last part.
    pub fn is_payload_mismatch(&self) -> bool {
        match &self.kind {
            ErrorKind::SpoolChanged => true,
            ErrorKind::Status { code: Some(c), .. } => {
                c == "XAmzContentSHA256Mismatch" || c == "BadDigest"
            }
            _ => false,
        }
    }

    /// What the shipper is told: 503 (retry later: the store is down,
    /// slow, or refusing us until an operator fixes it), or 500 when this
    /// machine's spool is at fault.
    pub fn answer_status(&self) -> Status {
        match self.kind {
            ErrorKind::Local(_) => Status::Error,
            _ if self.is_payload_mismatch() => Status::Error,
            _ => Status::Unavailable,
        }
    }

    /// What an operator should check, for the log line.
    fn hint(&self) -> &'static str {
        match &self.kind {
            ErrorKind::Net(_) => "is the object store up and s3_endpoint right?",
            ErrorKind::Status { status: 403, .. } => {
                "check s3_access_key_id, s3_secret_key_file, the user's rights on s3_bucket, and \
                 this machine's clock"
            }
            ErrorKind::Status {
                status: 301 | 400, ..
            } => "check s3_region and s3_bucket",
            ErrorKind::Status { status: 404, .. } => "does s3_bucket exist?",
            ErrorKind::Status { .. } => "the object store's logs say more",
            ErrorKind::Protocol(_) => "is s3_endpoint an S3 API?",
            ErrorKind::Local(_) => "check store_dir's disk (dmesg)",
            ErrorKind::SpoolChanged => {
                "store_dir's disk changed a verified upload: check it (dmesg, SMART); the \
                 upload was dropped and will be sent again"
            }
        }
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "object store, {} {}: ", self.op.name(), self.key)?;
        match &self.kind {
            ErrorKind::Net(e) => write!(f, "no answer: {e}")?,
            ErrorKind::Status {
                status,
                code,
                message,
            } => {
                write!(f, "answered {status}")?;
                if let Some(c) = code {
                    write!(f, " {c}")?;
                }
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
            }
            ErrorKind::Protocol(m) => write!(f, "unusable answer: {m}")?,
            ErrorKind::Local(e) => write!(f, "reading the spooled upload: {e}")?,
            ErrorKind::SpoolChanged => write!(
                f,
                "the spooled upload no longer has the sha256 it was verified to have"
            )?,
        }
        write!(f, " ({})", self.hint())
    }
}

impl std::error::Error for S3Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Net(e) | ErrorKind::Local(e) => Some(e),
            _ => None,
        }
    }
}

/// The text of the first `<name>…</name>` element, entities decoded: the
/// few values we read from the store's XML (`UploadId`, `Code`,
/// `Message`). Not an XML parser: the documents are the store's own,
/// small, and the elements read never nest.
pub fn xml_text(doc: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = doc.find(&open)? + open.len();
    let len = doc[start..].find(&close)?;
    Some(
        doc[start..start + len]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// Text escaped for an XML element.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The bucket and how to reach it: what every request needs.
pub struct Bucket {
    target: Target,
    name: String,
    credentials: Credentials,
    pub stats: Stats,
}

/// One request: operation, method, key (empty: the bucket itself), query,
/// headers to sign and send, body, and what the signature says of it.
pub struct Call<'a> {
    pub op: Op,
    pub method: &'a str,
    pub key: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Body<'a>,
    pub payload: Payload,
}

impl Bucket {
    pub fn new(cfg: &S3Config) -> Result<Bucket, crate::tls::TlsError> {
        let tls = if cfg.endpoint.tls {
            Some(crate::tls::client_config(cfg.ca_file.as_deref(), None)?)
        } else {
            None
        };
        Ok(Bucket {
            target: Target {
                endpoint: cfg.endpoint.clone(),
                tls,
                connect_timeout: CONNECT_TIMEOUT,
                io_timeout: IO_TIMEOUT,
            },
            name: cfg.bucket.clone(),
            credentials: cfg.credentials.clone(),
            stats: Stats::default(),
        })
    }

    /// `s3://bucket at https://host:port`, for log lines.
    pub fn describe(&self) -> String {
        format!("s3://{} at {}", self.name, self.target.endpoint.url())
    }

    /// A series of requests on one kept-alive connection.
    pub fn session(&self) -> Session<'_> {
        Session {
            bucket: self,
            conn: None,
        }
    }
}

/// Requests in sequence, on one connection while the store keeps it open.
pub struct Session<'a> {
    bucket: &'a Bucket,
    conn: Option<Conn>,
}

impl Session<'_> {
    /// Signs and sends one request; the store's answer, whatever its
    /// status. `beat` runs while the body goes out and the answer is
    /// awaited (see `conn`).
    pub fn call(&mut self, c: &Call<'_>, beat: &mut dyn FnMut()) -> Result<Answer, S3Error> {
        let b = self.bucket;
        let path = if c.key.is_empty() {
            format!("/{}", b.name)
        } else {
            format!("/{}/{}", b.name, c.key)
        };
        let authority = b.target.endpoint.authority();
        let len = c.body.len().to_string();
        let mut headers: Vec<(&str, &str)> = c.headers.to_vec();
        if matches!(c.method, "PUT" | "POST") {
            headers.push(("content-length", &len));
        }
        let req = sigv4::Request {
            method: c.method,
            host: &authority,
            path: &path,
            query: c.query,
            headers: &headers,
            payload: c.payload,
        };
        let signed = sigv4::sign(&req, &b.credentials, SystemTime::now())
            .map_err(|e| S3Error::new(c.op, c.key, ErrorKind::Protocol(e.to_string())))?;
        headers.extend(signed.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let head = crate::http::write_request_head(
            c.method,
            &sigv4::target(&path, c.query),
            &authority,
            &headers,
        );
        let started = Instant::now();
        let mut sent = 0u64;
        let result = self.exchange(&head, c.method == "HEAD", c.body, &mut sent, beat);
        let status = result.as_ref().ok().map(|a| a.status);
        b.stats.record(c.op, status, started.elapsed(), sent);
        result.map_err(|e| {
            let kind = match e {
                ConnError::Net(e) => ErrorKind::Net(e),
                ConnError::Local(e) => ErrorKind::Local(e),
            };
            S3Error::new(c.op, c.key, kind)
        })
    }

    fn exchange(
        &mut self,
        head: &[u8],
        is_head: bool,
        body: Body<'_>,
        sent: &mut u64,
        beat: &mut dyn FnMut(),
    ) -> Result<Answer, ConnError> {
        let mut conn = match self.conn.take() {
            Some(c) if c.is_open() => c,
            _ => Conn::open(&self.bucket.target).map_err(ConnError::Net)?,
        };
        let answer = conn.exchange(head, is_head, body, sent, beat)?;
        if conn.is_open() {
            self.conn = Some(conn);
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_values_and_escapes() {
        let doc = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>\
                   <Message>a &lt;b&gt; &amp; &quot;c&quot;</Message></Error>";
        assert_eq!(xml_text(doc, "Code").as_deref(), Some("NoSuchKey"));
        assert_eq!(xml_text(doc, "Message").as_deref(), Some("a <b> & \"c\""));
        assert_eq!(xml_text(doc, "UploadId"), None);
        assert_eq!(xml_text("<A>x", "A"), None);
        assert_eq!(xml_escape("\"e&t<>\""), "&quot;e&amp;t&lt;&gt;&quot;");
    }

    #[test]
    fn what_the_shipper_is_told() {
        let err = |kind| S3Error::new(Op::PutData, "k", kind);
        let status = |s: u16, code: &str| ErrorKind::Status {
            status: s,
            code: Some(code.into()),
            message: None,
        };
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            err(ErrorKind::Net(refused)).answer_status(),
            Status::Unavailable
        );
        assert_eq!(
            err(status(503, "SlowDown")).answer_status(),
            Status::Unavailable
        );
        assert_eq!(
            err(status(403, "AccessDenied")).answer_status(),
            Status::Unavailable
        );
        let mismatch = err(status(400, "XAmzContentSHA256Mismatch"));
        assert!(mismatch.is_payload_mismatch());
        assert_eq!(mismatch.answer_status(), Status::Error);
        let eio = io::Error::from_raw_os_error(5);
        assert_eq!(err(ErrorKind::Local(eio)).answer_status(), Status::Error);
        let text = err(status(403, "SignatureDoesNotMatch")).to_string();
        assert!(
            text.contains("put_data k: answered 403 SignatureDoesNotMatch")
                && text.contains("s3_secret_key_file"),
            "{text}"
        );
    }

    #[test]
    fn outcomes_are_counted_by_op() {
        let s = Stats::default();
        s.record(
            Op::PutName,
            Some(412),
            std::time::Duration::from_millis(3),
            80,
        );
        s.record(Op::PutName, None, std::time::Duration::ZERO, 0);
        assert_eq!(s.count(Op::PutName, "precondition_failed"), 1);
        assert_eq!(s.count(Op::PutName, "unanswered"), 1);
        assert_eq!(s.count(Op::PutData, "ok"), 0);
        let mut m = Metrics::new();
        s.write(&mut m);
        let text = m.text();
        assert!(
            text.contains(
                "cis490_receiver_s3_requests_total{op=\"put_name\",outcome=\"precondition_failed\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("cis490_receiver_s3_sent_bytes_total 80\n"),
            "{text}"
        );
        assert!(text.contains("cis490_receiver_s3_request_seconds_total{op=\"put_name\"} 0.003\n"));
    }
}
