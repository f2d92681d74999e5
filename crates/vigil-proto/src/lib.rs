//! vigil-proto: the sans-IO core of vigil.
//!
//! What lives here: the MQTT 3.1 / 3.1.1 / 5.0 packet model and its one codec
//! (used by broker, client and tools alike), properties and reason codes, topic
//! name and filter rules, and the per-connection protocol state machines for the
//! server and the client, including their keep-alive timers.
//!
//! What must not live here: sockets, tasks, or reading a clock. Every function
//! that depends on time takes `now: Instant` from its caller, so that tests can
//! drive hours of protocol on a virtual clock in microseconds. `time::Clock`
//! (a moment on the monotonic and the wall clock, for what is persisted)
//! lives here too, for the broker's core and the store; its `now` is for the
//! I/O layers, never called in this crate.
//!
//! The keep-alive rules these state machines implement, each with its reason
//! and its tests, are in `docs/keepalive.md` at the repository's root; how
//! the crates fit together is in `docs/architecture.md`.

pub mod client;
mod codec;
pub mod error;
pub mod message;
pub mod packet;
pub mod properties;
mod properties_codec;
pub mod qos;
pub mod reason;
pub mod scram;
pub mod server;
pub mod time;
pub mod topic;

pub use error::{DecodeError, EncodeError};
pub use packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketType, Publish, PublishView,
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    Will,
};
pub use properties::{Properties, Props};
pub use qos::{ProtocolVersion, QoS};
pub use reason::ReasonCode;
