//! Server connection tests on a virtual clock: `t0 + Duration`, no sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::message::{Message, Outgoing};
use crate::{Ack, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn connect_packet(version: ProtocolVersion, keep_alive: u16) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive,
        client_id: "dev-1".into(),
        ..Connect::default()
    }))
}

/// A connection that has completed CONNECT/CONNACK at `t0`.
pub(super) fn connected(
    config: ServerConfig,
    version: ProtocolVersion,
    keep_alive: u16,
    t0: Instant,
) -> ServerConnection {
    let mut c = ServerConnection::new(config, t0);
    c.handle_packet(t0, connect_packet(version, keep_alive));
    assert!(matches!(c.poll_event(), Some(ServerEvent::Connect(_))));
    c.accept(t0, Accepted::default());
    assert!(matches!(c.poll_transmit(), Some(Packet::ConnAck(_))));
    c
}

fn drain(c: &mut ServerConnection) -> Vec<Packet> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn closed_event(c: &mut ServerConnection) -> Closed {
    loop {
        match c.poll_event() {
            Some(ServerEvent::Closed(closed)) => return closed,
            Some(_) => continue,
            None => panic!("no Closed event"),
        }
    }
}

pub(super) fn outgoing(topic: &str, qos: QoS) -> Outgoing {
    Outgoing {
        message: Arc::new(Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"data"),
            qos,
            retain: false,
            properties: None,
            expires_at: None,
        }),
        qos,
        retain: false,
        subscription_ids: vec![],
        persisted: None,
        shared: false,
    }
}

#[test]
fn keep_alive_expires_at_exactly_one_and_a_half_k() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 5, t0);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(7500)));
    c.handle_timeout(t0 + ms(7499));
    assert!(!c.is_closed(), "closed before 1.5 x K");
    c.handle_timeout(t0 + ms(7500));
    assert!(c.is_closed());
    assert_eq!(
        drain(&mut c),
        vec![Packet::Disconnect(crate::Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        ))]
    );
    let closed = closed_event(&mut c);
    assert!(closed.publish_will, "keep-alive expiry publishes the will");
    assert_eq!(
        closed.reason,
        CloseReason::KeepAliveTimeout {
            silent_for: ms(7500),
            keep_alive: Duration::from_secs(5)
        }
    );
    assert_eq!(
        closed.reason.to_string(),
        "keep alive expired after 7.500 s of silence with K = 5 s"
    );
}

#[test]
fn v311_keep_alive_expiry_closes_without_a_packet() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V311, 1, t0);
    c.handle_timeout(t0 + ms(1500));
    assert!(c.is_closed());
    assert!(drain(&mut c).is_empty(), "3.1.1 has no server DISCONNECT");
}

#[test]
fn any_inbound_packet_resets_keep_alive() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 10, t0);
    c.handle_packet(t0 + ms(9000), Packet::PubAck(Ack::new(77)));
    assert_eq!(c.poll_timeout(), Some(t0 + ms(24_000)));
    c.handle_packet(
        t0 + ms(20_000),
        Packet::Publish(Publish {
            topic: "a".into(),
            ..Publish::default()
        }),
    );
    assert_eq!(c.poll_timeout(), Some(t0 + ms(35_000)));
}

#[test]
fn bytes_of_a_packet_still_arriving_count_as_activity() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 2, t0);
    c.handle_read_progress(t0 + ms(2900));
    c.handle_timeout(t0 + ms(3000));
    assert!(!c.is_closed());
    assert_eq!(c.poll_timeout(), Some(t0 + ms(5900)));
}

#[test]
fn outbound_deliveries_do_not_reset_keep_alive() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 2, t0);
    for i in 0..10 {
        c.deliver(t0 + ms(i * 250), outgoing("t", QoS::AtMostOnce));
        drain(&mut c);
    }
    assert_eq!(c.poll_timeout(), Some(t0 + ms(3000)));
    c.handle_timeout(t0 + ms(3000));
    assert!(
        c.is_closed(),
        "a subscriber that only receives must still expire"
    );
}

