//! Authentication and authorization over real sockets: password file
//! (Mosquitto's hashes), ACL decisions at CONNECT (will), SUBSCRIBE, PUBLISH
//! and delivery (retained included), reload with revocation, back-off, and
//! hashing off the connection workers. JWT is in e2e_auth_jwt.rs.

mod auth_common;
mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use auth_common::*;
use bytes::Bytes;
use common::RawClient;
use vigil_broker::auth::AuthConfig;
use vigil_proto::{Packet, QoS, ReasonCode, Subscribe, Subscription, SubscriptionOptions, Will};

#[tokio::test]
async fn good_and_bad_passwords_get_their_connack_codes_v5_and_v311() {
    let files = Files::new(
        &format!("{}\n{}\n", fixture_line("alice"), fixture_line("erin")),
        None,
    );
    let (b, auth) = broker_with(&files.config(false, None)).await;
    for version in [V5, V311] {
        logged_in(&b, "a", version, "alice", "correct horse").await;
        logged_in(&b, "e", version, "erin", "erin pw").await;
        // Wrong password and unknown user: the same answer, 0x86 / 4.
        for (user, pw) in [
            ("alice", "Correct horse"),
            ("mallory", "correct horse"),
            ("erin", ""),
        ] {
            let (code, _) = connack(
                b.addr,
                login("x", version, Some(user), Some(pw), None),
                version,
            )
            .await;
            assert_eq!(
                code,
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                "{user}/{pw} {version:?}"
            );
        }
        // No credentials with a password file and no allow_anonymous: 0x87 / 5.
        let (code, _) = connack(b.addr, login("x", version, None, None, None), version).await;
        assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{version:?}");
    }
    let c = auth.counters();
    assert_eq!(c.connect_bad_credentials.load(Relaxed), 6);
    assert_eq!(c.connect_not_authorized.load(Relaxed), 2);
    assert_eq!(c.connect_allowed.load(Relaxed), 4);
    // The second login of each user came from the cache, not from hashing.
    assert_eq!(c.cache_hits.load(Relaxed), 2);
}

#[tokio::test]
async fn the_wire_bytes_of_a_v311_refusal_are_return_code_4() {
    let files = Files::new(&fixture_line("alice"), None);
    let (b, _auth) = broker_with(&files.config(false, None)).await;
    let mut c = RawClient::connect(b.addr, V311).await;
    c.send(login("x", V311, Some("alice"), Some("wrong"), None))
        .await;
    let mut bytes = [0u8; 4];
    tokio::io::AsyncReadExt::read_exact(&mut c.stream, &mut bytes)
        .await
        .unwrap();
    assert_eq!(bytes, [0x20, 0x02, 0x00, 0x04]);
}

#[tokio::test]
async fn allow_anonymous_lets_clients_without_credentials_in_but_not_wrong_ones() {
    let files = Files::new(&fixture_line("alice"), None);
    let (b, _auth) = broker_with(&files.config(false, Some(true))).await;
    let (code, _) = connack(b.addr, login("anon", V5, None, None, None), V5).await;
    assert_eq!(code, ReasonCode::SUCCESS);
    let (code, _) = connack(
        b.addr,
        login("x", V5, Some("alice"), Some("nope"), None),
        V5,
    )
    .await;
    assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
}

#[tokio::test]
async fn rumqttc_logs_in_with_a_good_password_and_is_refused_with_a_bad_one() {
    use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet as RPacket};
    let files = Files::new(&fixture_line("alice"), None);
    let (b, _auth) = broker_with(&files.config(false, None)).await;
    for (pw, want) in [
        ("correct horse", ConnectReturnCode::Success),
        ("wrong", ConnectReturnCode::BadUserNamePassword),
    ] {
        let mut o = MqttOptions::new("r", b.addr.ip().to_string(), b.addr.port());
        o.set_credentials("alice", pw);
        let (_client, mut ev) = AsyncClient::new(o, 10);
        let got = tokio::time::timeout(WAIT, async {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(RPacket::ConnAck(a))) => return a.code,
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, want, "password {pw:?}");
    }
}

