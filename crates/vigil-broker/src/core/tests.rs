//! Broker core tests: registry, takeover, queues, wills and expiry on a
//! virtual clock. Time is a `Clock` advanced by hand and passed in; timers
//! are driven by explicit `handle_timeout(now)` calls. The clock starts a
//! day ahead of the real one, so a read of the real clock anywhere in the
//! core would be a day off and fail these tests.

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use vigil_proto::message::{Message, Outgoing};
use vigil_proto::server::{CloseReason, SessionState};
use vigil_proto::{
    Properties, ProtocolVersion, QoS, ReasonCode, RetainHandling, Subscribe, Subscription,
    SubscriptionOptions, Will,
};

use super::*;

/// Where a test's virtual clock starts: read once, a day ahead of the real
/// clock, then only ever advanced by hand.
pub(super) fn virtual_start() -> Clock {
    Clock::now() + Duration::from_secs(86_400)
}

/// The smallest step of the monotonic clock: "a tick before" a deadline.
const TICK: Duration = Duration::from_nanos(1);

fn broker(config: CoreConfig, t0: Clock) -> Arc<Broker> {
    Broker::new(config, t0.instant)
}

/// The word the broker sent a connection, if any (read without waiting).
fn word(control: &ControlSignal) -> Option<Control> {
    match control.poll_recv(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(c) => Some(c),
        Poll::Pending => None,
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

fn msg(topic: &str, qos: QoS, retain: bool) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from_static(b"m"),
        qos,
        retain,
        properties: None,
        expires_at: None,
    }
}

fn sub(filter: &str, qos: QoS, rh: RetainHandling) -> Subscribe {
    Subscribe {
        packet_id: 1,
        properties: Properties::default().into(),
        filters: vec![Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                retain_handling: rh,
                ..SubscriptionOptions::default()
            },
        }],
    }
}

fn drain(b: &Broker, s: &SessionRef, now: Clock) -> Vec<vigil_proto::message::Outgoing> {
    let mut out = Vec::new();
    while b.next_deliveries(s, &mut out, 1000, now.instant) {}
    out
}

fn bye(reason: CloseReason, publish_will: bool) -> DisconnectInfo {
    DisconnectInfo {
        reason,
        publish_will,
        session_expiry: None,
        state: SessionState::default(),
    }
}

/// A CONNECT for a session a live connection holds is told to wait: the
/// old connection is told first, and once it hands back, the next claim gets
/// the session with the state it handed back.
#[test]
fn takeover_signals_the_old_connection_and_resumes_its_state() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let old = b.connect_now(t0, &req("dev", false, 300));
    assert!(!old.session_present);
    let session = b.session_for("dev");
    let claim = b.claim(t0, &session, &req("dev", false, 300));
    assert!(
        matches!(claim, Claim::Held { conn_id } if conn_id == old.conn_id),
        "{claim:?}"
    );
    assert_eq!(word(&old.control), Some(Control::TakenOver));
    let mut state = SessionState::default();
    state.inbound_qos2.insert(9);
    b.disconnect(
        t0,
        &old.session,
        old.conn_id,
        DisconnectInfo {
            state,
            ..bye(CloseReason::TakenOver, true)
        },
    );
    let Claim::Granted(new) = b.claim(t0, &session, &req("dev", false, 300)) else {
        panic!("the session was handed back");
    };
    assert!(new.session_present);
    assert!(new.state.inbound_qos2.contains(&9), "state handed over");
    assert_eq!(Counters::get(&b.counters().disconnect_taken_over), 1);
    assert_eq!(Counters::get(&b.counters().connections_current), 1);
}

/// An old connection that does not hand back is taken from (the
/// connection layer calls `take_back` at its deadline); its late hand-back
/// then changes nothing.
#[test]
fn a_session_not_handed_back_is_taken_back_and_the_late_hand_back_ignored() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let ghost = b.connect_now(t0, &req("dev", false, 300));
    let session = b.session_for("dev");
    let Claim::Held { conn_id } = b.claim(t0, &session, &req("dev", false, 300)) else {
        panic!("held by the ghost");
    };
    b.take_back(&session, conn_id);
    let Claim::Granted(new) = b.claim(t0, &session, &req("dev", false, 300)) else {
        panic!("taken back");
    };
    assert!(new.session_present);
    assert_eq!(Counters::get(&b.counters().disconnect_taken_over), 1);
    b.disconnect(
        t0,
        &ghost.session,
        ghost.conn_id,
        bye(CloseReason::TakenOver, true),
    );
    assert!(new.session.is_online());
    assert_eq!(Counters::get(&b.counters().connections_current), 1);
    assert_eq!(Counters::get(&b.counters().disconnect_taken_over), 1);
}

