//! vigil-broker: the MQTT broker.
//!
//! What lives here: the broker core (`core`: session registry with takeover,
//! bounded mailboxes, subscription trie, retained messages, wills and session
//! expiry as deadline logic), configuration (`config`), and the thin tokio
//! shell (`server` accepts; `connection` runs one client's socket against its
//! `vigil_proto::server::ServerConnection`). Protocol rules live in
//! vigil-proto, not here.
//!
//! In the repository: `docs/architecture.md` follows a PUBLISH and a
//! keep-alive deadline through this crate and explains parking and the
//! store; `docs/configuration.md` lists every key of [`config::BrokerConfig`]
//! with its default and flag; `docs/keepalive.md` gives the rules and the
//! tests that prove them.

pub mod auth;
pub mod config;
mod connection;
pub mod core;
mod fd_table;
pub mod listener;
pub mod observe;
pub mod reload;
pub mod server;
pub mod transport;

pub use listener::{BoundListener, ListenError};
pub use reload::{ReloadReport, Reloader};
pub use server::{open_broker, spawn_worker_runtimes, CertReloader, Server, ServerOptions};
