//! A session's bounded queue of deliveries. Publishers push into it from any
//! task; the session's connection drains it in batches.
//!
//! Overflow policy (counted in `Counters`): QoS 0 is dropped when the session
//! is offline or the queue is full. QoS 1/2 for an online session that is full
//! is handed back to the publisher's connection, which waits for space before
//! it acknowledges and reads on (backpressure, bounded in time); QoS 1/2 for an
//! offline session beyond the bound is dropped with a counter and a warning.
//! Messages already in the queue are never evicted.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;
use vigil_proto::message::Outgoing;
use vigil_proto::QoS;

use std::sync::Arc;

use super::signal::WakeSignal;
use super::{SessionRef, WakeInbox};

/// Queue bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    /// Most deliveries queued.
    pub max_messages: usize,
    /// Most bytes queued (topic + payload + overhead per message).
    pub max_bytes: usize,
}

/// What happened to a pushed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued.
    Queued,
    /// QoS 0 to an offline session: not queued, by policy.
    DroppedOffline,
    /// The queue is at its bound; the delivery is handed back.
    Full(Outgoing),
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    bytes: usize,
    /// A wake is owed or already on its way: pushes after the first one of a
    /// burst need not wake the connection again, it drains them all at once.
    wake_pending: bool,
    /// The worker the session's connection runs on, if it runs on one.
    home: Option<Arc<WakeInbox>>,
    /// Publishers waiting for room; made by the first that waits (an inline
    /// `Notify` was 32 bytes in every session, and put `Session` a jemalloc
    /// size class up, 320 -> 384 bytes).
    space: Option<Arc<Notify>>,
}

/// The bounded delivery queue of one session.
#[derive(Debug, Default)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    /// Wakes the connection: polled in place, no future per wait.
    notify: WakeSignal,
}

impl Mailbox {
    /// Queues one delivery within `limits`, waking the connection unless a
    /// wake is already owed to it.
    pub fn push(&self, outgoing: Outgoing, online: bool, limits: MailboxLimits) -> PushOutcome {
        let (outcome, wake) = self.push_unwoken(outgoing, online, limits);
        if wake {
            self.wake();
        }
        outcome
    }

    /// Queues one delivery within `limits` without waking the connection;
    /// true alongside means a wake is owed: call `wake` (once the burst being
    /// routed is done, so the connection drains it into one write).
    pub fn push_unwoken(
        &self,
        outgoing: Outgoing,
        online: bool,
        limits: MailboxLimits,
    ) -> (PushOutcome, bool) {
        if !online && outgoing.qos == QoS::AtMostOnce {
            return (PushOutcome::DroppedOffline, false);
        }
        let weight = outgoing.message.weight();
        let mut q = self.queue.lock();
        if q.items.len() >= limits.max_messages || q.bytes + weight > limits.max_bytes {
            return (PushOutcome::Full(outgoing), false);
        }
        q.bytes += weight;
        q.items.push_back(outgoing);
        let wake = !std::mem::replace(&mut q.wake_pending, true);
        (PushOutcome::Queued, wake)
    }

    /// Wakes the connection to drain its queue.
    pub fn wake(&self) {
        self.notify.notify();
    }

    /// Records the worker of the connection now draining this mailbox (None:
    /// wake it directly), so wakes from other threads go through its inbox.
    pub fn set_home(&self, home: Option<Arc<WakeInbox>>) {
        self.queue.lock().home = home;
    }

    fn home(&self) -> Option<Arc<WakeInbox>> {
        self.queue.lock().home.clone()
    }

    /// Queues a delivery recovered from the store, whatever the bound: the
    /// broker acknowledged it before it stopped, so it is never dropped here.
    pub fn restore(&self, outgoing: Outgoing) {
        let mut q = self.queue.lock();
        q.bytes += outgoing.message.weight();
        q.items.push_back(outgoing);
    }

    /// Moves up to `max` deliveries into `out`, oldest first.
    pub fn drain_into(&self, out: &mut Vec<Outgoing>, max: usize) {
        let mut q = self.queue.lock();
        // From here on a push must wake the connection again: it may be about
        // to wait with nothing left to drain.
        q.wake_pending = false;
        let n = max.min(q.items.len());
        let before = out.len();
        out.extend(q.items.drain(..n));
        let drained: usize = out[before..].iter().map(|o| o.message.weight()).sum();
        q.bytes -= drained;
        let space = if n > 0 { q.space.clone() } else { None };
        drop(q);
        if let Some(space) = space {
            space.notify_waiters();
        }
    }

    /// Queues `outgoing`, waiting for room until `deadline`; hands it back if
    /// there is still none then (or the session went offline meanwhile).
    pub async fn push_when_space(
        &self,
        mut outgoing: Outgoing,
        limits: MailboxLimits,
        is_online: impl Fn() -> bool,
        deadline: tokio::time::Instant,
    ) -> Result<(), Outgoing> {
        let space = self
            .queue
            .lock()
            .space
            .get_or_insert_with(Default::default)
            .clone();
        loop {
            let space = space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if !is_online() {
                return Err(outgoing);
            }
            match self.push(outgoing, true, limits) {
                // Online pushes are never dropped as offline.
                PushOutcome::Queued | PushOutcome::DroppedOffline => return Ok(()),
                PushOutcome::Full(o) => outgoing = o,
            }
            if tokio::time::timeout_at(deadline, space).await.is_err() {
                return Err(outgoing);
            }
        }
    }

