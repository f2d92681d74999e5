//! Per-connection figures over HTTP (bytes and packets each way, time since
//! the client's last packet, in-flight count, listener) in
//! `/api/v1/clients`, `/clients/{id}` and the disconnect records; the
//! `listener` filter; and `/api/v1/retained` a page at a time.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use serde_json::Value;
use vigil_proto::{Connect, Packet, Publish, QoS, Subscribe, Subscription, SubscriptionOptions};

/// Encoded length of `p` (what the broker reads when the client sends it).
fn len(p: &Packet) -> u64 {
    let mut out = BytesMut::new();
    p.encode(V5, &mut out).unwrap();
    out.len() as u64
}

/// Polls `/api/v1/clients/{id}` until `done` holds (5 s at most).
async fn client_until(r: &Running, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, v) = json(
            r.admin.local_addr(),
            "GET",
            &format!("/api/v1/clients/{id}"),
            None,
            b"",
        )
        .await;
        assert_eq!(status, 200, "{v}");
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_client_shows_its_own_traffic_in_flight_and_silence() {
    let r = start(None).await;
    let a = r.admin.local_addr();
    let mut sub = Mqtt::connect(r.mqtt, "fig-sub", 60).await;
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![Subscription {
            filter: "fig".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        }],
        ..Subscribe::default()
    });
    sub.send(subscribe.clone()).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(_))));
    let mut publisher = Mqtt::connect(r.mqtt, "fig-pub", 60).await;
    let publish = Packet::Publish(Publish {
        topic: "fig".into(),
        payload: bytes::Bytes::from_static(b"hello"),
        qos: QoS::AtLeastOnce,
        packet_id: 7,
        ..Publish::default()
    });
    publisher.send(publish.clone()).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    // Delivered at QoS 1 and never acknowledged: one in flight.
    assert!(matches!(sub.recv().await, Some(Packet::Publish(_))));

    let connect = |id: &str| {
        Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: true,
            keep_alive: 60,
            client_id: id.into(),
            ..Connect::default()
        }))
    };
    let v = client_until(&r, "fig-sub", |v| v["inflight"] == 1).await;
    assert_eq!(v["inflight"], 1, "{v}");
    assert_eq!(
        v["bytes_in"],
        len(&connect("fig-sub")) + len(&subscribe),
        "{v}"
    );
    assert_eq!(v["packets_in"], 2, "{v}");
    // CONNACK, SUBACK, PUBLISH.
    assert_eq!(v["packets_out"], 3, "{v}");
    // A v5 CONNACK is 5 bytes at least, a SUBACK 6, and the PUBLISH
    // carries the same topic, payload and packet id it came with.
    assert!(
        v["bytes_out"].as_u64().unwrap() >= 5 + 6 + len(&publish),
        "{v}"
    );
    assert_eq!(v["listener"], format!("mqtt {}", r.mqtt));
    let p = client_until(&r, "fig-pub", |v| v["packets_out"] == 2).await;
    assert_eq!(
        p["bytes_in"],
        len(&connect("fig-pub")) + len(&publish),
        "{p}"
    );
    assert_eq!(
        (p["packets_in"].as_u64(), p["packets_out"].as_u64()),
        (Some(2), Some(2)),
        "{p}"
    );
    assert_eq!(p["inflight"], 0);

    // Silence is measured from the last complete packet.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, v) = json(a, "GET", "/api/v1/clients/fig-sub", None, b"").await;
    let quiet = v["last_packet_secs_ago"].as_f64().unwrap();
    assert!((1.1..10.0).contains(&quiet), "{v}");
    sub.send(Packet::PingReq).await;
    assert!(matches!(sub.recv().await, Some(Packet::PingResp)));
    let v = client_until(&r, "fig-sub", |v| v["packets_in"] == 3).await;
    assert!(v["last_packet_secs_ago"].as_f64().unwrap() < 1.0, "{v}");
    assert_eq!(v["packets_out"], 4);

    // The list shows the same figures, and filters by listener.
    let (_, list) = json(
        a,
        "GET",
        "/api/v1/clients?listener=mqtt%20127.0.0.1",
        None,
        b"",
    )
    .await;
    assert_eq!(list["total"], 2, "{list}");
    assert_eq!(list["clients"][1]["client_id"], "fig-sub");
    assert_eq!(list["clients"][1]["packets_in"], 3);
    let (_, none) = json(a, "GET", "/api/v1/clients?listener=mqtt%2Btls", None, b"").await;
    assert_eq!(none["total"], 0, "{none}");

    // The disconnect record keeps the connection's last figures.
    let disconnect = Packet::Disconnect(Default::default());
    sub.send(disconnect.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let record = loop {
        let (status, v) = json(a, "GET", "/api/v1/clients/fig-sub/disconnects", None, b"").await;
        if status == 200 {
            break v["disconnects"][0].clone();
        }
        assert!(Instant::now() < deadline, "no disconnect record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["reason"], "client_disconnect", "{record}");
    assert_eq!(
        record["bytes_in"],
        len(&connect("fig-sub")) + len(&subscribe) + 2 + len(&disconnect),
        "{record}"
    );
    assert_eq!(record["packets_in"], 4, "{record}");
    assert_eq!(record["packets_out"], 4, "{record}");
    assert!(record["bytes_out"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn retained_messages_come_a_page_at_a_time() {
    let r = start(None).await;
    let a = r.admin.local_addr();
    for i in 1..=5 {
        let body = format!(r#"{{"topic":"page/{i}","payload":"v{i}","retain":true}}"#);
        assert_eq!(
            json(a, "POST", "/api/v1/publish", None, body.as_bytes())
                .await
                .0,
            200
        );
    }
    let mut after = String::new();
    let mut topics = Vec::new();
    let mut pages = 0;
    loop {
        let mut path = "/api/v1/retained?topic=page/%23&limit=2".to_owned();
        if !after.is_empty() {
            path.push_str(&format!("&after={}", vigil_admin::encode_segment(&after)));
        }
        let (status, v) = json(a, "GET", &path, None, b"").await;
        assert_eq!(status, 200, "{v}");
        pages += 1;
        for m in v["retained"].as_array().unwrap() {
            topics.push(m["topic"].as_str().unwrap().to_owned());
        }
        assert!(v["count"].as_u64().unwrap() <= 2);
        match v["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(topics, ["page/1", "page/2", "page/3", "page/4", "page/5"]);
    assert_eq!(pages, 3);
    // Bad paging: the field is named.
    let (status, v) = json(a, "GET", "/api/v1/retained?limit=0", None, b"").await;
    assert_eq!((status, v["field"].as_str()), (400, Some("limit")));
    let (status, v) = json(a, "GET", "/api/v1/retained?cursor=x", None, b"").await;
    assert_eq!((status, v["field"].as_str()), (400, Some("cursor")));
}

#[tokio::test]
async fn a_parked_connection_keeps_counting_the_pings_its_lot_answers() {
    let r = start(None).await;
    let mut idle = Mqtt::connect(r.mqtt, "fig-idle", 60).await;
    // Idle past `park_idle_after_ms` (1 s by default): parked off its task.
    let v = client_until(&r, "fig-idle", |v| v["parked"] == true).await;
    assert_eq!(v["parked"], true, "{v}");
    let (bytes_in, bytes_out) = (
        v["bytes_in"].as_u64().unwrap(),
        v["bytes_out"].as_u64().unwrap(),
    );
    assert_eq!(
        (v["packets_in"].as_u64(), v["packets_out"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert!(v["last_packet_secs_ago"].as_f64().unwrap() >= 1.0, "{v}");
    // The lot answers a PINGREQ in place; the connection's figures move.
    idle.send(Packet::PingReq).await;
    assert!(matches!(idle.recv().await, Some(Packet::PingResp)));
    let v = client_until(&r, "fig-idle", |v| v["packets_in"] == 2).await;
    assert_eq!(
        (v["packets_in"].as_u64(), v["packets_out"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(v["bytes_in"].as_u64(), Some(bytes_in + 2), "{v}");
    assert_eq!(v["bytes_out"].as_u64(), Some(bytes_out + 2), "{v}");
    assert!(v["last_packet_secs_ago"].as_f64().unwrap() < 1.0, "{v}");
    // Answered by the lot: the connection never left it.
    assert_eq!(v["parked"], true, "{v}");
}
