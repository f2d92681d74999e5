//! `vigil serve`: run the broker. Flags override the config file, which
//! overrides the built-in defaults.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use vigil_broker::config::{BrokerConfig, DurabilityMode, StoreBackend};
use vigil_broker::{open_broker, Server, ServerOptions};

/// Flags of `vigil serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (every key optional).
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,
    /// TCP port to listen on [default: 1883].
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Address to bind [default: 0.0.0.0].
    #[arg(long)]
    bind: Option<IpAddr>,
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
        self.apply(&mut config);
        config
            .validate(std::path::Path::new("<flags>"))
            .context("the command-line flags contradict the configuration")?;
        Ok(config)
    }

    fn apply(&self, config: &mut BrokerConfig) {
        if let Some(port) = self.port {
            config.listener.port = port;
        }
        if let Some(bind) = self.bind {
            config.listener.bind = bind;
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
        if let Some(store) = self.store {
            config.store.backend = match store {
                StoreArg::Disk => StoreBackend::Disk,
                StoreArg::Memory => StoreBackend::Memory,
            };
        }
        if let Some(dir) = &self.data_dir {
            config.store.data_dir = dir.clone();
        }
        if let Some(d) = self.durability {
            config.store.durability = match d {
                DurabilityArg::Always => DurabilityMode::Always,
                DurabilityArg::Periodic => DurabilityMode::Periodic,
            };
        }
    }
}

/// Runs the broker until SIGINT or SIGTERM.
pub(crate) fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    crate::init_logging("info");
    let config = args.config()?;
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
        let broker = open_broker(options.core, &config.store, args.salvage_store)
            .context("cannot open the store")?;
        if config.store.backend == StoreBackend::Memory {
            tracing::warn!(
                "--store memory: sessions and retained messages will not survive a restart"
            );
        }
        let server = Server::bind_broker(options, broker)
            .await
            .with_context(|| format!("cannot listen on {}", options.listen))?
            .with_workers(handles)
            .context("cannot start the worker threads' parking lots")?;
        tracing::info!(address = %server.local_addr()?, "vigil listening");
        tracing::warn!("anonymous access is allowed: authentication is not configured");
        server.run_until(shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(std::process::ExitCode::SUCCESS)
    })
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
    fn contradictory_flags_are_refused() {
        let err = config_for(&["--min-keepalive", "50", "--max-keepalive", "10"]).unwrap_err();
        assert!(format!("{err:#}").contains("min_keepalive (50)"), "{err:#}");
    }
}
