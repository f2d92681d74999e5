//! `vigil serve` with a TLS listener from a config file: the certificate is
//! replaced without a restart on SIGHUP, the next connection sees the new
//! certificate's serial, and a connection opened before keeps working.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_broker::transport::tls::CertInfo;

const BIN: &str = env!("CARGO_BIN_EXE_vigil");

struct Serve {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn wait_for(&self, what: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(what)) {
                return l.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {what:?} in {:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "serve test CA");
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

/// Writes a localhost certificate with `serial`, signed by the CA, to dir/server.{crt,key}.
fn write_server_cert(dir: &Path, ca: &(rcgen::Certificate, rcgen::KeyPair), serial: u8) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[serial]));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

async fn tls_connect(
    port: u16,
    ca: &rcgen::Certificate,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn serial(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    let leaf = &s.get_ref().1.peer_certificates().unwrap()[0];
    CertInfo::parse(leaf).unwrap().serial
}

#[tokio::test]
async fn sighup_replaces_the_certificate_for_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    write_server_cert(dir.path(), &ca, 1);
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nbind = \"127.0.0.1\"\nport = 0\n[listeners.tls]\ncert = \"{0}/server.crt\"\nkey = \"{0}/server.key\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--store", "memory", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    let serve = Serve { child, lines };
    let line = serve.wait_for("vigil listening");
    assert!(line.contains("listener=mqtt+tls 127.0.0.1:"), "{line}");
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();

    let first = tls_connect(port, &ca.0).await;
    assert_eq!(serial(&first), vec![1]);
    // An MQTT 3.1.1 connection opened before the reload.
    let mut open = first;
    open.write_all(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0])
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    open.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);

    write_server_cert(dir.path(), &ca, 2);
    let hup = Command::new("kill")
        .args(["-HUP", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    serve.wait_for("SIGHUP: reloading certificates");
    serve.wait_for("certificate reloaded; new connections use it");
    assert_eq!(serial(&tls_connect(port, &ca.0).await), vec![2]);

    open.write_all(&[0xC0, 0]).await.unwrap();
    let mut pingresp = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), open.read_exact(&mut pingresp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pingresp, [0xD0, 0]);
}
