//! Revoked certificates, by SHA-256 fingerprint or by serial number (serials of the
//! certificates this CA issued), persisted as JSON with a crash-safe write on every change
//! and loaded at start.
//!
//! Bound: at most [`MAX_REVOKED`] entries; the file is refused above [`MAX_FILE_BYTES`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::PkiError;
use crate::cert::{fingerprint, serial_hex};

pub const MAX_REVOKED: usize = 100_000;
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    fingerprints: BTreeSet<String>,
    #[serde(default)]
    serials: BTreeSet<String>,
}

#[derive(Debug)]
pub struct RevocationList {
    path: PathBuf,
    stored: Stored,
}

fn normalize_hex(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

impl RevocationList {
    /// Loads the list at `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<RevocationList, PkiError> {
        let invalid = |message: String| PkiError::RevocationList {
            path: path.display().to_string(),
            message,
        };
        let stored = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => return Err(invalid(e.to_string())),
            Ok(meta) if meta.len() > MAX_FILE_BYTES => {
                return Err(invalid(format!("larger than {MAX_FILE_BYTES} bytes")));
            }
            Ok(_) => {
                let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
                let stored: Stored =
                    serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
                if stored.fingerprints.len() + stored.serials.len() > MAX_REVOKED {
                    return Err(invalid(format!("more than {MAX_REVOKED} entries")));
                }
                stored
            }
        };
        Ok(RevocationList {
            path: path.to_path_buf(),
            stored,
        })
    }

    fn persist(&self) -> Result<(), PkiError> {
        let bytes =
            serde_json::to_vec_pretty(&self.stored).map_err(|e| PkiError::RevocationList {
                path: self.path.display().to_string(),
                message: e.to_string(),
            })?;
        lichen_sys::atomic::write_atomic(&self.path, &bytes, lichen_sys::atomic::PUBLIC)?;
        Ok(())
    }

    fn check_room(&self) -> Result<(), PkiError> {
        if self.len() >= MAX_REVOKED {
            return Err(PkiError::RevocationList {
                path: self.path.display().to_string(),
                message: format!("full ({MAX_REVOKED} entries)"),
            });
        }
        Ok(())
    }

    /// Revokes a certificate (DER) by its fingerprint, and by its serial. Returns whether
    /// it was not revoked before. Durable when this returns.
    pub fn revoke(&mut self, cert_der: &[u8]) -> Result<bool, PkiError> {
        self.check_room()?;
        let mut new = self.stored.fingerprints.insert(fingerprint(cert_der));
        if let Some(serial) = serial_hex(cert_der) {
            new |= self.stored.serials.insert(serial);
        }
        if new {
            self.persist()?;
        }
        Ok(new)
    }

    /// Revokes by SHA-256 fingerprint (hex, colons allowed).
    pub fn revoke_fingerprint(&mut self, fingerprint: &str) -> Result<bool, PkiError> {
        self.check_room()?;
        let new = self.stored.fingerprints.insert(normalize_hex(fingerprint));
        if new {
            self.persist()?;
        }
        Ok(new)
    }

    /// Revokes by serial number (hex, colons allowed) of a certificate this CA issued.
    pub fn revoke_serial(&mut self, serial: &str) -> Result<bool, PkiError> {
        self.check_room()?;
        let new = self.stored.serials.insert(normalize_hex(serial));
        if new {
            self.persist()?;
        }
        Ok(new)
    }

    /// Whether a certificate (DER) is revoked, by fingerprint or by serial.
    pub fn is_revoked(&self, cert_der: &[u8]) -> bool {
        self.stored.fingerprints.contains(&fingerprint(cert_der))
            || serial_hex(cert_der).is_some_and(|s| self.stored.serials.contains(&s))
    }

    pub fn len(&self) -> usize {
        self.stored.fingerprints.len() + self.stored.serials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalCa;

    fn client_csr(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_revoked_certificate_is_still_revoked_after_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let revoked = ca.issue_from_csr(&client_csr("a"), 30).unwrap();
        let kept = ca.issue_from_csr(&client_csr("b"), 30).unwrap();
        let path = dir.path().join("revoked.json");
        let mut list = RevocationList::load(&path).unwrap();
        assert!(list.is_empty());
        assert!(list.revoke(&revoked.cert_der).unwrap());
        assert!(!list.revoke(&revoked.cert_der).unwrap(), "already revoked");
        drop(list);

        let list = RevocationList::load(&path).unwrap();
        assert!(list.is_revoked(&revoked.cert_der));
        assert!(!list.is_revoked(&kept.cert_der));
    }

    #[test]
    fn revocation_by_serial_or_fingerprint_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let by_serial = ca.issue_from_csr(&client_csr("s"), 30).unwrap();
        let by_fingerprint = ca.issue_from_csr(&client_csr("f"), 30).unwrap();
        let path = dir.path().join("revoked.json");
        let mut list = RevocationList::load(&path).unwrap();
        list.revoke_serial(&by_serial.serial.to_uppercase())
            .unwrap();
        list.revoke_fingerprint(&fingerprint(&by_fingerprint.cert_der))
            .unwrap();
        let list = RevocationList::load(&path).unwrap();
        assert!(list.is_revoked(&by_serial.cert_der));
        assert!(list.is_revoked(&by_fingerprint.cert_der));
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn a_corrupt_list_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked.json");
        std::fs::write(&path, "{ not json").unwrap();
        let e = RevocationList::load(&path).unwrap_err();
        assert!(e.to_string().contains("revoked.json"), "{e}");
    }
}
