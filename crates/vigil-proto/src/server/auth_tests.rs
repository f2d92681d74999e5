//! Enhanced authentication (MQTT 5 section 4.12) on a virtual clock: the
//! AUTH packets' order, the refusals, and the connect timeout mid-exchange.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::{Auth, Publish, QoS};

const METHOD: &str = "SCRAM-SHA-256";

fn config() -> ServerConfig {
    ServerConfig {
        enhanced_auth: true,
        connect_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    }
}

fn connect(method: &str, keep_alive: u16) -> Packet {
    let mut c = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive,
        client_id: "dev".into(),
        ..Connect::default()
    };
    c.properties.authentication_method = Some(method.into());
    c.properties.authentication_data = Some(Bytes::from_static(b"client-first"));
    Packet::Connect(Box::new(c))
}

fn auth(reason: ReasonCode, method: &str, data: &'static [u8]) -> Packet {
    let mut a = Auth {
        reason,
        ..Auth::default()
    };
    a.properties.authentication_method = Some(method.into());
    a.properties.authentication_data = Some(Bytes::from_static(data));
    Packet::Auth(a)
}

fn drain(c: &mut ServerConnection) -> Vec<Packet> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

/// CONNECT with the method, and the broker's first challenge sent.
fn challenged(t0: Instant, keep_alive: u16) -> ServerConnection {
    let mut c = ServerConnection::new(config(), t0);
    c.handle_packet(t0, connect(METHOD, keep_alive));
    let Some(ServerEvent::Connect(connect)) = c.poll_event() else {
        panic!("no Connect event")
    };
    assert_eq!(
        connect.properties.authentication_data.as_deref(),
        Some(&b"client-first"[..])
    );
    c.auth_continue(Bytes::from_static(b"server-first"));
    let out = drain(&mut c);
    assert_eq!(
        out,
        vec![auth(
            ReasonCode::CONTINUE_AUTHENTICATION,
            METHOD,
            b"server-first"
        )]
    );
    c
}

/// A connection that finished the exchange and got CONNACK at `t0`.
fn authenticated(t0: Instant) -> ServerConnection {
    let mut c = challenged(t0, 60);
    c.handle_packet(
        t0,
        auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"client-final"),
    );
    assert!(matches!(c.poll_event(), Some(ServerEvent::Auth(_))));
    c.accept(
        t0,
        Accepted {
            auth_data: Some(Bytes::from_static(b"server-final")),
            ..Accepted::default()
        },
    );
    let Some(Packet::ConnAck(ack)) = c.poll_transmit() else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    c
}

fn closed_with(c: &mut ServerConnection) -> (Vec<Packet>, CloseReason) {
    let out = drain(c);
    let reason = std::iter::from_fn(|| c.poll_event())
        .find_map(|e| match e {
            ServerEvent::Closed(closed) => Some(closed.reason),
            _ => None,
        })
        .expect("closed");
    (out, reason)
}

#[test]
fn without_enhanced_auth_a_method_is_refused_with_0x8c() {
    let t0 = Instant::now();
    let mut c = ServerConnection::new(ServerConfig::default(), t0);
    c.handle_packet(t0, connect(METHOD, 60));
    let (out, reason) = closed_with(&mut c);
    assert!(
        matches!(&out[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::BAD_AUTHENTICATION_METHOD)
    );
    assert_eq!(
        reason,
        CloseReason::ConnectRefused(ReasonCode::BAD_AUTHENTICATION_METHOD)
    );
}

#[test]
fn the_exchange_ends_in_a_connack_that_carries_method_and_data() {
    let t0 = Instant::now();
    let mut c = challenged(t0, 60);
    c.handle_packet(
        t0,
        auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"client-final"),
    );
    let Some(ServerEvent::Auth(a)) = c.poll_event() else {
        panic!("no Auth event")
    };
    assert_eq!(
        a.properties.authentication_data.as_deref(),
        Some(&b"client-final"[..])
    );
    c.accept(
        t0,
        Accepted {
            auth_data: Some(Bytes::from_static(b"server-final")),
            ..Accepted::default()
        },
    );
    let Some(Packet::ConnAck(ack)) = c.poll_transmit() else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some(METHOD)
    );
    assert_eq!(
        ack.properties.authentication_data.as_deref(),
        Some(&b"server-final"[..])
    );
    assert!(c.is_connected());
    assert_eq!(c.auth_method(), Some(METHOD));
    assert!(c.can_park());
}

