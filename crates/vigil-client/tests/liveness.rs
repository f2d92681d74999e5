//! The connection's liveness and throughput never depend on the application
//! or the link keeping up: an application that blocks its only thread, a
//! publisher over a 1.5 s round trip, a full event queue, a broker that hangs
//! up without a word.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{delaying_proxy, vigil};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_client::{
    Backoff, Client, ClientError, ConnectOptions, Event, Message, ProtocolVersion, QoS,
};

fn options(port: u16, id: &str) -> ConnectOptions {
    ConnectOptions::builder("127.0.0.1", port)
        .client_id(id)
        .build()
}

/// The seed failure: an application on a current-thread runtime blocks its
/// thread (`std::thread::sleep`) for 3 × K while a publisher floods its QoS 1
/// subscription. The broker must not close it for keep alive, and every QoS 1
/// message arrives once the application reads again.
#[test]
fn an_application_blocking_its_only_thread_keeps_its_connection() {
    const K: u16 = 1;
    const MESSAGES: u32 = 1_000;
    // The broker and the publisher live on their own runtime: only the
    // application's thread is blocked, as in a real deployment.
    let infra = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = infra.block_on(vigil());
    let port = broker.addr.port();
    let app = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, mut events) = app.block_on(async {
        let o = ConnectOptions::builder("127.0.0.1", port)
            .client_id("blocked-app")
            .keep_alive(K)
            .event_capacity(16)
            .build();
        let (client, events) = Client::connect(o).await.unwrap();
        client.subscribe("flood/#", QoS::AtLeastOnce).await.unwrap();
        (client, events)
    });
    let publisher = infra.spawn(async move {
        let (p, _e) = Client::connect(options(port, "flooder")).await.unwrap();
        let mut tokens = Vec::new();
        for seq in 0..MESSAGES {
            let m = Message::new("flood/x", seq.to_string()).qos(QoS::AtLeastOnce);
            tokens.push(p.publish(m).await.unwrap());
        }
        for t in tokens {
            t.await.unwrap();
        }
    });

    // The application's only thread is busy: no task of its runtime runs.
    std::thread::sleep(Duration::from_secs(3 * u64::from(K)));

    let received = app.block_on(async {
        let mut got = BTreeSet::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while got.len() < MESSAGES as usize {
                match events.recv().await {
                    Some(Event::Message(m)) => {
                        got.insert(String::from_utf8_lossy(&m.payload).parse::<u32>().unwrap());
                    }
                    Some(Event::Disconnected(e)) => panic!("connection lost: {e}"),
                    Some(_) => {}
                    None => panic!("client stopped"),
                }
            }
        })
        .await
        .expect("the QoS 1 flood did not arrive after the application resumed");
        got
    });
    infra.block_on(publisher).unwrap();
    assert_eq!(
        received,
        (0..MESSAGES).collect::<BTreeSet<_>>(),
        "QoS 1: nothing lost"
    );
    let counters = broker.broker.counters();
    assert_eq!(
        counters.disconnect_keep_alive.load(Ordering::Relaxed),
        0,
        "the broker closed a connection for keep alive"
    );
    app.block_on(async {
        let token = client
            .publish(Message::new("after/block", "x").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        token.await.expect("the connection is still up");
        client.disconnect().await.unwrap();
    });
}

/// The other half of the seed: 100 QoS 1 publishes through a link that
/// delays everything the broker sends by 1.5 s. Pipelined, they are all
/// acknowledged within a few round trips, not one round trip each (150 s).
#[tokio::test]
async fn publishes_pipeline_over_a_slow_link() {
    const RTT: Duration = Duration::from_millis(1500);
    let b = vigil().await;
    let (watcher, mut seen) = Client::connect(options(b.addr.port(), "watcher"))
        .await
        .unwrap();
    watcher
        .subscribe("seed/pub", QoS::AtLeastOnce)
        .await
        .unwrap();
    let proxy = delaying_proxy(b.addr, RTT).await;
    let o = ConnectOptions::builder("127.0.0.1", proxy.port())
        .client_id("cellular")
        .keep_alive(5)
        .build();
    let (client, _events) = Client::connect(o).await.unwrap();
    let start = Instant::now();
    let mut tokens = Vec::new();
    for i in 0..100u32 {
        let m = Message::new("seed/pub", i.to_string()).qos(QoS::AtLeastOnce);
        tokens.push(client.publish(m).await.unwrap());
    }
    let queued = start.elapsed();
    for t in tokens {
        t.await.expect("acknowledged");
    }
    let acked = start.elapsed();
    assert!(
        queued < RTT,
        "publish waited for acks instead of queueing: {queued:?}"
    );
    assert!(
        acked < RTT * 5,
        "100 QoS 1 messages took {acked:?} over a {RTT:?} round trip: not pipelined"
    );
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < 100 {
            if let Some(Event::Message(m)) = seen.recv().await {
                got.push(String::from_utf8_lossy(&m.payload).parse::<u32>().unwrap());
            }
        }
    })
    .await
    .expect("the watcher did not get all 100");
    assert_eq!(got, (0..100).collect::<Vec<_>>(), "all delivered, in order");
}

/// `max_pending_publishes` bounds what the application can queue: the next
/// `publish` waits until an earlier message finishes.
#[tokio::test]
async fn publish_waits_when_the_pending_bound_is_reached() {
    let b = vigil().await;
    let proxy = delaying_proxy(b.addr, Duration::from_millis(800)).await;
    let o = ConnectOptions::builder("127.0.0.1", proxy.port())
        .client_id("bounded")
        .max_pending_publishes(2)
        .build();
    let (client, _events) = Client::connect(o).await.unwrap();
    let q1 = |s: &str| Message::new("b", s.to_string()).qos(QoS::AtLeastOnce);
    let t1 = client.publish(q1("1")).await.unwrap();
    let _t2 = client.publish(q1("2")).await.unwrap();
    let start = Instant::now();
    let third = client.publish(q1("3")).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "the third publish did not wait for a free slot"
    );
    t1.await.unwrap();
    third.await.unwrap();
}

