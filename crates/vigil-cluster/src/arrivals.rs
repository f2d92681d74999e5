//! Sessions that arrived here from another node, as seen by the links that
//! deliver to them: for a while after an import, which copies of a message
//! each of them already has.
//!
//! Two copies of one message can reach a moved session: the one its
//! publisher's node sent here directly, and the one the session's previous
//! node passes on (`moved`) or shipped inside the session. Both sides name
//! the direct copy by its place on its link (`LinkMark`), and links deliver
//! in order, so one number per link decides:
//! - a passed-on copy is delivered only if its direct copy was delivered
//!   here before the session arrived (the session missed it);
//! - a direct copy is not delivered to the session if the previous node
//!   had it before the session left (it travelled in the session).
//!
//! For that, what the links have delivered and an import are taken under
//! one lock (`Arrivals::delivered`): a link holds it while it delivers a
//! batch, an import while it puts the session in and notes the marks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::oneshot;

use crate::wire::LinkMark;

/// How long an arrived session's marks are kept: longer than a previous
/// node passes on (`moved::MAX_STUB`).
const KEEP: Duration = Duration::from_secs(60);

/// A link as its receiver keys it: sender node, its generation, link number.
pub(crate) type LinkKey = (u64, u64, u64);

/// One session that arrived.
#[derive(Debug)]
struct Arrival {
    /// What each link had delivered here when the session arrived.
    delivered: HashMap<LinkKey, u64>,
    /// The last message on each link to here that the previous node had
    /// before the session left it.
    shipped: HashMap<LinkKey, u64>,
    at: Instant,
}

/// The sessions that arrived lately, and what links delivered.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    delivered: Mutex<HashMap<LinkKey, u64>>,
    count: AtomicUsize,
    sessions: Mutex<HashMap<String, Arrival>>,
    /// CONNECTs waiting for their session to arrive on a link.
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
}

