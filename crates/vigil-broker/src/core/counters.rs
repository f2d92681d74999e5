//! Broker-wide counters (atomics), kept where a metrics exporter can read them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use vigil_proto::server::CloseReason;

/// Slots of a `ShardedCounter`: more than the workers a broker runs on most
/// machines, so each worker has a line of its own.
const SLOTS: usize = 32;

/// Hands each thread its slot, round robin, once.
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Relaxed) % SLOTS;
}

/// One cache line (two, against the adjacent-line prefetcher) per slot.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicU64);

/// A counter every worker adds to per message: each thread adds to a
/// slot of its own (its own cache line, not written by the other workers),
/// and a reader sums the slots. A shared atomic written per message by
/// every worker moved its cache line between cores on every message.
#[derive(Debug)]
pub struct ShardedCounter {
    slots: Box<[Slot]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl ShardedCounter {
    /// Adds `n` in this thread's slot (a locked add on a line no other
    /// worker writes, unless more threads than slots count).
    pub fn add(&self, n: u64) {
        let i = SLOT.try_with(|s| *s).unwrap_or(0);
        self.slots[i].0.fetch_add(n, Relaxed);
    }

    /// The sum over every slot.
    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Relaxed)).sum()
    }
}

/// What the broker has done, counted. Every field only grows except the gauges `connections_current` and `connections_parked`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections open now (after CONNACK).
    pub connections_current: AtomicU64,
    /// Of those, idle ones parked off their task now (a gauge, like the above).
    pub connections_parked: AtomicU64,
    /// Connections accepted (CONNACK success) since start.
    pub connections_total: AtomicU64,
    /// Sockets accepted by the listeners since start (a CONNECT or not).
    pub sockets_total: AtomicU64,
    /// PUBLISH packets received from clients (the broker's own messages,
    /// wills and `$SYS` included, are not).
    pub messages_in: ShardedCounter,
    /// Deliveries queued to subscribers.
    pub messages_out: ShardedCounter,
    /// QoS 0 deliveries dropped (offline session or full queue).
    pub dropped_qos0: AtomicU64,
    /// QoS 1/2 deliveries dropped because a session queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Deliveries dropped because their message expired.
    pub dropped_expired: AtomicU64,
    /// Deliveries dropped because they exceeded the client's maximum packet size.
    pub dropped_too_large: AtomicU64,
    /// Will messages published.
    pub wills_published: AtomicU64,
    /// Sessions ended by their expiry interval.
    pub sessions_expired: AtomicU64,
    /// Disconnects: client DISCONNECT.
    pub disconnect_client: AtomicU64,
    /// Disconnects: keep alive expired.
    pub disconnect_keep_alive: AtomicU64,
    /// Disconnects: taken over by a new connection.
    pub disconnect_taken_over: AtomicU64,
    /// Disconnects: protocol error or malformed packet.
    pub disconnect_protocol_error: AtomicU64,
    /// Disconnects: the client closed the socket without DISCONNECT.
    pub disconnect_peer_closed: AtomicU64,
    /// Disconnects: socket error.
    pub disconnect_socket_error: AtomicU64,
    /// Disconnects: the store failed to write a message (not acknowledged).
    pub disconnect_store_failed: AtomicU64,
    /// Disconnects: server shutdown.
    pub disconnect_shutdown: AtomicU64,
    /// Disconnects: no CONNECT within the connect timeout.
    pub disconnect_connect_timeout: AtomicU64,
    /// Disconnects: an enhanced-authentication exchange not finished
    /// within the connect timeout.
    pub disconnect_auth_timeout: AtomicU64,
    /// Disconnects: CONNECT refused (CONNACK with an error code).
    pub disconnect_connect_refused: AtomicU64,
    /// Disconnects: slow consumer.
    pub disconnect_slow_consumer: AtomicU64,
    /// Times a connected subscriber's queue stayed full past the publisher's
    /// wait, and the slow-consumer policy applied (disconnect or drop).
    pub slow_consumers: AtomicU64,
    /// Times a subscriber's queue stayed full while its own connection was
    /// held publishing into other full queues: its overflow was dropped, and
    /// the slow-consumer policy did not apply.
    pub held_subscriber_stalls: AtomicU64,
    /// Shared-subscription deliveries handed to another member of their group
    /// because the member they went to ended its session.
    pub shared_redelivered: AtomicU64,
    /// Shared-subscription deliveries of an ended member that no other member
    /// could take: none left in the group, or a QoS 2 PUBLISH already sent,
    /// which MQTT-4.8.2-5 forbids sending to anyone else.
    pub shared_undeliverable: AtomicU64,
    /// Disconnects: kicked by an operator (admin API).
    pub disconnect_kicked: AtomicU64,
    /// Disconnects: credentials revoked by a reload (DISCONNECT 0x87).
    pub disconnect_revoked: AtomicU64,
    /// Disconnects: the login (a JWT) expired while connected (DISCONNECT 0xA0).
    pub disconnect_login_expired: AtomicU64,
    /// Times a client went over `max_publish_rate` / `max_publish_bytes_rate`
    /// and vigil stopped reading it for a while.
    pub publish_throttled: AtomicU64,
    /// Connections whose accept waited for `max_connection_rate`.
    pub accepts_delayed: AtomicU64,
    /// Publishers' acknowledgements that waited for other cluster nodes
    /// (one per read batch with forwarded QoS 1/2 messages).
    pub remote_ack_waits: AtomicU64,
    /// Of those, the ones the deadline cut short (a node hung).
    pub remote_ack_timeouts: AtomicU64,
}

impl Counters {
    /// Counts one disconnect under its reason.
    pub fn count_disconnect(&self, reason: &CloseReason) {
        let c = match reason {
            CloseReason::ClientDisconnect(_) => &self.disconnect_client,
            CloseReason::KeepAliveTimeout { .. } => &self.disconnect_keep_alive,
            CloseReason::TakenOver => &self.disconnect_taken_over,
            CloseReason::ProtocolError { .. } => &self.disconnect_protocol_error,
            CloseReason::PeerClosed => &self.disconnect_peer_closed,
            CloseReason::Io(_) => &self.disconnect_socket_error,
            CloseReason::StoreFailed(_) => &self.disconnect_store_failed,
            CloseReason::ServerShutdown => &self.disconnect_shutdown,
            CloseReason::ConnectTimeout => &self.disconnect_connect_timeout,
            CloseReason::AuthTimeout => &self.disconnect_auth_timeout,
            CloseReason::ConnectRefused(_) => &self.disconnect_connect_refused,
            CloseReason::SlowConsumer => &self.disconnect_slow_consumer,
            CloseReason::Kicked => &self.disconnect_kicked,
            CloseReason::Revoked => &self.disconnect_revoked,
            CloseReason::LoginExpired => &self.disconnect_login_expired,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_adds_to_the_sum() {
        let c = std::sync::Arc::new(ShardedCounter::default());
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.add(5);
        // 40 threads over 32 slots: shared slots must not lose additions.
        assert_eq!(c.get(), 40_005);
    }
}
