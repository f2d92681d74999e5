//! `vigil sub`: subscribe and print messages.
//!
//! Output never blocks the client: messages go to a writer thread through a
//! bounded queue. While stdout is blocked (a full pipe nobody reads), QoS 1/2
//! messages wait for room, so the client holds them unacknowledged and the
//! broker's flow control stops the flow; QoS 0 messages that find the queue
//! full are dropped and counted, and the count is reported at exit (always
//! with -d). The connection itself runs on the client's own driver thread, so
//! its keep alive holds however long the output stalls.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use vigil_client::{
    Backoff, Client, ClientError, Event, Message, QoS, Subscription, SubscriptionOptions,
};

use crate::cli_pub::chain;

use crate::cli_common::{init_logging, qos, ConnectArgs};

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
    /// End the run after this many seconds (as mosquitto_sub -W), counted from
    /// the connection; exits non-zero, saying how many messages came.
    #[arg(short = 'W', long = "timeout")]
    timeout: Option<u64>,
    /// Exit when the connection is lost instead of reconnecting (by default
    /// vigil sub reconnects with back-off and renews its subscriptions).
    #[arg(long = "no-reconnect")]
    no_reconnect: bool,
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

/// Messages queued for the writer thread before QoS 0 ones are dropped.
const OUTPUT_QUEUE: usize = 1024;

/// How long an interrupted `vigil sub` waits for blocked output to drain.
const DRAIN_ON_SIGNAL: Duration = Duration::from_secs(2);

pub(crate) async fn run(args: SubArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.conn.debug);
    let qos = qos(args.qos)?;
    let mut options = args.conn.options("vigil-sub")?;
    options.reconnect = (!args.no_reconnect).then(Backoff::default);
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
    let writer = Writer::spawn();
    let mut dropped_here = 0u64;
    let mut seen = 0u64;
    let mut interrupted = false;
    let mut last_error: Option<ClientError> = None;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let run_out = run_out(args.timeout);
    tokio::pin!(run_out);
    let w_ended = |seen: u64| {
        let secs = args.timeout.unwrap_or_default();
        let count = match args.count {
            Some(c) => format!(" of the {c} asked for with -C"),
            None => String::new(),
        };
        anyhow::anyhow!(
            "-W {secs}: the run ended after {secs} s, as asked, with {seen} message(s) received{count}"
        )
    };
    let result: anyhow::Result<()> = async {
        loop {
            let next = tokio::select! {
                _ = &mut shutdown => {
                    interrupted = true;
                    return Ok(());
                }
                _ = &mut run_out => return Err(w_ended(seen)),
                next = events.recv() => next,
            };
            let m = match next {
                Some(Event::Message(m)) => m,
                Some(Event::Disconnected(e)) => {
                    if args.no_reconnect || e.is_permanent_refusal() {
                        return Err(anyhow::Error::new(e).context("connection lost"));
                    }
                    eprintln!("vigil: connection lost: {}", chain(&e));
                    last_error = Some(e);
                    continue;
                }
                Some(Event::Reconnecting { attempt, delay, .. }) => {
                    eprintln!(
                        "vigil: reconnecting in {:.1} s (attempt {attempt})",
                        delay.as_secs_f64()
                    );
                    continue;
                }
                Some(Event::Connected {
                    session_present, ..
                }) => {
                    eprintln!(
                        "vigil: reconnected ({})",
                        if session_present {
                            "the broker kept the session"
                        } else {
                            "new session; subscriptions renewed"
                        }
                    );
                    continue;
                }
                Some(_) => continue,
                None => {
                    return Err(match last_error.take() {
                        Some(e) => anyhow::Error::new(e).context("connection lost"),
                        None => anyhow::anyhow!("connection closed"),
                    })
                }
            };
            if args.no_retained && m.retain {
                continue;
            }
            let mut out = render(&m, args.format.as_deref(), args.verbose);
            if !args.no_newline {
                out.push(b'\n');
            }
            if m.qos == QoS::AtMostOnce {
                match writer.tx.try_send(out) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        if dropped_here == 0 && debug {
                            eprintln!("output blocked: dropping QoS 0 messages until it drains");
                        }
                        dropped_here += 1;
                        continue;
                    }
                    Err(TrySendError::Closed(_)) => return Err(writer.failure()),
                }
            } else {
                // Waiting here holds the client's queue, then the broker's flow:
                // QoS 1/2 is never dropped.
                tokio::select! {
                    _ = &mut shutdown => {
                        interrupted = true;
                        return Ok(());
                    }
                    _ = &mut run_out => return Err(w_ended(seen)),
                    sent = writer.tx.send(out) => if sent.is_err() {
                        return Err(writer.failure());
                    },
                }
            }
            seen += 1;
            if args.count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
    }
    .await;
    let dropped_client = client.dropped_messages();
    let _ = client.disconnect().await;
    let drained = writer.finish(interrupted.then_some(DRAIN_ON_SIGNAL)).await;
    let dropped = dropped_here + dropped_client;
    if dropped > 0 || debug {
        eprintln!(
            "vigil: {dropped} QoS 0 messages dropped because output was blocked ({dropped_here} \
             beyond vigil's output queue of {OUTPUT_QUEUE}, {dropped_client} beyond the client's \
             event queue); QoS 1/2 messages were held, not dropped"
        );
    }
    result?;
    drained?;
    Ok(ExitCode::SUCCESS)
}

