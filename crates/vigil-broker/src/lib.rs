//! vigil-broker: the MQTT broker.
//!
//! What lives here: the broker core (`core`: session registry with takeover,
//! bounded mailboxes, subscription trie, retained messages, wills and session
//! expiry as deadline logic), configuration (`config`), and the thin tokio
//! shell (`server` accepts; `connection` runs one client's socket against its
//! `vigil_proto::server::ServerConnection`). Protocol rules live in
//! vigil-proto, not here.

pub mod config;
mod connection;
pub mod core;
mod fd_table;
pub mod server;

pub use server::{open_broker, spawn_worker_runtimes, Server, ServerOptions};
