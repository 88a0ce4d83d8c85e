//! Fleet provisioning by claim (`greengrass-dg/fleet-provisioning.md`): CreateKeysAndCertificate
//! and CreateCertificateFromCsr issue a device certificate from the cloud CA with an ownership
//! token; RegisterThing spends the token, evaluates the template, creates the thing, attaches
//! the certificate and adds the groups. Every reply reaches the requesting connection only
//! (it may carry a private key). Rejections are `{statusCode, errorCode, errorMessage}`.

use lichen_cloud_store::{
    Backend, CertificateKind, CertificateRecord, CertificateStatus, NewThing, OwnershipToken,
    StoreError,
};
use lichen_iot::provisioning::{
    self as iotp, CertificateInputs, ProvisioningError, parse_create_from_csr_request,
    parse_create_keys_request, parse_register_thing_request,
};
use lichen_iot::topic::{Outcome, ProvisioningRequest, ProvisioningTopic};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::authz::Principal;
use crate::events::now_rfc3339;
use crate::service::now_secs;
use crate::{Inner, OWNERSHIP_TOKEN_SECS};

struct Rejection {
    status: u16,
    code: &'static str,
    message: String,
}

impl From<ProvisioningError> for Rejection {
    fn from(e: ProvisioningError) -> Rejection {
        if let ProvisioningError::InvalidTemplate(m) = &e {
            tracing::error!(error = %m, "provisioning template cannot be evaluated");
        }
        let message = e.payload()["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Rejection {
            status: e.status_code(),
            code: e.error_code(),
            message,
        }
    }
}

impl Rejection {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(what: &str, e: impl std::fmt::Display) -> Rejection {
        tracing::error!(error = %e, "{what}");
        Rejection::new(500, "InternalFailure", "Internal service failure")
    }

    fn payload(&self) -> Value {
        json!({"statusCode": self.status, "errorCode": self.code, "errorMessage": self.message})
    }
}

pub async fn handle<B: Backend>(
    inner: &Inner<B>,
    principal: &Principal,
    client_id: &str,
    topic: &ProvisioningTopic,
    body: &[u8],
) {
    let Principal::Claim {
        fingerprint,
        templates,
    } = principal
    else {
        return; // things are not authorized on these topics; nothing to answer
    };
    let result = match &topic.request {
        ProvisioningRequest::CreateKeysAndCertificate => match parse_create_keys_request(body) {
            Ok(()) => create(inner, None).await,
            Err(e) => Err(e.into()),
        },
        ProvisioningRequest::CreateCertificateFromCsr => {
            match parse_create_from_csr_request(body) {
                Ok(r) => create(inner, Some(&r.certificate_signing_request)).await,
                Err(e) => Err(e.into()),
            }
        }
        ProvisioningRequest::RegisterThing { template } => {
            if templates.iter().any(|t| t == template) {
                register(inner, fingerprint, template, body).await
            } else {
                Err(Rejection::new(
                    403,
                    "AccessDenied",
                    format!("claim certificate may not use template {template}"),
                ))
            }
        }
    };
    match result {
        Ok(v) => inner.reply_to(
            client_id,
            &topic.with_reply(Outcome::Accepted).to_string(),
            &v,
        ),
        Err(r) => inner.reply_to(
            client_id,
            &topic.with_reply(Outcome::Rejected).to_string(),
            &r.payload(),
        ),
    }
}

fn day_to_rfc3339(day: i64) -> String {
    let (y, m, d) = lichen_sys::time::civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}T00:00:00Z")
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Issues a certificate (from the CSR, or for a new key) and its ownership token.
async fn create<B: Backend>(inner: &Inner<B>, csr: Option<&str>) -> Result<Value, Rejection> {
    let (csr_pem, key_pem) = match csr {
        Some(c) => (c.to_string(), None),
        None => {
            let key = rcgen::KeyPair::generate()
                .map_err(|e| Rejection::internal("key generation failed", e))?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
                .map_err(|e| Rejection::internal("certificate parameters", e))?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "lichen device");
            let req = params
                .serialize_request(&key)
                .and_then(|r| r.pem())
                .map_err(|e| Rejection::internal("CSR", e))?;
            (req, Some(key.serialize_pem()))
        }
    };
    let issued = inner
        .ca
        .issue_from_csr(&csr_pem, inner.config.issued_cert_days)
        .map_err(|e| match csr {
            Some(_) => Rejection::new(400, "InvalidCSR", e.to_string()),
            None => Rejection::internal("certificate issuance failed", e),
        })?;
    let fingerprint = lichen_pki::fingerprint(&issued.cert_der);
    let record = CertificateRecord {
        fingerprint: fingerprint.clone(),
        serial: issued.serial.clone(),
        pem: issued.cert_pem.clone(),
        kind: CertificateKind::Device,
        status: CertificateStatus::Active,
        thing: None,
        created_at: now_rfc3339(),
        not_after: day_to_rfc3339(issued.expires_day),
        revoked_at: None,
    };
    inner
        .store
        .put_certificate(&record)
        .await
        .map_err(|e| Rejection::internal("certificate not stored", e))?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    inner
        .store
        .put_ownership_token(&OwnershipToken {
            token_hash: sha256_hex(&token),
            certificate: fingerprint.clone(),
            expires_at: i64::try_from(now_secs()).unwrap_or(i64::MAX) + OWNERSHIP_TOKEN_SECS,
        })
        .await
        .map_err(|e| Rejection::internal("ownership token not stored", e))?;
    tracing::info!(certificate = %fingerprint, "certificate issued through fleet provisioning");
    let mut out = json!({
        "certificateId": fingerprint,
        "certificatePem": issued.cert_pem,
        "certificateOwnershipToken": token,
    });
    if let (Some(key), Value::Object(map)) = (key_pem, &mut out) {
        map.insert("privateKey".into(), Value::String(key));
    }
    Ok(out)
}

