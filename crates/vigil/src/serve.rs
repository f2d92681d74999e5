//! `vigil serve`: run the broker. Flags override the config file, which
//! overrides the built-in defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use vigil_broker::config::{BrokerConfig, DurabilityMode, StoreBackend};
use vigil_broker::{open_broker, BoundListener, ListenError, Server, ServerOptions};

/// Flags of `vigil serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (every key optional).
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,
    /// TCP port to listen on [default: 1883].
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Address to bind [default: 127.0.0.1]. Any other address needs
    /// --password-file (or [auth] in the config) or --allow-anonymous.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Mosquitto-compatible password file (create one with `vigil passwd`);
    /// clients without credentials are then refused unless --allow-anonymous.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Mosquitto-compatible ACL file: what is not granted is denied.
    #[arg(long, value_name = "FILE")]
    acl_file: Option<PathBuf>,
    /// Let clients without credentials connect, even with a password file
    /// or on a non-loopback address.
    #[arg(long)]
    allow_anonymous: bool,
    /// Largest keep alive accepted, seconds.
    #[arg(long, value_name = "SECS")]
    max_keepalive: Option<u16>,
    /// Smallest keep alive accepted, seconds.
    #[arg(long, value_name = "SECS")]
    min_keepalive: Option<u16>,
    /// Refuse clients that ask for keep alive 0.
    #[arg(long)]
    deny_zero_keepalive: bool,
    /// Connections beyond this are refused.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Worker threads [default: one per core but one, at least one].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Largest packet accepted from a client, bytes.
    #[arg(long, value_name = "BYTES")]
    max_packet_size: Option<u32>,
    /// PUBLISH packets a second one client may send; over it vigil stops
    /// reading the client (TCP slows it down), nothing is dropped [default: no limit].
    #[arg(long, value_name = "N")]
    max_publish_rate: Option<u32>,
    /// PUBLISH bytes a second one client may send, enforced the same way
    /// [default: no limit].
    #[arg(long, value_name = "BYTES")]
    max_publish_bytes_rate: Option<u32>,
    /// Store backend.
    #[arg(long, value_enum)]
    store: Option<StoreArg>,
    /// Directory of the on-disk store [default: ./vigil-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// When acknowledged messages reach the disk: always (group commit
    /// before every ack) or periodic (synced every second; faster, may lose
    /// the last second on a crash).
    #[arg(long, value_enum)]
    durability: Option<DurabilityArg>,
    /// Start from a damaged store: load every readable record and delete the
    /// damaged ones (each is logged).
    #[arg(long)]
    salvage_store: bool,
    /// Seconds between two rounds of the $SYS topics; 0: none [default: 10].
    #[arg(long, value_name = "SECS")]
    sys_interval: Option<u64>,
    /// Start the admin HTTP listener (metrics, API, dashboard) with the
    /// [admin] defaults, 127.0.0.1:18083, if the config has no [admin] table.
    #[arg(long)]
    admin: bool,
    /// Address of the admin listener (implies --admin) [default: 127.0.0.1].
    #[arg(long, value_name = "ADDR")]
    admin_bind: Option<IpAddr>,
    /// Port of the admin listener (implies --admin) [default: 18083].
    #[arg(long, value_name = "PORT")]
    admin_port: Option<u16>,
    /// File whose first line is the admin bearer token (implies --admin).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// This node's id in a cluster: a positive integer no other node has
    /// (turns clustering on, as does any --cluster-* flag or [cluster]).
    #[arg(long, value_name = "N")]
    cluster_node_id: Option<u64>,
    /// Cluster address: gossip (UDP) and node-to-node links (TCP) share it
    /// [default: 127.0.0.1:7946]; port 0 picks a free one (logged).
    #[arg(long, value_name = "ADDR:PORT")]
    cluster_bind: Option<SocketAddr>,
    /// Cluster address of a node to join through (repeatable; replaces the
    /// file's seeds; may name this node).
    #[arg(long = "cluster-seed", value_name = "ADDR:PORT")]
    cluster_seeds: Vec<SocketAddr>,
    /// Raft address of client-id ownership (TCP) [default: the cluster
    /// address's IP, its port + 1]; port 0 picks a free one (logged).
    #[arg(long, value_name = "ADDR:PORT")]
    cluster_raft_bind: Option<SocketAddr>,
    /// Log format: text for people, json (one object per line) for log shippers.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people (default).
    Text,
    /// One JSON object per line.
    Json,
}

/// `--durability` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Acks wait for the group commit that holds the message (default).
    Always,
    /// Acks do not wait; commits are synced periodically.
    Periodic,
}

/// `--store` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreArg {
    /// Embedded on-disk store (default).
    Disk,
    /// In memory: nothing survives a restart.
    Memory,
}

