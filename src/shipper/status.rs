//! `--status`: where every episode of `data_dir` stands, and what the last
//! pass did, as a table for a person or one JSON object for a fleet's
//! tooling (the keys are an interface: docs/operating.md).
//!
//! Read-only by construction: it lists directories, reads small records and
//! `state.json`, and never takes the pass lock, creates, renames or
//! deletes anything, so it works offline and while a pass runs. (A pass
//! running at the same moment may move an episode between two states while
//! it looks; the next `--status` sees it settled.)

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nanoserde::SerJson;

use crate::ids;
use crate::metrics::Metrics;
use crate::shipper::outbox::{self, Dirs, Name, Record};
use crate::shipper::state::{self, LastPass, State};
use crate::shipper::tree;
use crate::timefmt;

const MARKER: &str = "done.marker";

/// One quarantined episode.
#[derive(SerJson, Debug, Clone, PartialEq)]
pub struct Conflict {
    pub id: String,
    pub local_sha256: Option<String>,
    pub receiver_sha256: Option<String>,
    /// The file an operator deletes once it is resolved.
    pub file: String,
}

/// Counts by state (each finished episode is in exactly one).
#[derive(SerJson, Debug, Default, Clone, PartialEq)]
pub struct Counts {
    /// In `episodes/` without `done.marker`.
    pub recording: u64,
    /// Finished, nothing packed yet.
    pub ready: u64,
    /// A tarball waits in `outbox/`.
    pub packed: u64,
    /// The receiver confirmed it; the move to `shipped/` waits (a receipt).
    pub confirmed: u64,
    /// Quarantined (`outbox/<id>.conflict`).
    pub in_conflict: u64,
    /// Finished, but the directory name is not a valid id.
    pub invalid_names: u64,
    /// In `shipped/`.
    pub shipped: u64,
}

/// The whole report; `--status --json` prints exactly this.
#[derive(SerJson, Debug, Clone, PartialEq)]
pub struct Report {
    pub host_id: String,
    pub data_dir: String,
    pub now: String,
    pub episodes: Counts,
    /// Bytes of the files in `shipped/` (from the retire records; episodes
    /// without one are walked).
    pub shipped_bytes: u64,
    /// Age of the oldest finished episode not yet shipped (ready, packed,
    /// confirmed), seconds; by its `done.marker`'s mtime.
    pub oldest_ready_age_s: Option<u64>,
    pub conflicts: Vec<Conflict>,
    pub last_pass: Option<LastPass>,
    pub last_contact: Option<String>,
    pub last_contact_unix: Option<u64>,
}

/// Looks at `data_dir` without changing it.
pub fn gather(host_id: &str, data_dir: &Path, now: SystemTime) -> Report {
    let dirs = Dirs::new(data_dir);
    let mut c = Counts::default();
    let mut conflicts = Vec::new();
    let mut oldest: Option<SystemTime> = None;
    for (name, path) in list(&dirs.episodes) {
        if !path.is_dir() || fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()) {
            continue;
        }
        let Ok(marker) = fs::symlink_metadata(path.join(MARKER)) else {
            c.recording += 1;
            continue;
        };
        if !ids::is_valid(&name) {
            c.invalid_names += 1;
            continue;
        }
        let conflict = dirs.conflict(&name);
        if conflict.exists() {
            c.in_conflict += 1;
            conflicts.push(read_conflict(&name, &conflict));
            continue;
        }
        if dirs.receipt(&name).exists() {
            c.confirmed += 1;
        } else if dirs.tarball(&name).exists() {
            c.packed += 1;
        } else {
            c.ready += 1;
        }
        let when = marker.modified().unwrap_or(now);
        oldest = Some(oldest.map_or(when, |o| o.min(when)));
    }
    let mut shipped_bytes = 0;
    for (name, path) in list(&dirs.shipped) {
        if !ids::is_valid(&name) || !path.is_dir() {
            continue;
        }
        c.shipped += 1;
        shipped_bytes += match Record::read(&dirs.shipped_record(&name)).and_then(|r| r.tree) {
            Some(t) => t.bytes,
            None => tree::fingerprint(&path, &name).map_or(0, |t| t.bytes),
        };
    }
    // Conflicts whose episode moved on (renamed by the operator) still wait
    // for their file to be removed.
    for (name, path) in list(&dirs.outbox) {
        if let Name::Conflict(id) = outbox::parse(&name) {
            if !conflicts.iter().any(|c| c.id == id) {
                conflicts.push(read_conflict(id, &path));
            }
        }
    }
    let st = State::read(data_dir);
    Report {
        host_id: host_id.to_owned(),
        data_dir: data_dir.display().to_string(),
        now: timefmt::rfc3339(now),
        episodes: c,
        shipped_bytes,
        oldest_ready_age_s: oldest.map(|o| now.duration_since(o).map_or(0, |d| d.as_secs())),
        conflicts,
        last_pass: st.last_pass,
        last_contact: st
            .last_contact_unix
            .map(|t| timefmt::rfc3339(state::from_unix(t))),
        last_contact_unix: st.last_contact_unix,
    }
}

