//! `max_upload_rate`: sharing the lab's link politely. A token bucket
//! refilled continuously at the rate, drawn down by every body write, that
//! makes the sender sleep while it is in debt; so the rate holds over any
//! window longer than a write, with no multi-second bursts (a bucket that
//! has filled while idle holds at most a quarter second's worth).
//!
//! Also the rate's syntax: `"5MB/s"`, `"500KB/s"`, `"40Mbit/s"`, SI units
//! (k = 1000) plus `KiB/s`, `MiB/s`, `GiB/s`.

use std::time::{Duration, Instant};

/// How much a bucket that sat idle may hold: a burst of this long at line
/// speed, no more.
const BURST: Duration = Duration::from_millis(250);

/// Bytes per second from the configuration's text.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or("needs a unit, e.g. \"5MB/s\"")?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{num}` is not a number"))?;
    let per_second = match unit.trim() {
        "B/s" => 1.0,
        "kB/s" | "KB/s" => 1e3,
        "MB/s" => 1e6,
        "GB/s" => 1e9,
        "KiB/s" => 1024.0,
        "MiB/s" => 1024.0 * 1024.0,
        "GiB/s" => 1024.0 * 1024.0 * 1024.0,
        "kbit/s" | "Kbit/s" => 1e3 / 8.0,
        "Mbit/s" => 1e6 / 8.0,
        "Gbit/s" => 1e9 / 8.0,
        other => {
            return Err(format!(
                "`{other}` is not a unit this reads: B/s, kB/s, MB/s, GB/s, KiB/s, MiB/s, GiB/s, kbit/s, Mbit/s, Gbit/s"
            ))
        }
    };
    let bytes = n * per_second;
    if !(1024.0..=1e12).contains(&bytes) {
        return Err("must be between 1 KiB/s and 1 TB/s".into());
    }
    Ok(bytes as u64)
}

/// A rate, human-readable: `5.0 MB/s`.
pub fn show_rate(bytes_per_s: u64) -> String {
    format!("{:.1} MB/s", bytes_per_s as f64 / 1e6)
}

/// The token bucket.
#[derive(Debug)]
pub struct Pace {
    rate: f64,
    /// Tokens (bytes) in the bucket; negative: the debt to sleep off.
    tokens: f64,
    last: Instant,
}

impl Pace {
    pub fn new(bytes_per_s: u64, now: Instant) -> Pace {
        Pace {
            rate: bytes_per_s as f64,
            tokens: 0.0,
            last: now,
        }
    }

    /// Takes `n` bytes' worth at `now`; returns how long to sleep before
    /// sending them (zero when the bucket has them).
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let cap = self.rate * BURST.as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(cap);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Takes `n` bytes' worth, sleeping as long as that needs.
    pub fn wait(&mut self, n: usize) {
        let d = self.take(n, Instant::now());
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_with_units() {
        assert_eq!(parse_rate("5MB/s"), Ok(5_000_000));
        assert_eq!(parse_rate(" 500KB/s "), Ok(500_000));
        assert_eq!(parse_rate("500kB/s"), Ok(500_000));
        assert_eq!(parse_rate("40Mbit/s"), Ok(5_000_000));
        assert_eq!(parse_rate("1.5MiB/s"), Ok(1_572_864));
        assert_eq!(parse_rate("2GB/s"), Ok(2_000_000_000));
        for bad in [
            "5",
            "5 MB",
            "MB/s",
            "fast",
            "5mb/s",
            "0MB/s",
            "1.2.3MB/s",
            "-1MB/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(show_rate(5_000_000), "5.0 MB/s");
    }

    /// Over any simulated window the bytes let through stay within the
    /// rate (plus one write and the burst), whatever the write sizes.
    #[test]
    fn the_bucket_holds_the_rate() {
        let t0 = Instant::now();
        let rate = 5_000_000u64;
        let mut p = Pace::new(rate, t0);
        let mut now = t0;
        let mut sent = 0u64;
        for i in 0..400 {
            let n = [256 * 1024, 7, 100_000, 64 * 1024][i % 4];
            now += p.take(n, now);
            sent += n as u64;
        }
        let secs = now.duration_since(t0).as_secs_f64();
        let measured = sent as f64 / secs;
        assert!(
            (measured - rate as f64).abs() / (rate as f64) < 0.05,
            "{measured} B/s over {secs} s"
        );
        // After a long idle spell, at most BURST's worth goes at once.
        now += Duration::from_secs(30);
        let mut free = 0usize;
        while p.take(64 * 1024, now).is_zero() {
            free += 64 * 1024;
        }
        assert!(free as f64 <= rate as f64 * 0.25, "{free}");
    }
}
