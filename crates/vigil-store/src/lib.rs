//! vigil-store: what the broker keeps across restarts (persistent sessions
//! with their subscriptions, queued and in-flight deliveries, inbound QoS 2
//! ids, retained messages and delayed wills), behind one [`Backend`] trait
//! with an in-memory and an on-disk (redb) implementation, and a group-commit
//! writer ([`Store`]) that the broker's connections share.
//!
//! `docs/architecture.md` (section "The store") in the repository describes
//! how the broker writes, opens and recovers it.

mod backend;
mod disk;
mod error;
pub mod histogram;
mod memory;
mod op;
pub mod record;
mod writer;

pub use backend::{Backend, Contents, QueuedEntry};
pub use disk::{store_file, DiskBackend, STORE_FORMAT};
pub use error::{RecordError, StoreError};
pub use memory::MemoryBackend;
pub use op::{Op, Sent};
pub use record::{MessageRecord, QueuedRecord, SessionRecord, SubscriptionRecord, WillRecord};
pub use writer::{Durability, Store, Ticket};