#[test]
fn keep_alive_zero_never_expires() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 0, t0);
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(t0 + Duration::from_secs(1_000_000));
    assert!(!c.is_closed());
}

#[test]
fn pingresp_goes_out_ahead_of_queued_deliveries() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    for _ in 0..50 {
        c.deliver(t0, outgoing("t", QoS::AtMostOnce));
    }
    c.handle_packet(t0 + ms(1), Packet::PingReq);
    assert_eq!(c.poll_transmit(), Some(Packet::PingResp));
}

#[test]
fn connect_timeout_closes_a_silent_socket() {
    let t0 = Instant::now();
    let config = ServerConfig {
        connect_timeout: Duration::from_secs(3),
        ..ServerConfig::default()
    };
    let mut c = ServerConnection::new(config, t0);
    assert_eq!(c.poll_timeout(), Some(t0 + ms(3000)));
    c.handle_timeout(t0 + ms(2999));
    assert!(!c.is_closed());
    c.handle_timeout(t0 + ms(3000));
    assert!(c.is_closed());
    assert_eq!(
        closed_event(&mut c),
        Closed {
            reason: CloseReason::ConnectTimeout,
            publish_will: false,
            session_expiry: None
        }
    );
}

#[test]
fn server_keep_alive_is_announced_when_clamped() {
    let t0 = Instant::now();
    let config = ServerConfig {
        keep_alive: KeepAlivePolicy {
            min: 10,
            max: 60,
            allow_zero: false,
            refuse_v3_out_of_range: false,
        },
        ..ServerConfig::default()
    };
    let mut c = ServerConnection::new(config, t0);
    c.handle_packet(t0, connect_packet(V5, 600));
    c.poll_event();
    c.accept(t0, Accepted::default());
    let Some(Packet::ConnAck(ack)) = c.poll_transmit() else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.properties.server_keep_alive, Some(60));
    assert_eq!(
        c.poll_timeout(),
        Some(t0 + ms(90_000)),
        "expiry follows the server's value"
    );
}

#[test]
fn v311_out_of_range_refused_with_0x02_when_configured() {
    let t0 = Instant::now();
    let config = ServerConfig {
        keep_alive: KeepAlivePolicy {
            min: 10,
            max: 60,
            allow_zero: false,
            refuse_v3_out_of_range: true,
        },
        ..ServerConfig::default()
    };
    let mut c = ServerConnection::new(config, t0);
    c.handle_packet(t0, connect_packet(V311, 600));
    let Some(Packet::ConnAck(ack)) = c.poll_transmit() else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    let closed = closed_event(&mut c);
    assert!(
        closed
            .reason
            .to_string()
            .contains("keep alive 600 s is outside"),
        "{}",
        closed.reason
    );
}

#[test]
fn v311_out_of_range_accepted_by_default() {
    let t0 = Instant::now();
    let config = ServerConfig {
        keep_alive: KeepAlivePolicy {
            min: 10,
            max: 60,
            allow_zero: false,
            refuse_v3_out_of_range: false,
        },
        ..ServerConfig::default()
    };
    let c = connected(config, V311, 600, t0);
    assert_eq!(c.keep_alive(), Some(Duration::from_secs(600)));
}

#[test]
fn v311_empty_client_id_without_clean_session_is_refused() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(
        t0,
        Packet::Connect(Box::new(Connect {
            protocol: V311,
            clean_start: false,
            ..Connect::default()
        })),
    );
    let Some(Packet::ConnAck(ack)) = c.poll_transmit() else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(c.is_closed());
}

#[test]
fn first_packet_must_be_connect() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(t0, Packet::PingReq);
    assert!(c.is_closed());
    assert!(drain(&mut c).is_empty());
}

