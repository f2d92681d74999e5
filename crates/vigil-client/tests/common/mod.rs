//! Test support: an in-process vigil broker, a Mosquitto child process, and a
//! TCP proxy that can go silent in both directions without closing (half-open),
//! and one that delays everything the broker sends (a slow link).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use vigil_broker::config::BrokerConfig;
use vigil_broker::{Server, ServerOptions};

/// A vigil broker on 127.0.0.1:0.
pub struct VigilBroker {
    pub addr: SocketAddr,
    pub broker: Arc<vigil_broker::Broker>,
    _stop: oneshot::Sender<()>,
}

pub async fn vigil() -> VigilBroker {
    let mut config = BrokerConfig::default();
    config.listener.bind = "127.0.0.1".parse().unwrap();
    config.listener.port = 0;
    let server = Server::bind(ServerOptions::from_config(&config))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let broker = server.broker();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(server.run_until(async {
        let _ = rx.await;
    }));
    VigilBroker {
        addr,
        broker,
        _stop: tx,
    }
}

/// A Mosquitto broker on a free loopback port, killed on drop.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: std::path::PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Mosquitto; panics with a clear message if it is not installed
/// (set VIGIL_SKIP_MOSQUITTO=1 to skip these tests explicitly; returns None then).
pub async fn mosquitto() -> Option<Mosquitto> {
    if std::env::var("VIGIL_SKIP_MOSQUITTO").is_ok_and(|v| v == "1") {
        eprintln!("VIGIL_SKIP_MOSQUITTO=1: skipping a test that needs Mosquitto");
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = std::env::temp_dir().join(format!("vigil-mosq-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let mut child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start mosquitto ({e}): install it (apt-get install mosquitto) or set VIGIL_SKIP_MOSQUITTO=1"));
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(Mosquitto {
                port,
                child,
                _dir: dir,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("mosquitto did not start listening on port {port}");
}

/// A TCP proxy. While `blackhole` is set it stops forwarding in both
/// directions but keeps every socket open: a half-open link, no FIN.
pub struct Proxy {
    pub addr: SocketAddr,
    pub blackhole: Arc<AtomicBool>,
}

pub async fn proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let blackhole = Arc::new(AtomicBool::new(false));
    let bh = blackhole.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            if bh.load(Ordering::SeqCst) {
                // Accept and hold: a SYN that is answered but never served.
                tokio::spawn(async move {
                    let _held = client;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                });
                continue;
            }
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, bh.clone()));
            tokio::spawn(pump(sr, cw, bh.clone()));
        }
    });
    Proxy { addr, blackhole }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    blackhole: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if blackhole.load(Ordering::SeqCst) {
            // Swallow the bytes and keep the sockets open forever: half-open.
            loop {
                if from.read(&mut buf).await.unwrap_or(0) == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP proxy that forwards client-to-broker bytes at once and holds every
/// broker-to-client chunk for `delay` (in order): a link with a round trip of
/// `delay`, like a cellular one.
pub async fn delaying_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            });
            let (tx, mut rx) =
                tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let due = tokio::time::Instant::now() + delay;
                            if tx.send((due, buf[..n].to_vec())).is_err() {
                                return;
                            }
                        }
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
    addr
}
