//! One node's cluster state and its membership loop: every
//! `MEMBERSHIP_TICK` it gossips the routes that changed here (in batches)
//! and reads who is alive and which routes changed elsewhere, opening links
//! to nodes that joined and retiring those of nodes that left.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chitchat::ChitchatHandle;
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, info, warn};
use vigil_broker::{Broker, ClusterMetrics, LinkMetrics};

use crate::arrivals::Arrivals;
use crate::inbound::InboundStats;
use crate::link::{run_peer, Peer};
use crate::membership::{self, Member, Reader, RouteDelta};
use crate::moved::MovedSessions;
use crate::ownership::ClientOwnership;
use crate::retained::RetainedStamps;
use crate::routes::{LocalRoutes, RouteTable};

/// How often the membership loop runs.
const MEMBERSHIP_TICK: Duration = Duration::from_millis(50);
/// Route changes gossiped per lock of the chitchat state.
const ROUTE_BATCH: usize = 10_000;
/// How often retained tombstones past their time are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// A node's view of the cluster, shared by the broker's threads (through
/// `ClusterHook`) and the cluster thread's tasks.
#[derive(Debug)]
pub(crate) struct Cluster {
    /// This node's id.
    pub(crate) node_id: u64,
    /// This run's generation (start time, unix ms).
    pub(crate) generation: u64,
    /// The cluster address (gossip and links).
    pub(crate) addr: SocketAddr,
    /// The broker (weak: the broker holds the cluster as its hook).
    pub(crate) broker: Weak<Broker>,
    /// This node's routes, counted.
    pub(crate) local: LocalRoutes,
    /// Other nodes' routes.
    pub(crate) remote: RwLock<RouteTable>,
    /// Outbound links, by node id.
    pub(crate) peers: RwLock<HashMap<u64, Arc<Peer>>>,
    /// Live members other than this node, as last read.
    pub(crate) members: RwLock<Vec<Member>>,
    /// Members (node, generation) that said they are stopping: no routes,
    /// no new link, until gossip sees them gone.
    pub(crate) leaving: Mutex<HashSet<(u64, u64)>>,
    /// Nodes gossip holds as dead, as last read.
    pub(crate) dead: AtomicU64,
    /// What each node sent here, by node id.
    pub(crate) inbound: Mutex<HashMap<u64, Arc<InboundStats>>>,
    /// Highest sequence number applied per inbound link (sender node,
    /// generation, link number).
    pub(crate) applied: Mutex<HashMap<(u64, u64, u64), u64>>,
    /// Stamps of retained topics.
    pub(crate) stamps: RetainedStamps,
    /// Traffic counters.
    pub(crate) counters: ClusterCounters,
    /// Round-robin turn among nodes with members of a shared group.
    pub(crate) shared_turn: AtomicUsize,
    /// Readiness to gossip.
    pub(crate) ready: AtomicBool,
    /// Ends the membership loop.
    pub(crate) stop: Notify,
    /// Client-id ownership (Raft).
    pub(crate) ownership: Arc<ClientOwnership>,
    /// Sessions handed over to other nodes, still passed on for a while.
    pub(crate) moved: MovedSessions,
    /// Sessions handed over to this node lately, and what links delivered.
    pub(crate) arrivals: Arc<Arrivals>,
    /// The cluster thread's runtime, for work the admin thread asks for.
    pub(crate) runtime: tokio::runtime::Handle,
}

/// What crossed this node's links.
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    /// Messages forwarded (one per message and receiving node).
    pub(crate) forwarded: AtomicU64,
    /// Messages other nodes forwarded here.
    pub(crate) received: AtomicU64,
    /// Retained writes sent to other nodes (replication and replay).
    pub(crate) retained_out: AtomicU64,
    /// Retained writes from other nodes that were applied here.
    pub(crate) retained_applied: AtomicU64,
    /// Inbound links closed for a malformed or unexpected frame.
    pub(crate) bad_links: AtomicU64,
    /// Nodes that left or were declared dead.
    pub(crate) nodes_lost: AtomicU64,
    /// Nodes that said they were stopping (`Leave`).
    pub(crate) nodes_left: AtomicU64,
    /// Messages passed on to the node a session moved to.
    pub(crate) passed_on: AtomicU64,
}