#[test]
fn second_connect_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    c.handle_packet(t0, connect_packet(V5, 30));
    assert_eq!(
        drain(&mut c),
        vec![Packet::Disconnect(crate::Disconnect::new(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
    let closed = closed_event(&mut c);
    assert!(closed.publish_will);
    assert_eq!(closed.reason.label(), "protocol_error");
}

#[test]
fn packets_pipelined_before_connack_are_handled_after_it() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(t0, connect_packet(V5, 30));
    c.handle_packet(t0, Packet::PingReq);
    assert!(matches!(c.poll_event(), Some(ServerEvent::Connect(_))));
    assert_eq!(c.poll_transmit(), None);
    c.accept(t0, Accepted::default());
    assert!(matches!(c.poll_transmit(), Some(Packet::ConnAck(_))));
    assert_eq!(c.poll_transmit(), Some(Packet::PingResp));
}

#[test]
fn qos2_resent_before_pubrel_is_routed_once() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    let p = Publish {
        qos: QoS::ExactlyOnce,
        packet_id: 7,
        topic: "a".into(),
        ..Publish::default()
    };
    c.handle_packet(t0, Packet::Publish(p.clone()));
    assert!(matches!(c.poll_event(), Some(ServerEvent::Publish(_))));
    c.publish_routed(7, QoS::ExactlyOnce, 1);
    assert_eq!(c.poll_transmit(), Some(Packet::PubRec(Ack::new(7))));
    c.handle_packet(t0, Packet::Publish(Publish { dup: true, ..p }));
    assert_eq!(c.poll_event(), None, "duplicate must not be routed");
    assert_eq!(c.poll_transmit(), Some(Packet::PubRec(Ack::new(7))));
    c.handle_packet(t0, Packet::PubRel(Ack::new(7)));
    assert_eq!(c.poll_transmit(), Some(Packet::PubComp(Ack::new(7))));
    assert_eq!(c.poll_event(), Some(ServerEvent::Released(7)));
    // After PUBREL the id is free: the same id is a new message.
    c.handle_packet(
        t0,
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            packet_id: 7,
            topic: "a".into(),
            ..Publish::default()
        }),
    );
    assert!(matches!(c.poll_event(), Some(ServerEvent::Publish(_))));
}

#[test]
fn puback_says_no_matching_subscribers_in_v5() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    c.handle_packet(
        t0,
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: 1,
            topic: "a".into(),
            ..Publish::default()
        }),
    );
    c.poll_event();
    c.publish_routed(1, QoS::AtLeastOnce, 0);
    assert_eq!(
        c.poll_transmit(),
        Some(Packet::PubAck(Ack {
            packet_id: 1,
            reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            ..Ack::default()
        }))
    );
}

#[test]
fn exceeding_our_receive_maximum_is_0x93() {
    let t0 = Instant::now();
    let config = ServerConfig {
        receive_maximum: 2,
        ..ServerConfig::default()
    };
    let mut c = connected(config, V5, 30, t0);
    for id in 1..=3 {
        c.handle_packet(
            t0,
            Packet::Publish(Publish {
                qos: QoS::ExactlyOnce,
                packet_id: id,
                topic: "a".into(),
                ..Publish::default()
            }),
        );
    }
    assert!(c.is_closed());
    assert_eq!(
        drain(&mut c),
        vec![Packet::Disconnect(crate::Disconnect::new(
            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED
        ))]
    );
}

/// An MQTT 5 connection whose client announced Receive Maximum `n`.
fn connected_with_receive_maximum(n: u16, t0: Instant) -> ServerConnection {
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    let mut connect = Connect {
        protocol: V5,
        clean_start: true,
        client_id: "x".into(),
        ..Connect::default()
    };
    connect.properties.receive_maximum = Some(n);
    c.handle_packet(t0, Packet::Connect(Box::new(connect)));
    c.poll_event();
    c.accept(t0, Accepted::default());
    drain(&mut c);
    c
}

