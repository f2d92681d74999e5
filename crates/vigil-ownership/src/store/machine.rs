//! The replicated state machine on redb: client id → (node, epoch), and
//! its snapshots (openraft's `RaftStateMachine`).

use std::io::Cursor;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StorageError, StoredMembership,
};
use redb::{Database, Durability, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{blocking, decode, encode, failure, LAST_APPLIED, MEMBERSHIP, META, OWNERS, SNAPSHOT};
use crate::rules;
use crate::types::{
    Batch, BatchOutcome, Epoch, NodeId, Owner, OwnershipChange, OwnershipEvent, TypeConfig,
};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// A snapshot as kept in the file: its meta and the encoded map.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The snapshot's data: every (client id, node, epoch).
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    owners: Vec<(String, NodeId, u64)>,
}

/// The state machine side of the ownership file; clones share it (the
/// snapshot builder is a clone).
#[derive(Clone)]
pub(crate) struct StateMachine {
    db: Arc<Database>,
    changes: broadcast::Sender<OwnershipEvent>,
}

impl StateMachine {
    /// The state machine kept in `db`, reporting applied changes to `changes`.
    pub(crate) fn new(
        db: Arc<Database>,
        changes: broadcast::Sender<OwnershipEvent>,
    ) -> StateMachine {
        StateMachine { db, changes }
    }
}

