//! `vigil sub`: subscribe and print messages.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use vigil_client::{Client, Event, Publish, Subscription, SubscriptionOptions};

use crate::cli_common::{qos, ConnectArgs};

/// Flags of `vigil sub`.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Topic filter(s) to subscribe to (repeatable).
    #[arg(short = 't', long = "topic", required = true)]
    topics: Vec<String>,
    /// QoS of the subscriptions.
    #[arg(short = 'q', long = "qos", default_value_t = 0)]
    qos: u8,
    /// Print the topic before each payload.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count")]
    count: Option<u64>,
    /// Exit with an error if no message arrives within this many seconds.
    #[arg(short = 'W', long = "timeout")]
    timeout: Option<u64>,
    /// Do not print a newline after each message.
    #[arg(short = 'N')]
    no_newline: bool,
    /// Output format: %t topic, %p payload, %q QoS, %r retain, %l length, %% percent.
    #[arg(short = 'F', long = "format")]
    format: Option<String>,
    /// Do not print messages with the retain flag set.
    #[arg(short = 'R', long = "no-retained")]
    no_retained: bool,
}

pub(crate) async fn run(args: SubArgs) -> anyhow::Result<ExitCode> {
    let qos = qos(args.qos)?;
    let options = args.conn.options("vigil-sub")?;
    let debug = args.conn.debug;
    let (client, mut events) = Client::connect(options).await.context("cannot connect")?;
    let filters = args
        .topics
        .iter()
        .map(|t| Subscription {
            filter: t.clone(),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        })
        .collect();
    let codes = client.subscribe_many(filters).await?;
    for (t, c) in args.topics.iter().zip(&codes) {
        if c.is_error() {
            bail!("subscription to {t:?} refused: {c}");
        }
        if debug {
            eprintln!("subscribed to {t} ({c})");
        }
    }
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    loop {
        let next = match args.timeout {
            Some(secs) => {
                match tokio::time::timeout(Duration::from_secs(secs), events.recv()).await {
                    Ok(e) => e,
                    Err(_) => bail!("timed out after {secs} s without a message"),
                }
            }
            None => events.recv().await,
        };
        match next {
            Some(Event::Message(m)) => {
                if args.no_retained && m.retain {
                    continue;
                }
                let mut out = stdout.lock();
                out.write_all(&render(&m, args.format.as_deref(), args.verbose))?;
                if !args.no_newline {
                    out.write_all(b"\n")?;
                }
                out.flush()?;
                seen += 1;
                if args.count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
            Some(Event::Disconnected(e)) => bail!("{e}"),
            Some(Event::Connected { .. }) => {}
            None => bail!("connection closed"),
        }
    }
    client.disconnect().await?;
    Ok(ExitCode::SUCCESS)
}

/// One message as bytes, in the `-F` format or the default.
fn render(m: &Publish, format: Option<&str>, verbose: bool) -> Vec<u8> {
    let Some(format) = format else {
        let mut out = Vec::new();
        if verbose {
            out.extend_from_slice(m.topic.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&m.payload);
        return out;
    };
    let mut out = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next() {
            Some('t') => out.extend_from_slice(m.topic.as_bytes()),
            Some('p') => out.extend_from_slice(&m.payload),
            Some('q') => out.extend_from_slice(m.qos.as_u8().to_string().as_bytes()),
            Some('r') => out.push(if m.retain { b'1' } else { b'0' }),
            Some('l') => out.extend_from_slice(m.payload.len().to_string().as_bytes()),
            Some('%') => out.push(b'%'),
            Some(other) => {
                out.push(b'%');
                let mut b = [0; 4];
                out.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
            }
            None => out.push(b'%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn formats_like_mosquitto_sub() {
        let m = Publish {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hi"),
            retain: true,
            ..Publish::default()
        };
        assert_eq!(render(&m, None, false), b"hi");
        assert_eq!(render(&m, None, true), b"a/b hi");
        assert_eq!(
            render(&m, Some("%t|%p|%q|%r|%l|%%"), false),
            b"a/b|hi|0|1|2|%"
        );
    }
}
