//! The rustls side of the API: the server certificate the cloud CA issues for the API's host
//! names (replaced in place when it nears expiry), the optional client certificate devices
//! present, and the client configuration that trusts the cloud CA (with an optional client
//! identity).

use std::sync::{Arc, RwLock};

use lichen_pki::LocalCa;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::CloudError;

/// How long the API's server certificate is valid.
pub const SERVER_CERT_DAYS: u32 = 365;
/// Renew it when fewer days than this are left (the broker's rule).
pub const RENEW_BEFORE_DAYS: u32 = 10;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn tls_err(what: &str) -> impl Fn(String) -> CloudError + '_ {
    move |m| CloudError::Tls(format!("{what}: {m}"))
}

/// Host names for the server certificate: the given ones plus localhost and loopback.
pub fn server_names(extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for n in extra {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// The API's current server certificate, swapped in place on renewal.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<(Arc<CertifiedKey>, i64)>,
}

fn certified_key(ca: &LocalCa, names: &[String]) -> Result<(CertifiedKey, i64), CloudError> {
    let issued = ca
        .issue_server(names, SERVER_CERT_DAYS)
        .map_err(|e| CloudError::Tls(format!("server certificate: {e}")))?;
    let ca_der = ca
        .cert_der()
        .map_err(|e| CloudError::Tls(format!("cloud CA: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_pkcs8_der));
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls_err("server key")(e.to_string()))?;
    Ok((
        CertifiedKey::new(
            vec![
                CertificateDer::from(issued.cert.cert_der),
                CertificateDer::from(ca_der),
            ],
            signing,
        ),
        issued.cert.expires_day,
    ))
}

impl ServerCert {
    pub fn issue(ca: &LocalCa, names: &[String]) -> Result<Arc<ServerCert>, CloudError> {
        let current = certified_key(ca, names)?;
        Ok(Arc::new(ServerCert {
            current: RwLock::new((Arc::new(current.0), current.1)),
        }))
    }

    pub fn days_left(&self) -> i64 {
        let expires = self
            .current
            .read()
            .map(|c| c.1)
            .unwrap_or_else(|p| p.into_inner().1);
        expires - lichen_sys::time::today()
    }

    /// Reissues the certificate if fewer than [`RENEW_BEFORE_DAYS`] days are left.
    pub fn renew_if_due(&self, ca: &LocalCa, names: &[String]) -> Result<bool, CloudError> {
        if self.days_left() >= i64::from(RENEW_BEFORE_DAYS) {
            return Ok(false);
        }
        let (key, expires) = certified_key(ca, names)?;
        let mut w = self.current.write().unwrap_or_else(|p| p.into_inner());
        *w = (Arc::new(key), expires);
        Ok(true)
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        Some(c.0.clone())
    }
}

/// The API's TLS configuration, HTTP/1.1. A client certificate is asked for but OPTIONAL:
/// one that is sent must chain to the cloud CA (`ca_der`) and be for client auth, and is
/// what `/device/v1` authenticates devices by; administrators send none and authenticate
/// with tokens. Whether a certificate is still ACTIVE is the store's to say, per request.
pub fn server_config(
    cert: Arc<ServerCert>,
    ca_der: &[u8],
) -> Result<rustls::ServerConfig, CloudError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| tls_err("cloud CA")(e.to_string()))?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_err("client certificate verifier")(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions")(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A client certificate chain and key (PEM) the client presents: a device's identity.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").finish_non_exhaustive()
    }
}

/// A client configuration that trusts only the CA(s) in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Result<rustls::ClientConfig, CloudError> {
    client_config_with(ca_pem, None)
}

/// As [`client_config`], presenting `identity` when given.
pub fn client_config_with(
    ca_pem: &str,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, CloudError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    let mut rest = ca_pem;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let block = &rest[start..];
        let end = block
            .find("-----END CERTIFICATE-----")
            .map(|e| e + "-----END CERTIFICATE-----".len())
            .ok_or_else(|| CloudError::Tls("CA file: unterminated PEM certificate".into()))?;
        let der = lichen_pki::cert_der_from_pem(&block[..end])
            .map_err(|e| CloudError::Tls(format!("CA file: {e}")))?;
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| CloudError::Tls(format!("CA file: {e}")))?;
        found += 1;
        rest = &block[end..];
    }
    if found == 0 {
        return Err(CloudError::Tls(
            "CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("TLS versions")(e.to_string()))?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        None => cfg.with_no_client_auth(),
        Some(id) => {
            use rustls::pki_types::pem::PemObject as _;
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CloudError::Tls(format!("client certificate: {e}")))?;
            if chain.is_empty() {
                return Err(CloudError::Tls(
                    "client certificate: no PEM certificate".into(),
                ));
            }
            // Only the kind of failure is reported, never the key's bytes.
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
                .map_err(|_| CloudError::Tls("client key: no usable PEM private key".into()))?;
            cfg.with_client_auth_cert(chain, key)
                .map_err(|e| CloudError::Tls(format!("client certificate and key: {e}")))?
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
