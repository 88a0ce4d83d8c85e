//! Certificates: issued by the cloud CA from a CSR (the key never leaves the device), listed,
//! described and revoked. Revoked is final; the device endpoint is told at once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use lichen_cloud_store::{
    Backend, CertificateFilter, CertificateKind, CertificateRecord, CertificateStatus,
};
use lichen_pki::LocalCa;
use serde::{Deserialize, Serialize};

use super::body::{ApiJson, ApiPath, ApiQuery};
use super::error::{ApiError, ApiResult};
use super::{AppState, DEVICE_CERT_DAYS, Method, PAGING, QueryParam, Route, check, next_key, now};
use crate::validate;

/// Longest CSR the API reads (PEM text).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

const CERT_QUERY: &[QueryParam] = &[
    PAGING[0],
    PAGING[1],
    QueryParam {
        name: "thing",
        description: "Only certificates attached to this thing.",
        kind: "string",
    },
    QueryParam {
        name: "status",
        description: "ACTIVE or REVOKED.",
        kind: "string",
    },
    QueryParam {
        name: "kind",
        description: "DEVICE or CLAIM.",
        kind: "string",
    },
];

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Post,
            path: "/v1/certificates",
            operation_id: "issueCertificate",
            summary: "Issue a device certificate from a CSR and attach it to a thing.",
            public: false,
            request: Some("IssueCertificate"),
            response: (201, Some("Certificate")),
            query: &[],
            handler: post(issue::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/certificates",
            operation_id: "listCertificates",
            summary: "List certificates by id, optionally of one thing, status or kind.",
            public: false,
            request: None,
            response: (200, Some("CertificateList")),
            query: CERT_QUERY,
            handler: get(list::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/certificates/{id}",
            operation_id: "describeCertificate",
            summary: "A certificate, with its PEM.",
            public: false,
            request: None,
            response: (200, Some("Certificate")),
            query: &[],
            handler: get(describe::<S>),
        },
        Route {
            method: Method::Post,
            path: "/v1/certificates/{id}/revoke",
            operation_id: "revokeCertificate",
            summary: "Revoke a certificate (final): its connections are closed and its next \
                      handshake refused.",
            public: false,
            request: None,
            response: (200, Some("Certificate")),
            query: &[],
            handler: post(revoke::<S>),
        },
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssueCertificate {
    pub csr: String,
    pub thing: String,
}

/// A certificate as listed (no PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSummary {
    pub id: String,
    pub serial: String,
    pub kind: CertificateKind,
    pub status: CertificateStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing: Option<String>,
    pub created_at: String,
    pub not_after: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl From<&CertificateRecord> for CertificateSummary {
    fn from(c: &CertificateRecord) -> CertificateSummary {
        CertificateSummary {
            id: c.fingerprint.clone(),
            serial: c.serial.clone(),
            kind: c.kind,
            status: c.status,
            thing: c.thing.clone(),
            created_at: c.created_at.clone(),
            not_after: c.not_after.clone(),
            revoked_at: c.revoked_at.clone(),
        }
    }
}

/// A certificate with its PEM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    #[serde(flatten)]
    pub summary: CertificateSummary,
    pub pem: String,
}

impl From<&CertificateRecord> for Certificate {
    fn from(c: &CertificateRecord) -> Certificate {
        Certificate {
            summary: c.into(),
            pem: c.pem.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateList {
    pub certificates: Vec<CertificateSummary>,
    pub next: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertQuery {
    limit: Option<u32>,
    after: Option<String>,
    thing: Option<String>,
    status: Option<CertificateStatus>,
    kind: Option<CertificateKind>,
}

/// Signs a CSR with the cloud CA and builds the record (not yet stored). The CSR is checked
/// before anything is stored: a bad one is a 422 naming `csr`.
pub fn sign_csr(
    ca: &LocalCa,
    csr: &str,
    kind: CertificateKind,
    thing: Option<String>,
    days: u32,
) -> ApiResult<CertificateRecord> {
    if csr.len() > MAX_CSR_BYTES {
        return Err(ApiError::invalid(
            "csr",
            format!("at most {MAX_CSR_BYTES} bytes (got {})", csr.len()),
        ));
    }
    if !csr.contains("-----BEGIN CERTIFICATE REQUEST-----") {
        return Err(ApiError::invalid(
            "csr",
            "not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)",
        ));
    }
    let issued = ca.issue_from_csr(csr, days).map_err(|e| match e {
        lichen_pki::PkiError::Csr(m) => ApiError::invalid("csr", m),
        e => ApiError::internal(format!("issuing a certificate: {e}")),
    })?;
    let (y, m, d) = lichen_sys::time::civil_from_days(issued.expires_day);
    Ok(CertificateRecord {
        fingerprint: lichen_pki::fingerprint(&issued.cert_der),
        serial: issued.serial,
        pem: issued.cert_pem,
        kind,
        status: CertificateStatus::Active,
        thing,
        created_at: now(),
        not_after: format!("{y:04}-{m:02}-{d:02}T00:00:00Z"),
        revoked_at: None,
    })
}

async fn issue<S: Backend>(
    State(state): State<AppState<S>>,
    ApiJson(req): ApiJson<IssueCertificate>,
) -> ApiResult<(StatusCode, Json<Certificate>)> {
    check(validate::name("thing", &req.thing))?;
    let record = sign_csr(
        &state.ca,
        &req.csr,
        CertificateKind::Device,
        Some(req.thing.clone()),
        DEVICE_CERT_DAYS,
    )?;
    state.store.get_thing(&req.thing).await?;
    // The record names the thing: storing it attaches it.
    state.store.put_certificate(&record).await?;
    tracing::info!(thing = %req.thing, certificate = %record.fingerprint, "device certificate issued");
    Ok((StatusCode::CREATED, Json(Certificate::from(&record))))
}

async fn list<S: Backend>(
    State(state): State<AppState<S>>,
    ApiQuery(q): ApiQuery<CertQuery>,
) -> ApiResult<Json<CertificateList>> {
    let page = super::PageQuery {
        limit: q.limit,
        after: q.after,
    }
    .page()?;
    if let Some(t) = &q.thing {
        check(validate::name("thing", t))?;
    }
    let filter = CertificateFilter {
        thing: q.thing,
        status: q.status,
        kind: q.kind,
    };
    let certs = state.store.list_certificates(&filter, &page).await?;
    let next = next_key(&certs, &page, |c| &c.fingerprint);
    Ok(Json(CertificateList {
        certificates: certs.iter().map(CertificateSummary::from).collect(),
        next,
    }))
}

async fn describe<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Certificate>> {
    check(validate::fingerprint(&id))?;
    let c = state.store.get_certificate(&id).await?;
    Ok(Json(Certificate::from(&c)))
}

async fn revoke<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Certificate>> {
    check(validate::fingerprint(&id))?;
    let c = state.store.revoke_certificate(&id, &now()).await?;
    if let Some(endpoint) = &state.endpoint {
        endpoint.certificate_revoked(&id).await;
    }
    tracing::info!(certificate = %id, "certificate revoked");
    Ok(Json(Certificate::from(&c)))
}
