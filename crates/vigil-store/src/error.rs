//! What can go wrong with the store, worded for the person running the broker.

use std::path::PathBuf;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened, read or written.
    #[error("store {path}: {detail}")]
    Io {
        /// The store file.
        path: PathBuf,
        /// What the engine said.
        detail: String,
    },
    /// The data directory cannot be used: it is not a directory, or it
    /// cannot be created or written (an operating-system problem, not a
    /// damaged store).
    #[error("data directory {dir}: {detail}")]
    DataDir {
        /// The data directory.
        dir: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The file was written by a newer or unknown format.
    #[error(
        "store {path} has format {found}, this vigil reads format {supported}: \
         it was written by a newer or incompatible vigil; run that version, or move the \
         data directory aside to start empty"
    )]
    Incompatible {
        /// The store file.
        path: PathBuf,
        /// Format version found in the file.
        found: u64,
        /// Format version this build reads and writes.
        supported: u64,
    },
    /// A record could not be decoded.
    #[error("store {path}: damaged {what} record: {detail}")]
    Corrupt {
        /// The store file (empty for the in-memory store).
        path: PathBuf,
        /// Which kind of record.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The store stopped accepting writes after an earlier failure.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Why a record's bytes could not be decoded (the store adds the file name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);
