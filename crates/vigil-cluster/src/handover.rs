//! A client that moves between nodes: the claim its CONNECT commits, then
//! the hand-over of its session from the node that held it.
//!
//! The new owner opens a short connection to the previous owner's cluster
//! address and sends one `HandOver` frame naming its claim (node, epoch);
//! the previous owner checks that claim is the current one once it has
//! applied it (a stale epoch is refused), closes its connection of the
//! client (DISCONNECT 0x8E), waits for its hand-back as a local takeover
//! does, and answers with the session (the store's records of it) when the
//! CONNECT resumes one, ending it there. The new owner puts it into its
//! broker before the CONNECT attaches, so the CONNACK says Session
//! Present = 1.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::{info, warn};
use vigil_broker::{Broker, ClaimFuture, ShippedSession};
use vigil_ownership::{Epoch, Owner};
use vigil_proto::time::Clock;

use crate::link::{read_frame, write_frames, LinkError};
use crate::node::Cluster;
use crate::wire::{Frame, HandOverReply};

/// How long a new owner waits for the previous one's answer: its check of
/// the claim (up to 2 s), its connection's hand-back, and the transfer.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// The future a CONNECT for `client_id` awaits on this node: the claim,
    /// then, if another node held the id, its hand-over (the session when
    /// `clean_start` is false).
    pub(crate) fn claim_and_hand_over(&self, client_id: &str, clean_start: bool) -> ClaimFuture {
        let ownership = self.ownership.clone();
        let broker = self.broker.clone();
        let node_id = self.node_id;
        // Addresses now, so the future holds no reference to the cluster.
        let members: Vec<(u64, SocketAddr)> = self
            .members
            .read()
            .iter()
            .map(|m| (m.node_id, m.cluster_addr))
            .collect();
        let client_id = client_id.to_owned();
        Box::pin(async move {
            let claimed = ownership.claim(&client_id).await?;
            let Some(previous) = claimed.previous.filter(|p| p.node != node_id) else {
                return Ok(claimed.epoch.0);
            };
            let Some(addr) = members
                .iter()
                .find(|(id, _)| *id == previous.node)
                .map(|(_, a)| *a)
            else {
                info!(client = %client_id, node = previous.node, "the previous owner is not a live member: a fresh session here");
                return Ok(claimed.epoch.0);
            };
            let request = Frame::HandOver {
                client_id: client_id.clone(),
                node: node_id,
                epoch: claimed.epoch.0,
                ship: !clean_start,
            };
            match tokio::time::timeout(HAND_OVER_TIMEOUT, request_hand_over(addr, request)).await {
                Ok(Ok(HandOverReply::Session(bytes))) => {
                    import(&broker, &client_id, bytes, previous.node)
                }
                Ok(Ok(HandOverReply::Nothing)) => {}
                Ok(Ok(HandOverReply::Refused(why))) => {
                    info!(client = %client_id, node = previous.node, %why, "hand-over refused");
                }
                Ok(Err(e)) => {
                    warn!(client = %client_id, node = previous.node, cause = %e, "hand-over failed: a fresh session here");
                }
                Err(_) => {
                    warn!(client = %client_id, node = previous.node, "hand-over timed out: a fresh session here");
                }
            }
            Ok(claimed.epoch.0)
        })
    }

    /// Answers a hand-over request for `client_id` from `node` at `epoch`.
    pub(crate) async fn answer_hand_over(
        &self,
        client_id: &str,
        node: u64,
        epoch: u64,
        ship: bool,
    ) -> HandOverReply {
        let owner = Owner {
            node,
            epoch: Epoch(epoch),
        };
        if let Err(why) = self.ownership.verify(client_id, owner).await {
            info!(client = client_id, %owner, %why, "hand-over request refused");
            return HandOverReply::Refused(why);
        }
        let Some(broker) = self.broker.upgrade() else {
            return HandOverReply::Nothing;
        };
        let Some(shipped) = vigil_broker::hand_over_session(&broker, client_id).await else {
            return HandOverReply::Nothing;
        };
        if !ship {
            return HandOverReply::Nothing;
        }
        match shipped.to_bytes() {
            Ok(bytes) => HandOverReply::Session(bytes),
            Err(e) => {
                warn!(client = client_id, cause = %e, "session could not be encoded for its hand-over");
                HandOverReply::Nothing
            }
        }
    }
}

/// Puts a shipped session into this node's broker.
fn import(broker: &Weak<Broker>, client_id: &str, bytes: bytes::Bytes, from: u64) {
    let Some(broker) = broker.upgrade() else {
        return;
    };
    match ShippedSession::from_bytes(bytes) {
        Ok(shipped) if shipped.record.client_id == client_id => {
            let deliveries = shipped.deliveries.len();
            if broker.import_session(Clock::now(), shipped) {
                info!(
                    client = client_id,
                    from_node = from,
                    deliveries,
                    "session handed over from another node"
                );
            }
        }
        Ok(other) => {
            warn!(client = client_id, shipped = %other.record.client_id, "hand-over answered with another client's session: ignored");
        }
        Err(e) => {
            warn!(client = client_id, from_node = from, cause = %e, "hand-over answered with a session that does not decode: a fresh session here");
        }
    }
}

/// Sends `request` to the node at `addr` on a connection of its own and
/// reads its answer.
async fn request_hand_over(addr: SocketAddr, request: Frame) -> Result<HandOverReply, LinkError> {
    #[cfg(feature = "fault-injection")]
    crate::fault::refuse(addr)?;
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    write_frames(&mut wr, &[request]).await?;
    let mut buf = BytesMut::new();
    match read_frame(&mut rd, &mut buf, None).await? {
        Some(Frame::HandedOver(reply)) => Ok(reply),
        Some(other) => Err(LinkError::Unexpected(format!(
            "{other:?} in answer to a hand-over"
        ))),
        None => Err(LinkError::Unexpected(
            "closed without answering a hand-over".into(),
        )),
    }
}
