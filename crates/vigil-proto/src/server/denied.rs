//! A PUBLISH the broker refuses (its ACL does not let the client write the
//! topic): MQTT 5 can say so, 3.1.1 cannot.

use super::ServerConnection;
use crate::{Ack, Packet, QoS, ReasonCode};

impl ServerConnection {
    /// The broker refused the QoS 1/2 message `packet_id` (not routed).
    /// MQTT 5: PUBACK / PUBREC with 0x87, and a refused QoS 2 flow ends at
    /// that PUBREC (no PUBREL follows). 3.1.1 has no way to say no, so the
    /// message is acknowledged as if routed, and dropped.
    pub fn publish_denied(&mut self, packet_id: u16, qos: QoS) {
        if !self.version.is_v5() {
            return self.publish_routed(packet_id, qos, 1);
        }
        if self.is_closed() {
            return;
        }
        let mut ack = Ack::new(packet_id);
        ack.reason = ReasonCode::NOT_AUTHORIZED;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.inbound_qos1_unacked = self.inbound_qos1_unacked.saturating_sub(1);
                self.urgent.push_back(Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                self.state.inbound_qos2.remove(&packet_id);
                self.urgent.push_back(Packet::PubRec(ack));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::BytesMut;

    use super::super::tests::connected;
    use super::super::{ServerConfig, ServerEvent};
    use crate::{Ack, Packet, ProtocolVersion, Publish, QoS};

    fn publish(c: &mut super::ServerConnection, qos: QoS, id: u16) -> Publish {
        c.handle_packet(
            Instant::now(),
            Packet::Publish(Publish {
                topic: "secret/t".into(),
                qos,
                packet_id: id,
                ..Publish::default()
            }),
        );
        match c.poll_event() {
            Some(ServerEvent::Publish(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    fn wire(c: &mut super::ServerConnection) -> Vec<u8> {
        let mut out = BytesMut::new();
        while let Some(r) = c.encode_transmit(&mut out) {
            r.unwrap();
        }
        out.to_vec()
    }

    #[test]
    fn mqtt5_refusals_carry_0x87_and_end_the_qos2_flow() {
        let mut c = connected(
            ServerConfig::default(),
            ProtocolVersion::V5,
            60,
            Instant::now(),
        );
        let p = publish(&mut c, QoS::AtLeastOnce, 7);
        c.publish_denied(p.packet_id, p.qos);
        // PUBACK: packet id 7, reason 0x87, no properties.
        assert_eq!(wire(&mut c), [0x40, 0x04, 0x00, 0x07, 0x87, 0x00]);
        let p = publish(&mut c, QoS::ExactlyOnce, 8);
        c.publish_denied(p.packet_id, p.qos);
        assert_eq!(wire(&mut c), [0x50, 0x04, 0x00, 0x08, 0x87, 0x00]);
        // The id is free again: the same id is a new message, not a duplicate.
        let p = publish(&mut c, QoS::ExactlyOnce, 8);
        assert_eq!(p.packet_id, 8);
        // Receive Maximum is not used up by refused messages.
        for id in 100..400 {
            let p = publish(&mut c, QoS::AtLeastOnce, id);
            c.publish_denied(p.packet_id, p.qos);
        }
        assert!(!c.is_closed());
    }

    #[test]
    fn mqtt311_refusals_are_acknowledged_as_if_routed() {
        let mut c = connected(
            ServerConfig::default(),
            ProtocolVersion::V3_1_1,
            60,
            Instant::now(),
        );
        let p = publish(&mut c, QoS::AtLeastOnce, 7);
        c.publish_denied(p.packet_id, p.qos);
        assert_eq!(wire(&mut c), [0x40, 0x02, 0x00, 0x07]);
        let p = publish(&mut c, QoS::ExactlyOnce, 9);
        c.publish_denied(p.packet_id, p.qos);
        assert_eq!(wire(&mut c), [0x50, 0x02, 0x00, 0x09]);
        c.handle_packet(Instant::now(), Packet::PubRel(Ack::new(9)));
        assert!(matches!(c.poll_event(), Some(ServerEvent::Released(9))));
        assert_eq!(wire(&mut c), [0x70, 0x02, 0x00, 0x09]);
        let p = publish(&mut c, QoS::AtMostOnce, 0);
        c.publish_denied(p.packet_id, p.qos);
        assert!(wire(&mut c).is_empty());
    }
}
