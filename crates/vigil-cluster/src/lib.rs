//! vigil-cluster: several `vigil serve` nodes serving one MQTT namespace.
//!
//! - `membership`: chitchat gossip over UDP on the cluster address, with
//!   phi-accrual failure detection; each node announces its id, cluster
//!   address and generation (chitchat's node id), its MQTT address and its
//!   readiness.
//! - `routes`: the topic filters each node has local subscribers for, one
//!   chitchat key per filter, and the trie of other nodes' routes.
//! - `wire`, `link`, `inbound`: the node-to-node TCP links (same address
//!   and port as the gossip) and their framed format.
//! - `forward`: the broker core's hook: a PUBLISH goes once to each node
//!   with a matching route; retained messages go to every node.
//! - `retained`: last-writer-wins stamps of retained messages.
//! - `node`: one node's state and its membership loop.
//! - `fault` (feature `fault-injection`, tests only): a switch that drops
//!   the traffic to chosen peers, to partition live nodes.
//!
//! Everything runs on a thread of its own with its own runtime; the broker's
//! workers only append to bounded link queues. `docs/cluster.md` explains
//! the design and what is promised.

mod arrivals;
#[cfg(feature = "fault-injection")]
mod fault;
mod forward;
mod handover;
mod inbound;
mod link;
mod membership;
mod moved;
mod node;
mod origin;
mod ownership;
mod retained;
mod retire;
mod routes;
mod wire;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tracing::info;
use vigil_broker::config::ClusterConfig;
use vigil_broker::Broker;

use node::Cluster;

/// Why a cluster node could not start.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The cluster address could not be bound for the links (TCP).
    #[error("cannot listen on {addr}/TCP for cluster links: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Gossip could not start (UDP on the cluster address).
    #[error("cannot start cluster gossip on {addr}/UDP: {cause}")]
    Gossip {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        cause: String,
    },
    /// The cluster's thread or runtime could not start.
    #[error("cannot start the cluster thread: {0}")]
    Thread(std::io::Error),
    /// The broker is a cluster node already.
    #[error("the broker already has a cluster hook")]
    AlreadyClustered,
    /// The Raft address of client-id ownership could not be bound (TCP).
    #[error("cannot listen on {addr}/TCP for client-id ownership (Raft): {source}")]
    RaftBind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Client-id ownership could not start.
    #[error("cannot start client-id ownership: {0}")]
    Ownership(#[from] vigil_ownership::OwnershipError),
    /// The data directory for the ownership log could not be created.
    #[error("cannot create the data directory {}: {source}", dir.display())]
    DataDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The settings are unusable (see `ClusterConfig::problem`).
    #[error("{0}")]
    Config(String),
}

/// A running cluster node: its thread, and the hook the broker calls.
#[derive(Debug)]
pub struct ClusterNode {
    cluster: Arc<Cluster>,
    thread: Option<JoinHandle<()>>,
}

