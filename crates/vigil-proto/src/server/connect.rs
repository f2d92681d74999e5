//! CONNECT in, CONNACK out: the version, keep alive and client id checks
//! made before the broker sees a client, and the CONNACK that answers it.

use std::time::Instant;

use super::*;

impl ServerConnection {
    /// The broker accepted the CONNECT: send CONNACK, resume the session.
    pub fn accept(&mut self, now: Instant, accepted: Accepted) {
        if self.phase != Phase::Connecting {
            return;
        }
        let mut ack = ConnAck {
            session_present: accepted.session_present,
            ..ConnAck::default()
        };
        if self.version.is_v5() {
            ack.properties = self.connack_properties(accepted.assigned_client_id).into();
            if let Some(auth) = self.rare.auth_mut() {
                auth.awaiting_client = false;
                ack.properties.authentication_method = Some(auth.method.clone());
                ack.properties.authentication_data = accepted.auth_data;
            }
        }
        let mut packet = Packet::ConnAck(ack);
        if packet.encoded_len(self.version) > self.client_max_packet_size as usize {
            // Too large for the client (MQTT-3.1.2-24): the "available"
            // flags go first, their absence means the same (3.2.2.3).
            if let Packet::ConnAck(ack) = &mut packet {
                let p = &mut ack.properties;
                p.retain_available = None;
                p.wildcard_subscription_available = None;
                p.subscription_identifier_available = None;
                p.shared_subscription_available = None;
            }
        }
        let len = packet.encoded_len(self.version);
        if len > self.client_max_packet_size as usize {
            // What is left (assigned client id, keep alive, limits) changes
            // what the client must do, so it cannot be cut: no CONNACK at
            // all is the only answer that breaks no rule.
            self.phase = Phase::Connected;
            self.state = accepted.state;
            return self.close_silently(CloseReason::ProtocolError {
                reason: ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                detail: format!(
                    "its CONNACK of {len} bytes exceeds the client's Maximum Packet Size of {} bytes",
                    self.client_max_packet_size
                ),
            });
        }
        self.urgent.push_back(packet);
        self.phase = Phase::Connected;
        self.state = accepted.state;
        self.resend_inflight(now);
        self.send_pending(now);
        while let Some(p) = self.held.pop_front() {
            if self.phase != Phase::Connected {
                break;
            }
            self.handle_connected(now, p);
        }
    }

    /// The broker refused the CONNECT with `reason`.
    pub fn refuse(&mut self, reason: ReasonCode) {
        if self.phase != Phase::Connecting {
            return;
        }
        self.urgent.push_back(Packet::ConnAck(ConnAck {
            reason,
            ..ConnAck::default()
        }));
        self.close_silently(CloseReason::ConnectRefused(reason));
    }

    fn connack_properties(&self, assigned: Option<String>) -> Properties {
        Properties {
            assigned_client_identifier: assigned,
            server_keep_alive: self.server_keep_alive,
            receive_maximum: Some(self.config.receive_maximum),
            topic_alias_maximum: Some(self.config.topic_alias_maximum),
            maximum_packet_size: Some(self.config.max_packet_size),
            retain_available: Some(1),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(1),
            ..Properties::default()
        }
    }

    pub(super) fn handle_connect(
        &mut self,
        now: Instant,
        connect: Box<Connect>,
        deadline: Instant,
    ) {
        self.version = connect.protocol;
        let method = connect.properties.authentication_method.as_ref();
        if let (Some(method), true) = (method, self.config.enhanced_auth) {
            self.rare.set_auth(enhanced_auth::EnhancedAuth {
                method: method.clone(),
                awaiting_client: false,
                reauthenticating: false,
                connect_deadline: deadline,
                state: None,
            });
        } else if method.is_some() {
            // No enhanced authentication here: refused, and closed
            // (MQTT-4.12.0-1), rather than accepted as if it had succeeded.
            let code = ReasonCode::BAD_AUTHENTICATION_METHOD;
            self.urgent.push_back(Packet::ConnAck(ConnAck {
                reason: code,
                ..ConnAck::default()
            }));
            return self.close_silently(CloseReason::ConnectRefused(code));
        }
        let seconds = match self
            .config
            .keep_alive
            .decide(connect.keep_alive, self.version)
        {
            KeepAliveDecision::Use { seconds, announce } => {
                if announce {
                    self.server_keep_alive = Some(seconds);
                }
                seconds
            }
            KeepAliveDecision::Refuse(code) => {
                self.urgent.push_back(Packet::ConnAck(ConnAck {
                    reason: code,
                    ..ConnAck::default()
                }));
                return self.close_silently(CloseReason::ProtocolError {
                    reason: code,
                    detail: format!(
                        "keep alive {} s is outside the configured limits {}..={} s",
                        connect.keep_alive, self.config.keep_alive.min, self.config.keep_alive.max
                    ),
                });
            }
        };
        // MQTT 3.1 has no server-assigned identifiers: its client id must be
        // 1 to 23 characters, and an empty one is refused with code 2.
        let v31_empty = connect.client_id.is_empty() && self.version == ProtocolVersion::V3_1;
        if v31_empty
            || (connect.client_id.is_empty() && !connect.clean_start && !self.version.is_v5())
        {
            self.urgent.push_back(Packet::ConnAck(ConnAck {
                reason: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                ..ConnAck::default()
            }));
            return self.close_silently(CloseReason::ConnectRefused(
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            ));
        }
        let props = &connect.properties;
        if self.version.is_v5() {
            self.client_receive_maximum = props.receive_maximum.unwrap_or(u16::MAX);
            self.client_max_packet_size = props.maximum_packet_size.unwrap_or(u32::MAX);
            self.session_expiry = props.session_expiry_interval.unwrap_or(0);
            if self.config.server_topic_aliases {
                self.client_topic_alias_max = props.topic_alias_maximum.unwrap_or(0);
            }
        }
        self.keep_alive = Some(KeepAliveTimer::new(seconds, now));
        self.phase = Phase::Connecting;
        self.events.push_back(ServerEvent::Connect(connect));
    }
}

/// Names what a connection that did not start with CONNECT most likely is,
/// so the log line tells the operator which listener the client wanted.
pub(super) fn first_byte_diagnosis(first: u8) -> &'static str {
    match first {
        // A TLS record of type handshake: the ClientHello.
        0x16 => "first byte 0x16 starts a TLS ClientHello: TLS sent to a plain MQTT listener",
        // GET, POST, PUT, HEAD, OPTIONS, DELETE, CONNECT (as text), PATCH.
        b'G' | b'P' | b'H' | b'O' | b'D' | b'C' => {
            "first bytes look like an HTTP request: HTTP or WebSocket sent to a plain MQTT listener"
        }
        _ => "first packet is not CONNECT",
    }
}
