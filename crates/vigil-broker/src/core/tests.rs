//! Broker core tests: registry, takeover, queues, wills and expiry on a
//! virtual clock (timers are driven by explicit `handle_timeout(now)` calls).

use std::time::{Duration, Instant};

use bytes::Bytes;
use vigil_proto::message::Message;
use vigil_proto::server::{CloseReason, SessionState};
use vigil_proto::{
    Properties, ProtocolVersion, QoS, RetainHandling, Subscribe, Subscription, SubscriptionOptions,
    Will,
};

use super::*;

fn req(id: &str, clean: bool, expiry: u32) -> ConnectRequest {
    ConnectRequest {
        client_id: id.into(),
        protocol: ProtocolVersion::V5,
        clean_start: clean,
        session_expiry: expiry,
        will: None,
        username: None,
        peer: "127.0.0.1:1".parse().unwrap(),
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

fn drain(b: &Broker, s: &SessionRef) -> Vec<vigil_proto::message::Outgoing> {
    let mut out = Vec::new();
    while b.next_deliveries(s, &mut out, 1000, Instant::now()) {}
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

#[tokio::test]
async fn takeover_signals_the_old_connection_and_resumes_its_state() {
    let b = Broker::new(CoreConfig::default());
    let old = b.connect(req("dev", false, 300)).await.unwrap();
    assert!(!old.session_present);
    let b2 = b.clone();
    let old_session = old.session.clone();
    let old_id = old.conn_id;
    let handback = tokio::spawn(async move {
        assert_eq!(old.control.recv().await, Control::TakenOver);
        let mut state = SessionState::default();
        state.inbound_qos2.insert(9);
        b2.disconnect(
            Instant::now(),
            &old_session,
            old_id,
            DisconnectInfo {
                state,
                ..bye(CloseReason::TakenOver, true)
            },
        );
    });
    let new = b.connect(req("dev", false, 300)).await.unwrap();
    handback.await.unwrap();
    assert!(new.session_present);
    assert!(new.state.inbound_qos2.contains(&9), "state handed over");
    assert_eq!(Counters::get(&b.counters().disconnect_taken_over), 1);
    assert_eq!(Counters::get(&b.counters().connections_current), 1);
}

#[tokio::test]
async fn clean_start_discards_the_old_session() {
    let b = Broker::new(CoreConfig::default());
    let g = b.connect(req("dev", false, 300)).await.unwrap();
    b.subscribe(
        &g.session,
        &sub("t", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    b.disconnect(
        Instant::now(),
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, false),
    );
    let g2 = b.connect(req("dev", true, 300)).await.unwrap();
    assert!(!g2.session_present);
    assert_eq!(
        b.publish(None, msg("t", QoS::AtLeastOnce, false)),
        0,
        "subscriptions gone"
    );
}

#[tokio::test]
async fn offline_session_queues_qos1_not_qos0_up_to_the_bound() {
    let config = CoreConfig {
        mailbox: MailboxLimits {
            max_messages: 3,
            max_bytes: 1 << 20,
        },
        ..CoreConfig::default()
    };
    let b = Broker::new(config);
    let g = b.connect(req("sleeper", false, 300)).await.unwrap();
    b.subscribe(
        &g.session,
        &sub("t", QoS::ExactlyOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    b.disconnect(
        Instant::now(),
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, false),
    );
    b.publish(None, msg("t", QoS::AtMostOnce, false));
    for _ in 0..4 {
        b.publish(None, msg("t", QoS::AtLeastOnce, false));
    }
    assert_eq!(Counters::get(&b.counters().dropped_qos0), 1);
    assert_eq!(Counters::get(&b.counters().dropped_queue_full), 1);
    let back = b.connect(req("sleeper", false, 300)).await.unwrap();
    assert!(back.session_present);
    let got = drain(&b, &back.session);
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|o| o.qos == QoS::AtLeastOnce),
        "delivered QoS = min(pub, sub)"
    );
}

#[tokio::test]
async fn retain_handling_0_1_2() {
    let b = Broker::new(CoreConfig::default());
    b.publish(None, msg("r/1", QoS::AtLeastOnce, true));
    let g = b.connect(req("s", true, 0)).await.unwrap();
    b.subscribe(
        &g.session,
        &sub("r/+", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    let got = drain(&b, &g.session);
    assert_eq!(got.len(), 1);
    assert!(got[0].retain, "retained deliveries carry the retain flag");
    b.subscribe(
        &g.session,
        &sub("r/+", QoS::AtLeastOnce, RetainHandling::SendIfNew),
    )
    .unwrap();
    assert!(
        drain(&b, &g.session).is_empty(),
        "1: only for a new subscription"
    );
    b.subscribe(
        &g.session,
        &sub("r/#", QoS::AtLeastOnce, RetainHandling::DoNotSend),
    )
    .unwrap();
    assert!(drain(&b, &g.session).is_empty(), "2: never");
    // Normal delivery of a retained publish does not keep the flag without Retain As Published.
    b.publish(None, msg("r/1", QoS::AtLeastOnce, true));
    assert!(drain(&b, &g.session).iter().all(|o| !o.retain));
}

#[tokio::test]
async fn empty_retained_payload_deletes_and_expired_retained_is_not_sent() {
    let b = Broker::new(CoreConfig::default());
    b.publish(None, msg("r", QoS::AtMostOnce, true));
    let mut gone = msg("r", QoS::AtMostOnce, true);
    gone.payload = Bytes::new();
    b.publish(None, gone);
    assert_eq!(b.retained_count(), 0);
    let mut short = msg("e", QoS::AtMostOnce, true);
    let t0 = Instant::now();
    short.expires_at = Some(t0 + Duration::from_secs(1));
    b.publish(None, short);
    let g = b.connect(req("s", true, 0)).await.unwrap();
    b.subscribe(
        &g.session,
        &sub("e", QoS::AtMostOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    // Expiry is judged when the stream reaches the message.
    let mut out = Vec::new();
    while b.next_deliveries(&g.session, &mut out, 10, t0 + Duration::from_secs(2)) {}
    assert!(out.is_empty());
    assert_eq!(b.retained_count(), 0, "expired retained message dropped");
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

async fn watcher(b: &Arc<Broker>) -> SessionRef {
    let w = b.connect(req("watcher", true, 0)).await.unwrap();
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

#[tokio::test]
async fn will_on_abnormal_loss_not_on_normal_disconnect() {
    let b = Broker::new(CoreConfig::default());
    let w = watcher(&b).await;
    let g = b
        .connect(ConnectRequest {
            will: Some(will(None)),
            ..req("dev", true, 0)
        })
        .await
        .unwrap();
    b.disconnect(
        Instant::now(),
        &g.session,
        g.conn_id,
        bye(CloseReason::ClientDisconnect(ReasonCode::SUCCESS), false),
    );
    assert!(drain(&b, &w).is_empty());
    let g = b
        .connect(ConnectRequest {
            will: Some(will(None)),
            ..req("dev", true, 0)
        })
        .await
        .unwrap();
    let ka = CloseReason::KeepAliveTimeout {
        silent_for: Duration::from_millis(7500),
        keep_alive: Duration::from_secs(5),
    };
    b.disconnect(Instant::now(), &g.session, g.conn_id, bye(ka, true));
    let got = drain(&b, &w);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].message.payload[..], b"offline");
    assert_eq!(Counters::get(&b.counters().disconnect_keep_alive), 1);
}

#[tokio::test]
async fn will_delay_waits_and_reconnect_cancels_it() {
    let b = Broker::new(CoreConfig::default());
    let w = watcher(&b).await;
    let t0 = Instant::now();
    let g = b
        .connect(ConnectRequest {
            will: Some(will(Some(10))),
            ..req("dev", false, 300)
        })
        .await
        .unwrap();
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, true),
    );
    assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    b.handle_timeout(t0 + Duration::from_millis(9999));
    assert!(drain(&b, &w).is_empty());
    b.handle_timeout(t0 + Duration::from_secs(10));
    assert_eq!(drain(&b, &w).len(), 1, "will after its delay");

    let g = b
        .connect(ConnectRequest {
            will: Some(will(Some(10))),
            ..req("dev", false, 300)
        })
        .await
        .unwrap();
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, true),
    );
    let _back = b.connect(req("dev", false, 300)).await.unwrap();
    b.handle_timeout(t0 + Duration::from_secs(11));
    assert!(
        drain(&b, &w).is_empty(),
        "reconnect within the delay cancels the will"
    );
}

#[tokio::test]
async fn will_delay_is_cut_short_by_session_expiry() {
    let b = Broker::new(CoreConfig::default());
    let w = watcher(&b).await;
    let t0 = Instant::now();
    let g = b
        .connect(ConnectRequest {
            will: Some(will(Some(60))),
            ..req("dev", false, 5)
        })
        .await
        .unwrap();
    b.disconnect(
        t0,
        &g.session,
        g.conn_id,
        bye(CloseReason::PeerClosed, true),
    );
    b.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(drain(&b, &w).len(), 1);
    assert!(b.session("dev").is_none(), "session expired at 5 s");
    assert_eq!(Counters::get(&b.counters().sessions_expired), 1);
}

#[tokio::test]
async fn session_expires_on_time_and_not_before() {
    let b = Broker::new(CoreConfig::default());
    let t0 = Instant::now();
    let g = b.connect(req("dev", false, 30)).await.unwrap();
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
    b.handle_timeout(t0 + Duration::from_millis(29_999));
    assert!(b.session("dev").is_some());
    b.handle_timeout(t0 + Duration::from_secs(30));
    assert!(b.session("dev").is_none());
    assert_eq!(b.publish(None, msg("t", QoS::AtLeastOnce, false)), 0);
}

#[tokio::test]
async fn shared_subscription_with_no_local_is_a_protocol_error() {
    let b = Broker::new(CoreConfig::default());
    let g = b.connect(req("s", true, 0)).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_finishes_without_deadlock() {
    let b = Broker::new(CoreConfig {
        takeover_wait: Duration::from_millis(200),
        ..CoreConfig::default()
    });
    let mut tasks = Vec::new();
    for i in 0..200 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("dev-{}", i % 50);
            let g = b.connect(req(&id, false, 60)).await.unwrap();
            // Play the connection: hand back on takeover, or leave after a moment.
            tokio::select! {
                c = g.control.recv() => assert_eq!(c, Control::TakenOver),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
            b.disconnect(
                Instant::now(),
                &g.session,
                g.conn_id,
                bye(CloseReason::PeerClosed, false),
            );
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("no deadlock");
    assert_eq!(Counters::get(&b.counters().connections_current), 0);
    assert_eq!(b.session_count(), 50);
}

#[tokio::test]
async fn a_full_online_queue_holds_the_publisher_instead_of_dropping_qos1() {
    let config = CoreConfig {
        mailbox: MailboxLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
        },
        ..CoreConfig::default()
    };
    let b = Broker::new(config);
    let sub_grant = b.connect(req("slow", true, 0)).await.unwrap();
    b.subscribe(
        &sub_grant.session,
        &sub("t", QoS::AtLeastOnce, RetainHandling::SendAtSubscribe),
    )
    .unwrap();
    let publisher = b.connect(req("pub", true, 0)).await.unwrap();
    let p = || vigil_proto::Publish {
        topic: "t".into(),
        qos: QoS::AtLeastOnce,
        packet_id: 1,
        ..Default::default()
    };
    for _ in 0..2 {
        assert!(b
            .publish_packet(
                &publisher.session,
                p(),
                Instant::now(),
                &mut Wakes::default()
            )
            .blocked
            .is_empty());
    }
    let routed = b.publish_packet(
        &publisher.session,
        p(),
        Instant::now(),
        &mut Wakes::default(),
    );
    assert_eq!(
        routed.blocked.len(),
        1,
        "the third QoS 1 message waits for room"
    );
    let deliver = b.deliver_blocked(None, routed.blocked);
    tokio::pin!(deliver);
    // Polled once: the queue is full, so it waits (for room), and only then
    // does the subscriber drain one; no sleep decides the order.
    let first = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(deliver.as_mut(), cx))
    })
    .await;
    assert!(
        first.is_pending(),
        "the publisher is held while the queue is full"
    );
    let mut out = Vec::new();
    sub_grant.session.mailbox.drain_into(&mut out, 1);
    assert_eq!(out.len(), 1);
    tokio::time::timeout(Duration::from_secs(5), deliver)
        .await
        .expect("the held message went in once there was room");
    assert_eq!(
        sub_grant.session.mailbox.len(),
        2,
        "delivered once there was room"
    );
    assert_eq!(
        Counters::get(&b.counters().dropped_queue_full),
        0,
        "nothing acknowledged was dropped"
    );
}
