//! The admin listener over real sockets: every route, its auth, its errors,
//! the Prometheus text as a parser reads it, and a slow client that cannot
//! hold the listener. A raw HTTP/1.1 client on a TcpStream, no HTTP crate.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_admin::{AdminOptions, AdminServer};
use vigil_broker::config::BrokerConfig;
use vigil_broker::Broker;
use vigil_broker::{Server, ServerOptions};
use vigil_proto::{Connect, Packet, ReasonCode};

#[tokio::test]
async fn every_route_answers_over_http_and_needs_the_token() {
    let r = start(Some("t0k")).await;
    let a = r.admin.local_addr();
    let t = Some("t0k");

    // Probes answer anyone; everything else wants the token, and says nothing more.
    assert_eq!(http(a, "GET", "/healthz", None, b"").await.0, 200);
    assert_eq!(http(a, "GET", "/readyz", None, b"").await.0, 503);
    r.admin.set_ready(true);
    assert_eq!(http(a, "GET", "/readyz", None, b"").await.0, 200);
    for (path, token) in [
        ("/api/v1/stats", None),
        ("/api/v1/stats", Some("wrong")),
        ("/api/v1/clients", Some("t0k0")),
        ("/metrics", Some("t0")),
    ] {
        let (status, body) = json(a, "GET", path, token, b"").await;
        assert_eq!(status, 401, "{path} {token:?}");
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["error"]
        );
    }
    // A reload without the token reads no file.
    assert_eq!(http(a, "POST", "/api/v1/reload", None, b"").await.0, 401);
    assert_eq!(http(a, "POST", "/api/v1/reload", t, b"").await.0, 200);

    let mut dev = Mqtt::connect(r.mqtt, "dev-1", 60).await;
    dev.subscribe("a/#").await;

    let (status, list) = json(a, "GET", "/api/v1/clients", t, b"").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1);
    let c = &list["clients"][0];
    assert_eq!(c["client_id"], "dev-1");
    assert_eq!(c["connected"], true);
    assert_eq!(c["protocol"], 5);
    assert_eq!(c["keep_alive"], 60);
    assert_eq!(c["subscriptions"], 1);
    assert_eq!(c["parked"], false);
    assert!(c["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(
        json(a, "GET", "/api/v1/clients?prefix=zz", t, b"").await.1["total"],
        0
    );
    assert_eq!(
        json(
            a,
            "GET",
            "/api/v1/clients?prefix=dev&protocol=5&address=127.0.0.1",
            t,
            b""
        )
        .await
        .1["total"],
        1
    );
    let (status, err) = json(a, "GET", "/api/v1/clients?protocol=7", t, b"").await;
    assert_eq!(
        (status, &err["field"]),
        (400, &serde_json::json!("protocol"))
    );
    let (status, err) = json(a, "GET", "/api/v1/clients?bogus=1", t, b"").await;
    assert_eq!((status, &err["field"]), (400, &serde_json::json!("bogus")));
    let (status, err) = json(a, "GET", "/api/v1/clients?limit=0", t, b"").await;
    assert_eq!((status, &err["field"]), (400, &serde_json::json!("limit")));

    // Paged: a second client, one per page.
    let other = Mqtt::connect(r.mqtt, "dev-2", 30).await;
    let page = |n: u32| format!("/api/v1/clients?limit=1&page={n}");
    let (_, p2) = json(a, "GET", &page(2), t, b"").await;
    assert_eq!(
        (&p2["total"], &p2["clients"][0]["client_id"]),
        (&serde_json::json!(2), &serde_json::json!("dev-2"))
    );
    assert_eq!(
        json(a, "GET", &page(3), t, b"").await.1["clients"],
        serde_json::json!([])
    );
    drop(other);

    let (status, one) = json(a, "GET", "/api/v1/clients/dev-1", t, b"").await;
    assert_eq!(
        (status, &one["client_id"]),
        (200, &serde_json::json!("dev-1"))
    );
    assert_eq!(
        json(a, "GET", "/api/v1/clients/nobody", t, b"").await.0,
        404
    );
    assert_eq!(
        json(a, "DELETE", "/api/v1/clients/nobody", t, b"").await.0,
        404
    );
    assert_eq!(
        json(a, "GET", "/api/v1/clients/nobody/disconnects", t, b"")
            .await
            .0,
        404
    );

    let (status, subs) = json(a, "GET", "/api/v1/subscriptions", t, b"").await;
    assert_eq!(status, 200);
    assert_eq!(subs["subscriptions"][0]["filter"], "a/#");

    // Publish as the broker: the subscriber gets it, and it is retained.
    let (status, p) = json(
        a,
        "POST",
        "/api/v1/publish",
        t,
        br#"{"topic":"a/b","payload":"hi","retain":true}"#,
    )
    .await;
    assert_eq!((status, &p["matched"]), (200, &serde_json::json!(1)), "{p}");
    match dev.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!((&*p.topic, &p.payload[..]), ("a/b", &b"hi"[..]))
        }
        other => panic!("{other:?}"),
    }
    for (body, field) in [
        (&br#"{"topic":"a/b","qos":3}"#[..], "qos"),
        (br#"{"topic":"a/+"}"#, "topic"),
        (br#"{"payload":"x"}"#, "topic"),
        (br#"{"topic":"a","retain":"yes"}"#, "retain"),
        (b"not json", "body"),
    ] {
        let (status, err) = json(a, "POST", "/api/v1/publish", t, body).await;
        assert_eq!((status, err["field"].as_str()), (400, Some(field)), "{err}");
    }
    let huge = vec![b'x'; 300 * 1024];
    assert_eq!(http(a, "POST", "/api/v1/publish", t, &huge).await.0, 413);

    let (status, ret) = json(a, "GET", "/api/v1/retained?topic=a/%23", t, b"").await;
    assert_eq!(
        (status, &ret["count"]),
        (200, &serde_json::json!(1)),
        "{ret}"
    );
    assert_eq!(ret["retained"][0]["payload"], "hi");
    assert_eq!(
        json(a, "GET", "/api/v1/retained?topic=a/%23/b", t, b"")
            .await
            .0,
        400
    );
    assert_eq!(
        json(a, "DELETE", "/api/v1/retained/a%2Fb", t, b"").await.0,
        200
    );
    assert_eq!(
        json(a, "GET", "/api/v1/retained", t, b"").await.1["count"],
        0
    );
    assert_eq!(
        json(a, "DELETE", "/api/v1/retained/a%2Fb", t, b"").await.0,
        404
    );

    // dev-2 is gone by now or very soon.
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let (status, stats) = json(a, "GET", "/api/v1/stats", t, b"").await;
        assert_eq!(status, 200);
        if stats["connections"] == 1 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stats["connections"], 1, "{stats}");
    assert_eq!(stats["subscriptions"], 1);
    // Process-wide: at least dev-1's CONNECT and SUBSCRIBE, CONNACK and SUBACK.
    assert!(stats["packets_received"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["packets_sent"].as_u64().unwrap() >= 2, "{stats}");

    // The dashboard page itself holds no data and needs no token.
    let (status, page) = http(a, "GET", "/", None, b"").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>vigil</title>") && page.contains("/api/v1/stats"));
    assert_eq!(json(a, "GET", "/api/v1/nothing", t, b"").await.0, 404);
    assert_eq!(json(a, "PUT", "/api/v1/stats", t, b"").await.0, 405);

    // Kick: the client reads DISCONNECT 0x98, and its history says so.
    let (status, k) = json(a, "DELETE", "/api/v1/clients/dev-1?session=true", t, b"").await;
    assert_eq!(
        (status, &k["result"]),
        (200, &serde_json::json!("disconnected")),
        "{k}"
    );
    // The empty retained publish of the DELETE above came first.
    loop {
        match dev.recv().await {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, ReasonCode::ADMINISTRATIVE_ACTION);
                break;
            }
            Some(Packet::Publish(_)) => {}
            other => panic!("expected DISCONNECT 0x98, got {other:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let why = loop {
        let (status, why) = json(a, "GET", "/api/v1/clients/dev-1/disconnects", t, b"").await;
        if status == 200 {
            break why;
        }
        assert!(Instant::now() < deadline, "no history");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(why["disconnects"][0]["reason"], "kicked");
    assert_eq!(why["disconnects"][0]["reason_code"], 0x98);
    // ?session=true discarded the session too.
    assert_eq!(json(a, "GET", "/api/v1/clients/dev-1", t, b"").await.0, 404);
    assert_eq!(r.broker.session_count(), 0);
}

/// A strict reader of the Prometheus text format: every sample belongs to a
/// family declared by HELP and TYPE before it, names and labels are well
/// formed, values parse. Returns `name{labels}` -> value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut out = HashMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name_ok(name), "bad HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE: {line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line: {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "bad name: {line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .expect("braces");
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(name_ok(k), "bad label: {line}");
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "bad label value: {line}"
                    );
                }
            }
        }
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "series twice: {line}"
        );
    }
    out
}

