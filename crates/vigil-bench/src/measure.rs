//! Latency histograms and broker CPU/RSS sampling from /proc.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// A latency histogram in microseconds (1 µs to 100 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Bounds are constants: construction cannot fail.
        Latency(Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant bounds are valid"))
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, d: std::time::Duration) {
        let us = (d.as_micros() as u64).clamp(1, 100_000_000);
        let _ = self.0.record(us);
    }

    /// Adds another histogram.
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// Adds one client's raw samples.
    pub fn merge_samples(&mut self, samples: &Samples) {
        for &us in &samples.0 {
            let _ = self.0.record(u64::from(us).clamp(1, 100_000_000));
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// p50/p99/max in milliseconds, as JSON.
    pub fn summary(&self) -> Value {
        let ms = |us: u64| us as f64 / 1000.0;
        json!({
            "count": self.0.len(),
            "p50_ms": ms(self.0.value_at_quantile(0.50)),
            "p99_ms": ms(self.0.value_at_quantile(0.99)),
            "max_ms": ms(self.0.max()),
        })
    }
}

/// Latencies of one client, kept as raw microseconds until merged.
///
/// A `Latency` histogram spans 1 µs to 100 s and holds ~280 KB of counters;
/// one per pinging client (5,000 to 19,000 of them) made the bench itself
/// allocate and page-fault gigabytes, which showed up as 100 ms PINGRESP
/// "latencies" against every broker.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<u32>);

impl Samples {
    /// Records one latency.
    pub fn record(&mut self, d: std::time::Duration) {
        self.0
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    /// Moves every sample of `other` into these.
    pub fn append(&mut self, mut other: Samples) {
        self.0.append(&mut other.0);
    }
}

/// CPU time and resident memory of a process, read from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// user + system CPU seconds so far.
    pub cpu_secs: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

impl ProcSample {
    /// Samples `/proc/<pid>`; `None` if the process is gone or /proc is unreadable.
    pub fn read(pid: u32) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are 14th and 15th overall.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        // Clock ticks are 100 per second on Linux.
        Some(ProcSample {
            cpu_secs: (utime + stime) / 100.0,
            rss_bytes: rss_kb * 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_in_milliseconds() {
        let mut l = Latency::default();
        for i in 1..=100 {
            l.record(Duration::from_millis(i));
        }
        let s = l.summary();
        assert_eq!(s["count"], 100);
        assert!((s["p50_ms"].as_f64().unwrap() - 50.0).abs() < 0.1);
        assert!((s["max_ms"].as_f64().unwrap() - 100.0).abs() < 0.1);
    }

    #[test]
    fn raw_samples_merge_into_the_histogram() {
        let mut raw = Samples::default();
        raw.record(Duration::from_micros(250));
        raw.record(Duration::from_millis(40));
        let mut l = Latency::default();
        l.merge_samples(&raw);
        let s = l.summary();
        assert_eq!(s["count"], 2);
        assert!((s["max_ms"].as_f64().unwrap() - 40.0).abs() < 0.1);
        assert!(s["p50_ms"].as_f64().unwrap() < 0.3);
    }

    #[test]
    fn samples_this_process() {
        let s = ProcSample::read(std::process::id()).expect("/proc readable");
        assert!(s.rss_bytes > 0);
    }
}
