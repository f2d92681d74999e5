//! Raft between ownership nodes over TCP: length-prefixed postcard frames
//! (`frame`), one persistent connection per peer (`peer`), and the
//! listener that answers them (`server`).

pub(crate) mod frame;
pub(crate) mod message;
pub(crate) mod peer;
pub(crate) mod server;

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes, RaftNetwork, RaftNetworkFactory};

use self::message::{Request, Response};
use self::peer::{LinkError, PeerLink, Peers};
use crate::types::{NodeId, TypeConfig};

/// Hands openraft a network client per target, all sharing [`Peers`].
pub(crate) struct NetworkFactory {
    pub(crate) local: NodeId,
    pub(crate) peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            local: self.local,
            target,
            link: self.peers.link(target, &node.addr),
        }
    }
}

/// openraft's view of one peer.
pub(crate) struct PeerNetwork {
    local: NodeId,
    target: NodeId,
    link: Arc<PeerLink>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerNetwork {
    /// Calls the peer and turns a transport failure into the `RPCError`
    /// openraft acts on (back off, retry, send fewer entries).
    async fn call<T, E: Error>(
        &self,
        request: Request,
        action: RPCTypes,
        ttl: Duration,
        entries: u64,
        unwrap: impl FnOnce(Response) -> Option<Result<T, RaftError<NodeId, E>>>,
    ) -> RpcResult<T, E> {
        let answer = self.link.call(request, ttl).await.map_err(|e| match e {
            LinkError::Unreachable { .. } | LinkError::Busy(_) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            LinkError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.local,
                target: self.target,
                timeout: ttl,
            }),
            LinkError::Frame {
                source: frame::FrameError::TooLarge(_),
                ..
            } if entries > 1 => {
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2))
            }
            LinkError::Closed(_) | LinkError::Frame { .. } => {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        match unwrap(answer) {
            Some(Ok(value)) => Ok(value),
            Some(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            None => Err(RPCError::Network(NetworkError::new(
                &std::io::Error::other("the peer answered a different request kind"),
            ))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let entries = rpc.entries.len() as u64;
        self.call(
            Request::AppendEntries(rpc),
            RPCTypes::AppendEntries,
            option.hard_ttl(),
            entries,
            |r| match r {
                Response::AppendEntries(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(
            Request::InstallSnapshot(rpc),
            RPCTypes::InstallSnapshot,
            option.hard_ttl(),
            0,
            |r| match r {
                Response::InstallSnapshot(r) => Some(r),
                _ => None,
            },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(
            Request::Vote(rpc),
            RPCTypes::Vote,
            option.hard_ttl(),
            0,
            |r| match r {
                Response::Vote(r) => Some(r),
                _ => None,
            },
        )
        .await
    }
}
