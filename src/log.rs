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
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
    Debug = 7,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
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
    fn messages_stay_on_one_line() {
        assert_eq!(format_line(Level::Info, true, "p", "a\nb\rc"), "<6>a b c");
    }
}
