//! `POST /api/v1/reload` over HTTP (the SIGHUP reload: ACL and TLS
//! certificate), its errors naming the file and line while the old files stay
//! in force, and the TLS listener's certificate expiry on `/metrics`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_admin::{AdminOptions, AdminServer};
use vigil_broker::auth::{Auth, AuthConfig};
use vigil_broker::config::{BrokerConfig, ListenerEntry, TlsConfig};
use vigil_broker::Broker;
use vigil_broker::{BoundListener, Reloader, Server, ServerOptions};

/// 2030-01-01T00:00:00Z, the test certificate's notAfter.
const NOT_AFTER_UNIX: i64 = 1_893_456_000;

async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

async fn reload(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = http(addr, "POST", "/api/v1/reload").await;
    (status, serde_json::from_str(&body).unwrap())
}

/// The value of the one sample of `/metrics` that starts with `prefix`.
async fn metric(addr: SocketAddr, prefix: &str) -> Option<f64> {
    let (status, text) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

fn write_cert(dir: &Path) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

#[tokio::test]
async fn reload_over_http_reports_what_it_read_and_keeps_the_old_files_on_error() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite sensors/#\n").unwrap();

    let mut entry = ListenerEntry::mqtt("127.0.0.1".parse().unwrap(), 0);
    entry.tls = Some(TlsConfig {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        ca: None,
        require_client_cert: false,
        use_identity_as_username: false,
        min_version: Default::default(),
        identity: Default::default(),
    });
    let options = ServerOptions::from_config(&BrokerConfig::default());
    let listener = BoundListener::bind(&entry).await.unwrap();
    let listener_name = listener.name().to_owned();
    let server = Server::with_listeners(
        vec![listener],
        options,
        Broker::new(options.core, std::time::Instant::now()),
    );
    let auth_config = AuthConfig {
        acl_file: Some(acl.clone()),
        allow_anonymous: Some(true),
        ..AuthConfig::default()
    };
    let auth = Arc::new(Auth::from_config(&auth_config).unwrap());
    server.broker().set_auth(auth.clone());
    let reloader = Reloader::new(Some(auth), server.cert_reloader());
    let admin = AdminServer::start(
        AdminOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: None,
            reloader: Some(reloader),
        },
        server.broker(),
    )
    .unwrap();
    let a = admin.local_addr();

    // The certificate's notAfter, as seconds from now, per TLS listener.
    let label = format!("vigil_tls_certificate_expiry_seconds{{listener=\"{listener_name}\"}}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expiry = metric(a, &label)
        .await
        .expect("an expiry gauge for the TLS listener");
    assert!(
        (expiry - (NOT_AFTER_UNIX - now) as f64).abs() < 5.0,
        "expiry {expiry}, expected about {}",
        NOT_AFTER_UNIX - now
    );
    // With auth in force, its failures are counted by reason.
    assert_eq!(
        metric(a, "vigil_auth_failures_total{reason=\"reload_failed\"}").await,
        Some(0.0)
    );

    // Good files: everything reloaded.
    let (status, v) = reload(a).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "reloaded");
    let what: Vec<&str> = v["reloaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["what"].as_str().unwrap())
        .collect();
    assert_eq!(what, ["auth".to_owned(), format!("tls {listener_name}")]);
    assert!(v["failed"].as_array().unwrap().is_empty());

    // An ACL line that is not a statement: 400 naming the file, line and
    // cause; the certificate, fine, is reloaded all the same.
    std::fs::write(&acl, "topic read a/#\nfrobnicate everything\n").unwrap();
    let (status, v) = reload(a).await;
    assert_eq!(status, 400, "{v}");
    let failed = &v["failed"][0];
    assert_eq!(failed["what"], "auth");
    assert_eq!(failed["file"], acl.display().to_string());
    assert_eq!(failed["line"], 2);
    assert!(
        failed["cause"].as_str().unwrap().contains(":2:"),
        "{failed}"
    );
    assert_eq!(v["reloaded"][0]["what"], format!("tls {listener_name}"));
    assert_eq!(
        metric(a, "vigil_auth_failures_total{reason=\"reload_failed\"}").await,
        Some(1.0)
    );

    // A certificate file that is not PEM: 400 naming it; the old
    // certificate stays in use (its expiry still shows).
    std::fs::write(&acl, "topic read a/#\n").unwrap();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").unwrap();
    let (status, v) = reload(a).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["failed"][0]["what"], format!("tls {listener_name}"));
    assert_eq!(
        v["failed"][0]["file"],
        dir.path().join("cert.pem").display().to_string()
    );
    assert_eq!(v["reloaded"][0]["what"], "auth");
    let still = metric(a, &label).await.unwrap();
    assert!((still - expiry).abs() < 5.0);

    // A file that cannot be read at all: 500.
    write_cert(dir.path());
    std::fs::remove_file(&acl).unwrap();
    let (status, v) = reload(a).await;
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["failed"][0]["file"], acl.display().to_string());
    assert!(v["failed"][0]["line"].is_null());

    // Only POST.
    let (status, _) = http(a, "GET", "/api/v1/reload").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn reload_without_files_says_so() {
    let broker = Broker::new(
        ServerOptions::from_config(&BrokerConfig::default()).core,
        std::time::Instant::now(),
    );
    let admin = AdminServer::start(
        AdminOptions {
            addr: "127.0.0.1:0".parse().unwrap(),
            token: None,
            reloader: None,
        },
        broker,
    )
    .unwrap();
    let (status, v) = reload(admin.local_addr()).await;
    assert_eq!(status, 200);
    assert_eq!(v["result"], "nothing to reload");
    let (_, text) = http(admin.local_addr(), "GET", "/metrics").await;
    assert!(!text.contains("vigil_tls_certificate_expiry_seconds"));
    assert!(!text.contains("vigil_auth_failures_total"));
}