/// Completes when the -W run time is over (never without -W).
async fn run_out(timeout: Option<u64>) {
    match timeout {
        Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
        None => std::future::pending().await,
    }
}

/// SIGINT or SIGTERM: stop reading, report, disconnect.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The output thread and its bounded queue.
struct Writer {
    tx: mpsc::Sender<Vec<u8>>,
    error: Arc<Mutex<Option<std::io::Error>>>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Writer {
    fn spawn() -> Writer {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTPUT_QUEUE);
        let error = Arc::new(Mutex::new(None));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let err = error.clone();
        std::thread::spawn(move || {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let result = (|| -> std::io::Result<()> {
                while let Some(first) = rx.blocking_recv() {
                    out.write_all(&first)?;
                    // Write what else is queued, then flush once: a reader that
                    // keeps up sees each message at once, a flood costs fewer writes.
                    while let Ok(more) = rx.try_recv() {
                        out.write_all(&more)?;
                    }
                    out.flush()?;
                }
                Ok(())
            })();
            if let Err(e) = result {
                if let Ok(mut slot) = err.lock() {
                    *slot = Some(e);
                }
            }
            let _ = done_tx.send(());
        });
        Writer { tx, error, done }
    }

    /// Why the writer stopped early.
    fn failure(&self) -> anyhow::Error {
        match self.error.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => anyhow::Error::new(e).context("cannot write the output"),
            None => anyhow::anyhow!("the output writer stopped"),
        }
    }

    /// Closes the queue and waits for the output to be written (bounded after
    /// a signal: nobody may ever read a blocked pipe).
    async fn finish(self, bound: Option<Duration>) -> anyhow::Result<()> {
        let Writer { tx, error, done } = self;
        drop(tx);
        match bound {
            None => {
                let _ = done.await;
            }
            Some(d) => {
                if tokio::time::timeout(d, done).await.is_err() {
                    eprintln!("vigil: output still blocked; exiting without writing the rest");
                    return Ok(());
                }
            }
        }
        match error.lock().ok().and_then(|mut e| e.take()) {
            Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Some(e) => Err(anyhow::Error::new(e).context("cannot write the output")),
            None => Ok(()),
        }
    }
}

/// One message as bytes, in the `-F` format or the default.
fn render(m: &Message, format: Option<&str>, verbose: bool) -> Vec<u8> {
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
        let m = Message::new("a/b", Bytes::from_static(b"hi")).retain(true);
        assert_eq!(render(&m, None, false), b"hi");
        assert_eq!(render(&m, None, true), b"a/b hi");
        assert_eq!(
            render(&m, Some("%t|%p|%q|%r|%l|%%"), false),
            b"a/b|hi|0|1|2|%"
        );
    }
}
