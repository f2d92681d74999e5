//! The node-to-node links. Each node opens one TCP connection to every
//! other live node (its *outbound* link, on the peer's cluster address) and
//! sends everything it forwards to that node over it; the peer answers with
//! cumulative acks on the same connection. So between two nodes there are
//! two connections, one per direction of traffic, and neither side ever has
//! to decide who dials whom.
//!
//! A `Peer` is one outbound link to one generation of one node: a FIFO of
//! frames not yet acknowledged (publishers' threads append, the link's task
//! writes them in batches), sequence numbers, and a watch channel of the
//! highest sequence number settled, which publishers' acks wait on. When a
//! connection breaks, the link reconnects and resends what was not
//! acknowledged; the receiver skips what it had applied already (it keeps
//! the highest sequence number applied per sender generation), so a message
//! is delivered once even across reconnects. When the node leaves the
//! membership, the link is retired: what it still held is given up and
//! settled, so no publisher waits for a node that is gone.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::wire::LinkMark;
use crate::wire::{Frame, Stamp, WireError};

/// Bytes a link holds (unacknowledged frames) before it drops QoS 0
/// messages. QoS 1/2 ones are always taken: their publishers wait for their
/// acks and so are held back by the link itself.
pub(crate) const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Bytes written to a link in one write at most, so its acks come back
/// while more is queued.
const WRITE_BATCH: usize = 256 * 1024;
/// Longest wait for a connection, or for the answer to `Hello`.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// One outbound link: to one generation of one node.
#[derive(Debug)]
pub(crate) struct Peer {
    /// The node's id.
    pub(crate) node_id: u64,
    /// The node's generation.
    pub(crate) generation: u64,
    /// Its cluster address.
    pub(crate) addr: SocketAddr,
    /// This link's number among this run's links (sequence numbers count
    /// per link: a node declared dead and back gets a fresh link).
    pub(crate) link: u64,
    queue: Mutex<Queue>,
    /// Something was queued (or the link retired).
    wake: Notify,
    /// Highest sequence number settled (accepted by the peer, or given up).
    settled: watch::Sender<u64>,
    retired: AtomicBool,
    /// Traffic figures.
    pub(crate) stats: LinkStats,
}

#[derive(Debug)]
struct Queue {
    /// Frames not yet acknowledged, in sequence order.
    frames: VecDeque<Queued>,
    /// How many of `frames` were written on the current connection.
    written: usize,
    bytes: usize,
    next_seq: u64,
    /// Where the replay of retained messages to this peer stands.
    sync: Option<SyncStage>,
}

#[derive(Debug)]
struct Queued {
    seq: u64,
    size: usize,
    frame: Frame,
}

/// Shared groups a node delivers a message to, as (group, filter).
pub(crate) type Groups = Vec<(String, String)>;

