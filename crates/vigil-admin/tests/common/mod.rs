//! What the admin API's tests share: a broker with its admin listener, a
//! raw HTTP/1.1 client on a TcpStream, and a raw MQTT 5 client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_admin::{AdminOptions, AdminServer};
use vigil_broker::config::BrokerConfig;
use vigil_broker::Broker;
use vigil_broker::{Server, ServerOptions};
use vigil_proto::{
    Connect, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, Subscription, SubscriptionOptions,
};

pub const V5: ProtocolVersion = ProtocolVersion::V5;

pub struct Running {
    pub mqtt: SocketAddr,
    pub admin: AdminServer,
    pub broker: Arc<Broker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn start(token: Option<&str>) -> Running {
    let mut config = BrokerConfig::default();
    config.listener.bind = "127.0.0.1".parse().unwrap();
    config.listener.port = 0;
    config.sys.interval = 0;
    let server = Server::bind(ServerOptions::from_config(&config))
        .await
        .unwrap();
    let mqtt = server.local_addr().unwrap();
    let broker = server.broker();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    let admin = AdminServer::start(
        AdminOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: token.map(str::to_owned),
            reloader: None,
        },
        broker.clone(),
    )
    .unwrap();
    Running {
        mqtt,
        admin,
        broker,
        stop: Some(stop),
    }
}

/// One HTTP/1.1 request; (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413) before it read the whole body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .ok();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

pub async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let (status, body) = http(addr, method, path, token, body).await;
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, v)
}

pub struct Mqtt {
    pub s: TcpStream,
    pub buf: BytesMut,
}

impl Mqtt {
    pub async fn connect(addr: SocketAddr, id: &str, keep_alive: u16) -> Mqtt {
        let mut m = Mqtt {
            s: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        };
        m.send(Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: true,
            keep_alive,
            client_id: id.into(),
            ..Connect::default()
        })))
        .await;
        match m.recv().await {
            Some(Packet::ConnAck(a)) => assert_eq!(a.reason, ReasonCode::SUCCESS),
            other => panic!("{other:?}"),
        }
        m
    }

    pub async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        p.encode(V5, &mut out).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(p) = Packet::decode(&mut self.buf, V5, u32::MAX).unwrap() {
                    return Some(p);
                }
                if self.s.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("a packet in time")
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription {
                filter: filter.into(),
                options: SubscriptionOptions {
                    qos: QoS::AtMostOnce,
                    ..SubscriptionOptions::default()
                },
            }],
            ..Subscribe::default()
        }))
        .await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }
}
