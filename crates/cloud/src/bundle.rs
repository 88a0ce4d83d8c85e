//! Provisioning bundles: the files `lichen core run --config DIR/config.yaml` takes as they
//! are. The private key is generated here, on the administrator's machine; only its CSR goes
//! to the cloud.

use std::path::{Path, PathBuf};

use lichen_sys::atomic::{PRIVATE, PUBLIC, write_atomic};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::CloudError;

pub const CONFIG_FILE: &str = "config.yaml";
pub const CA_FILE: &str = "ca.pem";
pub const THING_CERT_FILE: &str = "thing.cert.pem";
pub const THING_KEY_FILE: &str = "thing.private.key";
pub const CLAIM_CERT_FILE: &str = "claim.cert.pem";
pub const CLAIM_KEY_FILE: &str = "claim.private.key";

/// A fresh key pair and a CSR for it, both PEM.
pub struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Generates a key (ECDSA P-256) and a CSR whose subject common name is `common_name`.
pub fn new_key_and_csr(common_name: &str) -> Result<KeyAndCsr, CloudError> {
    let err = |e: rcgen::Error| CloudError::Tls(format!("generating a key and CSR: {e}"));
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(err)?,
    })
}

/// YAML scalar quoting for values that are not plain safe text.
fn yaml_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
        && !s.starts_with([':', '-'])
        && !matches!(
            s,
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// `config.yaml` of a device bundle (the layout issue 9 fixes).
pub fn thing_config_yaml(thing: &str, iot_data_endpoint: &str, api_endpoint: &str) -> String {
    format!(
        "thingName: {}\n\
         rootCaPath: {CA_FILE}\n\
         cloud:\n  \
           iotDataEndpoint: {}\n  \
           certificateFilePath: {THING_CERT_FILE}\n  \
           privateKeyPath: {THING_KEY_FILE}\n  \
           apiEndpoint: {}\n",
        yaml_str(thing),
        yaml_str(iot_data_endpoint),
        yaml_str(api_endpoint)
    )
}

/// `config.yaml` of a claim bundle: no identity yet, fleet provisioning instead.
pub fn claim_config_yaml(template: &str, iot_data_endpoint: &str, api_endpoint: &str) -> String {
    format!(
        "rootCaPath: {CA_FILE}\n\
         cloud:\n  \
           iotDataEndpoint: {}\n  \
           apiEndpoint: {}\n  \
           fleetProvisioning:\n    \
             provisioningTemplate: {}\n    \
             claimCertificatePath: {CLAIM_CERT_FILE}\n    \
             claimCertificatePrivateKeyPath: {CLAIM_KEY_FILE}\n    \
             templateParameters: {{}}\n",
        yaml_str(iot_data_endpoint),
        yaml_str(api_endpoint),
        yaml_str(template)
    )
}

/// Creates the bundle directory (0700), refusing one that already holds a bundle's files,
/// so an existing identity is never overwritten.
pub fn prepare_dir(dir: &Path, files: &[&str]) -> Result<(), CloudError> {
    crate::server::private_dir(dir)?;
    for f in files {
        let p = dir.join(f);
        if p.exists() {
            return Err(CloudError::Config(format!(
                "{} already exists; choose an empty --out directory (an existing identity is never overwritten)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Writes the key first (0600), so a crash never leaves a certificate without its key.
pub struct BundleFiles<'a> {
    pub dir: &'a Path,
    pub key_file: &'a str,
    pub key_pem: &'a str,
    pub cert_file: &'a str,
    pub cert_pem: &'a str,
    pub ca_pem: &'a str,
    pub config_yaml: &'a str,
}

pub fn write_bundle(files: &BundleFiles<'_>) -> Result<Vec<PathBuf>, CloudError> {
    let mut written = Vec::new();
    for (name, text, mode) in [
        (files.key_file, files.key_pem, PRIVATE),
        (files.cert_file, files.cert_pem, PUBLIC),
        (CA_FILE, files.ca_pem, PUBLIC),
        (CONFIG_FILE, files.config_yaml, PUBLIC),
    ] {
        let p = files.dir.join(name);
        write_atomic(&p, text.as_bytes(), mode)?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_config_is_exactly_the_agreed_layout() {
        let y = thing_config_yaml(
            "camera-7",
            "cloud.example:8883",
            "https://cloud.example:8443",
        );
        assert_eq!(
            y,
            "thingName: camera-7\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: cloud.example:8883\n  certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n  apiEndpoint: https://cloud.example:8443\n"
        );
        let c = claim_config_yaml("Fleet", "h:1", "https://h:2");
        assert!(
            c.contains("  fleetProvisioning:\n    provisioningTemplate: Fleet\n"),
            "{c}"
        );
        assert!(c.contains("templateParameters: {}\n"), "{c}");
        assert!(!c.contains("thingName"));
    }

    #[test]
    fn odd_values_are_quoted() {
        assert_eq!(yaml_str("true"), "\"true\"");
        assert_eq!(yaml_str("123"), "\"123\"");
        assert_eq!(yaml_str("a-b"), "a-b");
        assert_eq!(yaml_str("[::1]:8883"), "\"[::1]:8883\"");
    }

    #[test]
    fn a_csr_carries_the_name_and_the_key_stays_here() {
        let k = new_key_and_csr("camera-7").unwrap();
        assert!(k.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(k.key_pem.contains("PRIVATE KEY"));
        assert!(!k.csr_pem.contains(&k.key_pem));
        let dir = tempfile::tempdir().unwrap();
        let ca = lichen_pki::LocalCa::load_or_create(dir.path()).unwrap();
        let issued = ca.issue_from_csr(&k.csr_pem, 1).unwrap();
        assert_eq!(
            lichen_pki::common_name(&issued.cert_der).as_deref(),
            Some("camera-7")
        );
    }
}
