//! Cluster-wide client-id ownership for vigil.
//!
//! An [openraft](https://docs.rs/openraft) group whose replicated state
//! machine maps each MQTT client id to the node holding its connection and
//! the epoch of that node's claim. A CONNECT commits a claim (batched with
//! the other CONNECTs of the moment); the node that held the id before
//! learns it from its change stream and disconnects the old connection with
//! 0x8E. A stale epoch is always refused. Without a majority a claim fails
//! with [`OwnershipError::NoQuorum`] within the claim timeout, which the
//! broker answers with CONNACK 0x88 (MQTT 5) / 0x03 (3.1.1).
//!
//! The design, and what happens on a partition, is in
//! `docs/cluster-ownership.md`.

mod batcher;
mod network;
mod node;
mod rules;
mod store;
mod submit;
mod types;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use network::peer::PeerFilter;
pub use node::{Claimed, Ownership, OwnershipConfig, Status};
pub use types::{Epoch, NodeId, Owner, OwnershipChange, OwnershipEvent};

/// Why an ownership operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OwnershipError {
    /// No majority committed the operation in time: the broker refuses the
    /// CONNECT with 0x88 "Server unavailable" (MQTT 5) / 0x03 (3.1.1).
    #[error("no majority of the ownership group answered within {0:?}")]
    NoQuorum(Duration),
    /// The epoch named is no longer the current one (a newer claim won).
    #[error("stale epoch: the current owner is {}", current.map_or_else(|| "nobody".to_owned(), |o| o.to_string()))]
    StaleEpoch {
        /// The owner now, if any.
        current: Option<Owner>,
    },
    /// A membership change was sent to a node that is not the leader.
    #[error("this node is not the leader of the ownership group (the leader is {leader:?})")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A client id longer than MQTT allows.
    #[error("client id of {0} bytes exceeds 65535")]
    ClientIdTooLong(usize),
    /// The Raft listener could not be bound.
    #[error("cannot bind the ownership listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// The ownership file could not be opened.
    #[error("cannot open the ownership store {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Arc<redb::Error>,
    },
    /// The applied state could not be read.
    #[error("cannot read the ownership store: {0}")]
    Read(Arc<redb::Error>),
    /// The Raft settings are inconsistent.
    #[error("invalid ownership settings: {0}")]
    Config(String),
    /// Raft failed (its storage failed, or it answered unexpectedly).
    #[error("ownership Raft failed: {0}")]
    Raft(String),
    /// The node is stopping or has stopped.
    #[error("the ownership node has stopped")]
    Stopped,
}
