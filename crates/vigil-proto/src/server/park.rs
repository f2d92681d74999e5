//! A connected connection with nothing in flight, in compact form: what an
//! idle connection keeps while the driver holds no task for it.

use std::time::{Duration, Instant};

use super::keep_alive::KeepAliveTimer;
use super::{Phase, ServerConfig, ServerConnection, SessionState};
use crate::ProtocolVersion;

/// The state of a quiescent connection (`ServerConnection::park`), from
/// which `ServerConnection::unpark` rebuilds it unchanged.
#[derive(Debug)]
pub struct ParkedConnection {
    keep_alive: Option<KeepAliveTimer>,
    client_max_packet_size: u32,
    session_expiry: u32,
    client_topic_alias_max: u16,
    client_receive_maximum: u16,
    server_keep_alive: Option<u16>,
    last_packet_id: u16,
    version: ProtocolVersion,
    /// Topic aliases both ways, the enhanced authentication method (for a
    /// later re-authentication) and the publish buckets as they were (a
    /// park must not refill them): one pointer for all, usually null, as
    /// every parked connection pays for each pointer kept here.
    extras: Option<Box<ParkedExtras>>,
}

/// What only some parked connections keep.
#[derive(Debug)]
struct ParkedExtras {
    aliases: Option<Box<super::topic_aliases::TopicAliases>>,
    rare: super::rare::Rare,
}

impl ParkedConnection {
    /// When the keep-alive deadline passes (`None`: keep alive is off).
    pub fn deadline(&self) -> Option<Instant> {
        self.keep_alive.and_then(|k| k.deadline())
    }

    /// The effective keep alive.
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive.map(|k| k.keep_alive())
    }

    /// How many PINGREQs `bytes` (what the client sent since parking) is,
    /// if it is nothing else: those a parked connection answers in place.
    pub fn pings_in(bytes: &[u8]) -> Option<usize> {
        let whole = !bytes.is_empty()
            && bytes.len() % 2 == 0
            && bytes.chunks_exact(2).all(|p| p == PINGREQ);
        whole.then_some(bytes.len() / 2)
    }

    /// A PINGREQ came at `now` and was answered in place: activity for keep
    /// alive, as it is for a connection that is not parked.
    pub fn handle_ping(&mut self, now: Instant) {
        if let Some(k) = &mut self.keep_alive {
            k.touch(now);
        }
    }
}

/// PINGREQ on the wire, the same in every version.
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// PINGRESP on the wire, the same in every version.
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];

impl ServerConnection {
    /// True when the connection is connected and holds nothing but its
    /// settings: no packet, event, delivery or acknowledgement pending either way.
    pub fn can_park(&self) -> bool {
        self.phase == Phase::Connected
            && self.held.is_empty()
            && self.urgent.is_empty()
            && self.deliveries.is_empty()
            && self.events.is_empty()
            && self.progress.is_empty()
            && self.inbound_qos1_unacked == 0
            && !self.window_full
            && self.state.inflight.is_empty()
            && self.state.pending.is_empty()
            && self.state.inbound_qos2.is_empty()
            && self.drops == super::DropCounts::default()
            && !self.rare.auth().is_some_and(|a| a.in_progress(self.phase))
            && !self.reading_paused()
    }

    /// Takes the connection's state in compact form if `can_park`; the
    /// connection is left closed, with no event (it lives on as the result).
    pub fn park(&mut self) -> Option<ParkedConnection> {
        if !self.can_park() {
            return None;
        }
        self.phase = Phase::Closed { told_why: false };
        Some(ParkedConnection {
            keep_alive: self.keep_alive,
            client_max_packet_size: self.client_max_packet_size,
            session_expiry: self.session_expiry,
            client_topic_alias_max: self.client_topic_alias_max,
            client_receive_maximum: self.client_receive_maximum,
            server_keep_alive: self.server_keep_alive,
            last_packet_id: self.state.last_packet_id,
            version: self.version,
            extras: (self.aliases.is_some() || !self.rare.is_empty()).then(|| {
                Box::new(ParkedExtras {
                    aliases: self.aliases.take(),
                    rare: self.rare.take(),
                })
            }),
        })
    }

    /// The connection `parked` was taken from, as it was.
    pub fn unpark(config: ServerConfig, parked: ParkedConnection) -> ServerConnection {
        let mut conn = ServerConnection::new(config, Instant::now());
        conn.phase = Phase::Connected;
        conn.version = parked.version;
        conn.keep_alive = parked.keep_alive;
        conn.server_keep_alive = parked.server_keep_alive;
        conn.session_expiry = parked.session_expiry;
        conn.client_receive_maximum = parked.client_receive_maximum;
        conn.client_max_packet_size = parked.client_max_packet_size;
        conn.client_topic_alias_max = parked.client_topic_alias_max;
        if let Some(extras) = parked.extras {
            conn.aliases = extras.aliases;
            conn.rare = extras.rare;
        }
        conn.state = SessionState {
            last_packet_id: parked.last_packet_id,
            ..SessionState::default()
        };
        conn
    }

