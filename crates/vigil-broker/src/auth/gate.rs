//! [`Auth`]: the broker's one gate. It holds the current authenticator and
//! authorizer, checks CONNECTs (hashing on a bounded blocking pool, behind a
//! cache of successes), answers the per-packet questions, counts and logs
//! refusals, and reloads the files with revocation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use parking_lot::{Mutex, RwLock};
use sha2::Sha256;
use thiserror::Error;
use tracing::{debug, info, warn};
use vigil_proto::{Connect, ReasonCode};

use super::{
    Acl, AclError, AuthConfig, Authenticator, Authorizer, BackoffPolicy, Chain, ClientRef,
    Credentials, FailureTracker, JwtAuth, JwtConfig, Login, PasswordFile, PasswordFileError,
    TokenAcl,
};
use crate::core::{Broker, Control, Session, SessionRef};

/// Successful verifications remembered; past this the cache starts over
/// (a storm of distinct users costs hashing, never unbounded memory).
const CACHE_CAPACITY: usize = 100_000;

/// Refusals and checks, by reason.
#[derive(Debug, Default)]
pub struct AuthCounters {
    /// CONNECTs let in.
    pub connect_allowed: AtomicU64,
    /// CONNACK 0x86 / 4: unknown user or wrong password.
    pub connect_bad_credentials: AtomicU64,
    /// CONNACK 0x87 / 5: no credentials while anonymous access is off, or
    /// refused by a custom authenticator.
    pub connect_not_authorized: AtomicU64,
    /// CONNACK 0x87 / 5: the will's topic may not be published to.
    pub connect_will_denied: AtomicU64,
    /// CONNACK 0x87 / 5: a listener that logs clients in by certificate
    /// (`use_identity_as_username`) found no identity in this one's.
    pub connect_no_identity: AtomicU64,
    /// Logins by client certificate (`use_identity_as_username`).
    pub connect_by_certificate: AtomicU64,
    /// CONNACK 0x8A / 5: the address is banned after repeated failures.
    pub connect_banned: AtomicU64,
    /// Addresses banned after repeated failures.
    pub addresses_banned: AtomicU64,
    /// Password hashes computed (cache misses).
    pub verifications: AtomicU64,
    /// Logins answered from the cache.
    pub cache_hits: AtomicU64,
    /// Subscriptions refused (SUBACK 0x87 / 0x80).
    pub subscribe_denied: AtomicU64,
    /// PUBLISHes refused (MQTT 5: PUBACK/PUBREC 0x87; 3.1.1: dropped).
    pub publish_denied: AtomicU64,
    /// Deliveries withheld because the subscriber may not read the topic.
    pub delivery_denied: AtomicU64,
    /// Connections closed because a reload revoked their credentials.
    pub revoked: AtomicU64,
    /// Connections closed because their login (a JWT) expired.
    pub expired: AtomicU64,
    /// Successful reloads.
    pub reloads: AtomicU64,
    /// Reloads that kept the old files because a new one did not parse.
    pub reload_failures: AtomicU64,
}

/// A file that failed to reload (the old one stays in force).
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The password file.
    #[error(transparent)]
    Passwords(#[from] PasswordFileError),
    /// The ACL file.
    #[error(transparent)]
    Acl(#[from] AclError),
    /// The JWT key.
    #[error("auth.jwt: {cause}")]
    Jwt {
        /// The key or secret file, when the key comes from one.
        file: Option<PathBuf>,
        /// What is wrong.
        cause: String,
    },
}

impl ReloadError {
    /// The file at fault, when one is.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            ReloadError::Passwords(
                PasswordFileError::Read { path, .. } | PasswordFileError::Line { path, .. },
            )
            | ReloadError::Acl(AclError::Read { path, .. } | AclError::Line { path, .. }) => {
                Some(path)
            }
            ReloadError::Jwt { file, .. } => file.as_deref(),
        }
    }

    /// The 1-based line at fault, for a file that parsed wrong.
    pub fn line(&self) -> Option<usize> {
        match self {
            ReloadError::Passwords(PasswordFileError::Line { line, .. })
            | ReloadError::Acl(AclError::Line { line, .. }) => Some(*line),
            _ => None,
        }
    }

    /// True when the file could not be read at all (rather than read and
    /// found wrong).
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            ReloadError::Passwords(PasswordFileError::Read { .. })
                | ReloadError::Acl(AclError::Read { .. })
        )
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Gates {
    pub(super) authenticator: Option<Arc<dyn Authenticator>>,
    authorizer: Option<Arc<dyn Authorizer>>,
}

