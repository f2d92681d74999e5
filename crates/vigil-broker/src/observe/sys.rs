//! The `$SYS` topics: retained messages under Mosquitto's names (so existing
//! dashboards work) and vigil's own under `$SYS/broker/vigil/`, published
//! every `[sys] interval` seconds from one task. Only values that changed
//! since the last round are published: the retained ones also go to the
//! store, and an idle broker should not write to its disk every interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vigil_proto::message::Message;
use vigil_proto::QoS;

use crate::core::{Broker, Counters};

/// One round's readings of the broker, the inputs of every `$SYS` value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// Seconds since start.
    pub uptime: u64,
    /// Clients connected now.
    pub connected: u64,
    /// Sessions held, connected or not.
    pub sessions: u64,
    /// Connections accepted since start.
    pub connects: u64,
    /// Sockets accepted since start.
    pub sockets: u64,
    /// MQTT packets of any kind received from clients.
    pub packets_in: u64,
    /// MQTT packets of any kind sent to clients.
    pub packets_out: u64,
    /// PUBLISH packets received from clients.
    pub received: u64,
    /// PUBLISH packets handed to client connections to send.
    pub sent: u64,
    /// PUBLISH payload bytes received.
    pub publish_bytes_in: u64,
    /// PUBLISH payload bytes handed to connections to send.
    pub publish_bytes_out: u64,
    /// Deliveries dropped, for any cause.
    pub dropped: u64,
    /// Sessions ended by their expiry.
    pub expired: u64,
    /// Subscriptions (shared ones included).
    pub subscriptions: u64,
    /// Shared subscriptions.
    pub shared_subscriptions: u64,
    /// Retained topics.
    pub retained: u64,
    /// Messages waiting in session queues.
    pub queued: u64,
    /// Bytes of those (topic + payload + 64 each, as the queues count them).
    pub queued_bytes: u64,
    /// Payload bytes of the retained messages.
    pub retained_bytes: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

impl Reading {
    /// Reads `broker` now.
    pub fn of(broker: &Broker) -> Reading {
        let c = broker.counters();
        let (subscriptions, shared) = broker.subscription_counts();
        let (queued, queued_bytes) = broker.queued_totals();
        let t = crate::observe::traffic::packet_totals();
        let (_, sent_by_qos) = crate::observe::traffic::publishes();
        Reading {
            uptime: broker.uptime(std::time::Instant::now()).as_secs(),
            connected: Counters::get(&c.connections_current),
            sessions: broker.session_count() as u64,
            connects: Counters::get(&c.connections_total),
            sockets: Counters::get(&c.sockets_total),
            packets_in: t.packets_in,
            packets_out: t.packets_out,
            received: c.messages_in.get(),
            sent: sent_by_qos.iter().sum(),
            publish_bytes_in: t.publish_bytes_in,
            publish_bytes_out: t.publish_bytes_out,
            dropped: Counters::get(&c.dropped_qos0)
                + Counters::get(&c.dropped_queue_full)
                + Counters::get(&c.dropped_expired)
                + Counters::get(&c.dropped_too_large),
            expired: Counters::get(&c.sessions_expired),
            subscriptions: subscriptions as u64,
            shared_subscriptions: shared as u64,
            retained: broker.retained_count() as u64,
            queued: queued as u64,
            queued_bytes: queued_bytes as u64,
            retained_bytes: broker.retained_bytes(),
            bytes_in: crate::observe::traffic::totals().0,
            bytes_out: crate::observe::traffic::totals().1,
        }
    }
}

/// Per-minute rates averaged over 1, 5 and 15 minutes, as Mosquitto's `load/`.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    per_min: [f64; 3],
}

const WINDOWS: [(&str, f64); 3] = [("1min", 60.0), ("5min", 300.0), ("15min", 900.0)];

impl Load {
    /// Folds in `delta` events seen over `secs` seconds.
    fn update(&mut self, delta: u64, secs: f64) {
        let rate = delta as f64 * 60.0 / secs.max(0.001);
        for (avg, (_, window)) in self.per_min.iter_mut().zip(WINDOWS) {
            let keep = (-secs / window).exp();
            *avg = *avg * keep + rate * (1.0 - keep);
        }
    }
}

