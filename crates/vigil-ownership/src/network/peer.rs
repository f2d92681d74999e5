//! The outgoing side: one persistent TCP connection per peer, shared by
//! replication, elections and forwarded claims, opened again when it fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::frame::{self, FrameError};
use super::message::{Request, RequestFrame, Response, ResponseFrame};
use crate::types::NodeId;

/// Frames waiting to be written to one peer; a caller that finds it full
/// is told so at once instead of waiting behind a stalled peer.
const WRITE_QUEUE: usize = 256;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// No connection could be made.
    #[error("cannot connect to node {target} at {addr}: {reason}")]
    Unreachable {
        target: NodeId,
        addr: String,
        reason: String,
    },
    /// The connection closed before the answer came.
    #[error("connection to node {0} closed")]
    Closed(NodeId),
    /// The answer did not come within the call's limit.
    #[error("node {target} did not answer within {after:?}")]
    Timeout { target: NodeId, after: Duration },
    /// Too many frames are already waiting for this peer.
    #[error("the queue to node {0} is full")]
    Busy(NodeId),
    /// The request cannot be sent as one frame.
    #[error("request to node {target}: {source}")]
    Frame { target: NodeId, source: FrameError },
}

/// Whether a peer's address is cut off: vigil-cluster's test-only fault
/// injection sets one to simulate a partition between live nodes.
#[derive(Clone)]
pub struct PeerFilter(Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>);

impl PeerFilter {
    /// A filter that cuts off the addresses for which `blocked` is true.
    pub fn new(blocked: impl Fn(SocketAddr) -> bool + Send + Sync + 'static) -> PeerFilter {
        PeerFilter(Arc::new(blocked))
    }

    /// True when `addr` (a Raft address; one that is not `ip:port` never
    /// is) is cut off now.
    fn blocks(&self, addr: &str) -> bool {
        addr.parse().is_ok_and(|a| (self.0)(a))
    }
}

impl std::fmt::Debug for PeerFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerFilter")
    }
}

/// The connections of one node to its peers, by peer id.
#[derive(Default)]
pub(crate) struct Peers {
    links: Mutex<HashMap<NodeId, Arc<PeerLink>>>,
    connect_timeout: Duration,
    filter: Option<PeerFilter>,
}

impl Peers {
    /// No connections yet; each is opened on first use. `filter`, if any,
    /// refuses calls to the peers it cuts off.
    pub(crate) fn new(connect_timeout: Duration, filter: Option<PeerFilter>) -> Peers {
        Peers {
            links: Mutex::default(),
            connect_timeout,
            filter,
        }
    }

    /// The link to `target` at `addr`; a new address (a node that moved)
    /// replaces the old link.
    pub(crate) fn link(&self, target: NodeId, addr: &str) -> Arc<PeerLink> {
        let mut links = self.links.lock();
        if let Some(link) = links.get(&target) {
            if link.addr == addr {
                return link.clone();
            }
        }
        let link = Arc::new(PeerLink::new(
            target,
            addr.to_owned(),
            self.connect_timeout,
            self.filter.clone(),
        ));
        links.insert(target, link.clone());
        link
    }

    /// Closes every connection (the node is stopping).
    pub(crate) fn close_all(&self) {
        self.links.lock().clear();
    }
}

/// The persistent connection to one peer, and how to open it again.
pub(crate) struct PeerLink {
    target: NodeId,
    addr: String,
    connect_timeout: Duration,
    next_id: AtomicU64,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    filter: Option<PeerFilter>,
}

/// One open connection: its writer's queue and the calls awaiting answers.
struct Conn {
    writes: mpsc::Sender<Vec<u8>>,
    pending: Arc<Pending>,
    tasks: [AbortHandle; 2],
}

/// Calls awaiting their answer on one connection, by frame id.
#[derive(Default)]
struct Pending {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    closed: AtomicBool,
}

impl Pending {
    /// Marks the connection dead and fails every waiting call (their
    /// senders are dropped).
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waiting.lock().clear();
    }
}

impl Conn {
    /// Ends the connection now, failing the calls that wait on it.
    fn shut(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.pending.close();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shut();
    }
}

impl PeerLink {
    fn new(
        target: NodeId,
        addr: String,
        connect_timeout: Duration,
        filter: Option<PeerFilter>,
    ) -> PeerLink {
        PeerLink {
            target,
            addr,
            connect_timeout,
            next_id: AtomicU64::new(1),
            conn: tokio::sync::Mutex::new(None),
            filter,
        }
    }