/// Queues one message for each of `targets` (with the shared groups each
/// delivers to), sent by node `me` (id, generation). With several targets
/// each frame names the others and the message's sequence number on their
/// links: those are taken with every target's queue locked at once, in the
/// order given (ascending node ids, the only order several are locked in),
/// so a message's place is the same on every link against every other
/// message sent to more than one node. Returns each target's sequence
/// number, None where it was dropped.
pub(crate) fn publish_to_all(
    me: (u64, u64),
    targets: Vec<(&Arc<Peer>, Groups)>,
    packet: &Bytes,
    droppable: bool,
) -> Vec<Option<u64>> {
    if targets.len() == 1 {
        return targets
            .into_iter()
            .map(|(p, groups)| p.send_publish(groups, Vec::new(), packet.clone(), droppable))
            .collect();
    }
    let size = packet.len() + 32 + 32 * targets.len();
    let mut queues: Vec<Option<parking_lot::MutexGuard<'_, Queue>>> = targets
        .iter()
        .map(|(p, _)| (!p.retired.load(Relaxed)).then(|| p.queue.lock()))
        .collect();
    let mut marks = Vec::with_capacity(targets.len());
    for ((peer, _), q) in targets.iter().zip(queues.iter_mut()) {
        let Some(queue) = q else { continue };
        if droppable && queue.bytes + size > QUEUE_BYTES {
            peer.stats.dropped_full.fetch_add(1, Relaxed);
            *q = None;
            continue;
        }
        marks.push((
            peer.node_id,
            LinkMark {
                node: me.0,
                generation: me.1,
                link: peer.link,
                seq: queue.next_seq,
            },
        ));
    }
    let mut seqs = Vec::with_capacity(targets.len());
    let mut wake = Vec::new();
    for ((peer, groups), q) in targets.into_iter().zip(queues.iter_mut()) {
        let Some(queue) = q else {
            seqs.push(None);
            continue;
        };
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.bytes += size;
        let also = marks
            .iter()
            .filter(|(_, m)| m.link != peer.link)
            .copied()
            .collect();
        queue.frames.push_back(Queued {
            seq,
            size,
            frame: Frame::Publish {
                seq,
                groups,
                also,
                packet: packet.clone(),
            },
        });
        if queue.written + 1 == queue.frames.len() {
            wake.push(peer);
        }
        seqs.push(Some(seq));
    }
    drop(queues);
    for peer in wake {
        peer.wake.notify_one();
    }
    seqs
}

/// The replay of every retained message to a peer that joined.
#[derive(Debug, Clone)]
pub(crate) enum SyncStage {
    /// Retained messages after this topic (None: from the first).
    Retained(Option<String>),
    /// Then the deletions this node knows of.
    Tombstones,
}

/// A link's counters.
#[derive(Debug, Default)]
pub(crate) struct LinkStats {
    /// Frames written (resent ones included).
    pub(crate) frames_out: AtomicU64,
    /// Bytes written.
    pub(crate) bytes_out: AtomicU64,
    /// Frames the peer acknowledged.
    pub(crate) frames_acked: AtomicU64,
    /// QoS 0 messages dropped because the link held `QUEUE_BYTES`.
    pub(crate) dropped_full: AtomicU64,
    /// Frames given up with the peer (it left the membership).
    pub(crate) given_up: AtomicU64,
    /// Connections made.
    pub(crate) connects: AtomicU64,
    /// Whether a connection is up.
    pub(crate) connected: AtomicBool,
}

