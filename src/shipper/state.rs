//! `data_dir/state.json`: what the last pass did, and when the receiver last
//! answered. Written atomically at the end of every pass; read by
//! `--status` and by the next pass (to escalate a receiver that has not
//! answered for too long). It is a report, never an input to the state
//! machine: deleting it loses history, nothing else.
//!
//! The keys are an interface (docs/operating.md lists them).

// nanoserde's derive expands to code clippy would write with `?`.
#![allow(clippy::question_mark)]

use std::io;
use std::path::{Path, PathBuf};

use nanoserde::{DeJson, SerJson};

use crate::fsutil;

/// The last pass, as `--status` shows it.
#[derive(SerJson, DeJson, Debug, Default, Clone, PartialEq)]
pub struct LastPass {
    /// RFC 3339 UTC, and the same as seconds since the epoch.
    pub started: String,
    pub started_unix: u64,
    pub duration_s: f64,
    pub exit_code: u8,
    pub ready: u64,
    pub stored: u64,
    pub already_present: u64,
    pub conflicts: u64,
    pub rejected: u64,
    pub invalid_names: u64,
    pub retry: u64,
    /// Tarball bytes the receiver confirmed in this pass.
    pub bytes_shipped: u64,
}

#[derive(SerJson, DeJson, Debug, Default, Clone, PartialEq)]
pub struct State {
    pub last_pass: Option<LastPass>,
    /// The last time the receiver answered an upload with a verdict on it
    /// (stored, present, conflict, digest mismatch, rejected): proof that
    /// the whole path worked. Seconds since the epoch.
    pub last_contact_unix: Option<u64>,
    /// When this data_dir saw its first recorded pass: the start of the
    /// clock for a receiver that never answered (a fresh install must not
    /// alert on its first pass because old recordings wait).
    pub first_pass_unix: Option<u64>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("state.json")
}

pub use crate::timefmt::{from_unix, unix};

impl State {
    /// The state in `data_dir`, or the default if there is none or it is
    /// unreadable (a report lost is not a reason to stop shipping).
    pub fn read(data_dir: &Path) -> State {
        std::fs::read_to_string(path(data_dir))
            .ok()
            .and_then(|t| State::deserialize_json(&t).ok())
            .unwrap_or_default()
    }

    /// Replaces the state file atomically (tmp, rename); `durable`: the
    /// tmp is fsynced first (else a power cut may leave it empty or zeroed,
    /// which `read` takes for no state).
    pub fn write(&self, data_dir: &Path, durable: bool) -> io::Result<()> {
        let dest = path(data_dir);
        let tmp = data_dir.join("state.json.tmp");
        let mut text = self.serialize_json();
        text.push('\n');
        if durable {
            fsutil::write_atomically(&tmp, &dest, text.as_bytes())
        } else {
            fsutil::write_cache(&tmp, &dest, text.as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lost_files() {
        let d = std::env::temp_dir().join(format!("cis490-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(State::read(&d), State::default());
        let s = State {
            last_pass: Some(LastPass {
                started: "2026-11-28T05:00:00Z".into(),
                started_unix: 1_795_842_000,
                duration_s: 1.5,
                exit_code: 75,
                ready: 3,
                retry: 1,
                ..LastPass::default()
            }),
            last_contact_unix: Some(1_795_841_000),
            first_pass_unix: Some(1_795_000_000),
        };
        s.write(&d, true).unwrap();
        assert_eq!(State::read(&d), s);
        std::fs::write(path(&d), b"{garbage").unwrap();
        assert_eq!(State::read(&d), State::default());
        // What a power cut may leave of a report written without fsync.
        for lost in [&b""[..], &[0u8; 251][..]] {
            std::fs::write(path(&d), lost).unwrap();
            assert_eq!(State::read(&d), State::default());
        }
        s.write(&d, false).unwrap();
        assert_eq!(State::read(&d), s);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