#[tokio::test]
async fn subscribe_to_nothing_readable_is_refused_0x87_v5_and_0x80_v311() {
    let files = Files::new(&fixture_line("alice"), Some(ACL));
    let (b, auth) = broker_with(&files.config(true, None)).await;
    let mut v5 = logged_in(&b, "a5", V5, "alice", "correct horse").await;
    let codes = subscribe(
        &mut v5,
        1,
        &[
            "sensors/#",
            "sensors/private/#",
            "other/#",
            "$share/g/sensors/+",
        ],
    )
    .await;
    assert_eq!(
        codes,
        [
            ReasonCode(1),
            ReasonCode::NOT_AUTHORIZED,
            ReasonCode::NOT_AUTHORIZED,
            ReasonCode(1)
        ]
    );
    let mut v3 = logged_in(&b, "a3", V311, "alice", "correct horse").await;
    let mut raw = [0u8; 6];
    v3.send(Packet::Subscribe(Subscribe {
        packet_id: 2,
        filters: ["other/#", "sensors/a"]
            .iter()
            .map(|f| Subscription {
                filter: (*f).into(),
                options: SubscriptionOptions::default(),
            })
            .collect(),
        ..Subscribe::default()
    }))
    .await;
    tokio::io::AsyncReadExt::read_exact(&mut v3.stream, &mut raw)
        .await
        .unwrap();
    // SUBACK, id 2, 0x80 for the refused filter, QoS 0 granted for the other.
    assert_eq!(raw, [0x90, 0x04, 0x00, 0x02, 0x80, 0x00]);
    assert_eq!(auth.counters().subscribe_denied.load(Relaxed), 3);
}

#[tokio::test]
async fn denied_publish_gets_puback_0x87_v5_and_is_dropped_for_v311() {
    let files = Files::new(
        &format!("{}\n{}\n", fixture_line("alice"), fixture_line("erin")),
        Some(ACL),
    );
    let (b, auth) = broker_with(&files.config(true, None)).await;
    let mut watcher = logged_in(&b, "w", V5, "alice", "correct horse").await;
    assert_eq!(
        subscribe(&mut watcher, 1, &["sensors/#"]).await,
        [ReasonCode(1)]
    );
    // erin may write sensors/#, not public/x.
    let mut e5 = logged_in(&b, "e5", V5, "erin", "erin pw").await;
    e5.send(publish("public/x", QoS::AtLeastOnce, 1, false, "no"))
        .await;
    match e5.recv_within(WAIT).await {
        Some(Packet::PubAck(a)) => {
            assert_eq!((a.packet_id, a.reason), (1, ReasonCode::NOT_AUTHORIZED))
        }
        other => panic!("{other:?}"),
    }
    e5.send(publish("public/x", QoS::ExactlyOnce, 2, false, "no"))
        .await;
    match e5.recv_within(WAIT).await {
        Some(Packet::PubRec(a)) => {
            assert_eq!((a.packet_id, a.reason), (2, ReasonCode::NOT_AUTHORIZED))
        }
        other => panic!("{other:?}"),
    }
    e5.send(publish("sensors/t", QoS::AtLeastOnce, 3, false, "yes"))
        .await;
    match e5.recv_within(WAIT).await {
        Some(Packet::PubAck(a)) => assert_eq!((a.packet_id, a.reason), (3, ReasonCode::SUCCESS)),
        other => panic!("{other:?}"),
    }
    // 3.1.1: acknowledged as if routed, and dropped.
    let mut e3 = logged_in(&b, "e3", V311, "erin", "erin pw").await;
    e3.send(publish(
        "sensors/private/x",
        QoS::AtLeastOnce,
        4,
        false,
        "write-only? no: deny",
    ))
    .await;
    match e3.recv_within(WAIT).await {
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, 4),
        other => panic!("{other:?}"),
    }
    e3.send(publish("public/y", QoS::AtMostOnce, 0, false, "no"))
        .await;
    e3.send(publish("sensors/u", QoS::AtMostOnce, 0, false, "yes"))
        .await;
    // alice's subscription saw only what the ACL let through.
    assert_eq!(received(&mut watcher).await, ["sensors/t", "sensors/u"]);
    assert_eq!(auth.counters().publish_denied.load(Relaxed), 3);
}