impl Peer {
    /// A link to `node_id` (generation `generation`) at `addr`, with the
    /// replay of retained messages queued first.
    pub(crate) fn new(node_id: u64, generation: u64, addr: SocketAddr) -> Peer {
        static LINKS: AtomicU64 = AtomicU64::new(1);
        Peer {
            node_id,
            generation,
            addr,
            link: LINKS.fetch_add(1, Relaxed),
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                written: 0,
                bytes: 0,
                next_seq: 1,
                sync: Some(SyncStage::Retained(None)),
            }),
            wake: Notify::new(),
            settled: watch::channel(0).0,
            retired: AtomicBool::new(false),
            stats: LinkStats::default(),
        }
    }

    /// Where publishers wait for this link's acks.
    pub(crate) fn settled(&self) -> watch::Receiver<u64> {
        self.settled.subscribe()
    }

    /// Queues a message for the peer's subscribers (and the shared groups
    /// `groups`), naming the other nodes `also` sent it; returns its sequence number, or None if it was dropped
    /// (QoS 0 over the bound, or the link is retired).
    pub(crate) fn send_publish(
        &self,
        groups: Vec<(String, String)>,
        also: Vec<(u64, LinkMark)>,
        packet: Bytes,
        droppable: bool,
    ) -> Option<u64> {
        let size = packet.len() + 32 + 8 * also.len();
        self.push(size, droppable, |seq| Frame::Publish {
            seq,
            groups,
            also,
            packet,
        })
    }

    /// Queues a message for the sessions `clients` that moved to the peer
    /// (`direct`: the copy the peer had from the publisher's node).
    pub(crate) fn send_pass_on(
        &self,
        clients: Vec<String>,
        direct: Option<LinkMark>,
        packet: Bytes,
        droppable: bool,
    ) -> Option<u64> {
        let size = packet.len() + 64 + clients.iter().map(|c| c.len() + 2).sum::<usize>();
        self.push(size, droppable, |seq| Frame::PassOn {
            seq,
            clients,
            direct,
            packet,
        })
    }

    /// This link's place now: the last frame queued on it (sent by `me`).
    pub(crate) fn mark_now(&self, me: (u64, u64)) -> LinkMark {
        LinkMark {
            node: me.0,
            generation: me.1,
            link: self.link,
            seq: self.queue.lock().next_seq - 1,
        }
    }

    /// Queues a session handed over to the peer, behind what was queued
    /// before it.
    pub(crate) fn send_session(
        &self,
        client_id: String,
        marks: Vec<LinkMark>,
        shipped: Bytes,
    ) -> Option<u64> {
        let size = shipped.len() + 64 + client_id.len() + 32 * marks.len();
        self.push(size, false, |seq| Frame::Session {
            seq,
            client_id,
            marks,
            shipped,
        })
    }

    /// Queues a retained message (or deletion) for the peer to store.
    pub(crate) fn send_retain(&self, stamp: Stamp, packet: Bytes) -> Option<u64> {
        let size = packet.len() + 32;
        self.push(size, false, |seq| Frame::Retain { seq, stamp, packet })
    }

    /// Queues the news that this node is stopping, behind everything
    /// queued before it; its ack says the peer stopped forwarding here.
    pub(crate) fn send_leave(&self) -> Option<u64> {
        self.push(32, false, |seq| Frame::Leave { seq })
    }

    fn push(&self, size: usize, droppable: bool, frame: impl FnOnce(u64) -> Frame) -> Option<u64> {
        if self.retired.load(Relaxed) {
            return None;
        }
        let (seq, idle) = {
            let mut q = self.queue.lock();
            if droppable && q.bytes + size > QUEUE_BYTES {
                drop(q);
                self.stats.dropped_full.fetch_add(1, Relaxed);
                return None;
            }
            let seq = q.next_seq;
            q.next_seq += 1;
            q.bytes += size;
            q.frames.push_back(Queued {
                seq,
                size,
                frame: frame(seq),
            });
            (seq, q.written + 1 == q.frames.len())
        };
        if idle {
            self.wake.notify_one();
        }
        Some(seq)
    }

    /// The peer accepted every frame up to `seq`.
    fn acked(&self, seq: u64) {
        let mut q = self.queue.lock();
        let mut n = 0;
        while q.frames.front().is_some_and(|f| f.seq <= seq) {
            if let Some(f) = q.frames.pop_front() {
                q.bytes -= f.size;
                n += 1;
            }
        }
        q.written = q.written.saturating_sub(n);
        drop(q);
        self.stats.frames_acked.fetch_add(n as u64, Relaxed);
        self.settled.send_if_modified(|s| {
            let moved = seq > *s;
            *s = (*s).max(seq);
            moved
        });
    }

    /// Gives up everything queued and stops the link: the node left.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Relaxed);
        let mut q = self.queue.lock();
        let n = q.frames.len() as u64;
        q.frames.clear();
        q.bytes = 0;
        q.written = 0;
        drop(q);
        self.stats.given_up.fetch_add(n, Relaxed);
        self.settled.send_replace(u64::MAX);
        self.wake.notify_one();
    }

    /// True once retired.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Relaxed)
    }

    fn has_unwritten(&self) -> bool {
        let q = self.queue.lock();
        q.written < q.frames.len()
    }

    /// Frames queued or waiting for their ack.
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().frames.len()
    }

    /// The next frames to write (up to `WRITE_BATCH` bytes), marked written.
    fn next_batch(&self) -> Vec<Frame> {
        let mut q = self.queue.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(f) = q.frames.get(q.written) {
            if bytes > 0 && bytes + f.size > WRITE_BATCH {
                break;
            }
            bytes += f.size;
            out.push(f.frame.clone());
            q.written += 1;
        }
        out
    }

    /// Takes the replay stage to run next, when everything queued is written.
    pub(crate) fn take_sync(&self) -> Option<SyncStage> {
        let mut q = self.queue.lock();
        if q.written < q.frames.len() {
            return None;
        }
        q.sync.take()
    }

    /// Where the replay goes on from next time.
    pub(crate) fn set_sync(&self, stage: Option<SyncStage>) {
        self.queue.lock().sync = stage;
    }
}

