//! Sessions that moved to another node, as the node they left still sees
//! them: for a while after a hand-over, the session keeps its
//! subscriptions here (so its filters stay announced) with its mailbox
//! sealed, and every delivery that still reaches it is passed on to the
//! new node. A message published anywhere while the cluster learns the new
//! node's routes (one gossip round, ~0.2 s) thus still reaches the client.
//!
//! The seal is the one point that decides: each delivery to the session is
//! either queued before it (and travels in the shipped session) or handed
//! back after it (`ClusterHook::moved_delivery`) and passed on, so none is
//! lost between and none goes both ways.
//!
//! What is passed on goes to the moved session only (a `PassOn` frame
//! naming it). When the message's sender also sent it to the new node
//! directly, the frame says where that copy was on its link (`LinkMark`):
//! the new node delivers the passed-on copy only if the direct one arrived
//! before the session did (`arrivals`). Until the new node says it has
//! imported the session (`HandOverDone`), what would be passed on is held
//! here in order: a message that overtook the session on another
//! connection would reach the new node before the session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use vigil_broker::MovedSession;

use crate::arrivals::LinkKey;
use crate::routes::Route;
use crate::wire::LinkMark;

/// How long a moved session is still passed on after this node has seen
/// the new node's routes for all its filters: time for the other nodes to
/// see them as well (gossip reaches them within about the same round).
pub(crate) const GRACE: Duration = Duration::from_secs(2);
/// Longest a moved session is passed on, whatever the routes say.
pub(crate) const MAX_STUB: Duration = Duration::from_secs(30);
/// Messages held per moved session until the new node has imported it.
const HELD_MAX: usize = 10_000;

/// A message to pass on to a moved session.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    /// The session's client id.
    pub(crate) client: String,
    /// Where the copy its sender sent the new node directly was, if any.
    pub(crate) direct: Option<LinkMark>,
    /// The message as an MQTT 5 PUBLISH packet.
    pub(crate) packet: Bytes,
    /// QoS 0: may be dropped when the link is full.
    pub(crate) droppable: bool,
}

/// One session that moved from this node.
#[derive(Debug)]
struct Moved {
    node: u64,
    /// The session, retired here; None until its export returned.
    session: Option<MovedSession>,
    /// Its plain filters as announced, to see the new node's routes.
    routes: Vec<Route>,
    /// Held until the new node imported the session; None once it has.
    held: Option<Vec<Relay>>,
    since: Instant,
    routes_seen: Option<Instant>,
}

/// The sessions that moved from this node and are still passed on, by
/// client id.
#[derive(Debug, Default)]
pub(crate) struct MovedSessions {
    /// How many: the publish path looks at nothing else when it is 0.
    count: AtomicUsize,
    inner: Mutex<HashMap<String, Moved>>,
    /// Per node, the last message each of its inbound links carried that
    /// this node received too (from `Publish` frames' `also`): shipped with
    /// a session moving there, whose copies of those it holds already.
    also_seen: Mutex<HashMap<u64, HashMap<LinkKey, u64>>>,
}

impl MovedSessions {
    /// True when no session is being passed on (the common case).
    pub(crate) fn is_empty(&self) -> bool {
        self.count.load(Relaxed) == 0
    }

    /// Makes ready to pass on `client_id`'s deliveries to `node`, before
    /// its session is exported (from then on they are handed back here).
    /// Returns a session that was still being passed on elsewhere, to end.
    pub(crate) fn prepare(&self, client_id: &str, node: u64, now: Instant) -> Option<MovedSession> {
        let mut inner = self.inner.lock();
        let old = inner.insert(
            client_id.to_owned(),
            Moved {
                node,
                session: None,
                routes: Vec::new(),
                held: Some(Vec::new()),
                since: now,
                routes_seen: None,
            },
        );
        self.count.store(inner.len(), Relaxed);
        old.and_then(|m| m.session)
    }

    /// The export of `client_id` returned `session`, whose subscriptions
    /// were `filters` (as the client wrote them).
    pub(crate) fn exported(&self, client_id: &str, session: MovedSession, filters: &[String]) {
        let mut routes: Vec<Route> = filters
            .iter()
            .filter(|f| !f.starts_with("$share/"))
            .filter_map(|f| Route::gossiped(f, None))
            .collect();
        routes.sort();
        routes.dedup();
        if let Some(m) = self.inner.lock().get_mut(client_id) {
            m.session = Some(session);
            m.routes = routes;
        }
    }

