//! MQTT 5 enhanced authentication on a connection: the SCRAM exchange that
//! comes between CONNECT and CONNACK, and re-authentication (AUTH 0x19)
//! while connected. The state machine keeps the AUTH packets in order; the
//! gate (`auth::scram`) checks the messages they carry.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};
use vigil_proto::scram::Mechanism;
use vigil_proto::{Connect, ReasonCode};

use super::events::Wait;
use super::Driver;
use crate::auth::ScramExchange;

/// An exchange between the server's AUTH 0x18 and the client's answer
/// (kept in the state machine: `ServerConnection::set_auth_state`).
struct PendingAuth {
    /// The CONNECT the exchange began with (None: a re-authentication).
    connect: Option<Box<Connect>>,
    exchange: ScramExchange,
}

impl Driver {
    /// A CONNECT that names an Authentication Method: begins the exchange
    /// (server-first in AUTH 0x18), or refuses an unknown method with 0x8C.
    pub(super) fn start_enhanced_auth(&mut self, c: Box<Connect>) {
        let method = c.properties.authentication_method.as_deref().unwrap_or("");
        let (Some(auth), Some(mechanism)) =
            (self.broker.auth().cloned(), Mechanism::from_name(method))
        else {
            info!(client = %c.client_id, peer = %self.peer, %method, "connection refused: authentication method not supported");
            return self.conn.refuse(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let data = c.properties.authentication_data.clone().unwrap_or_default();
        match auth.scram_start(mechanism, &data, &c.client_id, self.peer) {
            Ok((exchange, server_first)) => {
                self.conn.auth_continue(Bytes::from(server_first));
                self.conn.set_auth_state(Box::new(PendingAuth {
                    connect: Some(c),
                    exchange,
                }));
            }
            Err(code) => self.conn.refuse(code),
        }
    }

    /// The client's AUTH: a re-authentication begins (0x19), or an
    /// exchange ends (0x18). A first login that succeeded comes back as the
    /// CONNECT to finish.
    pub(super) fn on_auth(&mut self, a: vigil_proto::Auth) -> Option<Wait> {
        let data = a
            .properties
            .into_inner()
            .authentication_data
            .unwrap_or_default();
        let Some(auth) = self.broker.auth().cloned() else {
            self.conn.reauth_failed(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without an authentication gate".into(),
            );
            return None;
        };
        let client_id = self.client_id().to_string();
        if a.reason == ReasonCode::RE_AUTHENTICATE {
            let mechanism = self.conn.auth_method().and_then(Mechanism::from_name)?;
            match auth.scram_start(mechanism, &data, &client_id, self.peer) {
                Ok((exchange, server_first)) => {
                    let current = self
                        .attached
                        .as_ref()
                        .and_then(|a| a.session.inner.lock().username.clone());
                    if current.as_deref().map(String::as_str) != Some(exchange.username()) {
                        warn!(client = %client_id, peer = %self.peer, username = exchange.username(), "re-authentication as another user refused");
                        self.conn.reauth_failed(
                            ReasonCode::NOT_AUTHORIZED,
                            "re-authentication as another user".into(),
                        );
                        return None;
                    }
                    self.conn.auth_continue(Bytes::from(server_first));
                    self.conn.set_auth_state(Box::new(PendingAuth {
                        connect: None,
                        exchange,
                    }));
                }
                Err(code) => self
                    .conn
                    .reauth_failed(code, "re-authentication refused".into()),
            }
            return None;
        }
        let pending = self
            .conn
            .take_auth_state()
            .and_then(|s| s.downcast::<PendingAuth>().ok());
        let Some(pending) = pending else {
            // The state machine lets 0x18 through only after our AUTH.
            self.conn.reauth_failed(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH with no exchange in progress".into(),
            );
            return None;
        };
        let PendingAuth { connect, exchange } = *pending;
        let outcome = auth.scram_finish(
            &exchange,
            &data,
            connect.as_deref(),
            connect.as_ref().map_or(&client_id, |c| &c.client_id),
            self.peer,
        );
        match (outcome, connect) {
            (Ok((login, server_final)), Some(c)) => {
                return Some(Wait::Connect(
                    c,
                    Some(Box::new((login, Bytes::from(server_final)))),
                ));
            }
            (Ok((login, server_final)), None) => {
                info!(client = %client_id, peer = %self.peer, "client re-authenticated");
                self.conn.reauth_succeeded(Bytes::from(server_final));
                if let Some(a) = &self.attached {
                    auth.track(a.conn_id, &a.session, Arc::clone(&login));
                }
            }
            (Err(code), Some(_)) => self.conn.refuse(code),
            (Err(code), None) => self
                .conn
                .reauth_failed(code, "re-authentication failed".into()),
        }
        None
    }
}