#[tokio::test]
async fn delivery_and_retained_messages_are_filtered_by_read_access() {
    let files = Files::new(
        &format!("{}\n{}\n", fixture_line("alice"), fixture_line("erin")),
        Some(ACL),
    );
    let (b, auth) = broker_with(&files.config(true, None)).await;
    let mut erin = logged_in(&b, "e", V5, "erin", "erin pw").await;
    // Retained before anyone subscribes: one readable by alice, one denied to her.
    for (i, topic) in ["sensors/a", "sensors/private/b"].iter().enumerate() {
        erin.send(publish(topic, QoS::AtLeastOnce, i as u16 + 1, true, "r"))
            .await;
        assert!(matches!(
            erin.recv_within(WAIT).await,
            Some(Packet::PubAck(_))
        ));
    }
    let mut alice = logged_in(&b, "a", V5, "alice", "correct horse").await;
    // A `#` subscription: granted (it can match readable topics), but the
    // denied subtree is withheld per message.
    assert_eq!(subscribe(&mut alice, 1, &["#"]).await, [ReasonCode(1)]);
    for (i, topic) in ["sensors/c", "sensors/private/d", "erin/e"]
        .iter()
        .enumerate()
    {
        erin.send(publish(topic, QoS::AtLeastOnce, i as u16 + 10, false, "m"))
            .await;
        assert!(matches!(
            erin.recv_within(WAIT).await,
            Some(Packet::PubAck(_))
        ));
    }
    assert_eq!(received(&mut alice).await, ["sensors/a", "sensors/c"]);
    // The retained sensors/private/b and the live sensors/private/d were
    // withheld (erin/e was never routed: erin may not write it).
    assert_eq!(auth.counters().delivery_denied.load(Relaxed), 2);
    assert_eq!(auth.counters().publish_denied.load(Relaxed), 1);
}

#[tokio::test]
async fn a_will_the_acl_does_not_allow_refuses_the_connect() {
    let files = Files::new(&fixture_line("alice"), Some(ACL));
    let (b, auth) = broker_with(&files.config(true, None)).await;
    let will = |topic: &str| Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        ..Will::default()
    };
    for version in [V5, V311] {
        let (code, _) = connack(
            b.addr,
            login(
                "a",
                version,
                Some("alice"),
                Some("correct horse"),
                Some(will("wills/bob")),
            ),
            version,
        )
        .await;
        assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{version:?}");
        let (code, _) = connack(
            b.addr,
            login(
                "a",
                version,
                Some("alice"),
                Some("correct horse"),
                Some(will("wills/alice")),
            ),
            version,
        )
        .await;
        assert_eq!(code, ReasonCode::SUCCESS, "{version:?}");
    }
    assert_eq!(auth.counters().connect_will_denied.load(Relaxed), 2);
}

