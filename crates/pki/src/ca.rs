//! The local certificate authority: its key and certificate under a directory, server
//! certificates for the broker, client certificates from CSRs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use lichen_sys::atomic::{PRIVATE, PUBLIC, write_atomic};
use lichen_sys::time::{civil_from_days, today};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::PkiError;

/// The common name of the CA the broker creates.
const DEFAULT_CA_NAME: &str = "lichen local broker CA";
/// How long the CA itself is valid.
const CA_VALIDITY_DAYS: i64 = 3650;

/// A certificate authority whose key lives in `<dir>/ca.key` (0600) and certificate in
/// `<dir>/ca.pem`.
pub struct LocalCa {
    key: KeyPair,
    pub cert_pem: String,
    pub cert_path: PathBuf,
}

/// A certificate the CA issued, and the day (since the epoch) it expires.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    pub expires_day: i64,
}

/// A server certificate with its private key (PKCS#8 DER), for a TLS listener.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    pub cert: IssuedCert,
    pub key_pkcs8_der: Vec<u8>,
}

impl ServerCertificate {
    /// Days until it expires (negative once expired).
    pub fn days_left(&self) -> i64 {
        self.cert.expires_day - today()
    }

    /// Whether it should be replaced: fewer than `renew_before_days` days left.
    pub fn needs_renewal(&self, renew_before_days: u32) -> bool {
        self.days_left() < i64::from(renew_before_days)
    }
}

fn cert_err(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |e| PkiError::Certificate(format!("{what}: {e}"))
}

/// Validity from yesterday (clock skew between device and peer) to `to_day`.
fn set_validity(params: &mut CertificateParams, from_day: i64, to_day: i64) {
    let ymd = |day: i64| {
        let (y, m, d) = civil_from_days(day);
        // civil_from_days yields months 1..=12 and days 1..=31; saturate rather than panic.
        rcgen::date_time_ymd(
            i32::try_from(y).unwrap_or(i32::MAX),
            u8::try_from(m).unwrap_or(12),
            u8::try_from(d).unwrap_or(28),
        )
    };
    params.not_before = ymd(from_day);
    params.not_after = ymd(to_day);
}

/// A random positive 127-bit serial, so that reissued certificates never share one.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path)
        .map_err(|e| lichen_sys::SysError::new(format!("reading {}", path.display()), e).into())
}

impl LocalCa {
    /// Loads `ca.key`/`ca.pem` from `dir`, creating them (key 0600, crash-safely) on first use.
    pub fn load_or_create(dir: &Path) -> Result<LocalCa, PkiError> {
        Self::load_or_create_named(dir, DEFAULT_CA_NAME)
    }

