//! The values the ownership group agrees on: who owns a client id, the
//! operations that change it, and their outcomes.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A node of the cluster, as `[cluster] node_id` names it (a positive integer).
pub type NodeId = u64;

/// How many operations one Raft entry may carry: the position of an
/// operation in its entry is the low bits of its epoch.
pub(crate) const OPS_PER_ENTRY_BITS: u32 = 20;

/// A claim's sequence number: strictly larger than every epoch committed
/// before it, for every client id.
///
/// An epoch is made of the Raft log index of the entry that committed the
/// claim and the claim's position in that entry, so it is the same on every
/// node without any counter of its own, and it names the log index a node
/// must have applied before it can judge the claim
/// ([`Epoch::log_index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch of the operation at `position` in the entry at `log_index`.
    pub(crate) fn at(log_index: u64, position: usize) -> Epoch {
        Epoch((log_index << OPS_PER_ENTRY_BITS) | position as u64)
    }

    /// The Raft log index of the entry that committed this epoch.
    pub fn log_index(self) -> u64 {
        self.0 >> OPS_PER_ENTRY_BITS
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            self.log_index(),
            self.0 & ((1 << OPS_PER_ENTRY_BITS) - 1)
        )
    }
}

/// Who holds a client id: a node and the epoch of its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The node that holds the client's connection.
    pub node: NodeId,
    /// The epoch of that node's claim.
    pub epoch: Epoch,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} at epoch {}", self.node, self.epoch)
    }
}

/// One change to the ownership map, carried in a Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// `node` takes the client id, with the next epoch, whoever held it.
    Claim {
        /// The MQTT client id.
        client_id: String,
        /// The claiming node.
        node: NodeId,
    },
    /// `owner` gives the client id up, if it is still the current owner.
    Release {
        /// The MQTT client id.
        client_id: String,
        /// The owner as the releasing node knows it.
        owner: Owner,
    },
}

impl Op {
    /// The client id the operation is about.
    pub(crate) fn client_id(&self) -> &str {
        match self {
            Op::Claim { client_id, .. } | Op::Release { client_id, .. } => client_id,
        }
    }
}

/// What one operation did once applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OpOutcome {
    /// The claim committed with this epoch; `previous` held the id before.
    Claimed {
        /// The claim's new epoch.
        epoch: Epoch,
        /// The owner the claim replaced, if any.
        previous: Option<Owner>,
    },
    /// The release removed the entry.
    Released,
    /// The release named an owner that is no longer current.
    Stale {
        /// The owner at the time, if any.
        current: Option<Owner>,
    },
}

/// The payload of one Raft entry: the operations gathered into it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Batch(pub(crate) Vec<Op>);

/// The outcome of every operation of one entry, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchOutcome(pub(crate) Vec<OpOutcome>);

/// One applied change, as a node's change stream reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnershipChange {
    /// The client id.
    pub client_id: String,
    /// The owner before the change.
    pub previous: Option<Owner>,
    /// The owner after it (`None`: released).
    pub current: Option<Owner>,
}

impl OwnershipChange {
    /// True when `node` held the id before this change and no longer does:
    /// the connection it holds must go (DISCONNECT 0x8E).
    pub fn taken_from(&self, node: NodeId) -> bool {
        self.previous.is_some_and(|p| p.node == node)
            && self.current.is_some_and(|c| c.node != node)
    }
}

/// What a node's change stream carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnershipEvent {
    /// One applied change.
    Changed(OwnershipChange),
    /// The whole map was replaced from a snapshot (a node that fell far
    /// behind): every client id held must be checked again with
    /// [`crate::Ownership::owner`].
    Reset,
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the ownership group.
    pub(crate) TypeConfig:
        D = Batch,
        R = BatchOutcome,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_order_by_log_index_then_position() {
        assert!(Epoch::at(7, 0) > Epoch::at(6, 999));
        assert!(Epoch::at(7, 1) > Epoch::at(7, 0));
        assert_eq!(Epoch::at(7, 3).log_index(), 7);
        assert_eq!(Epoch::at(7, 3).to_string(), "7.3");
    }

    #[test]
    fn taken_from_is_only_a_move_away_from_the_node() {
        let a = Owner {
            node: 1,
            epoch: Epoch(5),
        };
        let b = Owner {
            node: 2,
            epoch: Epoch(9),
        };
        let change = |previous, current| OwnershipChange {
            client_id: "c".into(),
            previous,
            current,
        };
        assert!(change(Some(a), Some(b)).taken_from(1));
        assert!(!change(Some(a), Some(b)).taken_from(2));
        assert!(
            !change(Some(a), None).taken_from(1),
            "a release is not a takeover"
        );
        assert!(!change(None, Some(b)).taken_from(1));
        let again = Owner {
            node: 1,
            epoch: Epoch(10),
        };
        assert!(
            !change(Some(a), Some(again)).taken_from(1),
            "the node reclaimed it"
        );
    }
}