#[test]
fn clean_start_discards_the_old_session() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let g = b.connect_now(t0, &req("dev", false, 300));
    b.subscribe(
        &g.session,
        &sub("t", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, false),
    );
    let g2 = b.connect_now(t0, &req("dev", true, 300));
    assert!(!g2.session_present);
    assert_eq!(
        b.publish(t0, None, msg("t", QoS::AtLeastOnce, false)),
        0,
        "subscriptions gone"
    );
}

#[test]
fn offline_session_queues_qos1_not_qos0_up_to_the_bound() {
    let t0 = virtual_start();
    let config = CoreConfig {
        mailbox: MailboxLimits {
            max_messages: 3,
            max_bytes: 1 << 20,
        },
        ..CoreConfig::default()
    };
    let b = broker(config, t0);
    let g = b.connect_now(t0, &req("sleeper", false, 300));
    b.subscribe(
        &g.session,
        &sub("t", QoS::ExactlyOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, false),
    );
    b.publish(t0, None, msg("t", QoS::AtMostOnce, false));
    for _ in 0..4 {
        b.publish(t0, None, msg("t", QoS::AtLeastOnce, false));
    }
    assert_eq!(Counters::get(&b.counters().dropped_qos0), 1);
    assert_eq!(Counters::get(&b.counters().dropped_queue_full), 1);
    let back = b.connect_now(t0, &req("sleeper", false, 300));
    assert!(back.session_present);
    let got = drain(&b, &back.session, t0);
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|o| o.qos == QoS::AtLeastOnce),
        "delivered QoS = min(pub, sub)"
    );
}

#[test]
fn retain_handling_0_1_2() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    b.publish(t0, None, msg("r/1", QoS::AtLeastOnce, true));
    let g = b.connect_now(t0, &req("s", true, 0));
    b.subscribe(
        &g.session,
        &sub("r/+", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    let got = drain(&b, &g.session, t0);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain, "retained deliveries carry the retain flag");
    b.subscribe(
        &g.session,
        &sub("r/+", QoS::AtLeastOnce, RetainHandling::SendIfNew),
    )
    .unwrap();
    assert!(
        drain(&b, &g.session, t0).is_empty(),
        "1: only for a new subscription"
    );
    b.subscribe(
        &g.session,
        &sub("r/#", QoS::AtLeastOnce, RetainHandling::DoNotSend),
    )
    .unwrap();
    assert!(drain(&b, &g.session, t0).is_empty(), "2: never");
    // Normal delivery of a retained publish does not keep the flag without Retain As Published.
    b.publish(t0, None, msg("r/1", QoS::AtLeastOnce, true));
    assert!(drain(&b, &g.session, t0).iter().all(|o| !o.retain));
}

