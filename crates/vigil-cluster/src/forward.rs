//! Forwarding, the core's side of the cluster (`ClusterHook`): a message
//! published here goes once to each other node with a matching route, with
//! the shared groups that node was chosen for; a retained write goes to
//! every node; route changes are counted for the membership loop to gossip.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};
use vigil_broker::Broker;
use vigil_broker::{ClusterHook, RemoteAcks};
use vigil_proto::message::{Message, Outgoing};
use vigil_proto::time::Clock;
use vigil_proto::QoS;

use crate::link::{self, Peer, SyncStage};
use crate::moved::Relay;
use crate::node::Cluster;
use crate::origin;
use crate::retained::unix_ms;
use crate::routes::Route;
use crate::wire::{self, LinkMark, Stamp};

/// Longest a publisher's ack waits for other nodes. A node that dies is
/// declared dead (and its link settled) well before this; the deadline is
/// for a node that hangs without being declared dead.
pub(crate) const ACK_DEADLINE: Duration = Duration::from_secs(5);

/// Retained messages replayed per page to a node that joined.
const REPLAY_PAGE: usize = 256;

/// `$SYS` topics describe one broker: they never leave it.
fn is_local_only(topic: &str) -> bool {
    topic.starts_with("$SYS/") || topic == "$SYS"
}

impl ClusterHook for Cluster {
    fn forward(&self, message: &Arc<Message>) -> Option<RemoteAcks> {
        origin::clear();
        if is_local_only(&message.topic) {
            return None;
        }
        let now = Instant::now();
        if message.retain {
            self.replicate_retained(&message.topic, now);
        }
        let matches = self.remote.read().matches(&message.topic);
        if matches.nodes.is_empty() && matches.groups.is_empty() {
            return None;
        }
        let peers = self.peers.read();
        // Node -> the shared groups it delivers to (BTreeMap: one entry per
        // node, every node with a plain match included).
        let mut targets: BTreeMap<u64, Vec<(String, String)>> =
            matches.nodes.iter().map(|&n| (n, Vec::new())).collect();
        for (group, filter, nodes) in matches.groups {
            // A local member takes the message: the core delivered it here.
            if self.local.has_group(&group, &filter) {
                continue;
            }
            let linked: Vec<u64> = nodes
                .into_iter()
                .filter(|n| peers.contains_key(n))
                .collect();
            if linked.is_empty() {
                continue;
            }
            let pick = linked[self.shared_turn.fetch_add(1, Relaxed) % linked.len()];
            targets
                .entry(pick)
                .or_default()
                .push((group.into(), filter.into()));
        }
        let packet = wire::encode_message(message, now);
        let droppable = message.qos == QoS::AtMostOnce;
        if targets.len() == 1 {
            // The common case, without the lists a message to several
            // nodes needs.
            let (node, groups) = targets.pop_first()?;
            let peer = peers.get(&node)?;
            let seq = peer.send_publish(groups, Vec::new(), packet, droppable)?;
            if !self.moved.is_empty() {
                origin::set_local(message, vec![(node, self.mark(peer, seq))]);
            }
            self.counters.forwarded.fetch_add(1, Relaxed);
            return (!droppable).then(|| {
                let mut acks = RemoteAcks::new(now + ACK_DEADLINE);
                acks.push(peer.settled(), seq);
                acks
            });
        }
        let linked: Vec<(&Arc<Peer>, link::Groups)> = targets
            .into_iter()
            .filter_map(|(node, groups)| peers.get(&node).map(|p| (p, groups)))
            .collect();
        let nodes: Vec<&Arc<Peer>> = linked.iter().map(|(p, _)| *p).collect();
        let seqs =
            link::publish_to_all((self.node_id, self.generation), linked, &packet, droppable);
        if !self.moved.is_empty() {
            // The local delivery of this message comes next on this
            // thread: a moved session's copy says where the direct ones are.
            let also = nodes
                .iter()
                .zip(&seqs)
                .filter_map(|(p, seq)| Some((p.node_id, self.mark(p, (*seq)?))))
                .collect();
            origin::set_local(message, also);
        }
        let mut acks: Option<RemoteAcks> = None;
        for (peer, seq) in nodes.into_iter().zip(seqs) {
            let Some(seq) = seq else {
                continue;
            };
            self.counters.forwarded.fetch_add(1, Relaxed);
            if !droppable {
                acks.get_or_insert_with(|| RemoteAcks::new(now + ACK_DEADLINE))
                    .push(peer.settled(), seq);
            }
        }
        acks
    }

    fn route_added(&self, filter: &str, group: Option<&str>) {
        match Route::gossiped(filter, group) {
            Some(route) => self.local.add(route),
            None => warn!(
                filter,
                "shared subscription filter too long to announce to the cluster: only members on this node get its messages"
            ),
        }
    }

    fn route_removed(&self, filter: &str, group: Option<&str>) {
        if let Some(route) = Route::gossiped(filter, group) {
            self.local.remove(&route);
        }
    }

    fn status(&self) -> serde_json::Value {
        self.status_json()
    }

    fn metrics(&self) -> vigil_broker::ClusterMetrics {
        self.metrics_now()
    }

    fn claim_client(
        &self,
        client_id: &str,
        clean_start: bool,
    ) -> Option<vigil_broker::ClaimFuture> {
        Some(self.claim_and_hand_over(client_id, clean_start))
    }