impl Cluster {
    /// Gossips route changes and applies membership until `stop`.
    pub(crate) async fn run_membership(self: Arc<Self>, handle: ChitchatHandle) {
        let mut reader = Reader::default();
        let mut ready_told = None;
        let mut pruned_at = tokio::time::Instant::now();
        let mut formed_told = None;
        let mut tick = tokio::time::interval(MEMBERSHIP_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.notified() => break,
            }
            let chitchat = handle.chitchat();
            let ready = self.ready.load(Relaxed);
            if ready_told != Some(ready) {
                membership::set_ready(&mut *chitchat.lock().await, ready);
                ready_told = Some(ready);
            }
            loop {
                let changes = self.local.take_changes(ROUTE_BATCH);
                if changes.is_empty() {
                    break;
                }
                membership::publish_routes(&mut *chitchat.lock().await, &changes);
            }
            let formed = self.ownership.formed();
            if formed_told != Some(formed) {
                membership::set_raft_formed(&mut *chitchat.lock().await, formed);
                formed_told = Some(formed);
            }
            let looked = {
                let state = chitchat.lock().await;
                self.dead.store(state.dead_nodes().count() as u64, Relaxed);
                reader.look(&state)
            };
            self.apply_membership(looked);
            self.expire_moved();
            self.ownership.steer(&self.members.read());
            if pruned_at.elapsed() >= PRUNE_EVERY {
                pruned_at = tokio::time::Instant::now();
                let n = self.stamps.lock().prune(crate::retained::unix_ms());
                if n > 0 {
                    debug!(
                        tombstones = n,
                        "retained deletions older than an hour forgotten"
                    );
                }
            }
        }
        let chitchat = handle.chitchat();
        membership::set_ready(&mut *chitchat.lock().await, false);
        if let Err(e) = handle.shutdown().await {
            warn!(cause = %e, "gossip did not stop cleanly");
        }
    }

    /// Stops passing on the moved sessions whose new node's routes have
    /// had time to reach every node, and ends them (their filters go).
    fn expire_moved(&self) {
        let ended = {
            let table = self.remote.read();
            let peers = self.peers.read();
            self.moved.expire(
                std::time::Instant::now(),
                |node, route| table.routes_of(node).is_some_and(|r| r.contains(route)),
                |node| peers.contains_key(&node),
            )
        };
        if let Some(broker) = self.broker.upgrade() {
            for session in &ended {
                broker.end_moved(vigil_proto::time::Clock::now(), session);
            }
        }
        self.arrivals.expire(std::time::Instant::now());
    }

    /// Node `node`, generation `generation`, said it is stopping: its routes
    /// go now, so nothing more is forwarded to it; its link stays until
    /// gossip sees it gone, so what was queued for it still arrives.
    pub(crate) fn node_leaving(&self, node: u64, generation: u64) {
        if !self.leaving.lock().insert((node, generation)) {
            return;
        }
        self.remote.write().remove_node(node);
        self.counters.nodes_left.fetch_add(1, Relaxed);
        info!(
            node,
            generation, "cluster node stopping: its routes dropped, nothing more forwarded to it"
        );
    }

    /// Opens links to new members (or new generations of known ones),
    /// retires the links and routes of members that left, and applies route
    /// changes.
    fn apply_membership(self: &Arc<Self>, looked: Vec<(Member, Option<RouteDelta>)>) {
        let live: HashSet<u64> = looked.iter().map(|(m, _)| m.node_id).collect();
        let mut table = self.remote.write();
        let mut peers = self.peers.write();
        let mut leaving = self.leaving.lock();
        for (member, delta) in &looked {
            if leaving.contains(&(member.node_id, member.generation)) {
                continue;
            }
            let known = peers.get(&member.node_id).map(|p| p.generation);
            if known != Some(member.generation) {
                if let Some(old) = peers.remove(&member.node_id) {
                    info!(
                        node = member.node_id,
                        generation = member.generation,
                        "cluster node restarted: its old routes and link dropped"
                    );
                    old.retire();
                    table.remove_node(member.node_id);
                    self.moved
                        .forget_links_of(member.node_id, member.generation);
                } else {
                    info!(node = member.node_id, addr = %member.cluster_addr, mqtt = %member.mqtt, "cluster node joined");
                }
                let peer = Arc::new(Peer::new(
                    member.node_id,
                    member.generation,
                    member.cluster_addr,
                ));
                peers.insert(member.node_id, peer.clone());
                let me = (self.node_id, self.generation);
                let cluster = self.clone();
                let refill: Arc<dyn Fn(&Peer) + Send + Sync> =
                    Arc::new(move |p: &Peer| cluster.replay_retained(p));
                tokio::spawn(run_peer(peer, me, refill));
            }
            match delta {
                Some(RouteDelta::Full(routes)) => {
                    table.remove_node(member.node_id);
                    for r in routes {
                        table.insert(member.node_id, r.clone());
                    }
                }
                Some(RouteDelta::Changes(changes)) => {
                    for (r, present) in changes {
                        if *present {
                            table.insert(member.node_id, r.clone());
                        } else {
                            table.remove(member.node_id, r);
                        }
                    }
                }
                None => {}
            }
        }
        let gone: Vec<u64> = peers
            .keys()
            .filter(|n| !live.contains(n))
            .copied()
            .collect();
        for node in gone {
            if let Some(peer) = peers.remove(&node) {
                if leaving.contains(&(node, peer.generation)) {
                    info!(
                        node,
                        queued = peer.queued(),
                        "cluster node stopped: its link retired"
                    );
                } else {
                    warn!(
                        node,
                        queued = peer.queued(),
                        "cluster node left or stopped answering: its routes dropped, what was queued for it given up"
                    );
                }
                peer.retire();
            }
            table.remove_node(node);
            self.counters.nodes_lost.fetch_add(1, Relaxed);
        }
        leaving.retain(|(node, generation)| {
            looked
                .iter()
                .any(|(m, _)| m.node_id == *node && m.generation == *generation)
        });
        drop(leaving);
        drop(peers);
        drop(table);
        *self.members.write() = looked.into_iter().map(|(m, _)| m).collect();
    }

    /// Accepts inbound links until the listener fails.
    pub(crate) async fn accept_links(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    tokio::spawn(self.clone().serve_link(stream, from));
                }
                Err(e) => {
                    warn!(cause = %e, "cluster accept failed");
                    // An accept error (out of descriptors) repeats at once:
                    // pause instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Members, routes and both directions of traffic, for `/metrics`.
    pub(crate) fn metrics_now(&self) -> ClusterMetrics {
        let table = self.remote.read();
        let peers = self.peers.read();
        let inbound = self.inbound.lock();
        let leaving = self.leaving.lock().clone();
        let members = self.members.read();
        let links = members
            .iter()
            .map(|m| {
                let mut l = LinkMetrics {
                    node_id: m.node_id,
                    routes: table.routes_of(m.node_id).map_or(0, |r| r.len()) as u64,
                    ..LinkMetrics::default()
                };
                if let Some(p) = peers.get(&m.node_id) {
                    let s = &p.stats;
                    l.connected = s.connected.load(Relaxed);
                    l.connects = s.connects.load(Relaxed);
                    l.frames_out = s.frames_out.load(Relaxed);
                    l.bytes_out = s.bytes_out.load(Relaxed);
                    l.frames_acked = s.frames_acked.load(Relaxed);
                    l.queued = p.queued() as u64;
                    l.dropped_full = s.dropped_full.load(Relaxed);
                    l.given_up = s.given_up.load(Relaxed);
                }
                if let Some(i) = inbound.get(&m.node_id) {
                    l.frames_in = i.frames.load(Relaxed);
                    l.bytes_in = i.bytes.load(Relaxed);
                }
                l
            })
            .collect();
        let c = &self.counters;
        ClusterMetrics {
            members_live: members.len() as u64,
            members_leaving: members
                .iter()
                .filter(|m| leaving.contains(&(m.node_id, m.generation)))
                .count() as u64,
            members_dead: self.dead.load(Relaxed),
            local_routes: self.local.len() as u64,
            forwarded: c.forwarded.load(Relaxed),
            received: c.received.load(Relaxed),
            retained_out: c.retained_out.load(Relaxed),
            retained_applied: c.retained_applied.load(Relaxed),
            retained_tombstones: self.stamps.lock().tombstone_count() as u64,
            malformed_links: c.bad_links.load(Relaxed),
            nodes_lost: c.nodes_lost.load(Relaxed),
            nodes_left: c.nodes_left.load(Relaxed),
            moved_sessions: self.moved.list().len() as u64,
            passed_on: c.passed_on.load(Relaxed),
            links,
        }
    }

    /// Members, routes and links, for the admin API.
    pub(crate) fn status_json(&self) -> serde_json::Value {
        let table = self.remote.read();
        let peers = self.peers.read();
        let leaving = self.leaving.lock().clone();
        let members: Vec<serde_json::Value> = self
            .members
            .read()
            .iter()
            .map(|m| {
                let link = peers.get(&m.node_id).map(|p| {
                    let s = &p.stats;
                    serde_json::json!({
                        "connected": s.connected.load(Relaxed),
                        "connects": s.connects.load(Relaxed),
                        "frames_out": s.frames_out.load(Relaxed),
                        "bytes_out": s.bytes_out.load(Relaxed),
                        "frames_acked": s.frames_acked.load(Relaxed),
                        "queued": p.queued(),
                        "dropped_full": s.dropped_full.load(Relaxed),
                        "given_up": s.given_up.load(Relaxed),
                    })
                });
                serde_json::json!({
                    "node_id": m.node_id,
                    "generation": m.generation,
                    "cluster_addr": m.cluster_addr.to_string(),
                    "mqtt": m.mqtt,
                    "ready": m.ready,
                    "leaving": leaving.contains(&(m.node_id, m.generation)),
                    "routes": table.routes_of(m.node_id).map_or(0, |r| r.len()),
                    "link": link,
                })
            })
            .collect();
        let c = &self.counters;
        serde_json::json!({
            "node_id": self.node_id,
            "generation": self.generation,
            "cluster_addr": self.addr.to_string(),
            "local_routes": self.local.len(),
            "members": members,
            "forwarded": c.forwarded.load(Relaxed),
            "received": c.received.load(Relaxed),
            "retained_out": c.retained_out.load(Relaxed),
            "retained_applied": c.retained_applied.load(Relaxed),
            "bad_links": c.bad_links.load(Relaxed),
            "nodes_lost": c.nodes_lost.load(Relaxed),
            "nodes_left": c.nodes_left.load(Relaxed),
            "passed_on": c.passed_on.load(Relaxed),
            "moved": self.moved.list().into_iter().map(|(client, node)| serde_json::json!({"client_id": client, "node_id": node})).collect::<Vec<_>>(),
            "ownership": self.ownership.status_json(),
        })
    }
}
