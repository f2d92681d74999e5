//! Group commit: one writer thread owns the backend. Connections submit
//! changes and get a ticket; the writer takes everything submitted since its
//! last commit, commits it as one transaction, and then wakes every waiter
//! whose ticket it covered. While one commit is on its way to disk the next
//! batch gathers, so the cost of an fsync is shared by every connection that
//! wrote meanwhile, and no timer adds latency when the broker is quiet.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{debug, error};

use crate::backend::{Backend, Contents};
use crate::error::StoreError;
use crate::histogram::{Histogram, Snapshot};
use crate::op::Op;

/// When a commit reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every commit is synced before the acknowledgements it covers are sent.
    #[default]
    Always,
    /// Commits are synced at most this far apart; acknowledgements do not
    /// wait, so a crash may lose the last interval.
    Periodic(Duration),
}

/// A position in the write stream: durable once the writer has committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Ticket(u64);

/// Most changes folded into one commit.
const MAX_BATCH_OPS: usize = 16 * 1024;

enum Msg {
    Ops(Vec<Op>),
    Stop(mpsc::Sender<()>),
}

struct Shared {
    durability: Durability,
    committed: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    wake: Notify,
    commits: AtomicU64,
    /// Time of each commit (written by the writer thread alone).
    commit_latency: Histogram,
    /// Operations in each commit.
    batch_ops: Histogram,
}

/// Bucket bounds of the commit latency, seconds.
const COMMIT_BOUNDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Bucket bounds of the operations per commit.
const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 4096.0,
];

struct Submit {
    next: u64,
    tx: mpsc::Sender<Msg>,
}

/// The broker's handle on its store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    submit: Arc<Mutex<Submit>>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("durability", &self.shared.durability)
            .field("committed", &self.shared.committed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Store {
    /// Loads what `backend` holds and starts its writer thread.
    pub fn open(
        mut backend: Box<dyn Backend>,
        durability: Durability,
        salvage: bool,
    ) -> Result<(Store, Contents), StoreError> {
        let contents = backend.load(salvage)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            durability,
            committed: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            wake: Notify::new(),
            commits: AtomicU64::new(0),
            commit_latency: Histogram::new(COMMIT_BOUNDS),
            batch_ops: Histogram::with_scale(BATCH_BOUNDS, 1.0),
        });
        let writer_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("vigil-store".into())
            .spawn(move || run_writer(backend, rx, &writer_shared))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok((
            Store {
                shared,
                submit: Arc::new(Mutex::new(Submit { next: 0, tx })),
                writer: Arc::new(Mutex::new(Some(handle))),
            },
            contents,
        ))
    }

    /// Queues `ops` for the next commit.
    pub fn submit(&self, ops: Vec<Op>) -> Ticket {
        if ops.is_empty() {
            return Ticket(self.submit.lock().next);
        }
        let mut s = self.submit.lock();
        s.next += 1;
        // A send fails only once the writer has stopped; `durable` reports that.
        let _ = s.tx.send(Msg::Ops(ops));
        Ticket(s.next)
    }

    /// True when acknowledgements must wait for commits.
    pub fn acks_wait(&self) -> bool {
        self.shared.durability == Durability::Always
    }

    /// Completes when everything up to `ticket` is on stable storage (at once
    /// in periodic mode); fails if the store can no longer write.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        loop {
            let woken = self.shared.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if self.shared.failed.load(Ordering::Acquire) {
                return Err(self.failure());
            }
            if !self.acks_wait() || self.shared.committed.load(Ordering::Acquire) >= ticket.0 {
                return Ok(());
            }
            woken.await;
        }
    }

    /// Number of commits so far.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// How long each commit took (with its sync, if it synced).
    pub fn commit_latency(&self) -> Snapshot {
        self.shared.commit_latency.snapshot()
    }

    /// How many operations each commit carried.
    pub fn batch_size(&self) -> Snapshot {
        self.shared.batch_ops.snapshot()
    }

    /// Commits and syncs everything submitted, then stops the writer. Blocks.
    pub fn close(&self) {
        let (tx, rx) = mpsc::channel();
        if self.submit.lock().tx.send(Msg::Stop(tx)).is_ok() {
            let _ = rx.recv();
        }
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }

    fn failure(&self) -> StoreError {
        StoreError::Unavailable(
            self.shared
                .failure
                .lock()
                .clone()
                .unwrap_or_else(|| "writer stopped".into()),
        )
    }
}

