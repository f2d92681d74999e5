//! What happens when a subscriber's queue is full: a publisher waits a short,
//! bounded time for room (a subscriber momentarily behind catches up), and a
//! queue still full after that is a slow consumer, dealt with by policy, so
//! that one stuck client costs only itself and never throttles a topic.

use std::time::Duration;

use serde::Deserialize;
use tracing::{info, warn};
use vigil_proto::message::Outgoing;

use super::{Broker, Control, Counters, SessionRef};

/// What the broker does with a connected subscriber whose queue stays full
/// for longer than a publisher may wait (`[sessions] slow_consumer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Close its connection (MQTT 5: DISCONNECT 0x97 Quota exceeded). A
    /// persistent session keeps what was queued and in flight for when the
    /// client returns; a clean one ends. The client learns it fell behind.
    #[default]
    Disconnect,
    /// Keep the connection and drop what does not fit, counted, until its
    /// queue has drained empty.
    Drop,
}

impl SlowConsumerPolicy {
    /// The config-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Disconnect => "disconnect",
            SlowConsumerPolicy::Drop => "drop",
        }
    }
}

/// How the broker treats full subscriber queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverflowConfig {
    /// What happens to a slow consumer.
    pub policy: SlowConsumerPolicy,
    /// Longest time a publisher waits for room in full subscriber queues
    /// before the policy applies.
    pub wait: Duration,
}

impl Default for OverflowConfig {
    fn default() -> Self {
        OverflowConfig {
            policy: SlowConsumerPolicy::default(),
            wait: Duration::from_millis(500),
        }
    }
}

impl Broker {
    /// Waits (at most `overflow.wait` for all of them) for room in each full
    /// queue, so an acknowledged QoS 1/2 message is not dropped because a
    /// subscriber is momentarily behind; the publisher `from` is held
    /// meanwhile. A queue still full then is a slow consumer: the policy
    /// applies, the delivery is dropped and counted, and its later overflow
    /// is dropped at once without holding any publisher again. A subscriber
    /// whose own connection is held the same way (two clients publishing to
    /// each other, each waiting for the other to drain) is no slow consumer:
    /// its overflow is dropped and counted, and it stays connected.
    pub async fn deliver_blocked(
        &self,
        from: Option<&SessionRef>,
        blocked: Vec<(SessionRef, Outgoing)>,
    ) {
        if let Some(from) = from {
            from.mailbox.set_held(true);
        }
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + self.config.overflow.wait;
        for (session, outgoing) in blocked {
            let limits = self.config.mailbox;
            let s = session.clone();
            match session
                .mailbox
                .push_when_space(outgoing, limits, move || s.is_online(), deadline)
                .await
            {
                Ok(()) => self.counters.messages_out.add(1),
                Err(o) => {
                    if session.is_online() && session.mailbox.stall() {
                        if session.mailbox.held_since(started) {
                            Counters::add(&self.counters.held_subscriber_stalls, 1);
                            warn!(
                                client = session.client_id(),
                                "queue full while its own connection waits to publish: dropping its QoS 1/2 overflow until it drains"
                            );
                        } else {
                            self.slow_consumer(&session);
                        }
                    }
                    self.drop_blocked(&session, &o);
                }
            }
        }
        if let Some(from) = from {
            from.mailbox.set_held(false);
        }
    }

    /// Applies the slow-consumer policy to `session`, whose queue just stalled.
    fn slow_consumer(&self, session: &SessionRef) {
        Counters::add(&self.counters.slow_consumers, 1);
        let wait_ms = self.config.overflow.wait.as_millis();
        let queued = session.mailbox.len();
        match self.config.overflow.policy {
            SlowConsumerPolicy::Disconnect => {
                warn!(
                    client = session.client_id(),
                    queued,
                    "slow consumer: queue full for {wait_ms} ms; disconnecting it (0x97)"
                );
                if let Some(c) = session.inner.lock().presence.conn() {
                    c.control.send(Control::SlowConsumer);
                }
            }
            SlowConsumerPolicy::Drop => warn!(
                client = session.client_id(),
                queued,
                "slow consumer: queue full for {wait_ms} ms; dropping its QoS 1/2 overflow until it catches up"
            ),
        }
    }

    /// Drops a delivery that found no room (counted; logged once per stall).
    pub(super) fn drop_blocked(&self, session: &SessionRef, outgoing: &Outgoing) {
        self.forget_delivery(session, outgoing);
        Counters::add(&self.counters.dropped_queue_full, 1);
        if session.mailbox.note_drop() {
            warn!(
                client = session.client_id(),
                queued = session.mailbox.len(),
                online = session.is_online(),
                "session queue full: QoS {} message dropped (further drops counted until it drains)",
                outgoing.qos.as_u8()
            );
        }
    }

    /// Logs the end of a stall, once the session's queue drained empty.
    pub(crate) fn stall_ended(&self, session: &SessionRef, dropped: u64) {
        info!(
            client = session.client_id(),
            dropped, "session queue drained: caught up after dropping messages"
        );
    }
}
