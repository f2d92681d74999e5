//! Getting a batch of operations committed: on this node when it leads,
//! forwarded to the leader otherwise, and refused with `NoQuorum` when no
//! majority commits it within the claim timeout.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use tokio::time::Instant;

use crate::network::message::{Request, Response, WriteReply};
use crate::network::peer::{LinkError, Peers};
use crate::types::{Batch, BatchOutcome, NodeId, TypeConfig};
use crate::OwnershipError;

/// How long a write waits for news (a new leader, a link back) before it
/// tries again when the leader it knows cannot take it.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What the write path of one node needs.
pub(crate) struct Shared {
    /// This node.
    pub(crate) id: NodeId,
    /// Its Raft.
    pub(crate) raft: Raft<TypeConfig>,
    /// Its links to the other nodes.
    pub(crate) peers: Arc<Peers>,
    /// How long a write may take before it fails with `NoQuorum`.
    pub(crate) claim_timeout: Duration,
    /// A leader that has heard from no majority for this long refuses writes
    /// at once instead of waiting for the timeout.
    pub(crate) quorum_lost_after: Duration,
}

/// Commits `batch` here, if this node is the leader, by `deadline`.
pub(crate) async fn commit_here(shared: &Shared, batch: Batch, deadline: Instant) -> WriteReply {
    let mut metrics = shared.raft.metrics();
    let leader = metrics.borrow().current_leader;
    if leader != Some(shared.id) {
        return WriteReply::NotLeader(leader);
    }
    // A leader cut off from its majority keeps the entry it appended, and
    // it may still commit later; see docs/cluster-ownership.md for why
    // that is harmless. The caller is not kept waiting for it: the write
    // gives up at the deadline, as soon as the leader has heard from no
    // majority for `quorum_lost_after`, or when it stops leading (then
    // the caller tries the new leader).
    let lost_after = shared.quorum_lost_after;
    let quorum_lost = metrics.wait_for(|m| {
        m.current_leader != Some(shared.id)
            || m.millis_since_quorum_ack
                .is_some_and(|ms| Duration::from_millis(ms) > lost_after)
    });
    let written = tokio::select! {
        written = shared.raft.client_write(batch) => written,
        lost = quorum_lost => return match lost {
            Ok(m) if m.current_leader != Some(shared.id) => WriteReply::NotLeader(m.current_leader),
            Ok(_) => WriteReply::NoQuorum,
            Err(_) => WriteReply::Stopped,
        },
        _ = tokio::time::sleep_until(deadline) => return WriteReply::NoQuorum,
    };
    match written {
        Ok(written) => WriteReply::Applied(written.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
            WriteReply::NotLeader(to.leader_id)
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            // Not produced for a normal write; treated as a refusal to retry.
            tracing::warn!(error = %e, "ownership write refused by a membership change");
            WriteReply::NotLeader(None)
        }
        Err(RaftError::Fatal(e)) => {
            tracing::warn!(error = %e, "ownership write: Raft has stopped");
            WriteReply::Stopped
        }
    }
}

/// Sends `batch` to `leader` and waits for its reply until `deadline`.
async fn forward(
    shared: &Shared,
    leader: NodeId,
    addr: &str,
    batch: Batch,
    deadline: Instant,
) -> WriteReply {
    let ttl = deadline.saturating_duration_since(Instant::now());
    match shared
        .peers
        .link(leader, addr)
        .call(Request::Write(batch), ttl)
        .await
    {
        Ok(Response::Write(reply)) => reply,
        Ok(_) => WriteReply::NotLeader(None),
        Err(LinkError::Timeout { .. }) => WriteReply::NoQuorum,
        Err(e) => {
            tracing::debug!(error = %e, "ownership write: cannot reach the leader");
            WriteReply::NotLeader(None)
        }
    }
}

/// Gets `batch` committed by whichever node leads, following leader changes,
/// until the claim timeout.
pub(crate) async fn submit(shared: &Shared, batch: Batch) -> Result<BatchOutcome, OwnershipError> {
    let started = Instant::now();
    let deadline = started + shared.claim_timeout;
    let mut metrics = shared.raft.metrics();
    loop {
        let (leader, addr) = {
            let m = metrics.borrow_and_update();
            let leader = m.current_leader;
            let addr = leader.and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            (leader, addr)
        };
        let reply = match (leader, addr) {
            (Some(l), _) if l == shared.id => commit_here(shared, batch.clone(), deadline).await,
            (Some(l), Some(addr)) => forward(shared, l, &addr, batch.clone(), deadline).await,
            _ => WriteReply::NotLeader(None),
        };
        match reply {
            WriteReply::Applied(outcome) => return Ok(outcome),
            WriteReply::NoQuorum => return Err(OwnershipError::NoQuorum(started.elapsed())),
            WriteReply::Stopped => return Err(OwnershipError::Stopped),
            WriteReply::TooLarge => {
                return Err(OwnershipError::Raft(
                    "the leader refused an oversized batch".into(),
                ))
            }
            WriteReply::NotLeader(_) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(OwnershipError::NoQuorum(started.elapsed()));
                }
                // Wake on any change of this node's view (a leader elected),
                // or after a short pause for a link to come back.
                if let Ok(Err(_)) =
                    tokio::time::timeout_at(deadline.min(now + RETRY_PAUSE), metrics.changed())
                        .await
                {
                    return Err(OwnershipError::Stopped);
                }
            }
        }
    }
}
