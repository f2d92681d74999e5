//! The cluster's narrow way into the core. A broker without `[cluster]`
//! never sets a hook: routing then checks one empty `OnceLock` per message
//! and nothing else. With a hook (the `vigil-cluster` crate), the core tells
//! it of every message published here and of every local subscription
//! added or removed (a re-SUBSCRIBE that only changes options is neither),
//! and the cluster hands back
//! messages other nodes forwarded through `deliver_forwarded`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use vigil_proto::message::{Message, Outgoing};
use vigil_proto::time::Clock;
use vigil_proto::topic::SharedFilter;
use vigil_store::{MessageRecord, Op, Ticket};

use crate::remote_acks::RemoteAcks;

use super::routing::Routed;
use super::{Broker, SessionRef, Wakes};

/// What the core calls on a cluster node. Every method runs on the thread
/// that published or subscribed, so each must only queue work, never wait.
pub trait ClusterHook: Send + Sync + fmt::Debug {
    /// A message published on this node (by a client or as a will), before
    /// its local delivery. Returns what the publisher's acknowledgement
    /// must wait for on other nodes (None: nothing).
    fn forward(&self, message: &Arc<Message>) -> Option<RemoteAcks>;
    /// A local subscription on `filter` (of shared group `group`) was
    /// added; the hook counts them per filter.
    fn route_added(&self, filter: &str, group: Option<&str>);
    /// A local subscription on `filter` (of shared group `group`) was removed.
    fn route_removed(&self, filter: &str, group: Option<&str>);
    /// Members, routes and link traffic, for the admin API.
    fn status(&self) -> serde_json::Value;
    /// The same figures, typed, for the Prometheus endpoint.
    fn metrics(&self) -> ClusterMetrics;
    /// A CONNECT for `client_id` is about to be accepted here: the future
    /// commits this node's claim of the id across the cluster (and, unless
    /// `clean_start`, brings the session over from the node that held it,
    /// `Broker::import_session`), and resolves to the claim's ticket (its
    /// epoch), or to why it failed (no majority: the CONNECT is refused
    /// with "Server unavailable"). None: this hook does not own client ids,
    /// the CONNECT goes on at once. The connection layer awaits the future;
    /// the core never does.
    fn claim_client(&self, client_id: &str, clean_start: bool) -> Option<ClaimFuture> {
        let _ = (client_id, clean_start);
        None
    }

    /// A delivery reached the session of `client_id` after it moved to
    /// another node (`hand_over_session`): pass it on there. Called on the
    /// routing thread, in routing order.
    fn moved_delivery(&self, client_id: &str, outgoing: &Outgoing) {
        let _ = (client_id, outgoing);
    }

    /// Retires node `node_id`, dead for good, from the client-id ownership
    /// group (the admin API's `DELETE /api/v1/cluster/members/{id}`): what
    /// to answer, or the HTTP status and why not. Blocks until done (at
    /// most a few seconds).
    fn retire_member(&self, node_id: u64) -> Result<serde_json::Value, (u16, String)> {
        let _ = node_id;
        Err((404, "this cluster does not own client ids".into()))
    }

    /// The connection whose claim got `ticket` is attached to its session:
    /// if a newer claim from another node was applied meanwhile, the hook
    /// ends it (`Broker::end_taken_elsewhere`).
    fn client_attached(&self, client_id: &str, ticket: u64) {
        let _ = (client_id, ticket);
    }
}

