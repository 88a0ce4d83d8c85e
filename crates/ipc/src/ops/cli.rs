//! Greengrass CLI IPC service (`aws.greengrass.Cli`): components and local deployments.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lichen_core::ComponentInfo;
use lichen_core::deployment::model::{
    ConfigurationUpdate, DeploymentRecord, DeploymentRequest, FailurePolicy, RunWith,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::lifecycle::component_name;
use super::{Call, Reply, Shared, parse};
use crate::error::{ErrorShape, OpError};

/// ListLocalDeployments returns at most this many, newest first (the model's "last 5").
pub const LIST_DEPLOYMENTS_MAX: usize = 5;

fn details(c: &ComponentInfo) -> Value {
    json!({
        "componentName": c.component_name,
        "version": c.version,
        "state": c.state.as_str(),
        "configuration": c.configuration,
    })
}

pub(super) fn list_components(shared: &Shared) -> Result<Reply, OpError> {
    let components: Vec<Value> = shared.core.list_components().iter().map(details).collect();
    Ok(Reply::Unary(json!({ "components": components })))
}

pub(super) fn component_details(shared: &Shared, payload: &[u8]) -> Result<Reply, OpError> {
    let name = component_name("GetComponentDetails", payload)?;
    let info = shared.core.component_details(&name)?;
    Ok(Reply::Unary(json!({ "componentDetails": details(&info) })))
}

fn component_not_found(e: lichen_core::CoreError) -> OpError {
    match e {
        lichen_core::CoreError::ComponentNotFound(n) => OpError::new(
            ErrorShape::ComponentNotFoundError,
            format!("component {n} not found"),
        ),
        other => other.into(),
    }
}

pub(super) async fn restart(shared: &Shared, payload: &[u8]) -> Result<Reply, OpError> {
    let name = component_name("RestartComponent", payload)?;
    match shared.core.restart_component(&name).await {
        Ok(()) => Ok(Reply::Unary(
            json!({"restartStatus": "SUCCEEDED", "message": ""}),
        )),
        Err(e @ lichen_core::CoreError::ComponentNotFound(_)) => Err(component_not_found(e)),
        Err(e) => Ok(Reply::Unary(
            json!({"restartStatus": "FAILED", "message": e.to_string()}),
        )),
    }
}

pub(super) async fn stop(shared: &Shared, payload: &[u8]) -> Result<Reply, OpError> {
    let name = component_name("StopComponent", payload)?;
    match shared.core.stop_component(&name).await {
        Ok(()) => Ok(Reply::Unary(
            json!({"stopStatus": "SUCCEEDED", "message": ""}),
        )),
        Err(e @ lichen_core::CoreError::ComponentNotFound(_)) => Err(component_not_found(e)),
        Err(e) => Ok(Reply::Unary(
            json!({"stopStatus": "FAILED", "message": e.to_string()}),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRequest {
    group_name: Option<String>,
    #[serde(default)]
    root_component_versions_to_add: BTreeMap<String, String>,
    #[serde(default)]
    root_components_to_remove: Vec<String>,
    #[serde(default)]
    component_to_configuration: BTreeMap<String, Value>,
    #[serde(default)]
    component_to_run_with_info: BTreeMap<String, RunWith>,
    recipe_directory_path: Option<String>,
    artifacts_directory_path: Option<String>,
    failure_handling_policy: Option<String>,
}

fn directory(
    path: Option<String>,
    shape: ErrorShape,
    what: &str,
) -> Result<Option<PathBuf>, OpError> {
    let Some(p) = path.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(&p);
    if !path.is_absolute() || !path.is_dir() {
        return Err(OpError::new(
            shape,
            format!("{what} {p} is not an absolute path to a directory"),
        ));
    }
    Ok(Some(path))
}

pub(super) async fn create_deployment(shared: &Shared, payload: &[u8]) -> Result<Reply, OpError> {
    let req: CreateRequest = parse("CreateLocalDeployment", payload)?;
    let failure_policy = match req.failure_handling_policy.as_deref() {
        None | Some("ROLLBACK") => FailurePolicy::Rollback,
        Some("DO_NOTHING") => FailurePolicy::DoNothing,
        Some(other) => {
            return Err(OpError::invalid(format!(
                "failureHandlingPolicy must be ROLLBACK or DO_NOTHING, not {other}"
            )));
        }
    };
    let mut configuration_updates = BTreeMap::new();
    for (component, update) in req.component_to_configuration {
        let keys_ok = update.as_object().is_some_and(|o| {
            o.keys()
                .all(|k| k.eq_ignore_ascii_case("MERGE") || k.eq_ignore_ascii_case("RESET"))
        });
        if !keys_ok {
            return Err(OpError::invalid(format!(
                "componentToConfiguration.{component} must be an object with MERGE and/or RESET"
            )));
        }
        let update: ConfigurationUpdate = serde_json::from_value(update)
            .map_err(|e| OpError::invalid(format!("componentToConfiguration.{component}: {e}")))?;
        configuration_updates.insert(component, update);
    }
    let request = DeploymentRequest {
        group_name: req.group_name.filter(|g| !g.is_empty()),
        root_components_to_add: req.root_component_versions_to_add,
        root_components_to_remove: req.root_components_to_remove,
        configuration_updates,
        run_with: req.component_to_run_with_info,
        recipe_dir: directory(
            req.recipe_directory_path,
            ErrorShape::InvalidRecipeDirectoryPathError,
            "recipeDirectoryPath",
        )?,
        artifact_dir: directory(
            req.artifacts_directory_path,
            ErrorShape::InvalidArtifactsDirectoryPathError,
            "artifactsDirectoryPath",
        )?,
        failure_policy,
        ..Default::default()
    };
    let id = shared.core.create_deployment(request).await?;
    Ok(Reply::Unary(json!({ "deploymentId": id })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeploymentIdRequest {
    deployment_id: Option<String>,
}

/// The deployment CancelLocalDeployment acts on, which its policy must allow.
pub(super) fn cancel_target(call: &Call<'_>) -> Result<Vec<String>, OpError> {
    let req: DeploymentIdRequest = call.parse()?;
    let id = match req.deployment_id.filter(|d| !d.is_empty()) {
        Some(id) => id,
        // Without an id: the newest deployment that has not finished.
        None => call
            .core()
            .list_deployments()
            .into_iter()
            .find(|d| !d.status.is_final())
            .map(|d| d.deployment_id)
            .ok_or_else(|| {
                OpError::not_found(
                    "LocalDeployment",
                    "",
                    "no local deployment is queued or in progress",
                )
            })?,
    };
    Ok(vec![id])
}

/// Cancels `id`, the deployment [`cancel_target`] chose and the caller is allowed.
pub(super) async fn cancel_deployment(shared: &Shared, id: &str) -> Result<Reply, OpError> {
    shared.core.cancel_deployment(id).await?;
    Ok(Reply::Unary(
        json!({ "message": format!("deployment {id} canceled") }),
    ))
}

pub(super) fn deployment_status(shared: &Shared, payload: &[u8]) -> Result<Reply, OpError> {
    let req: DeploymentIdRequest = parse("GetLocalDeploymentStatus", payload)?;
    let id = req
        .deployment_id
        .filter(|d| !d.is_empty())
        .ok_or_else(|| OpError::invalid("deploymentId is required"))?;
    let record = shared.core.deployment(&id)?;
    Ok(Reply::Unary(
        json!({ "deployment": local_deployment(&record) }),
    ))
}

pub(super) fn list_deployments(shared: &Shared) -> Result<Reply, OpError> {
    let list: Vec<Value> = shared
        .core
        .list_deployments()
        .iter()
        .take(LIST_DEPLOYMENTS_MAX)
        .map(local_deployment)
        .collect();
    Ok(Reply::Unary(json!({ "localDeployments": list })))
}

fn enum_str<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn local_deployment(d: &DeploymentRecord) -> Value {
    let mut details = serde_json::Map::new();
    if let Some(s) = &d.detailed_status {
        details.insert("detailedDeploymentStatus".into(), enum_str(s));
    }
    if !d.error_stack.is_empty() {
        details.insert("deploymentErrorStack".into(), json!(d.error_stack));
    }
    if !d.error_types.is_empty() {
        details.insert("deploymentErrorTypes".into(), json!(d.error_types));
    }
    if let Some(c) = &d.failure_cause {
        details.insert("deploymentFailureCause".into(), json!(c));
    }
    let mut v = json!({
        "deploymentId": d.deployment_id,
        "status": enum_str(&d.status),
        "createdOn": format_created_on(d.created_on),
    });
    if !details.is_empty() {
        v["deploymentStatusDetails"] = Value::Object(details);
    }
    v
}

/// `MM/dd/yyyy HH:mm:ss` in UTC, the format the model documents for `createdOn`.
fn format_created_on(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{month:02}/{day:02}/{year:04} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_on_format() {
        assert_eq!(format_created_on(0), "01/01/1970 00:00:00");
        // 2024-02-29T13:14:15Z
        assert_eq!(format_created_on(1_709_212_455_000), "02/29/2024 13:14:15");
    }
}