    /// Completes when a delivery may be waiting (a permit is stored if none is waiting).
    pub async fn notified(&self) {
        self.notify.wait().await;
    }

    /// Polls for a delivery that may be waiting: ready when a wake is stored
    /// (it takes it), else registers `cx` for the next one.
    pub fn poll_notified(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.notify.poll_wait(cx)
    }

    /// Makes `waker` the one the next wake reaches; true if deliveries or a
    /// wake are already waiting (left for the connection to take).
    pub fn register(&self, waker: &std::task::Waker) -> bool {
        self.notify.register(waker) || !self.queue.lock().items.is_empty()
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.queue.lock().items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything queued (clean start, session end).
    pub fn clear(&self) {
        let mut q = self.queue.lock();
        q.items.clear();
        q.bytes = 0;
        q.wake_pending = false;
    }
}

/// Sessions owed a wake by a burst of routing. A connection routing the
/// PUBLISHes of one read wakes each subscriber once at the end, and the
/// subscriber then writes the whole burst in one go, instead of being woken
/// (and writing) once per message. Dropping it wakes whatever is owed.
#[derive(Debug, Default)]
pub struct Wakes(Vec<SessionRef>);

impl Wakes {
    /// Remembers that `session` must be woken.
    pub fn add(&mut self, session: &SessionRef) {
        self.0.push(session.clone());
    }

    /// Wakes every session owed one; call before waiting on anything.
    /// Sessions whose connection runs on another worker are handed to its
    /// inbox: one cross-thread wake per worker and burst, not per session.
    pub fn wake_all(&mut self) {
        for session in self.0.drain(..) {
            match session.mailbox.home() {
                Some(home) if !home.is_here() => home.hand_in(session),
                _ => session.mailbox.wake(),
            }
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;
    use vigil_proto::message::Message;

    fn o(qos: QoS) -> Outgoing {
        Outgoing {
            message: Arc::new(Message {
                topic: "t".into(),
                payload: Bytes::from_static(b"x"),
                qos,
                retain: false,
                properties: None,
                expires_at: None,
            }),
            qos,
            retain: false,
            subscription_ids: vec![],
            persisted: None,
        }
    }

    const LIMITS: MailboxLimits = MailboxLimits {
        max_messages: 2,
        max_bytes: 1 << 20,
    };

    #[test]
    fn qos0_is_not_queued_offline() {
        let m = Mailbox::default();
        assert_eq!(
            m.push(o(QoS::AtMostOnce), false, LIMITS),
            PushOutcome::DroppedOffline
        );
        assert_eq!(
            m.push(o(QoS::AtLeastOnce), false, LIMITS),
            PushOutcome::Queued
        );
    }

    #[test]
    fn bound_drops_new_messages_and_keeps_old_ones() {
        let m = Mailbox::default();
        assert_eq!(
            m.push(o(QoS::AtLeastOnce), true, LIMITS),
            PushOutcome::Queued
        );
        assert_eq!(
            m.push(o(QoS::AtLeastOnce), true, LIMITS),
            PushOutcome::Queued
        );
        assert!(matches!(
            m.push(o(QoS::AtLeastOnce), true, LIMITS),
            PushOutcome::Full(_)
        ));
        let mut out = Vec::new();
        m.drain_into(&mut out, 10);
        assert_eq!(out.len(), 2);
        assert!(m.is_empty());
        assert_eq!(
            m.push(o(QoS::AtLeastOnce), true, LIMITS),
            PushOutcome::Queued
        );
    }

    #[tokio::test]
    async fn a_burst_owes_one_wake_until_the_connection_drains() {
        let m = Mailbox::default();
        let limits = MailboxLimits {
            max_messages: 100,
            max_bytes: 1 << 20,
        };
        let wakes: Vec<bool> = (0..3)
            .map(|_| m.push_unwoken(o(QoS::AtLeastOnce), true, limits).1)
            .collect();
        assert_eq!(wakes, [true, false, false]);
        m.wake();
        // The permit is stored: a connection that waits after the burst wakes at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), m.notified())
            .await
            .expect("woken");
        let mut out = Vec::new();
        m.drain_into(&mut out, 2);
        assert_eq!(out.len(), 2);
        // After a drain the next push wakes again, even with items left.
        assert!(m.push_unwoken(o(QoS::AtLeastOnce), true, limits).1);
        // A full queue or an offline QoS 0 owes nothing.
        assert!(!m.push_unwoken(o(QoS::AtMostOnce), false, limits).1);
    }

    #[test]
    fn byte_bound() {
        let m = Mailbox::default();
        let small = MailboxLimits {
            max_messages: 100,
            max_bytes: 70,
        };
        assert_eq!(
            m.push(o(QoS::AtLeastOnce), true, small),
            PushOutcome::Queued
        );
        assert!(matches!(
            m.push(o(QoS::AtLeastOnce), true, small),
            PushOutcome::Full(_)
        ));
    }
}
