//! Fleet provisioning templates (`greengrass-dg/fleet-provisioning.md`) and the claim
//! certificates a template admits.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use lichen_cloud_store::{Backend, CertificateKind, ProvisioningTemplate, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{ApiJson, ApiPath, ApiQuery};
use super::certificates::{Certificate, sign_csr};
use super::error::{ApiError, ApiResult};
use super::{AppState, CLAIM_CERT_DAYS, Method, PAGING, PageQuery, Route, check, next_key, now};
use crate::validate;

/// Largest template body, serialized: what the device endpoint evaluates (AWS IoT: 10 KB).
pub const MAX_TEMPLATE_BODY: usize = lichen_iot::provisioning::MAX_TEMPLATE_BYTES;
/// Most claim certificates one template lists.
pub const MAX_CLAIM_CERTIFICATES: usize = 100;

/// The resource types a provisioning template may declare (AWS IoT's).
const RESOURCE_TYPES: &[&str] = &[
    "AWS::IoT::Thing",
    "AWS::IoT::Certificate",
    "AWS::IoT::Policy",
];

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Post,
            path: "/v1/provisioning-templates",
            operation_id: "createProvisioningTemplate",
            summary: "Create a fleet provisioning template (AWS template body).",
            public: false,
            request: Some("CreateProvisioningTemplate"),
            response: (201, Some("ProvisioningTemplate")),
            query: &[],
            handler: post(create::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/provisioning-templates",
            operation_id: "listProvisioningTemplates",
            summary: "List provisioning templates by name.",
            public: false,
            request: None,
            response: (200, Some("ProvisioningTemplateList")),
            query: PAGING,
            handler: get(list::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/provisioning-templates/{name}",
            operation_id: "describeProvisioningTemplate",
            summary: "A provisioning template with its body and claim certificates.",
            public: false,
            request: None,
            response: (200, Some("ProvisioningTemplate")),
            query: &[],
            handler: get(describe::<S>),
        },
        Route {
            method: Method::Delete,
            path: "/v1/provisioning-templates/{name}",
            operation_id: "deleteProvisioningTemplate",
            summary: "Delete a provisioning template; its claim certificates can then do nothing.",
            public: false,
            request: None,
            response: (204, None),
            query: &[],
            handler: delete(remove::<S>),
        },
        Route {
            method: Method::Post,
            path: "/v1/provisioning-templates/{name}/claim-certificates",
            operation_id: "createClaimCertificate",
            summary: "Issue a claim certificate from a CSR, admitted by this template only.",
            public: false,
            request: Some("CreateClaimCertificate"),
            response: (201, Some("Certificate")),
            query: &[],
            handler: post(create_claim::<S>),
        },
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateProvisioningTemplate {
    pub name: String,
    pub body: Value,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateClaimCertificate {
    pub csr: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningTemplateList {
    pub templates: Vec<ProvisioningTemplate>,
    pub next: Option<String>,
}

/// The shape every AWS provisioning template has: an object with a `Resources` object whose
/// entries each declare a known `Type`; `Parameters`, when present, is an object. Then the
/// device endpoint's own evaluator (`lichen-iot`) checks it as it will run it, so a
/// template stored here is one a claim can be provisioned by.
pub fn check_template_body(body: &Value) -> ApiResult<()> {
    let size = serde_json::to_vec(body)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_TEMPLATE_BODY {
        return Err(ApiError::invalid(
            "body",
            format!("at most {MAX_TEMPLATE_BODY} bytes (got {size})"),
        ));
    }
    let Some(obj) = body.as_object() else {
        return Err(ApiError::invalid(
            "body",
            "must be a JSON object (an AWS provisioning template)",
        ));
    };
    if let Some(p) = obj.get("Parameters")
        && !p.is_object()
    {
        return Err(ApiError::invalid("body.Parameters", "must be an object"));
    }
    let Some(resources) = obj.get("Resources").and_then(Value::as_object) else {
        return Err(ApiError::invalid(
            "body.Resources",
            "an object of resources is required",
        ));
    };
    for (name, r) in resources {
        let ty = r.get("Type").and_then(Value::as_str);
        match ty {
            Some(t) if RESOURCE_TYPES.contains(&t) => {}
            _ => {
                return Err(ApiError::invalid(
                    &format!("body.Resources.{name}.Type"),
                    format!("must be one of {}", RESOURCE_TYPES.join(", ")),
                ));
            }
        }
    }
    let text = serde_json::to_string(body).unwrap_or_default();
    lichen_iot::provisioning::validate_template(&text).map_err(|e| ApiError::invalid("body", e))
}

async fn create<S: Backend>(
    State(state): State<AppState<S>>,
    ApiJson(req): ApiJson<CreateProvisioningTemplate>,
) -> ApiResult<(StatusCode, Json<ProvisioningTemplate>)> {
    check(validate::template_name(&req.name))?;
    check_template_body(&req.body)?;
    match state.store.get_template(&req.name).await {
        Ok(_) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("provisioning template {:?} already exists", req.name),
            ));
        }
        Err(lichen_cloud_store::StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let template = ProvisioningTemplate {
        name: req.name,
        enabled: req.enabled,
        body: req.body,
        claim_certificates: Vec::new(),
        created_at: now(),
    };
    state.store.put_template(&template).await?;
    Ok((StatusCode::CREATED, Json(template)))
}

async fn list<S: Backend>(
    State(state): State<AppState<S>>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<ProvisioningTemplateList>> {
    let page = q.page()?;
    let templates = state.store.list_templates(&page).await?;
    let next = next_key(&templates, &page, |t| &t.name);
    Ok(Json(ProvisioningTemplateList { templates, next }))
}

async fn describe<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ProvisioningTemplate>> {
    check(validate::template_name(&name))?;
    Ok(Json(state.store.get_template(&name).await?))
}

async fn remove<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    check(validate::template_name(&name))?;
    state.store.delete_template(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_claim<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<CreateClaimCertificate>,
) -> ApiResult<(StatusCode, Json<Certificate>)> {
    check(validate::template_name(&name))?;
    // Refused early (nothing signed) when the template is missing or full; the store checks
    // both again in the transaction that lists the certificate.
    let template = state.store.get_template(&name).await?;
    if template.claim_certificates.len() >= MAX_CLAIM_CERTIFICATES {
        return Err(full(&name));
    }
    let record = sign_csr(
        &state.ca,
        &req.csr,
        CertificateKind::Claim,
        None,
        CLAIM_CERT_DAYS,
    )?;
    // Stored and listed in one transaction, the list updated optimistically in the database:
    // concurrent claims from any node are all listed, and none is stored unlisted.
    match state
        .store
        .add_claim_certificate(&name, &record, MAX_CLAIM_CERTIFICATES)
        .await
    {
        Ok(_) => {}
        Err(StoreError::InUse { .. }) => return Err(full(&name)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(template = %name, certificate = %record.fingerprint, "claim certificate issued");
    Ok((StatusCode::CREATED, Json(Certificate::from(&record))))
}

fn full(name: &str) -> ApiError {
    ApiError::conflict(format!(
        "provisioning template {name:?} already lists {MAX_CLAIM_CERTIFICATES} claim \
         certificates; revoke or delete some first"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn template_bodies_need_known_resources() {
        check_template_body(&json!({
            "Parameters": {"ThingName": {"Type": "String"}},
            "Resources": {
                "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}},
                "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}}
            }
        }))
        .unwrap();
        let e = check_template_body(&json!({"Resources": {"x": {"Type": "AWS::S3::Bucket"}}}))
            .unwrap_err();
        assert!(e.message.contains("body.Resources.x.Type"), "{e}");
        let e = check_template_body(&json!([1])).unwrap_err();
        assert!(e.message.starts_with("body"), "{e}");
        let e = check_template_body(&json!({"Parameters": 1, "Resources": {}})).unwrap_err();
        assert!(e.message.contains("Parameters"), "{e}");
        // The endpoint's evaluator refuses what it could not run, at creation.
        let e = check_template_body(&json!({"Resources": {"thing": {"Type": "AWS::IoT::Thing",
            "Properties": {"ThingName": {"Fn::Unknown": "x"}}}}}))
        .unwrap_err();
        assert!(e.message.starts_with("body"), "{e}");
        let big = json!({"Resources": {}, "Mappings": {"m": {"k": {"v": "x".repeat(11_000)}}}});
        assert!(
            check_template_body(&big)
                .unwrap_err()
                .message
                .contains("10240")
        );
    }
}
