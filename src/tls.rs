//! TLS for both sides: one function builds each side's rustls config from
//! the configured files, and one binds a client certificate to a host id.
//!
//! TLS 1.2 and 1.3 only (rustls has nothing older), the ring provider chosen
//! explicitly, no `dangerous()` verifier anywhere, and no key log (rustls
//! ignores `SSLKEYLOGFILE` unless a `KeyLogFile` is installed; we never do).
//! PEM files are opened here (regular files only, never a blocking open)
//! and parsed from memory by `rustls::pki_types::pem::PemObject`, whose
//! errors do not name the file, so every error here adds the path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::ids;

/// A TLS setup problem: which file, what is wrong, and the error beneath.
#[derive(Debug)]
pub enum TlsError {
    /// The file could not be read (missing, not a regular file, ...).
    Read {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The file is not the PEM it should be.
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    /// The PEM file holds no item of the kind wanted.
    Empty { path: PathBuf, what: &'static str },
    /// rustls refused what the file holds: a CA it cannot use, a key that
    /// does not match its certificate, a verifier it cannot build.
    Refused {
        path: PathBuf,
        what: String,
        source: rustls::Error,
    },
    /// Building a configuration failed with no file to blame.
    Setup(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, what, source } => {
                write!(f, "{}: cannot read {what}: {source}", path.display())
            }
            TlsError::Pem { path, source } => {
                write!(f, "{}: invalid PEM: {}", path.display(), pem_error(source))
            }
            TlsError::Empty { path, what } => write!(f, "{}: holds no {what}", path.display()),
            TlsError::Refused { path, what, source } => {
                write!(f, "{}: {what}: {source}", path.display())
            }
            TlsError::Setup(e) => write!(f, "TLS setup: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Pem { source, .. } => Some(source),
            TlsError::Refused { source, .. } | TlsError::Setup(source) => Some(source),
            TlsError::Empty { .. } => None,
        }
    }
}

fn refused(path: &Path, what: impl Into<String>) -> impl FnOnce(rustls::Error) -> TlsError {
    let (path, what) = (path.to_owned(), what.into());
    move |source| TlsError::Refused { path, what, source }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Largest PEM file read; a large CA bundle is a few hundred KiB.
const PEM_FILE_MAX: u64 = 4 << 20;

/// The bytes of a PEM file. Opened without blocking and only if it is a
/// regular file (`config::open_regular_file`): rustls's `pem_file_iter`
/// opens by path, and a FIFO there hangs the process forever.
fn read_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    crate::config::read_regular_file(path, PEM_FILE_MAX).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        what,
        source,
    })
}

/// All certificates in a PEM file; at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path, "certificates")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "PEM certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, SEC1 or PKCS#1). The error never
/// includes key material.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path, "the private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_owned(),
            what: "PEM private key (-----BEGIN PRIVATE KEY-----)",
        },
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM section found".into(),
        other => format!("{other:?}"),
    }
}

fn roots_from(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(refused(path, "not a usable CA certificate"))?;
    }
    Ok(roots)
}

/// The shipper's config: trust `ca_file` (or the public webpki roots) and,
/// when given, present a client certificate.
pub fn client_config(
    ca_file: Option<&Path>,
    client_auth: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca_file {
        Some(p) => roots_from(p)?,
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots);
    let config = match client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = load_certs(cert)?;
            let key_der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(refused(key, format!("does not match {}", cert.display())))?
        }
    };
    Ok(Arc::new(config))
}

/// The receiver's config: its certificate and key, and, with `client_ca`,
/// client certificates from that CA required in the handshake.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Setup)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots_from(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Refused {
                        path: ca.to_owned(),
                        what: "cannot verify clients with this CA".into(),
                        source: rustls::Error::General(e.to_string()),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let config = builder
        .with_single_cert(chain, key_der)
        .map_err(refused(key, format!("does not match {}", cert.display())))?;
    Ok(Arc::new(config))
}

