//! MQTT 5 enhanced authentication (section 4.12) on the server side: the
//! AUTH packets of the exchange that precedes CONNACK, and of a
//! re-authentication while connected. Which methods exist and what their
//! data means is the broker's business; this only keeps the packets in
//! their order and the connect timeout running until CONNACK.

use std::time::Instant;

use bytes::Bytes;

use super::{CloseReason, Phase, ServerConnection, ServerEvent};
use crate::{Auth, Packet, Properties, ReasonCode};

/// What the broker keeps with an exchange between two AUTH packets (its
/// method's state). Kept here rather than in the broker's connection task,
/// where it would cost every idle connection another pointer.
pub type AuthState = Box<dyn std::any::Any + Send>;

/// A connection's enhanced authentication, from a CONNECT that named a method.
pub(super) struct EnhancedAuth {
    /// The Authentication Method of CONNECT; every AUTH must repeat it.
    pub(super) method: String,
    /// The server sent AUTH 0x18 and waits for the client's.
    pub(super) awaiting_client: bool,
    /// A re-authentication (AUTH 0x19) is under way.
    pub(super) reauthenticating: bool,
    /// The connect timeout, which runs on until CONNACK: a client that
    /// stops mid-exchange is closed by it.
    pub(super) connect_deadline: Instant,
    /// The broker's state for the exchange in progress.
    pub(super) state: Option<AuthState>,
}

impl std::fmt::Debug for EnhancedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnhancedAuth")
            .field("method", &self.method)
            .field("awaiting_client", &self.awaiting_client)
            .field("reauthenticating", &self.reauthenticating)
            .finish_non_exhaustive()
    }
}

impl EnhancedAuth {
    /// True while an exchange is open (before CONNACK, or a re-authentication).
    pub(super) fn in_progress(&self, phase: Phase) -> bool {
        self.reauthenticating || phase != Phase::Connected
    }
}

impl ServerConnection {
    /// The Authentication Method this connection authenticated with, if any.
    pub fn auth_method(&self) -> Option<&str> {
        self.rare.auth().map(|a| a.method.as_str())
    }

    /// Keeps the broker's state for the exchange until the client's next
    /// AUTH (ignored on a connection without enhanced authentication).
    pub fn set_auth_state(&mut self, state: AuthState) {
        if let Some(auth) = self.rare.auth_mut() {
            auth.state = Some(state);
        }
    }

    /// Takes what `set_auth_state` kept.
    pub fn take_auth_state(&mut self) -> Option<AuthState> {
        self.rare.auth_mut()?.state.take()
    }

    /// True while a re-authentication is under way.
    pub fn is_reauthenticating(&self) -> bool {
        self.rare.auth().is_some_and(|a| a.reauthenticating)
    }

    /// The broker needs more from the client: sends AUTH 0x18 "Continue
    /// authentication" with `data` and waits for the client's AUTH.
    pub fn auth_continue(&mut self, data: Bytes) {
        let phase = self.phase;
        let Some(auth) = self.rare.auth_mut() else {
            return;
        };
        if !auth.in_progress(phase) || matches!(phase, Phase::Closed { .. }) {
            return;
        }
        auth.awaiting_client = true;
        let packet = auth_packet(ReasonCode::CONTINUE_AUTHENTICATION, &auth.method, data);
        self.urgent.push_back(packet);
    }

    /// A re-authentication succeeded: sends AUTH 0x00 with `data` (the
    /// method's last word, such as SCRAM's server-final).
    pub fn reauth_succeeded(&mut self, data: Bytes) {
        if self.phase != Phase::Connected {
            return;
        }
        let Some(auth) = self.rare.auth_mut().filter(|a| a.reauthenticating) else {
            return;
        };
        auth.reauthenticating = false;
        auth.awaiting_client = false;
        let packet = auth_packet(ReasonCode::SUCCESS, &auth.method, data);
        self.urgent.push_back(packet);
    }

    /// A re-authentication failed: DISCONNECT with `reason` and close. A
    /// code DISCONNECT may not carry (0x86 Bad User Name or Password, 0x8A
    /// Banned: CONNACK only) goes out as 0x87 Not authorized, which every
    /// client's decoder accepts.
    pub fn reauth_failed(&mut self, reason: ReasonCode, detail: String) {
        let reason = if reason.is_valid_in_disconnect() {
            reason
        } else {
            ReasonCode::NOT_AUTHORIZED
        };
        self.close_with(reason, CloseReason::ProtocolError { reason, detail });
    }

    /// A packet during the exchange before CONNACK: only the client's AUTH
    /// 0x18, when asked for, or DISCONNECT (MQTT-3.1.2-30).
    pub(super) fn handle_auth_before_connack(&mut self, packet: Packet) {
        match packet {
            Packet::Auth(a) => {
                let Some(auth) = self.rare.auth_mut() else {
                    return;
                };
                match check_auth(auth, &a, false) {
                    Ok(()) => {
                        auth.awaiting_client = false;
                        self.events.push_back(ServerEvent::Auth(Box::new(a)));
                    }
                    Err(detail) => self.protocol_error(ReasonCode::PROTOCOL_ERROR, detail),
                }
            }
            Packet::Disconnect(d) => self.handle_disconnect(d),
            other => self.protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                format!(
                    "{:?} before the authentication exchange ended",
                    other.packet_type()
                ),
            ),
        }
    }

    /// AUTH while connected: a re-authentication starts (0x19) or goes on
    /// (0x18). Anything out of place is a protocol error (4.12.1).
    pub(super) fn handle_auth_connected(&mut self, a: Auth) {
        let Some(auth) = self.rare.auth_mut() else {
            return self.protocol_error(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH on a connection that did not use enhanced authentication".into(),
            );
        };
        match check_auth(auth, &a, true) {
            Ok(()) => {
                auth.reauthenticating = true;
                auth.awaiting_client = false;
                self.events.push_back(ServerEvent::Auth(Box::new(a)));
            }
            Err(detail) => self.protocol_error(ReasonCode::PROTOCOL_ERROR, detail),
        }
    }

    /// The connect timeout still running for an exchange before CONNACK.
    pub(super) fn auth_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting => self.rare.auth().map(|a| a.connect_deadline),
            _ => None,
        }
    }
}

/// Whether `a` is the AUTH the exchange expects now; the protocol error if not.
fn check_auth(auth: &EnhancedAuth, a: &Auth, connected: bool) -> Result<(), String> {
    let method = a.properties.authentication_method.as_deref();
    if method != Some(auth.method.as_str()) {
        return Err(format!(
            "AUTH with method {method:?} on a connection that authenticated with {:?}",
            auth.method
        ));
    }
    let expected = match (connected, auth.reauthenticating, auth.awaiting_client) {
        (true, false, _) => ReasonCode::RE_AUTHENTICATE,
        (_, _, true) => ReasonCode::CONTINUE_AUTHENTICATION,
        _ => return Err("AUTH while the server has not answered the last one".into()),
    };
    if a.reason != expected {
        return Err(format!("AUTH {} where {expected} was due", a.reason));
    }
    Ok(())
}

fn auth_packet(reason: ReasonCode, method: &str, data: Bytes) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some(method.to_string()),
            authentication_data: Some(data),
            ..Properties::default()
        }
        .into(),
    })
}
