//! TLS: the broker's local CA (key 0600 + certificate under the state dir), a server
//! certificate it issues and renews before expiry, and client certificate verification
//! against the device registry (exact certificate) or trusted CAs.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::BrokerError;
use crate::broker::{DeviceRecord, read, write};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Parses the first certificate of a PEM text.
pub fn cert_der_from_pem(pem: &str) -> Result<CertificateDer<'static>, BrokerError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| BrokerError::Certificate(format!("not a PEM certificate: {e}")))?;
    if p.label != "CERTIFICATE" {
        return Err(BrokerError::Certificate(format!(
            "PEM block is {:?}, not CERTIFICATE",
            p.label
        )));
    }
    x509_parser::parse_x509_certificate(&p.contents)
        .map_err(|e| BrokerError::Certificate(format!("invalid X.509 certificate: {e}")))?;
    Ok(CertificateDer::from(p.contents))
}

/// Subject common name of a certificate, if any.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

fn valid_now(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.validity().is_valid())
        .unwrap_or(false)
}

fn today() -> i64 {
    lichen_sys::time::today()
}

fn set_validity(params: &mut CertificateParams, from_day: i64, to_day: i64) {
    let (y, m, d) = ymd(from_day);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(to_day);
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Midnight UTC of a day since the epoch, as rcgen's (year, month, day).
fn ymd(day: i64) -> (i32, u8, u8) {
    let (y, m, d) = lichen_sys::time::civil_from_days(day);
    // civil_from_days gives months 1..=12 and days 1..=31; years of certificate validity
    // fit i32. Saturate rather than panic.
    (
        i32::try_from(y).unwrap_or(i32::MAX),
        u8::try_from(m).unwrap_or(12),
        u8::try_from(d).unwrap_or(28),
    )
}

/// Keys: 0600 from creation, crash-safe (temp + fsync + rename + directory fsync).
fn write_private(path: &Path, data: &str) -> Result<(), BrokerError> {
    lichen_sys::atomic::write_atomic(path, data.as_bytes(), lichen_sys::atomic::PRIVATE)
        .map_err(|e| BrokerError::Io(e.to_string()))
}

fn write_public(path: &Path, data: &str) -> Result<(), BrokerError> {
    lichen_sys::atomic::write_atomic(path, data.as_bytes(), lichen_sys::atomic::PUBLIC)
        .map_err(|e| BrokerError::Io(e.to_string()))
}

/// The local certificate authority that issues the server certificate.
pub struct LocalCa {
    key: KeyPair,
    pub cert_pem: String,
    pub cert_path: PathBuf,
}

impl LocalCa {
    /// Loads `ca.key`/`ca.pem` from `dir`, creating them (key 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, BrokerError> {
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        let cert_err = |e: rcgen::Error| BrokerError::Certificate(format!("local CA: {e}"));
        if key_path.exists() && cert_path.exists() {
            let io = |e: std::io::Error| BrokerError::Io(format!("{}: {e}", key_path.display()));
            let key_pem = fs::read_to_string(&key_path).map_err(io)?;
            let cert_pem = fs::read_to_string(&cert_path)
                .map_err(|e| BrokerError::Io(format!("{}: {e}", cert_path.display())))?;
            let key = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
            let _ = fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600));
            return Ok(LocalCa {
                key,
                cert_pem,
                cert_path,
            });
        }
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "lichen local broker CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, today() - 1, today() + 3650);
        let cert = params.self_signed(&key).map_err(cert_err)?;
        write_private(&key_path, &key.serialize_pem())?;
        write_public(&cert_path, &cert.pem())?;
        Ok(LocalCa {
            key,
            cert_pem: cert.pem(),
            cert_path,
        })
    }

    /// Issues a server certificate for `names` valid for `days`.
    pub fn issue_server(
        &self,
        names: &[String],
        days: u32,
    ) -> Result<(CertifiedKey, i64), BrokerError> {
        let cert_err =
            |e: rcgen::Error| BrokerError::Certificate(format!("server certificate: {e}"));
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_err)?;
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "lichen broker");
        for n in names {
            params
                .subject_alt_names
                .push(match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(n.clone().try_into().map_err(cert_err)?),
                });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let expires_day = today() + i64::from(days.max(1));
        set_validity(&mut params, today() - 1, expires_day);
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        let ca_der = cert_der_from_pem(&self.cert_pem)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| BrokerError::Certificate(format!("server key: {e}")))?;
        Ok((
            CertifiedKey::new(vec![cert.der().clone(), ca_der], signing),
            expires_day,
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
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(lichen_sys::time::civil_from_days(0), (1970, 1, 1));
        assert_eq!(lichen_sys::time::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(lichen_sys::time::civil_from_days(11_016), (2000, 2, 29));
    }

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