    /// Stops passing on `client_id` (its export found nothing, or the
    /// client came back here); returns its session, to end.
    pub(crate) fn remove(&self, client_id: &str) -> Option<MovedSession> {
        let mut inner = self.inner.lock();
        let old = inner.remove(client_id);
        self.count.store(inner.len(), Relaxed);
        old.and_then(|m| m.session)
    }

    /// The new node imported `client_id`'s session: what was held for it
    /// is handed to `send` in order, and from now on passed on at once.
    pub(crate) fn imported(&self, client_id: &str, node: u64, mut send: impl FnMut(u64, Relay)) {
        let mut inner = self.inner.lock();
        if let Some(m) = inner.get_mut(client_id).filter(|m| m.node == node) {
            for r in m.held.take().unwrap_or_default() {
                send(node, r);
            }
        }
    }

    /// Passes on a delivery to `client_id`'s moved session, unless `skip`
    /// names its node; `direct` says where the copy the message's sender
    /// sent that node was. False if the session is not being passed on.
    /// `send` is called under the lock, so what was held goes out before
    /// anything passed on after it.
    pub(crate) fn deliver(
        &self,
        client_id: &str,
        packet: Bytes,
        droppable: bool,
        skip: impl Fn(u64) -> bool,
        direct: impl Fn(u64) -> Option<LinkMark>,
        send: impl FnOnce(u64, Relay),
    ) -> bool {
        let mut inner = self.inner.lock();
        let Some(m) = inner.get_mut(client_id) else {
            return false;
        };
        if skip(m.node) {
            return true;
        }
        let relay = Relay {
            client: client_id.to_owned(),
            direct: direct(m.node),
            packet,
            droppable,
        };
        match &mut m.held {
            Some(held) if held.len() < HELD_MAX => held.push(relay),
            Some(_) => {}
            None => send(m.node, relay),
        }
        true
    }

