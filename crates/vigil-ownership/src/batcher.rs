//! Group commit for claims: operations that arrive while earlier batches
//! are on their way share one Raft entry, so a CONNECT storm costs one
//! round trip per batch, not one per CONNECT.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;

use crate::submit::{submit, Shared};
use crate::types::{Batch, Op, OpOutcome};
use crate::OwnershipError;

/// Most operations in one entry (far below the 2^20 an epoch can number).
pub(crate) const MAX_OPS: usize = 512;
/// Most client-id bytes in one entry, so a run of entries stays well under
/// the frame limit whatever the ids' lengths.
pub(crate) const MAX_ID_BYTES: usize = 256 << 10;
/// Batches on their way at once: while they are, new operations gather.
const IN_FLIGHT: usize = 4;

/// One operation waiting for its batch.
pub(crate) struct Queued {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<OpOutcome, OwnershipError>>,
}

/// Takes queued operations, in batches, until the queue closes.
pub(crate) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Queued>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batches = JoinSet::new();
    loop {
        // Waiting for a permit first lets the queue fill while every batch
        // is in flight: the next batch then takes all of it.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut gathered = Vec::new();
        let mut id_bytes = 0;
        let mut next = Some(first);
        while let Some(queued) = next.take() {
            // A caller that gave up (its CONNECT was already refused with
            // NoQuorum) must not have its claim committed later.
            if !queued.reply.is_closed() {
                id_bytes += queued.op.client_id().len();
                gathered.push(queued);
            }
            if gathered.len() < MAX_OPS && id_bytes < MAX_ID_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if gathered.is_empty() {
            continue;
        }
        while batches.try_join_next().is_some() {}
        let shared = shared.clone();
        batches.spawn(async move {
            let (ops, replies): (Vec<Op>, Vec<_>) =
                gathered.into_iter().map(|q| (q.op, q.reply)).unzip();
            let count = ops.len();
            let result = submit(&shared, Batch(ops)).await;
            drop(permit);
            match result {
                Ok(outcome) if outcome.0.len() == count => {
                    for (reply, outcome) in replies.into_iter().zip(outcome.0) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(outcome) => {
                    tracing::error!(
                        sent = count,
                        answered = outcome.0.len(),
                        "ownership batch answered with the wrong count"
                    );
                    for reply in replies {
                        let _ = reply.send(Err(OwnershipError::Stopped));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