/// The `$SYS` values of one round, and what the previous round published.
#[derive(Debug, Default)]
pub struct SysState {
    last: Option<Reading>,
    maximum: u64,
    loads: HashMap<&'static str, Load>,
    published: HashMap<String, String>,
}

impl SysState {
    /// The topics and values of a round read as `now`, `secs` after the last.
    pub fn values(&mut self, now: Reading, secs: f64, broker: &Broker) -> Vec<(String, String)> {
        self.maximum = self.maximum.max(now.connected);
        let last = self.last.replace(now).unwrap_or(now);
        let mut v: Vec<(String, String)> = Vec::with_capacity(64);
        let mut put = |topic: &str, value: String| v.push((format!("$SYS/broker/{topic}"), value));
        put(
            "version",
            format!("vigil version {}", env!("CARGO_PKG_VERSION")),
        );
        put("uptime", format!("{} seconds", now.uptime));
        put("clients/connected", now.connected.to_string());
        put("clients/active", now.connected.to_string());
        put(
            "clients/disconnected",
            now.sessions.saturating_sub(now.connected).to_string(),
        );
        put(
            "clients/inactive",
            now.sessions.saturating_sub(now.connected).to_string(),
        );
        put("clients/total", now.sessions.to_string());
        put("clients/maximum", self.maximum.to_string());
        put("clients/expired", now.expired.to_string());
        // As Mosquitto: `messages/` counts MQTT packets of every kind,
        // `publish/` PUBLISH packets only.
        put("messages/received", now.packets_in.to_string());
        put("messages/sent", now.packets_out.to_string());
        put("publish/messages/received", now.received.to_string());
        put("publish/messages/sent", now.sent.to_string());
        put("publish/messages/dropped", now.dropped.to_string());
        put("publish/bytes/received", now.publish_bytes_in.to_string());
        put("publish/bytes/sent", now.publish_bytes_out.to_string());
        put("subscriptions/count", now.subscriptions.to_string());
        put(
            "shared_subscriptions/count",
            now.shared_subscriptions.to_string(),
        );
        put("retained messages/count", now.retained.to_string());
        // Messages the broker holds: retained ones and those queued for
        // sessions (Mosquitto counts its one message store the same way).
        put(
            "store/messages/count",
            (now.retained + now.queued).to_string(),
        );
        put(
            "store/messages/bytes",
            (now.retained_bytes + now.queued_bytes).to_string(),
        );
        put("bytes/received", now.bytes_in.to_string());
        put("bytes/sent", now.bytes_out.to_string());
        for (name, delta) in [
            (
                "messages/received",
                now.packets_in.saturating_sub(last.packets_in),
            ),
            (
                "messages/sent",
                now.packets_out.saturating_sub(last.packets_out),
            ),
            (
                "publish/received",
                now.received.saturating_sub(last.received),
            ),
            ("publish/sent", now.sent.saturating_sub(last.sent)),
            ("publish/dropped", now.dropped.saturating_sub(last.dropped)),
            ("connections", now.connects.saturating_sub(last.connects)),
            ("sockets", now.sockets.saturating_sub(last.sockets)),
            ("bytes/received", now.bytes_in.saturating_sub(last.bytes_in)),
            ("bytes/sent", now.bytes_out.saturating_sub(last.bytes_out)),
        ] {
            let load = self.loads.entry(name).or_default();
            load.update(delta, secs);
            for (avg, (window, _)) in load.per_min.iter().zip(WINDOWS) {
                put(&format!("load/{name}/{window}"), format!("{avg:.2}"));
            }
        }
        let c = broker.counters();
        for (reason, counter) in disconnect_counters(c) {
            put(
                &format!("vigil/disconnects/{reason}"),
                Counters::get(counter).to_string(),
            );
        }
        let lateness = crate::observe::histogram::KEEPALIVE_LATENESS.snapshot();
        put("vigil/keepalive/closes", lateness.count.to_string());
        if lateness.count > 0 {
            put(
                "vigil/keepalive/lateness/average",
                format!("{:.6}", lateness.sum / lateness.count as f64),
            );
        }
        put(
            "vigil/wills/published",
            Counters::get(&c.wills_published).to_string(),
        );
        put(
            "vigil/connections/parked",
            Counters::get(&c.connections_parked).to_string(),
        );
        v
    }