/// A session (weak: it goes when the session ends) and its login's ACL.
type SessionAcl = (Weak<Session>, Arc<TokenAcl>);

/// A user name and the keyed hash of the password it came with.
type CacheKey = (Option<String>, [u8; 32]);

/// A live connection's login, for revocation after a reload.
#[derive(Debug)]
struct Tracked {
    session: Weak<Session>,
    login: Arc<Login>,
}

/// The broker's authentication and authorization gate.
#[derive(Debug)]
pub struct Auth {
    pub(super) gates: RwLock<Gates>,
    allow_anonymous: bool,
    revoke_on_reload: bool,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    jwt: Option<JwtConfig>,
    /// Token ACLs of sessions whose login carried one, by session key.
    token_acls: RwLock<HashMap<u64, SessionAcl>>,
    /// Live connections whose login expires, by (expiry, connection id).
    expiring: Mutex<std::collections::BTreeSet<(SystemTime, u64)>>,
    /// (user, keyed hash of the password) -> the login it earned.
    cache: Mutex<HashMap<CacheKey, Arc<Login>>>,
    /// Key of the cache's password hash, random per process: the cache
    /// never holds anything a stolen memory dump could test guesses against
    /// offline faster than the password file itself.
    pub(super) cache_key: [u8; 32],
    /// Whether successes are cached at all (`login_cache`).
    cache_enabled: bool,
    /// Bounds the hashing in flight to the machine's cores.
    hashing: tokio::sync::Semaphore,
    pub(super) counters: AuthCounters,
    live: Mutex<HashMap<u64, Tracked>>,
    /// Second of the last publish-denied warning (the rest go to debug).
    last_publish_warning: AtomicU64,
    /// Second of the last banned-address warning (the rest go to debug).
    last_ban_warning: AtomicU64,
    pub(super) failures: Mutex<FailureTracker>,
}

impl Auth {
    /// A gate with these decision makers. `allow_anonymous` lets clients
    /// without credentials in even when an authenticator is set.
    pub fn new(
        authenticator: Option<Arc<dyn Authenticator>>,
        authorizer: Option<Arc<dyn Authorizer>>,
        allow_anonymous: bool,
    ) -> Auth {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Auth {
            gates: RwLock::new(Gates {
                authenticator,
                authorizer,
            }),
            allow_anonymous,
            revoke_on_reload: true,
            password_file: None,
            acl_file: None,
            jwt: None,
            token_acls: RwLock::new(HashMap::new()),
            expiring: Mutex::new(std::collections::BTreeSet::new()),
            cache: Mutex::new(HashMap::new()),
            cache_key: rand::random(),
            cache_enabled: true,
            hashing: tokio::sync::Semaphore::new(cores),
            counters: AuthCounters::default(),
            live: Mutex::new(HashMap::new()),
            last_publish_warning: AtomicU64::new(0),
            last_ban_warning: AtomicU64::new(0),
            failures: Mutex::new(FailureTracker::new(AuthConfig::default().backoff())),
        }
    }

    /// Sets the failure back-off (default: that of `AuthConfig::default()`).
    pub fn with_backoff(self, policy: BackoffPolicy) -> Auth {
        *self.failures.lock() = FailureTracker::new(policy);
        self
    }

    /// The gate `[auth]` describes, with its files read.
    pub fn from_config(config: &AuthConfig) -> Result<Auth, ReloadError> {
        let mut auth =
            Auth::new(None, None, config.anonymous_allowed()).with_backoff(config.backoff());
        auth.revoke_on_reload = config.revoke_on_reload;
        auth.password_file = config.password_file.clone();
        auth.acl_file = config.acl_file.clone();
        auth.jwt = config.jwt.clone();
        auth.cache_enabled = config.login_cache;
        let gates = auth.read_files()?;
        *auth.gates.get_mut() = gates;
        Ok(auth)
    }

    /// The counters.
    pub fn counters(&self) -> &AuthCounters {
        &self.counters
    }

