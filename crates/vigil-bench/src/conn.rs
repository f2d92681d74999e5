//! A minimal MQTT connection for load generation: the project codec over a
//! tokio socket, writes batched into one buffer, nothing automatic.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use vigil_proto::{Connect, Packet, ProtocolVersion};

use crate::BenchError;

/// One client connection.
#[derive(Debug)]
pub struct BenchConn {
    stream: TcpStream,
    inbuf: BytesMut,
    out: BytesMut,
    /// Protocol version of this connection.
    pub version: ProtocolVersion,
}

impl BenchConn {
    /// Opens a TCP connection (from `src` if given), sends CONNECT and waits for
    /// a successful CONNACK. Returns the connection and CONNECT→CONNACK time.
    pub async fn open(
        addr: SocketAddr,
        src: Option<IpAddr>,
        connect: Connect,
        timeout: Duration,
    ) -> Result<(BenchConn, Duration), BenchError> {
        let fut = async {
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
            let version = connect.protocol;
            let mut conn = BenchConn {
                stream,
                inbuf: BytesMut::new(),
                out: BytesMut::new(),
                version,
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
            self.stream.write_all(&self.out).await?;
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
            if self.stream.read_buf(&mut self.inbuf).await? == 0 {
                return Ok(None);
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
            if self.stream.read_buf(&mut self.inbuf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads at most `max` bytes without decoding (a deliberately slow reader).
    pub async fn read_raw(&mut self, max: usize) -> Result<usize, BenchError> {
        let mut chunk = vec![0u8; max];
        Ok(self.stream.read(&mut chunk).await?)
    }
}

/// A connection taken off the runtime it was opened on, to go on in another.
#[derive(Debug)]
pub struct DetachedConn {
    stream: std::net::TcpStream,
    inbuf: BytesMut,
    out: BytesMut,
    version: ProtocolVersion,
}

impl BenchConn {
    /// Takes the connection off its runtime's reactor (buffers kept).
    pub fn detach(self) -> Result<DetachedConn, BenchError> {
        Ok(DetachedConn {
            stream: self.stream.into_std()?,
            inbuf: self.inbuf,
            out: self.out,
            version: self.version,
        })
    }
}

impl DetachedConn {
    /// Puts the connection on the current runtime's reactor.
    pub fn attach(self) -> Result<BenchConn, BenchError> {
        Ok(BenchConn {
            stream: TcpStream::from_std(self.stream)?,
            inbuf: self.inbuf,
            out: self.out,
            version: self.version,
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
