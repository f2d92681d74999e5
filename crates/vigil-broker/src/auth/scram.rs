//! SCRAM logins (MQTT 5 enhanced authentication, `SCRAM-SHA-256` and
//! `SCRAM-SHA-512`) against the authenticator's stored credentials: the
//! gate's half of the exchange the connection carries in AUTH packets.
//! Only HMACs run here (the PBKDF2 work is the client's), so it runs inline
//! on the connection's worker.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use vigil_proto::scram::{self, ClientFirst, Mechanism, ScramServer, StoredCredential};
use vigil_proto::{Connect, ReasonCode};

use super::{Auth, Login};

/// One SCRAM exchange in progress, between server-first and client-final.
#[derive(Debug)]
pub struct ScramExchange {
    server: ScramServer,
    username: String,
    /// What the login's credential will read (None: the user is unknown and
    /// the exchange runs against a decoy, so it fails like a wrong password).
    credential: Option<String>,
}

impl ScramExchange {
    /// The user name of client-first.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl Auth {
    /// Starts an exchange from client-first; returns it with server-first.
    /// A user who does not exist (or has no credential for this mechanism)
    /// gets a decoy: its salt derives from the process's secret and the
    /// name, so it is the same on every attempt and looks like a real one,
    /// and the work is the same, so the answer does not tell who exists.
    pub fn scram_start(
        &self,
        mechanism: Mechanism,
        client_first: &[u8],
        client_id: &str,
        peer: SocketAddr,
    ) -> Result<(ScramExchange, Vec<u8>), ReasonCode> {
        let Some(authenticator) = self.gates.read().authenticator.clone() else {
            return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
        };
        let first = match ClientFirst::parse(client_first) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(client = %client_id, %peer, fault = %e, "bad SCRAM client-first");
                return Err(self.refused(
                    ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                    client_id,
                    None,
                    peer,
                ));
            }
        };
        self.check_banned(client_id, Some(&first.username), peer)?;
        let (credential, text) = match authenticator.scram_credential(mechanism, &first.username) {
            Some((c, text)) => (c, Some(text)),
            None => (self.scram_decoy(mechanism, &first.username), None),
        };
        let nonce = STANDARD.encode(rand::random::<[u8; 18]>());
        let (server, server_first) =
            ScramServer::start(&first, credential, &nonce).map_err(|e| {
                tracing::debug!(client = %client_id, %peer, fault = %e, "SCRAM exchange not started");
                ReasonCode::BAD_USER_NAME_OR_PASSWORD
            })?;
        let exchange = ScramExchange {
            server,
            username: first.username,
            credential: text,
        };
        Ok((exchange, server_first))
    }

    /// Checks client-final; returns the login and server-final. `connect`
    /// is the CONNECT of a first login (its will is checked against the
    /// ACL, and the login counted); None for a re-authentication. Failures
    /// are counted, logged and held against the address like a wrong
    /// password.
    pub fn scram_finish(
        &self,
        exchange: &ScramExchange,
        client_final: &[u8],
        connect: Option<&Connect>,
        client_id: &str,
        peer: SocketAddr,
    ) -> Result<(Arc<Login>, Vec<u8>), ReasonCode> {
        let username = Some(exchange.username.as_str());
        let server_final = match (exchange.server.finish(client_final), &exchange.credential) {
            (Ok(v), Some(_)) => v,
            (outcome, _) => {
                if let Err(e) = outcome {
                    tracing::debug!(client = %client_id, %peer, fault = %e, "SCRAM proof refused");
                }
                let code = ReasonCode::BAD_USER_NAME_OR_PASSWORD;
                return Err(self.refused(code, client_id, username, peer));
            }
        };
        self.failures.lock().succeeded(peer.ip());
        let login = Arc::new(Login {
            credential: exchange.credential.clone(),
            ..Login::named(Some(exchange.username.clone()))
        });
        if let Some(connect) = connect {
            self.check_will(connect, &login, client_id, peer)?;
            self.counters
                .connect_allowed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((login, server_final))
    }

    /// A credential for a user who has none: stable per name and process,
    /// matching no password.
    fn scram_decoy(&self, mechanism: Mechanism, username: &str) -> StoredCredential {
        let derive = |label: &[u8]| -> Vec<u8> {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.cache_key) else {
                return vec![0; 32];
            };
            mac.update(label);
            mac.update(mechanism.name().as_bytes());
            mac.update(&[0]);
            mac.update(username.as_bytes());
            mac.finalize().into_bytes().to_vec()
        };
        let len = mechanism.output_len();
        let key =
            |label: &[u8]| -> Vec<u8> { derive(label).into_iter().cycle().take(len).collect() };
        StoredCredential {
            mechanism,
            // As long as the salt `vigil passwd` writes.
            salt: derive(b"salt")[..16].to_vec(),
            iterations: scram::DEFAULT_ITERATIONS,
            stored_key: key(b"stored"),
            server_key: key(b"server"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use vigil_proto::scram::ScramClient;

    use super::*;
    use crate::auth::{Chain, HashKind, PasswordFile, PasswordHash};

    fn gate(lines: &str) -> Auth {
        let file = PasswordFile::parse(lines, Path::new("passwd")).unwrap();
        let chain = Chain {
            jwt: None,
            passwords: Some(file),
        };
        Auth::new(Some(Arc::new(chain)), None, false)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    fn login(auth: &Auth, m: Mechanism, user: &str, pw: &[u8]) -> Result<Arc<Login>, ReasonCode> {
        let mut client = ScramClient::new(m, user, pw, "clientnonce").unwrap();
        let (exchange, server_first) = auth
            .scram_start(m, &client.client_first(), "c", peer())
            .unwrap();
        let client_final = client.client_final(&server_first).unwrap();
        let (login, server_final) =
            auth.scram_finish(&exchange, &client_final, None, "c", peer())?;
        client.verify_server_final(&server_final).unwrap();
        Ok(login)
    }

    #[test]
    fn users_log_in_with_their_mechanism_only() {
        let a = PasswordHash::generate(HashKind::ScramSha256, b"a pw", Some(64)).unwrap();
        let b = PasswordHash::generate(HashKind::ScramSha512, b"b pw", Some(64)).unwrap();
        let c = PasswordHash::generate(HashKind::Sha512, b"c pw", None).unwrap();
        let auth = gate(&format!(
            "a:{}\nb:{}\nc:{}\n",
            a.encode(),
            b.encode(),
            c.encode()
        ));
        let l = login(&auth, Mechanism::Sha256, "a", b"a pw").unwrap();
        assert_eq!(l.username.as_deref(), Some("a"));
        assert_eq!(l.credential, Some(a.encode()));
        login(&auth, Mechanism::Sha512, "b", b"b pw").unwrap();
        let bad = Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        assert_eq!(login(&auth, Mechanism::Sha256, "a", b"b pw"), bad);
        assert_eq!(login(&auth, Mechanism::Sha512, "a", b"a pw"), bad);
        assert_eq!(login(&auth, Mechanism::Sha256, "c", b"c pw"), bad);
        assert_eq!(login(&auth, Mechanism::Sha256, "nobody", b"x"), bad);
        assert_eq!(
            auth.counters()
                .connect_bad_credentials
                .load(std::sync::atomic::Ordering::Relaxed),
            4
        );
    }

    /// An unknown user's server-first looks like a known one's, and stays
    /// the same from one attempt to the next (a changing salt would give
    /// the unknown user away).
    #[test]
    fn unknown_users_get_a_stable_decoy_salt() {
        let a = PasswordHash::generate(HashKind::ScramSha256, b"pw", None).unwrap();
        let auth = gate(&format!("a:{}\n", a.encode()));
        let salt_of = |user: &str| {
            let client = ScramClient::new(Mechanism::Sha256, user, b"x", "n").unwrap();
            let (_, first) = auth
                .scram_start(Mechanism::Sha256, &client.client_first(), "c", peer())
                .unwrap();
            let text = String::from_utf8(first).unwrap();
            let mut parts = text.split(',').skip(1);
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
            )
        };
        let (known_salt, known_i) = salt_of("a");
        let (s1, i1) = salt_of("ghost");
        let (s2, _) = salt_of("ghost");
        assert_eq!(s1, s2);
        assert_ne!(s1, salt_of("ghost2").0);
        assert_eq!(known_i, i1);
        assert_eq!(known_salt.len(), s1.len());
    }

    #[test]
    fn a_malformed_client_first_is_refused() {
        let auth = gate("");
        assert_eq!(
            auth.scram_start(Mechanism::Sha256, b"p=x,,n=a,r=b", "c", peer())
                .map(|_| ()),
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        let none = Auth::new(None, None, true);
        assert_eq!(
            none.scram_start(Mechanism::Sha256, b"n,,n=a,r=b", "c", peer())
                .map(|_| ()),
            Err(ReasonCode::BAD_AUTHENTICATION_METHOD)
        );
    }
}
