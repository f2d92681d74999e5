//! Seeing inside the broker over real sockets: `$SYS` values as a subscriber
//! reads them, the disconnect history after a keep-alive close, and a kick
//! (DISCONNECT 0x98) as the kicked client reads it.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use vigil_proto::time::Clock;
use vigil_proto::{Packet, ProtocolVersion, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Reads `$SYS` publishes into `seen` until `done(seen)` or `within` runs out.
async fn sys_until(
    c: &mut RawClient,
    seen: &mut HashMap<String, String>,
    within: Duration,
    done: impl Fn(&HashMap<String, String>) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match tokio::time::timeout(left, c.recv()).await {
            Ok(Some(Packet::Publish(p))) => {
                let value = String::from_utf8_lossy(&p.payload).into_owned();
                seen.insert(p.topic.into(), value);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return done(seen),
        }
    }
    true
}

/// The number `topic` holds (0 if absent).
fn num(seen: &HashMap<String, String>, topic: &str) -> u64 {
    seen.get(topic).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn is(seen: &HashMap<String, String>, topic: &str, value: &str) -> bool {
    seen.get(topic).map(String::as_str) == Some(value)
}

#[tokio::test]
async fn sys_topics_follow_connects_and_keep_alive_closes() {
    let b = TestBroker::with(|c| c.sys.interval = 1).await;
    let mut sub = connected(&b, "watcher", V5, 60, None).await;
    // `$SYS/#` last: its retained values may come before a later SUBACK.
    subscribe(&mut sub, "$share/g/jobs").await;
    subscribe(&mut sub, "$SYS/#").await;
    let mut seen = HashMap::new();
    // Retained: the first round is there at once or within the interval;
    // the watcher's CONNECT and SUBSCRIBE (read) and CONNACK and SUBACK
    // (written) are in the bytes by the next.
    let ok = sys_until(&mut sub, &mut seen, Duration::from_secs(5), |s| {
        is(s, "$SYS/broker/clients/connected", "1")
            && s.contains_key("$SYS/broker/version")
            && s.contains_key("$SYS/broker/load/messages/received/1min")
            && s.contains_key("$SYS/broker/uptime")
            && num(s, "$SYS/broker/bytes/received") >= 20
            && num(s, "$SYS/broker/bytes/sent") >= 8
    })
    .await;
    assert!(ok, "first $SYS round not seen: {seen:?}");
    assert!(seen["$SYS/broker/version"].starts_with("vigil version "));

    // A client with K = 1 that never speaks again is closed for keep alive.
    let silent = connected(&b, "silent", V5, 1, None).await;
    let ok = sys_until(&mut sub, &mut seen, Duration::from_secs(10), |s| {
        is(s, "$SYS/broker/vigil/disconnects/keep_alive_timeout", "1")
            && is(s, "$SYS/broker/clients/connected", "1")
            && is(s, "$SYS/broker/clients/maximum", "2")
    })
    .await;
    assert!(ok, "keep-alive close not in $SYS: {seen:?}");
    assert_eq!(seen["$SYS/broker/subscriptions/count"], "2");
    assert_eq!(seen["$SYS/broker/shared_subscriptions/count"], "1");
    drop(silent);

    // A late subscriber gets every value retained at once.
    let mut late = connected(&b, "late", V5, 60, None).await;
    subscribe(&mut late, "$SYS/broker/clients/#").await;
    let mut late_seen = HashMap::new();
    let ok = sys_until(&mut late, &mut late_seen, Duration::from_secs(2), |s| {
        s.contains_key("$SYS/broker/clients/total")
    })
    .await;
    assert!(ok, "retained $SYS values not delivered: {late_seen:?}");
    // $SYS messages are the broker's own: not counted as received from clients.
    assert_eq!(b.broker.counters().messages_in.get(), 0);
    b.stop().await;
}

/// Mosquitto's `$SYS/broker/` names (its man page, mosquitto(8)), which
/// dashboards made for it read.
const MOSQUITTO_NAMES: &[&str] = &[
    "version",
    "uptime",
    "clients/connected",
    "clients/disconnected",
    "clients/total",
    "clients/maximum",
    "clients/expired",
    "messages/received",
    "messages/sent",
    "publish/messages/received",
    "publish/messages/sent",
    "publish/messages/dropped",
    "publish/bytes/received",
    "publish/bytes/sent",
    "bytes/received",
    "bytes/sent",
    "subscriptions/count",
    "shared_subscriptions/count",
    "retained messages/count",
    "store/messages/count",
    "store/messages/bytes",
    "load/messages/received/1min",
    "load/messages/sent/5min",
    "load/publish/received/15min",
    "load/publish/sent/1min",
    "load/publish/dropped/1min",
    "load/bytes/received/1min",
    "load/bytes/sent/15min",
    "load/connections/1min",
    "load/sockets/1min",
    "load/sockets/15min",
];

#[tokio::test]
async fn sys_has_mosquittos_names_and_they_count_what_they_name() {
    let b = TestBroker::with(|c| c.sys.interval = 1).await;
    let mut sub = connected(&b, "watcher", V5, 60, None).await;
    subscribe(&mut sub, "data").await;
    subscribe(&mut sub, "$SYS/#").await;
    let mut publisher = connected(&b, "pub", V5, 60, None).await;
    for (topic, payload, retain) in [("data", "12345", false), ("kept", "1234567", true)] {
        publisher
            .send(Packet::Publish(vigil_proto::Publish {
                topic: topic.into(),
                payload: bytes::Bytes::from(payload),
                retain,
                ..vigil_proto::Publish::default()
            }))
            .await;
    }
    // A round's values arrive one by one: wait for all of them.
    // Payload bytes are process-wide (other tests of this binary count
    // too): at least this test's 12 in and the 5 delivered to the watcher.
    // Packets of every kind: CONNECTs, SUBSCRIBEs and PUBLISHes in;
    // CONNACKs, SUBACKs and PUBLISHes out. The store holds the retained
    // messages ("kept" and the $SYS ones).
    let counted = |s: &HashMap<String, String>| {
        num(s, "$SYS/broker/publish/messages/received") == 2
            && num(s, "$SYS/broker/publish/messages/sent") >= 1
            && num(s, "$SYS/broker/publish/bytes/received") >= 12
            && num(s, "$SYS/broker/publish/bytes/sent") >= 5
            && num(s, "$SYS/broker/messages/received") >= 6
            && num(s, "$SYS/broker/messages/sent") >= 5
            && num(s, "$SYS/broker/retained messages/count") >= 1
            && num(s, "$SYS/broker/store/messages/count")
                >= num(s, "$SYS/broker/retained messages/count")
            && num(s, "$SYS/broker/store/messages/bytes") >= 7
    };
    let mut seen = HashMap::new();
    let ok = sys_until(&mut sub, &mut seen, Duration::from_secs(10), |s| {
        MOSQUITTO_NAMES
            .iter()
            .all(|n| s.contains_key(&format!("$SYS/broker/{n}")))
            && counted(s)
    })
    .await;
    let missing: Vec<_> = MOSQUITTO_NAMES
        .iter()
        .filter(|n| !seen.contains_key(&format!("$SYS/broker/{n}")))
        .collect();
    assert!(ok, "missing {missing:?}, or counts not reached: {seen:?}");
    assert_eq!(seen["$SYS/broker/publish/messages/dropped"], "0");
    // A socket and a connection between two rounds: a rate in the next.
    let _late = connected(&b, "late", V5, 60, None).await;
    let rate = |s: &HashMap<String, String>, n: &str| -> f64 {
        s.get(&format!("$SYS/broker/load/{n}/1min"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let ok = sys_until(&mut sub, &mut seen, Duration::from_secs(10), |s| {
        rate(s, "sockets") > 0.0 && rate(s, "connections") > 0.0
    })
    .await;
    assert!(ok, "no socket or connection rate: {seen:?}");
    b.stop().await;
}

#[tokio::test]
async fn sys_interval_zero_publishes_nothing() {
    let b = TestBroker::with(|c| c.sys.interval = 0).await;
    let mut sub = connected(&b, "watcher", V5, 60, None).await;
    subscribe(&mut sub, "$SYS/#").await;
    let mut seen = HashMap::new();
    sys_until(&mut sub, &mut seen, Duration::from_millis(1500), |s| {
        !s.is_empty()
    })
    .await;
    assert!(seen.is_empty(), "{seen:?}");
    b.stop().await;
}

#[tokio::test]
async fn the_history_says_why_a_client_was_closed_for_keep_alive() {
    let b = TestBroker::start().await;
    let _silent = connected(&b, "dev-7", V5, 1, None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        if let Some(r) = b.broker.disconnects("dev-7") {
            break r[0].clone();
        }
        assert!(Instant::now() < deadline, "no disconnect recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record.reason, "keep_alive_timeout");
    assert_eq!(record.reason_code, 0x8D);
    assert_eq!(record.keep_alive_secs, Some(1));
    let silent = record.silent_secs.expect("silence measured");
    assert!((1.5..5.0).contains(&silent), "{silent}");
    assert!(record.detail.contains("with K = 1 s"), "{}", record.detail);
    assert_eq!(record.will, "none");
    assert!(record.peer.starts_with("127.0.0.1:"));
    assert!(b.broker.disconnects("nobody").is_none());
    b.stop().await;
}

#[tokio::test]
async fn a_kicked_client_reads_administrative_action_and_its_history_says_so() {
    let b = TestBroker::start().await;
    let mut c = connected(&b, "kick-me", V5, 60, None).await;
    let info = b.broker.client("kick-me", Instant::now()).expect("listed");
    assert!(info.connected);
    assert_eq!(info.protocol, Some(5));
    assert_eq!(info.keep_alive_secs, Some(60));
    assert!(b.broker.kick(Clock::now(), "nobody", false).is_none());
    assert_eq!(
        b.broker.kick(Clock::now(), "kick-me", true),
        Some(vigil_broker::Kicked::Connection)
    );
    match c.recv_within(Duration::from_secs(5)).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::ADMINISTRATIVE_ACTION),
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.broker.disconnects("kick-me").is_none()
        || b.broker.client("kick-me", Instant::now()).is_some()
    {
        assert!(
            Instant::now() < deadline,
            "kick not recorded or session kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = &b.broker.disconnects("kick-me").unwrap()[0];
    assert_eq!(r.reason, "kicked");
    assert_eq!(r.reason_code, 0x98);
    b.stop().await;
}
