//! Restart tests: a broker writes through an in-memory store, stops, and a new
//! broker recovers from what the first one committed. On a virtual clock: a
//! restart is a new `Clock` the time the broker was down later (the
//! monotonic clock of the new process is unrelated to the old one's; only
//! the wall clock carries over), and every deadline is checked exactly.

use std::time::Duration;

use bytes::Bytes;
use vigil_proto::message::{Message, Outgoing};
use vigil_proto::server::{
    CloseReason, DeliveryProgress, DeliveryStep, InflightStage, SessionState,
};
use vigil_proto::{
    Properties, ProtocolVersion, QoS, RetainHandling, Subscribe, Subscription, SubscriptionOptions,
    Will,
};
use vigil_store::{Durability, MemoryBackend, Store};

use super::tests::virtual_start;
use super::*;

/// A broker started at `now` on what `mem` holds.
fn start(mem: &MemoryBackend, now: Clock) -> Arc<Broker> {
    let (store, contents) = Store::open(Box::new(mem.clone()), Durability::Always, false).unwrap();
    Broker::with_store(CoreConfig::default(), store, contents, now)
}

/// The clock of a process started `down` after `before`: the wall clock
/// moved on by `down`, the monotonic one is another process's (an hour off
/// here, so nothing can lean on it carrying over).
fn restarted(before: Clock, down: Duration) -> Clock {
    Clock {
        instant: before.instant + Duration::from_secs(3600),
        unix_ms: (before + down).unix_ms,
    }
}

/// Stops `b` the way a crash would, after its submitted writes are committed.
fn stop(b: Arc<Broker>) {
    if let Some(s) = b.store() {
        s.close();
    }
}

fn req(id: &str, clean: bool, expiry: u32) -> ConnectRequest {
    ConnectRequest {
        client_id: id.into(),
        protocol: ProtocolVersion::V5,
        clean_start: clean,
        session_expiry: expiry,
        will: None,
        username: None,
    }
}

fn msg(topic: &str, payload: &'static str, qos: QoS, retain: bool) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos,
        retain,
        properties: None,
        expires_at: None,
    }
}

fn sub(filter: &str, qos: QoS) -> Subscribe {
    Subscribe {
        packet_id: 1,
        properties: Properties {
            subscription_identifiers: vec![4],
            ..Properties::default()
        }
        .into(),
        filters: vec![Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                retain_handling: RetainHandling::SendAtSubscribe,
                ..SubscriptionOptions::default()
            },
        }],
    }
}

fn gone(reason: CloseReason, state: SessionState) -> DisconnectInfo {
    DisconnectInfo {
        reason,
        publish_will: true,
        session_expiry: None,
        state,
    }
}

fn payloads(b: &Broker, now: Clock, s: &SessionRef) -> Vec<String> {
    let mut out = Vec::new();
    while b.next_deliveries(s, &mut out, 1000, now.instant) {}
    out.iter()
        .map(|o| String::from_utf8_lossy(&o.message.payload).into_owned())
        .collect()
}

/// A persistent session that subscribed to `filter` and went offline at `now`.
fn offline_subscriber(b: &Arc<Broker>, now: Clock, id: &str, filter: &str, expiry: u32) {
    let g = b.connect_now(now, &req(id, false, expiry));
    b.subscribe(&g.session, &sub(filter, QoS::ExactlyOnce))
        .unwrap();
    b.disconnect(
        now,
        &g.session,
        g.conn_id,
        gone(CloseReason::PeerClosed, SessionState::default()),
    );
}

#[test]
fn queued_messages_survive_a_restart_in_order_with_their_subscription() {
    let mem = MemoryBackend::new();
    let now = virtual_start();
    let b = start(&mem, now);
    offline_subscriber(&b, now, "sub", "t/#", 3600);
    for (p, qos) in [
        ("1", QoS::AtLeastOnce),
        ("2", QoS::ExactlyOnce),
        ("3", QoS::AtMostOnce),
    ] {
        b.publish(now, None, msg("t/a", p, qos, false));
    }
    stop(b);

    let now = restarted(now, Duration::from_secs(1));
    let b = start(&mem, now);
    let s = b.session("sub").expect("session recovered");
    assert_eq!(s.subscriptions(), vec!["t/#".to_string()]);
    // QoS 0 is never queued offline, so never stored.
    assert_eq!(payloads(&b, now, &s), vec!["1", "2"]);
    // The subscription still routes after the restart.
    assert_eq!(
        b.publish(now, None, msg("t/b", "4", QoS::AtLeastOnce, false)),
        1
    );
    let g = b.connect_now(now, &req("sub", false, 3600));
    assert!(g.session_present);
    assert_eq!(payloads(&b, now, &g.session), vec!["4"]);
}

