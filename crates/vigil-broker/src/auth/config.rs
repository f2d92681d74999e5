//! The `[auth]` table of the config file, and the safe-default rule: a
//! listener anyone else can reach needs authentication or an explicit
//! `allow_anonymous = true`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Who may connect, and what they may touch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Mosquitto-compatible password file (`user:$7$...`, `$6$`, `$argon2id$`).
    pub password_file: Option<PathBuf>,
    /// Mosquitto-compatible ACL file; with one, whatever it does not grant is denied.
    pub acl_file: Option<PathBuf>,
    /// Whether clients without credentials may connect. Unset: yes when no
    /// authentication method is configured, no once one is.
    pub allow_anonymous: Option<bool>,
    /// After a reload (SIGHUP), disconnect clients whose credentials no
    /// longer pass (default true).
    pub revoke_on_reload: bool,
    /// Failed logins from one address within `failure_window` after which
    /// its CONNECTs are refused for `failure_ban` seconds (default 10; 0: never).
    pub max_failures_per_address: u32,
    /// Seconds failed logins are counted over (default 60).
    pub failure_window: u64,
    /// Seconds an address that reached `max_failures_per_address` is refused (default 60).
    pub failure_ban: u64,
    /// Remember successful password verifications (by user and a keyed hash
    /// of the password; dropped on reload), so a reconnect storm hashes once
    /// per user (default true).
    pub login_cache: bool,
    /// JWT login (`[auth.jwt]`; unset: none).
    pub jwt: Option<super::JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            revoke_on_reload: true,
            max_failures_per_address: 10,
            failure_window: 60,
            failure_ban: 60,
            login_cache: true,
            jwt: None,
        }
    }
}

impl AuthConfig {
    /// The failure back-off these keys describe.
    pub fn backoff(&self) -> super::BackoffPolicy {
        super::BackoffPolicy {
            max_failures: self.max_failures_per_address,
            window: std::time::Duration::from_secs(self.failure_window),
            ban: std::time::Duration::from_secs(self.failure_ban),
        }
    }

    /// True once any authentication method is configured.
    pub fn has_authentication(&self) -> bool {
        self.password_file.is_some() || self.jwt.is_some()
    }

    /// Whether clients without credentials are let in.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or_else(|| !self.has_authentication())
    }

    /// Refuses a listener on a non-loopback address that would let anyone in
    /// unasked: it needs an authentication method or an explicit
    /// `allow_anonymous = true`. The message names the listener and both fixes.
    /// Also refuses `allow_anonymous = false` with no authentication method,
    /// which would let nobody in.
    pub fn check_listener(&self, listen: SocketAddr) -> Result<(), String> {
        if self.allow_anonymous == Some(false) && !self.has_authentication() {
            return Err(
                "auth.allow_anonymous = false but no authentication method is configured, so no \
                 client could connect: set auth.password_file (or --password-file FILE)"
                    .into(),
            );
        }
        if listen.ip().is_loopback()
            || self.has_authentication()
            || self.allow_anonymous == Some(true)
        {
            return Ok(());
        }
        Err(format!(
            "refusing to listen on {listen} without authentication: any host that can reach it \
             could connect as anyone and read every topic. Either configure authentication \
             ([auth] password_file = \"FILE\" in the config file, or --password-file FILE; \
             create one with `vigil passwd -c FILE USER`), or allow anonymous access explicitly \
             ([auth] allow_anonymous = true, or --allow-anonymous). Or listen on 127.0.0.1 only \
             (--bind 127.0.0.1)."
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_needs_nothing_other_addresses_need_a_decision() {
        let open = AuthConfig::default();
        assert!(open
            .check_listener("127.0.0.1:1883".parse().unwrap())
            .is_ok());
        assert!(open.check_listener("[::1]:1883".parse().unwrap()).is_ok());
        let err = open
            .check_listener("0.0.0.0:1883".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("0.0.0.0:1883"), "{err}");
        assert!(err.contains("--password-file"), "{err}");
        assert!(err.contains("--allow-anonymous"), "{err}");
        assert!(err.contains("allow_anonymous = true"), "{err}");
        assert!(open.check_listener("[::]:1883".parse().unwrap()).is_err());
        let explicit = AuthConfig {
            allow_anonymous: Some(true),
            ..AuthConfig::default()
        };
        assert!(explicit
            .check_listener("0.0.0.0:1883".parse().unwrap())
            .is_ok());
        let with_passwords = AuthConfig {
            password_file: Some("p".into()),
            ..AuthConfig::default()
        };
        assert!(with_passwords
            .check_listener("0.0.0.0:1883".parse().unwrap())
            .is_ok());
        // allow_anonymous = false is not a way to open a public listener
        // either: nobody could connect.
        let closed = AuthConfig {
            allow_anonymous: Some(false),
            ..AuthConfig::default()
        };
        assert!(closed
            .check_listener("10.0.0.1:1883".parse().unwrap())
            .is_err());
        let err = closed
            .check_listener("127.0.0.1:1883".parse().unwrap())
            .unwrap_err();
        assert!(err.contains("no client could connect"), "{err}");
    }

    #[test]
    fn anonymous_is_refused_once_authentication_is_configured() {
        assert!(AuthConfig::default().anonymous_allowed());
        let with_passwords = AuthConfig {
            password_file: Some("p".into()),
            ..AuthConfig::default()
        };
        assert!(!with_passwords.anonymous_allowed());
        let both = AuthConfig {
            allow_anonymous: Some(true),
            ..with_passwords
        };
        assert!(both.anonymous_allowed());
    }
}
