//! Sessions that moved to another node, as the node they left still sees
//! them: for a while after a hand-over, this node keeps announcing the
//! moved session's filters and passes on what it receives for them, so a
//! message published anywhere while the cluster learns the new node's
//! routes (one gossip round, ~0.2 s) still reaches the client.
//!
//! What is passed on goes to the moved session only (a `PassOn` frame
//! naming it). When the message's sender also sent it to the new node
//! directly, the frame says where that copy was on its link
//! (`LinkMark`): the new node delivers the passed-on copy only if the
//! direct one arrived before the session did (`arrivals`). Until the new
//! node says it has imported the session (`HandOverDone`), what would be
//! passed on is held here in order: a message that overtook the session on
//! another connection would reach the new node before the session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use vigil_proto::topic;

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
    client_id: String,
    node: u64,
    /// Plain filters of its subscriptions, as announced.
    routes: Vec<Route>,
    /// Held until the new node imported the session; None once it has.
    held: Option<Vec<Relay>>,
    since: Instant,
    routes_seen: Option<Instant>,
}

/// The sessions that moved from this node and are still passed on.
#[derive(Debug, Default)]
pub(crate) struct MovedSessions {
    /// How many: the publish paths look at nothing else when it is 0.
    count: AtomicUsize,
    inner: Mutex<Vec<Moved>>,
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

    /// Starts passing on what matches `filters` (the moved session's,
    /// as the client wrote them) to `node`; returns the routes to keep
    /// announcing (plain filters only: a shared group's messages go to
    /// its members wherever they are).
    pub(crate) fn add(
        &self,
        client_id: &str,
        node: u64,
        filters: &[String],
        now: Instant,
    ) -> Vec<Route> {
        let mut routes: Vec<Route> = filters
            .iter()
            .filter(|f| !f.starts_with("$share/"))
            .filter_map(|f| Route::gossiped(f, None))
            .collect();
        routes.sort();
        routes.dedup();
        if routes.is_empty() {
            return routes;
        }
        let mut inner = self.inner.lock();
        inner.push(Moved {
            client_id: client_id.to_owned(),
            node,
            routes: routes.clone(),
            held: Some(Vec::new()),
            since: now,
            routes_seen: None,
        });
        self.count.store(inner.len(), Relaxed);
        routes
    }

    /// The new node imported `client_id`'s session: what was held for it
    /// is handed to `send` in order, and from now on passed on at once.
    pub(crate) fn imported(&self, client_id: &str, node: u64, mut send: impl FnMut(u64, Relay)) {
        let mut inner = self.inner.lock();
        for m in inner.iter_mut() {
            if m.client_id == client_id && m.node == node {
                for r in m.held.take().unwrap_or_default() {
                    send(node, r);
                }
            }
        }
    }

    /// Passes on a message on `topic` to each moved session it matches,
    /// except those whose node `skip` names; `direct` says where the copy
    /// the message's sender sent that node was. `send` is called under the
    /// lock, so what was held goes out before anything passed on after it.
    pub(crate) fn relay(
        &self,
        topic: &str,
        packet: &Bytes,
        droppable: bool,
        skip: impl Fn(u64) -> bool,
        direct: impl Fn(u64) -> Option<LinkMark>,
        mut send: impl FnMut(u64, Relay),
    ) {
        let mut inner = self.inner.lock();
        for m in inner.iter_mut() {
            if skip(m.node) || !m.routes.iter().any(|r| topic::matches(&r.filter, topic)) {
                continue;
            }
            let relay = Relay {
                client: m.client_id.clone(),
                direct: direct(m.node),
                packet: packet.clone(),
                droppable,
            };
            match &mut m.held {
                Some(held) if held.len() < HELD_MAX => held.push(relay),
                Some(_) => {}
                None => send(m.node, relay),
            }
        }
    }