#[test]
fn a_message_fanned_out_to_offline_sessions_is_shared_again_after_a_restart() {
    let mem = MemoryBackend::new();
    let now = virtual_start();
    let b = start(&mem, now);
    for id in ["s1", "s2", "s3"] {
        offline_subscriber(&b, now, id, "t/#", 3600);
    }
    b.publish(now, None, msg("t/a", "one", QoS::AtLeastOnce, false));
    b.publish(now, None, msg("t/a", "two", QoS::ExactlyOnce, false));
    stop(b);

    let now = restarted(now, Duration::from_secs(1));
    let b = start(&mem, now);
    let queued: Vec<Vec<Outgoing>> = ["s1", "s2", "s3"]
        .iter()
        .map(|id| {
            let s = b.session(id).expect("session recovered");
            let mut out = Vec::new();
            while b.next_deliveries(&s, &mut out, 1000, now.instant) {}
            out
        })
        .collect();
    for out in &queued {
        let got: Vec<_> = out.iter().map(|o| &o.message.payload[..]).collect();
        assert_eq!(
            got,
            vec![&b"one"[..], b"two"],
            "every message still delivered"
        );
    }
    for i in 0..2 {
        let first = &queued[0][i].message;
        for out in &queued[1..] {
            assert!(Arc::ptr_eq(first, &out[i].message), "message {i} shared");
        }
    }
    assert!(!Arc::ptr_eq(&queued[0][0].message, &queued[0][1].message));
}

/// 100,000 recovered offline sessions each carried ~2.3 KB before this
/// was looked at: what recovery leaves behind is what the session needs.
#[test]
fn a_recovered_offline_session_keeps_no_spare_room() {
    let mem = MemoryBackend::new();
    let now = virtual_start();
    let b = start(&mem, now);
    offline_subscriber(&b, now, "sub", "t/#", 3600);
    for p in ["1", "2", "3"] {
        b.publish(now, None, msg("t/a", p, QoS::AtLeastOnce, false));
    }
    stop(b);

    let now = restarted(now, Duration::from_secs(1));
    let b = start(&mem, now);
    let s = b.session("sub").expect("session recovered");
    assert_eq!(s.mailbox.capacity(), 3, "queue shrunk to what it holds");
    {
        let inner = s.inner.lock();
        assert!(
            matches!(inner.presence, session::Presence::Away { state: None, .. }),
            "nothing was in flight: no protocol state kept"
        );
        assert!(
            matches!(&inner.subscriptions, session::Filters::Few(v) if v.capacity() == 1),
            "one filter, one entry's room"
        );
    }
    assert_eq!(payloads(&b, now, &s), vec!["1", "2", "3"]);
}

#[test]
fn in_flight_deliveries_come_back_with_their_packet_ids_and_stage() {
    let mem = MemoryBackend::new();
    let now = virtual_start();
    let b = start(&mem, now);
    let g = b.connect_now(now, &req("sub", false, 3600));
    b.subscribe(&g.session, &sub("t", QoS::ExactlyOnce))
        .unwrap();
    for p in ["a", "b", "c"] {
        b.publish(now, None, msg("t", p, QoS::ExactlyOnce, false));
    }
    let mut out = Vec::new();
    g.session.mailbox.drain_into(&mut out, 10);
    let seq = |i: usize| out[i].persisted.expect("stored");
    // a: PUBLISH sent as id 11; b: PUBREC came back, PUBREL sent as id 12;
    // c: acknowledged completely.
    let gate = b.record_progress(
        &g.session,
        &[
            DeliveryProgress {
                qos: QoS::ExactlyOnce,
                seq: seq(0),
                step: DeliveryStep::Sent(11),
            },
            DeliveryProgress {
                qos: QoS::ExactlyOnce,
                seq: seq(1),
                step: DeliveryStep::Sent(12),
            },
            DeliveryProgress {
                qos: QoS::ExactlyOnce,
                seq: seq(1),
                step: DeliveryStep::Released(12),
            },
            DeliveryProgress {
                qos: QoS::ExactlyOnce,
                seq: seq(2),
                step: DeliveryStep::Sent(13),
            },
            DeliveryProgress {
                qos: QoS::ExactlyOnce,
                seq: seq(2),
                step: DeliveryStep::Done,
            },
        ],
    );
    assert!(
        gate.is_some(),
        "QoS 2 steps must be durable before the wire"
    );
    // The broker dies with the connection still up.
    stop(b);

    let now = restarted(now, Duration::from_secs(1));
    let b = start(&mem, now);
    let g = b.connect_now(now, &req("sub", false, 3600));
    assert!(g.session_present);
    let inflight: Vec<_> = g
        .state
        .inflight
        .in_send_order(g.state.last_packet_id)
        .into_iter()
        .map(|(id, e)| (id, e.stage, e.outgoing.message.payload.clone()))
        .collect();
    assert_eq!(
        inflight,
        vec![
            (11, InflightStage::AwaitingAck, Bytes::from_static(b"a")),
            (12, InflightStage::AwaitingComp, Bytes::from_static(b"b")),
        ]
    );
    assert!(payloads(&b, now, &g.session).is_empty());
    assert!(g.state.last_packet_id >= 12);
}