/// A cluster node's figures, read once per scrape of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetrics {
    /// Other nodes gossip shows alive (leaving ones included).
    pub members_live: u64,
    /// Of those, the ones that said they are stopping.
    pub members_leaving: u64,
    /// Nodes gossip declared dead and still remembers (an hour; earlier
    /// generations of restarted nodes included).
    pub members_dead: u64,
    /// Distinct filters this node announces.
    pub local_routes: u64,
    /// Messages forwarded to other nodes (one per message and node).
    pub forwarded: u64,
    /// Messages other nodes forwarded here.
    pub received: u64,
    /// Retained writes sent to other nodes (replication and replay).
    pub retained_out: u64,
    /// Retained writes from other nodes applied here.
    pub retained_applied: u64,
    /// Retained deletions remembered (tombstones).
    pub retained_tombstones: u64,
    /// Inbound links closed for a malformed or unexpected frame.
    pub malformed_links: u64,
    /// Nodes dropped because they left or stopped answering.
    pub nodes_lost: u64,
    /// Nodes that said they were stopping.
    pub nodes_left: u64,
    /// Sessions handed over to other nodes whose messages are still
    /// passed on from here.
    pub moved_sessions: u64,
    /// Messages passed on to the node a session moved to.
    pub passed_on: u64,
    /// One entry per live member.
    pub links: Vec<LinkMetrics>,
}

/// One other node as this one sees it: its routes and both directions of
/// traffic with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkMetrics {
    /// The other node's id.
    pub node_id: u64,
    /// Routes it announced.
    pub routes: u64,
    /// Whether this node's link to it is connected.
    pub connected: bool,
    /// Connections of the link made (the first, then reconnects).
    pub connects: u64,
    /// Frames written to it (resent ones included).
    pub frames_out: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
    /// Frames it acknowledged.
    pub frames_acked: u64,
    /// Frames queued or waiting for its ack now.
    pub queued: u64,
    /// QoS 0 messages dropped because its link was full.
    pub dropped_full: u64,
    /// Frames given up when it left.
    pub given_up: u64,
    /// Frames received from it.
    pub frames_in: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
}

/// What `ClusterHook::claim_client` resolves to: the claim's ticket, or why
/// the cluster refused it.
pub type ClaimFuture = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;

impl Broker {
    /// Makes this broker a cluster node: call once, before serving. The
    /// filters of the sessions recovered from the store are announced to
    /// the hook at once. Returns false if a hook was set already.
    pub fn set_cluster(&self, hook: Arc<dyn ClusterHook>) -> bool {
        if self.cluster.set(hook.clone()).is_err() {
            return false;
        }
        let sessions: Vec<_> = self.sessions.lock().values().cloned().collect();
        for session in sessions {
            let filters: Vec<String> = session
                .inner
                .lock()
                .subscriptions
                .keys()
                .map(str::to_owned)
                .collect();
            for f in filters {
                match SharedFilter::parse(&f) {
                    Ok(Some(shared)) => hook.route_added(shared.filter, Some(shared.group)),
                    _ => hook.route_added(&f, None),
                }
            }
        }
        true
    }

