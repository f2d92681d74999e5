//! Client session tests on a virtual clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::{Ack, ConnAck, Disconnect, Packet, Publish, QoS, ReasonCode};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn connected(
    keep_alive: u16,
    ping_timeout: Option<Duration>,
    t0: Instant,
    connack: ConnAck,
) -> ClientSession {
    let config = ClientConfig {
        keep_alive,
        ping_timeout,
        client_id: "c".into(),
        ..ClientConfig::default()
    };
    let mut s = ClientSession::new(config, t0);
    s.start(t0);
    assert!(matches!(s.poll_transmit(), Some(Packet::Connect(_))));
    s.handle_packet(t0, Packet::ConnAck(connack));
    assert!(matches!(
        s.poll_event(),
        Some(ClientEvent::Connected { .. })
    ));
    s
}

fn drain(s: &mut ClientSession) -> Vec<Packet> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn qos0(topic: &str) -> Publish {
    Publish {
        topic: topic.into(),
        payload: Bytes::from_static(b"x"),
        ..Publish::default()
    }
}

#[test]
fn idle_client_pings_every_keep_alive() {
    let t0 = Instant::now();
    let mut s = connected(10, None, t0, ConnAck::default());
    assert_eq!(s.poll_timeout(), Some(t0 + ms(10_000)));
    s.handle_timeout(t0 + ms(9_999));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0 + ms(10_000));
    assert_eq!(drain(&mut s), vec![Packet::PingReq]);
    s.handle_packet(t0 + ms(10_005), Packet::PingResp);
    assert_eq!(s.poll_timeout(), Some(t0 + ms(20_000)));
}

#[test]
fn pings_keep_their_schedule_while_publishing_qos0() {
    let t0 = Instant::now();
    let mut s = connected(5, None, t0, ConnAck::default());
    let mut pings = Vec::new();
    for i in 0..200u64 {
        let now = t0 + ms(i * 100);
        s.handle_timeout(now);
        s.publish(i, qos0("t"));
        for p in drain(&mut s) {
            if p == Packet::PingReq {
                pings.push(now - t0);
                s.handle_packet(now, Packet::PingResp);
            }
        }
    }
    assert_eq!(
        pings,
        vec![ms(5_000), ms(10_000), ms(15_000)],
        "a busy QoS 0 publisher still probes the link"
    );
}

#[test]
fn any_inbound_packet_is_proof_of_life() {
    let t0 = Instant::now();
    let mut s = connected(2, Some(ms(1000)), t0, ConnAck::default());
    s.handle_timeout(t0 + ms(2000));
    assert_eq!(drain(&mut s), vec![Packet::PingReq]);
    // A PUBLISH (not a PINGRESP) arrives: the link is alive.
    s.handle_packet(t0 + ms(2500), Packet::Publish(qos0("data")));
    s.handle_timeout(t0 + ms(3000));
    assert!(!s.is_closed());
}

#[test]
fn ping_timeout_closes_with_the_numbers() {
    let t0 = Instant::now();
    let mut s = connected(2, Some(ms(1000)), t0, ConnAck::default());
    s.handle_timeout(t0 + ms(2000));
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + ms(3000)));
    s.handle_timeout(t0 + ms(2999));
    assert!(!s.is_closed());
    s.handle_timeout(t0 + ms(3000));
    assert!(s.is_closed());
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Closed(ClientCloseReason::KeepAliveTimeout {
            waited: ms(1000),
            keep_alive: ms(2000)
        }))
    );
}

#[test]
fn server_keep_alive_replaces_the_requested_value() {
    let t0 = Instant::now();
    let mut ack = ConnAck::default();
    ack.properties.server_keep_alive = Some(3);
    let s = connected(60, None, t0, ack);
    assert_eq!(s.keep_alive(), Duration::from_secs(3));
    assert_eq!(s.poll_timeout(), Some(t0 + ms(3000)));
}

#[test]
fn connack_refusal_and_timeout() {
    let t0 = Instant::now();
    let mut s = ClientSession::new(ClientConfig::default(), t0);
    s.start(t0);
    drain(&mut s);
    s.handle_packet(
        t0,
        Packet::ConnAck(ConnAck {
            reason: ReasonCode::NOT_AUTHORIZED,
            ..ConnAck::default()
        }),
    );
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Closed(ClientCloseReason::Refused(
            ReasonCode::NOT_AUTHORIZED
        )))
    );
    let mut s = ClientSession::new(ClientConfig::default(), t0);
    s.start(t0);
    s.handle_timeout(t0 + Duration::from_secs(10));
    assert!(matches!(
        s.poll_event(),
        Some(ClientEvent::Closed(ClientCloseReason::ConnectTimeout(_)))
    ));
}