#[tokio::test]
async fn reload_revokes_removed_users_and_keeps_the_old_files_when_a_new_one_is_broken() {
    let files = Files::new(
        &format!("{}\n{}\n", fixture_line("alice"), fixture_line("erin")),
        Some(ACL),
    );
    let (b, auth) = broker_with(&files.config(true, None)).await;
    let mut alice = logged_in(&b, "a", V5, "alice", "correct horse").await;
    let mut erin = logged_in(&b, "e", V311, "erin", "erin pw").await;
    let mut anon_ok = logged_in(&b, "a2", V5, "alice", "correct horse").await;

    // A broken password file: the reload fails naming file and line, the old
    // file stays in force, nobody is disconnected.
    std::fs::write(
        files.path("passwd"),
        format!("{}\nerin:$7$oops\n", fixture_line("alice")),
    )
    .unwrap();
    let err = auth.reload().unwrap_err().to_string();
    let want = format!("{}:2: ", files.path("passwd").display());
    assert!(err.starts_with(&want), "{err}");
    logged_in(&b, "e2", V5, "erin", "erin pw").await;

    // erin removed: her connections are closed (3.1.1 without a word), alice stays.
    std::fs::write(files.path("passwd"), format!("{}\n", fixture_line("alice"))).unwrap();
    assert!(auth.reload().unwrap() >= 1);
    assert_eq!(
        erin.recv_within(WAIT).await,
        None,
        "erin's connection is closed"
    );
    let (code, _) = connack(
        b.addr,
        login("e3", V5, Some("erin"), Some("erin pw"), None),
        V5,
    )
    .await;
    assert_eq!(
        code,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        "the cache was dropped"
    );

    // alice's password changed: MQTT 5 gets DISCONNECT 0x87 first.
    let line = vigil_broker::auth::PasswordHash::generate(
        vigil_broker::auth::HashKind::Sha512Pbkdf2,
        b"new pw",
        None,
    )
    .unwrap()
    .encode();
    std::fs::write(files.path("passwd"), format!("alice:{line}\n")).unwrap();
    assert_eq!(auth.reload().unwrap(), 2);
    for c in [&mut alice, &mut anon_ok] {
        match c.recv_within(WAIT).await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::NOT_AUTHORIZED),
            other => panic!("expected DISCONNECT 0x87, got {other:?}"),
        }
        assert_eq!(c.recv_within(WAIT).await, None);
    }
    logged_in(&b, "a3", V5, "alice", "new pw").await;
    assert!(auth.counters().revoked.load(Relaxed) >= 3);
    assert_eq!(auth.counters().reload_failures.load(Relaxed), 1);
    // The disconnects are counted and recorded as revocations, with 0x87,
    // for /metrics and `vigil ctl why`.
    let deadline = std::time::Instant::now() + WAIT;
    while b.broker.disconnects("a").is_none() {
        assert!(std::time::Instant::now() < deadline, "not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in ["a", "e"] {
        let r = &b.broker.disconnects(id).unwrap()[0];
        assert_eq!(r.reason, "revoked", "{id}");
        assert_eq!(r.reason_code, 0x87, "{id}");
        assert_eq!(r.detail, "credentials revoked by a reload", "{id}");
    }
    assert!(vigil_broker::Counters::get(&b.broker.counters().disconnect_revoked) >= 3);
    assert_eq!(
        vigil_broker::Counters::get(&b.broker.counters().disconnect_protocol_error),
        0
    );
}

#[tokio::test]
async fn a_reloaded_acl_stops_deliveries_it_no_longer_allows() {
    let files = Files::new(
        &format!("{}\n{}\n", fixture_line("alice"), fixture_line("erin")),
        Some(ACL),
    );
    let (b, auth) = broker_with(&files.config(true, None)).await;
    let mut alice = logged_in(&b, "a", V5, "alice", "correct horse").await;
    assert_eq!(
        subscribe(&mut alice, 1, &["sensors/#"]).await,
        [ReasonCode(1)]
    );
    let mut erin = logged_in(&b, "e", V5, "erin", "erin pw").await;
    erin.send(publish("sensors/1", QoS::AtMostOnce, 0, false, "m"))
        .await;
    assert_eq!(received(&mut alice).await, ["sensors/1"]);
    std::fs::write(
        files.path("acl"),
        ACL.replace("topic readwrite sensors/#", "topic write sensors/#"),
    )
    .unwrap();
    assert_eq!(
        auth.reload().unwrap(),
        0,
        "the password file did not change"
    );
    erin.send(publish("sensors/2", QoS::AtMostOnce, 0, false, "m"))
        .await;
    assert!(received(&mut alice).await.is_empty());
}

