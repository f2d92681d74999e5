//! The in-memory backend: the same tables as on disk, in ordered maps. Clones
//! share the maps, so a test can "restart" a broker on what the last one wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{Backend, Contents, Decoder};
use crate::error::StoreError;
use crate::op::{apply, Op, Tables};

/// A store that lives as long as the process (tests, and `--store memory`).
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    tables: Arc<Mutex<MemoryTables>>,
}

#[derive(Debug, Default)]
struct MemoryTables {
    sessions: BTreeMap<u64, Vec<u8>>,
    queued: BTreeMap<(u64, u64), Vec<u8>>,
    sent: BTreeMap<(u64, u64), (u16, u8)>,
    inbound: BTreeSet<(u64, u16)>,
    retained: BTreeMap<String, Vec<u8>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }
}

impl Backend for MemoryBackend {
    fn load(&mut self, salvage: bool) -> Result<Contents, StoreError> {
        let t = self.tables.lock();
        let mut d = Decoder::new(Path::new("(memory)"), salvage);
        for (id, bytes) in &t.sessions {
            d.session(*id, bytes)?;
        }
        for (key, pair) in &t.sent {
            d.sent(*key, *pair);
        }
        for (key, bytes) in &t.queued {
            d.queued(*key, bytes)?;
        }
        for key in &t.inbound {
            d.inbound(*key);
        }
        for (topic, bytes) in &t.retained {
            d.retained(topic, bytes)?;
        }
        Ok(d.finish().0)
    }

    fn commit(&mut self, ops: &[Op], _durable: bool) -> Result<(), StoreError> {
        let mut t = self.tables.lock();
        match apply(&mut *t, ops) {
            Ok(()) => Ok(()),
            Err(never) => match never {},
        }
    }
}

impl Tables for MemoryTables {
    type Error = Infallible;

    fn put_session(&mut self, id: u64, bytes: &[u8]) -> Result<(), Infallible> {
        self.sessions.insert(id, bytes.to_vec());
        Ok(())
    }
    fn delete_session(&mut self, id: u64) -> Result<(), Infallible> {
        self.sessions.remove(&id);
        Ok(())
    }
    fn clear_queue(&mut self, session: u64) -> Result<(), Infallible> {
        let range = (session, 0)..=(session, u64::MAX);
        let keys: Vec<_> = self.queued.range(range.clone()).map(|(k, _)| *k).collect();
        for k in keys {
            self.queued.remove(&k);
        }
        let keys: Vec<_> = self.sent.range(range).map(|(k, _)| *k).collect();
        for k in keys {
            self.sent.remove(&k);
        }
        let ids: Vec<_> = self
            .inbound
            .range((session, 0)..=(session, u16::MAX))
            .copied()
            .collect();
        for k in ids {
            self.inbound.remove(&k);
        }
        Ok(())
    }
    fn put_queued(&mut self, key: (u64, u64), bytes: &[u8]) -> Result<(), Infallible> {
        self.queued.insert(key, bytes.to_vec());
        Ok(())
    }
    fn put_sent(&mut self, key: (u64, u64), sent: (u16, u8)) -> Result<(), Infallible> {
        if self.queued.contains_key(&key) {
            self.sent.insert(key, sent);
        }
        Ok(())
    }
    fn remove_queued(&mut self, key: (u64, u64)) -> Result<(), Infallible> {
        self.queued.remove(&key);
        self.sent.remove(&key);
        Ok(())
    }
    fn add_inbound(&mut self, key: (u64, u16)) -> Result<(), Infallible> {
        self.inbound.insert(key);
        Ok(())
    }
    fn remove_inbound(&mut self, key: (u64, u16)) -> Result<(), Infallible> {
        self.inbound.remove(&key);
        Ok(())
    }
    fn put_retained(&mut self, topic: &str, bytes: &[u8]) -> Result<(), Infallible> {
        self.retained.insert(topic.to_owned(), bytes.to_vec());
        Ok(())
    }
    fn delete_retained(&mut self, topic: &str) -> Result<(), Infallible> {
        self.retained.remove(topic);
        Ok(())
    }
}
