//! The server side of one MQTT connection, as a sans-IO state machine.
//!
//! The tokio driver feeds it decoded packets and the current time, carries the
//! broker's answers back in (`accept`, `publish_routed`, `send_suback`, ...),
//! and writes out whatever `poll_transmit` yields. Control packets (CONNACK,
//! acks, PINGRESP, DISCONNECT) always come out ahead of queued deliveries, so
//! a PINGRESP never waits behind a backlog of messages (docs/keepalive.md,
//! broker rule 2).
//! One deadline (`poll_timeout`) covers the connect timeout and keep alive.

mod close;
mod connect;
mod denied;
mod enhanced_auth;
mod inbound;
mod keep_alive;
mod outbound;
mod park;
mod rare;
mod session_state;
mod throttle;
mod topic_aliases;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use close::CloseReason;
pub use enhanced_auth::AuthState;
pub use keep_alive::{KeepAliveDecision, KeepAlivePolicy};
pub use park::{ParkedConnection, PINGREQ, PINGRESP};
pub use session_state::{Inflight, InflightMap, InflightStage, PacketIdHasher, SessionState};
pub use throttle::{PublishRateLimit, TokenBucket, BURST};

use keep_alive::KeepAliveTimer;
use throttle::PublishThrottle;

use crate::{
    ConnAck, Connect, DecodeError, Disconnect, EncodeError, Packet, Properties, ProtocolVersion,
    Publish, ReasonCode, Subscribe, Unsubscribe,
};

/// Limits and policies of the server side, shared by every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest packet accepted from a client (announced in MQTT 5 CONNACK).
    pub max_packet_size: u32,
    /// Inbound QoS 1/2 messages a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Topic aliases a client may use (0 disables them).
    pub topic_alias_maximum: u16,
    /// Outbound in-flight window for clients that announce no Receive Maximum.
    pub max_inflight: u16,
    /// Keep-alive limits.
    pub keep_alive: KeepAlivePolicy,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Whether topics sent to MQTT 5 clients that allow Topic Alias
    /// Maximum > 0 get aliases.
    pub server_topic_aliases: bool,
    /// Whether a CONNECT with an Authentication Method goes to the broker
    /// (which runs the exchange); false refuses it with CONNACK 0x8C.
    pub enhanced_auth: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_packet_size: 1024 * 1024,
            receive_maximum: 100,
            topic_alias_maximum: 64,
            max_inflight: 100,
            keep_alive: KeepAlivePolicy::default(),
            connect_timeout: Duration::from_secs(10),
            server_topic_aliases: true,
            enhanced_auth: false,
        }
    }
}

/// What the connection asks of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A valid CONNECT: answer with `accept` or `refuse`.
    Connect(Box<Connect>),
    /// A message to route; for QoS 1/2 answer with `publish_routed`.
    Publish(Publish),
    /// Answer with `send_suback`.
    Subscribe(Subscribe),
    /// Answer with `send_unsuback`.
    Unsubscribe(Unsubscribe),
    /// The connection is over; flush `poll_transmit`, then close the socket.
    Closed(Closed),
    /// The client sent PUBREL for inbound QoS 2 message `packet_id`: it is no
    /// longer guarded against re-delivery.
    Released(u16),
    /// The client's AUTH in an enhanced authentication exchange: 0x18 goes
    /// on with the exchange CONNECT (or a re-authentication) began, 0x19
    /// starts a re-authentication. Answer with `auth_continue`, then
    /// `accept` / `refuse` before CONNACK, `reauth_succeeded` /
    /// `reauth_failed` after.
    Auth(Box<crate::Auth>),
}

/// A stored delivery's step through the outbound handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryProgress {
    /// The delivery's key in the durable queue (`Outgoing::persisted`).
    pub seq: std::num::NonZeroU64,
    /// Its delivery QoS: a QoS 2 step must be durable before the packet that
    /// follows it (PUBLISH, PUBREL) is written, or a restart could deliver twice.
    pub qos: crate::QoS,
    /// What happened.
    pub step: DeliveryStep,
}