impl ServeArgs {
    /// The effective configuration: defaults, then the file, then the flags.
    pub(crate) fn config(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = match &self.config {
            Some(path) => BrokerConfig::load(path)?,
            None => BrokerConfig::default(),
        };
        if !config.listeners.is_empty() {
            let flags: Vec<&str> = [
                (self.port.is_some(), "-p/--port"),
                (self.bind.is_some(), "--bind"),
                (self.max_connections.is_some(), "--max-connections"),
            ]
            .into_iter()
            .filter_map(|(given, flag)| given.then_some(flag))
            .collect();
            if !flags.is_empty() {
                anyhow::bail!(
                    "{} configure the single plain listener, but the config file has [[listeners]]: \
                     set bind, port and max_connections in its [[listeners]] entries instead",
                    flags.join(", ")
                );
            }
        }
        self.apply(&mut config);
        config
            .validate(std::path::Path::new("<flags>"))
            .context("the command-line flags contradict the configuration")?;
        // A listener whose client certificate is the login authenticates
        // every client itself: it needs no password file to be public.
        for entry in config
            .effective_listeners()
            .into_iter()
            .filter(|e| !e.logs_in_by_certificate())
        {
            config
                .auth
                .check_listener(entry.addr())
                .map_err(anyhow::Error::msg)?;
        }
        Ok(config)
    }

    fn apply(&self, config: &mut BrokerConfig) {
        if let Some(port) = self.port {
            config.listener.port = port;
        }
        if let Some(bind) = self.bind {
            config.listener.bind = bind;
        }
        if let Some(file) = &self.password_file {
            config.auth.password_file = Some(file.clone());
        }
        if let Some(file) = &self.acl_file {
            config.auth.acl_file = Some(file.clone());
        }
        if self.allow_anonymous {
            config.auth.allow_anonymous = Some(true);
        }
        if let Some(n) = self.max_connections {
            config.listener.max_connections = n;
        }
        if let Some(n) = self.workers {
            config.listener.workers = n;
        }
        if let Some(k) = self.max_keepalive {
            config.keepalive.max_keepalive = k;
        }
        if let Some(k) = self.min_keepalive {
            config.keepalive.min_keepalive = k;
        }
        if self.deny_zero_keepalive {
            config.keepalive.allow_zero_keepalive = false;
        }
        if let Some(size) = self.max_packet_size {
            config.limits.max_packet_size = size;
        }
        if let Some(n) = self.max_publish_rate {
            config.limits.max_publish_rate = n;
        }
        if let Some(n) = self.max_publish_bytes_rate {
            config.limits.max_publish_bytes_rate = n;
        }
        if let Some(store) = self.store {
            config.store.backend = match store {
                StoreArg::Disk => StoreBackend::Disk,
                StoreArg::Memory => StoreBackend::Memory,
            };
        }
        if let Some(dir) = &self.data_dir {
            config.store.data_dir = dir.clone();
        }
        if let Some(secs) = self.sys_interval {
            config.sys.interval = secs;
        }
        let admin_flags = self.admin
            || self.admin_bind.is_some()
            || self.admin_port.is_some()
            || self.admin_token_file.is_some();
        if admin_flags {
            let admin = config.admin.get_or_insert_with(Default::default);
            if let Some(bind) = self.admin_bind {
                admin.bind = bind;
            }
            if let Some(port) = self.admin_port {
                admin.port = port;
            }
            if let Some(file) = &self.admin_token_file {
                admin.token = None;
                admin.token_file = Some(file.clone());
            }
        }
        let cluster_flags = self.cluster_node_id.is_some()
            || self.cluster_bind.is_some()
            || !self.cluster_seeds.is_empty()
            || self.cluster_raft_bind.is_some();
        if cluster_flags {
            let cluster = config.cluster.get_or_insert_with(Default::default);
            if let Some(id) = self.cluster_node_id {
                cluster.node_id = id;
            }
            if let Some(bind) = self.cluster_bind {
                cluster.bind = bind;
            }
            if !self.cluster_seeds.is_empty() {
                cluster.seeds = self.cluster_seeds.clone();
            }
            if let Some(raft) = self.cluster_raft_bind {
                cluster.raft_bind = Some(raft);
            }
        }
        if let Some(d) = self.durability {
            config.store.durability = match d {
                DurabilityArg::Always => DurabilityMode::Always,
                DurabilityArg::Periodic => DurabilityMode::Periodic,
            };
        }
    }
}