#[test]
fn broker_disconnect_is_reported_with_its_reason() {
    let t0 = Instant::now();
    let mut s = connected(30, None, t0, ConnAck::default());
    s.handle_packet(
        t0,
        Packet::Disconnect(Disconnect::new(ReasonCode::SESSION_TAKEN_OVER)),
    );
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Closed(ClientCloseReason::ClosedByBroker {
            reason: ReasonCode::SESSION_TAKEN_OVER,
            reason_string: None
        }))
    );
}

#[test]
fn qos1_and_qos2_publish_complete_on_their_acks() {
    let t0 = Instant::now();
    let mut s = connected(30, None, t0, ConnAck::default());
    s.publish(
        1,
        Publish {
            qos: QoS::AtLeastOnce,
            ..qos0("a")
        },
    );
    s.publish(
        2,
        Publish {
            qos: QoS::ExactlyOnce,
            ..qos0("b")
        },
    );
    let sent = drain(&mut s);
    let ids: Vec<u16> = sent
        .iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id,
            _ => 0,
        })
        .collect();
    s.handle_packet(t0, Packet::PubAck(Ack::new(ids[0])));
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Published {
            token: 1,
            reason: ReasonCode::SUCCESS
        })
    );
    s.handle_packet(t0, Packet::PubRec(Ack::new(ids[1])));
    assert_eq!(drain(&mut s), vec![Packet::PubRel(Ack::new(ids[1]))]);
    assert_eq!(s.poll_event(), None);
    s.handle_packet(t0, Packet::PubComp(Ack::new(ids[1])));
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Published {
            token: 2,
            reason: ReasonCode::SUCCESS
        })
    );
}

#[test]
fn outbound_window_is_the_brokers_receive_maximum() {
    let t0 = Instant::now();
    let mut ack = ConnAck::default();
    ack.properties.receive_maximum = Some(2);
    let mut s = connected(30, None, t0, ack);
    for t in 0..5 {
        s.publish(
            t,
            Publish {
                qos: QoS::AtLeastOnce,
                ..qos0("a")
            },
        );
    }
    assert_eq!(drain(&mut s).len(), 2);
    assert_eq!(s.unfinished_publishes(), 5);
}

#[test]
fn resume_resends_unacknowledged_with_dup_when_session_present() {
    let t0 = Instant::now();
    let mut s = connected(30, None, t0, ConnAck::default());
    s.publish(
        7,
        Publish {
            qos: QoS::AtLeastOnce,
            ..qos0("a")
        },
    );
    drain(&mut s);
    s.handle_transport_closed("reset".into());
    assert!(matches!(
        s.poll_event(),
        Some(ClientEvent::Closed(ClientCloseReason::Transport(_)))
    ));
    s.start(t0);
    assert!(matches!(s.poll_transmit(), Some(Packet::Connect(_))));
    s.handle_packet(
        t0,
        Packet::ConnAck(ConnAck {
            session_present: true,
            ..ConnAck::default()
        }),
    );
    let Some(Packet::Publish(p)) = s.poll_transmit() else {
        panic!("expected a resend")
    };
    assert!(p.dup);
    s.handle_packet(t0, Packet::PubAck(Ack::new(p.packet_id)));
    assert!(s
        .poll_event()
        .is_some_and(|e| matches!(e, ClientEvent::Connected { .. })));
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Published {
            token: 7,
            reason: ReasonCode::SUCCESS
        })
    );
}

#[test]
fn inbound_qos2_is_delivered_once() {
    let t0 = Instant::now();
    let mut s = connected(30, None, t0, ConnAck::default());
    let p = Publish {
        qos: QoS::ExactlyOnce,
        packet_id: 3,
        ..qos0("a")
    };
    s.handle_packet(t0, Packet::Publish(p.clone()));
    assert!(matches!(s.poll_event(), Some(ClientEvent::Message(_))));
    s.ack_inbound(3, QoS::ExactlyOnce);
    assert_eq!(drain(&mut s), vec![Packet::PubRec(Ack::new(3))]);
    s.handle_packet(t0, Packet::Publish(Publish { dup: true, ..p }));
    assert_eq!(s.poll_event(), None);
    s.handle_packet(t0, Packet::PubRel(Ack::new(3)));
    assert_eq!(
        drain(&mut s),
        vec![Packet::PubRec(Ack::new(3)), Packet::PubComp(Ack::new(3))]
    );
}

