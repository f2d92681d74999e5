//! A minimal MQTT connection for load generation: the project codec over a
//! tokio socket, writes batched into one buffer, nothing automatic.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::Target;

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Any byte stream a WebSocket may run on (TCP or TLS).
trait WsIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + std::fmt::Debug {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + std::fmt::Debug> WsIo for T {}

type WsStream = tokio_tungstenite::WebSocketStream<Box<dyn WsIo>>;

/// The socket, the TLS session on it, or a WebSocket on either.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    Ws(Box<WsStream>),
}
use vigil_proto::{Connect, Packet, ProtocolVersion};

use crate::BenchError;

/// One client connection.
#[derive(Debug)]
pub struct BenchConn {
    stream: Stream,
    inbuf: BytesMut,
    out: BytesMut,
    /// Protocol version of this connection.
    pub version: ProtocolVersion,
    /// Reads made from the socket.
    reads: u64,
}

impl BenchConn {
    /// Opens a connection to `target` (over TLS if it says so), from its
    /// next source address, and waits for CONNACK.
    pub async fn open_target(
        target: &Target,
        connect: Connect,
    ) -> Result<(BenchConn, Duration), BenchError> {
        if target.tls.is_none() && target.ws_url.is_none() {
            return BenchConn::open(
                target.addr,
                target.next_src(),
                connect,
                target.connect_timeout,
            )
            .await;
        }
        let tls = target.tls.clone();
        let ws_url = target.ws_url.clone();
        let (addr, src) = (target.addr, target.next_src());
        let handshake = async move {
            let tcp = BenchConn::tcp(addr, src).await?;
            let stream: Box<dyn WsIo> = match tls {
                Some((config, name)) => {
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await?;
                    if ws_url.is_none() {
                        return Ok::<_, BenchError>(Stream::Tls(Box::new(tls)));
                    }
                    Box::new(tls)
                }
                None => Box::new(tcp),
            };
            let url = ws_url.unwrap_or_default();
            let mut request =
                tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                    url.as_str(),
                )
                .map_err(|e| BenchError::Args(format!("{url}: {e}")))?;
            request.headers_mut().insert(
                "sec-websocket-protocol",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"),
            );
            let (ws, _) = tokio_tungstenite::client_async(request, stream)
                .await
                .map_err(|e| BenchError::Closed(format!("WebSocket handshake: {e}")))?;
            Ok(Stream::Ws(Box::new(ws)))
        };
        let stream = match tokio::time::timeout(target.connect_timeout, handshake).await {
            Ok(s) => s?,
            Err(_) => return Err(BenchError::Timeout("TLS/WebSocket handshake".into())),
        };
        BenchConn::handshake(stream, connect, target.connect_timeout).await
    }

    async fn tcp(addr: SocketAddr, src: Option<IpAddr>) -> Result<TcpStream, BenchError> {
        let stream = match src {
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
            None => TcpStream::connect(addr).await?,
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Opens a TCP connection (from `src` if given), sends CONNECT and waits for
    /// a successful CONNACK. Returns the connection and CONNECT→CONNACK time.
    pub async fn open(
        addr: SocketAddr,
        src: Option<IpAddr>,
        connect: Connect,
        timeout: Duration,
    ) -> Result<(BenchConn, Duration), BenchError> {
        let stream = match tokio::time::timeout(timeout, BenchConn::tcp(addr, src)).await {
            Ok(s) => Stream::Tcp(s?),
            Err(_) => return Err(BenchError::Timeout("CONNACK".into())),
        };
        BenchConn::handshake(stream, connect, timeout).await
    }

    /// Sends CONNECT on `stream` and waits for a successful CONNACK.
    async fn handshake(
        stream: Stream,
        connect: Connect,
        timeout: Duration,
    ) -> Result<(BenchConn, Duration), BenchError> {
        let fut = async {
            let version = connect.protocol;
            let mut conn = BenchConn {
                stream,
                inbuf: BytesMut::new(),
                out: BytesMut::new(),
                version,
                reads: 0,
            };
            let start = Instant::now();
            conn.send(&Packet::Connect(Box::new(connect))).await?;
            match conn.recv().await? {
                Some(Packet::ConnAck(ack)) if !ack.reason.is_error() => Ok((conn, start.elapsed())),
                Some(Packet::ConnAck(ack)) => Err(BenchError::Refused(ack.reason)),
                Some(other) => Err(BenchError::Protocol(format!(
                    "expected CONNACK, got {:?}",
                    other.packet_type()
                ))),
                None => Err(BenchError::Closed(
                    "broker closed the connection before CONNACK".into(),
                )),
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(BenchError::Timeout("CONNACK".into())),
        }
    }

    /// Appends a packet to the write buffer.
    pub fn queue(&mut self, packet: &Packet) {
        // Bench packets are built here and always encodable.
        let _ = packet.encode(self.version, &mut self.out);
    }

    /// Bytes waiting in the write buffer.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Writes everything queued in one go.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        if !self.out.is_empty() {
            match &mut self.stream {
                Stream::Tcp(s) => s.write_all(&self.out).await?,
                Stream::Tls(s) => {
                    s.write_all(&self.out).await?;
                    s.flush().await?;
                }
                Stream::Ws(ws) => {
                    use futures_util::SinkExt;
                    let frame = tokio_tungstenite::tungstenite::Message::binary(self.out.to_vec());
                    ws.send(frame)
                        .await
                        .map_err(|e| BenchError::Closed(format!("WebSocket: {e}")))?;
                }
            }
            self.out.clear();
        }
        Ok(())
    }

    /// Queues and flushes one packet.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), BenchError> {
        self.queue(packet);
        self.flush().await
    }

    /// The next packet; `None` when the broker closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Packet>, BenchError> {
        loop {
            if let Some(p) = Packet::decode(&mut self.inbuf, self.version, u32::MAX)
                .map_err(|e| BenchError::Protocol(e.to_string()))?
            {
                return Ok(Some(p));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads what the socket holds (up to 64 KiB) onto `inbuf`; 0 at EOF.
    /// `read_buf` read into `inbuf`'s spare room, which it grows 64 bytes at
    /// a time: about one packet per read, and so one recv and one ack write
    /// per delivered message, which saturated the bench before the broker.
    async fn fill(&mut self) -> Result<usize, BenchError> {
        thread_local! {
            static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 64 * 1024].into_boxed_slice());
        }
        let stream = match &mut self.stream {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => {
                let mut chunk = [0u8; 16 * 1024];
                let n = s.read(&mut chunk).await?;
                self.reads += 1;
                self.inbuf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Stream::Ws(ws) => loop {
                use futures_util::StreamExt;
                use tokio_tungstenite::tungstenite::Message;
                self.reads += 1;
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        self.inbuf.extend_from_slice(&b);
                        return Ok(b.len());
                    }
                    None | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(BenchError::Closed(format!("WebSocket: {e}"))),
                }
            },
        };
        loop {
            stream.readable().await?;
            let got = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                match stream.try_read(&mut scratch[..]) {
                    Ok(n) => {
                        self.reads += 1;
                        self.inbuf.extend_from_slice(&scratch[..n]);
                        Ok(Some(n))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
            if let Some(n) = got {
                return Ok(n);
            }
        }
    }

    /// Like `recv`, but flushes queued packets (acks) before waiting for input,
    /// so acknowledgements go out in one write per read burst.
    pub async fn recv_flushing(&mut self) -> Result<Option<Packet>, BenchError> {
        loop {
            if let Some(p) = Packet::decode(&mut self.inbuf, self.version, u32::MAX)
                .map_err(|e| BenchError::Protocol(e.to_string()))?
            {
                return Ok(Some(p));
            }
            self.flush().await?;
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads made from the socket so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Reads at most `max` bytes without decoding (a deliberately slow reader).
    pub async fn read_raw(&mut self, max: usize) -> Result<usize, BenchError> {
        let mut chunk = vec![0u8; max];
        Ok(match &mut self.stream {
            Stream::Tcp(s) => s.read(&mut chunk).await?,
            Stream::Tls(s) => s.read(&mut chunk).await?,
            Stream::Ws(_) => {
                return Err(BenchError::Args(
                    "a slow WebSocket reader is not supported".into(),
                ))
            }
        })
    }
}

/// A connection taken off the runtime it was opened on, to go on in another.
#[derive(Debug)]
pub struct DetachedConn {
    stream: std::net::TcpStream,
    inbuf: BytesMut,
    out: BytesMut,
    version: ProtocolVersion,
    reads: u64,
}

impl BenchConn {
    /// Takes the connection off its runtime's reactor (buffers kept).
    pub fn detach(self) -> Result<DetachedConn, BenchError> {
        let Stream::Tcp(stream) = self.stream else {
            return Err(BenchError::Args(
                "a TLS or WebSocket connection cannot move to another runtime".into(),
            ));
        };
        Ok(DetachedConn {
            stream: stream.into_std()?,
            inbuf: self.inbuf,
            out: self.out,
            version: self.version,
            reads: self.reads,
        })
    }
}

impl DetachedConn {
    /// Puts the connection on the current runtime's reactor.
    pub fn attach(self) -> Result<BenchConn, BenchError> {
        Ok(BenchConn {
            stream: Stream::Tcp(TcpStream::from_std(self.stream)?),
            inbuf: self.inbuf,
            out: self.out,
            version: self.version,
            reads: self.reads,
        })
    }
}

/// A CONNECT for a bench client.
pub fn connect_packet(version: ProtocolVersion, client_id: String, keep_alive: u16) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive,
        client_id,
        ..Connect::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::{ConnAck, Publish, QoS};

    /// A burst the broker wrote at once is taken in a few reads, not one per
    /// packet (which made the bench, not the broker, the bottleneck).
    #[tokio::test]
    async fn a_burst_of_packets_is_read_in_a_few_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let broker = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut connect = [0u8; 256];
            let _ = s.read(&mut connect).await.unwrap();
            let mut out = BytesMut::new();
            let v = ProtocolVersion::V3_1_1;
            Packet::ConnAck(ConnAck::default())
                .encode(v, &mut out)
                .unwrap();
            for id in 1..=200u16 {
                Packet::Publish(Publish {
                    qos: QoS::AtLeastOnce,
                    packet_id: id,
                    topic: "t".into(),
                    payload: vec![7u8; 64].into(),
                    ..Publish::default()
                })
                .encode(v, &mut out)
                .unwrap();
            }
            s.write_all(&out).await.unwrap();
            s
        });
        let connect = connect_packet(ProtocolVersion::V3_1_1, "reader".into(), 0);
        let (mut conn, _) = BenchConn::open(addr, None, connect, Duration::from_secs(5))
            .await
            .unwrap();
        let _held = broker.await.unwrap();
        for _ in 0..200 {
            assert!(matches!(conn.recv().await, Ok(Some(Packet::Publish(_)))));
        }
        // ~17 KB of packets: one or two reads on loopback; never one per packet.
        assert!(conn.reads() <= 10, "{} reads for 201 packets", conn.reads());
    }
}
