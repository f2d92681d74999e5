//! The `vigil` command: `serve` runs the broker; `pub`, `sub` and `bench` are
//! clients; `passwd` manages password files. `anyhow` lives only here, at the binary's edge.
//!
//! In the repository: `docs/configuration.md` (every `serve` setting),
//! `docs/keepalive.md` (the rules), `docs/architecture.md` (the crates), and
//! `dist/vigil.service` (a hardened systemd unit).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc rather than glibc's malloc: its size classes carry no per-block
/// header and place aligned blocks (tokio's task cells and I/O registrations
/// are 128-byte aligned) without splitting off waste, so an idle connection
/// costs ~1,840 bytes of resident memory instead of ~2,110.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at its start (it looks this symbol up).
/// Idle connections park off their tasks a second after they go quiet, and
/// the freed task cells are ~1,100 bytes per connection: by default jemalloc
/// gives such pages back only during later allocations, which an idle
/// broker does not make. A background thread returning pages unused for a
/// second brought `conn -n 10000` from ~1,300 to ~770 bytes per connection.
#[allow(unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
pub static JEMALLOC_CONF: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

mod bench;
mod cli_common;
mod cli_props;
mod cli_pub;
mod cli_sub;
mod ctl;
mod log_filter;
mod passwd;
mod serve;
mod serve_auth;

/// vigil: an MQTT 3.1/3.1.1/5.0 broker, client and tools.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (no config needed: listens on 127.0.0.1:1883).
    Serve(serve::ServeArgs),
    /// Publish messages (flags as mosquitto_pub; help with --help).
    Pub(cli_pub::PubArgs),
    /// Subscribe and print messages (flags as mosquitto_sub; help with --help).
    Sub(cli_sub::SubArgs),
    /// Load and keep-alive soak scenarios against any MQTT broker (help with --help).
    Bench(vigil_bench::BenchArgs),
    /// Manage a password file (flags as mosquitto_passwd; help with --help).
    Passwd(passwd::PasswdArgs),
    /// Ask a running broker's admin API: clients, why a client disconnected, kick, stats.
    Ctl(ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Pub(args) => client_runtime().and_then(|rt| rt.block_on(cli_pub::run(args))),
        Command::Sub(args) => client_runtime().and_then(|rt| rt.block_on(cli_sub::run(args))),
        Command::Bench(args) => bench::run(args),
        Command::Passwd(args) => passwd::run(args),
        Command::Ctl(args) => client_runtime().and_then(|rt| rt.block_on(ctl::run(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A small runtime for the client commands.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Logs go to stderr; `RUST_LOG` overrides the default filter (level
/// `default_level`, openraft's retry noise thinned: see `log_filter`). Colour
/// only on a terminal, and never with `NO_COLOR` set (no-color.org): a log
/// file or a journal must not fill with escape codes.
/// With `json`, one JSON object per line for log shippers.
fn init_logging(default_level: &str, json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let (filter, thin) = match EnvFilter::try_from_default_env() {
        Ok(user) => (user, None),
        Err(_) => (
            EnvFilter::new(log_filter::default_directives(default_level)),
            Some(log_filter::OncePerCallsite::default()),
        ),
    };
    let layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        let ansi = std::io::stderr().is_terminal() && colour_allowed(std::env::var_os("NO_COLOR"));
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(thin))
        .init();
}

/// NO_COLOR set to anything but the empty string turns colour off.
fn colour_allowed(no_color: Option<std::ffi::OsString>) -> bool {
    no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_color_set_to_anything_turns_colour_off() {
        assert!(colour_allowed(None));
        assert!(colour_allowed(Some("".into())), "empty counts as unset");
        assert!(!colour_allowed(Some("1".into())));
        assert!(!colour_allowed(Some("0".into())), "any value, even 0");
    }

    #[test]
    fn mosquitto_style_flags_parse() {
        let cli = Cli::try_parse_from([
            "vigil", "pub", "-h", "example", "-p", "1884", "-t", "a/b", "-m", "x", "-q", "1", "-V",
            "5",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Pub(_)));
        let cli =
            Cli::try_parse_from(["vigil", "sub", "-t", "a/#", "-t", "b", "-v", "-C", "3"]).unwrap();
        assert!(matches!(cli.command, Command::Sub(_)));
    }
}