#[test]
fn a_close_without_disconnect_carries_the_keep_alive_numbers() {
    let t0 = Instant::now();
    let mut s = connected(2, None, t0, ConnAck::default());
    s.handle_transmitted(t0 + ms(100));
    // The driver stalled: no PINGREQ at K, and the broker hung up at 1.5 K.
    s.handle_peer_closed(t0 + ms(3_100));
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Closed(
            ClientCloseReason::ClosedWithoutDisconnect {
                since_last_sent: Some(ms(3_000)),
                keep_alive: ms(2_000),
                ping_outstanding: false,
            }
        ))
    );
    assert!(s.is_closed());
}

#[test]
fn a_close_while_a_ping_is_outstanding_says_so() {
    let t0 = Instant::now();
    let mut s = connected(2, None, t0, ConnAck::default());
    s.handle_timeout(t0 + ms(2_000));
    assert_eq!(drain(&mut s), vec![Packet::PingReq]);
    s.handle_transmitted(t0 + ms(2_000));
    s.handle_peer_closed(t0 + ms(2_500));
    assert_eq!(
        s.poll_event(),
        Some(ClientEvent::Closed(
            ClientCloseReason::ClosedWithoutDisconnect {
                since_last_sent: Some(ms(500)),
                keep_alive: ms(2_000),
                ping_outstanding: true,
            }
        ))
    );
}

#[test]
fn a_new_connection_forgets_the_last_write_of_the_old_one() {
    let t0 = Instant::now();
    let mut s = connected(2, None, t0, ConnAck::default());
    s.handle_transmitted(t0);
    s.handle_transport_closed("reset".into());
    s.start(t0 + ms(10));
    assert_eq!(s.last_sent(), None);
}

#[test]
fn qos0_is_reported_only_once_it_is_handed_out_not_while_it_waits_behind_a_full_window() {
    let t0 = Instant::now();
    let ack = ConnAck {
        properties: crate::Properties {
            receive_maximum: Some(1),
            ..Default::default()
        }
        .into(),
        ..ConnAck::default()
    };
    let mut s = connected(0, None, t0, ack);
    let mut q1 = qos0("a");
    q1.qos = QoS::AtLeastOnce;
    s.publish(1, q1);
    s.publish(2, q1_clone_for_test());
    s.publish(3, qos0("b"));
    // The window of 1 holds token 2, and the QoS 0 message queued after it waits too.
    assert_eq!(drain(&mut s).len(), 1);
    assert!(s.take_transmitted_qos0().is_empty());
    s.handle_packet(t0, Packet::PubAck(Ack::new(1)));
    assert_eq!(drain(&mut s).len(), 2);
    assert_eq!(s.take_transmitted_qos0(), vec![3]);
}

fn q1_clone_for_test() -> Publish {
    let mut p = qos0("a2");
    p.qos = QoS::AtLeastOnce;
    p
}

#[test]
fn without_a_receive_maximum_the_clients_own_window_caps_what_is_in_flight() {
    // MQTT 3.1.1: CONNACK announces nothing; the broker may close a client
    // that sends more than it allows, so the client keeps to its own window.
    let t0 = Instant::now();
    let config = ClientConfig {
        version: crate::ProtocolVersion::V3_1_1,
        max_inflight: 3,
        client_id: "c".into(),
        ..ClientConfig::default()
    };
    let mut s = ClientSession::new(config, t0);
    s.start(t0);
    drain(&mut s);
    s.handle_packet(t0, Packet::ConnAck(ConnAck::default()));
    for token in 0..5 {
        s.publish(token, q1_clone_for_test());
    }
    assert_eq!(drain(&mut s).len(), 3);
    s.handle_packet(t0, Packet::PubAck(Ack::new(1)));
    assert_eq!(drain(&mut s).len(), 1, "one acknowledged, one more sent");
}

#[test]
fn a_publish_above_the_brokers_maximum_packet_size_is_named_with_its_size() {
    let t0 = Instant::now();
    let ack = ConnAck {
        properties: crate::Properties {
            maximum_packet_size: Some(64),
            ..Default::default()
        }
        .into(),
        ..ConnAck::default()
    };
    let s = connected(0, None, t0, ack);
    let mut p = qos0("t");
    assert_eq!(s.oversize(&p), None);
    p.payload = Bytes::from(vec![0u8; 100]);
    // Fixed header 2 + topic 3 + properties length 1 + payload 100.
    assert_eq!(s.oversize(&p), Some((106, 64)));
}
