//! MQTT over WebSocket (cargo feature `ws`): the `mqtt` subprotocol and
//! binary frames, read and written as the byte stream the event loop uses.
//! With the `tls` feature too, `wss://` URLs go through a `TlsConnector`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::transport::{AsyncStream, ConnectFuture, Connector};

/// Opens WebSocket connections to a `ws://host:port/path` URL (or `wss://`
/// through `tls`, with the `tls` feature).
#[derive(Debug, Clone)]
pub struct WsConnector {
    url: String,
    host: String,
    port: u16,
    #[cfg(feature = "tls")]
    tls: Option<crate::TlsConnector>,
}

impl WsConnector {
    /// A connector to `url` (`ws://host:port/mqtt`).
    pub fn new(url: &str) -> io::Result<WsConnector> {
        let request = url
            .into_client_request()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let uri = request.uri();
        let host = uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without a host"))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("wss") {
                443
            } else {
                80
            });
        Ok(WsConnector {
            url: url.to_string(),
            host,
            port,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// WebSocket over TLS (`wss://`): the TLS session `tls` opens carries
    /// it, offering ALPN `http/1.1` as browsers do (a WSS listener speaks
    /// HTTP first, and refuses `mqtt`).
    #[cfg(feature = "tls")]
    pub fn over_tls(mut self, tls: crate::TlsConnector) -> WsConnector {
        self.tls = Some(tls.with_alpn(vec![b"http/1.1".to_vec()]));
        self
    }

    async fn open(&self) -> io::Result<Box<dyn AsyncStream>> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        request
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let stream = tls.open().await?;
            let (ws, _) = tokio_tungstenite::client_async(request, stream)
                .await
                .map_err(ws_io_error)?;
            return Ok(Box::new(WsBytes::new(ws)));
        }
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(ws_io_error)?;
        Ok(Box::new(WsBytes::new(ws)))
    }
}

impl Connector for WsConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(self.open())
    }
}

/// A WebSocket read and written as bytes: each write is one binary frame,
/// and frames are read back to back, so packets may span them.
struct WsBytes<S> {
    ws: WebSocketStream<S>,
    frame: Bytes,
}

impl<S> WsBytes<S> {
    fn new(ws: WebSocketStream<S>) -> WsBytes<S> {
        WsBytes {
            ws,
            frame: Bytes::new(),
        }
    }
}

fn ws_io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {other}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.frame.is_empty() {
                let n = this.frame.len().min(buf.remaining());
                buf.put_slice(&this.frame[..n]);
                this.frame.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => this.frame = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket text frame from the broker: MQTT uses binary frames",
                    )))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(ws_io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let ws = &mut self.get_mut().ws;
        ready!(Pin::new(&mut *ws).poll_ready(cx)).map_err(ws_io_error)?;
        Pin::new(ws)
            .start_send(Message::binary(buf.to_vec()))
            .map_err(ws_io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(ws_io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(ws_io_error)
    }
}
