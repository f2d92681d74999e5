//! The on-disk backend, on redb: one file, copy-on-write B-trees, and a commit
//! that is atomic and checksummed, so a crash leaves the last committed state.
//!
//! Why redb over fjall: the broker's writes are small records batched into
//! group commits, where a B-tree commit (one fsync of a few pages) is cheap;
//! redb is a single file with no background compaction threads, has a stable
//! file format with an explicit version and upgrade error, repairs itself
//! after an unclean shutdown, and adds one small crate with no dependencies to
//! the build. fjall's LSM tree writes faster under sustained large volumes but
//! brings compaction threads, a directory of files, and a larger tree.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, Table, TableDefinition, WriteTransaction};
use tracing::{info, warn};

use crate::backend::{Backend, Contents, Damaged, Decoder};
use crate::error::StoreError;
use crate::op::{apply, Op, Tables};

/// Version of the layout of tables and keys; records carry their own format byte.
pub const STORE_FORMAT: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
const QUEUED: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("queued");
const SENT: TableDefinition<(u64, u64), (u16, u8)> = TableDefinition::new("sent");
const INBOUND: TableDefinition<(u64, u16), ()> = TableDefinition::new("inbound_qos2");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");

/// Page cache of the storage engine.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The store file in a data directory.
pub fn store_file(data_dir: &Path) -> PathBuf {
    data_dir.join("vigil.redb")
}

/// The default on-disk store.
#[derive(Debug)]
pub struct DiskBackend {
    /// None only while `load` closes and reopens it (and after a failed reopen).
    db: Option<Database>,
    path: PathBuf,
}

