//! Histograms the broker measures on itself: how late a keep-alive close
//! comes after its 1.5 × K deadline, and how long a PINGREQ waits for its
//! PINGRESP. Process-wide (one broker per process). The PINGRESP one is
//! recorded by every worker thread many times a second, so each thread
//! writes only its own shard and a scrape sums the shards: no cache line is
//! shared between workers on that path.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
pub use vigil_store::histogram::{snapshot_of, Histogram, Snapshot};

/// Bucket bounds of the keep-alive close lateness, seconds.
pub const LATENESS_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds of the PINGRESP service time, seconds.
pub const PINGRESP_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Keep-alive close time minus the 1.5 × K deadline (rare: recorded at each
/// keep-alive close, one shared histogram).
pub static KEEPALIVE_LATENESS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(LATENESS_BOUNDS));

static PINGRESP_SHARDS: Mutex<Vec<Arc<Histogram>>> = Mutex::new(Vec::new());

thread_local! {
    static PINGRESP_SHARD: Arc<Histogram> = {
        let shard = Arc::new(Histogram::new(PINGRESP_BOUNDS));
        PINGRESP_SHARDS.lock().push(shard.clone());
        shard
    };
}

/// Records one PINGREQ-read-to-PINGRESP-written time in this thread's shard.
pub fn record_pingresp(d: Duration) {
    let _ = PINGRESP_SHARD.try_with(|h| h.record(d));
}

/// The PINGRESP service times of every thread, summed.
pub fn pingresp_snapshot() -> Snapshot {
    let shards = PINGRESP_SHARDS.lock().clone();
    let parts: Vec<&Histogram> = shards.iter().map(|s| &**s).collect();
    if parts.is_empty() {
        return Histogram::new(PINGRESP_BOUNDS).snapshot();
    }
    snapshot_of(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_of_every_thread_are_summed() {
        let before = pingresp_snapshot().count;
        let threads: Vec<_> = (0..3)
            .map(|_| std::thread::spawn(|| record_pingresp(Duration::from_micros(80))))
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        record_pingresp(Duration::from_micros(80));
        let after = pingresp_snapshot();
        assert!(after.count >= before + 4);
        // 80 µs is over the 50 µs bound and under the 100 µs one.
        assert!(after.cumulative[1] >= 4);
    }
}