    /// Ends the moved sessions whose new node's routes `has_route` has
    /// shown for `GRACE`, those older than `MAX_STUB`, and those whose node
    /// `is_live` no longer; returns their routes, to stop announcing.
    pub(crate) fn expire(
        &self,
        now: Instant,
        has_route: impl Fn(u64, &Route) -> bool,
        is_live: impl Fn(u64) -> bool,
    ) -> Vec<Route> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut inner = self.inner.lock();
        let mut ended = Vec::new();
        inner.retain_mut(|m| {
            if m.routes_seen.is_none() && m.routes.iter().all(|r| has_route(m.node, r)) {
                m.routes_seen = Some(now);
            }
            let done = m.routes_seen.is_some_and(|t| now >= t + GRACE)
                || now >= m.since + MAX_STUB
                || !is_live(m.node);
            if done {
                ended.append(&mut m.routes);
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
            let last = seen.entry(*to).or_default().entry(mark.link_key()).or_default();
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
        inner
            .iter()
            .map(|m| (m.client_id.clone(), m.node))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    fn sent(moved: &MovedSessions, topic: &str, skip: &[u64]) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        moved.relay(
            topic,
            &Bytes::from_static(b"p"),
            false,
            |n| skip.contains(&n),
            |_| None,
            |n, r| out.push((n, r.client)),
        );
        out
    }

    #[test]
    fn held_until_imported_then_passed_on_in_order() {
        let moved = MovedSessions::default();
        let now = Instant::now();
        assert!(moved.is_empty());
        let routes = moved.add("c", 2, &filters(&["a/+", "$share/g/x", "b"]), now);
        assert_eq!(routes.len(), 2, "shared filters are not kept");
        assert!(!moved.is_empty());
        let mut held = Vec::new();
        for (i, t) in ["a/1", "zzz", "b"].iter().enumerate() {
            moved.relay(
                t,
                &Bytes::from(vec![i as u8]),
                false,
                |_| false,
                |_| None,
                |_, _| panic!("sent before the import"),
            );
        }
        moved.imported("other", 2, |_, _| panic!("another client"));
        moved.imported("c", 2, |n, r| held.push((n, r.packet[0])));
        assert_eq!(held, vec![(2, 0), (2, 2)], "matching ones, in order");
        assert_eq!(sent(&moved, "a/9", &[]), vec![(2, "c".to_string())]);
        assert!(sent(&moved, "a/9", &[2]).is_empty(), "skipped node");
        assert!(sent(&moved, "c", &[]).is_empty());
    }

    #[test]
    fn each_matching_session_gets_its_copy_with_its_nodes_direct_mark() {
        let moved = MovedSessions::default();
        let now = Instant::now();
        moved.add("c1", 2, &filters(&["t/#"]), now);
        moved.add("c2", 2, &filters(&["t/2"]), now);
        moved.add("c3", 3, &filters(&["t/+"]), now);
        for c in ["c1", "c2"] {
            moved.imported(c, 2, |_, _| {});
        }
        moved.imported("c3", 3, |_, _| {});
        let mark = LinkMark {
            node: 9,
            generation: 1,
            link: 4,
            seq: 77,
        };
        let mut out = Vec::new();
        moved.relay(
            "t/1",
            &Bytes::from_static(b"p"),
            true,
            |_| false,
            |n| (n == 3).then_some(mark),
            |n, r| out.push((n, r.client, r.direct, r.droppable)),
        );
        assert_eq!(
            out,
            vec![
                (2, "c1".to_string(), None, true),
                (3, "c3".to_string(), Some(mark), true)
            ]
        );
    }

    #[test]
    fn ends_a_grace_after_the_new_routes_are_seen_or_at_the_limit() {
        let moved = MovedSessions::default();
        let t0 = Instant::now();
        moved.add("seen", 2, &filters(&["a", "b"]), t0);
        moved.add("never", 3, &filters(&["c"]), t0);
        moved.add("gone", 4, &filters(&["d"]), t0);
        let has = |node: u64, r: &Route| node == 2 && (&*r.filter == "a" || &*r.filter == "b");
        let live = |node: u64| node != 4;
        let ended = moved.expire(t0, has, live);
        assert_eq!(ended.len(), 1, "node 4 is gone: {ended:?}");
        assert!(moved.expire(t0 + GRACE / 2, has, live).is_empty());
        let ended = moved.expire(t0 + GRACE, has, live);
        assert_eq!(ended.len(), 2, "both routes of the seen session");
        assert_eq!(moved.list(), vec![("never".to_string(), 3)]);
        assert!(moved.expire(t0 + MAX_STUB - GRACE, has, live).is_empty());
        assert_eq!(moved.expire(t0 + MAX_STUB, has, live).len(), 1);
        assert!(moved.is_empty());
    }
}