/// Longest a stopping cluster node waits for the others to acknowledge
/// that it is leaving (a node that does not answer in time notices
/// through failure detection, as for a crash).
const LEAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the broker until SIGINT or SIGTERM.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    crate::init_logging("info", args.log_format == LogFormat::Json);
    let config = args.config()?;
    let auth = crate::serve_auth::gate(&config.auth)?;
    let options = ServerOptions::from_config(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let workers = config
        .listener
        .worker_threads(std::thread::available_parallelism().map_or(1, usize::from));
    tracing::info!(
        workers,
        "worker threads, each serving its share of the connections"
    );
    // The main runtime is the first worker; the others get threads of their own.
    let mut handles = vec![runtime.handle().clone()];
    handles.extend(
        vigil_broker::spawn_worker_runtimes(workers - 1).context("cannot start the workers")?,
    );
    runtime.block_on(async move {
        // Bind before the store is opened: a busy port must stop the start
        // before a store is created (or a large one recovered) for nothing.
        let mut listeners = Vec::new();
        for entry in config.effective_listeners() {
            listeners.push(BoundListener::bind(&entry).await.map_err(|e| match e {
                ListenError::Bind { addr, source } => bind_error(addr, source),
                other => anyhow::Error::new(other),
            })?);
        }
        let broker = open_broker(options.core, &config.store, args.salvage_store)
            .context("cannot open the store")?;
        if config.store.backend == StoreBackend::Memory {
            tracing::warn!(
                "--store memory: sessions and retained messages will not survive a restart"
            );
        }
        if let Some(auth) = &auth {
            broker.set_auth(auth.clone());
            tokio::spawn(auth.clone().run_expiry());
        }
        let server = Server::with_listeners(listeners, options, broker)
            .with_workers(handles)
            .context("cannot start the worker threads' parking lots")?;
        for l in server.listeners() {
            tracing::info!(listener = %l.name(), "vigil listening");
        }
        // Joined before serving, so the routes of recovered sessions are
        // announced and no client publishes before forwarding is in place.
        let cluster = match &config.cluster {
            Some(c) => {
                let mqtt = server.local_addr().context("no MQTT listener address")?;
                Some(
                    vigil_cluster::ClusterNode::start(
                        c,
                        &server.broker(),
                        mqtt,
                        &config.store.data_dir,
                    )
                    .context("cannot join the cluster ([cluster], --cluster-*)")?,
                )
            }
            None => None,
        };
        // One SIGHUP handler for everything it reloads: certificates and the
        // auth files (caught even with neither, or SIGHUP would end the broker).
        let reloader = vigil_broker::Reloader::new(auth.clone(), server.cert_reloader());
        tokio::spawn(crate::serve_auth::reload_on_sighup(reloader.clone()));
        crate::serve_auth::log_access(&config.auth);
        let admin = match &config.admin {
            Some(admin) => Some(start_admin(admin, server.broker(), reloader)?),
            None => None,
        };
        // Store recovered and listeners bound: ready.
        if let Some(a) = &admin {
            a.set_ready(true);
        }
        if let Some(c) = &cluster {
            c.set_ready(true);
        }
        server
            .run_until(async {
                shutdown_signal().await;
                if let Some(a) = &admin {
                    a.set_ready(false);
                }
                if let Some(c) = &cluster {
                    // Before the listeners close: the others stop forwarding
                    // here at once, and what they had queued still arrives.
                    let started = std::time::Instant::now();
                    let (acked, told) = c.leave(LEAVE_WAIT).await;
                    tracing::info!(
                        acked,
                        told,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "told the cluster this node is stopping"
                    );
                }
            })
            .await?;
        if let Some(c) = cluster {
            c.stop();
        }
        tracing::info!("stopped");
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// Starts the admin listener on a thread of its own.
fn start_admin(
    admin: &vigil_broker::config::AdminConfig,
    broker: std::sync::Arc<vigil_broker::Broker>,
    reloader: vigil_broker::Reloader,
) -> anyhow::Result<vigil_admin::AdminServer> {
    let token = admin.resolve_token().with_context(|| {
        format!(
            "cannot read the admin token file {}",
            admin
                .token_file
                .as_deref()
                .unwrap_or(std::path::Path::new(""))
                .display()
        )
    })?;
    if token.is_none() {
        tracing::warn!(address = %admin.addr(), "admin API without a token: anyone who can reach this address can use it");
    }
    let options = vigil_admin::AdminOptions {
        addr: admin.addr(),
        token,
        reloader: Some(reloader),
    };
    vigil_admin::AdminServer::start(options, broker).map_err(|e| match e {
        vigil_admin::AdminError::Bind { addr, source } => bind_error(addr, source)
            .context("the admin listener (--admin-port, [admin] port) could not start"),
        e => anyhow::Error::new(e),
    })
}

/// Why the listener could not be bound, naming the address and what to do.
fn bind_error(addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process (another broker?) is listening on this port; stop it, \
             or choose another port (-p/--port, or port in the config file)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; choose another (-p/--port, or port in the config file)"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this machine has that address; check --bind"
        }
        _ => return anyhow::Error::new(e).context(format!("cannot listen on {addr}")),
    };
    anyhow::anyhow!("cannot listen on {addr}: {e}: {hint}")
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn config_for(args: &[&str]) -> anyhow::Result<BrokerConfig> {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        Wrapper::try_parse_from(argv)?.serve.config()
    }

    #[test]
    fn no_flags_is_the_default_broker() {
        let c = config_for(&[]).unwrap();
        assert_eq!(c, BrokerConfig::default());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("vigil-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vigil.toml");
        std::fs::write(
            &file,
            "[listener]\nport = 2000\n[keepalive]\nmax_keepalive = 100\n",
        )
        .unwrap();
        let c = config_for(&[
            "-c",
            file.to_str().unwrap(),
            "-p",
            "3000",
            "--min-keepalive",
            "5",
            "--workers",
            "2",
        ])
        .unwrap();
        assert_eq!(c.listener.port, 3000);
        assert_eq!(c.listener.workers, 2);
        assert_eq!(c.keepalive.max_keepalive, 100);
        assert_eq!(c.keepalive.min_keepalive, 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listener_flags_with_a_listeners_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vigil.toml");
        std::fs::write(
            &file,
            "[[listeners]]\nport = 2000\n[[listeners]]\nport = 2001\nprotocol = \"ws\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let err = config_for(&["-c", path, "-p", "3000"]).unwrap_err();
        assert!(
            format!("{err:#}").contains("-p/--port configure the single plain listener"),
            "{err:#}"
        );
        let c = config_for(&["-c", path, "--workers", "2"]).unwrap();
        assert_eq!(c.effective_listeners().len(), 2);
    }

    #[test]
    fn a_public_bind_needs_authentication_or_explicit_anonymous_access() {
        let err = config_for(&["--bind", "0.0.0.0"]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("0.0.0.0:1883"), "{msg}");
        assert!(msg.contains("--password-file"), "{msg}");
        assert!(msg.contains("--allow-anonymous"), "{msg}");
        let c = config_for(&["--bind", "0.0.0.0", "--allow-anonymous"]).unwrap();
        assert_eq!(c.auth.allow_anonymous, Some(true));
        let c = config_for(&[
            "--bind",
            "::",
            "--password-file",
            "/etc/vigil/passwd",
            "--acl-file",
            "acl",
        ])
        .unwrap();
        assert_eq!(
            c.auth.password_file.as_deref(),
            Some(std::path::Path::new("/etc/vigil/passwd"))
        );
        assert_eq!(
            c.auth.acl_file.as_deref(),
            Some(std::path::Path::new("acl"))
        );
        assert!(!c.auth.anonymous_allowed());
        // No flag: loopback, open.
        let c = config_for(&[]).unwrap();
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:1883");
        assert!(c.auth.anonymous_allowed());
    }

    #[test]
    fn admin_flags_turn_the_listener_on_and_sys_interval_applies() {
        let c = config_for(&[]).unwrap();
        assert_eq!(c.admin, None);
        let c = config_for(&["--admin", "--sys-interval", "0"]).unwrap();
        assert_eq!(c.admin.unwrap().addr().to_string(), "127.0.0.1:18083");
        assert_eq!(c.sys.interval, 0);
        let c = config_for(&["--admin-port", "0"]).unwrap();
        assert_eq!(c.admin.unwrap().port, 0);
        let err = config_for(&["--admin-bind", "0.0.0.0"]).unwrap_err();
        assert!(format!("{err:#}").contains("admin.token"), "{err:#}");
        assert!(config_for(&["--admin-bind", "0.0.0.0", "--admin-token-file", "/t"]).is_ok());
    }

    #[test]
    fn cluster_flags_turn_the_cluster_on_and_need_a_node_id() {
        assert_eq!(config_for(&[]).unwrap().cluster, None);
        let c = config_for(&[
            "--cluster-node-id",
            "2",
            "--cluster-bind",
            "127.0.0.2:7000",
            "--cluster-seed",
            "127.0.0.1:7000",
            "--cluster-seed",
            "127.0.0.2:7000",
        ])
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.bind.to_string(), "127.0.0.2:7000");
        assert_eq!(c.seeds.len(), 2);
        let err = config_for(&["--cluster-bind", "127.0.0.1:7000"]).unwrap_err();
        assert!(format!("{err:#}").contains("cluster.node_id"), "{err:#}");
        let err =
            config_for(&["--cluster-node-id", "1", "--cluster-bind", "0.0.0.0:7000"]).unwrap_err();
        assert!(format!("{err:#}").contains("cluster.bind"), "{err:#}");
    }

    #[test]
    fn contradictory_flags_are_refused() {
        let err = config_for(&["--min-keepalive", "50", "--max-keepalive", "10"]).unwrap_err();
        assert!(format!("{err:#}").contains("min_keepalive (50)"), "{err:#}");
    }
}
