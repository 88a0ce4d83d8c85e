//! TLS: the rustls side of the broker's local CA (`lichen-pki`: key 0600 + certificate under
//! the state dir), the server certificate it issues and renews before expiry, and client
//! certificate verification against the device registry (exact certificate) or trusted CAs.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::BrokerError;
use crate::broker::{DeviceRecord, read, write};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    lichen_pki::fingerprint(der)
}

fn pki_err(e: lichen_pki::PkiError) -> BrokerError {
    match e {
        lichen_pki::PkiError::Io(e) => BrokerError::Io(e.to_string()),
        e => BrokerError::Certificate(e.to_string()),
    }
}

/// Parses the first certificate of a PEM text.
pub fn cert_der_from_pem(pem: &str) -> Result<CertificateDer<'static>, BrokerError> {
    lichen_pki::cert_der_from_pem(pem)
        .map(CertificateDer::from)
        .map_err(pki_err)
}

/// Refuses certificates that must not be used by a client device (X.509 v1).
pub fn check_client_cert(der: &[u8]) -> Result<(), BrokerError> {
    lichen_pki::check_client_cert(der)
        .map(|_| ())
        .map_err(pki_err)
}

/// Subject common name of a certificate, if any.
pub fn common_name(der: &[u8]) -> Option<String> {
    lichen_pki::common_name(der)
}

fn valid_now(der: &[u8]) -> bool {
    lichen_pki::valid_now(der)
}

fn today() -> i64 {
    lichen_sys::time::today()
}

/// The local certificate authority (`lichen_pki::LocalCa`) that issues the server
/// certificate, with its output turned into rustls types.
pub struct LocalCa {
    ca: Arc<lichen_pki::LocalCa>,
    pub cert_pem: String,
    pub cert_path: PathBuf,
}

impl LocalCa {
    /// Loads `ca.key`/`ca.pem` from `dir`, creating them (key 0600, crash-safely) on first use.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, BrokerError> {
        let ca = lichen_pki::LocalCa::load_or_create(dir).map_err(pki_err)?;
        Ok(LocalCa::from_shared(Arc::new(ca)))
    }

    /// Uses a CA that someone else owns (an embedder's, see `Hooks::ca`).
    pub fn from_shared(ca: Arc<lichen_pki::LocalCa>) -> LocalCa {
        LocalCa {
            cert_pem: ca.cert_pem.clone(),
            cert_path: ca.cert_path.clone(),
            ca,
        }
    }

    /// Issues a server certificate for `names` valid for `days`.
    pub fn issue_server(
        &self,
        names: &[String],
        days: u32,
    ) -> Result<(CertifiedKey, i64), BrokerError> {
        let issued = self.ca.issue_server(names, days).map_err(pki_err)?;
        let ca_der = cert_der_from_pem(&self.cert_pem)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_pkcs8_der));
        let signing = provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| BrokerError::Certificate(format!("server key: {e}")))?;
        Ok((
            CertifiedKey::new(
                vec![CertificateDer::from(issued.cert.cert_der), ca_der],
                signing,
            ),
            issued.cert.expires_day,
        ))
    }
}

/// Serves the current server certificate; replaced in place on renewal.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<(Arc<CertifiedKey>, i64)>,
}

impl ServerCert {
    pub fn new(key: CertifiedKey, expires_day: i64) -> Arc<ServerCert> {
        Arc::new(ServerCert {
            current: RwLock::new((Arc::new(key), expires_day)),
        })
    }

    /// Days until the current certificate expires.
    pub fn days_left(&self) -> i64 {
        read(&self.current).1 - today()
    }

    pub fn replace(&self, key: CertifiedKey, expires_day: i64) {
        *write(&self.current) = (Arc::new(key), expires_day);
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(read(&self.current).0.clone())
    }
}

/// Accepts a client certificate that is registered (exact certificate, by fingerprint) or
/// that chains to a trusted CA. Anything else fails the handshake.
#[derive(Debug)]
pub struct DeviceVerifier {
    pub devices: Arc<RwLock<HashMap<String, DeviceRecord>>>,
    trusted: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl DeviceVerifier {
    pub fn new(
        devices: Arc<RwLock<HashMap<String, DeviceRecord>>>,
        trusted_ca_pems: &[String],
    ) -> Result<DeviceVerifier, BrokerError> {
        let provider = provider();
        let trusted = if trusted_ca_pems.is_empty() {
            None
        } else {
            let mut roots = RootCertStore::empty();
            for pem in trusted_ca_pems {
                roots
                    .add(cert_der_from_pem(pem)?)
                    .map_err(|e| BrokerError::Certificate(format!("trusted CA: {e}")))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| BrokerError::Certificate(format!("trusted CAs: {e}")))?;
            Some(v)
        };
        Ok(DeviceVerifier {
            devices,
            trusted,
            provider,
        })
    }
}

impl ClientCertVerifier for DeviceVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if read(&self.devices).contains_key(&fp) {
            if !valid_now(end_entity) {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired,
                ));
            }
            return Ok(ClientCertVerified::assertion());
        }
        match &self.trusted {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => {
                tracing::info!(fingerprint = %fp, "client certificate is not registered");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Builds the rustls server configuration: mandatory client certificates.
pub fn server_config(
    cert: Arc<ServerCert>,
    verifier: Arc<DeviceVerifier>,
) -> Result<rustls::ServerConfig, BrokerError> {
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Certificate(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    Ok(cfg)
}

/// Host names for the server certificate.
pub fn server_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_string();
        if !h.is_empty() && !names.contains(&h) {
            names.push(h);
        }
    }
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn ca_issues_server_cert_and_persists_key_0600() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (ck, exp) = ca.issue_server(&server_names(&[]), 30).unwrap();
        assert_eq!(ck.cert.len(), 2);
        assert_eq!(exp, today() + 30);
        let again = LocalCa::load_or_create(dir.path()).unwrap();
        assert_eq!(again.cert_pem, ca.cert_pem);
    }
}
