//! `vigil serve`'s side of authentication: build the gate from `[auth]`,
//! say at start what access the broker grants, and reload the files on SIGHUP.

use std::sync::Arc;

use anyhow::Context;
use vigil_broker::auth::{Auth, AuthConfig};
use vigil_broker::Reloader;

/// The gate `[auth]` asks for, or None when the broker is open to anyone
/// (nothing to check: no cost on any packet).
pub(crate) fn gate(config: &AuthConfig) -> anyhow::Result<Option<Arc<Auth>>> {
    if config.password_file.is_none()
        && config.acl_file.is_none()
        && config.jwt.is_none()
        && config.anonymous_allowed()
    {
        return Ok(None);
    }
    let auth = Auth::from_config(config).context("cannot load the [auth] files")?;
    Ok(Some(Arc::new(auth)))
}

/// One line at start saying who may connect.
pub(crate) fn log_access(config: &AuthConfig) {
    if let Some(jwt) = &config.jwt {
        tracing::info!(algorithm = ?jwt.algorithm, from = ?jwt.from, "JWT login enabled");
    }
    match (&config.password_file, config.anonymous_allowed()) {
        (None, true) if config.jwt.is_some() => {
            tracing::info!("clients without credentials are allowed too (allow_anonymous)")
        }
        (None, false) => tracing::info!("clients without credentials are refused"),
        (None, _) => tracing::warn!(
            "anonymous access is allowed: authentication is not configured (listening on loopback only, or --allow-anonymous given)"
        ),
        (Some(file), true) => tracing::info!(password_file = %file.display(), "password file loaded; clients without credentials are allowed too (allow_anonymous)"),
        (Some(file), false) => tracing::info!(password_file = %file.display(), "password file loaded; clients without credentials are refused"),
    }
    if let Some(acl) = &config.acl_file {
        tracing::info!(acl_file = %acl.display(), "ACL loaded: whatever it does not grant is denied");
    }
}

/// Re-reads the TLS certificates, the password, ACL and JWT key files at
/// every SIGHUP (the same reload as `POST /api/v1/reload`). A file that
/// fails to load leaves the old one in force, with an error naming the file
/// (and line). Without files the signal is only logged: SIGHUP's default
/// action would otherwise end the broker.
pub(crate) async fn reload_on_sighup(reloader: Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: the auth files will not be reloaded");
            return;
        };
        while hup.recv().await.is_some() {
            if reloader.is_empty() {
                tracing::info!("SIGHUP: no certificate, password or ACL file to reload");
                continue;
            }
            let r = reloader.clone();
            // Reading and hashing files: off the runtime's thread.
            if let Err(e) = tokio::task::spawn_blocking(move || r.reload("SIGHUP")).await {
                tracing::error!("SIGHUP: reload failed: {e}");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = reloader;
}
