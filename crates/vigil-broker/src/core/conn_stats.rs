//! One connection's own figures: bytes and packets each way, when its
//! client last sent a packet, and what it has in flight. Written only by
//! the connection (its task, or its worker's parking lot while it is
//! parked: the same thread), with a plain load and store, never a locked
//! instruction, and on a cache line no other connection writes; read by the
//! admin API when asked and into the disconnect record at the close.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// What `last_packet_ms` counts from: any fixed instant will do (it is
/// never taken for the time now), one per process keeps every
/// connection's figures 8 bytes.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The figures of one connection (see the module's comment).
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    /// Milliseconds from `EPOCH` to the last complete packet from the
    /// client, plus one (0: none yet).
    last_packet_ms: AtomicU64,
    /// QoS 1/2 deliveries sent and not yet acknowledged.
    inflight: AtomicU64,
}

/// A reading of `ConnStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnFigures {
    /// Bytes read from the client.
    pub bytes_in: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
    /// MQTT packets received from the client.
    pub packets_in: u64,
    /// MQTT packets sent to the client.
    pub packets_out: u64,
    /// Time since the client's last complete packet (None: none yet).
    pub since_last_packet: Option<Duration>,
    /// QoS 1/2 deliveries sent and not yet acknowledged.
    pub inflight: u64,
}

/// Only the connection's own thread writes: a load and a store cannot lose
/// an addition, and cost what a plain integer would.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl ConnStats {
    /// Counts `bytes` read holding `packets` complete packets, the last
    /// of them complete at `at`.
    pub(crate) fn received(&self, bytes: usize, packets: u64, at: Instant) {
        bump(&self.bytes_in, bytes as u64);
        if packets > 0 {
            bump(&self.packets_in, packets);
            let ms = at.saturating_duration_since(*EPOCH).as_millis() as u64;
            self.last_packet_ms.store(ms + 1, Relaxed);
        }
    }

    /// Counts `bytes` written.
    pub(crate) fn sent_bytes(&self, bytes: usize) {
        bump(&self.bytes_out, bytes as u64);
    }

    /// Counts `packets` encoded to be written.
    pub(crate) fn sent_packets(&self, packets: u64) {
        if packets > 0 {
            bump(&self.packets_out, packets);
        }
    }

    /// Sets the in-flight count.
    pub(crate) fn set_inflight(&self, n: usize) {
        self.inflight.store(n as u64, Relaxed);
    }

    /// The figures as they are at `now`.
    pub(crate) fn read(&self, now: Instant) -> ConnFigures {
        let last = self.last_packet_ms.load(Relaxed);
        ConnFigures {
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            packets_in: self.packets_in.load(Relaxed),
            packets_out: self.packets_out.load(Relaxed),
            since_last_packet: (last > 0).then(|| {
                let now = now.saturating_duration_since(*EPOCH);
                now.saturating_sub(Duration::from_millis(last - 1))
            }),
            inflight: self.inflight.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ages() {
        let s = ConnStats::default();
        let at = Instant::now();
        assert_eq!(s.read(at), ConnFigures::default());
        s.received(14, 1, at);
        s.received(3, 0, at);
        s.sent_bytes(4);
        s.sent_packets(1);
        s.set_inflight(2);
        let f = s.read(at + Duration::from_secs(3));
        assert_eq!(
            (
                f.bytes_in,
                f.bytes_out,
                f.packets_in,
                f.packets_out,
                f.inflight
            ),
            (17, 4, 1, 1, 2)
        );
        // The last packet's instant is kept to the millisecond.
        let since = f.since_last_packet.unwrap();
        assert!(
            since > Duration::from_millis(2999) && since < Duration::from_millis(3001),
            "{since:?}"
        );
    }
}
