//! The connection gate: a certificate the store holds ACTIVE, attached to a thing (device) or
//! listed by templates (claim). The TLS layer already checked it chains to the cloud CA.

use std::sync::Arc;

use lichen_broker::hooks::BoxFuture;
use lichen_broker::{Admission, ConnectInfo, ConnectionGate, GateDecision};
use lichen_cloud_store::{Backend, CertificateKind, MAX_PAGE, Page, StoreError};

use crate::Inner;
use crate::authz::{Principal, claim_thing_name, client_id_allowed};

/// Most templates scanned for a claim certificate's permissions at connect.
pub const MAX_TEMPLATES_SCANNED: usize = 10_000;

pub struct CloudGate<B: Backend> {
    pub inner: Arc<Inner<B>>,
}

impl<B: Backend + 'static> ConnectionGate for CloudGate<B> {
    fn admit(&self, info: ConnectInfo) -> BoxFuture<GateDecision> {
        let inner = self.inner.clone();
        Box::pin(async move {
            match decide(&inner, &info).await {
                Ok(principal) => {
                    let thing = match &principal {
                        Principal::Thing { name, .. } => name.clone(),
                        Principal::Claim { fingerprint, .. } => claim_thing_name(fingerprint),
                    };
                    GateDecision::Admit(Admission {
                        thing,
                        handle: Some(Arc::new(principal)),
                    })
                }
                Err(reason) => GateDecision::Refuse(reason),
            }
        })
    }
}

async fn decide<B: Backend>(inner: &Inner<B>, info: &ConnectInfo) -> Result<Principal, String> {
    let Some(fingerprint) = info.fingerprint.as_deref() else {
        return Err("no client certificate".into());
    };
    // The rule is the store's, shared with the device HTTPS API.
    let cert = lichen_cloud_store::active_certificate(&inner.store, fingerprint)
        .await
        .map_err(|e| e.to_string())?;
    match cert.kind {
        CertificateKind::Device => {
            let thing = cert.device_thing().map_err(|e| e.to_string())?.to_owned();
            if !client_id_allowed(&thing, &info.client_id) {
                return Err(format!(
                    "client id {:?} is neither thing {thing:?} nor \"{thing}#…\"",
                    info.client_id
                ));
            }
            let client_devices = inner
                .client_devices
                .attach(&inner.store, &thing)
                .await
                .map_err(|e| format!("client device lookup failed: {e}"))?;
            Ok(Principal::Thing {
                name: thing,
                client_devices,
            })
        }
        CertificateKind::Claim => {
            // A claim connection must not take over a device's session.
            let base = info.client_id.split('#').next().unwrap_or_default();
            match inner.store.get_thing(base).await {
                Ok(_) => {
                    return Err(format!(
                        "claim certificate may not use thing client id {:?}",
                        info.client_id
                    ));
                }
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(format!("thing lookup failed: {e}")),
            }
            let templates = templates_listing(inner, fingerprint).await?;
            Ok(Principal::Claim {
                fingerprint: fingerprint.to_string(),
                templates,
            })
        }
    }
}

/// The enabled templates that list this claim certificate.
pub async fn templates_listing<B: Backend>(
    inner: &Inner<B>,
    fingerprint: &str,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut page = Page::first(MAX_PAGE);
    let mut scanned = 0;
    loop {
        let batch = inner
            .store
            .list_templates(&page)
            .await
            .map_err(|e| format!("template lookup failed: {e}"))?;
        scanned += batch.len();
        let done =
            batch.len() < page.effective_limit() as usize || scanned >= MAX_TEMPLATES_SCANNED;
        page.after = batch.last().map(|t| t.name.clone());
        for t in batch {
            if t.enabled && t.claim_certificates.iter().any(|c| c == fingerprint) {
                out.push(t.name);
            }
        }
        if done {
            return Ok(out);
        }
    }
}