#[test]
fn inbound_qos2_guard_survives_until_pubrel() {
    let mem = MemoryBackend::new();
    let now = virtual_start();
    let b = start(&mem, now);
    let g = b.connect_now(now, &req("pub", false, 3600));
    b.guard_inbound_qos2(&g.session, 7);
    b.guard_inbound_qos2(&g.session, 8);
    assert!(b.release_inbound_qos2(&g.session, 8).is_some());
    stop(b);
    let now = restarted(now, Duration::from_secs(1));
    let b = start(&mem, now);
    let g = b.connect_now(now, &req("pub", false, 3600));
    assert_eq!(
        g.state.inbound_qos2.into_iter().collect::<Vec<_>>(),
        vec![7]
    );
}

#[test]
fn retained_set_and_delete_survive_a_restart() {
    let mem = MemoryBackend::new();
    let now = virtual_start();
    let b = start(&mem, now);
    b.publish(now, None, msg("r/1", "one", QoS::AtMostOnce, true));
    b.publish(now, None, msg("r/2", "two", QoS::AtLeastOnce, true));
    b.publish(now, None, msg("r/2", "", QoS::AtLeastOnce, true));
    stop(b);
    let now = restarted(now, Duration::from_secs(1));
    let b = start(&mem, now);
    assert_eq!(b.retained_count(), 1);
    let g = b.connect_now(now, &req("x", true, 0));
    b.subscribe(&g.session, &sub("r/#", QoS::AtLeastOnce))
        .unwrap();
    assert_eq!(payloads(&b, now, &g.session), vec!["one"]);
}

/// Expiry 10 s and 100 s, disconnected at t0, the broker down for 30 s:
/// the first ended while it was down, the second ends 70 s after the
/// restart, exactly (not a tick before), and leaves the store too.
#[test]
fn session_expiry_counts_the_time_the_broker_was_down() {
    let mem = MemoryBackend::new();
    let t0 = virtual_start();
    let b = start(&mem, t0);
    for (id, expiry) in [("short", 10), ("long", 100)] {
        let g = b.connect_now(t0, &req(id, false, expiry));
        b.disconnect(
            t0,
            &g.session,
            g.conn_id,
            gone(CloseReason::PeerClosed, SessionState::default()),
        );
    }
    stop(b);
    let now = restarted(t0, Duration::from_secs(30));
    let b = start(&mem, now);
    assert!(
        b.session("short").is_none(),
        "expired while the broker was down"
    );
    assert!(b.session("long").is_some());
    let end = now + Duration::from_secs(70);
    assert_eq!(b.poll_timeout(), Some(end.instant), "70 s left, not 100");
    b.handle_timeout(Clock {
        instant: end.instant - Duration::from_nanos(1),
        ..end
    });
    assert!(b.session("long").is_some(), "not a tick before");
    b.handle_timeout(end);
    assert!(b.session("long").is_none());
    // Ended sessions are deleted from the store too.
    stop(b);
    assert_eq!(start(&mem, end).session_count(), 0);
}

fn will(delay: u32) -> Will {
    Will {
        topic: "status/dev".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(delay),
            ..Properties::default()
        },
    }
}

/// Will Delay 10 s, the connection lost at t0 and the broker down for 20 s:
/// the will is published as it starts again, once.
#[test]
fn a_will_delay_that_ran_out_while_down_is_published_at_recovery() {
    let mem = MemoryBackend::new();
    let t0 = virtual_start();
    let b = start(&mem, t0);
    offline_subscriber(&b, t0, "watcher", "status/#", 3600);
    let g = b.connect_now(
        t0,
        &ConnectRequest {
            will: Some(will(10)),
            ..req("dev", false, 3600)
        },
    );
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        gone(CloseReason::PeerClosed, SessionState::default()),
    );
    stop(b);
    let now = restarted(t0, Duration::from_secs(20));
    let b = start(&mem, now);
    let w = b.session("watcher").unwrap();
    assert_eq!(payloads(&b, now, &w), vec!["offline"]);
    // Published once: after another restart the watcher still holds one copy
    // (unacknowledged, so still queued), not a second will.
    stop(b);
    let now = restarted(now, Duration::from_secs(1));
    let b = start(&mem, now);
    assert_eq!(
        payloads(&b, now, &b.session("watcher").unwrap()),
        vec!["offline"]
    );
}