    /// Ends the moved sessions whose new node's routes `has_route` has
    /// shown for `GRACE`, those older than `MAX_STUB`, and those whose node
    /// `is_live` no longer; returns their sessions, to end.
    pub(crate) fn expire(
        &self,
        now: Instant,
        has_route: impl Fn(u64, &Route) -> bool,
        is_live: impl Fn(u64) -> bool,
    ) -> Vec<MovedSession> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut inner = self.inner.lock();
        let mut ended = Vec::new();
        inner.retain(|_, m| {
            if m.session.is_none() && now < m.since + MAX_STUB {
                return true;
            }
            if m.routes_seen.is_none() && m.routes.iter().all(|r| has_route(m.node, r)) {
                m.routes_seen = Some(now);
            }
            let done = m.routes_seen.is_some_and(|t| now >= t + GRACE)
                || now >= m.since + MAX_STUB
                || !is_live(m.node);
            if done {
                ended.extend(m.session.take());
            }
            !done
        });
        self.count.store(inner.len(), Relaxed);
        ended
    }

    /// Notes that a message received here went to the nodes in `also` too,
    /// at those places on their links.
    pub(crate) fn note_also(&self, also: &[(u64, LinkMark)]) {
        if also.is_empty() {
            return;
        }
        let mut seen = self.also_seen.lock();
        for (to, mark) in also {
            let last = seen
                .entry(*to)
                .or_default()
                .entry(mark.link_key())
                .or_default();
            *last = (*last).max(mark.seq);
        }
    }

    /// The marks to ship with a session moving to `node`: on each link to
    /// it, the last message this node received as well.
    pub(crate) fn also_seen_by(&self, node: u64) -> Vec<LinkMark> {
        let seen = self.also_seen.lock();
        seen.get(&node)
            .into_iter()
            .flatten()
            .map(|(&(node, generation, link), &seq)| LinkMark {
                node,
                generation,
                link,
                seq,
            })
            .collect()
    }

    /// Forgets the marks of links from `node`'s generations other than
    /// `generation` (it restarted: those links carry nothing more).
    pub(crate) fn forget_links_of(&self, node: u64, generation: u64) {
        let mut seen = self.also_seen.lock();
        for links in seen.values_mut() {
            links.retain(|k, _| k.0 != node || k.1 == generation);
        }
    }

    /// Client ids being passed on, with their node (for the admin API).
    pub(crate) fn list(&self) -> Vec<(String, u64)> {
        let inner = self.inner.lock();
        let mut out: Vec<(String, u64)> = inner.iter().map(|(c, m)| (c.clone(), m.node)).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relayed(moved: &MovedSessions, client: &str, skip: &[u64]) -> Vec<(u64, Option<LinkMark>)> {
        let mut out = Vec::new();
        moved.deliver(
            client,
            Bytes::from_static(b"p"),
            false,
            |n| skip.contains(&n),
            |n| {
                Some(LinkMark {
                    node: 9,
                    generation: 1,
                    link: n,
                    seq: 5,
                })
            },
            |n, r| out.push((n, r.direct)),
        );
        out
    }

    #[test]
    fn held_until_imported_then_passed_on_in_order() {
        let moved = MovedSessions::default();
        let now = Instant::now();
        assert!(moved.is_empty());
        assert!(moved.prepare("c", 2, now).is_none());
        assert!(!moved.is_empty());
        for i in 0..3u8 {
            let known = moved.deliver(
                "c",
                Bytes::from(vec![i]),
                false,
                |_| false,
                |_| None,
                |_, _| panic!("sent before the import"),
            );
            assert!(known);
        }
        assert!(!moved.deliver("other", Bytes::new(), false, |_| false, |_| None, |_, _| {}));
        moved.imported("other", 2, |_, _| panic!("another client"));
        moved.imported("c", 3, |_, _| panic!("another node"));
        let mut held = Vec::new();
        moved.imported("c", 2, |n, r| held.push((n, r.packet[0])));
        assert_eq!(held, vec![(2, 0), (2, 1), (2, 2)], "in order");
        let mark = LinkMark {
            node: 9,
            generation: 1,
            link: 2,
            seq: 5,
        };
        assert_eq!(relayed(&moved, "c", &[]), vec![(2, Some(mark))]);
        assert!(relayed(&moved, "c", &[2]).is_empty(), "skipped node");
    }

    #[test]
    fn also_seen_marks_keep_the_last_per_link_and_node() {
        let moved = MovedSessions::default();
        let mark = |link, seq| LinkMark {
            node: 3,
            generation: 1,
            link,
            seq,
        };
        moved.note_also(&[(2, mark(7, 4)), (4, mark(8, 4))]);
        moved.note_also(&[(2, mark(7, 9))]);
        moved.note_also(&[(2, mark(7, 6))]);
        assert_eq!(moved.also_seen_by(2), vec![mark(7, 9)]);
        assert_eq!(moved.also_seen_by(4), vec![mark(8, 4)]);
        assert!(moved.also_seen_by(5).is_empty());
        moved.forget_links_of(3, 2);
        assert!(moved.also_seen_by(2).is_empty(), "node 3 restarted");
    }

    #[test]
    fn ends_a_grace_after_the_new_routes_are_seen_or_at_the_limit() {
        let moved = MovedSessions::default();
        let t0 = Instant::now();
        for (c, node) in [("seen", 2), ("never", 3), ("gone", 4), ("pending", 2)] {
            moved.prepare(c, node, t0);
        }
        // Only exported ones end (no session to end otherwise); "pending"
        // stays until MAX_STUB.
        for c in ["seen", "never", "gone"] {
            let f = vec![format!("{c}/a"), format!("{c}/b")];
            moved.exported(c, MovedSession::detached(c), &f);
        }
        let has = |node: u64, r: &Route| node == 2 && r.filter.starts_with("seen/");
        let live = |node: u64| node != 4;
        let ended = moved.expire(t0, has, live);
        assert_eq!(ended.len(), 1, "node 4 is gone");
        assert_eq!(ended[0].client_id(), "gone");
        assert!(moved.expire(t0 + GRACE / 2, has, live).is_empty());
        let ended = moved.expire(t0 + GRACE, has, live);
        assert_eq!(ended[0].client_id(), "seen");
        assert_eq!(
            moved.list(),
            vec![("never".to_string(), 3), ("pending".to_string(), 2)]
        );
        assert!(moved.expire(t0 + MAX_STUB - GRACE, has, live).is_empty());
        assert_eq!(moved.expire(t0 + MAX_STUB, has, live).len(), 1);
        assert!(
            moved.is_empty(),
            "the pending one is dropped at the limit too"
        );
    }
}
