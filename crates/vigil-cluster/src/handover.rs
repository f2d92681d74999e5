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
//! Present = 1, and says so (`HandOverDone`). The previous owner keeps
//! passing on the session's messages for a while (`moved`): until the
//! cluster has learnt the new owner's routes, messages still come to it.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::tcp::OwnedWriteHalf;
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
        let arrivals = self.arrivals.clone();
        let node_id = self.node_id;
        // Addresses now, so the future holds no reference to the cluster.
        let members: Vec<(u64, SocketAddr)> = self
            .members
            .read()
            .iter()
            .map(|m| (m.node_id, m.cluster_addr))
            .collect();
        // The client is back: a session of it that moved away from here
        // earlier is not passed on any more.
        if let (Some(old), Some(b)) = (self.moved.remove(client_id), broker.upgrade()) {
            b.end_moved(Clock::now(), &old);
        }
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
            let started = tokio::time::Instant::now();
            let arrived = arrivals.expect(&client_id);
            let answer =
                tokio::time::timeout(HAND_OVER_TIMEOUT, request_hand_over(addr, request)).await;
            match answer {
                Ok(Ok((HandOverReply::OnLink, mut wr))) => {
                    // Imported by the link, in order with what the old
                    // owner forwarded here before it.
                    let deadline = started + HAND_OVER_TIMEOUT;
                    if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                        warn!(client = %client_id, node = previous.node, "the handed-over session did not arrive in time: a fresh session here");
                    }
                    let _ = write_frames(&mut wr, &[Frame::HandOverDone]).await;
                }
                Ok(Ok((HandOverReply::Session(bytes, marks), mut wr))) => {
                    arrivals.arrive(&client_id, &marks, std::time::Instant::now(), || {
                        import(&broker, &client_id, bytes, previous.node)
                    });
                    // The old owner holds what it would pass on to this
                    // node until it reads this.
                    let _ = write_frames(&mut wr, &[Frame::HandOverDone]).await;
                }
                Ok(Ok((HandOverReply::Nothing, _))) => {}
                Ok(Ok((HandOverReply::Refused(why), _))) => {
                    info!(client = %client_id, node = previous.node, %why, "hand-over refused");
                }
                Ok(Err(e)) => {
                    warn!(client = %client_id, node = previous.node, cause = %e, "hand-over failed: a fresh session here");
                }
                Err(_) => {
                    warn!(client = %client_id, node = previous.node, "hand-over timed out: a fresh session here");
                }
            }
            arrivals.stop_expecting(&client_id);
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
        // Ready before the export: from its seal on, deliveries to the
        // session come back to this node's hook, to be passed on.
        if ship {
            if let Some(old) = self.moved.prepare(client_id, node, Instant::now()) {
                broker.end_moved(Clock::now(), &old);
            }
        }
        let Some((shipped, session)) = vigil_broker::hand_over_session(&broker, client_id).await
        else {
            if let Some(old) = self.moved.remove(client_id) {
                broker.end_moved(Clock::now(), &old);
            }
            return HandOverReply::Nothing;
        };
        if !ship {
            broker.end_moved(Clock::now(), &session);
            return HandOverReply::Nothing;
        }
        let filters: Vec<String> = shipped
            .record
            .subscriptions
            .iter()
            .map(|s| s.filter.clone())
            .collect();
        self.moved.exported(client_id, session, &filters);
        // Taken with the export, no await between: the links' deliveries
        // here wait for this task, so these are what the session holds.
        let marks = self.moved.also_seen_by(node);
        match shipped.to_bytes() {
            Ok(bytes) => {
                // On the link when there is one: behind every message this
                // node forwarded there before the seal, ahead of every one
                // after it, so the new node sees each direct copy on the
                // right side of the session's arrival.
                let peer = self.peers.read().get(&node).cloned();
                let queued = peer.is_some_and(|p| {
                    p.send_session(client_id.to_owned(), marks.clone(), bytes.clone())
                        .is_some()
                });
                if queued {
                    // What was held for it goes behind it on the same link.
                    let peers = self.peers.read();
                    self.moved.imported(client_id, node, |to, relay| {
                        self.send_relay(&peers, to, relay)
                    });
                    HandOverReply::OnLink
                } else {
                    HandOverReply::Session(bytes, marks)
                }
            }
            Err(e) => {
                warn!(client = client_id, cause = %e, "session could not be encoded for its hand-over");
                HandOverReply::Nothing
            }
        }
    }
}

/// Puts a shipped session into this node's broker.
fn import(broker: &Weak<Broker>, client_id: &str, bytes: bytes::Bytes, from: u64) {
    if let Some(broker) = broker.upgrade() {
        import_into(&broker, client_id, bytes, from);
    }
}

/// Puts a session node `from` shipped into `broker`.
pub(crate) fn import_into(broker: &Broker, client_id: &str, bytes: bytes::Bytes, from: u64) {
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
/// reads its answer; the connection's writing half is returned for the
/// last word (`HandOverDone`).
async fn request_hand_over(
    addr: SocketAddr,
    request: Frame,
) -> Result<(HandOverReply, OwnedWriteHalf), LinkError> {
    #[cfg(feature = "fault-injection")]
    crate::fault::refuse(addr)?;
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    write_frames(&mut wr, &[request]).await?;
    let mut buf = BytesMut::new();
    match read_frame(&mut rd, &mut buf, None).await? {
        Some(Frame::HandedOver(reply)) => Ok((reply, wr)),
        Some(other) => Err(LinkError::Unexpected(format!(
            "{other:?} in answer to a hand-over"
        ))),
        None => Err(LinkError::Unexpected(
            "closed without answering a hand-over".into(),
        )),
    }
}
