//! TLS listeners: certificates and keys read as PEM, a rustls server
//! configuration (ring provider) that new connections take from a slot which
//! a reload swaps, client-certificate identity, and the few certificate
//! fields the broker needs (serial, subject CN, expiry) read from the DER.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::net::TcpStream;

use crate::config::{TlsConfig, TlsIdentity, TlsMinVersion};

/// Why a certificate, key or CA file could not be used. Always names the file.
#[derive(Debug, Error)]
#[error("{file}: {cause}")]
pub struct TlsError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong with it.
    pub cause: String,
}

impl TlsError {
    fn new(file: &Path, cause: impl Into<String>) -> TlsError {
        TlsError {
            file: file.to_path_buf(),
            cause: cause.into(),
        }
    }
}

/// One listener's TLS server configuration, swapped whole by a reload: a
/// connection takes the configuration current when it arrives and keeps it.
#[derive(Debug)]
pub struct TlsSource {
    settings: TlsConfig,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times of cert, key and CA when last loaded (or tried).
    stamps: Mutex<[Option<SystemTime>; 3]>,
    /// The serving certificate's notAfter, Unix seconds.
    not_after: AtomicI64,
}

impl TlsSource {
    /// Loads the certificate, key and CA `settings` name; `alpn` is offered
    /// to clients (`mqtt`, or `http/1.1` for WebSocket listeners).
    pub fn load(settings: &TlsConfig, alpn: &[&[u8]]) -> Result<TlsSource, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamps = stamps_of(settings);
        let (config, not_after) = build(settings, &alpn)?;
        Ok(TlsSource {
            settings: settings.clone(),
            alpn,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
            not_after: AtomicI64::new(not_after),
        })
    }

    /// The configuration for a connection arriving now.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Reads the files again; on success new connections get the new
    /// certificate, on failure the old one stays (open connections are never
    /// touched either way).
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.stamps.lock() = stamps_of(&self.settings);
        let (config, not_after) = build(&self.settings, &self.alpn)?;
        *self.current.write() = Arc::new(config);
        self.not_after.store(not_after, Ordering::Relaxed);
        Ok(())
    }

    /// Reloads if a file's modification time changed since the last load
    /// (or attempt: a bad file is reported once, not every check).
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        if *self.stamps.lock() == stamps_of(&self.settings) {
            return None;
        }
        Some(self.reload())
    }

    /// Seconds until the serving certificate expires (negative: expired),
    /// for a metrics exporter.
    pub fn seconds_until_expiry(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed) - unix_now()
    }

    /// The certificate file, for logs.
    pub fn cert_file(&self) -> &Path {
        &self.settings.cert
    }
}

