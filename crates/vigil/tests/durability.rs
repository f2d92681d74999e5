//! Durability of the built broker: `vigil serve` on a data directory is
//! killed with SIGKILL while two publishers send QoS 1 and QoS 2 messages to a
//! persistent subscriber that is offline, then restarted on the same data
//! directory. Every message acknowledged to a publisher must reach the
//! subscriber (QoS 1 at least once, QoS 2 exactly once), in order per
//! publisher, and the retained messages must still be there.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigil_client::{Client, ClientError, ConnectOptions, Event, Message, QoS, ReasonCode};

const BIN: &str = env!("CARGO_BIN_EXE_vigil");
const PUBLISHERS: u32 = 2;
const PER_PUBLISHER: u32 = 200;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `vigil serve` on `dir`. Port 0 lets the broker choose (read back
/// from its "vigil listening" line), so tests running in parallel never race
/// for a port; a restart passes the port it had.
fn serve(dir: &Path, port: u16) -> (Child, u16) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1", "-p", &port.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        // Keep draining so the broker never blocks on a full pipe.
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("vigil listening") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("broker did not start listening");
    let bound = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (child, bound)
}

/// Publishes and waits for the outcome (PUBACK/PUBCOMP): these tests count
/// what was acknowledged one message at a time.
async fn publish(c: &Client, m: Message) -> Result<ReasonCode, ClientError> {
    c.publish(m).await?.await
}

fn options(port: u16, id: &str, clean: bool) -> ConnectOptions {
    let mut o = ConnectOptions::new("127.0.0.1", port);
    o.session.client_id = id.into();
    o.session.clean_start = clean;
    o.session.session_expiry = if clean { 0 } else { 3600 };
    o.session.keep_alive = 30;
    o.event_capacity = 4096;
    o
}

fn qos_of(seq: u32) -> QoS {
    if seq % 2 == 0 {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    }
}