/// Why a connection of a link ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something malformed.
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The peer sent a frame that has no place here.
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Reads the next frame, reading the socket as needed (and adding what it
/// read to `bytes_in`, if given); None at a clean end.
pub(crate) async fn read_frame(
    stream: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    bytes_in: Option<&AtomicU64>,
) -> Result<Option<Frame>, LinkError> {
    loop {
        if let Some(frame) = Frame::decode(buf)? {
            return Ok(Some(frame));
        }
        buf.reserve(64 * 1024);
        let n = stream.read_buf(buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(counter) = bytes_in {
            counter.fetch_add(n as u64, Relaxed);
        }
    }
}

/// Writes `frames` with one write.
pub(crate) async fn write_frames(
    stream: &mut OwnedWriteHalf,
    frames: &[Frame],
) -> Result<usize, LinkError> {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode(&mut out);
    }
    stream.write_all(&out).await?;
    Ok(out.len())
}

/// The outbound side of one connection of a link: says hello, learns what
/// the peer applied already, then writes queued frames as they come while
/// the reading half takes acks. Returns when the connection ends.
pub(crate) async fn run_connection(
    peer: &Peer,
    me: (u64, u64),
    refill: &(dyn Fn(&Peer) + Sync),
) -> Result<(), LinkError> {
    #[cfg(feature = "fault-injection")]
    crate::fault::refuse(peer.addr)?;
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(peer.addr))
        .await
        .map_err(|_| LinkError::Timeout(HANDSHAKE_TIMEOUT))??;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let hello = Frame::Hello {
        node_id: me.0,
        generation: me.1,
        link: peer.link,
    };
    write_frames(&mut wr, &[hello]).await?;
    let mut buf = BytesMut::new();
    let welcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut rd, &mut buf, None))
        .await
        .map_err(|_| LinkError::Timeout(HANDSHAKE_TIMEOUT))??;
    match welcome {
        Some(Frame::Welcome { applied }) => peer.acked(applied),
        other => {
            return Err(LinkError::Unexpected(format!(
                "{other:?} instead of welcome"
            )))
        }
    }
    // Everything not acknowledged goes again on this connection.
    peer.queue.lock().written = 0;
    peer.stats.connects.fetch_add(1, Relaxed);
    peer.stats.connected.store(true, Relaxed);
    info!(node = peer.node_id, addr = %peer.addr, "cluster link up");
    let reading = async {
        loop {
            match read_frame(&mut rd, &mut buf, None).await? {
                Some(Frame::Ack { seq }) => peer.acked(seq),
                Some(other) => {
                    return Err(LinkError::Unexpected(format!(
                        "{other:?} on an outbound link"
                    )))
                }
                None => return Ok::<(), LinkError>(()),
            }
        }
    };
    let writing = async {
        loop {
            let woken = peer.wake.notified();
            if peer.is_retired() {
                return Ok::<(), LinkError>(());
            }
            let batch = peer.next_batch();
            if batch.is_empty() {
                refill(peer);
                if peer.has_unwritten() {
                    continue;
                }
                woken.await;
                continue;
            }
            let n = write_frames(&mut wr, &batch).await?;
            peer.stats.frames_out.fetch_add(batch.len() as u64, Relaxed);
            peer.stats.bytes_out.fetch_add(n as u64, Relaxed);
        }
    };
    #[cfg(not(feature = "fault-injection"))]
    let result = tokio::select! {
        r = reading => r,
        r = writing => r,
    };
    // Closed when the peer is cut off: its acks stop too (and, the other
    // node's switch set alike, its inbound link here ends with its own).
    #[cfg(feature = "fault-injection")]
    let result = tokio::select! {
        r = reading => r,
        r = writing => r,
        e = crate::fault::cut(peer.addr) => Err(LinkError::Io(e)),
    };
    peer.stats.connected.store(false, Relaxed);
    result
}

