//! Logging: one line per event on stderr.
//!
//! Under systemd (`JOURNAL_STREAM` set) every line starts with an sd-daemon
//! `<N>` priority prefix so journald records the level; elsewhere the line
//! reads `program: level: message`. Nothing here knows about tokens or keys:
//! callers never pass secrets (see the `Debug` impls in `config`).
//!
//! Deliberately tiny: no log crate, no filtering. A lab operator reads these
//! lines in `journalctl -u`, one per episode and one per pass.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
        }
    }
}

struct Sink {
    program: &'static str,
    journal: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sets the program name used in plain (non-journald) lines. Call once,
/// first thing in `main`.
pub fn init(program: &'static str) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = SINK.set(Sink { program, journal });
}

/// Whether lines go to journald (then progress output is pointless too).
pub fn to_journal() -> bool {
    SINK.get().is_some_and(|s| s.journal)
}

/// Formats one line as it will be written (without the newline).
pub fn format_line(level: Level, journal: bool, program: &str, msg: &str) -> String {
    // A message must stay one line: journald would split it and a reader
    // would lose the level on the continuation lines.
    let msg = msg.replace(['\n', '\r'], " ");
    if journal {
        format!("<{}>{}", level as u8, msg)
    } else {
        format!("{program}: {}: {msg}", level.word())
    }
}

pub fn log(level: Level, msg: &str) {
    let (program, journal) = match SINK.get() {
        Some(s) => (s.program, s.journal),
        None => ("cis490", false),
    };
    let mut line = format_line(level, journal, program, msg);
    line.push('\n');
    // One write per line so lines from the receiver's threads never interleave
    // mid-line. A failed write to stderr has nowhere else to go.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// At most one line per reason per window, for events a peer can cause
/// before it has authenticated (a cut connection, a refused one, a failed
/// handshake): an attacker can cause millions, the journal gets one line
/// per reason per window. The lines left out are counted and the count goes
/// with the next line of that reason; a count still pending when the events
/// stop is never printed (the next event prints it).
pub struct Throttle {
    every: Duration,
    reasons: Mutex<Vec<(&'static str, Window)>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Window {
    last: Option<Instant>,
    suppressed: u64,
}

impl Window {
    /// Whether a line may be written at `now`, and if so how many were left
    /// out since the last one.
    fn admit(&mut self, now: Instant, every: Duration) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            reasons: Mutex::new(Vec::new()),
        }
    }

    /// Logs `msg()` unless a line for `reason` was written less than the
    /// window ago; `msg` is only built when the line is written.
    pub fn log(&self, level: Level, reason: &'static str, msg: impl FnOnce() -> String) {
        let admitted = {
            // A poisoned lock only means another thread panicked mid-update
            // of two integers: the counts are still usable.
            let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
            let i = match reasons.iter().position(|(r, _)| *r == reason) {
                Some(i) => i,
                None => {
                    reasons.push((reason, Window::default()));
                    reasons.len() - 1
                }
            };
            reasons[i].1.admit(Instant::now(), self.every)
        };
        if let Some(left_out) = admitted {
            let mut line = msg();
            if left_out > 0 {
                let secs = self.every.as_secs();
                line += &format!(" (and {left_out} more like this since the last such line; at most one every {secs}s)");
            }
            log(level, &line);
        }
    }
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, &format!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, &format!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, &format!($($t)*)) } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_priority() {
        assert_eq!(format_line(Level::Error, true, "p", "boom"), "<3>boom");
        assert_eq!(format_line(Level::Info, true, "p", "ok"), "<6>ok");
    }

    #[test]
    fn plain_lines_name_program_and_level() {
        assert_eq!(
            format_line(Level::Warn, false, "cis490-shipper", "careful"),
            "cis490-shipper: warning: careful"
        );
    }

    #[test]
    fn throttle_admits_one_line_per_window_and_counts_the_rest() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        let mut w = Window::default();
        let s = Duration::from_secs;
        // (time since t0, expected answer)
        let table = [
            (s(0), Some(0)),
            (s(1), None),
            (s(9), None),
            (s(10), Some(2)),
            (s(10), None),
            (s(30), Some(1)),
            (s(31), None),
        ];
        for (at, want) in table {
            assert_eq!(w.admit(t0 + at, every), want, "at {at:?}");
        }
    }

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(format_line(Level::Info, true, "p", "a\nb\rc"), "<6>a b c");
    }
}
