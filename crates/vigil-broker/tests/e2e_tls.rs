//! TLS listeners against real sockets: TLS 1.2 and 1.3, mutual TLS, bad
//! input on both kinds of port, keep alive and handshake limits over TLS,
//! and certificates reloaded without a restart.

mod secure;

use std::time::{Duration, Instant};

use rustls::version::{TLS12, TLS13};
use secure::{client_tls, entry, start, tls, tls_connect, Ca, Client, Logs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_broker::config::{ListenerProtocol, TlsMinVersion};
use vigil_broker::BoundListener;
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

fn publish_packet(topic: &str, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        topic: topic.into(),
        payload: bytes::Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        packet_id: 7,
        ..Publish::default()
    })
}

/// Subscribe on one client, publish QoS 1 on another, and see it arrive.
pub async fn publish_subscribe(sub: &mut Client, publisher: &mut Client, topic: &str) {
    sub.send(subscribe_packet(topic)).await;
    assert!(matches!(
        sub.recv_within(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));
    publisher.send(publish_packet(topic, b"over tls")).await;
    assert!(matches!(
        publisher.recv_within(Duration::from_secs(5)).await,
        Some(Packet::PubAck(a)) if a.packet_id == 7
    ));
    match sub.recv_within(Duration::from_secs(5)).await {
        Some(Packet::Publish(p)) => {
            assert_eq!(&p.topic[..], topic);
            assert_eq!(&p.payload[..], b"over tls");
        }
        other => panic!("expected the PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_connect_publish_and_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let b = start(
        &[entry(ListenerProtocol::Mqtt, Some(tls(cert, key)))],
        |_| {},
    )
    .await;
    for (version, name) in [(&TLS12, "1.2"), (&TLS13, "1.3")] {
        let config = client_tls(&ca, version, None, &[b"mqtt"]);
        let s = tls_connect(b.addrs[0], config.clone()).await.unwrap();
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(version.version),
            "TLS {name}"
        );
        assert_eq!(
            s.get_ref().1.alpn_protocol(),
            Some(&b"mqtt"[..]),
            "ALPN mqtt"
        );
        let mut sub = Client::over(s);
        assert_eq!(
            sub.connect(&format!("sub-{name}"), 30).await,
            ReasonCode::SUCCESS
        );
        let mut publisher = Client::over(tls_connect(b.addrs[0], config).await.unwrap());
        assert_eq!(
            publisher.connect(&format!("pub-{name}"), 30).await,
            ReasonCode::SUCCESS
        );
        publish_subscribe(&mut sub, &mut publisher, &format!("tls/{name}")).await;
    }
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let mut settings = tls(cert, key);
    settings.min_version = TlsMinVersion::V1_3;
    let b = start(&[entry(ListenerProtocol::Mqtt, Some(settings))], |_| {}).await;
    let refused = tls_connect(b.addrs[0], client_tls(&ca, &TLS12, None, &[])).await;
    assert!(
        refused.is_err(),
        "a TLS 1.2 client got through a 1.3-only listener"
    );
    let s = tls_connect(b.addrs[0], client_tls(&ca, &TLS13, None, &[]))
        .await
        .unwrap();
    assert_eq!(
        Client::over(s).connect("c13", 30).await,
        ReasonCode::SUCCESS
    );
}

#[tokio::test]
async fn mutual_tls_accepts_the_cas_clients_and_refuses_others() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let other = Ca::new("another ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let mut settings = tls(cert, key);
    settings.ca = Some(ca.write(dir.path()));
    settings.require_client_cert = true;
    let b = start(&[entry(ListenerProtocol::Mqtt, Some(settings))], |_| {}).await;

    let good = ca.client("device-7");
    let s = tls_connect(b.addrs[0], client_tls(&ca, &TLS13, Some(&good), &[]))
        .await
        .unwrap();
    let mut c = Client::over(s);
    assert_eq!(c.connect("device-7", 30).await, ReasonCode::SUCCESS);
    logs.wait_for(&["client certificate accepted", "identity=device-7"])
        .await;

    // With identity = "san", the first subject alternative name is used.
    let mut settings_san =
        secure::tls(dir.path().join("server.crt"), dir.path().join("server.key"));
    settings_san.ca = Some(dir.path().join("ca.pem"));
    settings_san.require_client_cert = true;
    settings_san.identity = vigil_broker::config::TlsIdentity::San;
    let b_san = start(&[entry(ListenerProtocol::Mqtt, Some(settings_san))], |_| {}).await;
    let named = ca.client_with_san("device-8", "device-8.example");
    let s = tls_connect(b_san.addrs[0], client_tls(&ca, &TLS13, Some(&named), &[]))
        .await
        .unwrap();
    assert_eq!(
        Client::over(s).connect("device-8", 30).await,
        ReasonCode::SUCCESS
    );
    logs.wait_for(&["client certificate accepted", "identity=device-8.example"])
        .await;

    // A certificate from another CA: TLS 1.3 clients learn of the refusal
    // on their first read, so look for the closed connection there.
    for (name, cert) in [("other CA", Some(other.client("intruder"))), ("none", None)] {
        match tls_connect(b.addrs[0], client_tls(&ca, &TLS13, cert.as_ref(), &[])).await {
            Err(_) => {}
            Ok(s) => {
                let mut c = Client::over(s);
                c.send(secure::connect_packet("intruder", 30)).await;
                let got = tokio::time::timeout(Duration::from_secs(5), c.recv()).await;
                assert!(matches!(got, Ok(None)), "{name}: got {got:?}");
            }
        }
    }
    let line = logs
        .wait_for(&[
            "connection closed during its handshake",
            "mqtt+tls 127.0.0.1",
        ])
        .await;
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    // The accepted client is unaffected.
    c.send(Packet::PingReq).await;
    assert_eq!(
        c.recv_within(Duration::from_secs(5)).await,
        Some(Packet::PingResp)
    );
}

#[tokio::test]
async fn plain_mqtt_to_a_tls_port_and_tls_to_a_plain_port_are_closed_with_a_log_line() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let b = start(
        &[
            entry(ListenerProtocol::Mqtt, None),
            entry(ListenerProtocol::Mqtt, Some(tls(cert, key))),
        ],
        |_| {},
    )
    .await;
    let (plain, secure) = (b.addrs[0], b.addrs[1]);
    let config = client_tls(&ca, &TLS13, None, &[]);
    let mut bystander = Client::over(tls_connect(secure, config.clone()).await.unwrap());
    assert_eq!(
        bystander.connect("bystander", 30).await,
        ReasonCode::SUCCESS
    );

    // Plain MQTT CONNECT to the TLS port.
    let mut c = Client::over(TcpStream::connect(secure).await.unwrap());
    c.send(secure::connect_packet("plain", 30)).await;
    assert_eq!(c.recv_within(Duration::from_secs(5)).await, None, "closed");
    let line = logs
        .wait_for(&[
            "plain MQTT sent to a TLS port",
            &format!("mqtt+tls {secure}"),
        ])
        .await;
    assert!(line.contains("peer=127.0.0.1:"), "{line}");

    // A TLS ClientHello to the plain port.
    let tcp = TcpStream::connect(plain).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let hello = tokio_rustls::TlsConnector::from(config.clone()).connect(
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
        tcp,
    );
    let refused = tokio::time::timeout(Duration::from_secs(5), hello)
        .await
        .unwrap();
    assert!(refused.is_err(), "a plain port completed a TLS handshake");
    let line = logs
        .wait_for(&["malformed or illegal packet", &format!("peer={local}")])
        .await;
    eprintln!("{line}");

    bystander.send(Packet::PingReq).await;
    assert_eq!(
        bystander.recv_within(Duration::from_secs(5)).await,
        Some(Packet::PingResp)
    );
}

