//! Retiring a node that died for good from the client-id ownership group,
//! at an operator's request (the admin API). Members are never removed
//! automatically: a node that is only down keeps its vote and its place, so
//! it can come back with its log. A node that will not come back still
//! counts in every majority, so a three-node cluster that lost one for good
//! has no spare: retiring it makes the group two voters, and a new node
//! joining makes it three again.

use std::time::Duration;

use serde_json::json;
use tracing::info;
use vigil_ownership::OwnershipError;

use crate::node::Cluster;

/// Longest the membership change may take.
const RETIRE_WAIT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Retires node `id`: refused for this node itself, for a node gossip
    /// holds live (the leader would add it back), for one not in the group,
    /// and on a node that is not the leader (the answer names the leader).
    /// Blocks the calling thread (the admin API's) until the change is
    /// committed or refused, at most `RETIRE_WAIT`.
    pub(crate) fn retire(&self, id: u64) -> Result<serde_json::Value, (u16, String)> {
        if id == self.node_id {
            return Err((
                409,
                format!("node {id} is this node: stop it and retire it from another"),
            ));
        }
        if self.members.read().iter().any(|m| m.node_id == id) {
            return Err((
                409,
                format!("node {id} is live: stop it for good first (a live node is added back to the group)"),
            ));
        }
        if !self.ownership.has_member(id) {
            return Err((
                404,
                format!("node {id} is not a member of the ownership group"),
            ));
        }
        let (leader, _) = self.ownership.leader_and_voters();
        if leader != Some(self.node_id) {
            let who = leader.map_or_else(|| "not known".to_owned(), |l| format!("node {l}"));
            return Err((
                409,
                format!("this node is not the leader of the ownership group (the leader is {who}): ask the leader"),
            ));
        }
        let ownership = self.ownership.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let done = tokio::time::timeout(RETIRE_WAIT, ownership.retire(id)).await;
            let _ = tx.send(done);
        });
        match rx.recv_timeout(RETIRE_WAIT + Duration::from_secs(1)) {
            Ok(Ok(Ok(()))) => {
                let (_, voters) = self.ownership.leader_and_voters();
                info!(node = id, ?voters, "node retired from the ownership group");
                Ok(json!({ "retired": id, "voters": voters }))
            }
            Ok(Ok(Err(e @ OwnershipError::NotLeader { .. }))) => Err((409, e.to_string())),
            Ok(Ok(Err(e))) => Err((503, e.to_string())),
            Ok(Err(_)) | Err(_) => Err((
                503,
                format!("the change was not committed within {RETIRE_WAIT:?}: no majority of the group answered"),
            )),
        }
    }
}