/// Drops deliveries that were queued and finished within one batch: a
/// subscriber that is keeping up acknowledges most messages before the commit
/// that would have stored them, and then neither write needs to reach the disk.
fn coalesce(batch: &mut Vec<Op>) {
    let enqueued: HashSet<(u64, u64)> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Enqueue { session, seq, .. } => Some((*session, *seq)),
            _ => None,
        })
        .collect();
    if enqueued.is_empty() {
        return;
    }
    let done: HashSet<(u64, u64)> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Dequeue { session, seq } if enqueued.contains(&(*session, *seq)) => {
                Some((*session, *seq))
            }
            _ => None,
        })
        .collect();
    if done.is_empty() {
        return;
    }
    batch.retain(|op| match op {
        Op::Enqueue { session, seq, .. }
        | Op::Progress { session, seq, .. }
        | Op::Dequeue { session, seq } => !done.contains(&(*session, *seq)),
        _ => true,
    });
}

fn run_writer(mut backend: Box<dyn Backend>, rx: mpsc::Receiver<Msg>, shared: &Shared) {
    let mut batch: Vec<Op> = Vec::new();
    let mut covered = 0u64;
    let mut unsynced = false;
    let mut last_sync = Instant::now();
    let mut stop: Option<mpsc::Sender<()>> = None;
    loop {
        let first = match shared.durability {
            Durability::Periodic(every) if unsynced => {
                match rx.recv_timeout(every.saturating_sub(last_sync.elapsed())) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        let mut next = first;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Ops(ops) => {
                    covered += 1;
                    batch.extend(ops);
                }
                Msg::Stop(reply) => {
                    stop = Some(reply);
                    break;
                }
            }
            if batch.len() >= MAX_BATCH_OPS {
                break;
            }
            next = rx.try_recv().ok();
        }
        let sync = match shared.durability {
            Durability::Always => true,
            Durability::Periodic(every) => stop.is_some() || last_sync.elapsed() >= every,
        };
        coalesce(&mut batch);
        if !batch.is_empty() || (sync && unsynced) {
            let started = Instant::now();
            if let Err(e) = backend.commit(&batch, sync) {
                error!(fault = %e, "store commit failed; no further writes will be acknowledged");
                *shared.failure.lock() = Some(e.to_string());
                shared.failed.store(true, Ordering::Release);
                shared.wake.notify_waiters();
                break;
            }
            let took = started.elapsed();
            debug!(ops = batch.len(), ?took, sync, "store commit");
            shared.commit_latency.record(took);
            shared.batch_ops.record_units(batch.len() as u64);
            shared.commits.fetch_add(1, Ordering::Relaxed);
            batch.clear();
            unsynced = !sync;
            if sync {
                last_sync = Instant::now();
            }
        }
        shared.committed.store(covered, Ordering::Release);
        shared.wake.notify_waiters();
        if let Some(reply) = stop.take() {
            let _ = reply.send(());
            return;
        }
    }
    if unsynced {
        let _ = backend.commit(&[], true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::memory::MemoryBackend;
    use crate::op::Sent;
    use crate::record::{MessageRecord, QueuedRecord};
    use vigil_proto::{Publish, QoS};

    fn enqueue(seq: u64) -> Op {
        Op::Enqueue {
            session: 1,
            seq,
            record: QueuedRecord {
                message: MessageRecord {
                    publish: Publish {
                        topic: "t".into(),
                        ..Publish::default()
                    },
                    expires_at: None,
                },
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: vec![],
            },
        }
    }

    #[test]
    fn a_delivery_finished_within_the_batch_is_never_written() {
        let mut batch = vec![
            enqueue(1),
            enqueue(2),
            Op::Progress {
                session: 1,
                seq: 1,
                sent: Sent::Published(5),
            },
            Op::Dequeue { session: 1, seq: 1 },
            // Queued in an earlier batch: its dequeue must stay.
            Op::Dequeue { session: 1, seq: 0 },
        ];
        coalesce(&mut batch);
        assert_eq!(batch, vec![enqueue(2), Op::Dequeue { session: 1, seq: 0 }]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_commits_and_every_ticket_becomes_durable() {
        let mem = MemoryBackend::new();
        let (store, _) = Store::open(Box::new(mem.clone()), Durability::Always, false).unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50u64 {
                    let ticket = store.submit(vec![enqueue(t * 1000 + i)]);
                    store.durable(ticket).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        store.close();
        let mut again = mem.clone();
        assert_eq!(again.load(false).unwrap().queued.len(), 400);
    }

    #[tokio::test]
    async fn periodic_mode_does_not_hold_acks_and_still_commits() {
        let mem = MemoryBackend::new();
        let (store, _) = Store::open(
            Box::new(mem.clone()),
            Durability::Periodic(Duration::from_secs(3600)),
            false,
        )
        .unwrap();
        assert!(!store.acks_wait());
        let ticket = store.submit(vec![enqueue(1)]);
        // Resolves at once even though no sync is due for an hour.
        tokio::time::timeout(Duration::from_millis(100), store.durable(ticket))
            .await
            .expect("periodic mode must not wait")
            .unwrap();
        store.close();
        let mut again = mem.clone();
        assert_eq!(again.load(false).unwrap().queued.len(), 1);
    }
}
