//! MQTT over WebSocket and WSS against real sockets: subprotocols, packets
//! split over frames and several in one frame, refusals with their log
//! lines, and keep alive (WebSocket pings are not MQTT activity).

mod secure;

use std::time::{Duration, Instant};

use rustls::version::TLS13;
use secure::{client_tls, entry, start, tls, tls_connect, Ca, Client, Logs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use vigil_broker::config::ListenerProtocol;
use vigil_proto::{Packet, Publish, QoS, ReasonCode, Subscribe, Subscription, SubscriptionOptions};

fn subscribe_packet(filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        }],
        ..Subscribe::default()
    })
}

fn publish_packet(topic: &str, id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        topic: topic.into(),
        payload: bytes::Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        packet_id: id,
        ..Publish::default()
    })
}

async fn ws(addr: std::net::SocketAddr, subprotocol: Option<&str>) -> Client {
    let tcp = TcpStream::connect(addr).await.unwrap();
    Client::websocket(tcp, &format!("ws://{addr}/mqtt"), subprotocol)
        .await
        .unwrap()
}

async fn expect_publish(c: &mut Client, payload: &[u8]) {
    match c.recv_within(Duration::from_secs(5)).await {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], payload),
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn packets_split_over_frames_and_sharing_frames_both_arrive() {
    let b = start(
        &[
            entry(ListenerProtocol::Ws, None),
            entry(ListenerProtocol::Mqtt, None),
        ],
        |_| {},
    )
    .await;
    let mut sub = ws(b.addrs[0], Some("mqtt")).await;
    assert_eq!(sub.connect("ws-sub", 30).await, ReasonCode::SUCCESS);
    sub.send(subscribe_packet("ws/#")).await;
    assert!(matches!(
        sub.recv_within(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));

    // CONNECT one byte per frame.
    let mut publisher = ws(b.addrs[0], Some("mqttv3.1")).await;
    let connect = publisher.encode(secure::connect_packet("ws-pub", 30));
    for byte in &connect {
        publisher
            .send_bytes(std::slice::from_ref(byte))
            .await
            .unwrap();
    }
    assert!(matches!(
        publisher.recv_within(Duration::from_secs(5)).await,
        Some(Packet::ConnAck(a)) if a.reason == ReasonCode::SUCCESS
    ));
    // Two PUBLISHes and half of a third in one frame, the rest in the next.
    let mut frame = publisher.encode(publish_packet("ws/a", 1, b"one"));
    frame.extend(publisher.encode(publish_packet("ws/b", 2, b"two")));
    let third = publisher.encode(publish_packet("ws/c", 3, b"three"));
    frame.extend_from_slice(&third[..4]);
    publisher.send_bytes(&frame).await.unwrap();
    publisher.send_bytes(&third[4..]).await.unwrap();
    for payload in [&b"one"[..], b"two", b"three"] {
        expect_publish(&mut sub, payload).await;
    }
    // A plain TCP client of the same broker gets WebSocket publishes too.
    let mut tcp = Client::over(TcpStream::connect(b.addrs[1]).await.unwrap());
    assert_eq!(tcp.connect("tcp-sub", 30).await, ReasonCode::SUCCESS);
    tcp.send(subscribe_packet("ws/#")).await;
    assert!(matches!(
        tcp.recv_within(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));
    publisher.send(publish_packet("ws/d", 4, b"four")).await;
    expect_publish(&mut tcp, b"four").await;
    expect_publish(&mut sub, b"four").await;
}

#[tokio::test]
async fn wss_connects_publishes_and_subscribes() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let b = start(&[entry(ListenerProtocol::Ws, Some(tls(cert, key)))], |_| {}).await;
    let config = client_tls(&ca, &TLS13, None, &[b"http/1.1"]);
    let mut clients = Vec::new();
    for id in ["wss-sub", "wss-pub"] {
        let s = tls_connect(b.addrs[0], config.clone()).await.unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let url = format!("wss://localhost:{}/mqtt", b.addrs[0].port());
        let mut c = Client::websocket(s, &url, Some("mqtt")).await.unwrap();
        assert_eq!(c.connect(id, 30).await, ReasonCode::SUCCESS);
        clients.push(c);
    }
    let mut publisher = clients.pop().unwrap();
    let mut sub = clients.pop().unwrap();
    sub.send(subscribe_packet("wss/t")).await;
    assert!(matches!(
        sub.recv_within(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));
    publisher.send(publish_packet("wss/t", 9, b"secure")).await;
    expect_publish(&mut sub, b"secure").await;
    // A plain ws:// client on the wss port is refused at the TLS layer.
    let tcp = TcpStream::connect(b.addrs[0]).await.unwrap();
    let url = format!("ws://{}/mqtt", b.addrs[0]);
    assert!(Client::websocket(tcp, &url, Some("mqtt")).await.is_err());
    logs.wait_for(&["not TLS", &format!("ws+tls {}", b.addrs[0])])
        .await;
}

#[tokio::test]
async fn wrong_subprotocol_wrong_path_and_plain_http_are_refused_with_a_log_line() {
    let (logs, _guard) = Logs::capture();
    let b = start(&[entry(ListenerProtocol::Ws, None)], |_| {}).await;
    let addr = b.addrs[0];
    let name = format!("ws {addr}");
    let mut bystander = ws(addr, Some("mqtt")).await;
    assert_eq!(
        bystander.connect("bystander", 30).await,
        ReasonCode::SUCCESS
    );

    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        Client::websocket(tcp, &format!("ws://{addr}/mqtt"), Some("chat"))
            .await
            .is_err()
    );
    logs.wait_for(&[
        "connection closed during its handshake",
        &name,
        "subprotocol [\"chat\"] offered",
    ])
    .await;

    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(Client::websocket(tcp, &format!("ws://{addr}/mqtt"), None)
        .await
        .is_err());
    logs.wait_for(&[&name, "no WebSocket subprotocol offered"])
        .await;

    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        Client::websocket(tcp, &format!("ws://{addr}/other"), Some("mqtt"))
            .await
            .is_err()
    );
    logs.wait_for(&[&name, "path /other is not this listener"])
        .await;

    // An HTTP request that is not an upgrade.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a plain HTTP request was left open");
    logs.wait_for(&[
        &name,
        &format!("peer={local}"),
        "not a WebSocket upgrade request",
    ])
    .await;

    bystander.send(Packet::PingReq).await;
    assert_eq!(
        bystander.recv_within(Duration::from_secs(5)).await,
        Some(Packet::PingResp)
    );
}