    /// With a filter that cuts this peer off now: the open connection is
    /// shut (so nothing more comes back on it either) and the call fails
    /// as if the peer were unreachable.
    async fn cut_off(&self) -> Result<(), LinkError> {
        let Some(filter) = &self.filter else {
            return Ok(());
        };
        if !filter.blocks(&self.addr) {
            return Ok(());
        }
        if let Some(conn) = self.conn.lock().await.take() {
            conn.shut();
        }
        Err(LinkError::Unreachable {
            target: self.target,
            addr: self.addr.clone(),
            reason: "cut off by the peer filter".into(),
        })
    }

    /// Sends `request` and waits up to `ttl` for its answer.
    pub(crate) async fn call(
        &self,
        request: Request,
        ttl: Duration,
    ) -> Result<Response, LinkError> {
        if self.filter.is_some() {
            self.cut_off().await?;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = frame::encode(&RequestFrame { id, body: request }).map_err(|source| {
            LinkError::Frame {
                target: self.target,
                source,
            }
        })?;
        let deadline = tokio::time::Instant::now() + ttl;
        let timed_out = || LinkError::Timeout {
            target: self.target,
            after: ttl,
        };
        let conn = tokio::time::timeout_at(deadline, self.connection())
            .await
            .map_err(|_| timed_out())??;
        let (tx, rx) = oneshot::channel();
        conn.pending.waiting.lock().insert(id, tx);
        if conn.pending.closed.load(Ordering::Acquire) {
            // Closed between the lookup and the insert: nothing will answer.
            conn.pending.waiting.lock().remove(&id);
            return Err(LinkError::Closed(self.target));
        }
        if let Err(e) = conn.writes.try_send(bytes) {
            conn.pending.waiting.lock().remove(&id);
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => LinkError::Busy(self.target),
                mpsc::error::TrySendError::Closed(_) => LinkError::Closed(self.target),
            });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            // An answer that raced a cut is dropped like the connection.
            Ok(Ok(_)) if self.filter.is_some() && self.cut_off().await.is_err() => {
                Err(LinkError::Closed(self.target))
            }
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(LinkError::Closed(self.target)),
            Err(_) => {
                conn.pending.waiting.lock().remove(&id);
                Err(timed_out())
            }
        }
    }

    /// The open connection, or a new one.
    async fn connection(&self) -> Result<Arc<Conn>, LinkError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.pending.closed.load(Ordering::Acquire) {
                return Ok(conn.clone());
            }
        }
        *slot = None;
        let unreachable = |reason: String| LinkError::Unreachable {
            target: self.target,
            addr: self.addr.clone(),
            reason,
        };
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.addr),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {:?}",
                    self.connect_timeout
                )))
            }
        };
        // Raft messages are small and latency-bound.
        let _ = stream.set_nodelay(true);
        tracing::debug!(target_node = self.target, addr = %self.addr, "ownership link connected");
        let (read, write) = stream.into_split();
        let pending = Arc::new(Pending::default());
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let reader = tokio::spawn(read_answers(self.target, read, pending.clone()));
        let writer = tokio::spawn(write_requests(self.target, write, queue, pending.clone()));
        let conn = Arc::new(Conn {
            writes,
            pending,
            tasks: [reader.abort_handle(), writer.abort_handle()],
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// Hands each answer to its caller until the connection ends.
async fn read_answers(target: NodeId, mut read: OwnedReadHalf, pending: Arc<Pending>) {
    loop {
        let payload = match frame::read_payload(&mut read).await {
            Ok(Some(payload)) => payload,
            Ok(None) => {
                tracing::debug!(target_node = target, "ownership link closed by the peer");
                break;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!(target_node = target, error = %e, "ownership link failed");
                break;
            }
            Err(e) => {
                tracing::warn!(target_node = target, error = %e, "ownership link: bad frame from the peer; closing");
                break;
            }
        };
        match frame::decode::<ResponseFrame>(&payload) {
            Ok(answer) => {
                if let Some(caller) = pending.waiting.lock().remove(&answer.id) {
                    // The caller may have given up: nothing to do then.
                    let _ = caller.send(answer.body);
                }
            }
            Err(e) => {
                tracing::warn!(target_node = target, error = %e, "ownership link: bad frame from the peer; closing");
                break;
            }
        }
    }
    pending.close();
}

/// Writes queued requests until the connection or the link ends.
async fn write_requests(
    target: NodeId,
    mut write: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Vec<u8>>,
    pending: Arc<Pending>,
) {
    if let Err(e) = frame::write_frames(&mut write, &mut queue).await {
        tracing::debug!(target_node = target, error = %e, "ownership link: write failed");
    }
    pending.close();
}
