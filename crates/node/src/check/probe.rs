//! Network probes for `lichen check`: DNS, TCP and a TLS handshake that records the server's
//! certificate and why its chain did or did not verify against a given CA, plus reading a
//! certificate's validity. Blocking, each step bounded by a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A certificate's subject and end of validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    /// `notAfter`, seconds since the epoch.
    pub not_after_unix: i64,
    /// `notAfter` as RFC 3339.
    pub not_after: String,
    /// Whole days left (negative once expired).
    pub days_left: i64,
}

impl CertificateInfo {
    pub fn expired(&self) -> bool {
        self.not_after_unix <= now_unix()
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parses a DER certificate's subject and validity.
pub fn certificate_info(der: &[u8]) -> Result<CertificateInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let not_after_unix = cert.validity().not_after.timestamp();
    let when = UNIX_EPOCH + Duration::from_secs(not_after_unix.max(0) as u64);
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        not_after_unix,
        not_after: lichen_sys::time::format_rfc3339_millis(when),
        days_left: (not_after_unix - now_unix()).div_euclid(86_400),
    })
}

/// The first certificate of a PEM file.
pub fn pem_file_certificate(path: &Path) -> Result<CertificateInfo, String> {
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("{}: holds no PEM certificate", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    certificate_info(&first).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs `f` on its own thread and gives up after `timeout` (the thread is left to finish on
/// its own: getaddrinfo and a hung core's socket have no timeout of their own).
pub fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("lichen-check".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(timeout).ok()
}

/// Resolves `host:port`.
pub fn resolve(host_port: &str, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let target = host_port.to_string();
    match with_timeout(timeout, move || {
        target.to_socket_addrs().map(|a| a.collect())
    }) {
        None => Err(format!("no answer within {} s", timeout.as_secs())),
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs;
            if addrs.is_empty() {
                Err("no addresses".into())
            } else {
                Ok(addrs)
            }
        }
    }
}

/// Connects to the first of `addrs` that accepts.
pub fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let mut errors = Vec::new();
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// What a TLS handshake showed.
#[derive(Debug, Clone, Default)]
pub struct TlsProbe {
    /// The negotiated protocol, when the handshake completed.
    pub protocol: Option<String>,
    /// The server's end-entity certificate, when it sent one.
    pub leaf: Option<CertificateInfo>,
    /// Why the chain did not verify against the CA (expired, unknown issuer, wrong name).
    pub verify_error: Option<String>,
    /// Why the handshake failed otherwise.
    pub handshake_error: Option<String>,
}

/// Verifies like webpki does, remembering the certificate it was shown and the verdict.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    leaf: Mutex<Option<Vec<u8>>>,
    error: Mutex<Option<String>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut leaf) = self.leaf.lock() {
            *leaf = Some(end_entity.to_vec());
        }
        let verdict = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let (Err(e), Ok(mut error)) = (&verdict, self.error.lock()) {
            *error = Some(e.to_string());
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS handshake with `addr` as `server_name`, verifying the chain against the CA
/// certificate(s) in `ca_pem`. No client certificate is offered: what is checked is the
/// server's side (a server requiring one may end the connection after the handshake, which
/// does not count as a failure here). `Err` only when the probe could not be set up (CA file
/// unreadable, bad server name) or TCP failed.
pub fn probe_tls(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &Path,
    timeout: Duration,
) -> Result<TlsProbe, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca_pem).map_err(|e| format!("{}: {e}", ca_pem.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_pem.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca_pem.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: holds no certificate", ca_pem.display()));
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("{}: {e}", ca_pem.display()))?;
    let recording = Arc::new(Recording {
        inner,
        leaf: Mutex::new(None),
        error: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| format!("{server_name:?} is not a server name: {e}"))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut sock =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    let mut probe = TlsProbe::default();
    let mut failure = None;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            failure = Some(e.to_string());
            break;
        }
    }
    if failure.is_none() {
        probe.protocol = conn.protocol_version().map(|v| format!("{v:?}"));
        // Be polite: a close_notify, then let the server have its say (ignored).
        conn.send_close_notify();
        let _ = conn.write_tls(&mut sock);
        let _ = sock.flush();
        let mut scratch = [0u8; 64];
        let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
        let _ = sock.read(&mut scratch);
    }
    probe.leaf = recording
        .leaf
        .lock()
        .ok()
        .and_then(|l| l.clone())
        .and_then(|der| certificate_info(&der).ok());
    probe.verify_error = recording.error.lock().ok().and_then(|e| e.clone());
    if probe.verify_error.is_none() {
        probe.handshake_error = failure;
    }
    Ok(probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_validity_is_read() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 6, 30);
        let cert = params.self_signed(&key).unwrap();
        let info = certificate_info(cert.der()).unwrap();
        assert!(info.expired());
        assert!(info.days_left < -365, "{}", info.days_left);
        assert!(
            info.not_after.starts_with("2021-06-30T00:00:00"),
            "{}",
            info.not_after
        );
        assert!(certificate_info(b"not der").is_err());
    }
}
