//! Who may connect and what they may touch.
//!
//! [`Authenticator`] decides on a CONNECT's credentials and [`Authorizer`]
//! on each publish, subscribe and delivery; the password file
//! ([`PasswordFile`]) and the ACL file ([`Acl`]) are the built-in ones, in
//! Mosquitto's formats, and a Rust program embedding the broker can plug in
//! its own ([`Auth::new`]). [`Auth`] holds the current pair, verifies
//! passwords off the connection workers (a bounded blocking pool) behind a
//! cache of successes, counts and logs every refusal, reloads the files on
//! SIGHUP and disconnects clients whose credentials no longer pass.

mod acl;
mod backoff;
mod config;
mod gate;
mod hash;
mod hooks;
mod jwt;
mod password_file;
mod scram;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

pub use acl::{Access, Acl, AclError};
pub use backoff::{BackoffPolicy, FailureTracker};
pub use config::AuthConfig;
pub use gate::{Auth, AuthCounters, ReloadError};
pub use hash::{HashError, HashKind, PasswordHash, DEFAULT_PBKDF2_ITERATIONS, SALT_LEN};
pub(crate) use hooks::{
    close_expired, close_revoked, may_publish, merge_suback, screen_subscribe, send_ack, DENIED,
};
pub use jwt::{JwtAlgorithm, JwtAuth, JwtConfig, TokenAcl, TokenField};
pub use password_file::{split_line, PasswordFile, PasswordFileError, PasswordFileText};
pub use scram::ScramExchange;

use vigil_proto::ReasonCode;

/// The client an authorization question is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRef<'a> {
    /// Its client identifier.
    pub client_id: &'a str,
    /// Its user name as authenticated (None: anonymous).
    pub username: Option<&'a str>,
}

/// What a CONNECT presents.
pub struct Credentials<'a> {
    /// Client identifier (assigned already if the client sent none).
    pub client_id: &'a str,
    /// User Name, if sent.
    pub username: Option<&'a str>,
    /// Password, if sent.
    pub password: Option<&'a [u8]>,
    /// Where the connection comes from.
    pub peer: SocketAddr,
}

impl fmt::Debug for Credentials<'_> {
    // Never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<hidden>"))
            .field("peer", &self.peer)
            .finish()
    }
}

/// An authenticated client: what the ACL knows it as, and what revocation
/// checks again after a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user name the ACL sees (None: anonymous).
    pub username: Option<String>,
    /// What the credentials were checked against (for the password file, the
    /// stored hash), for [`Authenticator::still_valid`]; None: nothing to recheck.
    pub credential: Option<String>,
    /// When the login stops being valid (a JWT's `exp`): the client is
    /// disconnected then (MQTT 5: DISCONNECT 0xA0 "Maximum connect time").
    pub expires_at: Option<std::time::SystemTime>,
    /// The login's own ACL (a JWT's ACL claim), used instead of the ACL file.
    pub acl: Option<Arc<TokenAcl>>,
}

impl Login {
    /// A login known by `username` (None: anonymous), with nothing to
    /// recheck, no expiry and no ACL of its own.
    pub fn named(username: Option<String>) -> Login {
        Login {
            username,
            credential: None,
            expires_at: None,
            acl: None,
        }
    }
}

/// Decides who may connect.
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// Checks a CONNECT that carries a user name or a password. Runs on a
    /// blocking thread (it may hash for milliseconds). Refuse with
    /// `ReasonCode::BAD_USER_NAME_OR_PASSWORD` or `NOT_AUTHORIZED`.
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Login, ReasonCode>;

    /// After a reload: whether a login granted earlier (possibly by the
    /// authenticator this one replaced) still passes.
    fn still_valid(&self, login: &Login) -> bool {
        let _ = login;
        true
    }

    /// The SCRAM credential `username` logs in with under `mechanism`, and
    /// the text [`Login::credential`] gets for it (None: no such user, or
    /// no credential for this mechanism; the exchange then runs against a
    /// decoy and fails like a wrong password).
    fn scram_credential(
        &self,
        mechanism: vigil_proto::scram::Mechanism,
        username: &str,
    ) -> Option<(vigil_proto::scram::StoredCredential, String)> {
        let _ = (mechanism, username);
        None
    }
}

