//! The `[sys]` and `[admin]` tables of the configuration file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

/// `$SYS` topics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SysConfig {
    /// Seconds between two `$SYS` updates (default 10; 0: no `$SYS` topics).
    pub interval: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig { interval: 10 }
    }
}

/// The admin HTTP listener (metrics, JSON API, dashboard). Off unless the
/// table is present or `--admin` is given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to bind (default 127.0.0.1).
    pub bind: IpAddr,
    /// TCP port (default 18083; 0: the system chooses).
    pub port: u16,
    /// Bearer token every request must carry (default: none, loopback only).
    pub token: Option<String>,
    /// A file holding the token (its first line), instead of `token`.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 18083,
            token: None,
            token_file: None,
        }
    }
}

impl AdminConfig {
    /// The socket address to listen on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// Why this cannot be used, if it cannot (checked with the rest of the file).
    pub fn problem(&self) -> Option<String> {
        if self.token.is_some() && self.token_file.is_some() {
            return Some("admin.token and admin.token_file are both set; keep one".into());
        }
        if self.token.as_deref() == Some("") {
            return Some("admin.token is empty".into());
        }
        if !self.bind.is_loopback() && self.token.is_none() && self.token_file.is_none() {
            return Some(format!(
                "admin.bind ({}) is not a loopback address and no admin.token or \
                 admin.token_file is set: anyone who reaches it could kick clients",
                self.bind
            ));
        }
        None
    }

    /// The token requests must carry, read from `token_file` if that is set.
    pub fn resolve_token(&self) -> std::io::Result<Option<String>> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)?;
                let token = text.lines().next().unwrap_or("").trim().to_owned();
                if token.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} holds no token on its first line", path.display()),
                    ));
                }
                Ok(Some(token))
            }
            (None, None) => Ok(None),
        }
    }
}
