//! `vigil pub`: publish one message, several `-m`, a file, or stdin (or a
//! file) line by line. Messages are pipelined: each is queued as soon as it is
//! read, up to the broker's Receive Maximum are in flight, and the outcomes
//! are collected as they come and checked at the end, so a slow link costs
//! one round trip per window instead of one per message. Reading stdin runs
//! on its own thread: a slow producer never stalls the client (whose
//! connection driver has its own thread anyway).

use std::collections::VecDeque;
use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use tokio::sync::mpsc;
use vigil_client::{Client, ClientError, Message, PublishToken};

use crate::cli_common::{init_logging, qos, ConnectArgs};
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
    /// Message payload (repeat -m to send several messages, in order).
    #[arg(short = 'm', long = "message", action = clap::ArgAction::Append)]
    message: Vec<String>,
    /// Send the contents of a file as the message (with -l: each line of it).
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

/// Lines read ahead of the publisher: the reader thread waits beyond this.
const READ_AHEAD: usize = 1024;

/// Failures listed by name before the rest are only counted.
const LISTED_FAILURES: usize = 10;

pub(crate) async fn run(args: PubArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.conn.debug);
    let qos = qos(args.qos)?;
    let props = PublishProps::parse(&args.properties)?;
    let sources = [
        !args.message.is_empty(),
        args.file.is_some() && !args.lines,
        args.lines,
        args.stdin,
        args.null,
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        bail!("give exactly one of -m (repeatable), -f, -l (with -f: the file's lines), -s or -n");
    }
    // Open the input before connecting, so a missing file says so first.
    let mut payloads = if args.lines {
        let input: Box<dyn BufRead + Send> = match &args.file {
            Some(f) => Box::new(std::io::BufReader::new(
                std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?,
            )),
            None => Box::new(std::io::BufReader::new(std::io::stdin())),
        };
        read_lines(input)
    } else {
        let (tx, rx) = mpsc::channel(args.message.len().max(1));
        if !args.message.is_empty() {
            for (i, m) in args.message.iter().enumerate() {
                let label = if args.message.len() == 1 {
                    "the message".to_string()
                } else {
                    format!("message {} (-m {m:?})", i + 1)
                };
                let _ = tx.try_send(Ok((label, Bytes::from(m.clone()))));
            }
        } else {
            let payload = if let Some(f) = &args.file {
                Bytes::from(
                    std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
                )
            } else if args.stdin {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("reading stdin")?;
                Bytes::from(buf)
            } else {
                Bytes::new()
            };
            let _ = tx.try_send(Ok(("the message".to_string(), payload)));
        }
        rx
    };
    let options = args.conn.options("vigil-pub")?;
    let (client, _events) = Client::connect(options).await.context("cannot connect")?;
    let message = |payload: Bytes| {
        Message::new(args.topic.clone(), payload)
            .qos(qos)
            .retain(args.retain)
            .properties(props.properties.clone())
    };
    let mut outcomes = Outcomes::new(args.conn.debug, &args.topic);
    while let Some(next) = payloads.recv().await {
        let (label, payload) = next?;
        match client.publish(message(payload)).await {
            Ok(token) => outcomes.push(label, token),
            Err(e) => outcomes.failed(label, e),
        }
        outcomes.collect_finished();
        if outcomes.connection_lost {
            // Nothing more can be delivered; what was read is reported lost.
            break;
        }
    }
    outcomes.wait_all().await;
    if !outcomes.connection_lost {
        let _ = client.disconnect().await;
    }
    Ok(outcomes.report())
}

/// Reads lines on their own thread (stdin may be slow or blocked) and hands
/// them over in order, labelled "line N".
fn read_lines(input: Box<dyn BufRead + Send>) -> mpsc::Receiver<anyhow::Result<(String, Bytes)>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    std::thread::spawn(move || {
        for (n, line) in input.lines().enumerate() {
            let item = line
                .map(|l| (format!("line {}", n + 1), Bytes::from(l)))
                .context("reading input");
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Outcomes of the messages published, collected in order.
struct Outcomes<'a> {
    debug: bool,
    topic: &'a str,
    in_flight: VecDeque<(String, PublishToken)>,
    sent: u64,
    failures: Vec<(String, ClientError)>,
    connection_lost: bool,
}

impl<'a> Outcomes<'a> {
    fn new(debug: bool, topic: &'a str) -> Outcomes<'a> {
        Outcomes {
            debug,
            topic,
            in_flight: VecDeque::new(),
            sent: 0,
            failures: Vec::new(),
            connection_lost: false,
        }
    }

    fn push(&mut self, label: String, token: PublishToken) {
        self.sent += 1;
        self.in_flight.push_back((label, token));
    }

    fn failed(&mut self, label: String, e: ClientError) {
        self.sent += 1;
        self.record(label, Err(e));
    }

    fn record(&mut self, label: String, outcome: Result<vigil_client::ReasonCode, ClientError>) {
        match outcome {
            Ok(reason) => {
                if self.debug {
                    eprintln!("published {label} to {} ({reason})", self.topic);
                }
            }
            Err(e) => {
                if self.debug {
                    eprintln!("{label} not delivered: {}", chain(&e));
                }
                self.connection_lost |= e.is_connection_loss();
                self.failures.push((label, e));
            }
        }
    }

    /// Takes the outcomes already known from the front, without waiting.
    fn collect_finished(&mut self) {
        while let Some((_, token)) = self.in_flight.front_mut() {
            let Some(outcome) = token.try_outcome() else {
                break;
            };
            if let Some((label, _)) = self.in_flight.pop_front() {
                self.record(label, outcome);
            }
        }
    }

    async fn wait_all(&mut self) {
        while let Some((label, token)) = self.in_flight.pop_front() {
            let outcome = token.await;
            self.record(label, outcome);
        }
    }

    /// Success, or a failure exit naming every message refused or lost.
    fn report(&self) -> ExitCode {
        if self.failures.is_empty() {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "vigil: {} of {} messages not delivered:",
            self.failures.len(),
            self.sent
        );
        for (label, e) in self.failures.iter().take(LISTED_FAILURES) {
            eprintln!("  {label}: {}", chain(e));
        }
        if self.failures.len() > LISTED_FAILURES {
            eprintln!("  and {} more", self.failures.len() - LISTED_FAILURES);
        }
        if self.connection_lost {
            eprintln!("vigil: the connection was lost, so no more input was read");
        }
        ExitCode::FAILURE
    }
}

/// An error and its sources, "a: b: c".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
