//! A session's bounded queue of deliveries. Publishers push into it from any
//! task; the session's connection drains it in batches.
//!
//! Overflow policy (counted in `Counters`): QoS 0 is dropped when the session
//! is offline or the queue is full. QoS 1/2 for an online session that is full
//! is handed back to the publisher's connection, which waits a short bounded
//! time for space (listening on `space`: the waiting is the connection's, the
//! mailbox only tells) before it acknowledges and reads on; a queue still full then
//! is *stalled* (a slow consumer: see `overflow::SlowConsumerPolicy`) and is not
//! waited on again until it has drained empty. QoS 1/2 for an offline session
//! beyond the bound is dropped with a counter and one warning per episode.
//! Messages already in the queue are never evicted.
//!
//! Beside the queue, a mailbox holds the session's retained-message streams
//! (`RetainedCursor`s), which its connection pulls from as it has room.

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::Notify;
use vigil_proto::message::Outgoing;
use vigil_proto::QoS;

use std::sync::Arc;

use super::retained::RetainedCursor;
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
    /// The session moved to another cluster node (`seal`): the delivery is
    /// handed back, for the cluster to pass on.
    Moved(Outgoing),
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    bytes: usize,
    /// A wake is owed or already on its way: pushes after the first one of a
    /// burst need not wake the connection again, it drains them all at once.
    wake_pending: bool,
    /// Full past a publisher's wait (or dropping while offline): overflow is
    /// dropped at once, not waited on, until the queue drains empty.
    stalled: bool,
    /// The session's own connection is held waiting for room in others'
    /// queues, and drains nothing meanwhile: its queue being full then says
    /// nothing about the client.
    held: bool,
    /// The worker the session's connection runs on, if it runs on one.
    home: Option<Arc<WakeInbox>>,
    /// The session moved to another node: nothing is queued here any more.
    sealed: bool,
    /// What few sessions need, made when first needed: inline, the `Notify`
    /// alone was 32 bytes in every session and put `Session` a jemalloc size
    /// class up (320 -> 384 bytes).
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Extra {
    /// Publishers waiting for room.
    space: Arc<Notify>,
    /// Retained messages still to send for recent SUBSCRIBEs, oldest first.
    streams: VecDeque<RetainedCursor>,
    /// Deliveries dropped since the queue stalled.
    stall_drops: u64,
    /// When the session's connection was last released from waiting for
    /// room elsewhere.
    held_until: Option<std::time::Instant>,
}

impl Queue {
    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn has_streams(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| !e.streams.is_empty())
    }
}