    /// True when an authorizer (an ACL, or a token's) is in force.
    pub fn has_authorizer(&self) -> bool {
        self.gates.read().authorizer.is_some() || !self.token_acls.read().is_empty()
    }

    fn read_files(&self) -> Result<Gates, ReloadError> {
        let mut gates = Gates::default();
        let mut chain = Chain::default();
        if let Some(path) = &self.password_file {
            let file = PasswordFile::load(path)?;
            if file.is_empty() {
                warn!(file = %path.display(), "the password file names no user: only anonymous clients can connect, if allowed");
            }
            chain.passwords = Some(file);
        }
        if let Some(jwt) = &self.jwt {
            let loaded = JwtAuth::load(jwt).map_err(|cause| ReloadError::Jwt {
                file: jwt
                    .secret_file
                    .clone()
                    .or_else(|| jwt.public_key_file.clone()),
                cause,
            })?;
            chain.jwt = Some(loaded);
        }
        if chain.passwords.is_some() || chain.jwt.is_some() {
            gates.authenticator = Some(Arc::new(chain));
        }
        if let Some(path) = &self.acl_file {
            gates.authorizer = Some(Arc::new(Acl::load(path)?));
        }
        Ok(gates)
    }

    /// Re-reads the password and ACL files (SIGHUP). If either fails to
    /// parse, both old ones stay and the error names the file and line.
    /// After a successful reload, with `revoke_on_reload`, connected clients
    /// whose credentials no longer pass get DISCONNECT 0x87 (MQTT 5) and are
    /// closed; returns how many.
    pub fn reload(&self) -> Result<usize, ReloadError> {
        let gates = match self.read_files() {
            Ok(g) => g,
            Err(e) => {
                self.counters.reload_failures.fetch_add(1, Relaxed);
                return Err(e);
            }
        };
        *self.gates.write() = gates;
        self.cache.lock().clear();
        self.counters.reloads.fetch_add(1, Relaxed);
        if !self.revoke_on_reload {
            return Ok(0);
        }
        Ok(self.revoke_invalid())
    }

    /// Disconnects live clients the current authenticator no longer accepts.
    fn revoke_invalid(&self) -> usize {
        let authenticator = self.gates.read().authenticator.clone();
        let mut revoked = 0;
        let mut live = self.live.lock();
        live.retain(|conn_id, tracked| {
            let Some(session) = tracked.session.upgrade() else {
                return false;
            };
            let inner = session.inner.lock();
            let Some(conn) = inner.presence.conn().filter(|c| c.conn_id == *conn_id) else {
                return false;
            };
            let valid = match (&authenticator, &tracked.login.username) {
                (Some(a), _) => a.still_valid(&tracked.login),
                // Authentication switched off: nobody's login can fail.
                (None, _) => true,
            };
            if valid {
                return true;
            }
            info!(
                client = session.client_id(),
                username = tracked.login.username.as_deref().unwrap_or(""),
                "credentials revoked by reload: disconnecting"
            );
            conn.control.send(Control::Revoked);
            revoked += 1;
            false
        });
        self.counters.revoked.fetch_add(revoked as u64, Relaxed);
        revoked
    }

    /// Decides on a CONNECT: the login to attach, or the CONNACK refusal.
    /// Checks the will against the ACL too. Hashing runs on the blocking
    /// pool; every refusal is logged (never the password) and counted.
    ///
    /// `cert_user`: the identity of the client's verified certificate on a
    /// listener with `use_identity_as_username`. It is the login, as
    /// Mosquitto does it: the CONNECT's user name and password are not
    /// checked (a password sent anyway is ignored), and the address ban
    /// does not apply (a verified certificate cannot be guessed, and a ban
    /// earned by a guesser behind the same NAT would lock devices out).
    pub async fn check_connect(
        &self,
        connect: &Connect,
        client_id: &str,
        peer: SocketAddr,
        cert_user: Option<&str>,
    ) -> Result<Arc<Login>, ReasonCode> {
        let username = connect.username.as_deref();
        if let Some(user) = cert_user {
            let login = Arc::new(Login::named(Some(user.to_string())));
            self.check_will(connect, &login, client_id, peer)?;
            self.counters.connect_by_certificate.fetch_add(1, Relaxed);
            self.counters.connect_allowed.fetch_add(1, Relaxed);
            return Ok(login);
        }
        self.check_banned(client_id, username, peer)?;
        let login = self
            .authenticate(client_id, username, connect.password.as_deref(), peer)
            .await;
        let login = match login {
            Ok(l) => l,
            Err(code) => return Err(self.refused(code, client_id, username, peer)),
        };
        if login.credential.is_some() || login.expires_at.is_some() {
            self.failures.lock().succeeded(peer.ip());
        }
        self.check_will(connect, &login, client_id, peer)?;
        self.counters.connect_allowed.fetch_add(1, Relaxed);
        Ok(login)
    }