/// Where a stored delivery is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStep {
    /// Sent as PUBLISH with this packet id; resend it with DUP on resume.
    Sent(u16),
    /// PUBREC received and PUBREL sent for this packet id (QoS 2).
    Released(u16),
    /// Acknowledged, refused, expired or discarded: forget it.
    Done,
}

/// How a connection ended and what the broker must do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Why it ended.
    pub reason: CloseReason,
    /// Whether the will must be published (no DISCONNECT 0x00 was received).
    pub publish_will: bool,
    /// A new Session Expiry Interval sent in the client's DISCONNECT (MQTT 5).
    pub session_expiry: Option<u32>,
}

/// The broker's yes to a CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Session Present flag for CONNACK.
    pub session_present: bool,
    /// The identifier the broker chose for a client that sent an empty one.
    pub assigned_client_id: Option<String>,
    /// The resumed session state (default for a new session).
    pub state: SessionState,
    /// Authentication Data for CONNACK, when the CONNECT named a method
    /// (such as SCRAM's server-final).
    pub auth_data: Option<Bytes>,
}

/// Messages dropped on the way out, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Message Expiry Interval ran out before sending.
    pub expired: u64,
    /// Larger than the client's Maximum Packet Size.
    pub too_large: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingConnect {
        deadline: Instant,
    },
    Connecting,
    Connected,
    /// Over; `told_why`: the last packet queued says why (DISCONNECT, or a
    /// CONNACK that refuses), so the driver lets the client read it.
    Closed {
        told_why: bool,
    },
}

/// The first byte of every valid CONNECT: type 1, flags 0 (MQTT-3.1.0-1, MQTT-2.1.3-1).
const CONNECT_FIRST_BYTE: u8 = 0x10;

/// Packets a client may pipeline after CONNECT before the broker has answered.
const MAX_HELD: usize = 64;

/// The state machine of one server-side connection.
#[derive(Debug)]
pub struct ServerConnection {
    config: ServerConfig,
    phase: Phase,
    version: ProtocolVersion,
    keep_alive: Option<KeepAliveTimer>,
    server_keep_alive: Option<u16>,
    session_expiry: u32,
    client_receive_maximum: u16,
    client_max_packet_size: u32,
    /// Aliases the client allows us (its CONNECT's Topic Alias Maximum; 0
    /// when it allows none or the feature is off).
    client_topic_alias_max: u16,
    /// Topic aliases both ways, allocated at the first alias either way
    /// (8 bytes in every connection until then).
    aliases: Option<Box<topic_aliases::TopicAliases>>,
    state: SessionState,
    inbound_qos1_unacked: u16,
    /// The in-flight window filled and has not yet drained to where it reopens.
    window_full: bool,
    held: VecDeque<Packet>,
    urgent: VecDeque<Packet>,
    deliveries: VecDeque<Transmit>,
    events: VecDeque<ServerEvent>,
    progress: Vec<DeliveryProgress>,
    drops: DropCounts,
    /// Enhanced authentication and publish rate limits, which most
    /// connections never have: one pointer for both.
    rare: rare::Rare,
}

/// A delivery waiting for the wire. The PUBLISH is built only when it is
/// written: a `Packet` is ~400 bytes (its properties inline), and every hop
/// through a queue is a copy. A QoS 1/2 delivery is not copied here at all:
/// its entry in the in-flight map is what gets written.
#[derive(Debug)]
enum Transmit {
    /// A QoS 0 delivery, which nothing else holds.
    Publish {
        /// When it was handed to the window: expiry counts down to here.
        at: Instant,
        outgoing: crate::message::Outgoing,
    },
    /// The in-flight message of `packet_id`.
    Inflight {
        packet_id: u16,
        dup: bool,
        /// When it was handed to the window: expiry counts down to here.
        at: Instant,
    },
    PubRel(u16),
}

