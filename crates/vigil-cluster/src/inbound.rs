//! The receiving side of links: a node that forwards to this one opens a
//! connection, says who it is, learns what this node applied from it
//! already, and streams frames; this node delivers them to its local
//! subscribers (never forwarding them again), stores retained writes that
//! win, and acknowledges each batch once it is accepted: queued for every
//! subscriber, and written to the store where a persistent session or a
//! retained message needs it (when the store acknowledges only what is
//! durable).
//!
//! All of it runs on the cluster's own thread, so a busy link takes no time
//! from the workers that answer PINGREQs; what it hands them is bounded by
//! the subscribers' own queues.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};
use vigil_broker::{Broker, ForwardedBatch};
use vigil_proto::time::Clock;

use crate::arrivals::LinkKey;
use crate::link::{read_frame, write_frames, LinkError, HANDSHAKE_TIMEOUT};
use crate::node::Cluster;
use crate::origin;
use crate::wire::{decode_message, Frame, HandOverReply, WireError};

/// Frames applied per acknowledgement at most.
const APPLY_BATCH: usize = 1024;
/// How long a previous owner waits for the new one to say it imported a
/// shipped session before passing on what it held for it anyway.
const HAND_OVER_DONE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What one node sent here, over all its links and generations.
#[derive(Debug, Default)]
pub(crate) struct InboundStats {
    /// Frames received.
    pub(crate) frames: AtomicU64,
    /// Bytes received.
    pub(crate) bytes: AtomicU64,
}

impl Cluster {
    /// Serves one inbound connection until it ends; a malformed frame
    /// closes it with a log line.
    pub(crate) async fn serve_link(self: Arc<Self>, stream: TcpStream, from: SocketAddr) {
        match self.receive(stream).await {
            Ok(()) => debug!(peer = %from, "cluster link closed by its sender"),
            Err(e @ (LinkError::Wire(_) | LinkError::Unexpected(_))) => {
                self.counters.bad_links.fetch_add(1, Relaxed);
                warn!(peer = %from, cause = %e, "cluster link closed: the peer broke the link protocol");
            }
            Err(e) => debug!(peer = %from, cause = %e, "cluster link closed"),
        }
    }

