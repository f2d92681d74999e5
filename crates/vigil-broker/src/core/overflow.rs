//! What happens when a subscriber's queue is full: a publisher waits a short,
//! bounded time for room (a subscriber momentarily behind catches up), and a
//! queue still full after that is a slow consumer, dealt with by policy, so
//! that one stuck client costs only itself and never throttles a topic.
//!
//! The waiting is the publishing connection's (`crate::connection`): it
//! marks itself held, tries `offer_blocked` each time the subscriber's
//! mailbox makes `space`, and at its deadline hands what is left to
//! `give_up_blocked`, which applies the policy.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{info, warn};
use vigil_proto::message::Outgoing;

use super::{Broker, Control, Counters, PushOutcome, SessionRef};

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

/// A delivery still held back after one more try (`Broker::offer_blocked`).
#[derive(Debug)]
pub(crate) enum StillBlocked {
    /// The queue is still full: wait for its `space` and try again, or give up.
    Full(Outgoing),
    /// The subscriber went offline: no use waiting, give up.
    Offline(Outgoing),
}

impl Broker {
    /// One more try to queue a QoS 1/2 delivery that found `session`'s queue
    /// full (`Routed::blocked`): queued and counted, or handed back. The
    /// caller listens on the mailbox's `space` before each try, waits at most
    /// `overflow.wait` for all of a message's blocked deliveries, holding the
    /// publisher meanwhile (`Mailbox::set_held`), and gives up on what is left
    /// with `give_up_blocked`, so an acknowledged message is not dropped
    /// because a subscriber is momentarily behind.
    pub(crate) fn offer_blocked(
        &self,
        session: &SessionRef,
        outgoing: Outgoing,
    ) -> Result<(), StillBlocked> {
        if !session.is_online() {
            if session.mailbox.is_sealed() {
                self.moved_delivery(session, &outgoing);
                return Ok(());
            }
            return Err(StillBlocked::Offline(outgoing));
        }
        match session.mailbox.push(outgoing, true, self.config.mailbox) {
            // Online pushes are never dropped as offline.
            PushOutcome::Queued | PushOutcome::DroppedOffline => {
                self.counters.messages_out.add(1);
                Ok(())
            }
            PushOutcome::Full(o) => Err(StillBlocked::Full(o)),
            PushOutcome::Moved(o) => {
                self.moved_delivery(session, &o);
                Ok(())
            }
        }
    }

    /// Gives up on a blocked delivery whose publisher has waited since
    /// `held_from`: the queue still full is a slow consumer (the policy
    /// applies), the delivery is dropped and counted, and the queue's later
    /// overflow is dropped at once without holding any publisher again. A
    /// subscriber whose own connection was held the same way meanwhile (two
    /// clients publishing to each other, each waiting for the other to drain)
    /// is no slow consumer: its overflow is dropped and counted, and it stays
    /// connected.
    pub(crate) fn give_up_blocked(
        &self,
        session: &SessionRef,
        outgoing: &Outgoing,
        held_from: Instant,
    ) {
        if session.is_online() && session.mailbox.stall() {
            if session.mailbox.held_since(held_from) {
                Counters::add(&self.counters.held_subscriber_stalls, 1);
                warn!(
                    client = session.client_id(),
                    "queue full while its own connection waits to publish: dropping its QoS 1/2 overflow until it drains"
                );
            } else {
                self.slow_consumer(session);
            }
        }
        self.drop_blocked(session, outgoing);
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
