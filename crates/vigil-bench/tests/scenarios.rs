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

/// `--broker-pid` figures are in the summary a person reads, not only in the
/// JSON. The broker runs in this test's process, so its pid is ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_cpu_and_rss_appear_in_the_human_summary() {
    let (addr, _stop) = broker().await;
    let pid = std::process::id().to_string();
    let r = bench(addr, &["--broker-pid", &pid, "conn", "-n", "20"])
        .await
        .unwrap();
    assert!(r.human.contains("broker: CPU "), "{}", r.human);
    assert!(r.human.contains("% of one core"), "{}", r.human);
    assert!(r.human.contains("MiB"), "{}", r.human);
    assert!(
        r.json["broker_usage"]["cpu_secs"].as_f64().is_some(),
        "{}",
        r.json
    );

    let fan_out = ["fan-out", "-n", "3", "-q", "1", "--rate", "200"];
    let r = bench(addr, &[&["--broker-pid", &pid][..], &fan_out].concat())
        .await
        .unwrap();
    assert!(r.human.contains("broker: CPU "), "{}", r.human);
    assert!(r.human.contains("per delivered message"), "{}", r.human);

    let r = bench(addr, &["conn", "-n", "5"]).await.unwrap();
    assert!(
        !r.human.contains("broker:"),
        "no pid, no figures: {}",
        r.human
    );
}
