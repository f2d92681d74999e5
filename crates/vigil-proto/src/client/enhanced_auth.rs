//! SCRAM login on the client side (MQTT 5 enhanced authentication): the
//! client-first in CONNECT, client-final in AUTH 0x18, and the server's
//! signature checked in CONNACK (or in AUTH 0x00 after a re-authentication).
//! A server that cannot prove it holds the credential is not trusted.

use bytes::Bytes;

use super::{ClientCloseReason, ClientEvent, ClientSession, Phase};
use crate::scram::{Mechanism, ScramClient};
use crate::{Auth, Packet, Properties, ReasonCode};

/// A SCRAM login (`SCRAM-SHA-256` or `SCRAM-SHA-512`).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramLogin {
    /// The method.
    pub mechanism: Mechanism,
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Bytes,
}

impl std::fmt::Debug for ScramLogin {
    // Never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// The nonce for the next SCRAM exchange (the next `start`, or
    /// `reauthenticate`): fresh random printable text without commas, from a
    /// CSPRNG. Needed before each `start` when `ClientConfig::scram` is set.
    pub fn set_auth_nonce(&mut self, nonce: String) {
        self.auth_nonce = Some(nonce);
    }

    /// The client-first of a new exchange, or the reason there is none.
    pub(super) fn begin_scram(&mut self) -> Result<Option<(Mechanism, Vec<u8>)>, String> {
        let Some(login) = self.config.scram.as_ref() else {
            return Ok(None);
        };
        let nonce = self
            .auth_nonce
            .take()
            .ok_or("SCRAM login without a nonce (set_auth_nonce)")?;
        let client = ScramClient::new(login.mechanism, &login.username, &login.password, &nonce)
            .map_err(|e| e.to_string())?;
        let first = client.client_first();
        self.scram = Some(Box::new(client));
        Ok(Some((login.mechanism, first)))
    }

    /// Starts a re-authentication (AUTH 0x19) on a connection that logged
    /// in with SCRAM; `false` if it did not, or one is already under way.
    pub fn reauthenticate(&mut self) -> bool {
        if self.phase != Phase::Connected || self.scram.is_some() {
            return false;
        }
        match self.begin_scram() {
            Ok(Some((mechanism, first))) => {
                self.transmit
                    .push_back(auth_packet(ReasonCode::RE_AUTHENTICATE, mechanism, first));
                true
            }
            _ => false,
        }
    }

    /// AUTH from the broker: the next step of the exchange, or its end.
    pub(super) fn handle_auth(&mut self, a: Auth) {
        let Some(mut client) = self.scram.take() else {
            return self.violation("AUTH without an exchange in progress".into());
        };
        let m = client.mechanism();
        if a.properties.authentication_method.as_deref() != Some(m.name()) {
            return self.violation("AUTH with another authentication method".into());
        }
        let data = a.properties.authentication_data.clone().unwrap_or_default();
        match a.reason {
            ReasonCode::CONTINUE_AUTHENTICATION => match client.client_final(&data) {
                Ok(last) => {
                    self.transmit.push_back(auth_packet(
                        ReasonCode::CONTINUE_AUTHENTICATION,
                        m,
                        last,
                    ));
                    self.scram = Some(client);
                }
                Err(e) => self.auth_failed(e.to_string()),
            },
            ReasonCode::SUCCESS if self.phase == Phase::Connected => {
                match client.verify_server_final(&data) {
                    Ok(()) => self.events.push_back(ClientEvent::Reauthenticated),
                    Err(e) => self.auth_failed(e.to_string()),
                }
            }
            other => self.violation(format!("unexpected AUTH {other}")),
        }
    }

    /// CONNACK accepted a SCRAM login: its data must be the server's proof.
    pub(super) fn check_server_final(&mut self, data: Option<&Bytes>) -> bool {
        let Some(client) = self.scram.take() else {
            return true;
        };
        let outcome = match data {
            Some(d) => client.verify_server_final(d).map_err(|e| e.to_string()),
            None => Err("CONNACK carries no server signature".into()),
        };
        match outcome {
            Ok(()) => true,
            Err(e) => {
                self.auth_failed(e);
                false
            }
        }
    }

    /// The server failed to prove itself (or the exchange broke): leave.
    fn auth_failed(&mut self, why: String) {
        if self.phase == Phase::Connected {
            self.transmit
                .push_back(Packet::Disconnect(crate::Disconnect::new(
                    ReasonCode::UNSPECIFIED_ERROR,
                )));
        }
        self.close(ClientCloseReason::AuthenticationFailed(why));
    }
}