    /// Refuses (CONNACK 0x8A) an address banned after repeated failures.
    pub(super) fn check_banned(
        &self,
        client_id: &str,
        username: Option<&str>,
        peer: SocketAddr,
    ) -> Result<(), ReasonCode> {
        let Some(until) = self.failures.lock().banned_until(peer.ip(), Instant::now()) else {
            return Ok(());
        };
        self.counters.connect_banned.fetch_add(1, Relaxed);
        let left = until.saturating_duration_since(Instant::now()).as_secs();
        if once_a_second(&self.last_ban_warning) {
            warn!(client = %client_id, username = username.unwrap_or(""), %peer, seconds_left = left, "connection refused: too many failed logins from this address (further refusals this second at debug level)");
        } else {
            debug!(client = %client_id, %peer, "connection refused: address banned");
        }
        Err(ReasonCode::BANNED)
    }

    /// Counts, logs (never the password) and remembers against the address
    /// a failed login; returns `code`.
    pub(super) fn refused(
        &self,
        code: ReasonCode,
        client_id: &str,
        username: Option<&str>,
        peer: SocketAddr,
    ) -> ReasonCode {
        let counter = if code == ReasonCode::BAD_USER_NAME_OR_PASSWORD {
            &self.counters.connect_bad_credentials
        } else {
            &self.counters.connect_not_authorized
        };
        counter.fetch_add(1, Relaxed);
        warn!(client = %client_id, username = username.unwrap_or(""), %peer, reason = %code, "authentication failed");
        if code == ReasonCode::BAD_USER_NAME_OR_PASSWORD
            && self.failures.lock().failed(peer.ip(), Instant::now())
        {
            self.counters.addresses_banned.fetch_add(1, Relaxed);
            warn!(%peer, "too many failed logins: this address is refused for a while (auth.failure_ban)");
        }
        code
    }

    /// Refuses (0x87) a will whose topic the login may not publish to.
    pub(super) fn check_will(
        &self,
        connect: &Connect,
        login: &Login,
        client_id: &str,
        peer: SocketAddr,
    ) -> Result<(), ReasonCode> {
        let Some(will) = &connect.will else {
            return Ok(());
        };
        let client = ClientRef {
            client_id,
            username: login.username.as_deref(),
        };
        let allowed = match &login.acl {
            Some(acl) => acl.may_publish(&will.topic),
            None => self.may_publish(&client, &will.topic),
        };
        if allowed {
            return Ok(());
        }
        self.counters.connect_will_denied.fetch_add(1, Relaxed);
        warn!(client = %client_id, username = login.username.as_deref().unwrap_or(""), %peer, topic = %will.topic, "connection refused: the ACL does not let this client publish its will");
        Err(ReasonCode::NOT_AUTHORIZED)
    }