#[tokio::test]
async fn metrics_move_as_clients_connect_publish_and_time_out() {
    let r = start(None).await;
    let a = r.admin.local_addr();
    let scrape = || async {
        let (status, text) = http(a, "GET", "/metrics", None, b"").await;
        assert_eq!(status, 200);
        parse_prometheus(&text)
    };
    let m0 = scrape().await;
    assert_eq!(m0["vigil_connects_total"], 0.0);
    // Labelled by the listener the connections came through.
    let v5_here = format!(
        "vigil_connections{{listener=\"mqtt {}\",protocol=\"5\"}}",
        r.mqtt
    );
    assert_eq!(m0.get(&v5_here).copied().unwrap_or(0.0), 0.0);

    let mut sub = Mqtt::connect(r.mqtt, "sub", 60).await;
    sub.subscribe("t").await;
    let mut publisher = Mqtt::connect(r.mqtt, "pub", 60).await;
    let _silent = Mqtt::connect(r.mqtt, "silent", 1).await;
    publisher
        .send(Packet::Publish(vigil_proto::Publish {
            topic: "t".into(),
            payload: bytes::Bytes::from_static(b"x"),
            ..vigil_proto::Publish::default()
        }))
        .await;
    assert!(matches!(sub.recv().await, Some(Packet::Publish(_))));
    let m = scrape().await;
    assert_eq!(m["vigil_connects_total"], 3.0);
    // Per-thread counts, process-wide: this test's QoS 0 publish and
    // delivery at least (the other tests here publish too).
    let grew = |name: &str| m[name] - m0[name];
    assert_eq!(grew("vigil_messages_received_total{qos=\"0\"}"), 1.0);
    assert!(grew("vigil_messages_sent_total{qos=\"0\"}") >= 1.0);
    assert_eq!(m["vigil_messages_routed_total"], 1.0);
    assert_eq!(m["vigil_subscriptions"], 1.0);
    assert_eq!(m["vigil_sessions{state=\"online\"}"], 3.0);
    // Process-wide: at least three CONNECTs and a PUBLISH in, CONNACKs and a PUBLISH out.
    assert!(m["vigil_bytes_received_total"] >= 3.0 * 14.0 + 4.0, "{m:?}");
    assert!(m["vigil_bytes_sent_total"] >= 3.0 * 4.0 + 4.0, "{m:?}");

    // The silent client (K = 1) is closed after 1.5 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape().await;
        if m["vigil_disconnects_total{reason=\"keep_alive_timeout\"}"] == 1.0 {
            assert_eq!(m[&v5_here], 2.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no keep-alive close in the metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The histograms are process-wide: other tests here add to them too.
    let m = scrape().await;
    let closes = m["vigil_keepalive_close_lateness_seconds_count"];
    assert!(closes >= 1.0, "{closes}");
    assert_eq!(
        m["vigil_keepalive_close_lateness_seconds_bucket{le=\"+Inf\"}"],
        closes
    );
    // Closed within a second of its deadline on any sane machine.
    assert!(m["vigil_keepalive_close_lateness_seconds_bucket{le=\"1\"}"] >= 1.0);
    // A PINGREQ answered by a running connection, and one by a parked one.
    let pings_before = m["vigil_pingresp_service_seconds_count"];
    sub.send(Packet::PingReq).await;
    assert!(matches!(sub.recv().await, Some(Packet::PingResp)));
    let m = scrape().await;
    assert!(m["vigil_pingresp_service_seconds_count"] >= pings_before + 1.0);
    // Idle for a second: parked, and the API says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, c) = json(a, "GET", "/api/v1/clients/sub", None, b"").await;
        if c["parked"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "never parked: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sub.send(Packet::PingReq).await;
    assert!(matches!(sub.recv().await, Some(Packet::PingResp)));
    let m = scrape().await;
    assert!(m["vigil_pingresp_service_seconds_count"] >= pings_before + 2.0);
    assert!(m["vigil_pingresp_service_seconds_bucket{le=\"1\"}"] >= 2.0);
}

#[tokio::test]
async fn store_commits_are_measured_when_there_is_a_store() {
    let (store, contents) = vigil_store::Store::open(
        Box::new(vigil_store::MemoryBackend::default()),
        vigil_store::Durability::Always,
        false,
    )
    .unwrap();
    let mut config = BrokerConfig::default();
    config.listener.bind = "127.0.0.1".parse().unwrap();
    config.listener.port = 0;
    let options = ServerOptions::from_config(&config);
    let broker = Broker::with_store(
        options.core,
        store,
        contents,
        vigil_proto::time::Clock::now(),
    );
    let server = Server::bind_broker(options, broker.clone()).await.unwrap();
    let mqtt = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let admin = AdminServer::start(
        AdminOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: None,
            reloader: None,
        },
        broker,
    )
    .unwrap();
    // A persistent session is written through to the store.
    let mut s = TcpStream::connect(mqtt).await.unwrap();
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: "durable".into(),
        properties: vigil_proto::Properties {
            session_expiry_interval: Some(3600),
            ..vigil_proto::Properties::default()
        },
        ..Connect::default()
    }))
    .encode(V5, &mut out)
    .unwrap();
    s.write_all(&out).await.unwrap();
    let mut ack = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut ack)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, text) = http(admin.local_addr(), "GET", "/metrics", None, b"").await;
        assert_eq!(status, 200);
        let m = parse_prometheus(&text);
        if m.get("vigil_store_commit_seconds_count")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
        {
            assert!(m["vigil_store_commit_batch_ops_count"] >= 1.0);
            assert!(m["vigil_store_commit_batch_ops_sum"] >= 1.0);
            assert!(m["vigil_store_commit_seconds_bucket{le=\"1\"}"] >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "no commit measured: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
}

#[tokio::test]
async fn a_slow_request_does_not_hold_the_listener() {
    let r = start(None).await;
    let a = r.admin.local_addr();
    // Half a request line, then nothing.
    let mut slow = TcpStream::connect(a).await.unwrap();
    slow.write_all(b"GET /api/v1/st").await.unwrap();
    let started = Instant::now();
    assert_eq!(http(a, "GET", "/healthz", None, b"").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    // The slow one is closed once its headers are late (5 s), not kept for ever.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a request that never finishes keeps its connection"
    );
    // And MQTT is served meanwhile and after.
    let _c = Mqtt::connect(r.mqtt, "still-served", 60).await;
}

/// Lets in only the password "ok".
#[derive(Debug)]
struct OnlyOk;

impl vigil_broker::auth::Authenticator for OnlyOk {
    fn authenticate(
        &self,
        c: &vigil_broker::auth::Credentials<'_>,
    ) -> Result<vigil_broker::auth::Login, ReasonCode> {
        match c.password {
            Some(b"ok") => Ok(vigil_broker::auth::Login::named(
                c.username.map(str::to_owned),
            )),
            _ => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }
}

#[tokio::test]
async fn auth_failures_are_counted_by_reason_and_revocations_have_their_own_disconnect_label() {
    let r = start(None).await;
    let auth = std::sync::Arc::new(vigil_broker::auth::Auth::new(
        Some(std::sync::Arc::new(OnlyOk)),
        None,
        false,
    ));
    assert!(r.broker.set_auth(auth));
    let connack = |user: Option<&'static str>, password: Option<&'static [u8]>| {
        let addr = r.mqtt;
        async move {
            let mut m = Mqtt {
                s: TcpStream::connect(addr).await.unwrap(),
                buf: BytesMut::new(),
            };
            m.send(Packet::Connect(Box::new(Connect {
                protocol: V5,
                clean_start: true,
                client_id: "c".into(),
                username: user.map(Into::into),
                password: password.map(bytes::Bytes::from_static),
                ..Connect::default()
            })))
            .await;
            match m.recv().await {
                Some(Packet::ConnAck(a)) => a.reason,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(
        connack(Some("u"), Some(b"wrong")).await,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(
        connack(Some("u"), Some(b"bad")).await,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    assert_eq!(connack(None, None).await, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(connack(Some("u"), Some(b"ok")).await, ReasonCode::SUCCESS);
    let (status, text) = http(r.admin.local_addr(), "GET", "/metrics", None, b"").await;
    assert_eq!(status, 200);
    let m = parse_prometheus(&text);
    let get = |k: &str| m.get(k).copied().unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(
        get("vigil_auth_failures_total{reason=\"bad_credentials\"}"),
        2.0
    );
    assert_eq!(
        get("vigil_auth_failures_total{reason=\"not_authorized\"}"),
        1.0
    );
    assert_eq!(get("vigil_auth_failures_total{reason=\"banned\"}"), 0.0);
    assert_eq!(
        get("vigil_auth_failures_total{reason=\"no_cert_identity\"}"),
        0.0
    );
    assert_eq!(get("vigil_auth_denied_total{what=\"subscribe\"}"), 0.0);
    // Revocation and token expiry are disconnect reasons of their own.
    assert_eq!(get("vigil_disconnects_total{reason=\"revoked\"}"), 0.0);
    assert_eq!(
        get("vigil_disconnects_total{reason=\"login_expired\"}"),
        0.0
    );
    assert_eq!(get("vigil_accepts_delayed_total"), 0.0);
    assert_eq!(get("vigil_publish_throttled_total"), 0.0);
}
