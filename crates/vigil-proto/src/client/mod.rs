//! The client side of an MQTT connection, as a sans-IO state machine.
//!
//! Keep alive (docs/keepalive.md, client rules): a PINGREQ goes out
//! every K seconds after the previous one, whatever else is being sent, so a
//! client that only publishes QoS 0 still probes the link and still notices a
//! dead one; that also keeps the gap between two sent packets under K. After a
//! PINGREQ, ANY inbound packet is proof of life. If none arrives within the
//! ping timeout the connection is declared dead with the numbers attached.
//! Server Keep Alive from CONNACK replaces the requested value.

mod enhanced_auth;
mod flows;

pub use enhanced_auth::ScramLogin;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::scram::ScramClient;
use crate::{
    ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Will,
};

/// What the client asks for when it connects. Non-exhaustive so that new
/// settings are not breaking changes: start from `ClientConfig::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Client identifier (empty: let the broker assign one; needs clean start).
    pub client_id: String,
    /// Clean Start / Clean Session.
    pub clean_start: bool,
    /// Requested keep alive, seconds (0 = off).
    pub keep_alive: u16,
    /// How long to wait for any packet after a PINGREQ (default: the keep alive).
    pub ping_timeout: Option<Duration>,
    /// How long to wait for CONNACK.
    pub connect_timeout: Duration,
    /// Session Expiry Interval (MQTT 5), seconds.
    pub session_expiry: u32,
    /// Will message.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Inbound QoS 1/2 messages we accept unacknowledged (MQTT 5 Receive Maximum).
    pub receive_maximum: u16,
    /// Largest packet we accept (MQTT 5 Maximum Packet Size).
    pub max_packet_size: Option<u32>,
    /// Our own cap on outbound QoS 1/2 messages in flight, below the broker's
    /// Receive Maximum. It is the whole window at MQTT 3.1.1, where the broker
    /// announces none (and may close a client that exceeds what it allows).
    pub max_inflight: u16,
    /// Log in with SCRAM (MQTT 5 enhanced authentication) instead of a
    /// password; the driver gives each exchange a nonce (`set_auth_nonce`).
    pub scram: Option<ScramLogin>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            version: ProtocolVersion::V5,
            client_id: String::new(),
            clean_start: true,
            keep_alive: 30,
            ping_timeout: None,
            connect_timeout: Duration::from_secs(10),
            session_expiry: 0,
            will: None,
            username: None,
            password: None,
            receive_maximum: 100,
            max_packet_size: None,
            max_inflight: 100,
            scram: None,
        }
    }
}

/// Why a client connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCloseReason {
    /// No packet at all arrived within the ping timeout after a PINGREQ.
    KeepAliveTimeout {
        /// The ping timeout that ran out after the PINGREQ.
        waited: Duration,
        /// The keep alive in force.
        keep_alive: Duration,
    },
    /// No CONNACK within the connect timeout.
    ConnectTimeout(Duration),
    /// CONNACK with a failure code.
    Refused(ReasonCode),
    /// The broker sent DISCONNECT.
    ClosedByBroker {
        /// Its reason code.
        reason: ReasonCode,
        /// Its Reason String, if any.
        reason_string: Option<String>,
    },
    /// The broker broke the protocol.
    ProtocolViolation(String),
    /// The application asked to disconnect.
    Requested,
    /// The transport failed.
    Transport(String),
    /// The SCRAM exchange failed on our side: the server's signature was
    /// wrong (it does not hold the credential) or its message was malformed.
    AuthenticationFailed(String),
    /// The broker closed the connection without DISCONNECT (MQTT 3.1.1 has
    /// none; some brokers just close). The numbers say whether the broker
    /// probably expired this client's keep alive.
    ClosedWithoutDisconnect {
        /// Time from this client's last packet written to the close (`None`:
        /// nothing was written on this connection).
        since_last_sent: Option<Duration>,
        /// The keep alive in force (zero: off).
        keep_alive: Duration,
        /// Whether a PINGREQ was waiting for an answer.
        ping_outstanding: bool,
    },
}