impl Arrivals {
    /// What links delivered, locked: held by a link for the whole of a
    /// batch's delivery, so an import sees it before or after, not within.
    pub(crate) fn delivered(&self) -> MutexGuard<'_, HashMap<LinkKey, u64>> {
        self.delivered.lock()
    }

    /// Runs `import` (putting `client_id`'s session into the broker) with
    /// the links held, and notes what they had delivered and `shipped`,
    /// the previous node's marks.
    pub(crate) fn arrive<T>(
        &self,
        client_id: &str,
        shipped: &[LinkMark],
        now: Instant,
        import: impl FnOnce() -> T,
    ) -> T {
        let delivered = self.delivered.lock();
        let out = import();
        self.note(&delivered, None, None, client_id, shipped, now);
        out
    }

    /// Notes the arrival of `client_id`'s session, imported by a link
    /// holding `delivered` (`Arrivals::delivered`); that link, `link`, has
    /// delivered up to `through` so far.
    pub(crate) fn arrive_on_link(
        &self,
        delivered: &HashMap<LinkKey, u64>,
        link: (LinkKey, u64),
        own: Option<LinkMark>,
        client_id: &str,
        shipped: &[LinkMark],
        now: Instant,
    ) {
        self.note(delivered, Some(link), own, client_id, shipped, now);
        if let Some(waiter) = self.waiting.lock().remove(client_id) {
            let _ = waiter.send(());
        }
    }

    fn note(
        &self,
        delivered: &HashMap<LinkKey, u64>,
        link: Option<(LinkKey, u64)>,
        own: Option<LinkMark>,
        client_id: &str,
        shipped: &[LinkMark],
        now: Instant,
    ) {
        let mut delivered = delivered.clone();
        if let Some((key, through)) = link {
            delivered.insert(key, through);
        }
        // This node's own link out: a copy it sent that comes back passed
        // on counts as delivered here if it left before the import.
        if let Some(own) = own {
            delivered.insert(own.link_key(), own.seq);
        }
        let arrival = Arrival {
            delivered,
            shipped: shipped.iter().map(|m| (m.link_key(), m.seq)).collect(),
            at: now,
        };
        let mut sessions = self.sessions.lock();
        sessions.insert(client_id.to_owned(), arrival);
        self.count.store(sessions.len(), Relaxed);
    }

    /// Told when `client_id`'s session arrives on a link.
    pub(crate) fn expect(&self, client_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(client_id.to_owned(), tx);
        rx
    }

    /// Stops waiting for `client_id`'s session.
    pub(crate) fn stop_expecting(&self, client_id: &str) {
        self.waiting.lock().remove(client_id);
    }

    /// True when no session arrived lately (the common case).
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Relaxed) == 0
    }

    /// Whether the message at `seq` on link `key`, delivered here directly,
    /// goes to `client_id` too: not if the session's previous node had it.
    pub(crate) fn takes_direct(&self, client_id: &str, key: LinkKey, seq: u64) -> bool {
        let sessions = self.sessions.lock();
        sessions
            .get(client_id)
            .and_then(|a| a.shipped.get(&key))
            .is_none_or(|&shipped| seq > shipped)
    }

    /// Whether a copy passed on to `client_id`, whose direct copy (if its
    /// sender sent one here) was `direct`, is delivered: always without a
    /// direct copy, else only if the direct one came before the session.
    pub(crate) fn takes_passed_on(&self, client_id: &str, direct: Option<LinkMark>) -> bool {
        let Some(direct) = direct else {
            return true;
        };
        let sessions = self.sessions.lock();
        sessions.get(client_id).is_some_and(|a| {
            a.delivered
                .get(&direct.link_key())
                .is_some_and(|&d| direct.seq <= d)
        })
    }

    /// Forgets arrivals older than `KEEP`.
    pub(crate) fn expire(&self, now: Instant) {
        if self.is_empty() {
            return;
        }
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, a| now < a.at + KEEP);
        self.count.store(sessions.len(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(link: u64, seq: u64) -> LinkMark {
        LinkMark {
            node: 3,
            generation: 1,
            link,
            seq,
        }
    }

    #[test]
    fn a_passed_on_copy_counts_only_when_its_direct_one_came_first() {
        let arrivals = Arrivals::default();
        let now = Instant::now();
        arrivals.delivered().insert(mark(7, 0).link_key(), 10);
        let imported = arrivals.arrive("c", &[], now, || 42);
        assert_eq!(imported, 42);
        assert!(!arrivals.is_empty());
        // Direct copy 10 came before the session: the passed-on one counts.
        assert!(arrivals.takes_passed_on("c", Some(mark(7, 10))));
        // Direct copy 11 came (or will come) after: the session has it.
        assert!(!arrivals.takes_passed_on("c", Some(mark(7, 11))));
        // A link that had delivered nothing when the session came.
        assert!(!arrivals.takes_passed_on("c", Some(mark(8, 1))));
        assert!(arrivals.takes_passed_on("c", None), "no direct copy");
        assert!(!arrivals.takes_passed_on("unknown", Some(mark(7, 1))));
        assert!(arrivals.takes_passed_on("unknown", None));
    }

    #[test]
    fn a_direct_copy_the_previous_node_had_is_not_delivered_again() {
        let arrivals = Arrivals::default();
        let now = Instant::now();
        arrivals.arrive("c", &[mark(7, 20)], now, || ());
        let key = mark(7, 0).link_key();
        assert!(!arrivals.takes_direct("c", key, 20));
        assert!(arrivals.takes_direct("c", key, 21));
        assert!(arrivals.takes_direct("c", mark(9, 0).link_key(), 1));
        assert!(arrivals.takes_direct("other", key, 1));
        arrivals.expire(now + KEEP);
        assert!(arrivals.is_empty());
        assert!(arrivals.takes_direct("c", key, 20), "forgotten");
    }
}