fn auth_packet(reason: ReasonCode, m: Mechanism, data: Vec<u8>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some(m.name().to_string()),
            authentication_data: Some(Bytes::from(data)),
            ..Properties::default()
        }
        .into(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::client::ClientConfig;
    use crate::scram::{ClientFirst, ScramServer, StoredCredential};
    use crate::ConnAck;

    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn session(password: &'static [u8]) -> ClientSession {
        let mut config = ClientConfig::default();
        config.scram = Some(ScramLogin {
            mechanism: Mechanism::Sha256,
            username: "user".into(),
            password: Bytes::from_static(password),
        });
        ClientSession::new(config, Instant::now())
    }

    fn data(p: &Packet) -> Bytes {
        let props = match p {
            Packet::Connect(c) => &c.properties,
            Packet::Auth(a) => &a.properties,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            props.authentication_method.as_deref(),
            Some("SCRAM-SHA-256")
        );
        props.authentication_data.clone().unwrap()
    }

    fn auth(reason: ReasonCode, data: Vec<u8>) -> Packet {
        auth_packet(reason, Mechanism::Sha256, data)
    }

    /// Runs the server side with the RFC 7677 salt; returns the server and
    /// the client's first message.
    fn connect(c: &mut ClientSession, nonce: &str) -> (ScramServer, Vec<u8>) {
        c.set_auth_nonce(nonce.into());
        c.start(Instant::now());
        let first = data(&c.poll_transmit().unwrap());
        let parsed = ClientFirst::parse(&first).unwrap();
        let salt = b"[m\x99h\x9d\x125\x8e\xec\xa0K\x14\x126\xfa\x81";
        let cred = StoredCredential::derive(Mechanism::Sha256, b"pencil", salt, 4096);
        let (server, server_first) = ScramServer::start(&parsed, cred, SERVER_NONCE).unwrap();
        (server, server_first)
    }

    /// RFC 7677's exchange, through the session: CONNECT, AUTH, CONNACK.
    #[test]
    fn a_scram_login_sends_the_rfc_messages_and_checks_the_signature() {
        let mut c = session(b"pencil");
        let (server, server_first) = connect(&mut c, "rOprNGfwEbeRWgbNEkqO");
        c.handle_packet(
            Instant::now(),
            auth(ReasonCode::CONTINUE_AUTHENTICATION, server_first),
        );
        let last = data(&c.poll_transmit().unwrap());
        assert_eq!(
            &last[..],
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_final = server.finish(&last).unwrap();
        let mut ack = ConnAck::default();
        ack.properties.authentication_method = Some("SCRAM-SHA-256".into());
        ack.properties.authentication_data = Some(Bytes::from(server_final));
        c.handle_packet(Instant::now(), Packet::ConnAck(ack));
        assert!(c.is_connected());

        // Re-authentication: AUTH 0x19, 0x18 both ways, AUTH 0x00.
        c.set_auth_nonce("second".into());
        assert!(c.reauthenticate());
        let first = c.poll_transmit().unwrap();
        assert!(matches!(&first, Packet::Auth(a) if a.reason == ReasonCode::RE_AUTHENTICATE));
        let parsed = ClientFirst::parse(&data(&first)).unwrap();
        let cred = StoredCredential::derive(Mechanism::Sha256, b"pencil", b"salt", 4096);
        let (server, server_first) = ScramServer::start(&parsed, cred, "srv").unwrap();
        c.handle_packet(
            Instant::now(),
            auth(ReasonCode::CONTINUE_AUTHENTICATION, server_first),
        );
        let server_final = server.finish(&data(&c.poll_transmit().unwrap())).unwrap();
        c.handle_packet(Instant::now(), auth(ReasonCode::SUCCESS, server_final));
        assert!(std::iter::from_fn(|| c.poll_event()).any(|e| e == ClientEvent::Reauthenticated));
        assert!(c.is_connected());
    }

    #[test]
    fn a_server_without_the_credential_fails_the_connect() {
        let mut c = session(b"pencil");
        let (_, server_first) = connect(&mut c, "abc");
        c.handle_packet(
            Instant::now(),
            auth(ReasonCode::CONTINUE_AUTHENTICATION, server_first),
        );
        let _ = c.poll_transmit();
        let mut ack = ConnAck::default();
        ack.properties.authentication_data = Some(Bytes::from_static(b"v=AAAA"));
        c.handle_packet(Instant::now(), Packet::ConnAck(ack));
        assert!(!c.is_connected());
        assert!(std::iter::from_fn(|| c.poll_event()).any(|e| matches!(
            e,
            ClientEvent::Closed(ClientCloseReason::AuthenticationFailed(_))
        )));
        // No signature at all is no better.
        let mut c = session(b"pencil");
        let (_, server_first) = connect(&mut c, "abc");
        c.handle_packet(
            Instant::now(),
            auth(ReasonCode::CONTINUE_AUTHENTICATION, server_first),
        );
        c.handle_packet(Instant::now(), Packet::ConnAck(ConnAck::default()));
        assert!(!c.is_connected());
        // MQTT 3.1.1 has no AUTH: the connection fails rather than log in
        // without credentials.
        let mut c = session(b"pencil");
        c.config.version = crate::ProtocolVersion::V3_1_1;
        c.set_auth_nonce("n".into());
        c.start(Instant::now());
        assert!(c.poll_transmit().is_none());
        assert!(matches!(
            c.poll_event(),
            Some(ClientEvent::Closed(
                ClientCloseReason::AuthenticationFailed(_)
            ))
        ));
    }
}
