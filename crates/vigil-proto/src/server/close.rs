//! Why a connection ended: one value per cause, for logs, counters and the
//! will decision.

use std::fmt;
use std::time::Duration;

use crate::{DecodeError, ReasonCode};

/// The cause of a connection's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT with this reason code.
    ClientDisconnect(ReasonCode),
    /// No packet from the client for 1.5 × keep alive.
    KeepAliveTimeout {
        /// How long the client had been silent.
        silent_for: Duration,
        /// The effective keep alive.
        keep_alive: Duration,
    },
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// An enhanced authentication exchange did not end within the connect timeout.
    AuthTimeout,
    /// CONNECT refused with this code.
    ConnectRefused(ReasonCode),
    /// The client broke the protocol; the code was sent (MQTT 5) before closing.
    ProtocolError {
        /// Reason code sent in DISCONNECT.
        reason: ReasonCode,
        /// What was wrong.
        detail: String,
    },
    /// The same client id connected again elsewhere.
    TakenOver,
    /// The broker is shutting down.
    ServerShutdown,
    /// The client could not keep up with its deliveries.
    SlowConsumer,
    /// An operator closed it (admin API): DISCONNECT 0x98 Administrative action.
    Kicked,
    /// A reload (password file, ACL, JWT key) revoked the client's
    /// credentials: DISCONNECT 0x87 Not authorized.
    Revoked,
    /// The client's login (a JWT) expired while it was connected:
    /// DISCONNECT 0xA0 Maximum connect time.
    LoginExpired,
    /// The client closed the socket without DISCONNECT.
    PeerClosed,
    /// A socket error.
    Io(String),
    /// The broker could not make a message durable, so it could not acknowledge it.
    StoreFailed(String),
}

impl CloseReason {
    /// The close reason for a decode error.
    pub fn from_decode(err: &DecodeError) -> CloseReason {
        CloseReason::ProtocolError {
            reason: err.reason_code(),
            detail: err.to_string(),
        }
    }

    /// A short stable label for counters ("keep_alive_timeout", ...).
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::ClientDisconnect(_) => "client_disconnect",
            CloseReason::KeepAliveTimeout { .. } => "keep_alive_timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::ConnectRefused(_) => "connect_refused",
            CloseReason::ProtocolError { .. } => "protocol_error",
            CloseReason::TakenOver => "taken_over",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Kicked => "kicked",
            CloseReason::Revoked => "revoked",
            CloseReason::LoginExpired => "login_expired",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::Io(_) => "socket_error",
            CloseReason::StoreFailed(_) => "store_failed",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientDisconnect(r) => write!(f, "client sent DISCONNECT ({r})"),
            CloseReason::KeepAliveTimeout {
                silent_for,
                keep_alive,
            } => write!(
                f,
                "keep alive expired after {:.3} s of silence with K = {} s",
                silent_for.as_secs_f64(),
                keep_alive.as_secs()
            ),
            CloseReason::ConnectTimeout => write!(f, "no CONNECT within the connect timeout"),
            CloseReason::AuthTimeout => write!(
                f,
                "authentication exchange not finished within the connect timeout"
            ),
            CloseReason::ConnectRefused(r) => write!(f, "CONNECT refused: {r}"),
            CloseReason::ProtocolError { reason, detail } => {
                write!(f, "protocol error ({reason}): {detail}")
            }
            CloseReason::TakenOver => write!(f, "session taken over by a new connection"),
            CloseReason::ServerShutdown => write!(f, "server shutting down"),
            CloseReason::SlowConsumer => write!(f, "client could not keep up with its deliveries"),
            CloseReason::Kicked => write!(f, "kicked by an administrator"),
            CloseReason::Revoked => write!(f, "credentials revoked by a reload"),
            CloseReason::LoginExpired => write!(f, "the login's token expired"),
            CloseReason::PeerClosed => write!(f, "client closed the connection without DISCONNECT"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::StoreFailed(e) => write!(f, "message could not be stored: {e}"),
        }
    }
}