#[test]
fn empty_retained_payload_deletes_and_expired_retained_is_not_sent() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    b.publish(t0, None, msg("r", QoS::AtMostOnce, true));
    let mut gone = msg("r", QoS::AtMostOnce, true);
    gone.payload = Bytes::new();
    b.publish(t0, None, gone);
    assert_eq!(b.retained_count(), 0);
    let mut short = msg("e", QoS::AtMostOnce, true);
    short.expires_at = Some(t0.instant + Duration::from_secs(1));
    b.publish(t0, None, short);
    let g = b.connect_now(t0, &req("s", true, 0));
    b.subscribe(
        &g.session,
        &sub("e", QoS::AtMostOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    // Expiry is judged when the stream reaches the message.
    assert!(drain(&b, &g.session, t0 + Duration::from_secs(2)).is_empty());
    assert_eq!(b.retained_count(), 0, "expired retained message dropped");
}

/// A retained message with a Message Expiry Interval of 10 s, published at
/// t0: streamed to a subscriber and listed a tick before t0 + 10 s, neither
/// at t0 + 10 s, when it is removed.
#[test]
fn a_retained_message_expires_exactly_at_its_virtual_deadline() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let publisher = b.connect_now(t0, &req("p", true, 0));
    let publish = vigil_proto::Publish {
        topic: "r/expiring".into(),
        payload: Bytes::from_static(b"v"),
        qos: QoS::AtLeastOnce,
        retain: true,
        packet_id: 1,
        properties: Properties {
            message_expiry_interval: Some(10),
            ..Properties::default()
        }
        .into(),
        ..Default::default()
    };
    b.publish_packet(&publisher.session, publish, t0, &mut Wakes::default());
    let deadline = t0 + Duration::from_secs(10);
    let before = deadline.instant - TICK;
    assert_eq!(b.retained_matching("r/#", before).len(), 1);
    assert_eq!(b.retained_page("r/#", None, 10, before).0.len(), 1);

    let early = b.connect_now(t0, &req("early", true, 0));
    b.subscribe(
        &early.session,
        &sub("r/#", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    let mut got = Vec::new();
    while b.next_deliveries(&early.session, &mut got, 10, before) {}
    assert_eq!(got.len(), 1, "still deliverable a tick before");
    assert_eq!(got[0].message.expires_at, Some(deadline.instant));

    let late = b.connect_now(deadline, &req("late", true, 0));
    b.subscribe(
        &late.session,
        &sub("r/#", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    assert!(
        drain(&b, &late.session, deadline).is_empty(),
        "expired at it"
    );
    assert!(b.retained_matching("r/#", deadline.instant).is_empty());
    assert_eq!(b.retained_count(), 0, "removed once found expired");
}

fn will(delay: Option<u32>) -> Will {
    Will {
        topic: "status/dev".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: delay,
            ..Properties::default()
        },
    }
}

fn watcher(b: &Arc<Broker>, now: Clock) -> SessionRef {
    let w = b.connect_now(now, &req("watcher", true, 0));
    b.subscribe(
        &w.session,
        &sub(
            "status/#",
            QoS::AtLeastOnce,
            RetainHandling::SendAtSubscribe,
        ),
    )
    .unwrap();
    w.session
}

fn with_will(id: &str, will: Will, expiry: u32) -> ConnectRequest {
    ConnectRequest {
        will: Some(will),
        ..req(id, expiry == 0, expiry)
    }
}

#[test]
fn will_on_abnormal_loss_not_on_normal_disconnect() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let w = watcher(&b, t0);
    let g = b.connect_now(t0, &with_will("dev", will(None), 0));
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::ClientDisconnect(ReasonCode::SUCCESS), false),
    );
    assert!(drain(&b, &w, t0).is_empty());
    let g = b.connect_now(t0, &with_will("dev", will(None), 0));
    let ka = CloseReason::KeepAliveTimeout {
        silent_for: Duration::from_millis(7500),
        keep_alive: Duration::from_secs(5),
    };
    b.disconnect(t0, &g.session, g.conn_id, bye(ka, true));
    let got = drain(&b, &w, t0);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.payload[..], b"offline");
    assert_eq!(Counters::get(&b.counters().disconnect_keep_alive), 1);
}

/// Will Delay Interval 10 s, lost at t0: the deadline is t0 + 10 s exactly,
/// nothing is published a tick before it, the will at it; a reconnect within
/// the delay cancels it.
#[test]
fn will_delay_waits_and_reconnect_cancels_it() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let w = watcher(&b, t0);
    let g = b.connect_now(t0, &with_will("dev", will(Some(10)), 300));
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, true),
    );
    let due = t0 + Duration::from_secs(10);
    assert_eq!(b.poll_timeout(), Some(due.instant));
    b.handle_timeout(Clock {
        instant: due.instant - TICK,
        ..due
    });
    assert!(drain(&b, &w, due).is_empty(), "not a tick before");
    b.handle_timeout(due);
    assert_eq!(drain(&b, &w, due).len(), 1, "will at its delay");

    let t1 = due + Duration::from_secs(1);
    let g = b.connect_now(t1, &with_will("dev", will(Some(10)), 300));
    b.disconnect(
        t1,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, true),
    );
    let back = t1 + Duration::from_secs(9);
    let _back = b.connect_now(back, &req("dev", false, 300));
    b.handle_timeout(t1 + Duration::from_secs(11));
    assert!(
        drain(&b, &w, t1 + Duration::from_secs(11)).is_empty(),
        "reconnect within the delay cancels the will"
    );
}

