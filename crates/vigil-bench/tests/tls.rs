//! `vigil bench --tls --cafile` and `--ws` against an in-process vigil with
//! TLS, WSS and WebSocket listeners.

use clap::Parser;
use tokio::sync::oneshot;
use vigil_bench::{run, BenchArgs};
use vigil_broker::config::{BrokerConfig, ListenerEntry, ListenerProtocol, TlsConfig};
use vigil_broker::Broker;
use vigil_broker::{BoundListener, Server, ServerOptions};

#[derive(Parser)]
#[command(disable_help_flag = true)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_and_fan_in_run_over_tls_wss_and_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.crt"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();

    let tls = TlsConfig {
        cert: path("server.crt"),
        key: path("server.key"),
        ca: None,
        require_client_cert: false,
        min_version: Default::default(),
        identity: Default::default(),
        use_identity_as_username: false,
    };
    let mut listeners = Vec::new();
    for (protocol, tls) in [
        (ListenerProtocol::Mqtt, Some(tls.clone())),
        (ListenerProtocol::Ws, Some(tls)),
        (ListenerProtocol::Ws, None),
    ] {
        let mut entry = ListenerEntry::mqtt("127.0.0.1".parse().unwrap(), 0);
        entry.protocol = protocol;
        entry.tls = tls;
        listeners.push(BoundListener::bind(&entry).await.unwrap());
    }
    let ports: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port().to_string())
        .collect();
    let port = ports[0].clone();
    let options = ServerOptions::from_config(&BrokerConfig::default());
    let server = Server::with_listeners(
        listeners,
        options,
        Broker::new(options.core, std::time::Instant::now()),
    );
    let (_stop, rx) = oneshot::channel::<()>();
    tokio::spawn(server.run_until(async {
        let _ = rx.await;
    }));

    let cafile = path("ca.pem");
    let common = [
        "bench",
        "-h",
        "localhost",
        "-p",
        &port,
        "--quiet",
        "--json",
        "--duration",
        "1",
        "--tls",
        "--cafile",
        cafile.to_str().unwrap(),
    ];
    let args = |extra: &[&str]| {
        let mut argv = common.to_vec();
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().bench
    };
    let r = run(args(&["conn", "-n", "20", "-k", "30"]))
        .await
        .unwrap()
        .json;
    assert_eq!(
        (r["connected"].as_u64(), r["failed"].as_u64()),
        (Some(20), Some(0)),
        "{r}"
    );
    let r = run(args(&["fan-in", "-n", "3", "-q", "1", "--rate", "200"]))
        .await
        .unwrap()
        .json;
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["delivered"], r["expected_deliveries"], "{r}");
    assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
    // WSS (--tls --ws) and plain WebSocket (--ws).
    for (port, tls) in [(&ports[1], true), (&ports[2], false)] {
        let mut argv = vec![
            "bench",
            "-h",
            "localhost",
            "-p",
            port,
            "--quiet",
            "--json",
            "--ws",
        ];
        argv.extend(["--duration", "1"]);
        if tls {
            argv.extend(["--tls", "--cafile", cafile.to_str().unwrap()]);
        }
        let fan_in = argv
            .iter()
            .copied()
            .chain(["fan-in", "-n", "2", "-q", "1", "--rate", "200"]);
        let r = run(Cli::try_parse_from(fan_in).unwrap().bench)
            .await
            .unwrap()
            .json;
        assert_eq!(r["lost"], 0, "ws tls={tls}: {r}");
        assert!(r["delivered"].as_u64().unwrap() > 0, "ws tls={tls}: {r}");
        let conn = argv.iter().copied().chain(["conn", "-n", "10", "-k", "30"]);
        let r = run(Cli::try_parse_from(conn).unwrap().bench)
            .await
            .unwrap()
            .json;
        assert_eq!(r["connected"].as_u64(), Some(10), "ws tls={tls}: {r}");
    }
    // A scenario that moves connections between runtimes says it cannot.
    let err = run(args(&["ping", "-n", "2"])).await.unwrap_err();
    assert!(
        err.to_string().contains("--tls and --ws run the conn"),
        "{err}"
    );
}
