//! vigil-client over real sockets: against vigil serve (in-process), through a
//! half-open proxy, with a slow application, and against Mosquitto.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{mosquitto, proxy, vigil};
use vigil_client::{
    Backoff, Client, ClientError, ConnectOptions, Event, Message, ProtocolVersion, QoS, ReasonCode,
};

fn options(port: u16, id: &str, version: ProtocolVersion) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", port);
    o.session.client_id = id.into();
    o.session.version = version;
    o
}

async fn next_message(events: &mut vigil_client::Events) -> Box<Message> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await {
                Some(Event::Message(m)) => return m,
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
    })
    .await
    .expect("timed out waiting for a message")
}

async fn round_trip(port: u16, version: ProtocolVersion) {
    let (sub, mut events) = Client::connect(options(port, &format!("sub-{version:?}"), version))
        .await
        .unwrap();
    assert_eq!(
        sub.subscribe("rt/#", QoS::ExactlyOnce).await.unwrap(),
        vec![ReasonCode::GRANTED_QOS_2]
    );
    let (publisher, _pe) = Client::connect(options(port, &format!("pub-{version:?}"), version))
        .await
        .unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .publish(Message::new(format!("rt/{}", qos.as_u8()), vec![qos.as_u8()]).qos(qos))
            .await
            .unwrap()
            .await
            .unwrap();
        let m = next_message(&mut events).await;
        assert_eq!(
            (m.topic.as_str(), &m.payload[..], m.qos),
            (
                format!("rt/{}", qos.as_u8()).as_str(),
                &[qos.as_u8()][..],
                qos
            )
        );
    }
    publisher.disconnect().await.unwrap();
    sub.disconnect().await.unwrap();
}

#[tokio::test]
async fn qos_0_1_2_against_vigil_v5_and_v311() {
    let b = vigil().await;
    round_trip(b.addr.port(), ProtocolVersion::V5).await;
    round_trip(b.addr.port(), ProtocolVersion::V3_1_1).await;
}

#[tokio::test]
async fn qos_0_1_2_against_mosquitto_v5_and_v311() {
    let Some(m) = mosquitto().await else { return };
    round_trip(m.port, ProtocolVersion::V5).await;
    round_trip(m.port, ProtocolVersion::V3_1_1).await;
}

#[tokio::test]
async fn connection_refused_says_so() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(options(port, "nobody", ProtocolVersion::V5))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Io { .. }), "{err}");
    assert_eq!(
        err.io_kind(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "the io::Error stays reachable"
    );
    assert!(
        err.to_string().contains("cannot connect to 127.0.0.1"),
        "{err}"
    );
}

#[tokio::test]
async fn takeover_is_reported_with_its_reason() {
    let b = vigil().await;
    let (_first, mut events) = Client::connect(options(b.addr.port(), "twin", ProtocolVersion::V5))
        .await
        .unwrap();
    let (_second, _e2) = Client::connect(options(b.addr.port(), "twin", ProtocolVersion::V5))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    let Some(Event::Disconnected(err)) = ev else {
        panic!("expected Disconnected, got {ev:?}")
    };
    assert_eq!(
        err.to_string(),
        "connection closed by broker: session taken over (0x8E)"
    );
}

#[tokio::test]
async fn publishing_while_disconnected_fails_fast_and_never_reports_success() {
    let b = vigil().await;
    let mut o = options(b.addr.port(), "ff", ProtocolVersion::V5);
    o.reconnect = Some(Backoff {
        min: Duration::from_secs(30),
        max: Duration::from_secs(30),
        stable_after: Duration::from_secs(60),
    });
    let (c, mut events) = Client::connect(o).await.unwrap();
    let _thief = Client::connect(options(b.addr.port(), "ff", ProtocolVersion::V5))
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert!(matches!(ev, Some(Event::Disconnected(_))));
    let err = c
        .publish(Message::new("t", "x").qos(QoS::AtMostOnce))
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NotConnected { .. }), "{err}");
}

