//! `--check-config`, for both binaries: the configuration, then every file
//! and directory it names, checked offline, with every problem listed (not
//! just the first), so an operator fixes them in one round.
//!
//! A problem is exit 78; a certificate that expires within 14 days is a
//! warning (exit 0) naming the date, and the same warning is what a
//! shipper pass and the receiver (at start and daily) log. Nothing here
//! writes anything, and the only connection opened is the receiver's to
//! its object store (`s3_*`: a signed `HEAD` of the bucket), which cannot
//! be checked offline; the shipper's path is `--ping`'s to check.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

use crate::config::{ReceiverConfig, ShipperConfig};
use crate::{auth, dirfd, exit, tls};
use crate::{error, info, timefmt, warn};

/// How far ahead an expiring certificate is worth a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// Problems and warnings found so far.
#[derive(Default)]
struct Findings {
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Findings {
    fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    /// Logs everything (problems at error, warnings at warning) and gives
    /// the exit code.
    fn report(self, config: &Path) -> u8 {
        for w in &self.warnings {
            warn!("{w}");
        }
        for p in &self.problems {
            error!("{p}");
        }
        if self.problems.is_empty() {
            info!("{}: configuration OK", config.display());
            exit::OK
        } else {
            error!(
                "{}: {} problem(s); fix them and run --check-config again",
                config.display(),
                self.problems.len()
            );
            exit::CONFIG
        }
    }
}

/// What is wrong with a certificate's dates now, or what to warn about.
pub enum Validity {
    Fine,
    NotYet(String),
    Expired(String),
    ExpiresSoon { date: String, days: u64 },
}

/// Judges a leaf certificate's validity at `now`.
pub fn validity_at(cert: &[u8], now: SystemTime) -> Option<Validity> {
    let (not_before, not_after) = tls::validity(cert)?;
    let now = crate::timefmt::unix(now) as i64;
    let date = |t: i64| timefmt::rfc3339(crate::timefmt::from_unix(t.max(0) as u64));
    Some(if now < not_before {
        Validity::NotYet(date(not_before))
    } else if now > not_after {
        Validity::Expired(date(not_after))
    } else if ((not_after - now) as u64) < EXPIRY_WARNING.as_secs() {
        Validity::ExpiresSoon {
            date: date(not_after),
            days: (not_after - now) as u64 / 86_400,
        }
    } else {
        Validity::Fine
    })
}

/// The notAfter of the leaf in `cert_file`, seconds since the epoch.
pub fn expiry(cert_file: &Path) -> Option<u64> {
    let chain = tls::load_certs(cert_file).ok()?;
    let (_, not_after) = tls::validity(chain.first()?)?;
    u64::try_from(not_after).ok()
}

/// A warning line for a certificate that expires within 14 days (`fix`
/// says how to get a new one), or `None`.
pub fn expiring_warning(cert_file: &Path, fix: &str) -> Option<String> {
    let chain = tls::load_certs(cert_file).ok()?;
    match validity_at(chain.first()?, SystemTime::now())? {
        Validity::ExpiresSoon { date, days } => Some(format!(
            "{}: the certificate expires on {date} (in {days} day(s)): {fix}",
            cert_file.display()
        )),
        Validity::Expired(date) => Some(format!(
            "{}: the certificate expired on {date}: {fix}",
            cert_file.display()
        )),
        _ => None,
    }
}

/// Checks a leaf certificate's dates; problems and warnings as findings.
fn check_dates(f: &mut Findings, file: &Path, chain: &[CertificateDer<'_>], fix: &str) {
    let Some(leaf) = chain.first() else { return };
    match validity_at(leaf, SystemTime::now()) {
        None => f.problem(format!(
            "{}: cannot read the certificate's dates",
            file.display()
        )),
        Some(Validity::Fine) => {}
        Some(Validity::NotYet(d)) => f.problem(format!(
            "{}: the certificate is not valid until {d} (is this host's clock right?)",
            file.display()
        )),
        Some(Validity::Expired(d)) => f.problem(format!(
            "{}: the certificate expired on {d}: {fix}",
            file.display()
        )),
        Some(Validity::ExpiresSoon { date, days }) => f.warnings.push(format!(
            "{}: the certificate expires on {date} (in {days} day(s)): {fix}",
            file.display()
        )),
    }
}

/// A directory the program must write into: exists, is a directory, and
/// the running user may create entries in it.
fn check_dir(f: &mut Findings, key: &str, dir: &Path, missing_ok: bool) {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_ok => {
            let parent = dir.parent().unwrap_or(dir);
            if !dirfd::writable_dir(parent).unwrap_or(false) {
                f.problem(format!(
                    "{key} {}: does not exist, and {} is not writable by this user to create it",
                    dir.display(),
                    parent.display()
                ));
            }
        }
        Err(e) => f.problem(format!("{key} {}: {e} (create it)", dir.display())),
        Ok(m) if !m.is_dir() => f.problem(format!("{key} {}: not a directory", dir.display())),
        Ok(_) => match dirfd::writable_dir(dir) {
            Ok(true) => {}
            Ok(false) => f.problem(format!(
                "{key} {}: not writable by this user (run --check-config as the service's user, e.g. `sudo -u cis490`; see docs/deploy.md, ownership)",
                dir.display()
            )),
            Err(e) => f.problem(format!("{key} {}: {e}", dir.display())),
        },
    }
}

/// `metrics_file`'s directory must take a new file (the temp it renames).
fn check_metrics_file(f: &mut Findings, file: Option<&Path>) {
    if let Some(file) = file {
        let dir = file.parent().unwrap_or(Path::new("/"));
        check_dir(f, "metrics_file's directory", dir, false);
    }
}

/// The configuration's keys, or the one error that ends the check (a file
/// that is not the TOML we read has no keys to check files by).
fn parsed<T>(loaded: Result<T, crate::config::ConfigError>) -> Result<T, u8> {
    loaded.map_err(|e| {
        error!("{e}");
        exit::CONFIG
    })
}

/// `file: key `name``, the way every problem starts.
fn at(config: &Path, key: &str) -> String {
    format!("{}: key `{key}`", config.display())
}

/// `cis490-shipper --check-config`.
pub fn shipper(config: &Path) -> u8 {
    let cfg = match parsed(ShipperConfig::load_keys(config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut f = Findings::default();
    let at = |key: &str| at(config, key);
    if let Err(e) = auth::read_token_file(&cfg.token_file) {
        f.problem(format!("{}: {e}", at("token_file")));
    }
    if let Some(ca) = &cfg.ca_file {
        if let Err(e) = tls::client_config(Some(ca), None) {
            f.problem(format!("{}: {e}", at("ca_file")));
        }
    }
    if let Some((cert, key)) = &cfg.client_auth {
        let fix = format!("issue a new one: scripts/pki.sh host {}", cfg.host_id);
        // Each of these is its own problem: a key that does not match says
        // nothing about whose the certificate is, or until when.
        if let Err(e) = tls::load_pair(cert, key) {
            f.problem(format!("{}: {e}", at("key_file")));
        }
        if let Ok(chain) = tls::load_certs(cert) {
            if let Err(why) = tls::cert_names_host(&chain[0], &cfg.host_id) {
                f.problem(format!(
                    "{}: {}: {why} (host_id is `{}`; the certificate's DNS name must be it): {fix}",
                    at("cert_file"),
                    cert.display(),
                    cfg.host_id
                ));
            }
            check_dates(&mut f, cert, &chain, &fix);
        }
    }
    check_dir(&mut f, "data_dir", &cfg.data_dir, false);
    check_metrics_file(&mut f, cfg.metrics_file.as_deref());
    f.report(config)
}

/// `cis490-receiver --check-config`.
pub fn receiver(config: &Path) -> u8 {
    let cfg = match parsed(ReceiverConfig::load(config)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut f = Findings::default();
    let at = |key: &str| at(config, key);
    if let Some((cert, key)) = &cfg.tls_identity {
        let fix = "issue a new one: scripts/pki.sh server NAME";
        if let Err(e) = tls::load_pair(cert, key) {
            f.problem(format!("{}: {e}", at("key_file")));
        }
        if let Ok(chain) = tls::load_certs(cert) {
            check_dates(&mut f, cert, &chain, fix);
        }
    }
    if let Some(ca) = &cfg.client_ca_file {
        if let Err(e) = tls::client_config(Some(ca), None) {
            f.problem(format!("{}: {e}", at("client_ca_file")));
        }
    }
    check_dir(&mut f, "store_dir", &cfg.store_dir, true);
    check_metrics_file(&mut f, cfg.metrics_file.as_deref());
    if let Some(s3) = &cfg.s3 {
        check_s3(&mut f, s3, &at);
    }
    f.report(config)
}

/// The object store: its CA file, then a signed `HEAD` of the bucket
/// (reachable, the credentials accepted, the bucket there).
fn check_s3(f: &mut Findings, cfg: &crate::config::s3::S3Config, at: &dyn Fn(&str) -> String) {
    if !cfg.endpoint.tls && !cfg.endpoint.is_loopback() {
        f.warnings.push(format!(
            "{}: {} is plain HTTP to another machine: tarballs cross the network unencrypted; \
             use https://",
            at("s3_endpoint"),
            cfg.endpoint.url()
        ));
    }
    match crate::s3::store::S3Store::new(cfg) {
        Err(e) => f.problem(format!("{}: {e}", at("s3_ca_file"))),
        Ok(s3) => match s3.check() {
            Ok(()) => info!("{}: reachable, credentials accepted", s3.describe()),
            Err(e) => f.problem(format!("{}: {e}", at("s3_endpoint"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed leaf valid from 2025-01-01 to 2031-05-06.
    fn cert() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2031, 5, 6);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn at(y: i64, m: u32, d: u32) -> SystemTime {
        let t = timefmt::unix_from_civil(y, m, d, 0, 0, 0).unwrap();
        crate::timefmt::from_unix(t as u64)
    }

    #[test]
    fn dates_are_judged_against_now() {
        let c = cert();
        assert!(
            matches!(validity_at(&c, at(2024, 6, 1)), Some(Validity::NotYet(d)) if d.starts_with("2025-01-01"))
        );
        assert!(matches!(
            validity_at(&c, at(2028, 1, 1)),
            Some(Validity::Fine)
        ));
        assert!(matches!(
            validity_at(&c, at(2031, 5, 1)),
            Some(Validity::ExpiresSoon { days: 5, date }) if date.starts_with("2031-05-06")
        ));
        assert!(matches!(
            validity_at(&c, at(2031, 6, 1)),
            Some(Validity::Expired(_))
        ));
        assert!(validity_at(b"junk", at(2028, 1, 1)).is_none());
    }
}