#[test]
fn a_refused_exchange_gets_connack_0x86() {
    let t0 = Instant::now();
    let mut c = challenged(t0, 60);
    c.handle_packet(
        t0,
        auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"bad proof"),
    );
    assert!(matches!(c.poll_event(), Some(ServerEvent::Auth(_))));
    c.refuse(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let (out, reason) = closed_with(&mut c);
    assert!(
        matches!(&out[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::BAD_USER_NAME_OR_PASSWORD)
    );
    assert_eq!(
        reason,
        CloseReason::ConnectRefused(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
    );
}

/// Before CONNACK the server may not send DISCONNECT (MQTT-3.14.0-1): a
/// protocol error mid-exchange is answered with CONNACK 0x82.
#[test]
fn anything_but_the_due_auth_before_connack_is_a_protocol_error() {
    let t0 = Instant::now();
    let wrong: Vec<Packet> = vec![
        auth(ReasonCode::CONTINUE_AUTHENTICATION, "SCRAM-SHA-512", b"x"),
        auth(ReasonCode::RE_AUTHENTICATE, METHOD, b"x"),
        Packet::Publish(Publish {
            topic: "t".into(),
            qos: QoS::AtMostOnce,
            ..Publish::default()
        }),
        Packet::PingReq,
    ];
    for packet in wrong {
        let mut c = challenged(t0, 60);
        c.handle_packet(t0, packet.clone());
        let (out, reason) = closed_with(&mut c);
        assert!(
            matches!(&out[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::PROTOCOL_ERROR),
            "{packet:?}: {out:?}"
        );
        assert!(
            matches!(reason, CloseReason::ProtocolError { reason, .. } if reason == ReasonCode::PROTOCOL_ERROR)
        );
    }
    // An AUTH before the server asked for one.
    let mut c = ServerConnection::new(config(), t0);
    c.handle_packet(t0, connect(METHOD, 60));
    c.handle_packet(t0, auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"x"));
    let (out, _) = closed_with(&mut c);
    assert!(matches!(&out[..], [Packet::ConnAck(a)] if a.reason == ReasonCode::PROTOCOL_ERROR));
}

/// docs/keepalive.md: the connect timeout (from the socket's accept) runs
/// on through the exchange; a client that stops answering is closed at
/// exactly that deadline, even with a longer keep alive.
#[test]
fn a_client_that_stops_mid_exchange_is_closed_by_the_connect_timeout() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(400);
    let mut c = ServerConnection::new(config(), t0);
    c.handle_packet(t1, connect(METHOD, 60));
    let _ = c.poll_event();
    c.auth_continue(Bytes::from_static(b"server-first"));
    let _ = drain(&mut c);
    let deadline = t0 + Duration::from_secs(10);
    assert_eq!(c.poll_timeout(), Some(deadline));
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!c.is_closed());
    c.handle_timeout(deadline);
    assert!(c.is_closed());
    let (_, reason) = closed_with(&mut c);
    assert_eq!(reason, CloseReason::AuthTimeout);

    // Keep alive shorter than the connect timeout: 1.5 × K comes first.
    let mut c = ServerConnection::new(config(), t0);
    c.handle_packet(t0, connect(METHOD, 2));
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    // After CONNACK the connect timeout no longer applies.
    let c = authenticated(t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(90)));
}

