//! Test support for TLS and WebSocket listeners: a CA made in the test, a
//! broker with `[[listeners]]`, MQTT clients over TLS and WebSocket, and
//! log capture.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use vigil_broker::config::{BrokerConfig, ListenerEntry, ListenerProtocol, TlsConfig};
use vigil_broker::Broker;
use vigil_broker::{BoundListener, CertReloader, Server, ServerOptions};
use vigil_proto::{Connect, Packet, ProtocolVersion, ReasonCode};

/// A certificate authority made for one test.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

/// A certificate with its key, signed by a `Ca`.
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: rcgen::KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for localhost / 127.0.0.1 with this serial.
    pub fn server(&self, serial: u8) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[serial]));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vigil test server");
        self.sign(params)
    }

    /// An expired server certificate.
    pub fn expired_server(&self) -> Leaf {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(params)
    }

    /// A client certificate whose subject CN is `cn`.
    pub fn client(&self, cn: &str) -> Leaf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A client certificate with subject CN `cn` and DNS alt name `san`.
    pub fn client_with_san(&self, cn: &str, san: &str) -> Leaf {
        let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: rcgen::CertificateParams) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

impl Leaf {
    /// Writes cert and key as PEM files named `name`.crt / `name`.key.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, self.cert.pem()).unwrap();
        std::fs::write(&key, self.key.serialize_pem()).unwrap();
        (cert, key)
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

/// A TLS table for a listener.
pub fn tls(cert: PathBuf, key: PathBuf) -> TlsConfig {
    TlsConfig {
        cert,
        key,
        ca: None,
        require_client_cert: false,
        min_version: Default::default(),
        identity: Default::default(),
        use_identity_as_username: false,
    }
}

/// A listener entry on 127.0.0.1, any port.
pub fn entry(protocol: ListenerProtocol, tls: Option<TlsConfig>) -> ListenerEntry {
    let mut e = ListenerEntry::mqtt("127.0.0.1".parse().unwrap(), 0);
    e.protocol = protocol;
    e.tls = tls;
    e
}

/// A running broker with several listeners; dropping it stops it.
pub struct Brokers {
    pub addrs: Vec<SocketAddr>,
    pub broker: Arc<Broker>,
    pub reloader: CertReloader,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Brokers {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn start(entries: &[ListenerEntry], edit: impl FnOnce(&mut BrokerConfig)) -> Brokers {
    let mut config = BrokerConfig::default();
    edit(&mut config);
    let options = ServerOptions::from_config(&config);
    let mut listeners = Vec::new();
    for e in entries {
        listeners.push(BoundListener::bind(e).await.unwrap());
    }
    let server = Server::with_listeners(
        listeners,
        options,
        Broker::new(options.core, std::time::Instant::now()),
    );
    let addrs = server
        .listeners()
        .iter()
        .map(|l| l.local_addr().unwrap())
        .collect();
    let broker = server.broker();
    let reloader = server.cert_reloader();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        server
            .run_until(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Brokers {
        addrs,
        broker,
        reloader,
        stop: Some(tx),
    }
}

/// A TLS client configuration trusting `ca`, limited to `version`, with an
/// optional client certificate.
pub fn client_tls(
    ca: &Ca,
    version: &'static rustls::SupportedProtocolVersion,
    client_cert: Option<&Leaf>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client_cert {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der()], leaf.key_der())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub type TlsClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` (name checked: localhost).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsClientStream> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The serial of the certificate the server presented.
pub fn server_serial(stream: &TlsClientStream) -> Vec<u8> {
    let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
    vigil_broker::transport::tls::CertInfo::parse(leaf)
        .unwrap()
        .serial
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

enum Wire {
    Bytes(Box<dyn Io>),
    Ws(Box<tokio_tungstenite::WebSocketStream<Box<dyn Io>>>),
}

/// An MQTT client over any stream, packet by packet, nothing automatic.
pub struct Client {
    wire: Wire,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

impl Client {
    pub fn over(stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static) -> Client {
        Client {
            wire: Wire::Bytes(Box::new(stream)),
            version: ProtocolVersion::V5,
            buf: BytesMut::new(),
        }
    }

    /// A WebSocket client on `stream`, offering `subprotocol`.
    pub async fn websocket(
        stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
        url: &str,
        subprotocol: Option<&str>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        if let Some(p) = subprotocol {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        let boxed: Box<dyn Io> = Box::new(stream);
        let (ws, response) = tokio_tungstenite::client_async(request, boxed).await?;
        if let Some(p) = subprotocol {
            let chosen = response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok());
            assert_eq!(
                chosen,
                p.split(',').map(str::trim).find(|p| p.starts_with("mqtt"))
            );
        }
        Ok(Client {
            wire: Wire::Ws(Box::new(ws)),
            version: ProtocolVersion::V5,
            buf: BytesMut::new(),
        })
    }

    pub fn encode(&self, packet: Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        packet.encode(self.version, &mut out).unwrap();
        out.to_vec()
    }

    /// Sends bytes: one write, or one binary WebSocket frame.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.wire {
            Wire::Bytes(s) => s.write_all(bytes).await,
            Wire::Ws(ws) => ws
                .send(Message::binary(bytes.to_vec()))
                .await
                .map_err(std::io::Error::other),
        }
    }

    /// Sends any WebSocket message (WebSocket clients only).
    pub async fn send_ws(&mut self, message: Message) -> std::io::Result<()> {
        match &mut self.wire {
            Wire::Bytes(_) => panic!("not a WebSocket client"),
            Wire::Ws(ws) => ws.send(message).await.map_err(std::io::Error::other),
        }
    }

    /// The next WebSocket message as it came (WebSocket clients only).
    pub async fn recv_ws(&mut self) -> Option<Message> {
        match &mut self.wire {
            Wire::Bytes(_) => panic!("not a WebSocket client"),
            Wire::Ws(ws) => ws.next().await.and_then(Result::ok),
        }
    }

    pub async fn send(&mut self, packet: Packet) {
        let bytes = self.encode(packet);
        self.send_bytes(&bytes).await.unwrap();
    }

    /// The next packet, or None once the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = Packet::decode(&mut self.buf, self.version, u32::MAX).unwrap() {
                return Some(p);
            }
            match &mut self.wire {
                Wire::Bytes(s) => match s.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                },
                Wire::Ws(ws) => match ws.next().await {
                    Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    _ => return None,
                },
            }
        }
    }

    pub async fn recv_within(&mut self, within: Duration) -> Option<Packet> {
        tokio::time::timeout(within, self.recv())
            .await
            .expect("timed out waiting for a packet")
    }

    /// CONNECT (MQTT 5, clean start) and the CONNACK's reason.
    pub async fn connect(&mut self, id: &str, keep_alive: u16) -> ReasonCode {
        self.send(connect_packet(id, keep_alive)).await;
        match self.recv_within(Duration::from_secs(5)).await {
            Some(Packet::ConnAck(ack)) => ack.reason,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

pub fn connect_packet(id: &str, keep_alive: u16) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive,
        client_id: id.into(),
        ..Connect::default()
    }))
}

/// Collects every log line of this thread (the tests' runtimes are
/// single-threaded, so the broker's tasks log here too).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits (a few seconds at most) for a line containing every one of `parts`.
    pub async fn wait_for(&self, parts: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self
                .text()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return line.to_string();
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no log line with {parts:?} in:\n{}", self.text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
