//! Messages from the client: topic aliases, the inbound Receive Maximum, and
//! QoS 2 exactly-once (a PUBLISH re-sent before PUBREL is not routed twice).

use super::{ServerConnection, ServerEvent};
use crate::{Ack, Packet, Publish, QoS, ReasonCode, SubAck, UnsubAck};

impl ServerConnection {
    pub(super) fn handle_publish(&mut self, mut p: Publish) {
        if !p.properties.subscription_identifiers.is_empty() {
            return self.protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                "a client's PUBLISH carried a Subscription Identifier".into(),
            );
        }
        if let Some(alias) = p
            .properties
            .stored_mut()
            .and_then(|pr| pr.topic_alias.take())
        {
            if alias == 0 || alias > self.config.topic_alias_maximum {
                return self.protocol_error(
                    ReasonCode::TOPIC_ALIAS_INVALID,
                    format!(
                        "topic alias {alias} outside 1..={}",
                        self.config.topic_alias_maximum
                    ),
                );
            }
            if p.topic.is_empty() {
                match self
                    .aliases
                    .as_ref()
                    .and_then(|a| a.inbound.get(usize::from(alias - 1)))
                    .and_then(Option::as_ref)
                {
                    Some(topic) => p.topic = topic.as_str().into(),
                    None => {
                        return self.protocol_error(
                            ReasonCode::PROTOCOL_ERROR,
                            format!("topic alias {alias} used before it was set"),
                        )
                    }
                }
            } else {
                let slot = usize::from(alias - 1);
                let inbound = &mut self.aliases.get_or_insert_with(Box::default).inbound;
                if inbound.len() <= slot {
                    inbound.resize(slot + 1, None);
                }
                inbound[slot] = Some(p.topic.to_string());
            }
        }
        if p.qos == QoS::AtMostOnce {
            self.events.push_back(ServerEvent::Publish(p));
            return;
        }
        if p.qos == QoS::ExactlyOnce && self.state.inbound_qos2.contains(&p.packet_id) {
            // Already routed; the client did not see our PUBREC. Answer again, route nothing.
            self.urgent.push_back(Packet::PubRec(Ack::new(p.packet_id)));
            return;
        }
        let unacked = usize::from(self.inbound_qos1_unacked) + self.state.inbound_qos2.len();
        if unacked >= usize::from(self.config.receive_maximum) {
            return self.protocol_error(
                ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                format!(
                    "more than {} unacknowledged QoS 1/2 messages",
                    self.config.receive_maximum
                ),
            );
        }
        match p.qos {
            QoS::AtLeastOnce => self.inbound_qos1_unacked += 1,
            _ => {
                self.state.inbound_qos2.insert(p.packet_id);
            }
        }
        self.events.push_back(ServerEvent::Publish(p));
    }

    /// The broker has taken the QoS 1/2 message `packet_id` (routed, and stored
    /// if the session needs it): send PUBACK or PUBREC. `matched` is the number
    /// of subscribers; MQTT 5 acks say 0x10 when there were none.
    pub fn publish_routed(&mut self, packet_id: u16, qos: QoS, matched: usize) {
        if self.is_closed() {
            return;
        }
        let mut ack = Ack::new(packet_id);
        if self.version.is_v5() && matched == 0 {
            ack.reason = ReasonCode::NO_MATCHING_SUBSCRIBERS;
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.inbound_qos1_unacked = self.inbound_qos1_unacked.saturating_sub(1);
                self.urgent.push_back(Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => self.urgent.push_back(Packet::PubRec(ack)),
        }
    }

    pub(super) fn handle_pubrel(&mut self, a: Ack) {
        let mut comp = Ack::new(a.packet_id);
        if self.state.inbound_qos2.remove(&a.packet_id) {
            self.events.push_back(ServerEvent::Released(a.packet_id));
        } else if self.version.is_v5() {
            comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        self.urgent.push_back(Packet::PubComp(comp));
    }

    /// Answers a SUBSCRIBE with one code per filter.
    pub fn send_suback(&mut self, packet_id: u16, reasons: Vec<ReasonCode>) {
        if self.is_closed() {
            return;
        }
        self.send_answer(Packet::SubAck(SubAck {
            packet_id,
            reasons,
            ..SubAck::default()
        }));
    }

    /// Answers an UNSUBSCRIBE (codes are sent to MQTT 5 clients only).
    pub fn send_unsuback(&mut self, packet_id: u16, reasons: Vec<ReasonCode>) {
        if self.is_closed() {
            return;
        }
        let reasons = if self.version.is_v5() {
            reasons
        } else {
            Vec::new()
        };
        self.send_answer(Packet::UnsubAck(UnsubAck {
            packet_id,
            reasons,
            ..UnsubAck::default()
        }));
    }

    /// Queues an answer the client must get, unless it is larger than the
    /// client's Maximum Packet Size (MQTT-3.1.2-24): it carries no Reason
    /// String or User Property to leave out, and dropping it would leave the
    /// client waiting forever, so the connection ends with the cause instead.
    fn send_answer(&mut self, packet: Packet) {
        let len = packet.encoded_len(self.version);
        if len > self.client_max_packet_size as usize {
            let detail = format!(
                "its {:?} of {len} bytes exceeds the client's Maximum Packet Size of {} bytes",
                packet.packet_type(),
                self.client_max_packet_size
            );
            return self.protocol_error(ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR, detail);
        }
        self.urgent.push_back(packet);
    }
}
