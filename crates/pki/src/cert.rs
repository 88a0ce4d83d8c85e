//! Reading certificates: PEM to DER, fingerprints, names, and the client-certificate checks.

use sha2::{Digest, Sha256};
use x509_parser::x509::X509Version;

use crate::PkiError;

/// SHA-256 of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Parses the first certificate of a PEM text into DER.
pub fn cert_der_from_pem(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| PkiError::Certificate(format!("not a PEM certificate: {e}")))?;
    if p.label != "CERTIFICATE" {
        return Err(PkiError::Certificate(format!(
            "PEM block is {:?}, not CERTIFICATE",
            p.label
        )));
    }
    x509_parser::parse_x509_certificate(&p.contents)
        .map_err(|e| PkiError::Certificate(format!("invalid X.509 certificate: {e}")))?;
    Ok(p.contents)
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

/// Whether the certificate parses and is within its validity period now.
pub fn valid_now(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.validity().is_valid())
        .unwrap_or(false)
}

/// What a client certificate that passed [`check_client_cert`] says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertInfo {
    pub fingerprint: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    pub common_name: Option<String>,
}

/// Checks a DER certificate offered for use as a client (device) certificate. X.509 v1
/// certificates are refused ([`PkiError::Version1`]).
pub fn check_client_cert(der: &[u8]) -> Result<ClientCertInfo, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::Certificate(format!("invalid X.509 certificate: {e}")))?;
    if cert.version() == X509Version::V1 {
        return Err(PkiError::Version1);
    }
    Ok(ClientCertInfo {
        fingerprint: fingerprint(der),
        serial: hex::encode(cert.raw_serial()),
        common_name: common_name(der),
    })
}

/// Serial number of a DER certificate, lowercase hex.
pub(crate) fn serial_hex(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(hex::encode(cert.raw_serial()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER length bytes for `len`.
    fn der_len(len: usize) -> Vec<u8> {
        if len < 0x80 {
            return vec![len as u8];
        }
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }

    /// (header length, content length) of the DER element at the start of `der`.
    fn der_header(der: &[u8]) -> (usize, usize) {
        let first = der[1] as usize;
        if first < 0x80 {
            return (2, first);
        }
        let n = first & 0x7f;
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (2 + n, len)
    }

    /// The same certificate as X.509 v1: the explicit `[0] version` field removed (the
    /// signature no longer matches, which parsing does not check).
    fn as_version1(v3_der: &[u8]) -> Vec<u8> {
        let (outer_header, _) = der_header(v3_der);
        let tbs = &v3_der[outer_header..];
        let (tbs_header, tbs_len) = der_header(tbs);
        let tbs_content = &tbs[tbs_header..tbs_header + tbs_len];
        assert_eq!(
            &tbs_content[..5],
            &[0xa0, 0x03, 0x02, 0x01, 0x02],
            "a v3 version field"
        );
        let rest_after_tbs = &tbs[tbs_header + tbs_len..];
        let mut new_tbs = vec![0x30];
        new_tbs.extend(der_len(tbs_len - 5));
        new_tbs.extend(&tbs_content[5..]);
        let mut out = vec![0x30];
        out.extend(der_len(new_tbs.len() + rest_after_tbs.len()));
        out.extend(new_tbs);
        out.extend(rest_after_tbs);
        out
    }

    #[test]
    fn a_v1_certificate_is_refused_as_a_client_cert_with_the_reason() {
        let key = rcgen::KeyPair::generate().unwrap();
        // No extensions, so that the certificate is well-formed as v1.
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "old-device");
        let v3 = params.self_signed(&key).unwrap().der().to_vec();
        check_client_cert(&v3).unwrap();

        let v1 = as_version1(&v3);
        let (_, parsed) = x509_parser::parse_x509_certificate(&v1).unwrap();
        assert_eq!(parsed.version(), X509Version::V1);
        let e = check_client_cert(&v1).unwrap_err();
        assert!(matches!(e, PkiError::Version1), "{e}");
        assert!(e.to_string().contains("v1"), "{e}");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            check_client_cert(b"\x30\x03\x02\x01\x01"),
            Err(PkiError::Certificate(_))
        ));
        assert!(
            cert_der_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }
}