fn stamps_of(s: &TlsConfig) -> [Option<SystemTime>; 3] {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [
        mtime(&s.cert),
        mtime(&s.key),
        s.ca.as_deref().and_then(mtime),
    ]
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Builds a rustls configuration from the files; returns it with the
/// certificate's notAfter.
fn build(s: &TlsConfig, alpn: &[Vec<u8>]) -> Result<(ServerConfig, i64), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&s.cert)
        .map_err(|e| TlsError::new(&s.cert, pem_cause(e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::new(&s.cert, pem_cause(e)))?;
    let leaf = certs
        .first()
        .ok_or_else(|| TlsError::new(&s.cert, "no CERTIFICATE block in the file"))?;
    let info = CertInfo::parse(leaf)
        .ok_or_else(|| TlsError::new(&s.cert, "the certificate is not valid X.509 DER"))?;
    let now = unix_now();
    if info.not_after < now {
        return Err(TlsError::new(
            &s.cert,
            format!(
                "the certificate expired {} ago (notAfter {} Unix time)",
                humanize(now - info.not_after),
                info.not_after
            ),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(&s.key).map_err(|e| TlsError::new(&s.key, pem_cause(e)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match s.min_version {
        TlsMinVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsMinVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new(&s.cert, e.to_string()))?;
    let builder = match &s.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let cas =
                CertificateDer::pem_file_iter(ca).map_err(|e| TlsError::new(ca, pem_cause(e)))?;
            for cert in cas {
                let cert = cert.map_err(|e| TlsError::new(ca, pem_cause(e)))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsError::new(ca, format!("not a usable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(TlsError::new(ca, "no CERTIFICATE block in the file"));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if s.require_client_cert {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            };
            builder
                .with_client_cert_verifier(verifier.map_err(|e| TlsError::new(ca, e.to_string()))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::new(
            &s.key,
            format!("cannot be used with {}: {e}", s.cert.display()),
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok((config, info.not_after))
}

fn pem_cause(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::NoItemsFound => "no PEM block of the expected kind in the file".into(),
        E::Io(e) => format!("cannot read: {e}"),
        other => format!("bad PEM: {other:?}"),
    }
}

fn humanize(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, Error)]
pub(crate) enum HandshakeError {
    /// The first byte is not a TLS record: the client speaks something else.
    #[error("not TLS (first byte {0:#04x}{hint}): the client must connect with TLS", hint = if *.0 == 0x10 { ", an MQTT CONNECT: plain MQTT sent to a TLS port" } else { "" })]
    NotTls(u8),
    /// The handshake failed (certificate refused, no common version, ...).
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    /// The socket closed before or during the handshake.
    #[error("closed before the TLS handshake completed")]
    Closed,
}

/// A completed server-side TLS handshake with the client certificate's CN.
pub(crate) async fn accept(
    source: &TlsSource,
    tcp: TcpStream,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, Option<Box<str>>), HandshakeError> {
    // One byte is peeked so that a client speaking plain MQTT (or HTTP) to a
    // TLS port gets a log line saying so rather than rustls' record error.
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) => return Err(HandshakeError::Closed),
        Ok(_) if first[0] != 0x16 => return Err(HandshakeError::NotTls(first[0])),
        Ok(_) => {}
        Err(e) => return Err(HandshakeError::Failed(e)),
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(source.config());
    let stream = acceptor.accept(tcp).await.map_err(HandshakeError::Failed)?;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| CertInfo::parse(leaf))
        .and_then(|info| match source.settings.identity {
            TlsIdentity::Cn => info.common_name,
            TlsIdentity::San => info.alt_name,
        })
        .map(String::into_boxed_str);
    Ok((stream, identity))
}

/// How often certificate and key files are checked for a new modification time.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The fields of an X.509 certificate the broker uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number's bytes, as encoded (big-endian).
    pub serial: Vec<u8>,
    /// The subject's first common name (OID 2.5.4.3), if any.
    pub common_name: Option<String>,
    /// The first DNS, e-mail or URI subject alternative name, if any.
    pub alt_name: Option<String>,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl CertInfo {
    /// Reads serial, subject CN and notAfter from a DER certificate; None
    /// if it is not the X.509 structure RFC 5280 gives.
    pub fn parse(der: &[u8]) -> Option<CertInfo> {
        let (cert, _) = der_seq(der, 0x30)?;
        let (tbs, _) = der_seq(cert, 0x30)?;
        let mut rest = tbs;
        if rest.first() == Some(&0xA0) {
            rest = der_tlv(rest)?.2;
        }
        let (tag, serial, rest) = der_tlv(rest)?;
        if tag != 0x02 {
            return None;
        }
        let (_signature, rest) = der_seq(rest, 0x30)?;
        let (_issuer, rest) = der_seq(rest, 0x30)?;
        let (validity, rest) = der_seq(rest, 0x30)?;
        let (subject, rest) = der_seq(rest, 0x30)?;
        let (_, _not_before, after) = der_tlv(validity)?;
        let (time_tag, not_after, _) = der_tlv(after)?;
        // subjectPublicKeyInfo, then optional unique ids ([1], [2]) and the
        // extensions ([3]).
        let (_spki, mut rest) = der_seq(rest, 0x30)?;
        let mut alt_name = None;
        while let Some((tag, content, next)) = der_tlv(rest) {
            if tag == 0xA3 {
                alt_name = subject_alt_name(content);
            }
            rest = next;
        }
        Some(CertInfo {
            serial: serial.to_vec(),
            common_name: common_name(subject),
            alt_name,
            not_after: der_time(time_tag, not_after)?,
        })
    }
}

/// One tag-length-value: (tag, content, what follows).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn der_seq(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, content, rest) = der_tlv(input)?;
    (tag == want).then_some((content, rest))
}

/// The first CN in a Name (SEQUENCE OF SET OF AttributeTypeAndValue).
fn common_name(name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = name;
    while !rdns.is_empty() {
        let (set, rest) = der_seq(rdns, 0x31)?;
        rdns = rest;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, rest) = der_seq(attrs, 0x30)?;
            attrs = rest;
            let (tag, oid, value) = der_tlv(attr)?;
            if tag == 0x06 && oid == CN {
                let (_, text, _) = der_tlv(value)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
    }
    None
}

/// The first dNSName, rfc822Name or URI of the subjectAltName extension
/// (OID 2.5.29.17) in `[3] { SEQUENCE OF Extension }`.
fn subject_alt_name(explicit: &[u8]) -> Option<String> {
    const SAN: &[u8] = &[0x55, 0x1D, 0x11];
    let (mut exts, _) = der_seq(explicit, 0x30)?;
    while !exts.is_empty() {
        let (ext, rest) = der_seq(exts, 0x30)?;
        exts = rest;
        let (tag, oid, mut fields) = der_tlv(ext)?;
        if tag != 0x06 || oid != SAN {
            continue;
        }
        if fields.first() == Some(&0x01) {
            fields = der_tlv(fields)?.2; // critical
        }
        let (_, value, _) = der_tlv(fields)?; // OCTET STRING
        let (mut names, _) = der_seq(value, 0x30)?;
        while !names.is_empty() {
            let (tag, name, rest) = der_tlv(names)?;
            names = rest;
            // [1] rfc822Name, [2] dNSName, [6] uniformResourceIdentifier
            if matches!(tag, 0x81 | 0x82 | 0x86) {
                return String::from_utf8(name.to_vec()).ok();
            }
        }
    }
    None
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to Unix seconds.
fn der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if digits.len() == 12 => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        0x18 if digits.len() == 14 => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, hour, min, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day)? * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_times_convert_to_unix_seconds() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"000301000000Z"), Some(951_868_800));
        assert_eq!(der_time(0x18, b"20380119031408Z"), Some(2_147_483_648));
        assert_eq!(der_time(0x17, b"701301000000Z"), None, "month 13");
        assert_eq!(der_time(0x17, b"7001010000Z"), None, "too short");
    }

    #[test]
    fn a_generated_certificate_reads_back() {
        let mut params = rcgen::CertificateParams::new(vec!["device-42.example".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-42");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0x02, 0x03]));
        params.not_after = rcgen::date_time_ymd(2040, 6, 15);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = CertInfo::parse(cert.der()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("device-42"));
        assert_eq!(info.alt_name.as_deref(), Some("device-42.example"));
        assert_eq!(info.serial, vec![0x01, 0x02, 0x03]);
        assert_eq!(info.not_after, 2_223_331_200, "2040-06-15T00:00:00Z");
        assert!(CertInfo::parse(&cert.der()[..40]).is_none(), "truncated");
        assert!(CertInfo::parse(b"not der").is_none());
    }
}
