//! The Raft log and vote on redb (openraft's `RaftLogStorage`).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, LogState, RaftLogReader, StorageError, Vote,
};
use redb::{Database, Durability, ReadableTable};

use super::{blocking, decode, encode, failure, COMMITTED, LAST_PURGED, LOG, META, VOTE};
use crate::types::{NodeId, TypeConfig};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The log side of the ownership file; cheap to clone (the log reader is a clone).
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// The log kept in `db`.
    pub(crate) fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>> {
        let err = |e: redb::Error| failure(subject.clone(), ErrorVerb::Read, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(META).map_err(|e| err(e.into()))?;
        let Some(bytes) = table.get(key).map_err(|e| err(e.into()))? else {
            return Ok(None);
        };
        decode(bytes.value())
            .map(Some)
            .map_err(|e| failure(subject.clone(), ErrorVerb::Read, e))
    }

    async fn write_meta<T>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
        subject: ErrorSubject<NodeId>,
    ) -> Result<()>
    where
        T: serde::Serialize,
    {
        let bytes = encode(value).map_err(|e| failure(subject.clone(), ErrorVerb::Write, e))?;
        let db = self.db.clone();
        blocking(subject.clone(), ErrorVerb::Write, move || {
            let err = |e: redb::Error| failure(subject.clone(), ErrorVerb::Write, e);
            let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
            txn.set_durability(durability);
            txn.open_table(META)
                .map_err(|e| err(e.into()))?
                .insert(key, bytes.as_slice())
                .map_err(|e| err(e.into()))?;
            txn.commit().map_err(|e| err(e.into()))
        })
        .await
    }
}

/// Turns any range of indexes into the inclusive-exclusive pair redb wants.
fn index_range<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e.saturating_add(1)),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let err = |e: redb::Error| failure(ErrorSubject::Logs, ErrorVerb::Read, e);
        let (start, end) = index_range(&range);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(LOG).map_err(|e| err(e.into()))?;
        let rows = match end {
            Some(end) => table.range(start..end),
            None => table.range(start..),
        }
        .map_err(|e| err(e.into()))?;
        let mut entries = Vec::new();
        for row in rows {
            let (index, bytes) = row.map_err(|e| err(e.into()))?;
            let entry = decode(bytes.value())
                .map_err(|e| failure(ErrorSubject::LogIndex(index.value()), ErrorVerb::Read, e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.read_meta(LAST_PURGED, ErrorSubject::Logs)?;
        let err = |e: redb::Error| failure(ErrorSubject::Logs, ErrorVerb::Read, e);
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let table = txn.open_table(LOG).map_err(|e| err(e.into()))?;
        let last = match table.last().map_err(|e| err(e.into()))? {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> = decode(bytes.value())
                    .map_err(|e| failure(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        self.write_meta(VOTE, vote, Durability::Immediate, ErrorSubject::Vote)
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.read_meta(VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        // Losing it in a crash only means waiting for the leader to say it again.
        self.write_meta(COMMITTED, &committed, Durability::None, ErrorSubject::Store)
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)
                .map_err(|e| failure(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            rows.push((entry.log_id.index, bytes));
        }
        let db = self.db.clone();
        let written = blocking(ErrorSubject::Logs, ErrorVerb::Write, move || {
            let err = |e: redb::Error| failure(ErrorSubject::Logs, ErrorVerb::Write, e);
            let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
            txn.set_durability(Durability::Immediate);
            {
                let mut table = txn.open_table(LOG).map_err(|e| err(e.into()))?;
                for (index, bytes) in &rows {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(|e| err(e.into()))?;
                }
            }
            txn.commit().map_err(|e| err(e.into()))
        })
        .await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        tracing::debug!(%log_id, "ownership log: truncating conflicting entries");
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            let err = |e: redb::Error| failure(ErrorSubject::Logs, ErrorVerb::Delete, e);
            let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
            txn.set_durability(Durability::Immediate);
            txn.open_table(LOG)
                .map_err(|e| err(e.into()))?
                .retain_in(log_id.index.., |_, _| false)
                .map_err(|e| err(e.into()))?;
            txn.commit().map_err(|e| err(e.into()))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let bytes =
            encode(&log_id).map_err(|e| failure(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        let db = self.db.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            let err = |e: redb::Error| failure(ErrorSubject::Logs, ErrorVerb::Delete, e);
            let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
            txn.set_durability(Durability::Immediate);
            txn.open_table(META)
                .map_err(|e| err(e.into()))?
                .insert(LAST_PURGED, bytes.as_slice())
                .map_err(|e| err(e.into()))?;
            txn.open_table(LOG)
                .map_err(|e| err(e.into()))?
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(|e| err(e.into()))?;
            txn.commit().map_err(|e| err(e.into()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_become_half_open() {
        assert_eq!(index_range(&(3..7)), (3, Some(7)));
        assert_eq!(index_range(&(3..=7)), (3, Some(8)));
        assert_eq!(index_range(&(3..)), (3, None));
        assert_eq!(index_range(&(..)), (0, None));
    }
}
