//! Bytes read from and written to client sockets, and PUBLISH packets by
//! QoS received from clients and handed to their connections, counted per thread: each
//! worker adds to its own shard (a load and a store, no locked instruction,
//! no cache line shared with another worker) and a reader sums the shards.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Debug, Default)]
struct Shard {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// MQTT packets of any kind received from and sent to clients.
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    /// Payload bytes of PUBLISH packets received, and of deliveries handed
    /// to connections to send.
    publish_bytes_in: AtomicU64,
    publish_bytes_out: AtomicU64,
    /// PUBLISH packets received from clients, by QoS.
    publish_in: [AtomicU64; 3],
    /// Deliveries handed to connections to send, by delivery QoS.
    publish_out: [AtomicU64; 3],
}

static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());

thread_local! {
    static SHARD: Arc<Shard> = {
        let shard = Arc::new(Shard::default());
        SHARDS.lock().push(shard.clone());
        shard
    };
}

/// Only the owning thread writes its shard, so a plain load and store
/// cannot lose an addition.
fn bump(counter: &AtomicU64, n: usize) {
    counter.store(counter.load(Relaxed).wrapping_add(n as u64), Relaxed);
}

/// Counts `n` bytes read from a client.
pub fn bytes_in(n: usize) {
    let _ = SHARD.try_with(|s| bump(&s.bytes_in, n));
}

/// Counts `n` bytes written to a client.
pub fn bytes_out(n: usize) {
    let _ = SHARD.try_with(|s| bump(&s.bytes_out, n));
}

/// Counts `n` MQTT packets received from a client.
pub fn packets_in(n: u64) {
    if n > 0 {
        let _ = SHARD.try_with(|s| bump(&s.packets_in, n as usize));
    }
}

/// Counts `n` MQTT packets encoded to be sent to a client.
pub fn packets_out(n: u64) {
    if n > 0 {
        let _ = SHARD.try_with(|s| bump(&s.packets_out, n as usize));
    }
}

/// Counts one PUBLISH of QoS `qos` (0..=2) with `payload` bytes received from a client.
pub fn publish_in(qos: u8, payload: usize) {
    let _ = SHARD.try_with(|s| {
        bump(&s.publish_in[usize::from(qos.min(2))], 1);
        bump(&s.publish_bytes_in, payload);
    });
}

/// Counts deliveries handed to a connection: `by_qos[q]` of QoS q, with
/// `payload` bytes in all.
pub fn publish_out(by_qos: [usize; 3], payload: usize) {
    let _ = SHARD.try_with(|s| {
        bump(&s.publish_bytes_out, payload);
        for (counter, n) in s.publish_out.iter().zip(by_qos) {
            if n > 0 {
                bump(counter, n);
            }
        }
    });
}

/// PUBLISH packets (received, handed out to send) by QoS, over every thread.
pub fn publishes() -> ([u64; 3], [u64; 3]) {
    let mut received = [0; 3];
    let mut sent = [0; 3];
    for s in SHARDS.lock().iter() {
        for q in 0..3 {
            received[q] += s.publish_in[q].load(Relaxed);
            sent[q] += s.publish_out[q].load(Relaxed);
        }
    }
    (received, sent)
}

/// What every thread counted, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// MQTT packets received from clients.
    pub packets_in: u64,
    /// MQTT packets sent to clients.
    pub packets_out: u64,
    /// PUBLISH payload bytes received.
    pub publish_bytes_in: u64,
    /// Delivery payload bytes handed to connections to send.
    pub publish_bytes_out: u64,
}

/// Packet and payload totals since start, over every thread.
pub fn packet_totals() -> Totals {
    SHARDS.lock().iter().fold(Totals::default(), |t, s| Totals {
        packets_in: t.packets_in + s.packets_in.load(Relaxed),
        packets_out: t.packets_out + s.packets_out.load(Relaxed),
        publish_bytes_in: t.publish_bytes_in + s.publish_bytes_in.load(Relaxed),
        publish_bytes_out: t.publish_bytes_out + s.publish_bytes_out.load(Relaxed),
    })
}

/// Bytes (received, sent) since start, over every thread.
pub fn totals() -> (u64, u64) {
    SHARDS.lock().iter().fold((0, 0), |(i, o), s| {
        (i + s.bytes_in.load(Relaxed), o + s.bytes_out.load(Relaxed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_is_summed() {
        let (i0, o0) = totals();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        bytes_in(3);
                        bytes_out(5);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (i1, o1) = totals();
        // Other tests of this process may count too: at least ours.
        assert!(i1 - i0 >= 12_000 && o1 - o0 >= 20_000);
    }
}