/// Session Expiry 5 s and Will Delay 60 s: the will goes out when the
/// session ends, at t0 + 5 s exactly, not a tick before.
#[test]
fn will_delay_is_cut_short_by_session_expiry() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let w = watcher(&b, t0);
    let g = b.connect_now(t0, &with_will("dev", will(Some(60)), 5));
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, true),
    );
    let end = t0 + Duration::from_secs(5);
    b.handle_timeout(Clock {
        instant: end.instant - TICK,
        ..end
    });
    assert!(drain(&b, &w, end).is_empty());
    assert!(b.session("dev").is_some());
    b.handle_timeout(end);
    assert_eq!(drain(&b, &w, end).len(), 1);
    assert!(b.session("dev").is_none(), "session expired at 5 s");
    assert_eq!(Counters::get(&b.counters().sessions_expired), 1);
}

/// A will published by its timer is published at the timer's `now`: its
/// Message Expiry Interval counts from the virtual deadline.
#[test]
fn a_delayed_will_expires_counting_from_its_virtual_deadline() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let w = watcher(&b, t0);
    let mut expiring = will(Some(10));
    expiring.properties.message_expiry_interval = Some(3);
    let g = b.connect_now(t0, &with_will("dev", expiring, 300));
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, true),
    );
    let due = t0 + Duration::from_secs(10);
    b.handle_timeout(due);
    let got = drain(&b, &w, due);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].message.expires_at,
        Some(due.instant + Duration::from_secs(3))
    );
}

/// Session Expiry 30 s from a disconnect at t0: still held a tick before
/// t0 + 30 s, gone at it, with its subscriptions.
#[test]
fn session_expires_on_time_and_not_before() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let g = b.connect_now(t0, &req("dev", false, 30));
    b.subscribe(
        &g.session,
        &sub("t", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, false),
    );
    let end = t0 + Duration::from_secs(30);
    assert_eq!(b.poll_timeout(), Some(end.instant));
    b.handle_timeout(Clock {
        instant: end.instant - TICK,
        ..end
    });
    assert!(b.session("dev").is_some(), "not a tick before");
    b.handle_timeout(end);
    assert!(b.session("dev").is_none());
    assert_eq!(b.publish(end, None, msg("t", QoS::AtLeastOnce, false)), 0);
}

/// A reconnect moves the expiry: the deadline of the earlier disconnect is
/// void, the later one counts.
#[test]
fn a_reconnect_voids_the_earlier_expiry_deadline() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let g = b.connect_now(t0, &req("dev", false, 30));
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, false),
    );
    let t1 = t0 + Duration::from_secs(20);
    let g = b.connect_now(t1, &req("dev", false, 30));
    b.disconnect(
        t1,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, false),
    );
    b.handle_timeout(t0 + Duration::from_secs(30));
    assert!(b.session("dev").is_some(), "the first deadline is void");
    let end = t1 + Duration::from_secs(30);
    assert_eq!(b.poll_timeout(), Some(end.instant));
    b.handle_timeout(end);
    assert!(b.session("dev").is_none());
}

#[test]
fn shared_subscription_with_no_local_is_a_protocol_error() {
    let t0 = virtual_start();
    let b = broker(CoreConfig::default(), t0);
    let g = b.connect_now(t0, &req("s", true, 0));
    let mut s = sub(
        "$share/g/t",
        QoS::AtMostOnce,
        RetainHandling::SendAtSubscribe,
    );
    s.filters[0].options.no_local = true;
    let err = b.subscribe(&g.session, &s).unwrap_err();
    assert_eq!(err.reason, ReasonCode::PROTOCOL_ERROR);
    let codes = b
        .subscribe(
            &g.session,
            &sub("a/#/b", QoS::AtMostOnce, RetainHandling::SendAtSubscribe),
        )
        .unwrap();
    assert_eq!(codes, vec![ReasonCode::TOPIC_FILTER_INVALID]);
}

