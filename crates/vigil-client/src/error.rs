//! Client errors: each names its cause, carries its numbers and keeps its
//! source (`std::error::Error::source`), so an `io::ErrorKind` stays reachable.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use vigil_proto::client::ClientCloseReason;
use vigil_proto::ReasonCode;

/// Why a client operation or connection failed. Non-exhaustive: match with a
/// `_` arm, new causes will be added.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No packet arrived within the ping timeout after a PINGREQ.
    #[error("keep alive timeout: no PINGRESP within {} s (keep alive {} s)", fmt_secs(*waited), keep_alive.as_secs())]
    KeepAliveTimeout {
        /// How long the client waited after its PINGREQ.
        waited: Duration,
        /// The keep alive in force.
        keep_alive: Duration,
    },
    /// The broker refused the CONNECT.
    #[error("CONNACK refused: {0}")]
    ConnackRefused(ReasonCode),
    /// The SCRAM exchange failed on the client's side: the broker could not
    /// prove it holds the credential, or sent a malformed message.
    #[error("SCRAM authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The broker closed the connection with DISCONNECT.
    #[error("connection closed by broker: {reason}{}", reason_string.as_deref().map(|s| format!(" ({s})")).unwrap_or_default())]
    ClosedByBroker {
        /// Its reason code.
        reason: ReasonCode,
        /// Its Reason String.
        reason_string: Option<String>,
    },
    /// The broker closed the socket without DISCONNECT (end of stream or
    /// reset); the message says whether it probably expired the keep alive.
    #[error("{}", closed_without_disconnect(*since_last_sent, *keep_alive, *ping_outstanding))]
    ClosedWithoutDisconnect {
        /// Time between this client's last packet written and the close.
        since_last_sent: Option<Duration>,
        /// The keep alive in force (zero: off).
        keep_alive: Duration,
        /// Whether a PINGREQ was waiting for its answer.
        ping_outstanding: bool,
    },
    /// The broker broke the protocol.
    #[error("protocol violation by the broker: {0}")]
    ProtocolViolation(String),
    /// No CONNACK in time.
    #[error("no CONNACK within {} s", fmt_secs(*.0))]
    ConnectTimeout(Duration),
    /// The socket failed; `source` is the `io::Error` (see `io_kind`).
    #[error("I/O error: {context}")]
    Io {
        /// What the client was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },
    /// An operation needed a connection and there is none; `cause` is why the
    /// connection went down, when it is known.
    #[error("not connected: {context}")]
    NotConnected {
        /// What could not be done.
        context: String,
        /// Why the connection was lost.
        #[source]
        cause: Option<Arc<ClientError>>,
    },
    /// The broker answered a publish with a failure reason code.
    #[error("publish refused by broker: {0}")]
    PublishRefused(ReasonCode),
    /// The message is larger than the broker accepts (its Maximum Packet
    /// Size from CONNACK): refused here rather than sent to be disconnected for.
    #[error("message not sent: the PUBLISH would be {size} bytes, above the broker's Maximum Packet Size of {max} bytes")]
    PacketTooLarge {
        /// The PUBLISH packet's encoded size.
        size: usize,
        /// The broker's limit.
        max: u32,
    },
    /// The offline queue is full.
    #[error("offline queue full ({0} messages)")]
    QueueFull(usize),
    /// The message could not be sent (too large for the broker, or invalid).
    #[error("message not sent: {0}")]
    Invalid(String),
    /// The client was closed by the application.
    #[error("client closed")]
    Closed,
}

impl ClientError {
    /// An I/O error with what the client was doing.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> ClientError {
        ClientError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// The `io::ErrorKind` at the root of this error, if an I/O error is.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            ClientError::Io { source, .. } => Some(source.kind()),
            ClientError::NotConnected {
                cause: Some(cause), ..
            } => cause.io_kind(),
            _ => None,
        }
    }

    /// True for a refusal that retrying cannot fix (bad credentials, not
    /// authorized, banned, an identifier or protocol the broker rejects):
    /// the client stops reconnecting after one.
    pub fn is_permanent_refusal(&self) -> bool {
        matches!(self, ClientError::AuthenticationFailed(_))
            || matches!(
                self,
                ClientError::ConnackRefused(
                    ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
                        | ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
                        | ReasonCode::BAD_USER_NAME_OR_PASSWORD
                        | ReasonCode::NOT_AUTHORIZED
                        | ReasonCode::BANNED
                        | ReasonCode::BAD_AUTHENTICATION_METHOD
                )
            )
    }

    /// True if the error says the connection is gone (as opposed to a refusal
    /// of one request, or a bad argument).
    pub fn is_connection_loss(&self) -> bool {
        matches!(
            self,
            ClientError::KeepAliveTimeout { .. }
                | ClientError::ClosedByBroker { .. }
                | ClientError::ClosedWithoutDisconnect { .. }
                | ClientError::ProtocolViolation(_)
                | ClientError::Io { .. }
                | ClientError::NotConnected { .. }
                | ClientError::Closed
        )
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 0.0005 {
        format!("{}", s.round() as u64)
    } else {
        format!("{s:.3}")
    }
}

fn fmt_keep_alive(k: Duration) -> String {
    if k.is_zero() {
        "keep alive off".into()
    } else {
        format!("keep alive {} s", fmt_secs(k))
    }
}

