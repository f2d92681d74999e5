//! Publish, subscribe and acknowledgement flows of the client session.

use std::time::Instant;

use super::{ClientCloseReason, ClientEvent, ClientSession, OutEntry, OutStage};
use crate::{Ack, Packet, Publish, QoS, ReasonCode, Subscribe, Subscription, Unsubscribe};

impl ClientSession {
    /// Queues a publish; QoS 1/2 completion is reported as `Published { token }`.
    /// QoS 1/2 wait for a slot in the broker's Receive Maximum window.
    pub fn publish(&mut self, token: u64, mut publish: Publish) {
        publish.dup = false;
        publish.packet_id = 0;
        self.waiting.push_back((token, publish));
        if self.is_connected() {
            self.send_waiting();
        }
    }

    /// Number of QoS 1/2 publishes not yet completed (sent or waiting).
    pub fn unfinished_publishes(&self) -> usize {
        self.outbound.len()
            + self
                .waiting
                .iter()
                .filter(|(_, p)| p.qos != QoS::AtMostOnce)
                .count()
    }

    /// Number of QoS 0 publishes waiting to be handed out.
    pub fn waiting_qos0(&self) -> usize {
        self.waiting
            .iter()
            .filter(|(_, p)| p.qos == QoS::AtMostOnce)
            .count()
    }

    /// Sends SUBSCRIBE; completion is reported as `Subscribed { token }`.
    pub fn subscribe(
        &mut self,
        token: u64,
        filters: Vec<Subscription>,
        subscription_id: Option<u32>,
    ) {
        let Some(packet_id) = self.next_packet_id() else {
            return self.violation("no free packet identifier".into());
        };
        let mut sub = Subscribe {
            packet_id,
            filters,
            ..Subscribe::default()
        };
        if self.version().is_v5() {
            sub.properties.subscription_identifiers = subscription_id.into_iter().collect();
        }
        self.pending_requests.insert(packet_id, (token, true));
        self.transmit.push_back(Packet::Subscribe(sub));
    }

    /// Sends UNSUBSCRIBE; completion is reported as `Unsubscribed { token }`.
    pub fn unsubscribe(&mut self, token: u64, filters: Vec<String>) {
        let Some(packet_id) = self.next_packet_id() else {
            return self.violation("no free packet identifier".into());
        };
        self.pending_requests.insert(packet_id, (token, false));
        self.transmit.push_back(Packet::Unsubscribe(Unsubscribe {
            packet_id,
            filters,
            ..Unsubscribe::default()
        }));
    }

    /// The application has taken inbound message `packet_id`: acknowledge it.
    pub fn ack_inbound(&mut self, packet_id: u16, qos: QoS) {
        if !self.is_connected() {
            return;
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.transmit.push_back(Packet::PubAck(Ack::new(packet_id))),
            QoS::ExactlyOnce => self.transmit.push_back(Packet::PubRec(Ack::new(packet_id))),
        }
    }

    pub(super) fn send_waiting(&mut self) {
        let window = self.server_receive_maximum();
        while let Some((_, front)) = self.waiting.front() {
            let needs_id = Self::qos_needs_id(front.qos);
            if needs_id && self.outbound.len() >= window {
                break;
            }
            let Some((token, mut publish)) = self.waiting.pop_front() else {
                break;
            };
            if needs_id {
                let Some(id) = self.next_packet_id() else {
                    self.waiting.push_front((token, publish));
                    break;
                };
                publish.packet_id = id;
                self.outbound.insert(
                    id,
                    OutEntry {
                        token,
                        publish: publish.clone(),
                        stage: OutStage::AwaitingAck,
                    },
                );
            } else {
                self.qos0_transmitted.push(token);
            }
            self.transmit.push_back(Packet::Publish(publish));
        }
    }

    /// After CONNACK: resend what the broker has not acknowledged.
    pub(super) fn resume(&mut self, session_present: bool) {
        for (id, entry) in self.outbound.iter_mut() {
            match entry.stage {
                OutStage::AwaitingComp if session_present => {
                    self.transmit.push_back(Packet::PubRel(Ack::new(*id)));
                }
                _ => {
                    entry.stage = OutStage::AwaitingAck;
                    let mut p = entry.publish.clone();
                    p.dup = session_present;
                    self.transmit.push_back(Packet::Publish(p));
                }
            }
        }
        // SUBSCRIBE/UNSUBSCRIBE in flight on the old connection get no answer now.
        for (_, (token, is_sub)) in std::mem::take(&mut self.pending_requests) {
            self.events.push_back(if is_sub {
                ClientEvent::Subscribed {
                    token,
                    reasons: vec![ReasonCode::UNSPECIFIED_ERROR],
                }
            } else {
                ClientEvent::Unsubscribed {
                    token,
                    reasons: vec![ReasonCode::UNSPECIFIED_ERROR],
                }
            });
        }
    }