#[tokio::test]
async fn an_address_that_keeps_failing_is_refused_for_a_while() {
    let files = Files::new(&fixture_line("alice"), None);
    let config = AuthConfig {
        max_failures_per_address: 3,
        ..files.config(false, None)
    };
    let (b, auth) = broker_with(&config).await;
    for _ in 0..3 {
        let (code, _) = connack(
            b.addr,
            login("x", V5, Some("alice"), Some("guess"), None),
            V5,
        )
        .await;
        assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    }
    // Banned now: even the right password is refused, 0x8A (3.1.1: 5).
    let (code, _) = connack(
        b.addr,
        login("x", V5, Some("alice"), Some("correct horse"), None),
        V5,
    )
    .await;
    assert_eq!(code, ReasonCode::BANNED);
    let (code, _) = connack(
        b.addr,
        login("x", V311, Some("alice"), Some("correct horse"), None),
        V311,
    )
    .await;
    assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "3.1.1 return code 5");
    assert_eq!(auth.counters().addresses_banned.load(Relaxed), 1);
    assert_eq!(auth.counters().connect_banned.load(Relaxed), 2);
}

/// Hashing runs on the blocking pool, never on a connection worker: while a
/// storm of logins hashes a slow `$7$` line, a connected client's PINGREQ
/// is answered well within the time of one hash. (The test's runtime has a
/// single thread, so a hash on it would hold every PINGRESP back.)
#[tokio::test]
async fn a_login_storm_does_not_hold_back_pingresp() {
    use vigil_broker::auth::{HashKind, PasswordHash};
    let slow = PasswordHash::generate(HashKind::Sha512Pbkdf2, b"pw", Some(100_000)).unwrap();
    let started = std::time::Instant::now();
    assert!(slow.verify(b"pw"));
    let one_hash = started.elapsed();
    let files = Files::new(&format!("slow:{}\n", slow.encode()), None);
    let config = AuthConfig {
        allow_anonymous: Some(true),
        max_failures_per_address: 0,
        ..files.config(false, None)
    };
    let (b, auth) = broker_with(&config).await;
    let mut pinger = common::connected(&b, "pinger", V5, 60, None).await;
    // Wrong passwords: never cached, each one hashes.
    let storm: Vec<_> = (0..8)
        .map(|i| {
            let addr = b.addr;
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr, V5).await;
                c.send(login(
                    &format!("s{i}"),
                    V5,
                    Some("slow"),
                    Some("wrong"),
                    None,
                ))
                .await;
                // The hashes queue for the pool (one per core): be patient.
                match c.recv_within(Duration::from_secs(120)).await {
                    Some(Packet::ConnAck(a)) => a.reason,
                    other => panic!("expected CONNACK, got {other:?}"),
                }
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    while auth.counters().connect_bad_credentials.load(Relaxed) < 8 {
        let sent = std::time::Instant::now();
        pinger.send(Packet::PingReq).await;
        assert_eq!(
            pinger.recv_within(Duration::from_secs(30)).await,
            Some(Packet::PingResp)
        );
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in storm {
        assert_eq!(s.await.unwrap(), ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    }
    eprintln!("one hash {one_hash:?}, worst PINGRESP during the storm {worst:?}");
    assert!(
        worst < one_hash / 2,
        "PINGRESP took {worst:?} during the storm; one hash takes {one_hash:?}"
    );
}

#[tokio::test]
async fn without_the_login_cache_every_login_hashes() {
    let files = Files::new(&fixture_line("alice"), None);
    let config = AuthConfig {
        login_cache: false,
        ..files.config(false, None)
    };
    let (b, auth) = broker_with(&config).await;
    for i in 0..3 {
        logged_in(&b, &format!("a{i}"), V5, "alice", "correct horse").await;
    }
    assert_eq!(auth.counters().cache_hits.load(Relaxed), 0);
    assert_eq!(auth.counters().verifications.load(Relaxed), 3);
}