async fn register<B: Backend>(
    inner: &Inner<B>,
    claim: &str,
    template_name: &str,
    body: &[u8],
) -> Result<Value, Rejection> {
    let req = parse_register_thing_request(body)?;
    let template = match inner.store.get_template(template_name).await {
        Ok(t) => t,
        Err(StoreError::NotFound { .. }) => {
            return Err(Rejection::new(
                404,
                "ResourceNotFound",
                format!("template {template_name} not found"),
            ));
        }
        Err(e) => return Err(Rejection::internal("template unreadable", e)),
    };
    if !template.enabled || !template.claim_certificates.iter().any(|c| c == claim) {
        return Err(Rejection::new(
            403,
            "AccessDenied",
            format!("template {template_name} is disabled or does not list this claim certificate"),
        ));
    }
    let token = match inner
        .store
        .take_ownership_token(&sha256_hex(&req.certificate_ownership_token))
        .await
    {
        Ok(t) => t,
        Err(StoreError::NotFound { .. }) => {
            return Err(Rejection::new(
                400,
                "InvalidCertificateOwnershipToken",
                "the certificate ownership token is unknown or was used",
            ));
        }
        Err(e) => return Err(Rejection::internal("ownership token unreadable", e)),
    };
    if token.expires_at < i64::try_from(now_secs()).unwrap_or(i64::MAX) {
        return Err(Rejection::new(
            400,
            "InvalidCertificateOwnershipToken",
            "the certificate ownership token expired",
        ));
    }
    let cert = inner
        .store
        .get_certificate(&token.certificate)
        .await
        .map_err(|e| Rejection::internal("certificate unreadable", e))?;
    let mut subject = std::collections::BTreeMap::new();
    if let Some(cn) = lichen_pki::cert_der_from_pem(&cert.pem)
        .ok()
        .and_then(|der| lichen_pki::common_name(&der))
    {
        subject.insert("CommonName".to_string(), cn);
    }
    let inputs = CertificateInputs {
        certificate_id: token.certificate.clone(),
        subject,
    };
    // Wrong parameters give the token back, so the device can correct them and retry.
    let plan = match iotp::evaluate_template(&template.body.to_string(), &req.parameters, &inputs) {
        Ok(p) => p,
        Err(e) => {
            if let Err(put) = inner.store.put_ownership_token(&token).await {
                tracing::warn!(error = %put, "ownership token not restored");
            }
            return Err(e.into());
        }
    };
    if plan.certificate_status == iotp::CertificateStatus::Inactive {
        return Err(Rejection::new(
            400,
            "InvalidParameters",
            "templates that leave the certificate INACTIVE are not supported",
        ));
    }
    let created = inner
        .store
        .create_thing(&NewThing {
            name: plan.thing_name.clone(),
            attributes: plan.attributes.clone(),
        })
        .await;
    match created {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => return Err(Rejection::internal("thing not created", e)),
    }
    inner
        .store
        .attach_certificate(&token.certificate, &plan.thing_name)
        .await
        .map_err(|e| Rejection::internal("certificate not attached", e))?;
    for group in &plan.thing_groups {
        match inner.store.add_to_group(group, &plan.thing_name).await {
            Ok(()) => {}
            Err(StoreError::NotFound { .. }) => {
                return Err(Rejection::new(
                    400,
                    "InvalidParameters",
                    format!("thing group {group} does not exist"),
                ));
            }
            Err(e) => return Err(Rejection::internal("group membership not added", e)),
        }
    }
    tracing::info!(thing = %plan.thing_name, certificate = %token.certificate, template = %template_name, "thing provisioned by claim");
    Ok(json!({"deviceConfiguration": plan.device_configuration, "thingName": plan.thing_name}))
}