#[test]
fn reauthentication_runs_while_messages_flow_and_ends_with_auth_success() {
    let t0 = Instant::now();
    let mut c = authenticated(t0);
    c.handle_packet(
        t0,
        auth(ReasonCode::RE_AUTHENTICATE, METHOD, b"client-first"),
    );
    assert!(
        matches!(c.poll_event(), Some(ServerEvent::Auth(a)) if a.reason == ReasonCode::RE_AUTHENTICATE)
    );
    assert!(c.is_reauthenticating());
    assert!(!c.can_park());
    c.auth_continue(Bytes::from_static(b"server-first"));
    // A PUBLISH in the middle is handled as ever.
    c.handle_packet(
        t0,
        Packet::Publish(Publish {
            topic: "t".into(),
            qos: QoS::AtMostOnce,
            ..Publish::default()
        }),
    );
    assert!(matches!(c.poll_event(), Some(ServerEvent::Publish(_))));
    c.handle_packet(t0, Packet::PingReq);
    c.handle_packet(
        t0,
        auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"client-final"),
    );
    assert!(
        matches!(c.poll_event(), Some(ServerEvent::Auth(a)) if a.reason == ReasonCode::CONTINUE_AUTHENTICATION)
    );
    c.reauth_succeeded(Bytes::from_static(b"server-final"));
    assert_eq!(
        drain(&mut c),
        vec![
            auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"server-first"),
            Packet::PingResp,
            auth(ReasonCode::SUCCESS, METHOD, b"server-final"),
        ]
    );
    assert!(!c.is_reauthenticating());
    assert!(c.is_connected());
    // The method survives parking, for the next re-authentication.
    let parked = c.park().expect("parks");
    let mut c = ServerConnection::unpark(config(), parked);
    c.handle_packet(t0, auth(ReasonCode::RE_AUTHENTICATE, METHOD, b"again"));
    assert!(matches!(c.poll_event(), Some(ServerEvent::Auth(_))));
}

#[test]
fn a_failed_reauthentication_disconnects_with_its_code() {
    let t0 = Instant::now();
    let mut c = authenticated(t0);
    c.handle_packet(
        t0,
        auth(ReasonCode::RE_AUTHENTICATE, METHOD, b"client-first"),
    );
    let _ = c.poll_event();
    c.auth_continue(Bytes::from_static(b"server-first"));
    c.handle_packet(
        t0,
        auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"bad proof"),
    );
    let _ = c.poll_event();
    // 0x86 is a CONNACK code only (MQTT 5 section 3.14.2.1): 0x87 goes out.
    c.reauth_failed(ReasonCode::BAD_USER_NAME_OR_PASSWORD, "wrong proof".into());
    let (out, _) = closed_with(&mut c);
    assert!(matches!(
        out.last(),
        Some(Packet::Disconnect(d)) if d.reason == ReasonCode::NOT_AUTHORIZED
    ));
}

/// MQTT 5 section 4.12.1: re-authentication keeps the method, and AUTH
/// needs a CONNECT that named one.
#[test]
fn auth_out_of_place_after_connack_is_disconnect_0x82() {
    let t0 = Instant::now();
    let cases: Vec<(ServerConnection, Packet)> = vec![
        (
            authenticated(t0),
            auth(ReasonCode::RE_AUTHENTICATE, "SCRAM-SHA-512", b"x"),
        ),
        (
            authenticated(t0),
            auth(ReasonCode::CONTINUE_AUTHENTICATION, METHOD, b"x"),
        ),
        (authenticated(t0), auth(ReasonCode::SUCCESS, METHOD, b"x")),
        (
            tests::connected(config(), ProtocolVersion::V5, 60, t0),
            auth(ReasonCode::RE_AUTHENTICATE, METHOD, b"x"),
        ),
    ];
    for (mut c, packet) in cases {
        c.handle_packet(t0, packet.clone());
        let (out, _) = closed_with(&mut c);
        assert!(
            matches!(out.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::PROTOCOL_ERROR),
            "{packet:?}: {out:?}"
        );
    }
}