impl ServerConnection {
    /// A new connection accepted at `now`; the connect timeout starts.
    pub fn new(config: ServerConfig, now: Instant) -> ServerConnection {
        ServerConnection {
            config,
            phase: Phase::AwaitingConnect {
                deadline: now + config.connect_timeout,
            },
            version: ProtocolVersion::V5,
            keep_alive: None,
            server_keep_alive: None,
            session_expiry: 0,
            client_receive_maximum: config.max_inflight,
            client_max_packet_size: u32::MAX,
            client_topic_alias_max: 0,
            aliases: None,
            state: SessionState::default(),
            inbound_qos1_unacked: 0,
            window_full: false,
            held: VecDeque::new(),
            urgent: VecDeque::new(),
            deliveries: VecDeque::new(),
            events: VecDeque::new(),
            progress: Vec::new(),
            drops: DropCounts::default(),
            rare: rare::Rare::default(),
        }
    }

    /// Holds the client to `limit` from `now` (full buckets): over it,
    /// [`ServerConnection::reading_paused`] tells the driver to stop
    /// reading. Not part of [`ServerConfig`], which every connection
    /// carries inline: most brokers set no limit and pay nothing for it.
    pub fn limit_publish_rate(&mut self, limit: PublishRateLimit, now: Instant) {
        self.rare
            .set_throttle(PublishThrottle::new(limit, now).map(|t| *t));
    }

    /// True while the client is over its publish rate: the driver must not
    /// read its socket, nor decode what it already read, until
    /// `handle_timeout` at `poll_timeout` ends the pause. Keep alive does not
    /// run meanwhile (docs/keepalive.md, broker rule 11).
    pub fn reading_paused(&self) -> bool {
        self.rare
            .throttle()
            .is_some_and(|t| t.paused_until().is_some())
    }

    /// The protocol version (known once CONNECT arrived; V5 before).
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The largest packet this connection accepts (for the decoder).
    pub fn max_packet_size(&self) -> u32 {
        self.config.max_packet_size
    }