    async fn receive(&self, stream: TcpStream) -> Result<(), LinkError> {
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let mut buf = BytesMut::new();
        let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut rd, &mut buf, None))
            .await
            .map_err(|_| LinkError::Timeout(HANDSHAKE_TIMEOUT))??;
        let key = match hello {
            Some(Frame::Hello {
                node_id,
                generation,
                link,
            }) => (node_id, generation, link),
            Some(Frame::HandOver {
                client_id,
                node,
                epoch,
                ship,
            }) => {
                let reply = self.answer_hand_over(&client_id, node, epoch, ship).await;
                let shipped = matches!(reply, HandOverReply::Session(..));
                let written = write_frames(&mut wr, &[Frame::HandedOver(reply)]).await;
                if shipped {
                    // Whatever the new owner says (or if it says nothing in
                    // time), what was held for it goes now.
                    let _ = tokio::time::timeout(
                        HAND_OVER_DONE_WAIT,
                        read_frame(&mut rd, &mut buf, None),
                    )
                    .await;
                    let peers = self.peers.read();
                    self.moved.imported(&client_id, node, |to, relay| {
                        self.send_relay(&peers, to, relay)
                    });
                }
                return written.map(drop);
            }
            Some(other) => return Err(LinkError::Unexpected(format!("{other:?} before hello"))),
            None => return Ok(()),
        };
        let (node, generation, _) = key;
        let mut applied = {
            let mut map = self.applied.lock();
            // A node has one link to this one: its earlier links (and
            // generations) will not send again.
            map.retain(|k, _| k.0 != node || *k == key);
            map.get(&key).copied().unwrap_or(0)
        };
        write_frames(&mut wr, &[Frame::Welcome { applied }]).await?;
        info!(node, generation, "cluster link from node up");
        let stats = self.inbound.lock().entry(node).or_default().clone();
        loop {
            let Some(first) = read_frame(&mut rd, &mut buf, Some(&stats.bytes)).await? else {
                return Ok(());
            };
            let mut frames = vec![first];
            while frames.len() < APPLY_BATCH {
                match Frame::decode(&mut buf)? {
                    Some(f) => frames.push(f),
                    None => break,
                }
            }
            stats.frames.fetch_add(frames.len() as u64, Relaxed);
            let last = self.apply(frames, applied, key).await?;
            if last > applied {
                applied = last;
                self.applied.lock().insert(key, applied);
                write_frames(&mut wr, &[Frame::Ack { seq: applied }]).await?;
            }
        }
    }

    /// Applies frames from link `key` (sender node, generation, link) in
    /// order, skipping those up to `applied` (resent after a reconnect);
    /// returns the last sequence number applied.
    async fn apply(
        &self,
        frames: Vec<Frame>,
        applied: u64,
        key: LinkKey,
    ) -> Result<u64, LinkError> {
        let Some(broker) = self.broker.upgrade() else {
            return Ok(applied);
        };
        let clock = Clock::now();
        let (batch, last) = self.deliver_frames(&broker, frames, applied, key, clock)?;
        // A full subscriber queue holds the link as it would hold a local
        // publisher: bounded by the slow-consumer wait.
        let ticket = batch.finish(&broker).await;
        if let (Some(ticket), Some(store)) = (ticket, broker.store()) {
            if store.acks_wait() {
                store.durable(ticket).await.map_err(|e| {
                    LinkError::Io(std::io::Error::other(format!("store failed: {e}")))
                })?;
            }
        }
        Ok(last)
    }

    /// Delivers (or stores) what `frames` carry, in order, as one batch;
    /// the batch to finish and the last sequence number applied.
    fn deliver_frames(
        &self,
        broker: &Broker,
        frames: Vec<Frame>,
        applied: u64,
        key: LinkKey,
        clock: Clock,
    ) -> Result<(ForwardedBatch, u64), LinkError> {
        let now = clock.instant;
        let mut batch = ForwardedBatch::new(clock);
        let mut last = applied;
        // Held while the batch is delivered: a session arriving from
        // another node comes in before or after it, never within.
        let mut delivered = self.arrivals.delivered();
        for frame in frames {
            match frame {
                Frame::Publish {
                    seq,
                    groups,
                    also,
                    packet,
                } => {
                    if seq <= last {
                        continue;
                    }
                    let message = decode_message(packet, now)?;
                    self.moved.note_also(&also);
                    let arrivals = &self.arrivals;
                    origin::with_forwarded(mark(key, seq), also, || {
                        if arrivals.is_empty() {
                            batch.deliver(broker, message, &groups);
                        } else {
                            let take = |c: &str| arrivals.takes_direct(c, key, seq);
                            batch.deliver_selected(broker, message, &groups, &take);
                        }
                    });
                    self.counters.received.fetch_add(1, Relaxed);
                    last = seq;
                }
                Frame::PassOn {
                    seq,
                    clients,
                    direct,
                    packet,
                } => {
                    if seq <= last {
                        continue;
                    }
                    let message = decode_message(packet, now)?;
                    let take = |c: &str| {
                        clients.iter().any(|x| x == c) && self.arrivals.takes_passed_on(c, direct)
                    };
                    // Passed on again (the session moved on meanwhile) with
                    // the direct copy unknown: that node had none from here.
                    origin::with_forwarded(mark(key, seq), Vec::new(), || {
                        batch.deliver_selected(broker, message, &[], &take)
                    });
                    self.counters.received.fetch_add(1, Relaxed);
                    last = seq;
                }
                Frame::Session {
                    seq,
                    client_id,
                    marks,
                    shipped,
                } => {
                    if seq <= last {
                        continue;
                    }
                    // With the links' deliveries held: the session arrives
                    // after every message before it on this link.
                    // Local publishes are routed wholly before the import or
                    // wholly after it; and this node's own link to the
                    // sender: a message published here before the import
                    // that the sender passes back was queued on it before
                    // this point.
                    let paused = broker.pause_routing();
                    crate::handover::import_into(broker, &client_id, shipped, key.0);
                    let own = self
                        .peers
                        .read()
                        .get(&key.0)
                        .map(|p| p.mark_now((self.node_id, self.generation)));
                    drop(paused);
                    self.arrivals.arrive_on_link(
                        &delivered,
                        (key, last),
                        own,
                        &client_id,
                        &marks,
                        std::time::Instant::now(),
                    );
                    last = seq;
                }
                Frame::Retain { seq, stamp, packet } => {
                    if seq <= last {
                        continue;
                    }
                    let message = decode_message(packet, now)?;
                    if !message.retain {
                        return Err(LinkError::Wire(WireError::Publish(
                            "a retained write without the retain flag".into(),
                        )));
                    }
                    batch.add_ticket(self.apply_retained(broker, message, stamp, clock));
                    last = seq;
                }
                Frame::Leave { seq } => {
                    if seq <= last {
                        continue;
                    }
                    self.node_leaving(key.0, key.1);
                    last = seq;
                }
                other => {
                    return Err(LinkError::Unexpected(format!(
                        "{other:?} on an inbound link"
                    )))
                }
            }
        }
        if last > applied {
            delivered.insert(key, last);
        }
        Ok((batch, last))
    }
}

/// The place of frame `seq` on link `key`.
fn mark(key: LinkKey, seq: u64) -> crate::wire::LinkMark {
    crate::wire::LinkMark {
        node: key.0,
        generation: key.1,
        link: key.2,
        seq,
    }
}