impl DiskBackend {
    /// Opens (or creates) the store in `data_dir`, refusing a file written by
    /// an incompatible version. A data directory or file the process may not
    /// use is reported as that (permissions, read-only file system, a file
    /// where a directory should be), never as a damaged store: telling
    /// someone to move a healthy store aside would be the wrong advice.
    pub fn open(data_dir: &Path) -> Result<DiskBackend, StoreError> {
        let path = store_file(data_dir);
        prepare_data_dir(data_dir)?;
        let db = open_file(&path)?;
        let backend = DiskBackend { db: Some(db), path };
        backend.check_format()?;
        Ok(backend)
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| StoreError::Io {
            path: self.path.clone(),
            detail: "the store could not be reopened after it was read".into(),
        })
    }

    /// Closes the file and opens it again: the engine keeps every page a
    /// read brought in (up to its cache size) for as long as the file is
    /// open, and once recovery has read the whole store those pages are of
    /// no use to the writes that follow (~29 MB with a 270 MB store).
    /// Closing cleanly is quick, and so is opening a cleanly closed file.
    fn reopen(&mut self) -> Result<(), StoreError> {
        self.db = None;
        self.db = Some(open_file(&self.path)?);
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            detail: e.to_string(),
        }
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write().map_err(|e| self.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let found = meta
                .get("format")
                .map_err(|e| self.err(e))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format", STORE_FORMAT)
                        .map_err(|e| self.err(e))?;
                    info!(path = %self.path.display(), "created a new store");
                }
                Some(STORE_FORMAT) => {}
                Some(found) => {
                    return Err(StoreError::Incompatible {
                        path: self.path.clone(),
                        found,
                        supported: STORE_FORMAT,
                    })
                }
            }
            // Create every table so reads never meet a missing one.
            txn.open_table(SESSIONS).map_err(|e| self.err(e))?;
            txn.open_table(QUEUED).map_err(|e| self.err(e))?;
            txn.open_table(SENT).map_err(|e| self.err(e))?;
            txn.open_table(INBOUND).map_err(|e| self.err(e))?;
            txn.open_table(RETAINED).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn read(&self, salvage: bool) -> Result<(Contents, Damaged), StoreError> {
        let e = |e: &dyn std::fmt::Display| self.err(e);
        let txn = self.db()?.begin_read().map_err(|x| e(&x))?;
        let mut d = Decoder::new(&self.path, salvage);
        for row in txn
            .open_table(SESSIONS)
            .map_err(|x| e(&x))?
            .iter()
            .map_err(|x| e(&x))?
        {
            let (k, v) = row.map_err(|x| e(&x))?;
            d.session(k.value(), v.value())?;
        }
        for row in txn
            .open_table(SENT)
            .map_err(|x| e(&x))?
            .iter()
            .map_err(|x| e(&x))?
        {
            let (k, v) = row.map_err(|x| e(&x))?;
            d.sent(k.value(), v.value());
        }
        for row in txn
            .open_table(QUEUED)
            .map_err(|x| e(&x))?
            .iter()
            .map_err(|x| e(&x))?
        {
            let (k, v) = row.map_err(|x| e(&x))?;
            d.queued(k.value(), v.value())?;
        }
        for row in txn
            .open_table(INBOUND)
            .map_err(|x| e(&x))?
            .iter()
            .map_err(|x| e(&x))?
        {
            let (k, _) = row.map_err(|x| e(&x))?;
            d.inbound(k.value());
        }
        for row in txn
            .open_table(RETAINED)
            .map_err(|x| e(&x))?
            .iter()
            .map_err(|x| e(&x))?
        {
            let (k, v) = row.map_err(|x| e(&x))?;
            d.retained(k.value(), v.value())?;
        }
        Ok(d.finish())
    }

    fn delete_damaged(&self, damaged: &Damaged) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = OpenTables::open(&txn).map_err(|e| self.err(e))?;
            for id in &damaged.sessions {
                t.delete_session(*id).map_err(|e| self.err(e))?;
            }
            for key in &damaged.queued {
                t.remove_queued(*key).map_err(|e| self.err(e))?;
            }
            for topic in &damaged.retained {
                t.delete_retained(topic).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

/// Opens (or creates) the engine's file at `path`, saying so when it had to
/// be repaired.
fn open_file(path: &Path) -> Result<Database, StoreError> {
    let repairing = Arc::new(AtomicBool::new(false));
    let started = std::time::Instant::now();
    let opened = engine_guard(path, || {
        let repairing = repairing.clone();
        Database::builder()
            // The store is read once, at start; afterwards it is written.
            // redb's default 1 GiB page cache would keep the whole file
            // resident after recovery for nothing.
            .set_cache_size(CACHE_BYTES)
            // redb calls back at each stage of one repair (up to four
            // times): one warning is the news, the rest would be noise.
            .set_repair_callback(move |_| {
                if !repairing.swap(true, Ordering::Relaxed) {
                    warn!("store was not closed cleanly; checking and repairing it");
                }
            })
            .create(path)
    })?;
    let db = opened.map_err(|e| open_error(path, e))?;
    if repairing.load(Ordering::Relaxed) {
        info!(
            path = %path.display(),
            took_ms = started.elapsed().as_millis() as u64,
            "store repaired"
        );
    }
    Ok(db)
}

/// Makes sure `dir` is a directory, creating it (and its parents) if absent.
fn prepare_data_dir(dir: &Path) -> Result<(), StoreError> {
    let fail = |detail: String| StoreError::DataDir {
        dir: dir.to_path_buf(),
        detail,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(fail(
            "is a file, not a directory: point --data-dir (store.data_dir) at a directory, \
             or at a path where one can be created"
                .into(),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot be created: {}", io_problem(&e)))),
        Err(e) => Err(fail(format!("cannot be used: {}", io_problem(&e)))),
    }
}

/// An operating-system error on the data directory or store file, with what
/// it means for the person running the broker.
fn io_problem(e: &std::io::Error) -> String {
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => {
            "the user running vigil may not read and write it; fix the owner or mode \
             of the data directory and its store file, or choose another --data-dir \
             (this is not damage: the store itself may be fine)"
        }
        ErrorKind::ReadOnlyFilesystem => {
            "the file system is mounted read-only; choose a writable --data-dir"
        }
        ErrorKind::NotADirectory => {
            "part of the path is a file, not a directory; choose another --data-dir"
        }
        ErrorKind::IsADirectory => "a directory stands where the store file should be",
        ErrorKind::StorageFull => "the disk is full",
        _ => return e.to_string(),
    };
    format!("{e}: {hint}")
}

/// What a failed open of the store file means, worded by its cause: only a
/// file the engine does not recognise or finds inconsistent is called damaged.
fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    let detail = match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            "already open: is another vigil using this data directory?".to_string()
        }
        redb::DatabaseError::UpgradeRequired(v) => {
            format!("the file uses storage engine format {v}, which this vigil does not read")
        }
        // redb reports a file without its magic number, or too short to hold
        // its header, as invalid data / unexpected end of file.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof) =>
        {
            format!(
                "not a vigil store, or damaged ({io}); move it aside to start empty, \
                 or restore a backup"
            )
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            format!("cannot open or create the file: {}", io_problem(&io))
        }
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => format!(
            "the file is damaged ({what}); move it aside to start empty, or restore a backup"
        ),
        other => format!("cannot open the file: {other}"),
    };
    StoreError::Io {
        path: path.to_path_buf(),
        detail,
    }
}

/// Runs an engine call that may panic on a damaged file (redb asserts on some
/// truncations) and turns the panic into an error naming the file, so a bad
/// file stops the start with a message instead of a crash.
fn engine_guard<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, StoreError> {
    // Only called while the broker starts: silence the default hook's
    // backtrace for the duration, the error below says what happened.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        StoreError::Io {
            path: path.to_path_buf(),
            detail: format!(
                "the file is damaged or truncated (storage engine check failed: {what}); \
                 move it aside to start empty, or restore a backup"
            ),
        }
    })
}