/// Whether a (chain-verified) client certificate names exactly `host_id`.
///
/// rustls-webpki matches SAN dNSNames ignoring case and accepting wildcards.
/// Case is harmless (the token pins the host byte for byte), wildcards are
/// not: `*.lab.example` would authorise every host under it. webpki only
/// supports a wildcard as the whole leftmost label, so a certificate that is
/// also valid for a sibling name no real host would use carries a wildcard,
/// and is refused.
pub fn cert_names_host(cert: &CertificateDer<'_>, host_id: &str) -> Result<(), &'static str> {
    if !ids::is_dns_name(host_id) {
        return Err("the host id is not a DNS name, so no certificate can name it");
    }
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| "the client certificate cannot be parsed")?;
    let name = ServerName::try_from(host_id).map_err(|_| "the host id is not a DNS name")?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|_| "the client certificate is not issued for this host id")?;
    if let Some((_, parent)) = host_id.split_once('.') {
        let probe = format!("cis490-wildcard-probe.{parent}");
        if let Ok(probe) = ServerName::try_from(probe.as_str()) {
            if ee.verify_is_valid_for_subject_name(&probe).is_ok() {
                return Err("the client certificate has a wildcard name; host certificates must name one host");
            }
        }
    }
    Ok(())
}

/// Subject and expiry of a certificate, for `--ping`'s report.
pub struct CertSummary {
    pub subject: String,
    pub not_after: String,
}

/// Reads a certificate chain and its private key and checks that they
/// belong together (`--check-config`). Returns the chain.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(refused(key, "not a usable private key"))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(refused(key, format!("does not match {}", cert.display())))?;
    Ok(chain)
}

/// The validity and subject of a DER certificate's TBSCertificate (a small
/// DER walker: webpki does not expose them). `None` if the structure is
/// unexpected.
fn validity_and_subject(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (cert_body, _) = der::expect(cert, 0x30)?;
    let (tbs, _) = der::expect(cert_body, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der::next(rest)?.2; // [0] version
    }
    rest = der::next(rest)?.2; // serialNumber
    rest = der::next(rest)?.2; // signature algorithm
    rest = der::next(rest)?.2; // issuer
    let (validity, rest) = der::expect(rest, 0x30)?;
    let (subject, _) = der::expect(rest, 0x30)?;
    Some((validity, subject))
}

/// notBefore and notAfter of a DER certificate, seconds since the epoch
/// (`--check-config`, the expiry warnings and the metrics). `None` if the
/// structure is unexpected.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (validity, _) = validity_and_subject(cert)?;
    let (tag_nb, nb, after_nb) = der::next(validity)?;
    let (tag_na, na, _) = der::next(after_nb)?;
    Some((
        der::time_to_unix(tag_nb, nb)?,
        der::time_to_unix(tag_na, na)?,
    ))
}

/// Reads subject and notAfter from a DER certificate with a small DER walker
/// (webpki does not expose them). `None` if the structure is unexpected; the
/// ping then just says less.
pub fn summarize(cert: &[u8]) -> Option<CertSummary> {
    let (validity, subject) = validity_and_subject(cert)?;
    let (_, _, after_nb) = der::next(validity)?;
    let (tag, not_after, _) = der::next(after_nb)?;
    Some(CertSummary {
        subject: der::name_to_string(subject),
        not_after: der::time_to_string(tag, not_after)?,
    })
}

mod der {
    /// One TLV: (tag, contents, rest). Definite lengths only, as DER demands.
    pub fn next(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let tag = *b.first()?;
        let first = *b.get(1)?;
        let (len, hdr) = if first < 0x80 {
            (first as usize, 2)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 {
                return None;
            }
            let len = b
                .get(2..2 + n)?
                .iter()
                .fold(0usize, |a, &x| a << 8 | x as usize);
            (len, 2 + n)
        };
        let end = hdr.checked_add(len)?;
        Some((tag, b.get(hdr..end)?, b.get(end..)?))
    }

    pub fn expect(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (t, body, rest) = next(b)?;
        (t == tag).then_some((body, rest))
    }

    /// `CN=x, O=y` from a Name (RDNSequence), common attributes only.
    pub fn name_to_string(mut name: &[u8]) -> String {
        let mut parts = Vec::new();
        while let Some((_, set, rest)) = next(name) {
            name = rest;
            let mut set = set;
            while let Some((_, atv, more)) = next(set) {
                set = more;
                let Some((oid, after)) = expect(atv, 0x06) else {
                    continue;
                };
                let Some((_, value, _)) = next(after) else {
                    continue;
                };
                let label = match oid {
                    [0x55, 0x04, 0x03] => "CN",
                    [0x55, 0x04, 0x0a] => "O",
                    [0x55, 0x04, 0x0b] => "OU",
                    [0x55, 0x04, 0x06] => "C",
                    _ => continue,
                };
                parts.push(format!("{label}={}", String::from_utf8_lossy(value)));
            }
        }
        if parts.is_empty() {
            "(empty subject)".into()
        } else {
            parts.join(", ")
        }
    }

