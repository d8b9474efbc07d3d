//! What the receiver says about itself: answers counted by status, the
//! metrics file (`metrics_file`, refreshed every 10 s and at shutdown), and
//! the daily check of its own certificate's expiry.
//!
//! The counts live in memory and start at zero with the process (Prometheus
//! counters: `rate()` copes with the reset). What is stored per host is read
//! from the store itself on every refresh, so it is right after a restart
//! and counts what an operator moved in or out by hand.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::check;
use crate::config::ReceiverConfig;
use crate::dirfd;
use crate::ids;
use crate::metrics::{Kind, Metrics};
use crate::protocol::Status;
use crate::receiver::store::PARTIAL_PREFIX;
use crate::s3::api::Stats;
use crate::timefmt::unix;
use crate::warn;

/// How often the metrics file is rewritten.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How often the certificate's expiry is checked (besides at start).
const CERT_CHECK_EVERY: Duration = Duration::from_secs(86_400);

/// Answers sent since start, by status.
pub struct Counters {
    answers: [AtomicU64; Status::ALL.len()],
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            answers: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Counters {
    pub fn answered(&self, s: Status) {
        self.answers[s.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, s: Status) -> u64 {
        self.answers[s.index()].load(Ordering::Relaxed)
    }
}

/// What one host's directory holds.
#[derive(Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct HostTotals {
    host: String,
    episodes: u64,
    bytes: u64,
    /// Unfinished (resumable) uploads and their bytes: disk the sweep
    /// (`partial_ttl_hours`, `max_partial_bytes_per_host`) bounds.
    partials: u64,
    partial_bytes: u64,
}

/// Episodes, bytes and partial uploads per host, from the store itself.
fn stored_per_host(store_dir: &Path) -> Vec<HostTotals> {
    let mut out = Vec::new();
    for host in fs::read_dir(store_dir).into_iter().flatten().flatten() {
        let name = host.file_name().to_string_lossy().into_owned();
        if !ids::is_valid(&name) || !host.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let mut t = HostTotals {
            host: name,
            ..HostTotals::default()
        };
        for f in fs::read_dir(host.path()).into_iter().flatten().flatten() {
            let f_name = f.file_name();
            let f_name = f_name.to_string_lossy();
            let len = || f.metadata().map_or(0, |m| m.len());
            if f_name.starts_with(PARTIAL_PREFIX) {
                t.partials += 1;
                t.partial_bytes += len();
            } else if let Some(id) = f_name.strip_suffix(".tar.zst") {
                if ids::is_valid(id) {
                    t.episodes += 1;
                    t.bytes += len();
                }
            }
        }
        out.push(t);
    }
    out.sort();
    out
}

/// What the metrics say, as of now.
pub struct Facts<'a> {
    pub config: &'a ReceiverConfig,
    pub counters: &'a Counters,
    pub open_connections: usize,
    pub accepted: u64,
    pub started: SystemTime,
    /// The object store's requests, when there is one (`s3_*`).
    pub s3: Option<&'a Stats>,
}

