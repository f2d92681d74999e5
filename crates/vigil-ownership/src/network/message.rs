//! What ownership nodes say to each other: Raft's three RPCs, and a
//! follower's batch of claims forwarded to the leader.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::{Batch, BatchOutcome, NodeId, TypeConfig};

/// A request frame; `id` pairs it with its response on a connection that
/// carries many at once.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RequestFrame {
    pub(crate) id: u64,
    pub(crate) body: Request,
}

/// A response frame, with its request's `id`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResponseFrame {
    pub(crate) id: u64,
    pub(crate) body: Response,
}

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower's batch of claims and releases for the leader to commit.
    Write(Batch),
}

/// The answer to a [`Request`] of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Write(WriteReply),
}

/// How the receiver of a forwarded batch answered.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WriteReply {
    /// Committed and applied.
    Applied(BatchOutcome),
    /// The receiver is not the leader; it names the one it knows.
    NotLeader(Option<NodeId>),
    /// The receiver is the leader but could not commit in time.
    NoQuorum,
    /// The receiver's Raft has stopped.
    Stopped,
    /// The batch has more operations than an entry may carry (a peer of
    /// another version): refused, since epochs number at most 2^20 per entry.
    TooLarge,
}
