//! `vigil pub`: publish one message, a file, or stdin line by line.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use vigil_client::{Client, Publish};

use crate::cli_common::{qos, ConnectArgs};
use crate::cli_props::PublishProps;

/// Flags of `vigil pub`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub(crate) struct PubArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Topic to publish to.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Message payload.
    #[arg(short = 'm', long = "message")]
    message: Option<String>,
    /// Send the contents of a file as the message.
    #[arg(short = 'f', long = "file")]
    file: Option<std::path::PathBuf>,
    /// Send each line of stdin as a separate message.
    #[arg(short = 'l', long = "stdin-line")]
    lines: bool,
    /// Read the whole of stdin as one message.
    #[arg(short = 's', long = "stdin-file")]
    stdin: bool,
    /// Send an empty (null) message.
    #[arg(short = 'n', long = "null-message")]
    null: bool,
    /// QoS.
    #[arg(short = 'q', long = "qos", default_value_t = 0)]
    qos: u8,
    /// Retain the message.
    #[arg(short = 'r', long = "retain")]
    retain: bool,
    /// MQTT 5 property: -D publish <name> <value> [value] (user-property k v,
    /// message-expiry-interval N, content-type T, response-topic T, correlation-data D,
    /// payload-format-indicator 0|1).
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = clap::ArgAction::Append, value_names = ["COMMAND", "NAME", "VALUE"])]
    properties: Vec<String>,
}

pub(crate) async fn run(args: PubArgs) -> anyhow::Result<ExitCode> {
    let qos = qos(args.qos)?;
    let props = PublishProps::parse(&args.properties)?;
    let sources = [
        args.message.is_some(),
        args.file.is_some(),
        args.lines,
        args.stdin,
        args.null,
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        bail!("give exactly one of -m, -f, -l, -s or -n");
    }
    let options = args.conn.options("vigil-pub")?;
    let (client, _events) = Client::connect(options).await.context("cannot connect")?;
    let message = |payload: Bytes| Publish {
        topic: args.topic.clone(),
        payload,
        qos,
        retain: args.retain,
        properties: props.properties.clone(),
        ..Publish::default()
    };
    if args.lines {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.context("reading stdin")?;
            client.publish_message(message(Bytes::from(line))).await?;
        }
    } else {
        let payload = if let Some(m) = &args.message {
            Bytes::from(m.clone())
        } else if let Some(f) = &args.file {
            Bytes::from(std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?)
        } else if args.stdin {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
            Bytes::from(buf)
        } else {
            Bytes::new()
        };
        let reason = client.publish_message(message(payload)).await?;
        if args.conn.debug {
            eprintln!("published to {} ({reason})", args.topic);
        }
    }
    client.disconnect().await?;
    Ok(ExitCode::SUCCESS)
}
