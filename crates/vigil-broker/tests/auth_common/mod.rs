//! Helpers of the authentication e2e tests (e2e_auth.rs, e2e_auth_jwt.rs):
//! password and ACL files in a temporary directory, a broker with a gate,
//! and raw MQTT exchanges whose exact codes the tests check.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vigil_broker::auth::{Auth, AuthConfig};
use vigil_proto::{
    Connect, Packet, ProtocolVersion, Publish, QoS, ReasonCode, Subscribe, Subscription,
    SubscriptionOptions, Will,
};

use crate::common::{RawClient, TestBroker};

pub const V5: ProtocolVersion = ProtocolVersion::V5;
pub const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
pub const WAIT: Duration = Duration::from_secs(5);

/// The fixture's lines for alice ("correct horse", $7$) and erin ("erin
/// pw", argon2id), written by mosquitto_passwd / the argon2 reference CLI.
pub fn fixture_line(user: &str) -> String {
    include_str!("../fixtures/mosquitto.passwd")
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap()
        .to_string()
}

pub const ACL: &str = "\
topic read public/#
user alice
topic readwrite sensors/#
topic deny sensors/private/#
topic write wills/alice
user erin
topic write sensors/#
topic read erin/#
";

pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new(passwd: &str, acl: Option<&str>) -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), passwd).unwrap();
        if let Some(acl) = acl {
            std::fs::write(dir.path().join("acl"), acl).unwrap();
        }
        Files { dir }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self, acl: bool, allow_anonymous: Option<bool>) -> AuthConfig {
        AuthConfig {
            password_file: Some(self.path("passwd")),
            acl_file: acl.then(|| self.path("acl")),
            allow_anonymous,
            ..AuthConfig::default()
        }
    }
}

pub async fn broker_with(config: &AuthConfig) -> (TestBroker, Arc<Auth>) {
    let b = TestBroker::start().await;
    let auth = Arc::new(Auth::from_config(config).unwrap());
    assert!(b.broker.set_auth(auth.clone()));
    (b, auth)
}

pub fn login(
    id: &str,
    version: ProtocolVersion,
    user: Option<&str>,
    password: Option<&str>,
    will: Option<Will>,
) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 30,
        client_id: id.into(),
        username: user.map(Into::into),
        password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
        will,
        ..Connect::default()
    }))
}

/// The CONNACK code a CONNECT gets (3.1.1 return codes come back mapped to
/// their MQTT 5 equivalents: 4 -> 0x86, 5 -> 0x87).
pub async fn connack(
    addr: std::net::SocketAddr,
    packet: Packet,
    version: ProtocolVersion,
) -> (ReasonCode, RawClient) {
    let mut c = RawClient::connect(addr, version).await;
    c.send(packet).await;
    match c.recv_within(WAIT).await {
        Some(Packet::ConnAck(a)) => (a.reason, c),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

pub async fn logged_in(
    b: &TestBroker,
    id: &str,
    version: ProtocolVersion,
    user: &str,
    pw: &str,
) -> RawClient {
    let (code, c) = connack(
        b.addr,
        login(id, version, Some(user), Some(pw), None),
        version,
    )
    .await;
    assert_eq!(code, ReasonCode::SUCCESS, "{user} logging in");
    c
}

pub async fn subscribe(c: &mut RawClient, id: u16, filters: &[&str]) -> Vec<ReasonCode> {
    c.send(Packet::Subscribe(Subscribe {
        packet_id: id,
        filters: filters
            .iter()
            .map(|f| Subscription {
                filter: (*f).into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscriptionOptions::default()
                },
            })
            .collect(),
        ..Subscribe::default()
    }))
    .await;
    loop {
        match c.recv_within(WAIT).await {
            Some(Packet::SubAck(a)) => return a.reasons,
            Some(Packet::Publish(_)) => continue,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

pub fn publish(topic: &str, qos: QoS, id: u16, retain: bool, payload: &str) -> Packet {
    Packet::Publish(Publish {
        topic: topic.into(),
        qos,
        packet_id: id,
        retain,
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        ..Publish::default()
    })
}

/// Topics of the PUBLISHes `c` receives until it has been quiet for a moment.
pub async fn received(c: &mut RawClient) -> Vec<String> {
    let mut topics = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), c.recv()).await {
        if let Packet::Publish(p) = p {
            topics.push(p.topic.into());
        }
    }
    topics
}
