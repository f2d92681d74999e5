//! `use_identity_as_username` over real mutual-TLS sockets: the client
//! certificate's CN is the user name the ACL sees, no password is needed
//! (one sent anyway is ignored), and a listener that would take clients
//! without a certificate refuses to start.

mod secure;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::version::TLS13;
use secure::{client_tls, entry, start, tls, tls_connect, Ca, Client};
use vigil_broker::auth::{Auth, AuthConfig};
use vigil_broker::config::ListenerProtocol;
use vigil_broker::BoundListener;
use vigil_proto::{
    Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, Subscription,
    SubscriptionOptions,
};

const WAIT: Duration = Duration::from_secs(5);

/// CONNECT as `id`, claiming `user` with `password` (both ignored by a
/// listener that logs clients in by certificate).
fn connect_claiming(id: &str, user: Option<&str>, password: Option<&str>) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: id.into(),
        username: user.map(Into::into),
        password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
        ..Connect::default()
    }))
}

async fn connack(c: &mut Client, packet: Packet) -> ReasonCode {
    c.send(packet).await;
    match c.recv_within(WAIT).await {
        Some(Packet::ConnAck(a)) => a.reason,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

async fn suback(c: &mut Client, filter: &str) -> ReasonCode {
    c.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        }],
        ..Subscribe::default()
    }))
    .await;
    match c.recv_within(WAIT).await {
        Some(Packet::SubAck(a)) => a.reasons[0],
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn the_certificate_cn_is_the_acl_user_and_no_password_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let mut settings = tls(cert, key);
    settings.ca = Some(ca.write(dir.path()));
    settings.require_client_cert = true;
    settings.use_identity_as_username = true;
    // A password file that does not know alice: the certificate is her
    // login, so it is never consulted for her.
    let others: String = include_str!("fixtures/mosquitto.passwd")
        .lines()
        .filter(|l| !l.starts_with("alice:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("passwd"), others).unwrap();
    std::fs::write(
        dir.path().join("acl"),
        "user alice\ntopic readwrite alice/#\nuser bob\ntopic readwrite bob/#\n",
    )
    .unwrap();
    let b = start(&[entry(ListenerProtocol::Mqtt, Some(settings))], |_| {}).await;
    let auth = Arc::new(
        Auth::from_config(&AuthConfig {
            password_file: Some(dir.path().join("passwd")),
            acl_file: Some(dir.path().join("acl")),
            ..AuthConfig::default()
        })
        .unwrap(),
    );
    assert!(b.broker.set_auth(auth.clone()));

    let alice = ca.client("alice");
    let config = client_tls(&ca, &TLS13, Some(&alice), &[]);
    // Claims to be bob, with a password that is wrong for anyone: ignored.
    let mut c = Client::over(tls_connect(b.addrs[0], config.clone()).await.unwrap());
    let code = connack(&mut c, connect_claiming("a1", Some("bob"), Some("wrong"))).await;
    assert_eq!(code, ReasonCode::SUCCESS, "the certificate is the login");
    assert_eq!(
        suback(&mut c, "alice/#").await,
        ReasonCode(1),
        "granted QoS 1"
    );
    assert_eq!(
        suback(&mut c, "bob/#").await,
        ReasonCode::NOT_AUTHORIZED,
        "the ACL sees alice, not the user name claimed in CONNECT"
    );
    // And she may publish and receive on her own topics.
    c.send(Packet::Publish(Publish {
        topic: "alice/x".into(),
        qos: QoS::AtLeastOnce,
        packet_id: 9,
        payload: Bytes::from_static(b"hi"),
        ..Publish::default()
    }))
    .await;
    let mut got_ack = false;
    let mut got_msg = false;
    while !(got_ack && got_msg) {
        match c.recv_within(WAIT).await {
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.reason, ReasonCode::SUCCESS);
                got_ack = true;
            }
            Some(Packet::Publish(p)) => {
                assert_eq!(&*p.topic, "alice/x");
                got_msg = true;
            }
            other => panic!("expected PUBACK and the message, got {other:?}"),
        }
    }

    // No user name and no password at all: still alice.
    let mut c2 = Client::over(tls_connect(b.addrs[0], config).await.unwrap());
    assert_eq!(
        connack(&mut c2, connect_claiming("a2", None, None)).await,
        ReasonCode::SUCCESS
    );
    assert_eq!(suback(&mut c2, "alice/y").await, ReasonCode(1));
    assert_eq!(suback(&mut c2, "other/y").await, ReasonCode::NOT_AUTHORIZED);

    let counters = auth.counters();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(counters.connect_by_certificate.load(Relaxed), 2);
    assert_eq!(counters.connect_bad_credentials.load(Relaxed), 0);
    assert_eq!(
        counters.verifications.load(Relaxed),
        0,
        "no password hashed"
    );
}

#[tokio::test]
async fn a_certificate_without_the_identity_is_refused_with_0x87() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let mut settings = tls(cert, key);
    settings.ca = Some(ca.write(dir.path()));
    settings.require_client_cert = true;
    settings.use_identity_as_username = true;
    // The identity is the SAN, which this certificate lacks.
    settings.identity = vigil_broker::config::TlsIdentity::San;
    let b = start(&[entry(ListenerProtocol::Mqtt, Some(settings))], |_| {}).await;
    let config = client_tls(&ca, &TLS13, Some(&ca.client("no-san")), &[]);
    let mut c = Client::over(tls_connect(b.addrs[0], config).await.unwrap());
    assert_eq!(
        connack(&mut c, connect_claiming("x", Some("admin"), Some("pw"))).await,
        ReasonCode::NOT_AUTHORIZED
    );
}

#[tokio::test]
async fn use_identity_as_username_without_required_client_certificates_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca");
    let (cert, key) = ca.server(1).write(dir.path(), "server");
    let mut settings = tls(cert, key);
    settings.ca = Some(ca.write(dir.path()));
    settings.use_identity_as_username = true;
    let err = BoundListener::bind(&entry(ListenerProtocol::Mqtt, Some(settings)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("use_identity_as_username needs tls.require_client_cert = true"),
        "{err}"
    );
    assert!(
        err.contains("mqtt+tls 127.0.0.1:0"),
        "names the listener: {err}"
    );
}
