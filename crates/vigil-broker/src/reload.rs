//! Reloading what a running broker reads from files: the TLS certificates of
//! every TLS listener and the `[auth]` files (password file, ACL, JWT key).
//! One path for SIGHUP and `POST /api/v1/reload`, so both reload the same
//! things and report failures the same way: a file that fails keeps the old
//! one in force, and the report names the file, the line and the cause.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{error, info};

use crate::auth::Auth;
use crate::server::CertReloader;

/// Everything a reload can touch.
#[derive(Debug, Clone)]
pub struct Reloader {
    auth: Option<Arc<Auth>>,
    certs: CertReloader,
}

/// One thing a reload read, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadItem {
    /// What it is: `auth` (password file, ACL, JWT key: reloaded together)
    /// or `tls <listener name>`.
    pub what: String,
    /// None: reloaded and in force; Some: the old one stays in force.
    pub failure: Option<ReloadFailure>,
    /// Clients closed because their login no longer passes (auth only).
    pub revoked: usize,
}

/// Why one file was not reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    /// The file at fault, when one is known.
    pub file: Option<PathBuf>,
    /// Its 1-based line, for a file that parsed wrong.
    pub line: Option<usize>,
    /// What is wrong.
    pub cause: String,
    /// The file could not be read (an I/O fault), rather than read and found wrong.
    pub unreadable: bool,
}

/// What one reload did, item by item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Every item read, in order: the auth files, then each TLS listener.
    pub items: Vec<ReloadItem>,
}

impl ReloadReport {
    /// True when every item was reloaded.
    pub fn ok(&self) -> bool {
        self.items.iter().all(|i| i.failure.is_none())
    }
}

impl Reloader {
    /// A reloader of `auth` (None: no auth files) and `certs`.
    pub fn new(auth: Option<Arc<Auth>>, certs: CertReloader) -> Reloader {
        Reloader { auth, certs }
    }

    /// Each TLS listener with the seconds until its serving certificate's
    /// notAfter (negative: expired).
    pub fn certificate_expiry(&self) -> Vec<(Arc<str>, i64)> {
        self.certs.seconds_until_expiry()
    }

    /// True when there is nothing to reload.
    pub fn is_empty(&self) -> bool {
        self.auth.is_none() && self.certs.is_empty()
    }

    /// Re-reads every file now; blocking (hashes and files): call it off
    /// the MQTT workers. Each outcome is logged too.
    pub fn reload(&self, trigger: &str) -> ReloadReport {
        let mut report = ReloadReport::default();
        if let Some(auth) = &self.auth {
            let item = match auth.reload() {
                Ok(revoked) => {
                    info!(trigger, revoked, "password, ACL and JWT key files reloaded");
                    ReloadItem {
                        what: "auth".into(),
                        failure: None,
                        revoked,
                    }
                }
                Err(e) => {
                    error!(trigger, "auth reload failed, the previous password and ACL files stay in force: {e}");
                    ReloadItem {
                        what: "auth".into(),
                        failure: Some(ReloadFailure {
                            file: e.file().map(PathBuf::from),
                            line: e.line(),
                            cause: e.to_string(),
                            unreadable: e.is_unreadable(),
                        }),
                        revoked: 0,
                    }
                }
            };
            report.items.push(item);
        }
        if !self.certs.is_empty() {
            info!("{trigger}: reloading certificates");
        }
        for (listener, outcome) in self.certs.reload_each() {
            report.items.push(ReloadItem {
                what: format!("tls {listener}"),
                failure: outcome.err().map(|e| ReloadFailure {
                    unreadable: e.cause.starts_with("cannot read"),
                    file: Some(e.file),
                    line: None,
                    cause: e.cause,
                }),
                revoked: 0,
            });
        }
        report
    }
}