/// Will Delay 10 s, the connection lost at t0 and the broker down for 4 s:
/// the delay resumes after the restart and ends 6 s later, exactly. A second
/// client whose will waits on its delay reconnects after a restart instead:
/// its will is cancelled.
#[test]
fn a_pending_will_delay_resumes_after_restart_and_a_reconnect_cancels_it() {
    let mem = MemoryBackend::new();
    let t0 = virtual_start();
    let b = start(&mem, t0);
    offline_subscriber(&b, t0, "watcher", "status/#", 3600);
    let g = b.connect_now(
        t0,
        &ConnectRequest {
            will: Some(will(10)),
            ..req("dev", false, 3600)
        },
    );
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        gone(CloseReason::PeerClosed, SessionState::default()),
    );
    stop(b);
    let now = restarted(t0, Duration::from_secs(4));
    let b = start(&mem, now);
    let w = b.session("watcher").unwrap();
    assert!(payloads(&b, now, &w).is_empty(), "not due yet");
    let due = now + Duration::from_secs(6);
    assert_eq!(b.poll_timeout(), Some(due.instant), "6 s left");
    b.handle_timeout(Clock {
        instant: due.instant - Duration::from_nanos(1),
        ..due
    });
    assert!(payloads(&b, due, &w).is_empty(), "not a tick before");
    b.handle_timeout(due);
    assert_eq!(payloads(&b, due, &w), vec!["offline"]);

    // A second client with a pending will reconnects after the restart instead.
    let g = b.connect_now(
        due,
        &ConnectRequest {
            will: Some(will(10)),
            ..req("dev2", false, 3600)
        },
    );
    b.disconnect(
        due,
        &g.session,
        g.conn_id,
        gone(CloseReason::PeerClosed, SessionState::default()),
    );
    stop(b);
    let now = restarted(due, Duration::from_secs(1));
    let b = start(&mem, now);
    let _back = b.connect_now(now, &req("dev2", false, 3600));
    b.handle_timeout(now + Duration::from_secs(60));
    // Only dev's will, still queued from before the restart; dev2's was cancelled.
    assert_eq!(
        payloads(&b, now, &b.session("watcher").unwrap()),
        vec!["offline"]
    );
}

#[test]
fn clean_start_and_zero_expiry_remove_the_stored_session() {
    let mem = MemoryBackend::new();
    let now = virtual_start();
    let b = start(&mem, now);
    offline_subscriber(&b, now, "a", "t", 3600);
    offline_subscriber(&b, now, "b", "t", 3600);
    b.publish(now, None, msg("t", "x", QoS::AtLeastOnce, false));
    // a comes back with Clean Start (queue gone, session kept);
    // b comes back with expiry 0 (session ends with this connection).
    let _a = b.connect_now(now, &req("a", true, 3600));
    let _b = b.connect_now(now, &req("b", false, 0));
    stop(b);
    let now = restarted(now, Duration::from_secs(1));
    let b = start(&mem, now);
    assert!(payloads(&b, now, &b.session("a").unwrap()).is_empty());
    assert!(b.session("b").is_none());
}

/// A durable session that disconnects mid-way through its retained stream
/// gets the rest when it resumes (the cursor stays with the session).
#[test]
fn a_durable_session_resumes_its_retained_stream() {
    let mem = MemoryBackend::new();
    let now = virtual_start();
    let b = start(&mem, now);
    for t in ["r/0", "r/1", "r/2", "r/3", "r/4", "r/5", "r/6", "r/7"] {
        b.publish(now, None, msg(t, "v", QoS::AtLeastOnce, true));
    }
    let g = b.connect_now(now, &req("x", false, 100));
    b.subscribe(&g.session, &sub("r/#", QoS::AtLeastOnce))
        .unwrap();
    let mut first = Vec::new();
    assert!(b.next_deliveries(&g.session, &mut first, 3, now.instant));
    assert_eq!(first.len(), 3);
    b.disconnect(
        now,
        &g.session,
        g.conn_id,
        gone(CloseReason::PeerClosed, SessionState::default()),
    );
    let g = b.connect_now(now, &req("x", false, 100));
    assert!(g.session_present);
    let mut rest = Vec::new();
    while b.next_deliveries(&g.session, &mut rest, 3, now.instant) {}
    let topics: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|o| o.message.topic.as_str())
        .collect();
    assert_eq!(
        topics,
        ["r/0", "r/1", "r/2", "r/3", "r/4", "r/5", "r/6", "r/7"]
    );
    assert!(first
        .iter()
        .chain(&rest)
        .all(|o| o.retain && o.persisted.is_none()));
}
