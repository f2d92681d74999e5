//! Test support: a broker on 127.0.0.1:0 and a raw MQTT client on the vigil codec.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use vigil_broker::config::BrokerConfig;
use vigil_broker::Broker;
use vigil_broker::{Server, ServerOptions};
use vigil_proto::{
    Connect, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, Subscription,
    SubscriptionOptions, Will,
};

/// A running broker; dropping it stops it.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        TestBroker::with(|_| {}).await
    }

    pub async fn with(edit: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        TestBroker::with_workers(edit, 0).await
    }

    /// A broker whose connections are dealt to `workers` runtimes in turn (the
    /// test's own first), as `vigil serve` does; 0 keeps them on the test's.
    pub async fn with_workers(edit: impl FnOnce(&mut BrokerConfig), workers: usize) -> TestBroker {
        let mut config = BrokerConfig::default();
        config.listener.bind = "127.0.0.1".parse().unwrap();
        config.listener.port = 0;
        edit(&mut config);
        let mut server = Server::bind(ServerOptions::from_config(&config))
            .await
            .unwrap();
        if workers > 0 {
            let mut handles = vec![tokio::runtime::Handle::current()];
            handles.extend(vigil_broker::spawn_worker_runtimes(workers - 1).unwrap());
            server = server.with_workers(handles).unwrap();
        }
        let addr = server.local_addr().unwrap();
        let broker = server.broker();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            server
                .run_until(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestBroker {
            addr,
            broker,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the broker gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A raw client: writes and reads packets exactly, nothing automatic.
pub struct RawClient {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        RawClient {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet, or None on EOF; panics after `within`.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Packet> {
        tokio::time::timeout(within, self.recv())
            .await
            .expect("timed out waiting for a packet")
    }

    pub async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = Packet::decode(&mut self.buf, self.version, u32::MAX).unwrap() {
                return Some(p);
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }
}

/// A CONNECT with clean start.
pub fn connect(id: &str, version: ProtocolVersion, keep_alive: u16, will: Option<Will>) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive,
        client_id: id.into(),
        will,
        ..Connect::default()
    }))
}

/// A raw client connected and accepted by `b`.
pub async fn connected(
    b: &TestBroker,
    id: &str,
    version: ProtocolVersion,
    keep_alive: u16,
    will: Option<Will>,
) -> RawClient {
    let mut c = RawClient::connect(b.addr, version).await;
    c.send(connect(id, version, keep_alive, will)).await;
    match c.recv_within(Duration::from_secs(5)).await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

/// Subscribes `c` to `filter` at QoS 1 and waits for the SUBACK.
pub async fn subscribe(c: &mut RawClient, filter: &str) {
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
    assert!(matches!(
        c.recv_within(Duration::from_secs(5)).await,
        Some(Packet::SubAck(_))
    ));
}

/// A blocking raw client, for threads of their own: the broker runs on the
/// test's runtime, and a client sharing it would measure its own delays.
pub struct Blocking {
    pub stream: std::net::TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl Blocking {
    /// Connected and accepted (Session Expiry "never" for a v5 `clean` false);
    /// returns Session Present.
    pub fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        id: &str,
        clean: bool,
    ) -> (Blocking, bool) {
        let mut connect = Connect {
            protocol: version,
            clean_start: clean,
            keep_alive: 60,
            client_id: id.into(),
            ..Connect::default()
        };
        if version.is_v5() && !clean {
            connect.properties.session_expiry_interval = Some(u32::MAX);
        }
        Blocking::open(addr, connect)
    }

    /// Sends `connect` and expects a successful CONNACK; returns Session Present.
    pub fn open(addr: SocketAddr, connect: Connect) -> (Blocking, bool) {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut c = Blocking {
            stream,
            version: connect.protocol,
            buf: BytesMut::new(),
        };
        c.send(&Packet::Connect(Box::new(connect)));
        match c.recv() {
            Some(Packet::ConnAck(a)) => {
                assert_eq!(a.reason, ReasonCode::SUCCESS);
                (c, a.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn send(&mut self, p: &Packet) {
        self.try_send(p).unwrap();
    }

    /// Sends `p`; the socket's error if the broker closed it.
    pub fn try_send(&mut self, p: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out).unwrap();
        std::io::Write::write_all(&mut self.stream, &out)
    }

    /// The next packet; None on EOF, a socket error or the read timeout.
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = Packet::decode(&mut self.buf, self.version, u32::MAX).unwrap() {
                return Some(p);
            }
            let mut chunk = [0u8; 64 * 1024];
            match std::io::Read::read(&mut self.stream, &mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends SUBSCRIBE (packet id 1); the SUBACK is left to `recv`.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![Subscription {
                filter: filter.into(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            ..Subscribe::default()
        }));
    }
}