    pub(super) fn handle_connected(&mut self, _now: Instant, packet: Packet) {
        match packet {
            Packet::Publish(p) => self.handle_inbound_publish(p),
            Packet::PubAck(a) => self.complete(a, QoS::AtLeastOnce),
            Packet::PubRec(a) => match self.outbound.get_mut(&a.packet_id) {
                Some(e)
                    if e.publish.qos == QoS::ExactlyOnce && e.stage == OutStage::AwaitingAck =>
                {
                    if a.reason.is_error() {
                        self.complete(a, QoS::ExactlyOnce);
                    } else {
                        e.stage = OutStage::AwaitingComp;
                        self.transmit
                            .push_back(Packet::PubRel(Ack::new(a.packet_id)));
                    }
                }
                _ => self
                    .transmit
                    .push_back(Packet::PubRel(Ack::new(a.packet_id))),
            },
            Packet::PubComp(a) => self.complete(a, QoS::ExactlyOnce),
            Packet::PubRel(a) => {
                self.inbound_qos2.remove(&a.packet_id);
                self.transmit
                    .push_back(Packet::PubComp(Ack::new(a.packet_id)));
            }
            Packet::SubAck(s) => {
                if let Some((token, _)) = self.pending_requests.remove(&s.packet_id) {
                    self.events.push_back(ClientEvent::Subscribed {
                        token,
                        reasons: s.reasons,
                    });
                }
            }
            Packet::UnsubAck(u) => {
                if let Some((token, _)) = self.pending_requests.remove(&u.packet_id) {
                    self.events.push_back(ClientEvent::Unsubscribed {
                        token,
                        reasons: u.reasons,
                    });
                }
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => self.close(ClientCloseReason::ClosedByBroker {
                reason: d.reason,
                reason_string: d.properties.reason_string.clone(),
            }),
            other => self.violation(format!("a broker must not send {:?}", other.packet_type())),
        }
    }

    fn handle_inbound_publish(&mut self, p: Publish) {
        if p.qos == QoS::ExactlyOnce && self.inbound_qos2.contains(&p.packet_id) {
            // Re-sent before our PUBREC arrived: acknowledge again, deliver once.
            self.transmit
                .push_back(Packet::PubRec(Ack::new(p.packet_id)));
            return;
        }
        if p.qos == QoS::ExactlyOnce {
            self.inbound_qos2.insert(p.packet_id);
        }
        self.events.push_back(ClientEvent::Message(Box::new(p)));
    }

    fn complete(&mut self, a: Ack, qos: QoS) {
        let done = self.outbound.get(&a.packet_id).is_some_and(|e| {
            e.publish.qos == qos
                && (qos == QoS::AtLeastOnce
                    || e.stage == OutStage::AwaitingComp
                    || a.reason.is_error())
        });
        if !done {
            return;
        }
        if let Some(e) = self.outbound.remove(&a.packet_id) {
            self.events.push_back(ClientEvent::Published {
                token: e.token,
                reason: a.reason,
            });
        }
        self.send_waiting();
    }

    /// Tokens of the QoS 0 publishes handed to `poll_transmit` since the last
    /// call: they are done once the driver has written what it polled (QoS 0
    /// has no ack, so only the driver can say they left).
    pub fn take_transmitted_qos0(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.qos0_transmitted)
    }

    /// Fails every QoS 0 publish still waiting (they cannot survive a lost connection).
    pub fn drain_unsent_qos0(&mut self) -> Vec<u64> {
        let mut tokens = Vec::new();
        self.waiting.retain(|(token, p)| {
            if p.qos == QoS::AtMostOnce {
                tokens.push(*token);
                false
            } else {
                true
            }
        });
        tokens
    }

    /// The size `publish` would have on the wire, if that is above the
    /// broker's Maximum Packet Size (from the last CONNACK): such a PUBLISH
    /// must not be sent (the broker would close the connection with 0x95).
    pub fn oversize(&self, publish: &Publish) -> Option<(usize, u32)> {
        let size = publish.view().encoded_len(self.version());
        let max = self.server_max_packet_size();
        (size > max as usize).then_some((size, max))
    }

    /// Whether a packet fits the broker's Maximum Packet Size.
    pub fn fits(&self, packet: &Packet) -> bool {
        packet.encoded_len(self.version()) <= self.server_max_packet_size() as usize
    }

    /// Ends the connection as the driver saw it end (`ClientCloseReason`).
    pub fn fail(&mut self, reason: ClientCloseReason) {
        self.close(reason);
    }
}