    /// The effective keep alive, once connected.
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive.map(|k| k.keep_alive())
    }

    /// True once the connection has ended; flush `poll_transmit` then close.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed { .. })
    }

    /// True once closed with a packet that tells the client why (DISCONNECT
    /// or a refusing CONNACK): the driver should half-close and drain the
    /// client's bytes a little before closing, or the kernel answers them
    /// with a reset that can destroy the reason before it is read.
    pub fn told_why(&self) -> bool {
        matches!(self.phase, Phase::Closed { told_why: true })
    }

    /// True once CONNACK accepted the client.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Outbound QoS 1/2 messages sent and not yet acknowledged.
    pub fn inflight(&self) -> usize {
        self.state.inflight.len()
    }

    /// Outbound messages dropped so far.
    pub fn drops(&self) -> DropCounts {
        self.drops
    }

    /// Decodes the next packet from the client's bytes at the front of `buf`
    /// (`Ok(None)`: more bytes needed). Before CONNECT, a first byte that is
    /// not CONNECT's (0x10) is refused as soon as it is read: an HTTP request
    /// or a port scan is not held until the connect timeout.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        if let (Phase::AwaitingConnect { .. }, Some(&first)) = (self.phase, buf.first()) {
            if first != CONNECT_FIRST_BYTE {
                return Err(DecodeError::Protocol(connect::first_byte_diagnosis(first)));
            }
        }
        Packet::decode(buf, self.version, self.config.max_packet_size)
    }

    /// Bytes of a packet still arriving: activity for keep alive (rule 9).
    pub fn handle_read_progress(&mut self, now: Instant) {
        if let Some(k) = &mut self.keep_alive {
            k.touch(now);
        }
    }

    /// A complete packet from the client.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) {
        self.handle_read_progress(now);
        match self.phase {
            Phase::Closed { .. } => {}
            Phase::AwaitingConnect { deadline } => match packet {
                Packet::Connect(c) => self.handle_connect(now, c, deadline),
                other => self.close_silently(CloseReason::ProtocolError {
                    reason: ReasonCode::PROTOCOL_ERROR,
                    detail: format!("first packet was {:?}, not CONNECT", other.packet_type()),
                }),
            },
            Phase::Connecting if self.rare.auth().is_some() => {
                self.handle_auth_before_connack(packet)
            }
            Phase::Connecting => {
                if self.held.len() >= MAX_HELD {
                    self.protocol_error(
                        ReasonCode::PROTOCOL_ERROR,
                        "too many packets before CONNACK".into(),
                    );
                } else {
                    self.held.push_back(packet);
                }
            }
            Phase::Connected => self.handle_connected(now, packet),
        }
    }

    /// The decoder failed: close with the matching reason code.
    pub fn handle_decode_error(&mut self, _now: Instant, err: &DecodeError) {
        match self.phase {
            Phase::Closed { .. } => {}
            Phase::AwaitingConnect { .. } => {
                if let DecodeError::UnsupportedProtocol { .. } = err {
                    // Answer in the 3.1.1 format every client understands: return code 1.
                    self.version = ProtocolVersion::V3_1_1;
                    self.urgent.push_back(Packet::ConnAck(ConnAck {
                        reason: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                        ..ConnAck::default()
                    }));
                }
                self.close_silently(CloseReason::from_decode(err));
            }
            _ => self.protocol_error(err.reason_code(), err.to_string()),
        }
    }

    /// Fires whatever deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .rare
            .throttle_mut()
            .is_some_and(|t| t.resume_if_due(now))
        {
            if let Some(k) = &mut self.keep_alive {
                k.reading_resumed(now);
            }
        }
        let paused = self.reading_paused();
        match self.phase {
            Phase::AwaitingConnect { deadline } if now >= deadline => {
                self.close_silently(CloseReason::ConnectTimeout);
            }
            Phase::Connecting if self.auth_deadline().is_some_and(|d| now >= d) => {
                self.close_silently(CloseReason::AuthTimeout);
            }
            Phase::Connecting | Phase::Connected => {
                let Some(k) = self.keep_alive else { return };
                if k.deadline_reading(paused).is_some_and(|d| now >= d) {
                    let reason = CloseReason::KeepAliveTimeout {
                        silent_for: k.silent_for(now),
                        keep_alive: k.keep_alive(),
                    };
                    self.close_with(ReasonCode::KEEP_ALIVE_TIMEOUT, reason);
                }
            }
            _ => {}
        }
    }

    /// The earliest deadline, if any; call `handle_timeout` when it passes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingConnect { deadline } => Some(deadline),
            Phase::Connecting | Phase::Connected => {
                let resume = self.rare.throttle().and_then(|t| t.paused_until());
                let paused = resume.is_some();
                let keep_alive = self.keep_alive.and_then(|k| k.deadline_reading(paused));
                [resume, keep_alive, self.auth_deadline()]
                    .into_iter()
                    .flatten()
                    .min()
            }
            Phase::Closed { .. } => None,
        }
    }

    /// The next packet to send: control packets first, then deliveries.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        if let Some(packet) = self.urgent.pop_front() {
            return Some(packet);
        }
        let limits = self.alias_limits();
        loop {
            let publish = match self.deliveries.pop_front()? {
                Transmit::Publish { at, outgoing } => {
                    let alias = topic_aliases::delivery_alias(
                        &mut self.aliases,
                        limits,
                        &outgoing,
                        0,
                        false,
                        at,
                    );
                    let mut p = outgoing.to_publish(0, false, at);
                    if let Some(alias) = alias {
                        alias.apply(&mut p);
                    }
                    p
                }
                Transmit::Inflight { packet_id, dup, at } => {
                    // Gone only if the state was handed on meanwhile: the
                    // next connection resends it.
                    let Some(entry) = self.state.inflight.get(packet_id) else {
                        continue;
                    };
                    let o = &entry.outgoing;
                    let alias = topic_aliases::delivery_alias(
                        &mut self.aliases,
                        limits,
                        o,
                        packet_id,
                        dup,
                        at,
                    );
                    let mut p = o.to_publish(packet_id, dup, at);
                    if let Some(alias) = alias {
                        alias.apply(&mut p);
                    }
                    p
                }
                Transmit::PubRel(id) => return Some(Packet::PubRel(crate::Ack::new(id))),
            };
            return Some(Packet::Publish(publish));
        }
    }

    /// Encodes the next packet to send into `out`, as `poll_transmit` would
    /// yield it; `None` when there is nothing to send. Deliveries are written
    /// from their shared message without building a `Packet` each.
    pub fn encode_transmit(&mut self, out: &mut BytesMut) -> Option<Result<(), EncodeError>> {
        if let Some(packet) = self.urgent.pop_front() {
            return Some(packet.encode(self.version, out));
        }
        let limits = self.alias_limits();
        loop {
            return Some(match self.deliveries.pop_front()? {
                Transmit::Publish { at, outgoing } => {
                    let alias = topic_aliases::delivery_alias(
                        &mut self.aliases,
                        limits,
                        &outgoing,
                        0,
                        false,
                        at,
                    );
                    outgoing.encode(0, false, at, self.version, alias, out)
                }
                Transmit::Inflight { packet_id, dup, at } => {
                    let Some(entry) = self.state.inflight.get(packet_id) else {
                        continue;
                    };
                    let o = &entry.outgoing;
                    let alias = topic_aliases::delivery_alias(
                        &mut self.aliases,
                        limits,
                        o,
                        packet_id,
                        dup,
                        at,
                    );
                    o.encode(packet_id, dup, at, self.version, alias, out)
                }
                Transmit::PubRel(id) => {
                    Packet::PubRel(crate::Ack::new(id)).encode(self.version, out)
                }
            });
        }
    }

    fn alias_limits(&self) -> topic_aliases::AliasLimits {
        topic_aliases::AliasLimits {
            client_maximum: self.client_topic_alias_max,
            max_packet_size: self.client_max_packet_size,
            version: self.version,
        }
    }

    /// The next request for the broker.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Frees the buffers of queues that are empty. A queue of `Packet`s or
    /// events keeps ~1.6 KB once it has held one item; an idle connection
    /// should not carry that until its next packet.
    pub fn release_idle_buffers(&mut self) {
        fn release<T>(q: &mut VecDeque<T>) {
            if q.is_empty() && q.capacity() > 0 {
                *q = VecDeque::new();
            }
        }
        release(&mut self.held);
        release(&mut self.urgent);
        release(&mut self.deliveries);
        release(&mut self.events);
        release(&mut self.state.pending);
        if self.progress.is_empty() && self.progress.capacity() > 0 {
            self.progress = Vec::new();
        }
    }

    /// Moves the steps stored deliveries took into `out`. The driver records
    /// them before it writes the packets they announce.
    pub fn take_progress(&mut self, out: &mut Vec<DeliveryProgress>) {
        out.append(&mut self.progress);
    }

    /// The broker ends the connection (takeover 0x8E, shutdown 0x8B, ...):
    /// MQTT 5 clients get DISCONNECT with `reason_code` before the close.
    pub fn close(&mut self, reason_code: ReasonCode, reason: CloseReason) {
        self.close_with(reason_code, reason);
    }

    /// The transport ended (EOF or socket error) without DISCONNECT.
    pub fn handle_transport_closed(&mut self, reason: CloseReason) {
        self.close_silently(reason);
    }

    /// Ends the session state's life with this connection, for the next one.
    /// Undelivered QoS 0 messages are dropped: they are never queued offline.
    pub fn take_state(&mut self) -> SessionState {
        let mut state = std::mem::take(&mut self.state);
        state.pending.retain(|o| o.qos != crate::QoS::AtMostOnce);
        state
    }

    fn handle_connected(&mut self, now: Instant, packet: Packet) {
        match packet {
            Packet::Publish(p) => {
                if let Some(t) = self.rare.throttle_mut() {
                    t.charge(now, p.encoded_len(self.version));
                }
                self.handle_publish(p)
            }
            Packet::PubAck(a) => self.handle_puback(now, a),
            Packet::PubRec(a) => self.handle_pubrec(now, a),
            Packet::PubRel(a) => self.handle_pubrel(a),
            Packet::PubComp(a) => self.handle_pubcomp(now, a),
            Packet::Subscribe(s) => self.events.push_back(ServerEvent::Subscribe(s)),
            Packet::Unsubscribe(u) => self.events.push_back(ServerEvent::Unsubscribe(u)),
            Packet::PingReq => self.urgent.push_back(Packet::PingResp),
            Packet::Disconnect(d) => self.handle_disconnect(d),
            Packet::Auth(a) => self.handle_auth_connected(a),
            Packet::Connect(_) => {
                self.protocol_error(ReasonCode::PROTOCOL_ERROR, "second CONNECT".into())
            }
            other => self.protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                format!("a client must not send {:?}", other.packet_type()),
            ),
        }
    }

    fn handle_disconnect(&mut self, d: Disconnect) {
        let new_expiry = d.properties.session_expiry_interval;
        if self.session_expiry == 0 && new_expiry.is_some_and(|e| e != 0) {
            return self.protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                "DISCONNECT set a session expiry on a session that had none".into(),
            );
        }
        let publish_will = d.reason == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
        self.finish(
            CloseReason::ClientDisconnect(d.reason),
            publish_will,
            new_expiry,
        );
    }

    /// Closes for a protocol violation: MQTT 5 gets DISCONNECT with the code.
    fn protocol_error(&mut self, reason: ReasonCode, detail: String) {
        self.close_with(reason, CloseReason::ProtocolError { reason, detail });
    }

    fn close_with(&mut self, code: ReasonCode, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        match self.phase {
            Phase::Connected if self.version.is_v5() => {
                self.urgent
                    .push_back(Packet::Disconnect(Disconnect::new(code)));
            }
            // No DISCONNECT before CONNACK (MQTT-3.14.0-1): a refusing
            // CONNACK says why if the code is one CONNACK may carry.
            Phase::Connecting if self.version.is_v5() && code.is_valid_in_connack() => {
                self.urgent.push_back(Packet::ConnAck(ConnAck {
                    reason: code,
                    ..ConnAck::default()
                }));
            }
            _ => {}
        }
        self.finish(reason, true, None);
    }

    fn close_silently(&mut self, reason: CloseReason) {
        let was_connected = matches!(self.phase, Phase::Connected | Phase::Connecting);
        self.finish(reason, was_connected, None);
    }

    fn finish(&mut self, reason: CloseReason, publish_will: bool, session_expiry: Option<u32>) {
        if self.is_closed() {
            return;
        }
        let told_why = match self.urgent.back() {
            Some(Packet::Disconnect(_)) => true,
            Some(Packet::ConnAck(ack)) => ack.reason.is_error(),
            _ => false,
        };
        self.phase = Phase::Closed { told_why };
        self.deliveries.clear();
        self.events.push_back(ServerEvent::Closed(Closed {
            reason,
            publish_will,
            session_expiry,
        }));
    }
}

#[cfg(test)]
mod alias_tests;
#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod close_tests;
#[cfg(test)]
mod encode_tests;
#[cfg(test)]
mod spec_tests;
#[cfg(test)]
mod tests;
