//! vigil-broker: the routing core and the tokio shell of the vigil broker.
pub mod config;
pub mod core;
