//! `vigil sub` and `vigil pub` as a user breaks them: a subscriber whose
//! output nobody reads under a flood, `vigil pub -l` over a link with a 1.5 s
//! round trip, a broker that refuses or drops messages, a process stopped
//! long enough for the broker to expire its keep alive.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_client::{Client, ConnectOptions, Event, Message, ProtocolVersion, QoS};
use vigil_proto::{Ack, ConnAck, Packet, ReasonCode};

const BIN: &str = env!("CARGO_BIN_EXE_vigil");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vigil serve` on a free port, its log (stderr) in a file.
fn serve() -> (Killed, u16, tempfile::NamedTempFile) {
    serve_with("")
}

/// `vigil serve` with a config file holding `config`.
fn serve_with(config: &str) -> (Killed, u16, tempfile::NamedTempFile) {
    serve_on(free_port(), config)
}

/// `vigil serve` on `port`.
fn serve_on(port: u16, config: &str) -> (Killed, u16, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut conf = tempfile::NamedTempFile::new().unwrap();
    conf.write_all(config.as_bytes()).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["--store", "memory", "--config"])
        .arg(conf.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    wait_listening(port);
    (Killed(child), port, log)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

/// Waits for a child to exit, killing it after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_all(r: &mut Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(r) = r.as_mut() {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// `child`'s stderr, line by line, read on a thread (the pipe never fills).
fn stderr_lines(child: &mut Child) -> std_mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Adds lines from `rx` to `lines` until one starts with `prefix`; panics
/// after 10 s without it.
fn wait_line(rx: &std_mpsc::Receiver<String>, prefix: &str, lines: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.iter().any(|l| l.starts_with(prefix)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("no line starting {prefix:?} on stderr; so far: {lines:#?}"),
        }
    }
}

/// All of stderr once the process has ended: `lines` and the rest of `rx`.
fn all_lines(rx: &std_mpsc::Receiver<String>, mut lines: Vec<String>) -> String {
    lines.extend(rx.iter());
    lines.join("\n")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client_options(port: u16, id: &str) -> ConnectOptions {
    ConnectOptions::builder("127.0.0.1", port)
        .client_id(id)
        .build()
}

/// The CLI reproduction of the seed failure: `vigil sub -k 1` whose stdout
/// is a pipe nobody reads for 5 × K while QoS 0 floods it and QoS 1 messages
/// are mixed in. The broker must not close it for keep alive, the QoS 0
/// messages it had to drop are counted at exit, and every QoS 1 message is
/// printed once the reader resumes.
#[test]
fn sub_with_unread_output_keeps_its_connection_under_a_flood() {
    // A session queue large enough for the whole flood: with the default of
    // 1,000 the broker itself drops a held QoS 1 message after its 10 s
    // backpressure wait while the QoS 0 flood keeps refilling the queue (a
    // broker matter, reported separately); this test is about the client.
    let (_broker, port, log) =
        serve_with("[sessions]\nmax_queued_messages = 200000\nmax_queued_bytes = 268435456\n");
    let rt = runtime();
    // A retained probe: it is printed once the subscription is in place.
    rt.block_on(async {
        let (p, _e) = Client::connect(client_options(port, "prober"))
            .await
            .unwrap();
        let probe = Message::new("flood/ready", "ready")
            .qos(QoS::AtLeastOnce)
            .retain(true);
        p.publish(probe).await.unwrap().await.unwrap();
        p.disconnect().await.unwrap();
    });
    let mut sub = Command::new(BIN)
        .args(["sub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-k", "1", "-q", "1", "-i", "slow", "-t", "flood/#"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the probe's line, then nothing more until the stall is over.
    let (probed, probe_line) = std_mpsc::channel();
    let mut stdout = BufReader::new(sub.stdout.take().unwrap());
    let prober = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = probed.send(line);
        stdout
    });
    match probe_line.recv_timeout(Duration::from_secs(10)) {
        Ok(line) => assert_eq!(line, "ready\n"),
        Err(_) => panic!("vigil sub printed no retained probe within 10 s: not subscribed"),
    }
    let stdout = prober.join().unwrap();
    let stall_started = Instant::now();
    let (publisher, q1_tokens) = rt.block_on(async {
        let (p, _e) = Client::connect(client_options(port, "flooder"))
            .await
            .unwrap();
        let mut tokens = Vec::new();
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            for _ in 0..50 {
                // QoS 0: outcome not needed.
                let _ = p.publish(Message::new("flood/q0", vec![b'x'; 100])).await;
            }
            let seq = tokens.len();
            let m = Message::new("flood/q1", format!("q1-{seq}")).qos(QoS::AtLeastOnce);
            tokens.push(p.publish(m).await.unwrap());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (p, tokens)
    });
    let q1_count = q1_tokens.len();
    assert!(
        q1_count > 50,
        "the flood sent only {q1_count} QoS 1 messages"
    );
    // Nobody reads the pipe for 5 × K in all.
    if let Some(rest) = Duration::from_secs(5).checked_sub(stall_started.elapsed()) {
        std::thread::sleep(rest);
    }
    assert!(
        sub.try_wait().unwrap().is_none(),
        "vigil sub exited during the stall: {}",
        read_all(&mut sub.stderr)
    );

    // The reader resumes: every QoS 1 message must come out.
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { return };
            if let Some(n) = line.strip_prefix("q1-") {
                if tx.send(n.parse::<usize>().unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    let mut seen = vec![false; q1_count];
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.iter().any(|s| !s) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) if n < q1_count => seen[n] = true,
            Ok(n) => panic!("unexpected q1-{n}"),
            Err(_) => panic!(
                "QoS 1 messages missing after the reader resumed (broker log: {}): {:?}",
                std::fs::read_to_string(log.path())
                    .unwrap()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("disconnected"))
                    .take(10)
                    .collect::<Vec<_>>()
                    .join("\n"),
                seen.iter()
                    .enumerate()
                    .filter(|(_, s)| !**s)
                    .map(|(i, _)| i)
                    .take(20)
                    .collect::<Vec<_>>()
            ),
        }
    }
    rt.block_on(async {
        for t in q1_tokens {
            t.await
                .expect("the broker acknowledged every QoS 1 publish");
        }
        publisher.disconnect().await.unwrap();
    });
    signal(&sub, "-INT");
    let status = wait_exit(&mut sub, Duration::from_secs(10));
    let stderr = read_all(&mut sub.stderr);
    assert!(status.success(), "vigil sub failed: {stderr}");
    let dropped: u64 = stderr
        .split_once("vigil: ")
        .and_then(|(_, rest)| rest.split_once(" QoS 0 messages dropped"))
        .map(|(n, _)| n.parse().unwrap())
        .unwrap_or_else(|| panic!("no drop report at exit: {stderr}"));
    assert!(dropped > 0, "{stderr}");
    assert!(
        stderr.contains("QoS 1/2 messages were held, not dropped"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        !log.contains("keep alive expired"),
        "the broker closed a client for keep alive:\n{log}"
    );
}

/// A proxy that delays every broker-to-client chunk by `delay`, in order.
async fn delaying_proxy(target: u16, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            });
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = sr.read(&mut buf).await {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                while let Some((due, bytes)) = rx.recv().await {
                    tokio::time::sleep_until(due).await;
                    if cw.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                let _ = cw.shutdown().await;
            });
        }
    });
    port
}

/// The second reproduction: `vigil pub -l -q 1` through a link that delays
/// the broker's answers by 1.5 s. Pipelined, 100 lines take a few round
/// trips, not 100.
#[test]
fn pub_lines_pipeline_through_a_slow_link() {
    const RTT: Duration = Duration::from_millis(1500);
    let (_broker, port, _log) = serve();
    let rt = runtime();
    let (proxy, watcher) = rt.block_on(async {
        let (w, events) = Client::connect(client_options(port, "watcher"))
            .await
            .unwrap();
        w.subscribe("seed/pub", QoS::AtLeastOnce).await.unwrap();
        (delaying_proxy(port, RTT).await, (w, events))
    });
    let start = Instant::now();
    let mut pubber = Command::new(BIN)
        .args(["pub", "-h", "127.0.0.1", "-p", &proxy.to_string()])
        .args(["-k", "5", "-q", "1", "-t", "seed/pub", "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = pubber.stdin.take().unwrap();
        for i in 0..100 {
            writeln!(stdin, "line-{i}").unwrap();
        }
    }
    let status = wait_exit(&mut pubber, Duration::from_secs(60));
    let took = start.elapsed();
    assert!(status.success(), "{}", read_all(&mut pubber.stderr));
    // Connect, one window of 100, disconnect: about 3 round trips.
    assert!(
        took < RTT * 6,
        "100 lines over a {RTT:?} round trip took {took:?}: not pipelined"
    );
    let (_w, mut events) = watcher;
    let got = rt.block_on(async {
        let mut got = Vec::new();
        while got.len() < 100 {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(Event::Message(m))) => {
                    got.push(String::from_utf8_lossy(&m.payload).into_owned())
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        got
    });
    assert_eq!(
        got,
        (0..100).map(|i| format!("line-{i}")).collect::<Vec<_>>()
    );
}

/// A minimal MQTT 5 broker for one connection: PUBACK 0x87 for the payload
/// "bad", a hang-up without DISCONNECT on the payload "drop", success otherwise.
async fn refusing_broker() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let v5 = ProtocolVersion::V5;
                loop {
                    let packet = loop {
                        match Packet::decode(&mut buf, v5, 1 << 20) {
                            Ok(Some(p)) => break p,
                            Ok(None) => {}
                            Err(_) => return,
                        }
                        if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                            return;
                        }
                    };
                    let reply = match packet {
                        Packet::Connect(_) => Packet::ConnAck(ConnAck::default()),
                        Packet::Publish(p) if &p.payload[..] == b"drop" => return,
                        Packet::Publish(p) => {
                            let mut ack = Ack::new(p.packet_id);
                            if &p.payload[..] == b"bad" {
                                ack.reason = ReasonCode::NOT_AUTHORIZED;
                            }
                            Packet::PubAck(ack)
                        }
                        Packet::PingReq => Packet::PingResp,
                        _ => return,
                    };
                    let mut out = BytesMut::new();
                    reply.encode(v5, &mut out).unwrap();
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// `vigil pub` with several messages exits non-zero and names each message
/// the broker refused or that was lost, with the reason.
#[test]
fn pub_names_the_messages_refused_or_lost() {
    let rt = runtime();
    let port = rt.block_on(refusing_broker()).to_string();
    let out = Command::new(BIN)
        .args(["pub", "-h", "127.0.0.1", "-p", &port, "-V", "5", "-q", "1"])
        .args(["-t", "t", "-m", "ok", "-m", "bad", "-m", "fine"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("vigil: 1 of 3 messages not delivered")
            && stderr.contains(
                "message 2 (-m \"bad\"): publish refused by broker: not authorized (0x87)"
            ),
        "{stderr}"
    );

    let mut child = Command::new(BIN)
        .args(["pub", "-h", "127.0.0.1", "-p", &port, "-V", "5", "-q", "1"])
        .args(["-t", "t", "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a\nb\ndrop\n")
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let stderr = read_all(&mut child.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("messages not delivered")
            && stderr.contains("line 3: ")
            && stderr.contains("the broker closed the connection without DISCONNECT")
            && !stderr.contains("line 1:")
            && !stderr.contains("line 2:"),
        "{stderr}"
    );
}

/// A `vigil sub` stopped (SIGSTOP) for longer than 1.5 × K is closed by the
/// broker (MQTT 3.1.1: no DISCONNECT); once it runs again it says what
/// probably happened instead of only "connection closed".
#[test]
fn sub_explains_a_close_after_it_was_stalled() {
    let (_broker, port, log) = serve();
    let mut sub = Command::new(BIN)
        .args(["sub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-V",
            "311",
            "-k",
            "1",
            "-i",
            "stalled",
            "-t",
            "x",
            "--no-reconnect",
            "-d",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped once connected and subscribed (-d says so after the SUBACK).
    let rx = stderr_lines(&mut sub);
    let mut lines = Vec::new();
    wait_line(&rx, "subscribed to x ", &mut lines);
    signal(&sub, "-STOP");
    let stopped = Instant::now();
    while !std::fs::read_to_string(log.path())
        .unwrap()
        .contains("keep alive expired")
    {
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "the broker never expired the stopped client"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    signal(&sub, "-CONT");
    let status = wait_exit(&mut sub, Duration::from_secs(10));
    let stderr = all_lines(&rx, lines);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("the broker closed the connection without DISCONNECT")
            && stderr.contains(
                "(keep alive 1 s): it probably expired the keep alive; was this process stalled?"
            ),
        "{stderr}"
    );
}

/// `vigil pub -l -k 1` whose stdin stays open and silent for 4 × K: the
/// client keeps its connection (no keep-alive close at the broker) and the
/// line that finally comes is delivered.
#[test]
fn pub_lines_with_a_silent_stdin_keeps_its_connection() {
    let (_broker, port, log) = serve();
    let rt = runtime();
    let (_w, mut events) = rt.block_on(async {
        let (w, events) = Client::connect(client_options(port, "watcher"))
            .await
            .unwrap();
        w.subscribe("quiet", QoS::AtLeastOnce).await.unwrap();
        (w, events)
    });
    let mut pubber = Command::new(BIN)
        .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-k", "1", "-q", "1", "-i", "quiet-pub", "-t", "quiet", "-l"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = pubber.stdin.take().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    writeln!(stdin, "at last").unwrap();
    drop(stdin);
    let status = wait_exit(&mut pubber, Duration::from_secs(20));
    assert!(status.success(), "{}", read_all(&mut pubber.stderr));
    let got = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(Event::Message(m))) => String::from_utf8_lossy(&m.payload).into_owned(),
            other => panic!("expected the message, got {other:?}"),
        }
    });
    assert_eq!(got, "at last");
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(!log.contains("keep alive expired"), "{log}");
}

/// A file above the broker's Maximum Packet Size (1 MiB by default) is
/// refused by the client with the limit named, instead of being sent and the
/// connection closed for it; at MQTT 3.1.1, where the broker announces no
/// limit, the close that follows is pinned on that packet.
#[test]
fn pub_refuses_a_message_above_the_brokers_maximum_packet_size() {
    let (_broker, port, _log) = serve();
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), vec![b'x'; 2 * 1024 * 1024]).unwrap();
    let out = Command::new(BIN)
        .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string(), "-V", "5"])
        .args(["-q", "1", "-t", "big", "-f"])
        .arg(big.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("above the broker's Maximum Packet Size of 1048576 bytes"),
        "{stderr}"
    );
    let out = Command::new(BIN)
        .args([
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-V",
            "311",
        ])
        .args(["-q", "1", "-t", "big", "-f"])
        .arg(big.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("it probably refused that packet (too large for it"),
        "{stderr}"
    );
}

/// `-d` prints each packet sent and received, as `mosquitto_pub -d` does.
#[test]
fn debug_prints_each_packet_sent_and_received() {
    let (_broker, port, _log) = serve();
    let out = Command::new(BIN)
        .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .args(["-i", "dbg", "-q", "1", "-t", "dbg/t", "-m", "hello"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for line in [
        "Client dbg sending CONNECT",
        "Client dbg received CONNACK (0)",
        "Client dbg sending PUBLISH (d0, q1, r0, m1, 'dbg/t', ... (5 bytes))",
        "Client dbg received PUBACK (m1)",
        "Client dbg sending DISCONNECT",
    ] {
        assert!(
            stderr.lines().any(|l| l == line),
            "no line {line:?} in:\n{stderr}"
        );
    }
}

/// The broker dies and comes back on the same port (memory store: the
/// session is gone): `vigil sub` says it lost the connection and is
/// reconnecting, reconnects with back-off, renews its subscription, and
/// prints a message published after the restart.
#[test]
fn sub_reconnects_across_a_broker_restart_and_renews_its_subscription() {
    let (broker, port, _log) = serve();
    let mut sub = Command::new(BIN)
        .args(["sub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-q",
            "1",
            "-i",
            "phoenix",
            "-t",
            "restart/#",
            "-C",
            "1",
            "-d",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut sub);
    let mut lines = Vec::new();
    // The broker dies once the subscription is in place, and comes back
    // once vigil sub has seen it go and is backing off.
    wait_line(&rx, "subscribed to restart/# ", &mut lines);
    drop(broker);
    wait_line(&rx, "vigil: reconnecting in ", &mut lines);
    let (_broker, _, _log2) = serve_on(port, "");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines
        .iter()
        .any(|l: &String| l.starts_with("vigil: reconnected"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("vigil sub did not reconnect; stderr so far: {lines:#?}"),
        }
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("vigil: connection lost: ")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("vigil: reconnecting in ")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"vigil: reconnected (new session; subscriptions renewed)".to_string()),
        "{lines:#?}"
    );
    // The renewed SUBSCRIBE may still be on its way: publish until it lands.
    let start = Instant::now();
    while sub.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the message published after the restart never arrived"
        );
        let out = Command::new(BIN)
            .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-q", "1", "-t", "restart/x", "-m", "after-restart"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = wait_exit(&mut sub, Duration::from_secs(5));
    assert!(status.success());
    assert_eq!(read_all(&mut sub.stdout), "after-restart\n");
}

/// `--no-reconnect` keeps the old behaviour: the first loss ends the run,
/// with its cause.
#[test]
fn sub_with_no_reconnect_exits_when_the_broker_dies() {
    let (broker, port, _log) = serve();
    let mut sub = Command::new(BIN)
        .args(["sub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["--no-reconnect", "-t", "x", "-d"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut sub);
    let mut lines = Vec::new();
    wait_line(&rx, "subscribed to x ", &mut lines);
    drop(broker);
    let status = wait_exit(&mut sub, Duration::from_secs(10));
    let stderr = all_lines(&rx, lines);
    assert!(!status.success());
    assert!(
        stderr.contains("vigil: connection lost: ") && !stderr.contains("reconnecting"),
        "{stderr}"
    );
}

/// `-W` ends the run after that many seconds, as mosquitto_sub's does, and
/// says so (not "timed out ... without a message" after messages came).
#[test]
fn w_ends_the_run_and_says_what_it_means() {
    let (_broker, port, _log) = serve();
    let mut sub = Command::new(BIN)
        .args(["sub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "w", "-W", "2", "-C", "5", "-d"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // QoS 0 published before the subscription would be lost: wait for it.
    let rx = stderr_lines(&mut sub);
    let mut lines = Vec::new();
    wait_line(&rx, "subscribed to w ", &mut lines);
    let out = Command::new(BIN)
        .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "w", "-m", "one", "-m", "two"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let status = wait_exit(&mut sub, Duration::from_secs(10));
    let stderr = all_lines(&rx, lines);
    assert!(!status.success());
    assert_eq!(read_all(&mut sub.stdout), "one\ntwo\n");
    assert!(
        stderr.contains(
            "-W 2: the run ended after 2 s, as asked, with 2 message(s) received of the 5 asked for with -C"
        ),
        "{stderr}"
    );
}

/// `-f FILE -l` publishes each line of the file, pipelined, in order.
#[test]
fn pub_file_lines_publishes_each_line() {
    let (_broker, port, _log) = serve();
    let rt = runtime();
    let (_w, mut events) = rt.block_on(async {
        let (w, events) = Client::connect(client_options(port, "watcher"))
            .await
            .unwrap();
        w.subscribe("file/lines", QoS::AtLeastOnce).await.unwrap();
        (w, events)
    });
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "first\nsecond\nthird\n").unwrap();
    let out = Command::new(BIN)
        .args(["pub", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-q", "1", "-t", "file/lines", "-l", "-f"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = rt.block_on(async {
        let mut got = Vec::new();
        while got.len() < 3 {
            match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                Ok(Some(Event::Message(m))) => {
                    got.push(String::from_utf8_lossy(&m.payload).into_owned())
                }
                Ok(Some(_)) => {}
                other => panic!("expected three messages, got {got:?} then {other:?}"),
            }
        }
        got
    });
    assert_eq!(got, ["first", "second", "third"]);
}
