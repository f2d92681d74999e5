//! JWT login over real sockets: valid, expired and forged tokens, a token
//! expiring while connected (DISCONNECT 0xA0), and the ACL claim.

mod auth_common;
mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use auth_common::*;
use common::TestBroker;
use vigil_broker::auth::{Auth, AuthConfig};
use vigil_proto::{Packet, QoS, ReasonCode};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::time::{SystemTime, UNIX_EPOCH};
use vigil_broker::auth::JwtConfig;

const SECRET: &str = "sixteen bytes or more of secret";

fn token(exp_in: i64, acl: Option<serde_json::Value>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = serde_json::json!({"sub": "dev-7", "exp": now + exp_in});
    if let Some(acl) = acl {
        claims["acl"] = acl;
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn jwt_broker() -> (TestBroker, Arc<Auth>) {
    let config = AuthConfig {
        jwt: Some(JwtConfig {
            secret: Some(SECRET.into()),
            acl_claim: Some("acl".into()),
            ..JwtConfig::default()
        }),
        ..AuthConfig::default()
    };
    let (b, auth) = broker_with(&config).await;
    tokio::spawn(auth.clone().run_expiry());
    (b, auth)
}

#[tokio::test]
async fn valid_tokens_log_in_expired_and_forged_ones_do_not() {
    let (b, _auth) = jwt_broker().await;
    for version in [V5, V311] {
        let t = token(60, None);
        let (code, _) = connack(
            b.addr,
            login("d", version, Some("dev-7"), Some(&t), None),
            version,
        )
        .await;
        assert_eq!(code, ReasonCode::SUCCESS, "{version:?}");
        let t = token(-5, None);
        let (code, _) = connack(
            b.addr,
            login("d", version, Some("dev-7"), Some(&t), None),
            version,
        )
        .await;
        assert_eq!(
            code,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "expired, {version:?}"
        );
        let forged = format!("{}x", token(60, None));
        let (code, _) = connack(
            b.addr,
            login("d", version, Some("dev-7"), Some(&forged), None),
            version,
        )
        .await;
        assert_eq!(
            code,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "forged, {version:?}"
        );
    }
}

#[tokio::test]
async fn a_token_that_expires_while_connected_ends_the_connection_with_0xa0() {
    let (b, auth) = jwt_broker().await;
    let t = token(2, None);
    let (code, mut c5) = connack(b.addr, login("d5", V5, Some("dev-7"), Some(&t), None), V5).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    let (code, mut c3) = connack(
        b.addr,
        login("d3", V311, Some("dev-7"), Some(&t), None),
        V311,
    )
    .await;
    assert_eq!(code, ReasonCode::SUCCESS);
    let long = token(3600, None);
    let (_, mut stays) =
        connack(b.addr, login("s", V5, Some("dev-7"), Some(&long), None), V5).await;
    let started = std::time::Instant::now();
    match c5.recv_within(Duration::from_secs(10)).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::MAXIMUM_CONNECT_TIME),
        other => panic!("expected DISCONNECT 0xA0, got {other:?}"),
    }
    assert!(
        started.elapsed() <= Duration::from_secs(5),
        "closed late: {:?}",
        started.elapsed()
    );
    assert_eq!(
        c3.recv_within(Duration::from_secs(10)).await,
        None,
        "3.1.1: closed without a word"
    );
    assert_eq!(auth.counters().expired.load(Relaxed), 2);
    // Counted and recorded as expired logins, with 0xA0.
    let deadline = std::time::Instant::now() + WAIT;
    while b.broker.disconnects("d3").is_none() || b.broker.disconnects("d5").is_none() {
        assert!(std::time::Instant::now() < deadline, "not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in ["d5", "d3"] {
        let r = &b.broker.disconnects(id).unwrap()[0];
        assert_eq!((r.reason, r.reason_code), ("login_expired", 0xA0), "{id}");
    }
    assert_eq!(
        vigil_broker::Counters::get(&b.broker.counters().disconnect_login_expired),
        2
    );
    // The long-lived token's connection is untouched.
    stays.send(Packet::PingReq).await;
    assert_eq!(stays.recv_within(WAIT).await, Some(Packet::PingResp));
}

#[tokio::test]
async fn the_tokens_acl_claim_decides_for_its_client() {
    let (b, _auth) = jwt_broker().await;
    let acl = serde_json::json!({"pub": ["up/dev-7"], "sub": ["down/#"]});
    let t = token(60, Some(acl));
    let (code, mut c) = connack(b.addr, login("d", V5, None, Some(&t), None), V5).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    assert_eq!(
        subscribe(&mut c, 1, &["down/#", "up/#"]).await,
        [ReasonCode(1), ReasonCode::NOT_AUTHORIZED]
    );
    c.send(publish("up/dev-7", QoS::AtLeastOnce, 2, false, "ok"))
        .await;
    match c.recv_within(WAIT).await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS),
        other => panic!("{other:?}"),
    }
    c.send(publish("up/other", QoS::AtLeastOnce, 3, false, "no"))
        .await;
    match c.recv_within(WAIT).await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("{other:?}"),
    }
    // Another client without a token ACL (no ACL file): unrestricted.
    let t = token(60, None);
    let (_, mut other) = connack(b.addr, login("o", V5, None, Some(&t), None), V5).await;
    assert_eq!(subscribe(&mut other, 1, &["up/#"]).await, [ReasonCode(1)]);
    other
        .send(publish("down/x", QoS::AtMostOnce, 0, false, "m"))
        .await;
    assert_eq!(received(&mut c).await, ["down/x"]);
}
