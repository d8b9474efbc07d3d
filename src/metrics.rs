//! Prometheus text exposition (version 0.0.4) for node_exporter's textfile
//! collector, written by both binaries to their `metrics_file`.
//!
//! Only what the collector needs: gauges and counters with `# HELP` and
//! `# TYPE`, each family once, label values escaped, and the file replaced
//! atomically (a temp in the same directory, then a rename) so a scrape
//! never reads half a file. No HTTP endpoint: the node's exporter already
//! serves one, and a listener of our own would be one more thing to secure.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// A metrics file being built. Families are written in the order added.
#[derive(Default)]
pub struct Metrics {
    text: String,
    families: Vec<String>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Names follow the
    /// Prometheus conventions (`cis490_…`, base units in the name:
    /// `_seconds`, `_bytes`, `_total` for counters).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Metrics {
        debug_assert!(
            !self.families.iter().any(|f| f == name),
            "family {name} twice"
        );
        self.families.push(name.to_owned());
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Metrics {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Metrics {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Replaces `path` with the metrics: `<path>.tmp` in the same directory,
    /// then a rename. No fsync: a metrics file lost in a power cut is
    /// rewritten by the next pass (or within seconds by the receiver).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, &self.text)?;
        std::fs::rename(&tmp, path)
    }
}

/// A sample value as the text format wants it: integers without a
/// fraction, others as Rust prints them, special values by name.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_format() {
        let mut m = Metrics::new();
        m.single("cis490_x_seconds", Kind::Gauge, "A time.", 1.5);
        m.family("cis490_y_total", Kind::Counter, "Answers by status.")
            .sample("cis490_y_total", &[("status", "201")], 3.0)
            .sample("cis490_y_total", &[("host", "a\"b\\c")], 0.0);
        assert_eq!(
            m.text(),
            "# HELP cis490_x_seconds A time.\n# TYPE cis490_x_seconds gauge\ncis490_x_seconds 1.5\n\
             # HELP cis490_y_total Answers by status.\n# TYPE cis490_y_total counter\n\
             cis490_y_total{status=\"201\"} 3\ncis490_y_total{host=\"a\\\"b\\\\c\"} 0\n"
        );
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1_795_842_000.0), "1795842000");
    }
}