fn read_meta<T: serde::de::DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>> {
    let err = |e: redb::Error| failure(ErrorSubject::StateMachine, ErrorVerb::Read, e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let table = txn.open_table(META).map_err(|e| err(e.into()))?;
    let Some(bytes) = table.get(key).map_err(|e| err(e.into()))? else {
        return Ok(None);
    };
    decode(bytes.value())
        .map(Some)
        .map_err(|e| failure(ErrorSubject::StateMachine, ErrorVerb::Read, e))
}

fn put_meta<T: Serialize>(txn: &WriteTransaction, key: &str, value: &T) -> Result<()> {
    let bytes =
        encode(value).map_err(|e| failure(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
    txn.open_table(META)
        .and_then(|mut t| {
            t.insert(key, bytes.as_slice())
                .map(|_| ())
                .map_err(Into::into)
        })
        .map_err(|e| {
            failure(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                redb::Error::from(e),
            )
        })
}

/// Applies the operations of one entry inside `txn`, collecting the
/// changes for the change stream.
fn apply_batch(
    txn: &WriteTransaction,
    log_id: LogId<NodeId>,
    batch: &Batch,
    changes: &mut Vec<OwnershipChange>,
) -> Result<BatchOutcome> {
    let err = |e: redb::Error| failure(ErrorSubject::Apply(log_id), ErrorVerb::Write, e);
    let mut table = txn.open_table(OWNERS).map_err(|e| err(e.into()))?;
    let mut outcomes = Vec::with_capacity(batch.0.len());
    for (position, op) in batch.0.iter().enumerate() {
        let client_id = op.client_id();
        let current = table.get(client_id).map_err(|e| err(e.into()))?.map(|v| {
            let (node, epoch) = v.value();
            Owner {
                node,
                epoch: Epoch(epoch),
            }
        });
        let applied = rules::apply(op, Epoch::at(log_id.index, position), current);
        if let Some(new) = applied.write {
            match new {
                Some(owner) => table
                    .insert(client_id, (owner.node, owner.epoch.0))
                    .map(|_| ()),
                None => table.remove(client_id).map(|_| ()),
            }
            .map_err(|e| err(e.into()))?;
            changes.push(OwnershipChange {
                client_id: client_id.to_owned(),
                previous: current,
                current: new,
            });
        }
        outcomes.push(applied.outcome);
    }
    Ok(BatchOutcome(outcomes))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let db = self.db.clone();
        let stored = blocking(ErrorSubject::Snapshot(None), ErrorVerb::Write, move || {
            let err = |e: redb::Error| failure(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
            // One read transaction: the map and the applied position agree.
            let txn = db.begin_read().map_err(|e| err(e.into()))?;
            let meta_table = txn.open_table(META).map_err(|e| err(e.into()))?;
            let get = |key: &str| -> Result<Option<Vec<u8>>> {
                Ok(meta_table
                    .get(key)
                    .map_err(|e| err(e.into()))?
                    .map(|v| v.value().to_vec()))
            };
            let decode_err = |e| failure(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
            let last_applied: Option<LogId<NodeId>> = match get(LAST_APPLIED)? {
                Some(b) => decode(&b).map_err(decode_err)?,
                None => None,
            };
            let membership: Membership = match get(MEMBERSHIP)? {
                Some(b) => decode(&b).map_err(decode_err)?,
                None => Membership::default(),
            };
            let mut owners = Vec::new();
            for row in txn
                .open_table(OWNERS)
                .map_err(|e| err(e.into()))?
                .iter()
                .map_err(|e| err(e.into()))?
            {
                let (client_id, value) = row.map_err(|e| err(e.into()))?;
                let (node, epoch) = value.value();
                owners.push((client_id.value().to_owned(), node, epoch));
            }
            drop(txn);
            let data = encode(&SnapshotBody { owners })
                .map_err(|e| failure(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let snapshot_id = format!("{}-{nanos}", last_applied.map(|l| l.index).unwrap_or(0));
            let stored = StoredSnapshot {
                meta: SnapshotMeta {
                    last_log_id: last_applied,
                    last_membership: membership,
                    snapshot_id,
                },
                data,
            };
            let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
            txn.set_durability(Durability::Immediate);
            put_meta(&txn, SNAPSHOT, &stored)?;
            txn.commit().map_err(|e| err(e.into()))?;
            Ok(stored)
        })
        .await?;
        tracing::debug!(meta = %stored.meta, "ownership snapshot built");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership)> {
        let last_applied = read_meta::<Option<LogId<NodeId>>>(&self.db, LAST_APPLIED)?.flatten();
        let membership = read_meta::<Membership>(&self.db, MEMBERSHIP)?.unwrap_or_default();
        Ok((last_applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let db = self.db.clone();
        let (outcomes, changes) =
            blocking(ErrorSubject::Apply(last), ErrorVerb::Write, move || {
                let err = |e: redb::Error| failure(ErrorSubject::Apply(last), ErrorVerb::Write, e);
                let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
                // Durable with the next log append; see the module comment.
                txn.set_durability(Durability::None);
                let mut outcomes = Vec::with_capacity(entries.len());
                let mut changes = Vec::new();
                for entry in &entries {
                    match &entry.payload {
                        EntryPayload::Blank => outcomes.push(BatchOutcome::default()),
                        EntryPayload::Normal(batch) => {
                            outcomes.push(apply_batch(&txn, entry.log_id, batch, &mut changes)?);
                        }
                        EntryPayload::Membership(m) => {
                            put_meta(
                                &txn,
                                MEMBERSHIP,
                                &Membership::new(Some(entry.log_id), m.clone()),
                            )?;
                            outcomes.push(BatchOutcome::default());
                        }
                    }
                }
                put_meta(&txn, LAST_APPLIED, &Some(last))?;
                txn.commit().map_err(|e| err(e.into()))?;
                Ok((outcomes, changes))
            })
            .await?;
        for change in changes {
            // No receiver is not an error: a node may not watch.
            let _ = self.changes.send(OwnershipEvent::Changed(change));
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let body: SnapshotBody =
            decode(&data).map_err(|e| failure(subject.clone(), ErrorVerb::Read, e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.db.clone();
        blocking(subject.clone(), ErrorVerb::Write, move || {
            let err = |e: redb::Error| failure(subject.clone(), ErrorVerb::Write, e);
            let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
            txn.set_durability(Durability::Immediate);
            txn.delete_table(OWNERS).map_err(|e| err(e.into()))?;
            {
                let mut table = txn.open_table(OWNERS).map_err(|e| err(e.into()))?;
                for (client_id, node, epoch) in &body.owners {
                    table
                        .insert(client_id.as_str(), (*node, *epoch))
                        .map_err(|e| err(e.into()))?;
                }
            }
            put_meta(&txn, LAST_APPLIED, &stored.meta.last_log_id)?;
            put_meta(&txn, MEMBERSHIP, &stored.meta.last_membership)?;
            put_meta(&txn, SNAPSHOT, &stored)?;
            txn.commit().map_err(|e| err(e.into()))
        })
        .await?;
        tracing::info!(%meta, "ownership state replaced from a snapshot");
        let _ = self.changes.send(OwnershipEvent::Reset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let stored = read_meta::<StoredSnapshot>(&self.db, SNAPSHOT)?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
