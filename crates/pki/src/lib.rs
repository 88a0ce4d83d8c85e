//! lichen's certificate authority, used by the device's MQTT broker now and by the cloud next:
//! a local CA whose key is written crash-safely 0600 ([`LocalCa`]), server certificates it
//! issues and renews ([`ServerCertificate`]), client certificates issued from CSRs
//! ([`LocalCa::issue_from_csr`]), a revocation list persisted crash-safely
//! ([`RevocationList`]), and the checks a certificate must pass to be used as a client
//! certificate ([`check_client_cert`]).
//!
//! No TLS library here: the broker turns these into rustls types.

mod ca;
mod cert;
mod revocation;

pub use ca::{IssuedCert, LocalCa, ServerCertificate};
pub use cert::{
    ClientCertInfo, cert_der_from_pem, check_client_cert, common_name, fingerprint, valid_now,
};
pub use revocation::{MAX_REVOKED, RevocationList};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Io(#[from] lichen_sys::SysError),
    #[error("{0}")]
    Certificate(String),
    #[error("certificate signing request: {0}")]
    Csr(String),
    #[error(
        "X.509 v1 certificates are refused as client certificates: they carry no extensions \
         (basic constraints, key usage) to tell a device certificate from a CA; issue a v3 certificate"
    )]
    Version1,
    #[error("revocation list {path}: {message}")]
    RevocationList { path: String, message: String },
}