/// MQTT 3.1.1 brokers (and some 5.0 ones) close without saying why; the
/// numbers this client has are enough to say what probably happened.
fn closed_without_disconnect(
    since_last_sent: Option<Duration>,
    keep_alive: Duration,
    ping_outstanding: bool,
) -> String {
    let Some(since) = since_last_sent else {
        return format!(
            "the broker closed the connection without DISCONNECT before this client sent anything ({})",
            fmt_keep_alive(keep_alive)
        );
    };
    let head = format!(
        "the broker closed the connection without DISCONNECT {:.1} s after this client's last packet ({})",
        since.as_secs_f64(),
        fmt_keep_alive(keep_alive)
    );
    // The client pings every K whatever else it sends, so a gap of K or more
    // means its own sending stalled; a broker expires a keep alive at 1.5 × K.
    if !keep_alive.is_zero() && since >= keep_alive {
        format!("{head}: it probably expired the keep alive; was this process stalled?")
    } else if ping_outstanding {
        format!("{head}, while a PINGREQ was unanswered")
    } else if since < Duration::from_millis(100) {
        // A broker that cannot say why (3.1.1) closes right after the packet
        // it refuses.
        format!(
            "{head}: it probably refused that packet (too large for it, not allowed, or \
             malformed); the broker's log says which"
        )
    } else {
        head
    }
}

impl From<ClientCloseReason> for ClientError {
    fn from(reason: ClientCloseReason) -> ClientError {
        match reason {
            ClientCloseReason::KeepAliveTimeout { waited, keep_alive } => {
                ClientError::KeepAliveTimeout { waited, keep_alive }
            }
            ClientCloseReason::ConnectTimeout(d) => ClientError::ConnectTimeout(d),
            ClientCloseReason::Refused(code) => ClientError::ConnackRefused(code),
            ClientCloseReason::ClosedByBroker {
                reason,
                reason_string,
            } => ClientError::ClosedByBroker {
                reason,
                reason_string,
            },
            ClientCloseReason::ProtocolViolation(s) => ClientError::ProtocolViolation(s),
            ClientCloseReason::Requested => ClientError::Closed,
            ClientCloseReason::Transport(s) => {
                ClientError::io("transport failed", io::Error::other(s))
            }
            ClientCloseReason::AuthenticationFailed(s) => ClientError::AuthenticationFailed(s),
            ClientCloseReason::ClosedWithoutDisconnect {
                since_last_sent,
                keep_alive,
                ping_outstanding,
            } => ClientError::ClosedWithoutDisconnect {
                since_last_sent,
                keep_alive,
                ping_outstanding,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn messages_name_the_cause() {
        let e = ClientError::KeepAliveTimeout {
            waited: Duration::from_secs(10),
            keep_alive: Duration::from_secs(10),
        };
        assert_eq!(
            e.to_string(),
            "keep alive timeout: no PINGRESP within 10 s (keep alive 10 s)"
        );
        let e = ClientError::ClosedByBroker {
            reason: ReasonCode::SESSION_TAKEN_OVER,
            reason_string: None,
        };
        assert_eq!(
            e.to_string(),
            "connection closed by broker: session taken over (0x8E)"
        );
        let e = ClientError::ConnackRefused(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        assert_eq!(
            e.to_string(),
            "CONNACK refused: bad user name or password (0x86)"
        );
    }

    #[test]
    fn a_silent_close_after_a_stall_is_explained() {
        let e = ClientError::ClosedWithoutDisconnect {
            since_last_sent: Some(Duration::from_millis(3_000)),
            keep_alive: Duration::from_secs(2),
            ping_outstanding: false,
        };
        assert_eq!(
            e.to_string(),
            "the broker closed the connection without DISCONNECT 3.0 s after this client's last \
             packet (keep alive 2 s): it probably expired the keep alive; was this process stalled?"
        );
        let e = ClientError::ClosedWithoutDisconnect {
            since_last_sent: Some(Duration::from_millis(400)),
            keep_alive: Duration::from_secs(2),
            ping_outstanding: true,
        };
        assert_eq!(
            e.to_string(),
            "the broker closed the connection without DISCONNECT 0.4 s after this client's last \
             packet (keep alive 2 s), while a PINGREQ was unanswered"
        );
    }

    #[test]
    fn a_close_right_after_a_packet_points_at_that_packet() {
        let e = ClientError::ClosedWithoutDisconnect {
            since_last_sent: Some(Duration::from_millis(3)),
            keep_alive: Duration::from_secs(60),
            ping_outstanding: false,
        };
        assert_eq!(
            e.to_string(),
            "the broker closed the connection without DISCONNECT 0.0 s after this client's last \
             packet (keep alive 60 s): it probably refused that packet (too large for it, not \
             allowed, or malformed); the broker's log says which"
        );
    }

    #[test]
    fn io_errors_keep_their_kind_through_not_connected() {
        let io = ClientError::io(
            "cannot connect",
            io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(io.io_kind(), Some(io::ErrorKind::ConnectionRefused));
        let e = ClientError::NotConnected {
            context: "publish".into(),
            cause: Some(Arc::new(io)),
        };
        assert_eq!(e.io_kind(), Some(io::ErrorKind::ConnectionRefused));
        let src = e.source().expect("cause is the source");
        assert!(src.source().is_some(), "the io::Error is reachable");
    }
}