#[test]
fn outbound_window_follows_the_clients_receive_maximum() {
    let t0 = Instant::now();
    let mut c = connected_with_receive_maximum(2, t0);
    for _ in 0..5 {
        c.deliver(t0, outgoing("t", QoS::AtLeastOnce));
    }
    let sent = drain(&mut c);
    assert_eq!(sent.len(), 2, "only Receive Maximum messages in flight");
    let Packet::Publish(first) = &sent[0] else {
        panic!()
    };
    c.handle_packet(t0, Packet::PubAck(Ack::new(first.packet_id)));
    assert_eq!(
        drain(&mut c).len(),
        1,
        "with 2 in flight, one ack frees one slot"
    );
}

#[test]
fn a_full_window_reopens_when_a_quarter_of_it_is_free() {
    let t0 = Instant::now();
    let mut c = connected_with_receive_maximum(8, t0);
    for _ in 0..20 {
        c.deliver(t0, outgoing("t", QoS::AtLeastOnce));
    }
    let ids: Vec<u16> = drain(&mut c)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id,
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 8, "the window fills");
    c.handle_packet(t0, Packet::PubAck(Ack::new(ids[0])));
    assert!(drain(&mut c).is_empty(), "7 of 8 in flight: still closed");
    c.handle_packet(t0, Packet::PubAck(Ack::new(ids[1])));
    let sent = drain(&mut c);
    assert_eq!(sent.len(), 2, "6 of 8 in flight: refilled to 8");
    c.handle_packet(t0, Packet::PubAck(Ack::new(ids[2])));
    assert!(drain(&mut c).is_empty(), "full again: closed again");
}

#[test]
fn qos2_outbound_handshake() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    c.deliver(t0, outgoing("t", QoS::ExactlyOnce));
    let Some(Packet::Publish(p)) = c.poll_transmit() else {
        panic!()
    };
    c.handle_packet(t0, Packet::PubRec(Ack::new(p.packet_id)));
    assert_eq!(
        c.poll_transmit(),
        Some(Packet::PubRel(Ack::new(p.packet_id)))
    );
    c.handle_packet(t0, Packet::PubComp(Ack::new(p.packet_id)));
    assert!(c.take_state().inflight.is_empty());
}

#[test]
fn inbound_topic_alias_is_resolved_and_checked() {
    let t0 = Instant::now();
    let config = ServerConfig {
        topic_alias_maximum: 4,
        ..ServerConfig::default()
    };
    let mut c = connected(config, V5, 30, t0);
    let with_alias = |topic: &str, alias: u16| Publish {
        topic: topic.into(),
        properties: Properties {
            topic_alias: Some(alias),
            ..Properties::default()
        }
        .into(),
        ..Publish::default()
    };
    c.handle_packet(t0, Packet::Publish(with_alias("a/b", 1)));
    c.handle_packet(t0, Packet::Publish(with_alias("", 1)));
    for _ in 0..2 {
        let Some(ServerEvent::Publish(p)) = c.poll_event() else {
            panic!()
        };
        assert_eq!(&*p.topic, "a/b");
        assert_eq!(p.properties.topic_alias, None);
    }
    c.handle_packet(t0, Packet::Publish(with_alias("x", 5)));
    assert_eq!(
        drain(&mut c),
        vec![Packet::Disconnect(crate::Disconnect::new(
            ReasonCode::TOPIC_ALIAS_INVALID
        ))]
    );
}

