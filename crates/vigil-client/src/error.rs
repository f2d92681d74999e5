//! Client errors: each names its cause and carries its numbers.

use std::time::Duration;

use thiserror::Error;
use vigil_proto::client::ClientCloseReason;
use vigil_proto::ReasonCode;

/// Why a client operation or connection failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
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
    /// The broker closed the connection with DISCONNECT.
    #[error("connection closed by broker: {reason}{}", reason_string.as_deref().map(|s| format!(" ({s})")).unwrap_or_default())]
    ClosedByBroker {
        /// Its reason code.
        reason: ReasonCode,
        /// Its Reason String.
        reason_string: Option<String>,
    },
    /// The broker broke the protocol.
    #[error("protocol violation by the broker: {0}")]
    ProtocolViolation(String),
    /// No CONNACK in time.
    #[error("no CONNACK within {} s", fmt_secs(*.0))]
    ConnectTimeout(Duration),
    /// The socket failed or the broker closed it without DISCONNECT.
    #[error("I/O error: {0}")]
    Io(String),
    /// An operation needed a connection and there is none (policy: fail fast).
    #[error("not connected: {0}")]
    NotConnected(String),
    /// The broker answered a publish with a failure reason code.
    #[error("publish refused by broker: {0}")]
    PublishRefused(ReasonCode),
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

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 0.0005 {
        format!("{}", s.round() as u64)
    } else {
        format!("{s:.3}")
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
            ClientCloseReason::Transport(s) => ClientError::Io(s),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