    /// As [`LocalCa::load_or_create`], with the common name a new CA gets.
    pub fn load_or_create_named(dir: &Path, common_name: &str) -> Result<LocalCa, PkiError> {
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        if key_path.exists() && cert_path.exists() {
            let key = KeyPair::from_pem(&read(&key_path)?).map_err(cert_err("local CA key"))?;
            let cert_pem = read(&cert_path)?;
            // An older version may have left it wider.
            let _ = fs::set_permissions(&key_path, fs::Permissions::from_mode(PRIVATE));
            return Ok(LocalCa {
                key,
                cert_pem,
                cert_path,
            });
        }
        let key = KeyPair::generate().map_err(cert_err("local CA"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        set_validity(&mut params, today() - 1, today() + CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key).map_err(cert_err("local CA"))?;
        // The key first: a crash between the two leaves no certificate, so the next start
        // creates both again instead of pairing a certificate with a missing key.
        write_atomic(&key_path, key.serialize_pem().as_bytes(), PRIVATE)?;
        write_atomic(&cert_path, cert.pem().as_bytes(), PUBLIC)?;
        Ok(LocalCa {
            key,
            cert_pem: cert.pem(),
            cert_path,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, PkiError> {
        crate::cert_der_from_pem(&self.cert_pem)
    }

    fn issuer(&self, what: &'static str) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_pem(&self.cert_pem, &self.key).map_err(cert_err(what))
    }

    /// Issues a server certificate (and a fresh key) for `names` (DNS names or IP
    /// addresses), valid for `days` (at least 1).
    pub fn issue_server(&self, names: &[String], days: u32) -> Result<ServerCertificate, PkiError> {
        let err = cert_err("server certificate");
        let issuer = self.issuer("server certificate")?;
        let key = KeyPair::generate().map_err(&err)?;
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
                    Err(_) => SanType::DnsName(n.clone().try_into().map_err(&err)?),
                });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let expires_day = today() + i64::from(days.max(1));
        set_validity(&mut params, today() - 1, expires_day);
        let cert = params.signed_by(&key, &issuer).map_err(&err)?;
        Ok(ServerCertificate {
            cert: IssuedCert {
                cert_der: cert.der().to_vec(),
                cert_pem: cert.pem(),
                serial: hex::encode(serial.to_bytes()),
                expires_day,
            },
            key_pkcs8_der: key.serialize_der(),
        })
    }

    /// Issues a client certificate for the key and subject of a CSR (PEM), valid for
    /// `validity_days` (at least 1). The CSR's signature is checked; whatever it asks for
    /// beyond its subject and alternative names (CA rights, key usages) is ignored: the
    /// result is always an end-entity certificate for TLS client authentication.
    pub fn issue_from_csr(
        &self,
        csr_pem: &str,
        validity_days: u32,
    ) -> Result<IssuedCert, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Csr(e.to_string()))?;
        let params = &mut csr.params;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let expires_day = today() + i64::from(validity_days.max(1));
        set_validity(params, today() - 1, expires_day);
        let issuer = self.issuer("client certificate")?;
        let cert = csr
            .signed_by(&issuer)
            .map_err(cert_err("client certificate"))?;
        Ok(IssuedCert {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            serial: hex::encode(serial.to_bytes()),
            expires_day,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    #[test]
    fn the_ca_key_is_0600_and_the_ca_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = LocalCa::load_or_create(dir.path()).unwrap();
        assert_eq!(again.cert_pem, ca.cert_pem);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");
    }

    #[test]
    fn server_certificates_expire_when_asked_and_renew_with_new_serials() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = ca.issue_server(&names, 30).unwrap();
        assert_eq!(first.days_left(), 30);
        assert!(!first.needs_renewal(7));
        assert!(first.needs_renewal(31));
        let second = ca.issue_server(&names, 30).unwrap();
        assert_ne!(first.cert.serial, second.cert.serial);
        assert_ne!(first.key_pkcs8_der, second.key_pkcs8_der);
    }

    fn verify_as_client(ca: &LocalCa, cert_der: &[u8]) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().unwrap()))
            .unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        verifier
            .verify_client_cert(
                &CertificateDer::from(cert_der.to_vec()),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    fn csr(common_name: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        // A CSR may ask to be a CA; it must not get that.
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_certificate_issued_from_a_csr_verifies_against_the_ca_as_a_client_cert() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let issued = ca.issue_from_csr(&csr("camera-7"), 365).unwrap();
        verify_as_client(&ca, &issued.cert_der).unwrap();
        let info = crate::check_client_cert(&issued.cert_der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("camera-7"));
        assert_eq!(info.serial, issued.serial);
        let (_, parsed) = x509_parser::parse_x509_certificate(&issued.cert_der).unwrap();
        assert!(!parsed.is_ca(), "a CSR never yields a CA certificate");

        // Another CA's certificate does not verify against this one.
        let other_dir = tempfile::tempdir().unwrap();
        let other = LocalCa::load_or_create(other_dir.path()).unwrap();
        let foreign = other.issue_from_csr(&csr("camera-8"), 365).unwrap();
        assert!(verify_as_client(&ca, &foreign.cert_der).is_err());
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let e = ca.issue_from_csr("not a csr", 1).unwrap_err();
        assert!(matches!(e, PkiError::Csr(_)), "{e}");
    }
}