    /// Outbound drops counted so far, reset to zero (to hand them on before parking).
    pub fn take_drops(&mut self) -> super::DropCounts {
        std::mem::take(&mut self.drops)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{connected, outgoing};
    use super::*;
    use crate::{Ack, Packet, QoS, ReasonCode};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Parking keeps the keep-alive deadline where it was, and the rebuilt
    /// connection expires at exactly 1.5 × K after the last packet.
    #[test]
    fn a_parked_connection_keeps_its_keep_alive_deadline() {
        let t0 = Instant::now();
        let mut c = connected(ServerConfig::default(), ProtocolVersion::V5, 10, t0);
        c.handle_packet(t0 + ms(2_000), Packet::PingReq);
        assert_eq!(c.poll_transmit(), Some(Packet::PingResp));
        let parked = c.park().expect("idle and connected: parks");
        assert!(c.is_closed(), "the husk left behind is closed");
        assert!(c.poll_event().is_none(), "parking is not a close");
        assert_eq!(parked.deadline(), Some(t0 + ms(17_000)));
        let mut c = ServerConnection::unpark(ServerConfig::default(), parked);
        assert!(c.is_connected());
        assert_eq!(c.version(), ProtocolVersion::V5);
        c.handle_timeout(t0 + ms(16_999));
        assert!(c.is_connected(), "not before 1.5 × K");
        c.handle_timeout(t0 + ms(17_000));
        assert!(c.is_closed());
        assert_eq!(
            c.poll_transmit(),
            Some(Packet::Disconnect(crate::Disconnect::new(
                ReasonCode::KEEP_ALIVE_TIMEOUT
            )))
        );
    }

    /// Only whole PINGREQs are answered in place; anything else (a packet,
    /// half a ping, a ping with a publish behind it) resumes the connection.
    #[test]
    fn only_pings_are_answered_while_parked() {
        assert_eq!(ParkedConnection::pings_in(&[0xC0, 0x00]), Some(1));
        assert_eq!(ParkedConnection::pings_in(&[0xC0, 0, 0xC0, 0]), Some(2));
        assert_eq!(ParkedConnection::pings_in(&[]), None);
        assert_eq!(ParkedConnection::pings_in(&[0xC0]), None);
        assert_eq!(ParkedConnection::pings_in(&[0xC0, 0x01]), None);
        assert_eq!(
            ParkedConnection::pings_in(&[0xE0, 0x00]),
            None,
            "DISCONNECT"
        );
        assert_eq!(ParkedConnection::pings_in(&[0xC0, 0, 0x30, 0]), None);
    }

    /// A ping answered in place moves the keep-alive deadline as any packet does.
    #[test]
    fn a_ping_answered_in_place_moves_the_deadline() {
        let t0 = Instant::now();
        let mut c = connected(ServerConfig::default(), ProtocolVersion::V3_1_1, 10, t0);
        let mut parked = c.park().expect("parks");
        assert_eq!(parked.deadline(), Some(t0 + ms(15_000)));
        parked.handle_ping(t0 + ms(9_000));
        assert_eq!(parked.deadline(), Some(t0 + ms(24_000)));
    }

    /// A connection with a message in flight, or an answer not yet written,
    /// does not park; once the handshake completes it does.
    #[test]
    fn only_a_quiescent_connection_parks() {
        let t0 = Instant::now();
        let mut c = connected(ServerConfig::default(), ProtocolVersion::V3_1_1, 60, t0);
        c.deliver(t0, outgoing("a/b", QoS::AtLeastOnce));
        assert!(c.park().is_none(), "PUBLISH not yet written");
        let Some(Packet::Publish(p)) = c.poll_transmit() else {
            panic!("the delivery is sent");
        };
        assert!(c.park().is_none(), "PUBACK outstanding");
        let id = p.packet_id;
        c.handle_packet(t0, Packet::PubAck(Ack::new(id)));
        let mut c = ServerConnection::unpark(ServerConfig::default(), c.park().expect("parks"));
        // Packet ids go on from where they were: the next delivery takes the next id.
        c.deliver(t0, outgoing("a/b", QoS::AtLeastOnce));
        let Some(Packet::Publish(next)) = c.poll_transmit() else {
            panic!("the delivery is sent");
        };
        assert_eq!(next.packet_id, id + 1);
        c.handle_packet(t0, Packet::PingReq);
        assert!(c.park().is_none(), "PINGRESP not yet written");
    }
}
