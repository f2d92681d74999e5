//! The ownership group's redb file: the Raft log and vote, and the state
//! machine (the client id → owner map), in one database beside the
//! broker's store.
//!
//! Log appends, the vote, truncation, purges and snapshots commit with
//! `Durability::Immediate`: Raft's safety rests on them. The state machine
//! (and the committed index) commit with `Durability::None`, which redb
//! makes durable with the next immediate commit in the same file: a crash
//! can only lose a suffix of applied entries, which openraft applies again
//! from the log (nothing is purged from the log before a snapshot, written
//! immediately, covers it). That halves the fsyncs of a claim.

// openraft's traits return its `StorageError` (over 200 bytes); the
// helpers that build it return it too rather than boxing and unboxing.
#![allow(clippy::result_large_err)]

mod log;
mod machine;

use std::path::Path;
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use redb::{Database, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use log::LogStore;
pub(crate) use machine::StateMachine;

use crate::types::NodeId;

/// Log index → postcard-encoded `openraft::Entry`.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Single values of the log side and the state machine, postcard-encoded.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// Client id → (node id, epoch): the state machine.
const OWNERS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("owners");

/// `META` keys.
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const SNAPSHOT: &str = "snapshot";

/// Opens (or creates) the ownership file at `path`, with every table present
/// so readers never meet a missing one.
pub(crate) fn open(path: &Path) -> Result<Arc<Database>, redb::Error> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.open_table(META)?;
    txn.open_table(OWNERS)?;
    txn.commit()?;
    Ok(Arc::new(db))
}

/// Reads the owner of `client_id` from the applied state.
pub(crate) fn read_owner(
    db: &Database,
    client_id: &str,
) -> Result<Option<crate::types::Owner>, redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(OWNERS)?;
    Ok(table.get(client_id)?.map(|v| {
        let (node, epoch) = v.value();
        crate::types::Owner {
            node,
            epoch: crate::types::Epoch(epoch),
        }
    }))
}

/// How many client ids the applied state holds.
pub(crate) fn owner_count(db: &Database) -> Result<u64, redb::Error> {
    use redb::ReadableTableMetadata;
    let txn = db.begin_read()?;
    Ok(txn.open_table(OWNERS)?.len()?)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// A storage failure as openraft wants it (it then stops the node: a Raft
/// node that cannot trust its disk must not vote).
fn failure(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// Runs blocking redb work off the async threads: a commit waits for an
/// fsync, and the caller's runtime may be one a broker worker shares.
async fn blocking<T, F>(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    f: F,
) -> Result<T, StorageError<NodeId>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError<NodeId>> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(failure(subject, verb, join)),
    }
}