/// Decides what a connected client may do. Answers must be quick: they are
/// asked on the connection workers, once per PUBLISH and per delivery.
pub trait Authorizer: Send + Sync + fmt::Debug + 'static {
    /// May `client` publish to `topic`?
    fn may_publish(&self, client: &ClientRef<'_>, topic: &str) -> bool;
    /// May `client` receive a message on `topic`?
    fn may_read(&self, client: &ClientRef<'_>, topic: &str) -> bool;
    /// May `client` subscribe to `filter` (false: refuse at SUBACK)?
    fn may_subscribe(&self, client: &ClientRef<'_>, filter: &str) -> bool;
}

impl Authorizer for Acl {
    fn may_publish(&self, client: &ClientRef<'_>, topic: &str) -> bool {
        self.may_write(client, topic)
    }

    fn may_read(&self, client: &ClientRef<'_>, topic: &str) -> bool {
        Acl::may_read(self, client, topic)
    }

    fn may_subscribe(&self, client: &ClientRef<'_>, filter: &str) -> bool {
        Acl::may_subscribe(self, client, filter)
    }
}

impl Authenticator for PasswordFile {
    fn authenticate(&self, c: &Credentials<'_>) -> Result<Login, ReasonCode> {
        // Mosquitto needs a user name for a password file; a password alone
        // (allowed by MQTT 5) names nobody.
        let (Some(user), password) = (c.username, c.password.unwrap_or_default()) else {
            return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        };
        if !self.verify(user, password) {
            return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        }
        Ok(Login {
            credential: self.get(user).map(PasswordHash::encode),
            ..Login::named(Some(user.to_string()))
        })
    }

    fn still_valid(&self, login: &Login) -> bool {
        match (&login.username, &login.credential) {
            (Some(user), Some(stored)) => self.get(user).is_some_and(|now| now.encode() == *stored),
            _ => true,
        }
    }

    fn scram_credential(
        &self,
        mechanism: vigil_proto::scram::Mechanism,
        username: &str,
    ) -> Option<(vigil_proto::scram::StoredCredential, String)> {
        let entry = self.get(username)?;
        Some((entry.scram(mechanism)?.clone(), entry.encode()))
    }
}

/// The password file and JWT side by side: a password that has a JWT's
/// shape goes to JWT, anything else to the password file.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    pub(crate) jwt: Option<JwtAuth>,
    pub(crate) passwords: Option<PasswordFile>,
}

impl Authenticator for Chain {
    fn authenticate(&self, c: &Credentials<'_>) -> Result<Login, ReasonCode> {
        if let Some(jwt) = &self.jwt {
            let is_token = jwt.token(c).is_some_and(JwtAuth::looks_like_token);
            if is_token || self.passwords.is_none() {
                return jwt.authenticate(c);
            }
        }
        match &self.passwords {
            Some(p) => p.authenticate(c),
            None => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        }
    }

    fn still_valid(&self, login: &Login) -> bool {
        if login.expires_at.is_some() {
            return match &self.jwt {
                Some(jwt) => jwt.still_valid(login),
                None => false,
            };
        }
        match &self.passwords {
            Some(p) => p.still_valid(login),
            None => login.credential.is_none(),
        }
    }

    fn scram_credential(
        &self,
        mechanism: vigil_proto::scram::Mechanism,
        username: &str,
    ) -> Option<(vigil_proto::scram::StoredCredential, String)> {
        self.passwords
            .as_ref()?
            .scram_credential(mechanism, username)
    }
}

/// Holds `auth` for the broker's routing (read checks at delivery).
pub(crate) type AuthSlot = std::sync::OnceLock<Arc<Auth>>;