    fn moved_delivery(&self, client_id: &str, outgoing: &Outgoing) {
        let origin = origin::of(&outgoing.message);
        let packet = wire::encode_message(&outgoing.message, Instant::now());
        let peers = self.peers.read();
        let known = self.moved.deliver(
            client_id,
            packet,
            outgoing.message.qos == QoS::AtMostOnce,
            // Not back to the node it came from: that node routed it with
            // whatever sessions it held (a message published there while
            // the session was on its way is not passed back).
            |_| false,
            // Back to the node it came from too (published there while the
            // session was on its way), naming its place on that node's
            // link here: that node knows where its link stood on arrival.
            |node| origin.direct(node),
            |to, relay| self.send_relay(&peers, to, relay),
        );
        if !known {
            debug!(
                client = client_id,
                "a delivery to a session that moved away and is no longer passed on: dropped"
            );
        }
    }

    fn retire_member(&self, node_id: u64) -> Result<serde_json::Value, (u16, String)> {
        self.retire(node_id)
    }

    fn client_attached(&self, client_id: &str, ticket: u64) {
        if let Some(broker) = self.broker.upgrade() {
            self.ownership.attached(&broker, client_id, ticket);
        }
    }
}

impl Cluster {
    /// The place of frame `seq` on this node's link to `peer`.
    fn mark(&self, peer: &Peer, seq: u64) -> LinkMark {
        LinkMark {
            node: self.node_id,
            generation: self.generation,
            link: peer.link,
            seq,
        }
    }

    /// Sends one passed-on message to `node`.
    pub(crate) fn send_relay(&self, peers: &HashMap<u64, Arc<Peer>>, node: u64, relay: Relay) {
        let Some(peer) = peers.get(&node) else {
            return;
        };
        if peer
            .send_pass_on(
                vec![relay.client],
                relay.direct,
                relay.packet,
                relay.droppable,
            )
            .is_some()
        {
            self.counters.passed_on.fetch_add(1, Relaxed);
        }
    }

    /// Sends this node's retained message of `topic` (or its deletion) to
    /// every node, stamped. The stamp is taken and the index read under one
    /// lock, so of two writes racing on this node the later stamp carries
    /// what the index holds last.
    fn replicate_retained(&self, topic: &str, now: Instant) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let peers: Vec<Arc<Peer>> = self.peers.read().values().cloned().collect();
        let mut stamps = self.stamps.lock();
        let current = broker.retained_of(topic, now);
        let stamp = stamps.local_write(topic, self.node_id, unix_ms(), current.is_none());
        let packet = match &current {
            Some(m) => wire::encode_message(m, now),
            None => deletion(topic, now),
        };
        for p in peers {
            if p.send_retain(stamp, packet.clone()).is_some() {
                self.counters.retained_out.fetch_add(1, Relaxed);
            }
        }
    }

    /// Queues the next page of the replay of every retained message (then
    /// every deletion) to `peer`, a node this one has just linked to. Runs
    /// on the link's task whenever it has written everything queued.
    pub(crate) fn replay_retained(&self, peer: &Peer) {
        let Some(stage) = peer.take_sync() else {
            return;
        };
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let now = Instant::now();
        let next = match stage {
            SyncStage::Retained(after) => {
                let page = broker.retained_after(after.as_deref(), REPLAY_PAGE, now);
                let stamps = self.stamps.lock();
                for m in &page {
                    if is_local_only(&m.topic) {
                        continue;
                    }
                    peer.send_retain(stamps.of(&m.topic), wire::encode_message(m, now));
                }
                self.counters
                    .retained_out
                    .fetch_add(page.len() as u64, Relaxed);
                match page.last() {
                    Some(last) if page.len() == REPLAY_PAGE => {
                        Some(SyncStage::Retained(Some(last.topic.clone())))
                    }
                    _ => Some(SyncStage::Tombstones),
                }
            }
            SyncStage::Tombstones => {
                let tombstones = self.stamps.lock().tombstones();
                for (topic, stamp) in tombstones {
                    peer.send_retain(stamp, deletion(&topic, now));
                }
                None
            }
        };
        peer.set_sync(next);
    }

    /// Applies a retained write another node stamped, if it wins; returns
    /// the store commit holding it.
    pub(crate) fn apply_retained(
        &self,
        broker: &Broker,
        message: Message,
        stamp: Stamp,
        now: Clock,
    ) -> Option<vigil_store::Ticket> {
        let deleted = message.payload.is_empty();
        let mut stamps = self.stamps.lock();
        let held = broker.retained_of(&message.topic, now.instant).is_some();
        if !stamps.remote_write(&message.topic, stamp, deleted, held) {
            return None;
        }
        self.counters.retained_applied.fetch_add(1, Relaxed);
        // Under the stamps' lock: a local write to the topic waits, and
        // then stamps after this one.
        broker.set_retained_from_cluster(now, message)
    }
}

/// The packet of a deleted retained message: empty payload, retain set.
fn deletion(topic: &str, now: Instant) -> Bytes {
    let m = Arc::new(Message {
        topic: topic.to_owned(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: None,
        expires_at: None,
    });
    wire::encode_message(&m, now)
}
