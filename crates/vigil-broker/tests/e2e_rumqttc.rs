//! vigil serve with rumqttc, a client we did not write: MQTT 3.1.1 and 5.

mod common;

use std::time::Duration;

use common::TestBroker;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

fn client(b: &TestBroker, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, b.addr.ip().to_string(), b.addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_clean_session(clean);
    AsyncClient::new(o, 100)
}

/// Polls until a PUBLISH arrives; returns (topic, payload, qos, retain).
async fn next_publish(ev: &mut EventLoop) -> (String, Vec<u8>, QoS, bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = ev.poll().await.expect("connection") {
                return (p.topic, p.payload.to_vec(), p.qos, p.retain);
            }
        }
    })
    .await
    .expect("timed out waiting for a PUBLISH")
}

/// Polls until the SUBACK arrives: the subscription is in place.
async fn until_suback(ev: &mut EventLoop) {
    until_incoming(ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await
}

/// Polls until the PUBACK arrives: the broker sends it only once the
/// message is routed (retained, queued for offline sessions).
async fn until_puback(ev: &mut EventLoop) {
    until_incoming(ev, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await
}

async fn until_incoming(ev: &mut EventLoop, what: &str, want: impl Fn(&Packet) -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(p) = ev.poll().await.expect("connection") {
                if want(&p) {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls until the broker closes the connection (after our DISCONNECT):
/// from then on the session is offline.
async fn until_closed(ev: &mut EventLoop) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while ev.poll().await.is_ok() {}
    })
    .await
    .expect("the broker did not close the connection after DISCONNECT")
}

/// Drives a client's event loop in the background.
fn drive(mut ev: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while ev.poll().await.is_ok() {} })
}

#[tokio::test]
async fn qos_0_1_2_round_trip_v311() {
    let b = TestBroker::start().await;
    let (sub, mut sub_ev) = client(&b, "sub", true);
    sub.subscribe("t/#", QoS::ExactlyOnce).await.unwrap();
    until_suback(&mut sub_ev).await;
    let (publisher, pub_ev) = client(&b, "pub", true);
    let _p = drive(pub_ev);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .publish(format!("t/{i}"), qos, false, vec![i as u8])
            .await
            .unwrap();
        let (topic, payload, got_qos, _) = next_publish(&mut sub_ev).await;
        assert_eq!(
            (topic, payload, got_qos),
            (format!("t/{i}"), vec![i as u8], qos)
        );
    }
}