    /// Of `values`, those that differ from what was last published (and
    /// remembers them as published).
    pub fn changed(&mut self, values: Vec<(String, String)>) -> Vec<(String, String)> {
        values
            .into_iter()
            .filter(|(topic, value)| {
                if self.published.get(topic) == Some(value) {
                    return false;
                }
                self.published.insert(topic.clone(), value.clone());
                true
            })
            .collect()
    }
}

/// Each disconnect counter with its `CloseReason` label (`CloseReason::label`:
/// the disconnect history's `reason` names the same ones).
pub fn disconnect_counters(c: &Counters) -> [(&'static str, &std::sync::atomic::AtomicU64); 15] {
    [
        ("client_disconnect", &c.disconnect_client),
        ("keep_alive_timeout", &c.disconnect_keep_alive),
        ("taken_over", &c.disconnect_taken_over),
        ("protocol_error", &c.disconnect_protocol_error),
        ("peer_closed", &c.disconnect_peer_closed),
        ("socket_error", &c.disconnect_socket_error),
        ("store_failed", &c.disconnect_store_failed),
        ("server_shutdown", &c.disconnect_shutdown),
        ("connect_timeout", &c.disconnect_connect_timeout),
        ("auth_timeout", &c.disconnect_auth_timeout),
        ("connect_refused", &c.disconnect_connect_refused),
        ("slow_consumer", &c.disconnect_slow_consumer),
        ("kicked", &c.disconnect_kicked),
        ("revoked", &c.disconnect_revoked),
        ("login_expired", &c.disconnect_login_expired),
    ]
}

/// Publishes one retained `$SYS` message as the broker.
fn publish(broker: &Broker, topic: String, value: String) {
    broker.publish(
        vigil_proto::time::Clock::now(),
        None,
        Message {
            topic,
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: None,
            expires_at: None,
        },
    );
}

/// The `$SYS` publisher's thread; dropping this stops it.
#[derive(Debug)]
pub struct SysPublisher {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SysPublisher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publishes the `$SYS` topics every `interval` from a thread of its own: a
/// round reads every session, which must not hold up an MQTT worker (the
/// first of them also runs the broker's own tasks).
pub fn start(broker: Arc<Broker>, interval: Duration) -> std::io::Result<SysPublisher> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("vigil-sys".into())
        .spawn(move || {
            let mut state = SysState::default();
            let mut last = std::time::Instant::now();
            loop {
                let now = std::time::Instant::now();
                let secs = now
                    .duration_since(last)
                    .as_secs_f64()
                    .max(interval.as_secs_f64());
                last = now;
                let values = state.values(Reading::of(&broker), secs, &broker);
                for (topic, value) in state.changed(values) {
                    publish(&broker, topic, value);
                }
                // A message or a hang-up both mean stop.
                match stopped.recv_timeout(interval) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })?;
    Ok(SysPublisher {
        stop: Some(stop),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vigil_proto::server::CloseReason;
    use vigil_proto::ReasonCode;

    use super::*;

    #[test]
    fn each_close_reason_counts_under_its_own_label() {
        let all = [
            CloseReason::ClientDisconnect(ReasonCode::SUCCESS),
            CloseReason::KeepAliveTimeout {
                silent_for: Duration::from_secs(3),
                keep_alive: Duration::from_secs(2),
            },
            CloseReason::ConnectTimeout,
            CloseReason::ConnectRefused(ReasonCode::NOT_AUTHORIZED),
            CloseReason::ProtocolError {
                reason: ReasonCode::PROTOCOL_ERROR,
                detail: "x".into(),
            },
            CloseReason::TakenOver,
            CloseReason::ServerShutdown,
            CloseReason::SlowConsumer,
            CloseReason::Kicked,
            CloseReason::PeerClosed,
            CloseReason::Io("reset".into()),
            CloseReason::StoreFailed("disk full".into()),
        ];
        let c = Counters::default();
        for (i, reason) in all.iter().enumerate() {
            c.count_disconnect(reason);
            let counted: Vec<_> = disconnect_counters(&c)
                .into_iter()
                .filter(|(_, n)| Counters::get(n) > 0)
                .map(|(label, _)| label)
                .collect();
            // One more label counted, and it is this reason's.
            assert_eq!(counted.len(), i + 1, "{reason:?}");
            assert!(counted.contains(&reason.label()), "{reason:?}");
        }
    }
}