    /// The cluster hook, on a cluster node.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterHook>> {
        self.cluster.get()
    }

    pub(super) fn forward_to_cluster(&self, message: &Arc<Message>) -> Option<RemoteAcks> {
        self.cluster.get()?.forward(message)
    }

    /// The shared side of the routing gate, on a cluster node only.
    pub(super) fn routing_gate(&self) -> Option<parking_lot::RwLockReadGuard<'_, ()>> {
        // Recursive: a publish routed from within another's routing (a
        // will) must not wait behind a waiting arrival.
        self.cluster
            .get()
            .map(|_| self.routing_gate.read_recursive())
    }

    /// Holds local routing still: every local publish has been routed
    /// wholly before this returns, and none starts until the guard drops.
    /// A cluster node imports a session arriving from another node under
    /// it, and notes where its own links stood.
    pub fn pause_routing(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        self.routing_gate.write()
    }

    /// A delivery to a session that moved to another node (its mailbox is
    /// sealed): the cluster passes it on.
    pub(super) fn moved_delivery(&self, session: &SessionRef, outgoing: &Outgoing) {
        if let Some(c) = self.cluster.get() {
            c.moved_delivery(session.client_id(), outgoing);
        }
    }

    pub(super) fn route_added(&self, filter: &str, group: Option<&str>) {
        if let Some(c) = self.cluster.get() {
            c.route_added(filter, group);
        }
    }

    pub(super) fn route_removed(&self, filter: &str, group: Option<&str>) {
        if let Some(c) = self.cluster.get() {
            c.route_removed(filter, group);
        }
    }

    /// Delivers a message another node forwarded to this node's
    /// subscribers: every matching plain subscription, and one member of
    /// each shared group in `groups` (`(group, filter)`: the ones the
    /// forwarding node chose this node for), of the sessions whose client
    /// id `select` accepts. It is not forwarded again and
    /// does not touch the retained index (retained messages are replicated
    /// on their own, `set_retained_from_cluster`). Subscribers are added to
    /// `wakes`; QoS 1/2 deliveries that found a full queue come back in
    /// `blocked` for `deliver_blocked`.
    pub(crate) fn deliver_forwarded(
        &self,
        now: Clock,
        message: Message,
        groups: &[(String, String)],
        select: &dyn Fn(&str) -> bool,
        wakes: &mut Wakes,
    ) -> Routed {
        let message = Arc::new(message);
        let mut matches = Vec::new();
        let online = |s: &SessionRef| s.is_online();
        self.subs
            .match_topic_with(&message.topic, None, false, online, &mut matches);
        for (group, filter) in groups {
            if let Some(m) = self.subs.pick_shared(filter, group, u64::MAX, online) {
                matches.push(m);
            }
        }
        matches.retain(|m| select(m.subscriber.client_id()));
        self.deliver_matches(now, &message, matches, Vec::new(), None, wakes)
    }

    /// Sets (or, with an empty payload, deletes) the retained message of its
    /// topic as another node decided it, without delivering it to anyone;
    /// returns the store commit that holds it.
    pub fn set_retained_from_cluster(&self, now: Clock, message: Message) -> Option<Ticket> {
        let message = Arc::new(message);
        self.retained.update(&message);
        self.store.as_ref()?;
        let op = if message.payload.is_empty() {
            Op::DeleteRetained(message.topic.clone())
        } else {
            Op::PutRetained(MessageRecord::from_message(&message, &now))
        };
        self.persist(vec![op])
    }

    /// The retained message of `topic`, if any and unexpired at `now`.
    pub fn retained_of(&self, topic: &str, now: Instant) -> Option<Arc<Message>> {
        self.retained.get(topic, now)
    }

    /// Up to `limit` unexpired retained messages of every topic (`$`
    /// topics included) sorting after `after`, in topic order, unexpired
    /// at `now`.
    pub fn retained_after(
        &self,
        after: Option<&str>,
        limit: usize,
        now: Instant,
    ) -> Vec<Arc<Message>> {
        self.retained.after(after, limit, now)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use parking_lot::Mutex;
    use vigil_proto::{ProtocolVersion, QoS, Subscribe, Subscription, SubscriptionOptions};

    use super::super::tests::virtual_start;
    use super::super::{ConnectRequest, CoreConfig, SessionRef};
    use super::*;

    /// A hook that records what the core told it.
    #[derive(Debug, Default)]
    struct Recorder {
        forwarded: Mutex<Vec<String>>,
        routes: Mutex<Vec<(String, Option<String>, bool)>>,
    }

    impl ClusterHook for Recorder {
        fn forward(&self, message: &Arc<Message>) -> Option<RemoteAcks> {
            self.forwarded.lock().push(message.topic.clone());
            None
        }
        fn route_added(&self, filter: &str, group: Option<&str>) {
            let route = (filter.to_owned(), group.map(str::to_owned), true);
            self.routes.lock().push(route);
        }
        fn route_removed(&self, filter: &str, group: Option<&str>) {
            let route = (filter.to_owned(), group.map(str::to_owned), false);
            self.routes.lock().push(route);
        }
        fn status(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn metrics(&self) -> ClusterMetrics {
            ClusterMetrics::default()
        }
    }

    fn client(b: &Broker, now: Clock, id: &str, filters: &[&str]) -> SessionRef {
        let g = b.connect_now(
            now,
            &ConnectRequest {
                client_id: id.into(),
                protocol: ProtocolVersion::V5,
                clean_start: true,
                session_expiry: 0,
                will: None,
                username: None,
            },
        );
        let sub = Subscribe {
            packet_id: 1,
            filters: filters
                .iter()
                .map(|f| Subscription {
                    filter: (*f).into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubscriptionOptions::default()
                    },
                })
                .collect(),
            ..Subscribe::default()
        };
        b.subscribe(&g.session, &sub).unwrap();
        g.session
    }

    fn message(topic: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"m"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
        }
    }

    fn queued(s: &SessionRef) -> usize {
        let mut out = Vec::new();
        s.mailbox.drain_into(&mut out, 100);
        out.len()
    }

    /// The hook hears of every subscription added and removed (those made
    /// before it was set included, a repeated SUBSCRIBE not), and of local
    /// publishes but not of forwarded deliveries.
    #[test]
    fn the_hook_hears_of_each_subscription_and_of_local_publishes_only() {
        let now = virtual_start();
        let b = Broker::new(CoreConfig::default(), now.instant);
        let early = client(&b, now, "early", &["a/#"]);
        let hook = Arc::new(Recorder::default());
        assert!(b.set_cluster(hook.clone()));
        assert!(!b.set_cluster(hook.clone()), "set once");
        let late = client(&b, now, "late", &["a/#", "$share/g/s"]);
        // The same filter again, other options: a replacement, not a route.
        b.subscribe(
            &late,
            &Subscribe {
                packet_id: 3,
                filters: vec![Subscription {
                    filter: "a/#".into(),
                    options: SubscriptionOptions::default(),
                }],
                ..Subscribe::default()
            },
        )
        .unwrap();
        let unsub = vigil_proto::Unsubscribe {
            packet_id: 2,
            filters: vec!["a/#".into()],
            ..Default::default()
        };
        b.unsubscribe(&early, &unsub);
        b.unsubscribe(&late, &unsub);
        let routes = hook.routes.lock().clone();
        assert_eq!(
            routes,
            vec![
                ("a/#".into(), None, true),
                ("a/#".into(), None, true),
                ("s".into(), Some("g".into()), true),
                ("a/#".into(), None, false),
                ("a/#".into(), None, false),
            ]
        );
        b.publish(now, None, message("s"));
        let mut wakes = Wakes::default();
        b.deliver_forwarded(now, message("s"), &[], &|_| true, &mut wakes);
        assert_eq!(*hook.forwarded.lock(), vec!["s".to_string()]);
        assert_eq!(
            queued(&late),
            1,
            "the local publish; the forwarded one named no group"
        );
        b.deliver_forwarded(
            now,
            message("s"),
            &[("g".into(), "s".into())],
            &|_| true,
            &mut wakes,
        );
        assert_eq!(queued(&late), 1, "the group this node was chosen for");
    }

    /// A retained write from another node sets the index without being
    /// delivered or forwarded, and an empty payload deletes.
    #[test]
    fn a_retained_write_from_the_cluster_is_stored_not_delivered() {
        let now = virtual_start();
        let b = Broker::new(CoreConfig::default(), now.instant);
        let hook = Arc::new(Recorder::default());
        b.set_cluster(hook.clone());
        let s = client(&b, now, "s", &["r/#"]);
        let mut m = message("r/1");
        m.retain = true;
        b.set_retained_from_cluster(now, m.clone());
        assert_eq!(queued(&s), 0);
        assert!(hook.forwarded.lock().is_empty());
        assert_eq!(
            b.retained_of("r/1", now.instant).map(|m| m.topic.clone()),
            Some("r/1".into())
        );
        assert_eq!(b.retained_after(None, 10, now.instant).len(), 1);
        m.payload = Bytes::new();
        b.set_retained_from_cluster(now, m);
        assert!(b.retained_of("r/1", now.instant).is_none());
    }
}