/// What the client session reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// CONNACK accepted us.
    Connected {
        /// Session Present.
        session_present: bool,
        /// The keep alive in force (Server Keep Alive if the broker sent one).
        keep_alive: u16,
        /// Identifier assigned by the broker, if we sent none.
        assigned_client_id: Option<String>,
    },
    /// A message from the broker. QoS 1/2 messages are acknowledged only when
    /// the driver calls `ack_inbound` (flow control towards the broker).
    Message(Box<Publish>),
    /// Our QoS 1/2 publish `token` completed (PUBACK, or PUBCOMP for QoS 2).
    Published {
        /// The caller's token.
        token: u64,
        /// Reason code from the ack.
        reason: ReasonCode,
    },
    /// SUBACK for `token`.
    Subscribed {
        /// The caller's token.
        token: u64,
        /// One code per filter.
        reasons: Vec<ReasonCode>,
    },
    /// UNSUBACK for `token`.
    Unsubscribed {
        /// The caller's token.
        token: u64,
        /// One code per filter (MQTT 5).
        reasons: Vec<ReasonCode>,
    },
    /// A re-authentication (`reauthenticate`) succeeded: the server proved
    /// itself again.
    Reauthenticated,
    /// The connection ended.
    Closed(ClientCloseReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OutStage {
    AwaitingAck,
    AwaitingComp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutEntry {
    pub(crate) token: u64,
    pub(crate) publish: Publish,
    pub(crate) stage: OutStage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    AwaitingConnAck { deadline: Instant },
    Connected,
    Closed,
}

/// The client state machine. It survives reconnects: `start` begins a new
/// connection and resumes unacknowledged messages when the broker kept the session.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    phase: Phase,
    keep_alive: Duration,
    ping_timeout: Duration,
    last_ping: Instant,
    ping_outstanding: Option<Instant>,
    last_sent: Option<Instant>,
    server_receive_maximum: u16,
    server_max_packet_size: u32,
    pub(crate) outbound: BTreeMap<u16, OutEntry>,
    pub(crate) waiting: VecDeque<(u64, Publish)>,
    pub(crate) pending_requests: BTreeMap<u16, (u64, bool)>,
    pub(crate) inbound_qos2: BTreeSet<u16>,
    pub(crate) last_packet_id: u16,
    pub(crate) transmit: VecDeque<Packet>,
    pub(crate) qos0_transmitted: Vec<u64>,
    pub(crate) events: VecDeque<ClientEvent>,
    /// The SCRAM exchange in progress (boxed: most clients never log in so).
    scram: Option<Box<ScramClient>>,
    /// The nonce for the next SCRAM exchange.
    auth_nonce: Option<String>,
}

impl ClientSession {
    /// A session that has not connected yet.
    pub fn new(config: ClientConfig, now: Instant) -> ClientSession {
        ClientSession {
            keep_alive: Duration::from_secs(u64::from(config.keep_alive)),
            ping_timeout: Duration::ZERO,
            config,
            phase: Phase::Idle,
            last_ping: now,
            ping_outstanding: None,
            last_sent: None,
            server_receive_maximum: u16::MAX,
            server_max_packet_size: u32::MAX,
            outbound: BTreeMap::new(),
            waiting: VecDeque::new(),
            pending_requests: BTreeMap::new(),
            inbound_qos2: BTreeSet::new(),
            last_packet_id: 0,
            transmit: VecDeque::new(),
            qos0_transmitted: Vec::new(),
            events: VecDeque::new(),
            scram: None,
            auth_nonce: None,
        }
    }

    /// The protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.config.version
    }

    /// True between CONNACK and the end of the connection.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// True once the current connection has ended.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The keep alive in force.
    pub fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// Starts a connection on a fresh transport: queues CONNECT.
    pub fn start(&mut self, now: Instant) {
        self.transmit.clear();
        self.qos0_transmitted.clear();
        self.ping_outstanding = None;
        self.last_sent = None;
        self.keep_alive = Duration::from_secs(u64::from(self.config.keep_alive));
        self.scram = None;
        let scram = match (&self.config.scram, self.config.version.is_v5()) {
            (Some(_), false) => Err("SCRAM login needs MQTT 5 (AUTH packets)".to_string()),
            _ => self.begin_scram(),
        };
        let c = &self.config;
        let mut properties = Properties::default();
        match scram {
            Ok(Some((mechanism, first))) => {
                properties.authentication_method = Some(mechanism.name().to_string());
                properties.authentication_data = Some(Bytes::from(first));
            }
            Ok(None) => {}
            Err(why) => {
                self.phase = Phase::AwaitingConnAck { deadline: now };
                return self.close(ClientCloseReason::AuthenticationFailed(why));
            }
        }
        if c.version.is_v5() {
            properties.session_expiry_interval = (c.session_expiry > 0).then_some(c.session_expiry);
            properties.receive_maximum =
                (c.receive_maximum != u16::MAX).then_some(c.receive_maximum.max(1));
            properties.maximum_packet_size = c.max_packet_size;
        }
        self.transmit.push_back(Packet::Connect(Box::new(Connect {
            protocol: c.version,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            properties,
            client_id: c.client_id.clone(),
            will: c.will.clone(),
            username: c.username.clone(),
            password: c.password.clone(),
        })));
        self.phase = Phase::AwaitingConnAck {
            deadline: now + c.connect_timeout,
        };
    }

    /// The transport failed.
    pub fn handle_transport_closed(&mut self, why: String) {
        self.close(ClientCloseReason::Transport(why));
    }

    /// The driver wrote the packets it polled to the transport at `now`.
    /// Only the driver knows when bytes really left, so it tells the session:
    /// that instant is what a broker's keep-alive timer measures.
    pub fn handle_transmitted(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }

    /// The broker closed the transport (EOF or reset) without DISCONNECT at `now`.
    pub fn handle_peer_closed(&mut self, now: Instant) {
        let reason = ClientCloseReason::ClosedWithoutDisconnect {
            since_last_sent: self.last_sent.map(|t| now.saturating_duration_since(t)),
            keep_alive: self.keep_alive,
            ping_outstanding: self.ping_outstanding.is_some(),
        };
        self.close(reason);
    }

    /// When this client last wrote to the transport on this connection.
    pub fn last_sent(&self) -> Option<Instant> {
        self.last_sent
    }

    /// The application asks to leave: DISCONNECT (normal, so no will) then close.
    pub fn disconnect(&mut self) {
        if self.phase == Phase::Connected {
            self.transmit
                .push_back(Packet::Disconnect(crate::Disconnect::default()));
        }
        self.close(ClientCloseReason::Requested);
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmit.pop_front()
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The next deadline: CONNACK timeout, next PINGREQ, or ping timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingConnAck { deadline } => Some(deadline),
            Phase::Connected if !self.keep_alive.is_zero() => Some(match self.ping_outstanding {
                Some(sent) => sent + self.ping_timeout,
                None => self.last_ping + self.keep_alive,
            }),
            _ => None,
        }
    }

    /// Fires whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::AwaitingConnAck { deadline } if now >= deadline => {
                self.close(ClientCloseReason::ConnectTimeout(
                    self.config.connect_timeout,
                ));
            }
            Phase::Connected if !self.keep_alive.is_zero() => {
                if let Some(sent) = self.ping_outstanding {
                    if now >= sent + self.ping_timeout {
                        // Report the timeout waited for, not the timer's lateness.
                        self.close(ClientCloseReason::KeepAliveTimeout {
                            waited: self.ping_timeout,
                            keep_alive: self.keep_alive,
                        });
                    }
                } else if now >= self.last_ping + self.keep_alive {
                    self.transmit.push_back(Packet::PingReq);
                    self.last_ping = now;
                    self.ping_outstanding = Some(now);
                }
            }
            _ => {}
        }
    }

    /// A packet from the broker.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) {
        // Any inbound packet is proof of life, not only PINGRESP.
        self.ping_outstanding = None;
        match (self.phase, packet) {
            (Phase::Closed | Phase::Idle, _) => {}
            (Phase::AwaitingConnAck { .. }, Packet::ConnAck(ack)) => self.handle_connack(now, ack),
            (Phase::AwaitingConnAck { .. } | Phase::Connected, Packet::Auth(a)) => {
                self.handle_auth(a)
            }
            (Phase::AwaitingConnAck { .. }, other) => {
                self.violation(format!("expected CONNACK, got {:?}", other.packet_type()))
            }
            (Phase::Connected, packet) => self.handle_connected(now, packet),
        }
    }

    fn handle_connack(&mut self, now: Instant, ack: ConnAck) {
        if ack.reason.is_error() {
            return self.close(ClientCloseReason::Refused(ack.reason));
        }
        if !self.check_server_final(ack.properties.authentication_data.as_ref()) {
            return;
        }
        let p = &ack.properties;
        let keep_alive = p.server_keep_alive.unwrap_or(self.config.keep_alive);
        self.keep_alive = Duration::from_secs(u64::from(keep_alive));
        self.ping_timeout = self.config.ping_timeout.unwrap_or(self.keep_alive);
        self.server_receive_maximum = p.receive_maximum.unwrap_or(u16::MAX);
        self.server_max_packet_size = p.maximum_packet_size.unwrap_or(u32::MAX);
        self.last_ping = now;
        self.phase = Phase::Connected;
        if !ack.session_present {
            // The broker has no state for us: QoS 2 releases in flight can never complete;
            // unacknowledged PUBLISHes are sent again as new messages.
            self.inbound_qos2.clear();
        }
        self.resume(ack.session_present);
        self.events.push_back(ClientEvent::Connected {
            session_present: ack.session_present,
            keep_alive,
            assigned_client_id: ack.properties.assigned_client_identifier.clone(),
        });
        self.send_waiting();
    }

    pub(crate) fn violation(&mut self, what: String) {
        if self.config.version.is_v5() && self.phase == Phase::Connected {
            self.transmit
                .push_back(Packet::Disconnect(crate::Disconnect::new(
                    ReasonCode::PROTOCOL_ERROR,
                )));
        }
        self.close(ClientCloseReason::ProtocolViolation(what));
    }

    pub(crate) fn close(&mut self, reason: ClientCloseReason) {
        if matches!(self.phase, Phase::Closed | Phase::Idle) {
            return;
        }
        self.phase = Phase::Closed;
        self.ping_outstanding = None;
        self.events.push_back(ClientEvent::Closed(reason));
    }

    pub(crate) fn next_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
            let id = self.last_packet_id;
            if !self.outbound.contains_key(&id) && !self.pending_requests.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// QoS 1/2 publishes allowed in flight: the broker's Receive Maximum,
    /// capped by our own `max_inflight`.
    pub(crate) fn server_receive_maximum(&self) -> usize {
        usize::from(
            self.server_receive_maximum
                .min(self.config.max_inflight)
                .max(1),
        )
    }

    pub(crate) fn server_max_packet_size(&self) -> u32 {
        self.server_max_packet_size
    }

    pub(crate) fn qos_needs_id(qos: QoS) -> bool {
        qos != QoS::AtMostOnce
    }
}

#[cfg(test)]
mod tests;