impl Backend for DiskBackend {
    fn load(&mut self, salvage: bool) -> Result<Contents, StoreError> {
        let (contents, damaged) = engine_guard(&self.path.clone(), || self.read(salvage))??;
        if !damaged.is_empty() {
            warn!(path = %self.path.display(), dropped = damaged.len(), "salvage: damaged records deleted");
            self.delete_damaged(&damaged)?;
        }
        self.reopen()?;
        Ok(contents)
    }

    fn commit(&mut self, ops: &[Op], durable: bool) -> Result<(), StoreError> {
        let mut txn = self.db()?.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        {
            let mut t = OpenTables::open(&txn).map_err(|e| self.err(e))?;
            apply(&mut t, ops).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

struct OpenTables<'t> {
    sessions: Table<'t, u64, &'static [u8]>,
    queued: Table<'t, (u64, u64), &'static [u8]>,
    sent: Table<'t, (u64, u64), (u16, u8)>,
    inbound: Table<'t, (u64, u16), ()>,
    retained: Table<'t, &'static str, &'static [u8]>,
}

impl<'t> OpenTables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<OpenTables<'t>, redb::TableError> {
        Ok(OpenTables {
            sessions: txn.open_table(SESSIONS)?,
            queued: txn.open_table(QUEUED)?,
            sent: txn.open_table(SENT)?,
            inbound: txn.open_table(INBOUND)?,
            retained: txn.open_table(RETAINED)?,
        })
    }
}

impl Tables for OpenTables<'_> {
    type Error = redb::StorageError;

    fn put_session(&mut self, id: u64, bytes: &[u8]) -> Result<(), Self::Error> {
        self.sessions.insert(id, bytes).map(drop)
    }
    fn delete_session(&mut self, id: u64) -> Result<(), Self::Error> {
        self.sessions.remove(id).map(drop)
    }
    fn clear_queue(&mut self, session: u64) -> Result<(), Self::Error> {
        let range = (session, 0)..=(session, u64::MAX);
        self.queued.retain_in(range.clone(), |_, _| false)?;
        self.sent.retain_in(range, |_, _| false)?;
        self.inbound
            .retain_in((session, 0)..=(session, u16::MAX), |_, _| false)
    }
    fn put_queued(&mut self, key: (u64, u64), bytes: &[u8]) -> Result<(), Self::Error> {
        self.queued.insert(key, bytes).map(drop)
    }
    fn put_sent(&mut self, key: (u64, u64), sent: (u16, u8)) -> Result<(), Self::Error> {
        if self.queued.get(key)?.is_some() {
            self.sent.insert(key, sent)?;
        }
        Ok(())
    }
    fn remove_queued(&mut self, key: (u64, u64)) -> Result<(), Self::Error> {
        self.queued.remove(key)?;
        self.sent.remove(key).map(drop)
    }
    fn add_inbound(&mut self, key: (u64, u16)) -> Result<(), Self::Error> {
        self.inbound.insert(key, ()).map(drop)
    }
    fn remove_inbound(&mut self, key: (u64, u16)) -> Result<(), Self::Error> {
        self.inbound.remove(key).map(drop)
    }
    fn put_retained(&mut self, topic: &str, bytes: &[u8]) -> Result<(), Self::Error> {
        self.retained.insert(topic, bytes).map(drop)
    }
    fn delete_retained(&mut self, topic: &str) -> Result<(), Self::Error> {
        self.retained.remove(topic).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: redb::DatabaseError) -> String {
        open_error(Path::new("/data/vigil.redb"), e).to_string()
    }

    #[test]
    fn permission_and_io_failures_are_not_called_damage() {
        for kind in [
            ErrorKind::PermissionDenied,
            ErrorKind::ReadOnlyFilesystem,
            ErrorKind::NotADirectory,
            ErrorKind::StorageFull,
            ErrorKind::Other,
        ] {
            let msg = message(std::io::Error::from(kind).into());
            assert!(msg.contains("/data/vigil.redb"), "{msg}");
            assert!(!msg.contains("damaged"), "{kind:?}: {msg}");
            assert!(!msg.contains("move it aside"), "{kind:?}: {msg}");
        }
        let msg = message(std::io::Error::from(ErrorKind::PermissionDenied).into());
        assert!(msg.contains("may not read and write"), "{msg}");
    }

    #[test]
    fn only_an_unrecognised_or_inconsistent_file_is_called_damaged() {
        for e in [
            redb::DatabaseError::from(std::io::Error::from(ErrorKind::InvalidData)),
            std::io::Error::from(ErrorKind::UnexpectedEof).into(),
            redb::StorageError::Corrupted("bad checksum".into()).into(),
        ] {
            let msg = message(e);
            assert!(
                msg.contains("damaged") && msg.contains("move it aside"),
                "{msg}"
            );
        }
    }
}
