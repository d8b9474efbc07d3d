//! Errors of the shipper's client, each carrying the stage of the path it
//! happened in (resolve, connect, tls, send, receive), which `--ping`
//! prints and the pass's verdict follows; and the one place where an I/O
//! error on a connection is classified (a TLS alert, a timeout, a break).

use std::fmt;
use std::io;

/// Where in the path a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Resolve,
    Connect,
    Tls,
    Send,
    Receive,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Resolve => "resolve",
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Send => "send",
            Stage::Receive => "receive",
        })
    }
}

#[derive(Debug)]
pub enum ClientError {
    /// DNS: no address for the receiver's host.
    Resolve { host: String, source: io::Error },
    /// TCP: every address refused, timed out or was unreachable.
    Connect { target: String, source: io::Error },
    /// TLS: the handshake failed or the receiver rejected our certificate.
    Tls { detail: String, hint: &'static str },
    /// Timed out waiting on an established connection.
    Timeout { stage: Stage },
    /// The connection broke. `before_response`: nothing of an answer was
    /// read, so on a reused connection the request can be retried.
    Io {
        stage: Stage,
        source: io::Error,
        before_response: bool,
    },
    /// The receiver answered something that is not valid HTTP for us.
    Protocol(String),
    /// Reading the body to send (our own tarball) failed: a local disk
    /// problem, not the network's.
    Body(io::Error),
}

impl ClientError {
    pub fn stage(&self) -> Stage {
        match self {
            ClientError::Resolve { .. } => Stage::Resolve,
            ClientError::Connect { .. } => Stage::Connect,
            ClientError::Tls { .. } => Stage::Tls,
            ClientError::Timeout { stage } | ClientError::Io { stage, .. } => *stage,
            ClientError::Protocol(_) => Stage::Receive,
            ClientError::Body(_) => Stage::Send,
        }
    }

    /// What an operator should check, one sentence.
    pub fn hint(&self) -> &'static str {
        match self {
            ClientError::Resolve { .. } => "check `receiver` in the config and this host's DNS (/etc/resolv.conf, /etc/hosts)",
            ClientError::Connect { .. } => {
                "check that cis490-receiver runs and listens on that port, and that the network path (WireGuard, firewall) is up"
            }
            ClientError::Tls { hint, .. } => hint,
            ClientError::Timeout { .. } => "the receiver accepted the connection but stopped answering: check its load and logs; io_timeout_s sets the limit",
            ClientError::Io { stage: Stage::Tls, .. } => {
                "the receiver closed the connection during the TLS handshake: is `receiver` its TLS port? its log says why (e.g. a client certificate it does not accept)"
            }
            ClientError::Io { .. } => "the connection broke: check the receiver's logs and the network; the next pass retries",
            ClientError::Protocol(_) => "is `receiver` pointing at cis490-receiver (or a proxy in front of it)?",
            ClientError::Body(_) => "the outbox tarball could not be read: check the lab host's disk (dmesg); the next pass repacks if it is gone",
        }
    }

    /// TLS failures need a human (certificates); everything else may heal.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientError::Tls { .. })
    }

    /// A kept-alive connection closed by the receiver just as we reused it.
    pub fn is_stale_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Io {
                before_response: true,
                ..
            }
        )
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Resolve { host, source } => write!(f, "cannot resolve {host}: {source}"),
            ClientError::Connect { target, source } => {
                write!(f, "cannot connect to {target}: {source}")
            }
            ClientError::Tls { detail, .. } => write!(f, "TLS failed: {detail}"),
            ClientError::Timeout { stage } => write!(f, "timed out ({stage})"),
            ClientError::Io { stage, source, .. } => {
                write!(f, "connection failed ({stage}): {source}")
            }
            ClientError::Protocol(m) => write!(f, "unexpected answer from the receiver: {m}"),
            ClientError::Body(e) => write!(f, "reading the tarball to send: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Resolve { source, .. }
            | ClientError::Connect { source, .. }
            | ClientError::Io { source, .. }
            | ClientError::Body(source) => Some(source),
            _ => None,
        }
    }
}

/// Turns an I/O error on a connection into a `ClientError`, recognising TLS
/// alerts (in TLS 1.3 a rejected client certificate shows up only here, on
/// the first read after the handshake) and timeouts. The one place where a
/// socket timeout (`WouldBlock` from SO_RCVTIMEO, or `TimedOut`) becomes
/// `ClientError::Timeout`.
pub(super) fn classify(e: io::Error, stage: Stage, before_response: bool) -> ClientError {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return tls_error(tls);
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout { stage },
        _ => ClientError::Io {
            stage,
            source: e,
            before_response,
        },
    }
}

pub(super) fn tls_error(e: &rustls::Error) -> ClientError {
    use rustls::AlertDescription as A;
    let (detail, hint) = match e {
        rustls::Error::InvalidCertificate(c) => (
            format!("server certificate verification failed: {c:?}"),
            "check ca_file is the CA that issued the receiver's certificate, and that the host in `receiver` is one of the certificate's names",
        ),
        rustls::Error::AlertReceived(A::CertificateRequired) => (
            "the receiver requires a client certificate".into(),
            "set cert_file and key_file to this host's certificate (scripts/pki.sh host HOST_ID)",
        ),
        rustls::Error::AlertReceived(a @ (A::BadCertificate | A::UnknownCA | A::CertificateExpired | A::CertificateUnknown | A::UnsupportedCertificate | A::AccessDenied)) => (
            format!("the receiver rejected our client certificate ({a:?})"),
            "cert_file must be issued by the receiver's client_ca_file CA, be valid now, and carry clientAuth",
        ),
        other => (
            other.to_string(),
            "check both sides' certificates and that `receiver` points at a TLS listener",
        ),
    };
    ClientError::Tls { detail, hint }
}
