//! Seeing inside a running broker: the `$SYS` topics and the settings of
//! the `[sys]` and `[admin]` tables (the admin HTTP listener itself is the
//! `vigil-admin` crate, which keeps its HTTP server out of this one).

pub mod config;
pub mod histogram;
pub mod sys;
pub mod traffic;