#[tokio::test]
async fn a_silent_tls_client_is_closed_at_one_and_a_half_keep_alive() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let b = start(
        &[entry(ListenerProtocol::Mqtt, Some(tls(cert, key)))],
        |_| {},
    )
    .await;
    let mut c = Client::over(
        tls_connect(b.addrs[0], client_tls(&ca, &TLS13, None, &[]))
            .await
            .unwrap(),
    );
    assert_eq!(c.connect("silent", 2).await, ReasonCode::SUCCESS);
    let started = Instant::now();
    match c.recv_within(Duration::from_secs(10)).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::KEEP_ALIVE_TIMEOUT),
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(6),
        "closed after {waited:?}, keep alive 2 s"
    );
    assert_eq!(c.recv_within(Duration::from_secs(5)).await, None);
}

#[tokio::test]
async fn stalled_handshakes_time_out_and_delay_no_one() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let b = start(
        &[entry(ListenerProtocol::Mqtt, Some(tls(cert, key)))],
        |c| {
            c.listener.connect_timeout = 1;
        },
    )
    .await;
    let config = client_tls(&ca, &TLS13, None, &[]);
    let mut live = Client::over(tls_connect(b.addrs[0], config.clone()).await.unwrap());
    assert_eq!(live.connect("live", 30).await, ReasonCode::SUCCESS);
    // 200 sockets that send nothing and 200 that send half a ClientHello.
    let mut stalled = Vec::new();
    for i in 0..400 {
        let mut s = TcpStream::connect(b.addrs[0]).await.unwrap();
        if i % 2 == 1 {
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
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
    // Every stalled socket is closed at the connect timeout (1 s).
    let started = Instant::now();
    for mut s in stalled {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a stalled handshake was not closed");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    logs.wait_for(&["handshake not finished within the connect timeout"])
        .await;
    assert_eq!(
        b.broker
            .counters()
            .connections_current
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn certificates_reload_on_request_and_on_file_change_and_bad_ones_are_refused() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let b = start(
        &[entry(
            ListenerProtocol::Mqtt,
            Some(tls(cert.clone(), key.clone())),
        )],
        |_| {},
    )
    .await;
    let config = client_tls(&ca, &TLS13, None, &[]);
    let serial_now = || async {
        let s = tls_connect(b.addrs[0], config.clone()).await.unwrap();
        secure::server_serial(&s)
    };
    assert_eq!(serial_now().await, vec![1]);
    let mut open = Client::over(tls_connect(b.addrs[0], config.clone()).await.unwrap());
    assert_eq!(open.connect("open", 60).await, ReasonCode::SUCCESS);
    let expiry = b.reloader.seconds_until_expiry();
    assert_eq!(expiry.len(), 1);
    assert!(expiry[0].1 > 86_400, "{expiry:?}");

    // SIGHUP's path: the next connection sees serial 2.
    ca.server(2).write(dir.path(), "server");
    assert_eq!(b.reloader.reload_all(), 1);
    assert_eq!(serial_now().await, vec![2]);

    // A bad certificate keeps the old one, and the error names the file.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert_eq!(b.reloader.reload_all(), 0);
    logs.wait_for(&["certificate not reloaded", cert.to_str().unwrap()])
        .await;
    assert_eq!(serial_now().await, vec![2]);
    // A key that does not match the certificate too.
    let three = ca.server(3);
    std::fs::write(&cert, three.cert.pem()).unwrap();
    assert_eq!(b.reloader.reload_all(), 0);
    logs.wait_for(&["certificate not reloaded", key.to_str().unwrap()])
        .await;
    assert_eq!(serial_now().await, vec![2]);

    // A new modification time is noticed within a few seconds.
    three.write(dir.path(), "server");
    let deadline = Instant::now() + Duration::from_secs(15);
    while serial_now().await != vec![3] {
        assert!(
            Instant::now() < deadline,
            "the changed files were not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    logs.wait_for(&["certificate file changed; reloaded"]).await;

    // The connection opened before every reload still works.
    open.send(Packet::PingReq).await;
    assert_eq!(
        open.recv_within(Duration::from_secs(5)).await,
        Some(Packet::PingResp)
    );
}

#[tokio::test]
async fn an_expired_or_mismatched_certificate_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.expired_server().write(dir.path(), "expired");
    let err = BoundListener::bind(&entry(ListenerProtocol::Mqtt, Some(tls(cert.clone(), key))))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(cert.to_str().unwrap()) && err.contains("expired"),
        "{err}"
    );
    assert!(err.contains("mqtt+tls 127.0.0.1:0"), "{err}");
    let (cert, _) = ca.server(1).write(dir.path(), "one");
    let (_, other_key) = ca.server(2).write(dir.path(), "two");
    let err = BoundListener::bind(&entry(
        ListenerProtocol::Mqtt,
        Some(tls(cert, other_key.clone())),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(other_key.to_str().unwrap()), "{err}");
    let missing = dir.path().join("missing.pem");
    let err = BoundListener::bind(&entry(
        ListenerProtocol::Mqtt,
        Some(tls(missing.clone(), other_key)),
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
}

/// rumqttc over TLS, a client we did not write, with its own rustls: QoS 1
/// from one rumqttc client to another through a TLS listener.
#[tokio::test]
async fn rumqttc_publishes_and_subscribes_over_tls() {
    use rumqttc::{
        AsyncClient, Event, MqttOptions, Packet as RPacket, TlsConfiguration, Transport,
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("rumqttc ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let b = start(
        &[entry(ListenerProtocol::Mqtt, Some(tls(cert, key)))],
        |_| {},
    )
    .await;
    let options = |id: &str| {
        let mut o = MqttOptions::new(id, "127.0.0.1", b.addrs[0].port());
        o.set_keep_alive(Duration::from_secs(5));
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: ca.cert.pem().into_bytes(),
            alpn: None,
            client_auth: None,
        }));
        o
    };
    let (sub, mut sub_ev) = AsyncClient::new(options("rumqttc-tls-sub"), 16);
    sub.subscribe("tls/rumqttc", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(RPacket::SubAck(_)) = sub_ev.poll().await.expect("sub over TLS")
            {
                break;
            }
        }
    })
    .await
    .expect("SUBACK over TLS");
    let (publisher, mut pub_ev) = AsyncClient::new(options("rumqttc-tls-pub"), 16);
    tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
    for i in 0..10u8 {
        publisher
            .publish("tls/rumqttc", rumqttc::QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        let mut got = Vec::new();
        while got.len() < 10 {
            if let Event::Incoming(RPacket::Publish(p)) = sub_ev.poll().await.expect("sub over TLS")
            {
                got.push(p.payload[0]);
            }
        }
        got
    })
    .await
    .expect("10 messages over TLS");
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
}