/// One run: kill the broker once `kill_after` messages in total have been
/// acknowledged, plus `jitter` so the kill also lands mid-publish.
fn kill_and_recover(kill_after: u32, jitter: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port) = serve(dir.path(), 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Arc<Mutex<HashMap<u32, Vec<u32>>>> = Arc::default();
    let count = Arc::new(AtomicU32::new(0));

    rt.block_on(async {
        let (sub, _events) = Client::connect(options(port, "durable-sub", false))
            .await
            .unwrap();
        sub.subscribe("d/#", QoS::ExactlyOnce).await.unwrap();
        sub.disconnect().await.unwrap();
        let (p, _e) = Client::connect(options(port, "retainer", true))
            .await
            .unwrap();
        for i in 1..=3 {
            publish(
                &p,
                Message::new(format!("r/{i}"), format!("kept {i}"))
                    .qos(QoS::AtLeastOnce)
                    .retain(true),
            )
            .await
            .unwrap();
        }
        p.disconnect().await.unwrap();
    });

    // The killer watches the acknowledged count from its own thread.
    let killer = {
        let count = count.clone();
        let pid = broker.id();
        std::thread::spawn(move || {
            let start = Instant::now();
            while count.load(Ordering::SeqCst) < kill_after {
                if start.elapsed() > Duration::from_secs(60) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(jitter);
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        })
    };
    rt.block_on(async {
        let mut tasks = Vec::new();
        for publisher in 0..PUBLISHERS {
            let acked = acked.clone();
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                let (p, _e) = Client::connect(options(port, &format!("pub-{publisher}"), true))
                    .await
                    .unwrap();
                for seq in 0..PER_PUBLISHER {
                    let payload = format!("{publisher}:{seq}");
                    match publish(
                        &p,
                        Message::new(format!("d/{publisher}"), payload).qos(qos_of(seq)),
                    )
                    .await
                    {
                        Ok(_) => {
                            acked
                                .lock()
                                .unwrap()
                                .entry(publisher)
                                .or_default()
                                .push(seq);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    killer.join().unwrap();
    let _ = broker.wait();
    let acked = acked.lock().unwrap().clone();
    let total_acked: usize = acked.values().map(Vec::len).sum();
    assert!(
        total_acked >= kill_after as usize,
        "only {total_acked} acknowledged before the kill"
    );
    assert!(
        total_acked < (PUBLISHERS * PER_PUBLISHER) as usize,
        "the kill came after every publish; the run tested nothing"
    );

    let (mut broker, _) = serve(dir.path(), port);
    let (received, retained) = rt.block_on(async {
        let (_sub, mut events) = Client::connect(options(port, "durable-sub", false))
            .await
            .unwrap();
        let mut received: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut session_present = None;
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
            match ev {
                Event::Connected {
                    session_present: sp,
                    ..
                } => session_present = Some(sp),
                Event::Message(m) => {
                    let text = String::from_utf8_lossy(&m.payload).into_owned();
                    let (p, s) = text.split_once(':').unwrap();
                    received
                        .entry(p.parse().unwrap())
                        .or_default()
                        .push(s.parse().unwrap());
                }
                Event::Disconnected(e) => panic!("subscriber lost its connection: {e}"),
                _ => {}
            }
        }
        assert_ne!(session_present, Some(false), "the session did not survive");
        let (r, mut events) = Client::connect(options(port, "reader", true))
            .await
            .unwrap();
        r.subscribe("r/#", QoS::AtLeastOnce).await.unwrap();
        let mut retained = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            if let Event::Message(m) = ev {
                retained.push(String::from_utf8_lossy(&m.payload).into_owned());
            }
        }
        retained.sort();
        (received, retained)
    });
    let _ = broker.kill();
    let _ = broker.wait();

    assert_eq!(retained, vec!["kept 1", "kept 2", "kept 3"]);
    for (publisher, acked_seqs) in &acked {
        let got = received.get(publisher).cloned().unwrap_or_default();
        for seq in acked_seqs {
            let n = got.iter().filter(|s| *s == seq).count();
            assert!(
                n >= 1,
                "kill after {kill_after}: publisher {publisher} message {seq} was acknowledged \
                 but never delivered (received {} messages)",
                got.len()
            );
        }
        // QoS 2 exactly once, acknowledged or not.
        for seq in got.iter().filter(|s| qos_of(**s) == QoS::ExactlyOnce) {
            let n = got.iter().filter(|s| *s == seq).count();
            assert_eq!(n, 1, "QoS 2 message {publisher}:{seq} delivered {n} times");
        }
        // In order: first appearances only ever increase.
        let mut last = None;
        let mut seen = std::collections::HashSet::new();
        for seq in &got {
            if seen.insert(*seq) {
                assert!(
                    last < Some(*seq),
                    "publisher {publisher}: {seq} delivered after {last:?}"
                );
                last = Some(*seq);
            }
        }
    }
}

#[test]
fn acknowledged_messages_survive_sigkill_early() {
    kill_and_recover(3, Duration::ZERO);
}

#[test]
fn acknowledged_messages_survive_sigkill_mid_stream() {
    kill_and_recover(120, Duration::from_micros(700));
}

#[test]
fn acknowledged_messages_survive_sigkill_late() {
    kill_and_recover(300, Duration::from_micros(1500));
}

#[test]
fn a_truncated_store_stops_the_start_with_the_file_named_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port) = serve(dir.path(), 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (p, _e) = Client::connect(options(port, "w", true)).await.unwrap();
        for i in 0..200 {
            publish(
                &p,
                Message::new(format!("r/{i}"), vec![b'x'; 512])
                    .qos(QoS::AtLeastOnce)
                    .retain(true),
            )
            .await
            .unwrap();
        }
    });
    broker.kill().unwrap();
    broker.wait().unwrap();
    let file = dir.path().join("vigil.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started on a truncated store: {stderr}"
    );
    assert!(stderr.contains("vigil.redb"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The subscriber is connected and receiving QoS 2 when the broker dies; it
/// reconnects to the restarted broker, which resends what was in flight with
/// the original packet ids. Each acknowledged message arrives exactly once.
#[test]
fn qos2_in_flight_to_a_connected_subscriber_survives_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (child, port) = serve(dir.path(), 0);
    let broker = Arc::new(Mutex::new(child));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const TOTAL: u32 = 300;
    let (received, acked) = rt.block_on(async {
        let mut o = options(port, "live-sub", false);
        o.reconnect = Some(vigil_client::Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(400),
            stable_after: Duration::from_secs(60),
        });
        let (sub, mut events) = Client::connect(o).await.unwrap();
        sub.subscribe("live/#", QoS::ExactlyOnce).await.unwrap();
        let (p, _e) = Client::connect(options(port, "live-pub", true))
            .await
            .unwrap();
        let mut acked = Vec::new();
        let publisher = tokio::spawn(async move {
            for seq in 0..TOTAL {
                if publish(
                    &p,
                    Message::new("live/x", seq.to_string()).qos(QoS::ExactlyOnce),
                )
                .await
                .is_err()
                {
                    break;
                }
                acked.push(seq);
            }
            acked
        });
        let mut received = Vec::new();
        let mut restarted = false;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(3), events.recv()).await;
            match ev {
                Ok(Some(Event::Message(m))) => {
                    received.push(String::from_utf8_lossy(&m.payload).parse::<u32>().unwrap());
                    if received.len() == (TOTAL / 2) as usize {
                        // Mid-stream, with deliveries in flight: SIGKILL and restart.
                        let mut b = broker.lock().unwrap();
                        b.kill().unwrap();
                        b.wait().unwrap();
                        *b = serve(dir.path(), port).0;
                        restarted = true;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        assert!(restarted, "never reached the kill point");
        (received, publisher.await.unwrap())
    });
    let _ = broker.lock().unwrap().kill();
    for seq in &acked {
        let n = received.iter().filter(|s| *s == seq).count();
        assert_eq!(n, 1, "acknowledged QoS 2 message {seq} delivered {n} times");
    }
    for seq in &received {
        let n = received.iter().filter(|s| *s == seq).count();
        assert_eq!(n, 1, "QoS 2 message {seq} delivered {n} times");
    }
    let mut sorted = received.clone();
    sorted.sort_unstable();
    assert_eq!(received, sorted, "out of order");
}

/// Messages fanned out to several offline persistent sessions are stored once
/// per session; after SIGKILL the restarted broker (which shares one copy of
/// each among the sessions again) still delivers every one to every session,
/// in order.
#[test]
fn messages_fanned_out_to_offline_sessions_all_arrive_after_sigkill() {
    const SESSIONS: usize = 5;
    const MESSAGES: u32 = 20;
    let dir = tempfile::tempdir().unwrap();
    let (mut broker, port) = serve(dir.path(), 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for i in 0..SESSIONS {
            let (sub, _events) = Client::connect(options(port, &format!("fan-{i}"), false))
                .await
                .unwrap();
            sub.subscribe("fan/#", QoS::AtLeastOnce).await.unwrap();
            sub.disconnect().await.unwrap();
        }
        let (p, _e) = Client::connect(options(port, "fan-pub", true))
            .await
            .unwrap();
        for seq in 0..MESSAGES {
            let m = Message::new("fan/x", seq.to_string()).qos(QoS::AtLeastOnce);
            publish(&p, m).await.unwrap();
        }
    });
    broker.kill().unwrap();
    broker.wait().unwrap();

    let (mut broker, _) = serve(dir.path(), port);
    let received = rt.block_on(async {
        let mut all = Vec::new();
        for i in 0..SESSIONS {
            let (_sub, mut events) = Client::connect(options(port, &format!("fan-{i}"), false))
                .await
                .unwrap();
            let mut got = Vec::new();
            while got.len() < MESSAGES as usize {
                match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                    Ok(Some(Event::Message(m))) => {
                        got.push(String::from_utf8_lossy(&m.payload).parse::<u32>().unwrap());
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            all.push(got);
        }
        all
    });
    let _ = broker.kill();
    let _ = broker.wait();
    let expected: Vec<u32> = (0..MESSAGES).collect();
    for (i, got) in received.iter().enumerate() {
        assert_eq!(got, &expected, "session fan-{i}");
    }
}