#[tokio::test]
async fn delivered_qos_is_the_minimum_of_publish_and_subscription() {
    let b = TestBroker::start().await;
    let (sub, mut sub_ev) = client(&b, "sub", true);
    sub.subscribe("t", QoS::AtLeastOnce).await.unwrap();
    until_suback(&mut sub_ev).await;
    let (publisher, pub_ev) = client(&b, "pub", true);
    let _p = drive(pub_ev);
    publisher
        .publish("t", QoS::ExactlyOnce, false, "x")
        .await
        .unwrap();
    assert_eq!(next_publish(&mut sub_ev).await.2, QoS::AtLeastOnce);
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber_with_retain_set() {
    let b = TestBroker::start().await;
    let (publisher, mut pub_ev) = client(&b, "pub", true);
    publisher
        .publish("state/door", QoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    until_puback(&mut pub_ev).await;
    let (sub, mut sub_ev) = client(&b, "late", true);
    sub.subscribe("state/+", QoS::AtLeastOnce).await.unwrap();
    let (topic, payload, _, retain) = next_publish(&mut sub_ev).await;
    assert_eq!(
        (topic.as_str(), &payload[..], retain),
        ("state/door", &b"open"[..], true)
    );
}

#[tokio::test]
async fn persistent_session_gets_messages_queued_while_away() {
    let b = TestBroker::start().await;
    let (sub, mut sub_ev) = client(&b, "sleeper", false);
    sub.subscribe("jobs", QoS::AtLeastOnce).await.unwrap();
    until_suback(&mut sub_ev).await;
    sub.disconnect().await.unwrap();
    until_closed(&mut sub_ev).await;
    drop(sub_ev);
    let (publisher, mut pub_ev) = client(&b, "pub", true);
    publisher
        .publish("jobs", QoS::AtLeastOnce, false, "while-away")
        .await
        .unwrap();
    until_puback(&mut pub_ev).await;
    let (_sub2, mut sub2_ev) = client(&b, "sleeper", false);
    let (topic, payload, _, _) = next_publish(&mut sub2_ev).await;
    assert_eq!((topic.as_str(), &payload[..]), ("jobs", &b"while-away"[..]));
}

#[tokio::test]
async fn shared_subscription_gives_each_message_to_one_member() {
    let b = TestBroker::start().await;
    let mut members = Vec::new();
    for i in 0..2 {
        let (c, mut ev) = client(&b, &format!("worker-{i}"), true);
        c.subscribe("$share/workers/jobs", QoS::AtLeastOnce)
            .await
            .unwrap();
        until_suback(&mut ev).await;
        members.push((c, ev));
    }
    let (publisher, pub_ev) = client(&b, "pub", true);
    let _p = drive(pub_ev);
    for i in 0..10 {
        publisher
            .publish("jobs", QoS::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    // Round-robin gives each member 5; a member given fewer times out here.
    let mut seen = Vec::new();
    for (i, (_, ev)) in members.iter_mut().enumerate() {
        for _ in 0..5 {
            let (_, payload, _, _) = next_publish(ev).await;
            seen.push((i, payload[0]));
        }
    }
    // 10 distinct messages in those 10 deliveries: none went to both
    // members, so none is left over for either.
    let mut payloads: Vec<u8> = seen.iter().map(|&(_, p)| p).collect();
    payloads.sort_unstable();
    assert_eq!(payloads, (0..10).collect::<Vec<u8>>(), "{seen:?}");
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{ConnectProperties, Packet as P5};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as C5, Event as E5, EventLoop as L5, MqttOptions as O5};

    fn client5(b: &TestBroker, id: &str, clean: bool, expiry: Option<u32>) -> (C5, L5) {
        let mut o = O5::new(id, b.addr.ip().to_string(), b.addr.port());
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_start(clean);
        let mut props = ConnectProperties::new();
        props.session_expiry_interval = expiry;
        o.set_connect_properties(props);
        C5::new(o, 100)
    }

    /// Polls until the PUBACK arrives (the message is routed and queued).
    async fn puback5(ev: &mut L5) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ev.poll().await {
                    Ok(E5::Incoming(P5::PubAck(_))) => return,
                    Ok(_) => {}
                    Err(e) => panic!("connection error: {e:?}"),
                }
            }
        })
        .await
        .expect("timed out waiting for PUBACK")
    }

    async fn next5(ev: &mut L5) -> P5 {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ev.poll().await {
                    Ok(E5::Incoming(p @ (P5::Publish(_) | P5::Disconnect(_) | P5::SubAck(_)))) => {
                        return p
                    }
                    Ok(_) => {}
                    Err(e) => panic!("connection error: {e:?}"),
                }
            }
        })
        .await
        .expect("timed out")
    }

    #[tokio::test]
    async fn qos_round_trip_and_user_properties_pass_through() {
        let b = TestBroker::start().await;
        let (sub, mut sub_ev) = client5(&b, "sub5", true, None);
        sub.subscribe("v5/#", Q5::ExactlyOnce).await.unwrap();
        assert!(matches!(next5(&mut sub_ev).await, P5::SubAck(_)));
        let (publisher, mut pub_ev) = client5(&b, "pub5", true, None);
        tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
        let mut props = rumqttc::v5::mqttbytes::v5::PublishProperties::default();
        props.user_properties = vec![("k".into(), "v".into())];
        props.content_type = Some("text/plain".into());
        publisher
            .publish_with_properties("v5/a", Q5::ExactlyOnce, false, "hello", props)
            .await
            .unwrap();
        let P5::Publish(p) = next5(&mut sub_ev).await else {
            panic!("expected PUBLISH")
        };
        assert_eq!(&p.payload[..], b"hello");
        assert_eq!(p.qos, Q5::ExactlyOnce);
        let got = p.properties.expect("properties forwarded");
        assert_eq!(
            got.user_properties,
            vec![("k".to_string(), "v".to_string())]
        );
        assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    }

    #[tokio::test]
    async fn takeover_old_client_sees_session_taken_over() {
        let b = TestBroker::start().await;
        let (_a, mut a_ev) = client5(&b, "same-id", true, None);
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(E5::Incoming(P5::ConnAck(_))) = a_ev.poll().await {
                    break;
                }
            }
        })
        .await
        .unwrap();
        let (_b2, b_ev) = client5(&b, "same-id", true, None);
        let _d = tokio::spawn(async move {
            let mut ev = b_ev;
            while ev.poll().await.is_ok() {}
        });
        // rumqttc reports a server DISCONNECT as the connection's end, with its reason.
        let err = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Err(e) = a_ev.poll().await {
                    return e;
                }
            }
        })
        .await
        .expect("old client was not disconnected");
        let reason = match err {
            rumqttc::v5::ConnectionError::MqttState(
                rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
            ) => reason_code,
            other => panic!("expected a server DISCONNECT, got {other:?}"),
        };
        assert_eq!(
            reason,
            rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::SessionTakenOver
        );
    }

    #[tokio::test]
    async fn session_expiry_resume_v5() {
        let b = TestBroker::start().await;
        let (sub, mut sub_ev) = client5(&b, "resumer", false, Some(300));
        sub.subscribe("r", Q5::AtLeastOnce).await.unwrap();
        assert!(matches!(next5(&mut sub_ev).await, P5::SubAck(_)));
        sub.disconnect().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while sub_ev.poll().await.is_ok() {}
        })
        .await
        .expect("the broker did not close the connection after DISCONNECT");
        let (publisher, mut pub_ev) = client5(&b, "pub", true, None);
        publisher
            .publish("r", Q5::AtLeastOnce, false, "queued")
            .await
            .unwrap();
        puback5(&mut pub_ev).await;
        let (_again, mut again_ev) = client5(&b, "resumer", false, Some(300));
        let P5::Publish(p) = next5(&mut again_ev).await else {
            panic!("expected PUBLISH")
        };
        assert_eq!(&p.payload[..], b"queued");
    }
}