/// A subscriber whose queue of two is full, and a connected publisher; the
/// third QoS 1 message comes back blocked.
fn blocked_third(
    t0: Clock,
) -> (
    Arc<Broker>,
    ConnectGrant,
    ConnectGrant,
    Vec<(SessionRef, Outgoing)>,
) {
    let config = CoreConfig {
        mailbox: MailboxLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        },
        ..CoreConfig::default()
    };
    let b = broker(config, t0);
    let subscriber = b.connect_now(t0, &req("slow", true, 0));
    b.subscribe(
        &subscriber.session,
        &sub("t", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    let publisher = b.connect_now(t0, &req("pub", true, 0));
    let p = || vigil_proto::Publish {
        topic: "t".into(),
        qos: QoS::AtLeastOnce,
        packet_id: 1,
        ..Default::default()
    };
    for _ in 0..2 {
        let routed = b.publish_packet(&publisher.session, p(), t0, &mut Wakes::default());
        assert!(routed.blocked.is_empty());
    }
    let routed = b.publish_packet(&publisher.session, p(), t0, &mut Wakes::default());
    assert_eq!(routed.blocked.len(), 1, "the third waits for room");
    (b, subscriber, publisher, routed.blocked)
}

/// A blocked delivery goes in once the subscriber drained one; one still
/// blocked when its publisher gives up makes the subscriber a slow consumer
/// (told to go, its overflow dropped and counted, the queue stalled).
#[test]
fn a_blocked_delivery_goes_in_once_there_is_room_or_makes_a_slow_consumer() {
    let t0 = virtual_start();
    let (b, subscriber, _publisher, mut blocked) = blocked_third(t0);
    let (session, outgoing) = blocked.pop().unwrap();
    let Err(StillBlocked::Full(outgoing)) = b.offer_blocked(&session, outgoing) else {
        panic!("still full");
    };
    subscriber.session.mailbox.drain_into(&mut Vec::new(), 1);
    b.offer_blocked(&session, outgoing.clone())
        .expect("room after the drain");
    assert_eq!(subscriber.session.mailbox.len(), 2);

    let Err(StillBlocked::Full(outgoing)) = b.offer_blocked(&session, outgoing) else {
        panic!("full again");
    };
    b.give_up_blocked(&session, &outgoing, t0.instant);
    assert_eq!(word(&subscriber.control), Some(Control::SlowConsumer));
    assert!(subscriber.session.mailbox.is_stalled());
    assert_eq!(Counters::get(&b.counters().slow_consumers), 1);
    assert_eq!(Counters::get(&b.counters().dropped_queue_full), 1);
}

/// A subscriber whose own connection was held waiting to publish since the
/// publisher began waiting drained nothing meanwhile: no slow consumer, its
/// overflow is dropped and it stays connected.
#[test]
fn a_subscriber_held_publishing_itself_is_no_slow_consumer() {
    let t0 = virtual_start();
    let (b, subscriber, _publisher, mut blocked) = blocked_third(t0);
    let (session, outgoing) = blocked.pop().unwrap();
    subscriber.session.mailbox.set_held(true, t0.instant);
    subscriber
        .session
        .mailbox
        .set_held(false, t0.instant + Duration::from_millis(100));
    b.give_up_blocked(&session, &outgoing, t0.instant + Duration::from_millis(50));
    assert_eq!(word(&subscriber.control), None);
    assert_eq!(Counters::get(&b.counters().held_subscriber_stalls), 1);
    assert_eq!(Counters::get(&b.counters().slow_consumers), 0);
    assert_eq!(Counters::get(&b.counters().dropped_queue_full), 1);
    // Held before the publisher began, and no longer: that was not the cause.
    let o = session.mailbox.drain_into(&mut Vec::new(), 10);
    assert!(o.is_some(), "the stall ended with the drain");
    b.give_up_blocked(&session, &outgoing, t0.instant + Duration::from_millis(200));
    assert_eq!(word(&subscriber.control), Some(Control::SlowConsumer));
}
