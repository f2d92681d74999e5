//! The `[cluster]` table: which node this is and where the others are. The
//! cluster itself is the `vigil-cluster` crate; only what the file says
//! lives here, so the broker's configuration parses and checks it with
//! everything else.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[cluster]`: present (or any `--cluster-*` flag), and this broker is one
/// node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id: a positive integer no other node of the cluster has.
    pub node_id: u64,
    /// The cluster address: gossip (UDP) and the node-to-node links (TCP)
    /// share this address and port (default 127.0.0.1:7946).
    pub bind: SocketAddr,
    /// Cluster addresses of nodes to join through (may include this one).
    pub seeds: Vec<SocketAddr>,
    /// The Raft address of client-id ownership (TCP); None: `bind`'s IP
    /// and its port plus one (port 0 stays 0: a free port).
    pub raft_bind: Option<SocketAddr>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: 0,
            bind: SocketAddr::from(([127, 0, 0, 1], 7946)),
            seeds: Vec::new(),
            raft_bind: None,
        }
    }
}

impl ClusterConfig {
    /// The Raft address: `raft_bind`, else `bind`'s IP and port plus one
    /// (port 0 stays 0). None when `bind`'s port is the last one.
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        if let Some(raft) = self.raft_bind {
            return Some(raft);
        }
        let port = match self.bind.port() {
            0 => 0,
            p => p.checked_add(1)?,
        };
        Some(SocketAddr::new(self.bind.ip(), port))
    }

    /// Why this cannot be used, if it cannot (checked with the rest of the file).
    pub fn problem(&self) -> Option<String> {
        if self.node_id == 0 {
            return Some(
                "cluster.node_id (--cluster-node-id) must be set to a positive integer, \
                 unique in the cluster"
                    .into(),
            );
        }
        if self.bind.ip().is_unspecified() {
            return Some(format!(
                "cluster.bind ({}) must be the address other nodes reach this one on, \
                 not an unspecified address",
                self.bind
            ));
        }
        match self.raft_addr() {
            None => Some(format!(
                "cluster.raft_bind (--cluster-raft-bind) must be set: the default, \
                 cluster.bind's port plus one, is past 65535 ({})",
                self.bind
            )),
            Some(raft) if raft.ip().is_unspecified() => Some(format!(
                "cluster.raft_bind ({raft}) must be the address other nodes reach this one on, \
                 not an unspecified address"
            )),
            Some(raft) if raft == self.bind && raft.port() != 0 => Some(format!(
                "cluster.raft_bind ({raft}) must differ from cluster.bind: \
                 the links already listen there on TCP"
            )),
            Some(_) => None,
        }
    }
}
