//! Fixed-bucket histograms in Prometheus' cumulative form: the store
//! measures its commits with them, and the broker its keep-alive closes and
//! PINGRESPs (re-exported as `vigil_broker::observe::histogram`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A fixed-bucket histogram (of durations, or of plain numbers with a scale of 1).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Recorded units per unit of the bounds (1e9: nanoseconds, bounds in seconds).
    scale: f64,
    /// One per bound, plus +Inf; not cumulative.
    buckets: Box<[AtomicU64]>,
    sum_units: AtomicU64,
    count: AtomicU64,
}

/// What a histogram holds, read at once (Prometheus' cumulative form).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Upper bounds, seconds (the +Inf bucket is `count`).
    pub bounds: &'static [f64],
    /// Observations at or under each bound.
    pub cumulative: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram of durations with `bounds` (ascending, seconds).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram::with_scale(bounds, 1e9)
    }

    /// An empty histogram of numbers recorded with `record_units`, `scale`
    /// units to one unit of `bounds`.
    pub fn with_scale(bounds: &'static [f64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            scale,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_units: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn record(&self, d: Duration) {
        self.record_units(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one observation of `units`.
    pub fn record_units(&self, units: u64) {
        let value = units as f64 / self.scale;
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_units.fetch_add(units, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn add_into(&self, counts: &mut [u64], sum_units: &mut u64, count: &mut u64) {
        for (c, b) in counts.iter_mut().zip(self.buckets.iter()) {
            *c += b.load(Relaxed);
        }
        *sum_units = sum_units.saturating_add(self.sum_units.load(Relaxed));
        *count += self.count.load(Relaxed);
    }

    /// Its contents now.
    pub fn snapshot(&self) -> Snapshot {
        snapshot_of(std::slice::from_ref(&self))
    }
}

/// The sum of `parts`, which share their bounds and scale (shards of one
/// histogram); None when there are no parts.
pub fn snapshot_of(parts: &[&Histogram]) -> Snapshot {
    let (bounds, scale) = parts
        .first()
        .map_or((&[][..], 1.0), |h| (h.bounds, h.scale));
    let mut counts = vec![0u64; bounds.len() + 1];
    let (mut sum_units, mut count) = (0u64, 0u64);
    for h in parts {
        h.add_into(&mut counts, &mut sum_units, &mut count);
    }
    let mut running = 0;
    let cumulative = counts[..bounds.len()]
        .iter()
        .map(|c| {
            running += c;
            running
        })
        .collect();
    Snapshot {
        bounds,
        cumulative,
        sum: sum_units as f64 / scale,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.record(Duration::from_micros(500));
        h.record(Duration::from_millis(1));
        h.record(Duration::from_millis(5));
        h.record(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![2, 3]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 2.0065).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn plain_numbers_with_scale_one() {
        let h = Histogram::with_scale(&[1.0, 10.0, 100.0], 1.0);
        for n in [1, 2, 10, 11, 500] {
            h.record_units(n);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![1, 3, 4]);
        assert_eq!((s.count, s.sum), (5, 524.0));
    }
}
