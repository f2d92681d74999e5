//! The MQTT control packets, one module per packet, and the one codec entry
//! point (`Packet::decode` / `Packet::encode`) used across vigil.

mod ack;
mod auth;
mod connack;
mod connect;
pub(crate) mod disconnect;
mod publish;
mod subscribe;
mod unsubscribe;
mod wire;

pub use ack::Ack;
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use publish::{Publish, PublishView};
pub use subscribe::{RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions};
pub use unsubscribe::{UnsubAck, Unsubscribe};

/// The fifteen control packet types, by their fixed-header type number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// 1
    Connect = 1,
    /// 2
    ConnAck = 2,
    /// 3
    Publish = 3,
    /// 4
    PubAck = 4,
    /// 5
    PubRec = 5,
    /// 6
    PubRel = 6,
    /// 7
    PubComp = 7,
    /// 8
    Subscribe = 8,
    /// 9
    SubAck = 9,
    /// 10
    Unsubscribe = 10,
    /// 11
    UnsubAck = 11,
    /// 12
    PingReq = 12,
    /// 13
    PingResp = 13,
    /// 14
    Disconnect = 14,
    /// 15 (MQTT 5 only)
    Auth = 15,
}

/// One MQTT control packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Client → server: open a session.
    Connect(Box<Connect>),
    /// Server → client: answer to CONNECT.
    ConnAck(ConnAck),
    /// Either way: an application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(Ack),
    /// QoS 2, step 2.
    PubRec(Ack),
    /// QoS 2, step 3.
    PubRel(Ack),
    /// QoS 2, step 4.
    PubComp(Ack),
    /// Client → server: add subscriptions.
    Subscribe(Subscribe),
    /// Server → client: one reason code per requested filter.
    SubAck(SubAck),
    /// Client → server: remove subscriptions.
    Unsubscribe(Unsubscribe),
    /// Server → client: answer to UNSUBSCRIBE.
    UnsubAck(UnsubAck),
    /// Client → server: keep-alive probe.
    PingReq,
    /// Server → client: keep-alive answer.
    PingResp,
    /// Either way (server → client in MQTT 5 only): closing with a reason.
    Disconnect(Disconnect),
    /// Either way, MQTT 5 only: enhanced authentication exchange.
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Packets move through the connection's queues by value, so the enum
    /// must stay small: properties live behind one pointer, absent when empty.
    #[test]
    fn a_packet_is_at_most_64_bytes() {
        let sizes = [
            ("Packet", size_of::<Packet>()),
            ("Publish", size_of::<Publish>()),
            ("Ack", size_of::<Ack>()),
            ("ConnAck", size_of::<ConnAck>()),
            ("Subscribe", size_of::<Subscribe>()),
            ("SubAck", size_of::<SubAck>()),
            ("Unsubscribe", size_of::<Unsubscribe>()),
            ("UnsubAck", size_of::<UnsubAck>()),
            ("Disconnect", size_of::<Disconnect>()),
            ("Auth", size_of::<Auth>()),
            ("Box<Connect>", size_of::<Box<Connect>>()),
        ];
        for (name, size) in sizes {
            println!("size_of::<{name}>() = {size}");
        }
        assert!(
            size_of::<Packet>() <= 64,
            "Packet is {} bytes",
            size_of::<Packet>()
        );
    }
}