/// Keeps a link connected until it is retired, reconnecting after a
/// failure with a growing pause (100 ms to 1 s).
pub(crate) async fn run_peer(
    peer: Arc<Peer>,
    me: (u64, u64),
    refill: Arc<dyn Fn(&Peer) + Send + Sync>,
) {
    let mut pause = Duration::from_millis(100);
    while !peer.is_retired() {
        match run_connection(&peer, me, &*refill).await {
            Ok(()) => debug!(node = peer.node_id, "cluster link closed"),
            Err(e) => {
                if peer.stats.connects.load(Relaxed) > 0 || pause >= Duration::from_secs(1) {
                    warn!(node = peer.node_id, addr = %peer.addr, cause = %e, "cluster link down; reconnecting");
                } else {
                    debug!(node = peer.node_id, addr = %peer.addr, cause = %e, "cluster link not up yet");
                }
            }
        }
        if peer.is_retired() {
            break;
        }
        // Back-off between connection attempts to a node that is down.
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = peer.wake.notified() => {}
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    info!(
        node = peer.node_id,
        generation = peer.generation,
        "cluster link retired"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer::new(2, 1, "127.0.0.1:1".parse().unwrap())
    }

    #[test]
    fn acks_settle_in_order_and_retiring_settles_everything() {
        let p = peer();
        let rx = p.settled();
        let seqs: Vec<u64> = (0..3)
            .map(|_| {
                p.send_publish(Vec::new(), Vec::new(), Bytes::from_static(b"x"), false)
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(p.next_batch().len(), 3);
        p.acked(2);
        assert_eq!(*rx.borrow(), 2);
        assert_eq!(p.queued(), 1);
        p.retire();
        assert_eq!(*rx.borrow(), u64::MAX);
        assert_eq!(p.stats.given_up.load(Relaxed), 1);
        assert_eq!(
            p.send_publish(Vec::new(), Vec::new(), Bytes::new(), false),
            None
        );
    }

    #[test]
    fn unacknowledged_frames_are_written_again_after_a_reconnect() {
        let p = peer();
        for _ in 0..3 {
            p.send_publish(Vec::new(), Vec::new(), Bytes::from_static(b"x"), false);
        }
        assert_eq!(p.next_batch().len(), 3);
        assert!(p.next_batch().is_empty());
        p.acked(1);
        // What a new connection does once the peer said what it applied.
        p.queue.lock().written = 0;
        let again: Vec<u64> = p
            .next_batch()
            .iter()
            .map(|f| match f {
                Frame::Publish { seq, .. } => *seq,
                _ => 0,
            })
            .collect();
        assert_eq!(again, vec![2, 3]);
    }

    #[test]
    fn qos0_is_dropped_over_the_bound_and_qos1_is_not() {
        let p = peer();
        let big = Bytes::from(vec![0u8; QUEUE_BYTES]);
        assert!(p
            .send_publish(Vec::new(), Vec::new(), big.clone(), false)
            .is_some());
        assert!(p
            .send_publish(Vec::new(), Vec::new(), Bytes::from_static(b"x"), true)
            .is_none());
        assert_eq!(p.stats.dropped_full.load(Relaxed), 1);
        assert!(p
            .send_publish(Vec::new(), Vec::new(), Bytes::from_static(b"x"), false)
            .is_some());
    }
}
