//! The transport seam: the event loop speaks MQTT over any byte stream a
//! `Connector` opens (TCP today; TLS and WebSocket plug in here).

use std::future::Future;
use std::io;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A bidirectional byte stream.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// Opens a new stream to the broker for each (re)connect.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Opens a connection.
    fn connect(&self) -> ConnectFuture<'_>;
}

/// The future a `Connector` returns.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = io::Result<Box<dyn AsyncStream>>> + Send + 'a>>;

/// Plain TCP.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    host: String,
    port: u16,
}

impl TcpConnector {
    /// A connector to `host:port`.
    pub fn new(host: String, port: u16) -> TcpConnector {
        TcpConnector { host, port }
    }
}

impl Connector for TcpConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn AsyncStream>)
        })
    }
}