/// `Disconnected` and `Connected` arrive even when the application's queue
/// was full of messages when the connection was lost.
#[tokio::test]
async fn connection_events_are_never_dropped_by_a_full_queue() {
    let b = vigil().await;
    let o = ConnectOptions::builder("127.0.0.1", b.addr.port())
        .client_id("twin")
        .event_capacity(2)
        .reconnect(Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(200),
            stable_after: Duration::from_secs(60),
        })
        .build();
    let (client, mut events) = Client::connect(o).await.unwrap();
    client.subscribe("fill", QoS::AtMostOnce).await.unwrap();
    let (p, _pe) = Client::connect(options(b.addr.port(), "filler"))
        .await
        .unwrap();
    for _ in 0..10 {
        p.publish(Message::new("fill", "x"))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Wait until the deliveries have filled the queue of 2 (the client
    // counts what it dropped), then take the session over.
    tokio::time::timeout(Duration::from_secs(10), async {
        while client.dropped_messages() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the queue of 2 never filled: nothing was dropped");
    let (_thief, _te) = Client::connect(options(b.addr.port(), "twin"))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while statuses.len() < 2 {
            match events.recv().await {
                Some(Event::Disconnected(e)) => statuses.push(format!("disconnected: {e}")),
                Some(Event::Connected { .. }) => statuses.push("connected".to_string()),
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("status events lost; got {statuses:?}"));
    assert_eq!(
        statuses,
        vec![
            "disconnected: connection closed by broker: session taken over (0x8E)".to_string(),
            "connected".to_string()
        ]
    );
}

/// A broker (MQTT 3.1.1 has no server DISCONNECT) that accepts the
/// connection and hangs up after `after`: the client says how long after its
/// last packet that was, and counts it.
#[tokio::test]
async fn a_close_without_disconnect_is_explained_and_counted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf).await.unwrap();
        // CONNACK, accepted, no session.
        s.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(s);
    });
    let o = ConnectOptions::builder("127.0.0.1", port)
        .client_id("hung-up-on")
        .version(ProtocolVersion::V3_1_1)
        .keep_alive(2)
        .build();
    let (client, mut events) = Client::connect(o).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("the close was not reported");
    let Some(Event::Disconnected(e)) = ev else {
        panic!("expected Disconnected, got {ev:?}")
    };
    let ClientError::ClosedWithoutDisconnect {
        since_last_sent: Some(since),
        keep_alive,
        ping_outstanding: false,
    } = &e
    else {
        panic!("expected ClosedWithoutDisconnect, got {e:?}")
    };
    assert_eq!(*keep_alive, Duration::from_secs(2));
    assert!(
        *since >= Duration::from_millis(250) && *since < Duration::from_secs(2),
        "{since:?}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("the broker closed the connection without DISCONNECT 0.")
            && text.contains("after this client's last packet (keep alive 2 s)")
            && !text.contains("stalled"),
        "{text}"
    );
    assert_eq!(client.stats().closed_without_disconnect, 1);
}

/// With reconnect on, a refusal that retrying cannot fix (bad credentials)
/// ends the client instead of retrying forever: `Disconnected` with the
/// refusal, then the event stream ends.
#[tokio::test]
async fn a_permanent_refusal_stops_the_reconnecting() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // MQTT 5 CONNACKs: accepted, then "bad user name or password".
        for connack in [
            [0x20u8, 0x03, 0x00, 0x00, 0x00],
            [0x20, 0x03, 0x00, 0x86, 0x00],
        ] {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(&connack).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(s);
        }
    });
    let o = ConnectOptions::builder("127.0.0.1", port)
        .client_id("refused-later")
        .reconnect(Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_millis(100),
            stable_after: Duration::from_secs(60),
        })
        .build();
    let (_client, mut events) = Client::connect(o).await.unwrap();
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.recv().await {
            seen.push(ev);
        }
    })
    .await;
    assert!(ended.is_ok(), "the client kept reconnecting: {seen:?}");
    let Some(Event::Disconnected(last)) = seen.last() else {
        panic!("expected a final Disconnected: {seen:?}")
    };
    assert!(last.is_permanent_refusal(), "{last}");
    assert_eq!(
        last.to_string(),
        "CONNACK refused: bad user name or password (0x86)"
    );
}

/// Dropping every `Client` handle stops a reconnecting client for good: it
/// sends DISCONNECT and the event stream ends, instead of reconnecting and
/// leaving again in a loop.
#[tokio::test]
async fn dropping_every_handle_stops_a_reconnecting_client() {
    let b = vigil().await;
    let o = ConnectOptions::builder("127.0.0.1", b.addr.port())
        .client_id("dropped")
        .reconnect(Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_millis(100),
            stable_after: Duration::from_secs(60),
        })
        .build();
    let (client, mut events) = Client::connect(o).await.unwrap();
    drop(client);
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = events.recv().await {
            seen.push(ev);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the client kept going after its handles were dropped: {seen:?}"));
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "{seen:?}"
    );
    // The broker counts the DISCONNECT once it has read it.
    let c = b.broker.counters();
    let start = Instant::now();
    while c.disconnect_client.load(Ordering::Relaxed) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no DISCONNECT reached the broker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        c.connections_total.load(Ordering::Relaxed),
        1,
        "no reconnect"
    );
}