    async fn authenticate(
        &self,
        client_id: &str,
        username: Option<&str>,
        password: Option<&[u8]>,
        peer: SocketAddr,
    ) -> Result<Arc<Login>, ReasonCode> {
        let authenticator = self.gates.read().authenticator.clone();
        let anonymous = username.is_none() && password.is_none();
        let Some(authenticator) = authenticator else {
            // No authentication method: the user name is taken as given.
            return if self.allow_anonymous {
                Ok(Arc::new(Login::named(username.map(str::to_string))))
            } else {
                Err(ReasonCode::NOT_AUTHORIZED)
            };
        };
        if anonymous {
            return if self.allow_anonymous {
                Ok(Arc::new(Login::named(None)))
            } else {
                Err(ReasonCode::NOT_AUTHORIZED)
            };
        }
        let key = (username.map(str::to_string), self.cache_tag(password));
        let cached = self
            .cache_enabled
            .then(|| self.cache.lock().get(&key).cloned());
        if let Some(login) = cached.flatten() {
            self.counters.cache_hits.fetch_add(1, Relaxed);
            return Ok(login);
        }
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ReasonCode::SERVER_UNAVAILABLE)?;
        self.counters.verifications.fetch_add(1, Relaxed);
        let owned = (
            client_id.to_string(),
            username.map(str::to_string),
            password.map(<[u8]>::to_vec),
        );
        let answer = tokio::task::spawn_blocking(move || {
            let (client_id, username, password) = owned;
            authenticator.authenticate(&Credentials {
                client_id: &client_id,
                username: username.as_deref(),
                password: password.as_deref(),
                peer,
            })
        })
        .await
        .unwrap_or(Err(ReasonCode::SERVER_UNAVAILABLE))?;
        let login = Arc::new(answer);
        if login.expires_at.is_some() || !self.cache_enabled {
            // A token is checked cheaply and expires: not worth a cache entry.
            return Ok(login);
        }
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, login.clone());
        Ok(login)
    }

    /// HMAC-SHA256 of the password under the process's random key.
    fn cache_tag(&self, password: Option<&[u8]>) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.cache_key) else {
            return [0; 32];
        };
        // A password of zero bytes and no password at all must differ.
        mac.update(&[u8::from(password.is_some())]);
        mac.update(password.unwrap_or_default());
        mac.finalize().into_bytes().into()
    }

    /// Remembers a live connection's login, for revocation after a reload.
    pub fn track(&self, conn_id: u64, session: &SessionRef, login: Arc<Login>) {
        let mut live = self.live.lock();
        // Entries of connections that ended are swept when they could
        // outnumber the live ones.
        if live.len() >= 1024 && live.len().is_power_of_two() {
            live.retain(|id, t| {
                t.session.upgrade().is_some_and(|s| {
                    s.inner
                        .lock()
                        .presence
                        .conn()
                        .is_some_and(|c| c.conn_id == *id)
                })
            });
            // Token ACLs of sessions that ended go with them.
            self.token_acls
                .write()
                .retain(|_, (session, _)| session.strong_count() > 0);
        }
        if let Some(at) = login.expires_at {
            self.expiring.lock().insert((at, conn_id));
        }
        match &login.acl {
            Some(acl) => {
                self.token_acls
                    .write()
                    .insert(session.key, (Arc::downgrade(session), acl.clone()));
            }
            None => {
                if !self.token_acls.read().is_empty() {
                    self.token_acls.write().remove(&session.key);
                }
            }
        }
        live.insert(
            conn_id,
            Tracked {
                session: Arc::downgrade(session),
                login,
            },
        );
    }

    /// Disconnects the live connections whose login expired by `now`
    /// (MQTT 5: DISCONNECT 0xA0 first); returns how many.
    pub fn expire_due(&self, now: SystemTime) -> usize {
        let due: Vec<u64> = {
            let mut expiring = self.expiring.lock();
            let mut due = Vec::new();
            while let Some(&(at, conn_id)) = expiring.first() {
                if at > now {
                    break;
                }
                expiring.pop_first();
                due.push(conn_id);
            }
            due
        };
        let mut closed = 0;
        let live = self.live.lock();
        for conn_id in due {
            let Some(session) = live.get(&conn_id).and_then(|t| t.session.upgrade()) else {
                continue;
            };
            let inner = session.inner.lock();
            if let Some(conn) = inner.presence.conn().filter(|c| c.conn_id == conn_id) {
                info!(client = session.client_id(), "login expired: disconnecting");
                conn.control.send(Control::Expired);
                closed += 1;
            }
        }
        self.counters.expired.fetch_add(closed as u64, Relaxed);
        closed
    }

    /// Runs [`Auth::expire_due`] at each expiry (checked at least every
    /// second, so a clock change is noticed) until the task is dropped.
    pub async fn run_expiry(self: Arc<Self>) {
        loop {
            let next = self.expiring.lock().first().map(|(at, _)| *at);
            let wait = next
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or(std::time::Duration::ZERO)
                .min(std::time::Duration::from_secs(1));
            if next.is_some() && wait.is_zero() {
                self.expire_due(SystemTime::now());
                continue;
            }
            tokio::time::sleep(if next.is_some() {
                wait
            } else {
                std::time::Duration::from_secs(1)
            })
            .await;
            self.expire_due(SystemTime::now());
        }
    }

    /// May this client publish to `topic` (true without an ACL)?
    pub fn may_publish(&self, client: &ClientRef<'_>, topic: &str) -> bool {
        match &self.gates.read().authorizer {
            Some(a) => a.may_publish(client, topic),
            None => true,
        }
    }

    /// May `session`'s client subscribe to `filter`? Counts and logs a refusal.
    pub fn check_subscribe(&self, session: &Session, filter: &str) -> bool {
        let username = session.inner.lock().username.clone();
        let client = &ClientRef {
            client_id: session.client_id(),
            username: username.as_deref().map(String::as_str),
        };
        let allowed = match self.token_acl(session) {
            Some(acl) => acl.may_subscribe(filter),
            None => match &self.gates.read().authorizer {
                Some(a) => a.may_subscribe(client, filter),
                None => true,
            },
        };
        if !allowed {
            self.counters.subscribe_denied.fetch_add(1, Relaxed);
            info!(client = client.client_id, username = client.username.unwrap_or(""), %filter, "subscription refused: the ACL grants no topic this filter matches");
        }
        allowed
    }

    /// May `session`'s client publish to `topic`? Counts a refusal and logs
    /// it, at most one warning a second (a denied publisher may send thousands).
    pub fn check_publish(&self, session: &Session, topic: &str) -> bool {
        let username = session.inner.lock().username.clone();
        let client = &ClientRef {
            client_id: session.client_id(),
            username: username.as_deref().map(String::as_str),
        };
        let allowed = match self.token_acl(session) {
            Some(acl) => acl.may_publish(topic),
            None => self.may_publish(client, topic),
        };
        if allowed {
            return true;
        }
        self.counters.publish_denied.fetch_add(1, Relaxed);
        if once_a_second(&self.last_publish_warning) {
            warn!(client = client.client_id, username = client.username.unwrap_or(""), %topic, "publish refused: the ACL does not grant write (further refusals this second at debug level)");
        } else {
            debug!(client = client.client_id, %topic, "publish refused by the ACL");
        }
        false
    }

    /// May `session`'s client receive a message on `topic`? Counted when not.
    pub fn check_read(&self, session: &Session, topic: &str) -> bool {
        if let Some(acl) = self.token_acl(session) {
            let allowed = acl.may_read(topic);
            if !allowed {
                self.counters.delivery_denied.fetch_add(1, Relaxed);
            }
            return allowed;
        }
        let gates = self.gates.read();
        let Some(authorizer) = &gates.authorizer else {
            return true;
        };
        let username = session.inner.lock().username.clone();
        let client = ClientRef {
            client_id: session.client_id(),
            username: username.as_deref().map(String::as_str),
        };
        let allowed = authorizer.may_read(&client, topic);
        if !allowed {
            self.counters.delivery_denied.fetch_add(1, Relaxed);
        }
        allowed
    }
}

impl Auth {
    /// The ACL `session`'s login brought with it (a JWT's), if any.
    fn token_acl(&self, session: &Session) -> Option<Arc<TokenAcl>> {
        let acls = self.token_acls.read();
        if acls.is_empty() {
            return None;
        }
        acls.get(&session.key).map(|(_, acl)| acl.clone())
    }
}

/// True at most once a second per `last` (the second of the last true).
fn once_a_second(last: &AtomicU64) -> bool {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    last.swap(second, Relaxed) != second
}

impl Broker {
    /// Puts `auth` in charge of this broker's deliveries (read checks);
    /// the connections consult it for CONNECT, SUBSCRIBE and PUBLISH. Set
    /// once: a second call is ignored and returns false.
    pub fn set_auth(&self, auth: Arc<Auth>) -> bool {
        self.auth.set(auth).is_ok()
    }

    /// The gate, if one was set.
    pub fn auth(&self) -> Option<&Arc<Auth>> {
        self.auth.get()
    }

    /// Whether `session` may receive a message on `topic` (true without a gate).
    pub(crate) fn may_deliver(&self, session: &Session, topic: &str) -> bool {
        self.auth.get().is_none_or(|a| a.check_read(session, topic))
    }
}
