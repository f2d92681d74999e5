//! MQTT over WebSocket (RFC 6455, MQTT 5.0 section 6): the server handshake
//! with the `mqtt` subprotocol (also `mqttv3.1`, which older JavaScript
//! clients send), and binary frames turned into a plain byte stream so that
//! packets may be split over frames or share one.
//!
//! WebSocket pings are answered by tungstenite and never reach the MQTT
//! connection: only MQTT bytes count as activity for keep alive.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// Subprotocols accepted, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Performs the server handshake on `stream`: the request must be an
/// upgrade to `path` offering an MQTT subprotocol. The error says why not.
pub(crate) async fn accept<S>(
    stream: S,
    path: &str,
    max_packet_size: u32,
) -> Result<WebSocketStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The callback's type is tungstenite's, large error response included.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        if request.uri().path() != path {
            return Err(refusal(
                StatusCode::NOT_FOUND,
                format!(
                    "path {} is not this listener's ({path})",
                    request.uri().path()
                ),
            ));
        }
        let offered: Vec<&str> = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                if offered.is_empty() {
                    "no WebSocket subprotocol offered; MQTT needs \"mqtt\"".to_string()
                } else {
                    format!(
                        "WebSocket subprotocol {offered:?} offered; MQTT needs \"mqtt\" (or \"mqttv3.1\")"
                    )
                },
            ));
        };
        response
            .headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(chosen));
        Ok(response)
    };
    // Frames and messages bounded by the largest packet accepted (plus room
    // for several small packets in one frame), so a peer cannot make the
    // broker buffer more than that. Small read buffer: 128 KiB per idle
    // connection by default.
    let bound = (max_packet_size as usize).saturating_add(64 * 1024);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(bound))
        .max_frame_size(Some(bound));
    tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) => match response.body() {
                Some(body) => String::from_utf8_lossy(body).into_owned(),
                None => format!("refused with HTTP {}", response.status()),
            },
            WsError::Protocol(p) => format!("not a WebSocket upgrade request: {p}"),
            other => format!("WebSocket handshake failed: {other}"),
        })
}

fn refusal(status: StatusCode, why: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why));
    *response.status_mut() = status;
    response
}

/// A WebSocket carrying MQTT, read and written as bytes.
pub(crate) struct WsBytes<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary frame.
    frame: Bytes,
}

impl<S> WsBytes<S> {
    /// Wraps a stream whose handshake is done.
    pub(crate) fn new(ws: WebSocketStream<S>) -> WsBytes<S> {
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
                        "WebSocket text frame received: MQTT over WebSocket uses binary frames",
                    )))
                }
                // Pings are answered by tungstenite; none of these is MQTT.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
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
