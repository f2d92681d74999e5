//! MQTT over TLS (cargo feature `tls`): rustls with the ring provider.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::transport::{AsyncStream, ConnectFuture, Connector};

/// Opens TLS connections to `host:port`, verifying the broker's certificate
/// against the configuration's roots and `host`.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    host: String,
    port: u16,
    config: Arc<rustls::ClientConfig>,
}

impl TlsConnector {
    /// A connector with a rustls configuration of the caller's (client
    /// certificates, roots, versions).
    pub fn new(host: String, port: u16, config: Arc<rustls::ClientConfig>) -> TlsConnector {
        TlsConnector { host, port, config }
    }

    /// A connector trusting the CA certificates in a PEM file (what
    /// `mosquitto_sub --cafile` does), offering ALPN `mqtt`.
    pub fn with_ca_file(host: String, port: u16, cafile: &Path) -> io::Result<TlsConnector> {
        let bad = |e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", cafile.display()),
            )
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(cafile).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"mqtt".to_vec()];
        Ok(TlsConnector::new(host, port, Arc::new(config)))
    }

    /// The same connector offering `alpn` instead.
    pub(crate) fn with_alpn(mut self, alpn: Vec<Vec<u8>>) -> TlsConnector {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn;
        self.config = Arc::new(config);
        self
    }

    /// The TLS stream, for connectors that layer on it (WebSocket over TLS).
    pub(crate) async fn open(&self) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }
}

impl Connector for TlsConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move { Ok(Box::new(self.open().await?) as Box<dyn AsyncStream>) })
    }
}