/// Names and paths in a directory, sorted; empty if it cannot be read.
fn list(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The digests a conflict note names (`queue` writes `local_sha256:` and
/// `receiver_sha256:` lines).
fn read_conflict(id: &str, file: &Path) -> Conflict {
    let text = fs::read_to_string(file).unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
    };
    Conflict {
        id: id.to_owned(),
        local_sha256: field("local_sha256:"),
        receiver_sha256: field("receiver_sha256:"),
        file: file.display().to_string(),
    }
}

/// `3h 12m`, `45s`: an age for people.
fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

impl Report {
    pub fn to_json(&self) -> String {
        let mut s = self.serialize_json();
        s.push('\n');
        s
    }

    pub fn to_table(&self, now: SystemTime) -> String {
        let e = &self.episodes;
        let mut out = format!(
            "cis490-shipper status of {} ({})\n",
            self.host_id, self.data_dir
        );
        let oldest = self.oldest_ready_age_s.map_or(String::new(), |a| {
            format!("   oldest finished {} ago", age(a))
        });
        for (label, n, extra) in [
            ("recording", e.recording, String::new()),
            ("ready", e.ready, oldest),
            ("packed", e.packed, String::new()),
            (
                "confirmed",
                e.confirmed,
                " (waiting to move to shipped/)".into(),
            ),
            ("in conflict", e.in_conflict, String::new()),
            ("invalid name", e.invalid_names, String::new()),
            (
                "shipped",
                e.shipped,
                format!("   {:.1} MB", self.shipped_bytes as f64 / 1e6),
            ),
        ] {
            out += &format!("  {label:<13} {n:>6}{extra}\n");
        }
        for c in &self.conflicts {
            out += &format!(
                "conflict {}: ours {}, the receiver's {}; resolve (docs/transport.md, \"Conflicts\"), then remove {}\n",
                c.id,
                c.local_sha256.as_deref().unwrap_or("?"),
                c.receiver_sha256.as_deref().unwrap_or("?"),
                c.file
            );
        }
        match &self.last_pass {
            None => out += "last pass: none recorded\n",
            Some(p) => {
                out += &format!(
                    "last pass: {} ({} ago), {:.1}s, exit {}: {} ready, {} stored, {} already present, {} conflict(s), {} rejected, {} invalid name(s), {} to retry\n",
                    p.started,
                    age(state::unix(now).saturating_sub(p.started_unix)),
                    p.duration_s,
                    p.exit_code,
                    p.ready,
                    p.stored,
                    p.already_present,
                    p.conflicts,
                    p.rejected,
                    p.invalid_names,
                    p.retry
                );
            }
        }
        match (self.last_contact_unix, &self.last_contact) {
            (Some(t), Some(s)) => {
                out += &format!(
                    "last answer from the receiver: {s} ({} ago)\n",
                    age(state::unix(now).saturating_sub(t))
                );
            }
            _ => out += "last answer from the receiver: none recorded\n",
        }
        out
    }
}

impl Report {
    /// The report as Prometheus metrics (docs/operating.md lists them).
    /// `cert_expiry`: notAfter of the client certificate, seconds since the
    /// epoch, if there is one.
    pub fn metrics(&self, cert_expiry: Option<u64>) -> Metrics {
        use crate::metrics::Kind::Gauge;
        let mut m = Metrics::new();
        if let Some(p) = &self.last_pass {
            m.single(
                "cis490_shipper_last_pass_timestamp_seconds",
                Gauge,
                "When the last pass started, seconds since the epoch.",
                p.started_unix as f64,
            )
            .single(
                "cis490_shipper_last_pass_duration_seconds",
                Gauge,
                "How long the last pass took.",
                p.duration_s,
            )
            .single(
                "cis490_shipper_last_pass_exit_code",
                Gauge,
                "The last pass's exit code (0 done, 65 needs a human, 69 unreachable or escalated, 75 retry, 77 credentials).",
                f64::from(p.exit_code),
            );
            let name = "cis490_shipper_last_pass_episodes";
            m.family(name, Gauge, "Episodes of the last pass, by outcome.");
            for (outcome, n) in [
                ("stored", p.stored),
                ("already_present", p.already_present),
                ("conflict", p.conflicts),
                ("rejected", p.rejected),
                ("invalid_name", p.invalid_names),
                ("retry", p.retry),
            ] {
                m.sample(name, &[("outcome", outcome)], n as f64);
            }
            m.single(
                "cis490_shipper_last_pass_shipped_bytes",
                Gauge,
                "Tarball bytes the receiver confirmed in the last pass.",
                p.bytes_shipped as f64,
            );
        }
        let e = &self.episodes;
        let name = "cis490_shipper_episodes";
        m.family(name, Gauge, "Episodes in data_dir, by state.");
        for (state, n) in [
            ("recording", e.recording),
            ("ready", e.ready),
            ("packed", e.packed),
            ("confirmed", e.confirmed),
            ("in_conflict", e.in_conflict),
            ("invalid_name", e.invalid_names),
            ("shipped", e.shipped),
        ] {
            m.sample(name, &[("state", state)], n as f64);
        }
        m.single(
            "cis490_shipper_shipped_bytes",
            Gauge,
            "Bytes of the episodes kept in shipped/.",
            self.shipped_bytes as f64,
        )
        .single(
            "cis490_shipper_oldest_ready_age_seconds",
            Gauge,
            "Age of the oldest finished episode not yet shipped (0: none).",
            self.oldest_ready_age_s.unwrap_or(0) as f64,
        )
        .single(
            "cis490_shipper_conflicts",
            Gauge,
            "Episodes quarantined for a human (outbox/<id>.conflict).",
            self.conflicts.len() as f64,
        );
        if let Some(t) = self.last_contact_unix {
            m.single(
                "cis490_shipper_last_contact_timestamp_seconds",
                Gauge,
                "When the receiver last gave a verdict on an upload, seconds since the epoch.",
                t as f64,
            );
        }
        if let Some(t) = cert_expiry {
            m.single(
                "cis490_shipper_certificate_expiry_timestamp_seconds",
                Gauge,
                "notAfter of this host's client certificate, seconds since the epoch.",
                t as f64,
            );
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_people_write_them() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m 5s");
        assert_eq!(age(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(age(2 * 86_400 + 3600), "2d 1h");
    }
}