impl ClusterNode {
    /// Joins the cluster `config` describes as the node serving MQTT on
    /// `mqtt`, and makes `broker` forward through it and claim each
    /// CONNECT's client id. Call before the broker serves clients. Gossip
    /// (UDP) and links (TCP) share `config.bind`; port 0 picks a port free
    /// for both. Client-id ownership (Raft) listens on `config.raft_addr()`
    /// and keeps its log in `data_dir/ownership.redb`.
    pub fn start(
        config: &ClusterConfig,
        broker: &Arc<Broker>,
        mqtt: SocketAddr,
        data_dir: &Path,
    ) -> Result<ClusterNode, ClusterError> {
        let raft_addr = config
            .raft_addr()
            .ok_or_else(|| ClusterError::Config(config.problem().unwrap_or_default()))?;
        let ownership_path = data_dir.join("ownership.redb");
        std::fs::create_dir_all(data_dir).map_err(|source| ClusterError::DataDir {
            dir: data_dir.to_path_buf(),
            source,
        })?;
        let generation = retained::unix_ms();
        #[cfg(feature = "fault-injection")]
        fault::arm();
        let (tx, rx) = std::sync::mpsc::channel();
        let config = config.clone();
        let weak = Arc::downgrade(broker);
        let thread = std::thread::Builder::new()
            .name("vigil-cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(ClusterError::Thread(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let ownership = match start_ownership(&config, raft_addr, ownership_path).await
                    {
                        Ok(o) => o,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let (listener, gossip) =
                        match bind(&config, generation, &mqtt.to_string(), ownership.address())
                            .await
                        {
                            Ok(bound) => bound,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        };
                    let addr = gossip.chitchat_id().gossip_advertise_addr;
                    tokio::spawn(ownership.clone().watch_changes(weak.clone()));
                    let cluster = Arc::new(Cluster {
                        node_id: config.node_id,
                        generation,
                        addr,
                        broker: weak,
                        local: Default::default(),
                        remote: Default::default(),
                        peers: Default::default(),
                        members: Default::default(),
                        leaving: Default::default(),
                        dead: Default::default(),
                        inbound: Default::default(),
                        applied: Default::default(),
                        stamps: Default::default(),
                        counters: Default::default(),
                        shared_turn: Default::default(),
                        moved: Default::default(),
                        arrivals: Default::default(),
                        runtime: tokio::runtime::Handle::current(),
                        ready: Default::default(),
                        stop: Default::default(),
                        ownership: ownership.clone(),
                    });
                    let accepting = tokio::spawn(cluster.clone().accept_links(listener));
                    if tx.send(Ok(cluster.clone())).is_err() {
                        return;
                    }
                    cluster.run_membership(gossip).await;
                    accepting.abort();
                    // Links end with the runtime when the thread returns.
                });
            })
            .map_err(ClusterError::Thread)?;
        let cluster = match rx.recv() {
            Ok(Ok(cluster)) => cluster,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ClusterError::Thread(std::io::Error::other(
                    "the cluster thread ended while starting",
                )));
            }
        };
        if !broker.set_cluster(cluster.clone()) {
            cluster.stop.notify_one();
            let _ = thread.join();
            return Err(ClusterError::AlreadyClustered);
        }
        info!(
            node = cluster.node_id,
            generation,
            addr = %cluster.addr,
            "cluster listening"
        );
        info!(node = cluster.node_id, addr = %cluster.ownership.address(), "raft listening");
        Ok(ClusterNode {
            cluster,
            thread: Some(thread),
        })
    }

    /// The cluster address (gossip and links), with the port chosen if 0 was asked.
    pub fn addr(&self) -> SocketAddr {
        self.cluster.addr
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.cluster.node_id
    }

    /// Announces whether this node serves clients.
    pub fn set_ready(&self, ready: bool) {
        self.cluster.ready.store(ready, Relaxed);
    }

    /// Tells every linked node this one is stopping, so they drop its
    /// routes and forward nothing more to it now rather than when failure
    /// detection notices it gone; waits for their acks, at most `within`.
    /// Returns how many nodes acknowledged (or were dropped meanwhile), of
    /// how many were told. Call
    /// before the broker stops serving: what the others had queued for
    /// this node still arrives.
    pub async fn leave(&self, within: Duration) -> (usize, usize) {
        self.cluster.ready.store(false, Relaxed);
        let peers: Vec<Arc<link::Peer>> = self.cluster.peers.read().values().cloned().collect();
        let mut pending: Vec<_> = peers
            .iter()
            .filter_map(|p| Some((p.send_leave()?, p.settled())))
            .collect();
        let told = pending.len();
        // One wait after the other, all under one deadline: the acks come
        // in concurrently, so this takes as long as the slowest one.
        let _ = tokio::time::timeout(within, async {
            for (seq, settled) in &mut pending {
                let _ = settled.wait_for(|s| *s >= *seq).await;
            }
        })
        .await;
        let acked = pending
            .iter()
            .filter(|(seq, settled)| *settled.borrow() >= *seq)
            .count();
        (acked, told)
    }

    /// Leaves: stops gossiping (the others see the node go within seconds)
    /// and ends the cluster thread.
    pub fn stop(mut self) {
        self.cluster.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds the link listener and starts gossip on the same address and
/// port; with port 0, tries ports until one is free for both.
async fn bind(
    config: &ClusterConfig,
    generation: u64,
    mqtt: &str,
    raft: &str,
) -> Result<(TcpListener, chitchat::ChitchatHandle), ClusterError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|source| ClusterError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ClusterError::Bind {
            addr: config.bind,
            source,
        })?;
        match membership::start(config.node_id, generation, addr, &config.seeds, mqtt, raft).await {
            Ok(handle) => return Ok((listener, handle)),
            // The port was free for TCP but taken for UDP: another one.
            Err(_) if config.bind.port() == 0 && attempts < 20 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Binds the Raft listener and starts this node of the ownership group.
async fn start_ownership(
    config: &ClusterConfig,
    raft_addr: SocketAddr,
    path: std::path::PathBuf,
) -> Result<Arc<ownership::ClientOwnership>, ClusterError> {
    let listener = TcpListener::bind(raft_addr)
        .await
        .map_err(|source| ClusterError::RaftBind {
            addr: raft_addr,
            source,
        })?;
    let own = vigil_ownership::OwnershipConfig::new(config.node_id, raft_addr, path);
    #[cfg(feature = "fault-injection")]
    let own = vigil_ownership::OwnershipConfig {
        peer_filter: fault::peer_filter(),
        ..own
    };
    let node = vigil_ownership::Ownership::start_with_listener(own, listener).await?;
    // A seed naming this node itself says nothing about whether others run.
    let other_seeds = config
        .seeds
        .iter()
        .filter(|s| **s != config.bind)
        .copied()
        .collect();
    Ok(Arc::new(ownership::ClientOwnership::new(
        config.node_id,
        node,
        other_seeds,
    )))
}