pub fn metrics(f: &Facts<'_>) -> Metrics {
    let mut m = Metrics::new();
    m.single(
        "cis490_receiver_start_time_seconds",
        Kind::Gauge,
        "When this receiver started, seconds since the epoch.",
        unix(f.started) as f64,
    );
    let name = "cis490_receiver_answers_total";
    m.family(
        name,
        Kind::Counter,
        "Answers sent since start, by HTTP code and status word.",
    );
    for s in Status::ALL {
        let code = s.code().to_string();
        m.sample(
            name,
            &[("code", &code), ("status", s.word())],
            f.counters.count(s) as f64,
        );
    }
    m.single(
        "cis490_receiver_connections",
        Kind::Gauge,
        "Connections open now.",
        f.open_connections as f64,
    )
    .single(
        "cis490_receiver_connections_accepted_total",
        Kind::Counter,
        "Connections accepted since start.",
        f.accepted as f64,
    );
    if let Some(s3) = f.s3 {
        s3.write(&mut m);
    }
    // With an object store these read the spool, which holds no finished
    // episode: listing a bucket every 10 s would not scale (the store has
    // its own usage statistics, e.g. `radosgw-admin bucket stats`).
    let stored = stored_per_host(&f.config.store_dir);
    type Pick = fn(&HostTotals) -> u64;
    let families: [(&str, &str, Pick); 4] = [
        (
            "cis490_receiver_episodes",
            "Episodes stored, by host.",
            |t| t.episodes,
        ),
        (
            "cis490_receiver_stored_bytes",
            "Bytes of the tarballs stored, by host.",
            |t| t.bytes,
        ),
        (
            "cis490_receiver_partial_uploads",
            "Unfinished (resumable) uploads kept, by host.",
            |t| t.partials,
        ),
        (
            "cis490_receiver_partial_bytes",
            "Bytes of unfinished uploads kept, by host.",
            |t| t.partial_bytes,
        ),
    ];
    for (name, help, pick) in families {
        m.family(name, Kind::Gauge, help);
        for t in &stored {
            m.sample(name, &[("host", &t.host)], pick(t) as f64);
        }
    }
    if let Ok(space) = dirfd::space(&f.config.store_dir) {
        m.single(
            "cis490_receiver_store_free_bytes",
            Kind::Gauge,
            "Bytes free for the receiver in store_dir's file system.",
            space.available as f64,
        )
        .single(
            "cis490_receiver_store_size_bytes",
            Kind::Gauge,
            "Size of store_dir's file system.",
            space.total as f64,
        );
    }
    if let Some(t) = f
        .config
        .tls_identity
        .as_ref()
        .and_then(|(cert, _)| check::expiry(cert))
    {
        m.single(
            "cis490_receiver_certificate_expiry_timestamp_seconds",
            Kind::Gauge,
            "notAfter of the receiver's certificate, seconds since the epoch.",
            t as f64,
        );
    }
    m
}

/// Writes the metrics file, if one is configured; a failure is logged.
pub fn write_metrics(f: &Facts<'_>) {
    if let Some(path) = &f.config.metrics_file {
        if let Err(e) = metrics(f).write(path) {
            warn!("cannot write metrics_file {}: {e}", path.display());
        }
    }
}

/// Warns when the receiver's certificate expires within 14 days.
pub fn check_certificate(config: &ReceiverConfig) {
    if let Some((cert, _)) = &config.tls_identity {
        if let Some(w) =
            check::expiring_warning(cert, "issue a new one: scripts/pki.sh server NAME")
        {
            warn!("{w}");
        }
    }
}

/// Whether the daily certificate check is due (and, if so, restarts its clock).
pub struct Daily(Instant);

impl Daily {
    pub fn new() -> Daily {
        Daily(Instant::now())
    }

    pub fn due(&mut self) -> bool {
        if self.0.elapsed() >= CERT_CHECK_EVERY {
            self.0 = Instant::now();
            true
        } else {
            false
        }
    }
}

impl Default for Daily {
    fn default() -> Daily {
        Daily::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_episodes_and_partials_apart() {
        let root = std::env::temp_dir().join(format!("cis490-report-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let host = root.join("lab-01");
        fs::create_dir_all(&host).unwrap();
        fs::create_dir_all(root.join(".not-a-host")).unwrap();
        for (name, len) in [
            ("ep-1.tar.zst", 10),
            ("ep-1.tar.zst.sha256", 80),
            ("ep-2.tar.zst", 5),
            (".partial-ep-3.0123abcd", 7),
            (".partial-ep-4.k0123", 2),
            (".upload-ep-5.1.1", 100),
        ] {
            fs::write(host.join(name), vec![0u8; len]).unwrap();
        }
        let got = stored_per_host(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            got,
            [HostTotals {
                host: "lab-01".into(),
                episodes: 2,
                bytes: 15,
                partials: 2,
                partial_bytes: 9,
            }]
        );
    }
}