#[test]
fn unknown_alias_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    c.handle_packet(
        t0,
        Packet::Publish(Publish {
            properties: Properties {
                topic_alias: Some(3),
                ..Properties::default()
            }
            .into(),
            ..Publish::default()
        }),
    );
    assert_eq!(
        drain(&mut c),
        vec![Packet::Disconnect(crate::Disconnect::new(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
}

#[test]
fn deliveries_larger_than_the_clients_maximum_are_dropped() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    let mut connect = Connect {
        protocol: V5,
        clean_start: true,
        client_id: "x".into(),
        ..Connect::default()
    };
    connect.properties.maximum_packet_size = Some(20);
    c.handle_packet(t0, Packet::Connect(Box::new(connect)));
    c.poll_event();
    c.accept(t0, Accepted::default());
    drain(&mut c);
    c.deliver(t0, outgoing("a-rather-long-topic-name", QoS::AtLeastOnce));
    c.deliver(t0, outgoing("t", QoS::AtLeastOnce));
    let sent = drain(&mut c);
    assert_eq!(sent.len(), 1);
    assert_eq!(c.drops().too_large, 1);
    assert_eq!(
        c.take_state().inflight.len(),
        1,
        "the dropped message holds no packet id"
    );
}

#[test]
fn expired_messages_are_not_sent_and_expiry_counts_down() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    let mut o = outgoing("t", QoS::AtMostOnce);
    Arc::make_mut(&mut o.message).expires_at = Some(t0 + ms(10_000));
    c.deliver(t0 + ms(10_000), o.clone());
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(c.drops().expired, 1);
    c.deliver(t0 + ms(3_500), o);
    let Some(Packet::Publish(p)) = c.poll_transmit() else {
        panic!()
    };
    assert_eq!(
        p.properties.message_expiry_interval,
        Some(7),
        "6.5 s left, rounded up"
    );
}

#[test]
fn will_decision_follows_the_disconnect_reason() {
    let t0 = Instant::now();
    for (reason, will) in [
        (ReasonCode::NORMAL_DISCONNECTION, false),
        (ReasonCode::DISCONNECT_WITH_WILL_MESSAGE, true),
    ] {
        let mut c = connected(ServerConfig::default(), V5, 30, t0);
        c.handle_packet(t0, Packet::Disconnect(crate::Disconnect::new(reason)));
        assert_eq!(closed_event(&mut c).publish_will, will);
    }
    let mut c = connected(ServerConfig::default(), V311, 30, t0);
    c.handle_packet(t0, Packet::Disconnect(crate::Disconnect::default()));
    assert!(!closed_event(&mut c).publish_will);
}

#[test]
fn disconnect_cannot_add_session_expiry_to_a_session_that_had_none() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    let mut d = crate::Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    c.handle_packet(t0, Packet::Disconnect(d));
    assert_eq!(
        drain(&mut c),
        vec![Packet::Disconnect(crate::Disconnect::new(
            ReasonCode::PROTOCOL_ERROR
        ))]
    );
}

#[test]
fn takeover_sends_0x8e_before_closing() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    c.close(ReasonCode::SESSION_TAKEN_OVER, CloseReason::TakenOver);
    assert_eq!(
        drain(&mut c),
        vec![Packet::Disconnect(crate::Disconnect::new(
            ReasonCode::SESSION_TAKEN_OVER
        ))]
    );
    let closed = closed_event(&mut c);
    assert_eq!(closed.reason, CloseReason::TakenOver);
    assert!(closed.publish_will);
}

#[test]
fn resumed_session_resends_unacknowledged_with_dup() {
    let t0 = Instant::now();
    let mut first = connected(ServerConfig::default(), V5, 30, t0);
    first.deliver(t0, outgoing("q1", QoS::AtLeastOnce));
    first.deliver(t0, outgoing("q2", QoS::ExactlyOnce));
    let sent = drain(&mut first);
    let Packet::Publish(p2) = &sent[1] else {
        panic!()
    };
    first.handle_packet(t0, Packet::PubRec(Ack::new(p2.packet_id)));
    first.close(ReasonCode::SESSION_TAKEN_OVER, CloseReason::TakenOver);
    let state = first.take_state();

    let mut second = ServerConnection::new(ServerConfig::default(), t0);
    second.handle_packet(t0, connect_packet(V5, 30));
    second.poll_event();
    second.accept(
        t0,
        Accepted {
            session_present: true,
            assigned_client_id: None,
            state,
            auth_data: None,
        },
    );
    let out = drain(&mut second);
    let Packet::ConnAck(ack) = &out[0] else {
        panic!()
    };
    assert!(ack.session_present);
    let Packet::Publish(again) = &out[1] else {
        panic!("{out:?}")
    };
    assert!(again.dup && &*again.topic == "q1" && again.qos == QoS::AtLeastOnce);
    assert_eq!(out[2], Packet::PubRel(Ack::new(p2.packet_id)));
}

