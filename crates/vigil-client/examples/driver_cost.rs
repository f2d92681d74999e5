//! What a client's own driver thread costs: connects N idle clients to an
//! in-process vigil broker and reports the time per connect, resident memory
//! and threads per client, then QoS 1 round trips (one at a time) and
//! pipelined QoS 1 throughput through one client.
//!
//!     cargo run --release -p vigil-client --example driver_cost -- 500

use std::time::{Duration, Instant};

use vigil_broker::config::BrokerConfig;
use vigil_broker::{Server, ServerOptions};
use vigil_client::{Client, ConnectOptions, Message, QoS};

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let broker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let port = broker_rt.block_on(async {
        let mut config = BrokerConfig::default();
        config.listener.bind = "127.0.0.1".parse().expect("address");
        config.listener.port = 0;
        let server = Server::bind(ServerOptions::from_config(&config))
            .await
            .expect("bind");
        let port = server.local_addr().expect("address").port();
        tokio::spawn(server.run_until(std::future::pending()));
        port
    });
    let app = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    app.block_on(async {
        // Warm up allocator and broker before the baseline.
        let (c, _e) = Client::connect(ConnectOptions::new("127.0.0.1", port))
            .await
            .expect("connect");
        c.disconnect().await.expect("disconnect");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (rss0, threads0) = (status("VmRSS:"), status("Threads:"));
        let start = Instant::now();
        let mut clients = Vec::new();
        for i in 0..n {
            let o = ConnectOptions::builder("127.0.0.1", port)
                .client_id(format!("cost-{i}"))
                .build();
            clients.push(Client::connect(o).await.expect("connect"));
        }
        let took = start.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss1, threads1) = (status("VmRSS:"), status("Threads:"));
        println!(
            "{n} clients: connect {:.0} us each (sequential, broker in process); \
             +{} threads; resident +{:.1} KiB per client (broker side included)",
            took.as_secs_f64() * 1e6 / n as f64,
            threads1 - threads0,
            (rss1 - rss0) as f64 / n as f64,
        );
        let (c, _e) = &clients[0];
        let start = Instant::now();
        const ROUND_TRIPS: u32 = 2_000;
        for i in 0..ROUND_TRIPS {
            let m = Message::new("cost/rt", i.to_string()).qos(QoS::AtLeastOnce);
            c.publish(m).await.expect("queued").await.expect("acked");
        }
        println!(
            "QoS 1 publish -> PUBACK one at a time: {:.0} us per round trip",
            start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUND_TRIPS)
        );
        const PIPELINED: u32 = 20_000;
        let start = Instant::now();
        let mut tokens = Vec::with_capacity(PIPELINED as usize);
        for i in 0..PIPELINED {
            let m = Message::new("cost/pl", i.to_string()).qos(QoS::AtLeastOnce);
            tokens.push(c.publish(m).await.expect("queued"));
        }
        for t in tokens {
            t.await.expect("acked");
        }
        println!(
            "QoS 1 pipelined: {:.0} messages/s",
            f64::from(PIPELINED) / start.elapsed().as_secs_f64()
        );
        for (c, _) in &clients {
            let _ = c.disconnect().await;
        }
    });
}