/// The link goes half-open (no FIN, nothing forwarded): the client notices
/// within keep alive + ping timeout, reports a keep-alive failure, reconnects
/// when the link is back, resumes its session, and gets the QoS 1 messages
/// published meanwhile.
#[tokio::test]
async fn half_open_link_is_detected_and_the_session_resumes() {
    let b = vigil().await;
    let p = proxy(b.addr).await;
    let mut o = options(p.addr.port(), "roamer", ProtocolVersion::V5);
    o.session.keep_alive = 1;
    o.session.ping_timeout = Some(Duration::from_secs(1));
    o.session.clean_start = false;
    o.session.session_expiry = 300;
    o.session.connect_timeout = Duration::from_millis(500);
    o.reconnect = Some(Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_millis(400),
        stable_after: Duration::from_secs(30),
    });
    let (client, mut events) = Client::connect(o).await.unwrap();
    client
        .subscribe("fleet/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();

    p.blackhole.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let ev = tokio::time::timeout(Duration::from_secs(6), events.recv())
        .await
        .expect("half-open link not detected");
    let detected = cut.elapsed();
    let Some(Event::Disconnected(err)) = ev else {
        panic!("expected Disconnected, got {ev:?}")
    };
    assert!(matches!(err, ClientError::KeepAliveTimeout { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("keep alive timeout: no PINGRESP within 1 s"),
        "{err}"
    );
    assert!(
        detected <= Duration::from_millis(2600),
        "detected after {detected:?}; bound is K + ping timeout"
    );

    // While the client is away, a publisher sends QoS 1 messages; the broker acknowledges them.
    let (publisher, _pe) = Client::connect(options(b.addr.port(), "hq", ProtocolVersion::V5))
        .await
        .unwrap();
    for i in 0..3u8 {
        publisher
            .publish(Message::new("fleet/cmd", vec![i]).qos(QoS::AtLeastOnce))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    p.blackhole.store(false, Ordering::SeqCst);

    let mut got = Vec::new();
    let mut reconnected = None;
    tokio::time::timeout(Duration::from_secs(15), async {
        while got.len() < 3 {
            match events.recv().await {
                Some(Event::Connected {
                    session_present, ..
                }) => reconnected = Some(session_present),
                Some(Event::Message(m)) => got.push(m.payload[0]),
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
    })
    .await
    .expect("messages published during the outage were not delivered");
    assert_eq!(reconnected, Some(true), "session resumed");
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, vec![0, 1, 2], "no acknowledged QoS 1 message lost");
}

/// The application stops reading for several keep-alive periods while the
/// broker floods it: the connection stays up (pings handled on the event-loop
/// task) and the bounded queue's drops are counted.
#[tokio::test]
async fn slow_application_does_not_kill_the_connection() {
    let b = vigil().await;
    let mut o = options(b.addr.port(), "slow", ProtocolVersion::V5);
    o.session.keep_alive = 1;
    o.session.ping_timeout = Some(Duration::from_secs(1));
    o.event_capacity = 16;
    let (client, mut events) = Client::connect(o).await.unwrap();
    client.subscribe("flood", QoS::AtMostOnce).await.unwrap();
    let (publisher, _pe) = Client::connect(options(b.addr.port(), "flooder", ProtocolVersion::V5))
        .await
        .unwrap();
    let flood = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            for _ in 0..50 {
                if publisher
                    .publish(Message::new("flood", vec![0u8; 64]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Not reading `events` for 4 keep-alive periods.
    tokio::time::sleep(Duration::from_secs(4)).await;
    flood.await.unwrap();
    assert!(
        client.dropped_messages() > 0,
        "the bounded queue's policy is observable"
    );
    let mut saw_disconnect = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        if let Event::Disconnected(e) = ev {
            saw_disconnect = true;
            eprintln!("unexpected disconnect: {e}");
        }
    }
    assert!(
        !saw_disconnect,
        "a slow application must not get a healthy connection killed"
    );
    client
        .publish(Message::new("still/alive", "yes").qos(QoS::AtLeastOnce))
        .await
        .unwrap()
        .await
        .expect("connection still up");
}