fn progress(c: &mut ServerConnection) -> Vec<(u64, DeliveryStep)> {
    let mut out = Vec::new();
    c.take_progress(&mut out);
    out.into_iter().map(|p| (p.seq.get(), p.step)).collect()
}

fn stored(topic: &str, qos: QoS, seq: u64) -> Outgoing {
    let mut o = outgoing(topic, qos);
    o.persisted = std::num::NonZeroU64::new(seq);
    o
}

#[test]
fn stored_deliveries_report_each_handshake_step() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    c.deliver(t0, stored("a", QoS::AtLeastOnce, 7));
    c.deliver(t0, stored("b", QoS::ExactlyOnce, 8));
    c.deliver(t0, outgoing("c", QoS::AtLeastOnce));
    let ids: Vec<u16> = drain(&mut c)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        progress(&mut c),
        vec![
            (7, DeliveryStep::Sent(ids[0])),
            (8, DeliveryStep::Sent(ids[1]))
        ]
    );
    c.handle_packet(t0, Packet::PubAck(Ack::new(ids[0])));
    c.handle_packet(t0, Packet::PubRec(Ack::new(ids[1])));
    // The unstored delivery reports nothing.
    c.handle_packet(t0, Packet::PubAck(Ack::new(ids[2])));
    assert_eq!(
        progress(&mut c),
        vec![(7, DeliveryStep::Done), (8, DeliveryStep::Released(ids[1]))]
    );
    c.handle_packet(t0, Packet::PubComp(Ack::new(ids[1])));
    assert_eq!(progress(&mut c), vec![(8, DeliveryStep::Done)]);
}

#[test]
fn expired_stored_delivery_is_reported_done() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    let mut o = stored("a", QoS::AtLeastOnce, 3);
    Arc::make_mut(&mut o.message).expires_at = Some(t0);
    c.deliver(t0 + ms(1), o);
    assert!(drain(&mut c).is_empty());
    assert_eq!(progress(&mut c), vec![(3, DeliveryStep::Done)]);
}

#[test]
fn pubrel_of_a_guarded_inbound_qos2_id_is_reported() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    c.handle_packet(
        t0,
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            topic: "t".into(),
            packet_id: 5,
            ..Publish::default()
        }),
    );
    assert!(matches!(c.poll_event(), Some(ServerEvent::Publish(_))));
    c.publish_routed(5, QoS::ExactlyOnce, 1);
    c.handle_packet(t0, Packet::PubRel(Ack::new(5)));
    assert_eq!(c.poll_event(), Some(ServerEvent::Released(5)));
    // An unknown id is answered but not reported.
    c.handle_packet(t0, Packet::PubRel(Ack::new(6)));
    assert_eq!(c.poll_event(), None);
}

#[test]
fn an_idle_connection_releases_its_queue_buffers() {
    let t0 = Instant::now();
    let mut c = connected(ServerConfig::default(), V5, 30, t0);
    c.handle_packet(t0, Packet::PingReq);
    c.deliver(t0, outgoing("t", QoS::AtMostOnce));
    assert_eq!(drain(&mut c).len(), 2);
    assert!(c.urgent.capacity() > 0 && c.deliveries.capacity() > 0);
    c.release_idle_buffers();
    assert_eq!(c.urgent.capacity(), 0);
    assert_eq!(c.deliveries.capacity(), 0);
    assert_eq!(c.events.capacity(), 0);
    // Queues with something in them keep it.
    c.handle_packet(t0, Packet::PingReq);
    c.release_idle_buffers();
    assert_eq!(c.poll_transmit(), Some(Packet::PingResp));
}
