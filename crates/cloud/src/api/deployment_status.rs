//! `GET /v1/deployments/{id}/status`: each device's view of a deployment — from its job's
//! executions (group targets), or the thing's deployment shadow `reported` when it speaks of
//! this deployment's configuration (thing targets; a replaced one shows what the device had
//! reported when it was replaced, kept in its history as `deviceStatus`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use lichen_cloud_store::{Backend, DeploymentTarget, FleetDeployment, Page, StoreError};
use lichen_iot::shadow::StoredShadow;
use lichen_model::fleet::{DEPLOYMENT_SHADOW_NAME, ShadowDeploymentReported};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::body::ApiPath;
use super::deployments::deployment_id;
use super::error::ApiResult;

/// One device's view of a deployment.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    pub thing: String,
    pub status: String,
    pub status_details: BTreeMap<String, String>,
    pub updated_at: Option<String>,
}

/// Whether a device's status of a deployment is one it ends in.
pub(super) fn is_final(status: &str) -> bool {
    matches!(
        status,
        "SUCCEEDED" | "FAILED" | "CANCELED" | "REJECTED" | "TIMED_OUT" | "REMOVED"
    )
}

pub(super) async fn status<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    deployment_id(&id)?;
    let d = state.store.get_deployment(&id).await?;
    let devices = match &d.target {
        DeploymentTarget::ThingGroup(_) => {
            let job_id = d.document["jobId"].as_str().unwrap_or_default().to_string();
            executions_status(&state, &job_id).await?
        }
        DeploymentTarget::Thing(t) => vec![shadow_status(&state, &d, t).await?],
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for s in &devices {
        *counts.entry(s.status.clone()).or_default() += 1;
    }
    Ok(Json(json!({
        "deploymentId": d.id,
        "deploymentStatus": d.document["deploymentStatus"],
        "counts": counts,
        "devices": devices,
    })))
}

async fn executions_status<S: Backend>(
    state: &AppState<S>,
    job_id: &str,
) -> ApiResult<Vec<DeviceStatus>> {
    let mut out = Vec::new();
    let mut page = Page::first(lichen_cloud_store::MAX_PAGE);
    loop {
        let batch = state
            .store
            .list_job_executions_for_job(job_id, &page)
            .await?;
        let full = batch.len() as u64 >= u64::from(page.effective_limit());
        page.after = batch.last().map(|e| e.thing.clone());
        out.extend(batch.into_iter().map(|e| DeviceStatus {
            thing: e.thing,
            status: e.status.as_str().to_string(),
            status_details: e.status_details,
            updated_at: Some(secs_rfc3339(e.last_updated_at)),
        }));
        if !full {
            return Ok(out);
        }
    }
}

fn secs_rfc3339(secs: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    lichen_sys::time::format_rfc3339_millis(t)
}

/// A thing deployment's status: the shadow's `reported` when it is about this deployment's
/// configuration; QUEUED (or CANCELED) until the device reports.
pub(super) async fn shadow_status<S: Backend>(
    state: &AppState<S>,
    d: &FleetDeployment,
    thing: &str,
) -> Result<DeviceStatus, StoreError> {
    let arn = d.document["configurationArn"].as_str().unwrap_or_default();
    let canceled = d.document["deploymentStatus"] == "CANCELED";
    // Replaced: what the device said of it when it was replaced, unless it still speaks of it.
    let superseded = d.document.get("supersededBy").is_some();
    let kept: Option<DeviceStatus> = d
        .document
        .get("deviceStatus")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let pending = if canceled || superseded {
        "CANCELED"
    } else {
        "QUEUED"
    };
    let record = state
        .store
        .get_shadow(thing, DEPLOYMENT_SHADOW_NAME)
        .await?;
    let reported = record.as_ref().and_then(|r| {
        let doc: StoredShadow = serde_json::from_value(r.document.clone()).ok()?;
        let reported: ShadowDeploymentReported =
            serde_json::from_value(Value::Object(doc.state.reported.clone()?)).ok()?;
        Some((reported, doc.timestamp))
    });
    Ok(match reported {
        Some((r, ts)) if r.fleet_configuration_arn_for_status == arn => {
            let mut details = BTreeMap::new();
            if let Some(s) = r.status_details.detailed_status {
                details.insert(
                    lichen_model::fleet::status_keys::DETAILED_STATUS.to_string(),
                    s,
                );
            }
            if let Some(s) = r.status_details.failure_cause {
                details.insert(
                    lichen_model::fleet::status_keys::FAILURE_CAUSE.to_string(),
                    s,
                );
            }
            DeviceStatus {
                thing: thing.to_string(),
                status: r.status,
                status_details: details,
                updated_at: Some(secs_rfc3339(i64::try_from(ts).unwrap_or(0))),
            }
        }
        _ => kept.filter(|_| superseded).unwrap_or_else(|| DeviceStatus {
            thing: thing.to_string(),
            status: pending.to_string(),
            status_details: BTreeMap::new(),
            updated_at: None,
        }),
    })
}
