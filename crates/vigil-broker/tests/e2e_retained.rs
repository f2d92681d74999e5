//! Retained messages over real sockets: every matching one reaches a new
//! subscriber however many there are, the broker's other clients are still
//! answered promptly meanwhile, and a persistent session that disconnects
//! mid-stream gets the rest when it returns.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Blocking, TestBroker};
use vigil_broker::Broker;
use vigil_proto::message::Message;
use vigil_proto::time::Clock;
use vigil_proto::{Ack, Packet, ProtocolVersion, QoS};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

fn store_retained(broker: &Broker, n: usize) {
    for i in 0..n {
        broker.publish(
            Clock::now(),
            None,
            Message {
                topic: format!("ret/{i}/x"),
                payload: Bytes::from(format!("value {i}")),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: None,
                expires_at: None,
            },
        );
    }
    // Not matched by `ret/#`: must not be streamed.
    broker.publish(
        Clock::now(),
        None,
        Message {
            topic: "other/1".into(),
            payload: Bytes::from_static(b"no"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
            expires_at: None,
        },
    );
    assert_eq!(broker.retained_count(), n + 1);
}

/// Reads retained PUBLISHes (acknowledging each) into `seen` until it holds
/// `want` topics, the connection ends, or `stop_after` of them arrived in
/// this call. Returns whether the connection is still open.
fn receive(c: &mut Blocking, seen: &mut HashSet<String>, want: usize, stop_after: usize) -> bool {
    let mut this_call = 0;
    while seen.len() < want && this_call < stop_after {
        match c.recv() {
            Some(Packet::Publish(p)) => {
                assert!(p.retain, "a retained message is sent with RETAIN 1");
                assert!(p.topic.starts_with("ret/"), "unmatched topic {}", p.topic);
                if p.qos != QoS::AtMostOnce {
                    c.send(&Packet::PubAck(Ack::new(p.packet_id)));
                }
                seen.insert(p.topic.into());
                this_call += 1;
            }
            Some(Packet::SubAck(_)) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None => return false,
        }
    }
    true
}

/// 20,000 retained messages and a `ret/#` subscriber at QoS 1: all 20,000
/// arrive (the session queue holds 1,000, which used to be all that came),
/// and a client pinging on the same single-threaded broker meanwhile gets
/// every PINGRESP promptly.
#[tokio::test]
async fn twenty_thousand_retained_all_arrive_while_pings_are_answered() {
    const N: usize = 20_000;
    let b = TestBroker::start().await;
    store_retained(&b.broker, N);
    let addr = b.addr;
    let streaming = Arc::new(AtomicBool::new(true));
    let pinging = streaming.clone();
    let pinger = tokio::task::spawn_blocking(move || {
        let (mut c, _) = Blocking::connect(addr, V311, "pinger", true);
        let mut worst = Duration::ZERO;
        let mut pings = 0u32;
        while pinging.load(Ordering::Acquire) {
            let sent = Instant::now();
            c.send(&Packet::PingReq);
            assert_eq!(c.recv(), Some(Packet::PingResp));
            worst = worst.max(sent.elapsed());
            pings += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (worst, pings)
    });
    let subscriber = tokio::task::spawn_blocking(move || {
        let (mut c, _) = Blocking::connect(addr, V311, "sub", true);
        let started = Instant::now();
        c.subscribe("ret/#", QoS::AtLeastOnce);
        let mut seen = HashSet::new();
        receive(&mut c, &mut seen, N, usize::MAX);
        streaming.store(false, Ordering::Release);
        (seen.len(), started.elapsed())
    });
    let (got, took) = tokio::time::timeout(Duration::from_secs(120), subscriber)
        .await
        .expect("the subscriber finished in time")
        .unwrap();
    let (worst, pings) = pinger.await.unwrap();
    eprintln!(
        "{got} retained messages in {took:?}; {pings} pings meanwhile, slowest PINGRESP {worst:?}"
    );
    assert_eq!(got, N, "every retained message arrives");
    assert!(
        pings >= 5,
        "the pinger pinged while the stream ran ({pings})"
    );
    // The issue asks for 50 ms; a debug build on a shared machine gets slack.
    assert!(
        worst < Duration::from_millis(250),
        "a PINGRESP took {worst:?} while retained messages streamed"
    );
    let queued = b
        .broker
        .client("sub", Instant::now())
        .map_or(0, |c| c.queued);
    assert_eq!(queued, 0, "nothing went through the session queue");
}

/// A persistent session (clean session 0) that disconnects mid-stream gets
/// the rest when it comes back: the stream stays with the session, and what
/// was in flight unacknowledged is resent.
#[tokio::test]
async fn a_persistent_session_gets_the_rest_of_the_stream_after_reconnecting() {
    const N: usize = 5_000;
    let b = TestBroker::start().await;
    store_retained(&b.broker, N);
    let addr = b.addr;
    let seen = tokio::task::spawn_blocking(move || {
        let (mut c, present) = Blocking::connect(addr, V311, "durable", false);
        assert!(!present);
        c.subscribe("ret/#", QoS::AtLeastOnce);
        let mut seen = HashSet::new();
        assert!(receive(&mut c, &mut seen, N, 1_500));
        drop(c);
        let first = seen.len();
        let (mut c, present) = Blocking::connect(addr, V311, "durable", false);
        assert!(present, "the session was kept");
        receive(&mut c, &mut seen, N, usize::MAX);
        (first, seen.len())
    });
    let (first, all) = tokio::time::timeout(Duration::from_secs(60), seen)
        .await
        .expect("finished in time")
        .unwrap();
    assert!(first < N, "disconnected mid-stream ({first} of {N})");
    assert_eq!(all, N, "the rest arrived after the reconnect");
}
