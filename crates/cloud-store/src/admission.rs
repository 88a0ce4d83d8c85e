//! The one rule for which certificates may act as a device, shared by the MQTT gate
//! (`lichen-cloud-endpoint`) and the device HTTPS API (`lichen-cloud`): registered, ACTIVE,
//! a DEVICE certificate, attached to a thing. Read from the store at every decision, so a
//! revocation takes effect at the certificate's next connection or request.

use crate::{Backend, CertificateKind, CertificateRecord, CertificateStatus, StoreError};

/// Why a certificate was refused; the message names the certificate and the reason.
#[derive(Debug, thiserror::Error)]
pub enum CertificateRefusal {
    #[error("certificate {0} is not registered")]
    NotRegistered(String),
    #[error("certificate {0} is revoked")]
    Revoked(String),
    #[error("certificate {0} is a claim certificate, not a device's")]
    NotDevice(String),
    #[error("certificate {0} is not attached to a thing")]
    NotAttached(String),
    #[error("certificate lookup failed: {0}")]
    Lookup(StoreError),
}

impl CertificateRefusal {
    /// A short code for JSON errors and logs.
    pub fn code(&self) -> &'static str {
        match self {
            CertificateRefusal::NotRegistered(_) => "CertificateNotRegistered",
            CertificateRefusal::Revoked(_) => "CertificateRevoked",
            CertificateRefusal::NotDevice(_) => "NotADeviceCertificate",
            CertificateRefusal::NotAttached(_) => "CertificateNotAttached",
            CertificateRefusal::Lookup(_) => "StoreUnavailable",
        }
    }
}

/// The stored record of `fingerprint`, if it is ACTIVE.
pub async fn active_certificate<B: Backend>(
    store: &B,
    fingerprint: &str,
) -> Result<CertificateRecord, CertificateRefusal> {
    let cert = match store.get_certificate(fingerprint).await {
        Ok(c) => c,
        Err(StoreError::NotFound { .. }) => {
            return Err(CertificateRefusal::NotRegistered(fingerprint.to_owned()));
        }
        Err(e) => return Err(CertificateRefusal::Lookup(e)),
    };
    if cert.status != CertificateStatus::Active {
        return Err(CertificateRefusal::Revoked(fingerprint.to_owned()));
    }
    Ok(cert)
}

impl CertificateRecord {
    /// The thing an ACTIVE device certificate acts as.
    pub fn device_thing(&self) -> Result<&str, CertificateRefusal> {
        if self.status != CertificateStatus::Active {
            return Err(CertificateRefusal::Revoked(self.fingerprint.clone()));
        }
        if self.kind != CertificateKind::Device {
            return Err(CertificateRefusal::NotDevice(self.fingerprint.clone()));
        }
        self.thing
            .as_deref()
            .ok_or_else(|| CertificateRefusal::NotAttached(self.fingerprint.clone()))
    }
}

/// The thing the certificate `fingerprint` acts as: ACTIVE, DEVICE, attached.
pub async fn device_thing<B: Backend>(
    store: &B,
    fingerprint: &str,
) -> Result<String, CertificateRefusal> {
    let cert = active_certificate(store, fingerprint).await?;
    cert.device_thing().map(str::to_owned)
}
