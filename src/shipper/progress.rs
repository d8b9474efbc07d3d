//! A live progress line (bytes, rate, ETA) when stderr is a terminal; with
//! no terminal (systemd, tests, pipes) it draws nothing at all.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    label: String,
    total: Option<u64>,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(label: &str, total: Option<u64>) -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal() && !crate::log::to_journal(),
            label: label.to_owned(),
            total,
            started: Instant::now(),
            last: None,
        }
    }

    /// Whether anything will be drawn (a terminal, not journald).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Sets the expected total once it is known.
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    /// Redraws at most five times a second.
    pub fn update(&mut self, done: u64) {
        if !self.enabled
            || self
                .last
                .is_some_and(|l| l.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let line = match self.total {
            Some(t) if t > 0 => {
                let eta = if rate > 0.0 {
                    (t.saturating_sub(done)) as f64 / rate
                } else {
                    0.0
                };
                format!(
                    "{} {:.1}/{:.1} MB ({:.0}%) {:.1} MB/s ETA {:.0}s",
                    self.label,
                    done as f64 / 1e6,
                    t as f64 / 1e6,
                    (done as f64 * 100.0 / t as f64).min(100.0),
                    rate / 1e6,
                    eta
                )
            }
            _ => format!(
                "{} {:.1} MB {:.1} MB/s",
                self.label,
                done as f64 / 1e6,
                rate / 1e6
            ),
        };
        let _ = write!(std::io::stderr(), "\r\x1b[2K{line}");
    }

    /// Clears the line so the next log line starts clean.
    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