/// The end of a stall: the queue drained empty after drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallEnded {
    /// Deliveries dropped while it was stalled.
    pub dropped: u64,
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
            if self.queue.lock().sealed {
                return (PushOutcome::Moved(outgoing), false);
            }
            return (PushOutcome::DroppedOffline, false);
        }
        let weight = outgoing.message.weight();
        let mut q = self.queue.lock();
        if q.sealed {
            return (PushOutcome::Moved(outgoing), false);
        }
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

    /// Gives back the queue's unused room (after recovery restored it).
    pub(crate) fn shrink_to_fit(&self) {
        self.queue.lock().items.shrink_to_fit();
    }

    /// Room in the queue, queued deliveries included.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.queue.lock().items.capacity()
    }

    /// Moves up to `max` deliveries into `out`, oldest first. Returns the end
    /// of a stall when this drain emptied a stalled queue.
    pub fn drain_into(&self, out: &mut Vec<Outgoing>, max: usize) -> Option<StallEnded> {
        self.drain(out, max).0
    }

    /// `drain_into`, and whether retained streams are waiting (one lock for
    /// both: this runs at every wake-up of every subscriber).
    pub(crate) fn drain(&self, out: &mut Vec<Outgoing>, max: usize) -> (Option<StallEnded>, bool) {
        let mut q = self.queue.lock();
        // From here on a push must wake the connection again: it may be about
        // to wait with nothing left to drain.
        q.wake_pending = false;
        let n = max.min(q.items.len());
        let before = out.len();
        out.extend(q.items.drain(..n));
        let drained: usize = out[before..].iter().map(|o| o.message.weight()).sum();
        q.bytes -= drained;
        let ended = if q.stalled && q.items.is_empty() {
            q.stalled = false;
            let dropped = q
                .extra
                .as_mut()
                .map_or(0, |e| std::mem::take(&mut e.stall_drops));
            Some(StallEnded { dropped })
        } else {
            None
        };
        let space = match &q.extra {
            Some(e) if n > 0 => Some(e.space.clone()),
            _ => None,
        };
        let streams = q.has_streams();
        drop(q);
        if let Some(space) = space {
            space.notify_waiters();
        }
        (ended, streams)
    }

    /// Marks the queue stalled; true if it was not already.
    pub fn stall(&self) -> bool {
        !std::mem::replace(&mut self.queue.lock().stalled, true)
    }

    /// Marks the session's connection as held (or, at `now`, no longer
    /// held) waiting for room in other sessions' queues.
    pub fn set_held(&self, held: bool, now: std::time::Instant) {
        let mut q = self.queue.lock();
        q.held = held;
        if !held {
            q.extra().held_until = Some(now);
        }
    }

    /// True if the session's connection was held waiting for room elsewhere
    /// at any time since `since` (so it may have drained nothing for that).
    pub fn held_since(&self, since: std::time::Instant) -> bool {
        let q = self.queue.lock();
        q.held
            || q.extra
                .as_ref()
                .and_then(|e| e.held_until)
                .is_some_and(|at| at >= since)
    }

    /// True while the queue is stalled (its overflow is dropped, not waited on).
    pub fn is_stalled(&self) -> bool {
        self.queue.lock().stalled
    }

    /// Counts one delivery dropped for want of room, stalling the queue;
    /// true for the first drop of the stall (the one worth a log line).
    pub fn note_drop(&self) -> bool {
        let mut q = self.queue.lock();
        let first = !std::mem::replace(&mut q.stalled, true);
        let extra = q.extra();
        extra.stall_drops += 1;
        first || extra.stall_drops == 1
    }

    /// Adds a stream of retained messages, replacing any for the same filter
    /// (a repeated SUBSCRIBE sends them again from the start), and wakes the
    /// connection to start pulling.
    pub(crate) fn add_stream(&self, cursor: RetainedCursor) {
        {
            let mut q = self.queue.lock();
            let streams = &mut q.extra().streams;
            streams.retain(|c| c.filter != cursor.filter);
            streams.push_back(cursor);
        }
        self.wake();
    }

    /// Ends the stream of retained messages for `filter`, if one is left.
    pub(crate) fn remove_stream(&self, filter: &str) {
        if let Some(e) = self.queue.lock().extra.as_mut() {
            e.streams.retain(|c| &*c.filter != filter);
        }
    }

    /// Takes the oldest retained stream to pull from; the connection gives
    /// it back with `put_back_stream` unless it is over.
    pub(crate) fn take_stream(&self) -> Option<RetainedCursor> {
        self.queue.lock().extra.as_mut()?.streams.pop_front()
    }

    /// Returns a stream taken with `take_stream` to the front.
    pub(crate) fn put_back_stream(&self, cursor: RetainedCursor) {
        self.queue.lock().extra().streams.push_front(cursor);
    }

    /// True while retained messages remain to be streamed.
    pub fn has_streams(&self) -> bool {
        self.queue.lock().has_streams()
    }

    /// Told whenever a drain makes room: publishers whose deliveries found
    /// the queue full listen here while they wait (made on first use).
    pub fn space(&self) -> Arc<Notify> {
        self.queue.lock().extra().space.clone()
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
        let woken = self.notify.register(waker);
        let q = self.queue.lock();
        woken || !q.items.is_empty() || q.has_streams()
    }

    /// Number of queued deliveries.
    pub fn len(&self) -> usize {
        self.queue.lock().items.len()
    }

    /// Queued deliveries and their bytes (topic + payload + 64 each).
    pub fn totals(&self) -> (usize, usize) {
        let q = self.queue.lock();
        (q.items.len(), q.bytes)
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything queued and every retained stream (clean start,
    /// session end).
    pub fn clear(&self) {
        let mut q = self.queue.lock();
        q.items.clear();
        q.bytes = 0;
        q.wake_pending = false;
        q.stalled = false;
        if let Some(e) = q.extra.as_mut() {
            e.streams.clear();
            e.stall_drops = 0;
        }
    }

    /// Takes everything queued out (a session that ends hands its shared
    /// subscriptions' deliveries on); the retained streams are left.
    pub fn take_all(&self) -> Vec<Outgoing> {
        let mut q = self.queue.lock();
        q.bytes = 0;
        q.items.drain(..).collect()
    }

    /// True once the session moved to another node (`take_all_and_seal`).
    pub(crate) fn is_sealed(&self) -> bool {
        self.queue.lock().sealed
    }

    /// Takes every queued delivery and seals the queue: what is pushed
    /// after comes back as `PushOutcome::Moved` (the session moved to
    /// another node). One lock, so each delivery is either taken here or
    /// handed back, never lost between.
    pub(crate) fn take_all_and_seal(&self) -> Vec<Outgoing> {
        let mut q = self.queue.lock();
        q.sealed = true;
        q.bytes = 0;
        q.items.drain(..).collect()
    }
}

/// Sessions owed a wake by a burst of routing. A connection routing the
/// PUBLISHes of one read wakes each subscriber once at the end, and the
/// subscriber then writes the whole burst in one go, instead of being woken
/// (and writing) once per message. Dropping it wakes whatever is owed.
#[derive(Debug, Default)]
pub(crate) struct Wakes(Vec<SessionRef>);

impl Wakes {
    /// Remembers that `session` must be woken.
    pub(crate) fn add(&mut self, session: &SessionRef) {
        self.0.push(session.clone());
    }

    /// Wakes every session owed one; call before waiting on anything.
    /// Sessions whose connection runs on another worker are handed to its
    /// inbox: one cross-thread wake per worker and burst, not per session.
    pub(crate) fn wake_all(&mut self) {
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
            shared: false,
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

    #[test]
    fn a_burst_owes_one_wake_until_the_connection_drains() {
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
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(m.poll_notified(&mut cx).is_ready(), "woken");
        let mut out = Vec::new();
        m.drain_into(&mut out, 2);
        assert_eq!(out.len(), 2);
        // After a drain the next push wakes again, even with items left.
        assert!(m.push_unwoken(o(QoS::AtLeastOnce), true, limits).1);
        // A full queue or an offline QoS 0 owes nothing.
        assert!(!m.push_unwoken(o(QoS::AtMostOnce), false, limits).1);
    }

    #[test]
    fn a_stall_lasts_until_the_queue_drains_empty_and_counts_its_drops() {
        let m = Mailbox::default();
        assert_eq!(
            m.push(o(QoS::AtLeastOnce), true, LIMITS),
            PushOutcome::Queued
        );
        assert_eq!(
            m.push(o(QoS::AtLeastOnce), true, LIMITS),
            PushOutcome::Queued
        );
        assert!(m.stall(), "newly stalled");
        assert!(!m.stall(), "already stalled");
        assert!(m.note_drop(), "the first drop of a stall is logged");
        assert!(!m.note_drop(), "later ones are only counted");
        let mut out = Vec::new();
        assert_eq!(m.drain_into(&mut out, 1), None, "one still queued");
        assert!(m.is_stalled());
        assert_eq!(m.drain_into(&mut out, 1), Some(StallEnded { dropped: 2 }));
        assert!(!m.is_stalled());
        // An offline session's overflow starts a stall of its own.
        assert!(m.note_drop());
        assert!(m.is_stalled());
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
