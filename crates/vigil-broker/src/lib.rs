//! vigil-broker: the MQTT broker.
//!
//! What lives here: the broker core (`core`, sans-IO: session registry with
//! takeover, bounded mailboxes, subscription trie, retained messages, wills
//! and session expiry as deadline logic, all taking `now` from the caller),
//! configuration (`config`), and the thin tokio shell (`server` accepts and
//! drives the core's timers; `connection` runs one client's socket against
//! its `vigil_proto::server::ServerConnection` and does the core's waiting).
//! Protocol rules live in vigil-proto, not here.
//!
//! The core is private to this crate; its public face is [`Broker`] (what an
//! embedder or the admin API asks of it) and [`Counters`], with the types
//! their signatures need, re-exported here.
//!
//! In the repository: `docs/architecture.md` follows a PUBLISH and a
//! keep-alive deadline through this crate and explains parking and the
//! store; `docs/configuration.md` lists every key of [`config::BrokerConfig`]
//! with its default and flag; `docs/keepalive.md` gives the rules and the
//! tests that prove them.

pub mod auth;
pub mod config;
mod connection;
pub(crate) mod core;
mod fd_table;
pub mod forwarded;
pub mod listener;
pub mod observe;
pub mod reload;
pub mod remote_acks;
pub mod server;
pub mod transport;

pub use crate::connection::takeover::hand_over_session;
pub use crate::core::clients::{ClientFilter, ClientInfo, Kicked};
pub use crate::core::cluster::{ClaimFuture, ClusterHook, ClusterMetrics, LinkMetrics};
pub use crate::core::handover::{MovedSession, ShipError, ShippedSession};
pub use crate::core::history::DisconnectRecord;
pub use crate::core::{
    Broker, ConnFigures, CoreConfig, Counters, MailboxLimits, OverflowConfig, ShardedCounter,
};
pub use forwarded::ForwardedBatch;
pub use listener::{BoundListener, ListenError};
pub use reload::{ReloadReport, Reloader};
pub use remote_acks::RemoteAcks;
pub use server::{open_broker, spawn_worker_runtimes, CertReloader, Server, ServerOptions};