#[tokio::test]
async fn a_text_frame_closes_the_connection_with_a_log_line() {
    let (logs, _guard) = Logs::capture();
    let b = start(&[entry(ListenerProtocol::Ws, None)], |_| {}).await;
    let mut c = ws(b.addrs[0], Some("mqtt")).await;
    assert_eq!(c.connect("texter", 30).await, ReasonCode::SUCCESS);
    c.send_ws(Message::text("hello")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), c.recv())
        .await
        .unwrap();
    assert!(!matches!(got, Some(Packet::PingResp)), "{got:?}");
    assert_eq!(c.recv_within(Duration::from_secs(5)).await, None, "closed");
    logs.wait_for(&["client=texter", "text frame received"])
        .await;
}

#[tokio::test]
async fn websocket_pings_are_not_mqtt_activity_and_a_silent_client_is_closed_on_time() {
    let b = start(&[entry(ListenerProtocol::Ws, None)], |_| {}).await;
    let mut c = ws(b.addrs[0], Some("mqtt")).await;
    assert_eq!(c.connect("pinger", 2).await, ReasonCode::SUCCESS);
    // Answered at the WebSocket level.
    c.send_ws(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), c.recv_ws())
        .await
        .unwrap();
    assert_eq!(pong, Some(Message::Pong(b"are you there".to_vec().into())));
    let started = Instant::now();
    let closed = async {
        loop {
            // WebSocket pings every 300 ms: they must not keep the session alive.
            tokio::select! {
                got = c.recv() => return got,
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
            if c.send_ws(Message::Ping(vec![1].into())).await.is_err() {
                return None;
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .unwrap()
    {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(6),
        "closed after {waited:?}, keep alive 2 s"
    );

    // MQTT PINGREQs do keep a WebSocket client alive past 1.5 K.
    let mut c = ws(b.addrs[0], Some("mqtt")).await;
    assert_eq!(c.connect("mqtt-pinger", 1).await, ReasonCode::SUCCESS);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        c.send(Packet::PingReq).await;
        assert_eq!(
            c.recv_within(Duration::from_secs(5)).await,
            Some(Packet::PingResp)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A WebSocket handshake that never finishes (nothing sent, or half an HTTP
/// upgrade request) is closed at the connect timeout with a log line, and a
/// connected client's PINGRESP is not delayed meanwhile.
#[tokio::test]
async fn stalled_websocket_handshakes_time_out_and_delay_no_one() {
    let (logs, _guard) = Logs::capture();
    let b = start(&[entry(ListenerProtocol::Ws, None)], |c| {
        c.listener.connect_timeout = 1;
    })
    .await;
    let addr = b.addrs[0];
    let mut live = ws(addr, Some("mqtt")).await;
    assert_eq!(live.connect("live", 30).await, ReasonCode::SUCCESS);
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    for _ in 0..5 {
        let sent = Instant::now();
        live.send(Packet::PingReq).await;
        assert_eq!(
            live.recv_within(Duration::from_secs(5)).await,
            Some(Packet::PingResp)
        );
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "PINGRESP took {:?}",
            sent.elapsed()
        );
    }
    let started = Instant::now();
    for mut s in stalled {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a stalled WebSocket handshake was not closed"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before the connect timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    logs.wait_for(&[
        &format!("ws {addr}"),
        "handshake not finished within the connect timeout",
    ])
    .await;
    live.send(Packet::PingReq).await;
    assert_eq!(
        live.recv_within(Duration::from_secs(5)).await,
        Some(Packet::PingResp)
    );
}