    /// UTCTime (0x17) or GeneralizedTime (0x18) as `YYYY-MM-DD HH:MM:SS UTC`.
    /// UTCTime or GeneralizedTime (DER: `Z`, seconds present) as seconds
    /// since the epoch.
    pub fn time_to_unix(tag: u8, t: &[u8]) -> Option<i64> {
        let s = std::str::from_utf8(t).ok()?;
        let (year, rest): (i64, &str) = match tag {
            0x17 => {
                let yy: i64 = s.get(..2)?.parse().ok()?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
            }
            0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
            _ => return None,
        };
        let n = |r: std::ops::Range<usize>| -> Option<u32> { rest.get(r)?.parse().ok() };
        crate::timefmt::unix_from_civil(year, n(0..2)?, n(2..4)?, n(4..6)?, n(6..8)?, n(8..10)?)
    }

    pub fn time_to_string(tag: u8, t: &[u8]) -> Option<String> {
        let s = std::str::from_utf8(t).ok()?;
        let (year, rest) = match tag {
            0x17 => {
                let yy: u32 = s.get(..2)?.parse().ok()?;
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
            }
            0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
            _ => return None,
        };
        let f = |r: std::ops::Range<usize>| rest.get(r);
        Some(format!(
            "{year:04}-{}-{} {}:{}:{} UTC",
            f(0..2)?,
            f(2..4)?,
            f(4..6)?,
            f(6..8)?,
            f(8..10)?
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_sans(sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lab-01");
        params.not_after = rcgen::date_time_ymd(2031, 5, 6);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn t4_certificate_binds_exactly_one_host() {
        let c = cert_with_sans(&["lab-01.robots.example"]);
        assert!(cert_names_host(&c, "lab-01.robots.example").is_ok());
        // Case: webpki matches, and the token pins the spelling.
        assert!(cert_names_host(&c, "LAB-01.robots.example").is_ok());
        assert!(cert_names_host(&c, "lab-02.robots.example").is_err());
        let wild = cert_with_sans(&["*.robots.example"]);
        assert!(cert_names_host(&wild, "lab-01.robots.example").is_err());
        let single = cert_with_sans(&["lab-01"]);
        assert!(cert_names_host(&single, "lab-01").is_ok());
        assert!(cert_names_host(&single, "lab_01").is_err());
    }

    /// D10: `pem_file_iter(path)` opened a FIFO and waited for a writer
    /// forever; now any PEM file that is not a regular file is refused,
    /// naming it.
    #[test]
    fn d10_pem_files_must_be_regular_files() {
        let dir = std::env::temp_dir().join(format!("cis490-tls-d10-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.pem");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        for path in [fifo.as_path(), dir.as_path()] {
            let p = path.to_owned();
            let errors = crate::config::within_10s(move || {
                [
                    load_certs(&p).unwrap_err(),
                    load_key(&p).unwrap_err(),
                    client_config(Some(&p), None).err().unwrap(),
                ]
            });
            for e in errors {
                assert!(
                    matches!(&e, TlsError::Read { path: p, .. } if p == path),
                    "{e:?}"
                );
                assert!(e.to_string().contains("not a regular file"), "{e}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_from_memory_reads_chains_and_keys() {
        let dir = std::env::temp_dir().join(format!("cis490-tls-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let chain = dir.join("chain.pem");
        std::fs::write(&chain, format!("{}{}", cert.pem(), cert.pem())).unwrap();
        assert_eq!(load_certs(&chain).unwrap().len(), 2);
        let key_file = dir.join("key.pem");
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        assert!(load_key(&key_file).is_ok());
        assert!(load_key(&chain)
            .unwrap_err()
            .to_string()
            .contains("no PEM private key"));
        assert!(load_certs(&key_file)
            .unwrap_err()
            .to_string()
            .contains("no PEM certificate"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn summary_reads_subject_and_expiry() {
        let c = cert_with_sans(&["x"]);
        let s = summarize(&c).unwrap();
        assert_eq!(s.subject, "CN=lab-01");
        assert!(s.not_after.starts_with("2031-05-06"), "{}", s.not_after);
        let (_, not_after) = validity(&c).unwrap();
        assert_eq!(
            crate::timefmt::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(not_after as u64)
            )[..10],
            *"2031-05-06"
        );
        assert!(validity(b"\x30\x03\x02\x01").is_none());
        assert!(summarize(b"\x30\x03\x02\x01").is_none());
        assert!(summarize(&[]).is_none());
    }
}
