//! vigil-client over TLS, WebSocket and WSS (features `tls` and `ws`:
//! `cargo test -p vigil-client --features tls,ws`), against vigil's listeners.
#![cfg(all(feature = "tls", feature = "ws"))]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use vigil_broker::config::{BrokerConfig, ListenerEntry, ListenerProtocol, TlsConfig};
use vigil_broker::Broker;
use vigil_broker::{BoundListener, Server, ServerOptions};
use vigil_client::{
    Client, ConnectOptions, Connector, Event, Message, QoS, TlsConnector, WsConnector,
};

fn write_ca_and_server(dir: &Path) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[tokio::test]
async fn publish_and_subscribe_over_tls_websocket_and_wss() {
    let dir = tempfile::tempdir().unwrap();
    write_ca_and_server(dir.path());
    let tls = TlsConfig {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        ca: None,
        require_client_cert: false,
        min_version: Default::default(),
        identity: Default::default(),
        use_identity_as_username: false,
    };
    let entry = |protocol, tls: Option<TlsConfig>| {
        let mut e = ListenerEntry::mqtt("127.0.0.1".parse().unwrap(), 0);
        e.protocol = protocol;
        e.tls = tls;
        e
    };
    let mut listeners = Vec::new();
    for e in [
        entry(ListenerProtocol::Mqtt, Some(tls.clone())),
        entry(ListenerProtocol::Ws, None),
        entry(ListenerProtocol::Ws, Some(tls)),
    ] {
        listeners.push(BoundListener::bind(&e).await.unwrap());
    }
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let options = ServerOptions::from_config(&BrokerConfig::default());
    let server = Server::with_listeners(
        listeners,
        options,
        Broker::new(options.core, std::time::Instant::now()),
    );
    let (_stop, rx) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = rx.await;
    }));

    let cafile = dir.path().join("ca.pem");
    let tls = TlsConnector::with_ca_file("localhost".into(), ports[0], &cafile).unwrap();
    let ws = WsConnector::new(&format!("ws://localhost:{}/mqtt", ports[1])).unwrap();
    let wss_tls = TlsConnector::with_ca_file("localhost".into(), ports[2], &cafile).unwrap();
    let wss = WsConnector::new(&format!("wss://localhost:{}/mqtt", ports[2]))
        .unwrap()
        .over_tls(wss_tls);
    let connectors: [(&str, Arc<dyn Connector>); 3] = [
        ("tls", Arc::new(tls)),
        ("ws", Arc::new(ws)),
        ("wss", Arc::new(wss)),
    ];
    for ((name, connector), port) in connectors.into_iter().zip(ports) {
        let mut options = ConnectOptions::new("localhost", port);
        options.session.client_id = format!("client-{name}");
        let (client, mut events) = Client::connect_with(options, connector).await.unwrap();
        let topic = format!("over/{name}");
        client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
        let token = client
            .publish(Message::new(&topic, name.to_string()).qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        token.await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(Event::Message(m)) = events.recv().await {
                    return m;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            (topic.as_str(), name.as_bytes())
        );
    }
}
