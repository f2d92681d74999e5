//! Broker-wide counters (atomics), kept where a metrics exporter can read them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use vigil_proto::server::CloseReason;

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
    /// PUBLISH packets received from clients.
    pub messages_in: AtomicU64,
    /// Deliveries queued to subscribers.
    pub messages_out: AtomicU64,
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
    /// Disconnects: server shutdown.
    pub disconnect_shutdown: AtomicU64,
    /// Disconnects: no CONNECT in time, or CONNECT refused.
    pub disconnect_before_connack: AtomicU64,
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
            CloseReason::Io(_) | CloseReason::StoreFailed(_) => &self.disconnect_socket_error,
            CloseReason::ServerShutdown => &self.disconnect_shutdown,
            CloseReason::ConnectTimeout | CloseReason::ConnectRefused(_) => {
                &self.disconnect_before_connack
            }
            CloseReason::SlowConsumer => &self.disconnect_slow_consumer,
            CloseReason::Kicked => &self.disconnect_kicked,
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
