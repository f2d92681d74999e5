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

async fn until_suback(ev: &mut EventLoop) -> Option<bool> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ev.poll().await.expect("connection") {
                Event::Incoming(Packet::ConnAck(a)) => {
                    let _ = a;
                }
                Event::Incoming(Packet::SubAck(_)) => return Some(true),
                _ => {}
            }
        }
    })
    .await
    .expect("timed out waiting for SUBACK")
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
    let (publisher, pub_ev) = client(&b, "pub", true);
    let _p = drive(pub_ev);
    publisher
        .publish("state/door", QoS::AtLeastOnce, true, "open")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while sub_ev.poll().await.is_ok() {}
    })
    .await;
    drop(sub_ev);
    let (publisher, pub_ev) = client(&b, "pub", true);
    let _p = drive(pub_ev);
    publisher
        .publish("jobs", QoS::AtLeastOnce, false, "while-away")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let mut total = 0;
    for (_, ev) in members.iter_mut() {
        let mut n = 0;
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(700), ev.poll()).await {
            if let Event::Incoming(Packet::Publish(_)) = e {
                n += 1;
            }
        }
        assert_eq!(n, 5, "round-robin splits 10 messages 5/5");
        total += n;
    }
    assert_eq!(total, 10);
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
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while sub_ev.poll().await.is_ok() {}
        })
        .await;
        let (publisher, mut pub_ev) = client5(&b, "pub", true, None);
        tokio::spawn(async move { while pub_ev.poll().await.is_ok() {} });
        publisher
            .publish("r", Q5::AtLeastOnce, false, "queued")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_again, mut again_ev) = client5(&b, "resumer", false, Some(300));
        let P5::Publish(p) = next5(&mut again_ev).await else {
            panic!("expected PUBLISH")
        };
        assert_eq!(&p.payload[..], b"queued");
    }
}
