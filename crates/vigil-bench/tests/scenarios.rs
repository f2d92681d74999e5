//! Each scenario, briefly, against vigil in-process; and a broker that dies mid-run.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::sync::oneshot;
use vigil_bench::{run, BenchArgs, Report};
use vigil_broker::config::BrokerConfig;
use vigil_broker::{Server, ServerOptions};

#[derive(Parser)]
#[command(disable_help_flag = true)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

async fn broker() -> (SocketAddr, oneshot::Sender<()>) {
    let mut config = BrokerConfig::default();
    config.listener.bind = "127.0.0.1".parse().unwrap();
    config.listener.port = 0;
    let server = Server::bind(ServerOptions::from_config(&config))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(server.run_until(async {
        let _ = rx.await;
    }));
    (addr, tx)
}

async fn bench(addr: SocketAddr, args: &[&str]) -> Result<Report, vigil_bench::BenchError> {
    let port = addr.port().to_string();
    let mut argv = vec!["bench", "-p", &port, "--quiet", "--json", "--duration", "1"];
    argv.extend_from_slice(args);
    run(Cli::try_parse_from(argv).unwrap().bench).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_reports_its_fields() {
    let (addr, _stop) = broker().await;
    let r = bench(addr, &["conn", "-n", "50", "-k", "30"])
        .await
        .unwrap()
        .json;
    assert_eq!(
        (
            r["scenario"].as_str(),
            r["connected"].as_u64(),
            r["failed"].as_u64(),
            r["keep_alive"].as_u64()
        ),
        (Some("conn"), Some(50), Some(0), Some(30))
    );

    let r = bench(
        addr,
        &["ping", "-n", "20", "-k", "1", "--publish-rate", "100"],
    )
    .await
    .unwrap()
    .json;
    assert_eq!(r["wrongful_disconnects"], 0);
    assert!(r["pingresp_latency"]["count"].as_u64().unwrap() >= 20);

    for (shape, extra) in [("fan-in", "4"), ("fan-out", "5"), ("pairs", "3")] {
        let r = bench(addr, &[shape, "-n", extra, "-q", "1", "--rate", "200"])
            .await
            .unwrap()
            .json;
        assert_eq!(r["lost"], 0, "{shape}: {r}");
        assert_eq!(r["duplicates"], 0, "{shape}");
        assert_eq!(r["delivered"], r["expected_deliveries"], "{shape}");
        assert!(r["delivered"].as_u64().unwrap() > 0);
        assert!(r["latency"]["p99_ms"].as_f64().is_some());
    }

    let r = bench(addr, &["expiry", "-n", "10", "-k", "1"])
        .await
        .unwrap()
        .json;
    assert_eq!(r["closed"], 10);
    assert_eq!(r["early_closes"], 0);
    assert_eq!(r["wills_delivered"], 10);
    assert!(
        r["close_lateness"]["max_ms"].as_f64().unwrap() < 500.0,
        "{r}"
    );

    let r = bench(addr, &["slow-sub", "--healthy", "5", "-k", "1"])
        .await
        .unwrap()
        .json;
    assert_eq!(r["healthy_disconnected"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_dies_mid_run_fails_the_run_without_hanging() {
    let (addr, stop) = broker().await;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let _ = stop.send(());
    });
    let port = addr.port().to_string();
    let argv = [
        "bench",
        "-p",
        &port,
        "--quiet",
        "--json",
        "--duration",
        "3",
        "fan-out",
        "-n",
        "5",
        "-q",
        "1",
    ];
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        run(Cli::try_parse_from(argv).unwrap().bench),
    )
    .await
    .expect("the run must end, not hang");
    assert!(
        result.is_err(),
        "a run whose broker died must fail: {:?}",
        result.map(|r| r.json)
    );
}
