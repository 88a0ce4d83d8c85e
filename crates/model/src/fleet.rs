//! Fleet deployments as they travel between the cloud and a core, in Greengrass's shapes:
//! the deployment `Configuration` document (the job document of an `aws-gg-deployment` job,
//! and `desired.fleetConfig` of the `AWSManagedGreengrassV2Deployment` shadow), the status
//! a core reports back, and the fleet-status message of
//! `$aws/things/<thing>/greengrassv2/health/json`.
//!
//! Shared by the cloud (which builds and stores them) and the core's deployment agent (which
//! turns them into a [`DeploymentRequest`]). Pure serde and checks; no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::deployment::{
    ComponentUpdatePolicy, ConfigurationUpdate, DeploymentRequest, FailurePolicy, RunWith,
};

/// The jobs namespace of Greengrass thing-group deployments.
pub const DEPLOYMENT_JOBS_NAMESPACE: &str = "aws-gg-deployment";
/// The named shadow of Greengrass single-thing deployments.
pub const DEPLOYMENT_SHADOW_NAME: &str = "AWSManagedGreengrassV2Deployment";
/// `desiredStatus` in the deployment shadow that cancels the thing's deployment.
pub const DESIRED_STATUS_CANCELED: &str = "CANCELED";
pub const DESIRED_STATUS_ACTIVE: &str = "ACTIVE";
/// Group-name prefixes of fleet deployments (Greengrass `THING_GROUP_RESOURCE_NAME_PREFIX`,
/// `DEVICE_DEPLOYMENT_GROUP_NAME_PREFIX`).
pub const THING_GROUP_PREFIX: &str = "thinggroup/";
pub const THING_PREFIX: &str = "thing/";
/// A deployment names at most this many components (the cloud refuses more).
pub const MAX_FLEET_COMPONENTS: usize = 500;

/// Keys of a job execution's `statusDetails` as the Greengrass nucleus writes them.
pub mod status_keys {
    pub const DETAILED_STATUS: &str = "detailed-deployment-status";
    pub const FAILURE_CAUSE: &str = "deployment-failure-cause";
    pub const ERROR_STACK: &str = "deployment-error-stack";
    pub const ERROR_TYPES: &str = "deployment-error-types";
}

/// One root component of a fleet deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetComponent {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_update: Option<FleetConfigurationUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_with: Option<RunWith>,
}

/// `configurationUpdate` of a fleet deployment: `merge` is a JSON document as a string (as
/// Greengrass's CreateDeployment takes it); an object is accepted too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetConfigurationUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reset: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetComponentUpdatePolicy {
    /// Seconds.
    pub timeout: u64,
    pub action: crate::deployment::ComponentUpdateAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetValidationPolicy {
    /// Seconds.
    pub timeout: u64,
}

/// The Greengrass deployment `Configuration` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetConfiguration {
    pub deployment_id: String,
    /// `arn:lichen:greengrass:::configuration:thinggroup/<G>:<revision>` or `…:thing/<T>:<rev>`.
    pub configuration_arn: String,
    /// Milliseconds since the epoch.
    pub creation_timestamp: u64,
    /// Every root component of the target, name → what to run.
    pub components: BTreeMap<String, FleetComponent>,
    #[serde(default)]
    pub failure_handling_policy: FailurePolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_update_policy: Option<FleetComponentUpdatePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_validation_policy: Option<FleetValidationPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_capabilities: Vec<String>,
    /// The thing group ARN a group deployment was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// Why a fleet document cannot be turned into a deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FleetDocumentError {
    pub field: String,
    pub message: String,
}

fn doc_error(field: impl Into<String>, message: impl Into<String>) -> FleetDocumentError {
    FleetDocumentError {
        field: field.into(),
        message: message.into(),
    }
}

/// The group (`thinggroup/<G>` or `thing/<T>`) a configuration ARN names.
pub fn group_of_configuration_arn(arn: &str) -> Result<String, FleetDocumentError> {
    let bad = || {
        doc_error(
            "configurationArn",
            format!("{arn:?} is not …:configuration:thinggroup/<G>:<rev> or …:thing/<T>:<rev>"),
        )
    };
    let (_, rest) = arn.split_once(":configuration:").ok_or_else(bad)?;
    let (group, revision) = rest.rsplit_once(':').ok_or_else(bad)?;
    if revision.is_empty() || !revision.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let name = group
        .strip_prefix(THING_GROUP_PREFIX)
        .or_else(|| group.strip_prefix(THING_PREFIX))
        .ok_or_else(bad)?;
    if name.is_empty() || name.len() > 128 {
        return Err(bad());
    }
    Ok(group.to_string())
}

/// The ARN the cloud gives a target's `revision`-th deployment.
pub fn configuration_arn(group: &str, revision: u64) -> String {
    format!("arn:lichen:greengrass:::configuration:{group}:{revision}")
}

impl FleetConfiguration {
    /// The group this deployment replaces the roots of.
    pub fn group(&self) -> Result<String, FleetDocumentError> {
        group_of_configuration_arn(&self.configuration_arn)
    }

    /// The core deployment that runs this document: the group's roots replaced by exactly
    /// these components. `recipe_dir`/`artifact_dir`: where the agent put what it fetched.
    pub fn to_request(
        &self,
        recipe_dir: Option<std::path::PathBuf>,
        artifact_dir: Option<std::path::PathBuf>,
    ) -> Result<DeploymentRequest, FleetDocumentError> {
        if self.deployment_id.is_empty() || self.deployment_id.len() > 128 {
            return Err(doc_error("deploymentId", "must be 1 to 128 characters"));
        }
        if self.components.len() > MAX_FLEET_COMPONENTS {
            return Err(doc_error(
                "components",
                format!(
                    "{} components; at most {MAX_FLEET_COMPONENTS}",
                    self.components.len()
                ),
            ));
        }
        let mut request = DeploymentRequest {
            group_name: Some(self.group()?),
            deployment_id: Some(self.deployment_id.clone()),
            replace_group_roots: true,
            failure_policy: self.failure_handling_policy,
            recipe_dir,
            artifact_dir,
            ..Default::default()
        };
        if let Some(policy) = self.component_update_policy {
            request.component_update_policy = ComponentUpdatePolicy {
                action: policy.action,
                timeout_in_seconds: policy.timeout,
            };
        }
        request.configuration_validation_timeout_secs =
            self.configuration_validation_policy.map(|p| p.timeout);
        for (name, component) in &self.components {
            request
                .root_components_to_add
                .insert(name.clone(), component.version.clone());
            if let Some(update) = &component.configuration_update {
                let merge = match &update.merge {
                    None => None,
                    Some(serde_json::Value::String(text)) if text.trim().is_empty() => None,
                    Some(serde_json::Value::String(text)) => {
                        Some(serde_json::from_str(text).map_err(|e| {
                            doc_error(
                                format!("components.{name}.configurationUpdate.merge"),
                                format!("not a JSON document: {e}"),
                            )
                        })?)
                    }
                    Some(value) => Some(value.clone()),
                };
                if let Some(m) = &merge
                    && !m.is_object()
                {
                    return Err(doc_error(
                        format!("components.{name}.configurationUpdate.merge"),
                        "must be a JSON object",
                    ));
                }
                request.configuration_updates.insert(
                    name.clone(),
                    ConfigurationUpdate {
                        reset: update.reset.clone(),
                        merge,
                    },
                );
            }
            if let Some(run_with) = &component.run_with {
                request.run_with.insert(name.clone(), run_with.clone());
            }
        }
        Ok(request)
    }
}

/// `desired` of the `AWSManagedGreengrassV2Deployment` shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowDeploymentDesired {
    pub fleet_config: FleetConfiguration,
    /// `ACTIVE`, or `CANCELED` to cancel the thing's deployment.
    pub desired_status: String,
}

/// What a core reports for a deployment (`reported` of the deployment shadow; the job
/// execution's `statusDetails` carry the same under [`status_keys`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatusDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_cause: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_stack: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_types: Vec<String>,
}

/// `reported` of the deployment shadow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowDeploymentReported {
    pub fleet_configuration_arn_for_status: String,
    /// QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED.
    pub status: String,
    #[serde(default)]
    pub status_details: DeploymentStatusDetails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ggc_version: Option<String>,
}

/// One component in a fleet-status message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatusComponent {
    pub component_name: String,
    pub version: String,
    #[serde(default)]
    pub fleet_config_arns: Vec<String>,
    /// NEW, INSTALLED, STARTING, RUNNING, STOPPING, ERRORED, BROKEN, FINISHED.
    pub state: String,
    #[serde(default)]
    pub is_root: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_status_details: Option<serde_json::Value>,
}

/// `deploymentInformation` of a fleet-status message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatusDeployment {
    pub status: String,
    #[serde(default)]
    pub status_details: DeploymentStatusDetails,
    pub fleet_configuration_arn_for_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
}

/// The message a core publishes on `$aws/things/<thing>/greengrassv2/health/json`
/// (`greengrass-dg/device-status.md`; Greengrass `FleetStatusDetails`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatusMessage {
    pub ggc_version: String,
    pub platform: String,
    pub architecture: String,
    pub thing: String,
    /// HEALTHY or UNHEALTHY.
    pub overall_device_status: String,
    pub sequence_number: u64,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
    /// COMPLETE or PARTIAL.
    pub message_type: String,
    /// LOCAL_DEPLOYMENT, THING_DEPLOYMENT, THING_GROUP_DEPLOYMENT, COMPONENT_STATUS_CHANGE,
    /// RECONNECT, NUCLEUS_LAUNCH, CADENCE, …
    pub trigger: String,
    #[serde(default)]
    pub components: Vec<FleetStatusComponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_information: Option<FleetStatusDeployment>,
}

/// `$aws/things/<thing>/greengrassv2/health/json`.
pub fn fleet_status_topic(thing: &str) -> String {
    format!("$aws/things/{thing}/greengrassv2/health/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> serde_json::Value {
        json!({
            "deploymentId": "d-1",
            "configurationArn": "arn:lichen:greengrass:::configuration:thinggroup/line-1:3",
            "creationTimestamp": 1_700_000_000_000u64,
            "components": {
                "com.example.A": {
                    "version": "1.0.0",
                    "configurationUpdate": {"merge": "{\"x\":1}", "reset": ["/y"]},
                    "runWith": {"posixUser": "nobody"}
                },
                "com.example.B": {"version": "2.1.0"}
            },
            "failureHandlingPolicy": "DO_NOTHING",
            "componentUpdatePolicy": {"timeout": 30, "action": "SKIP_NOTIFY_COMPONENTS"},
            "configurationValidationPolicy": {"timeout": 5}
        })
    }

    #[test]
    fn a_group_document_becomes_a_replacing_request() {
        let config: FleetConfiguration = serde_json::from_value(doc()).unwrap();
        let req = config.to_request(None, None).unwrap();
        assert_eq!(req.group_name.as_deref(), Some("thinggroup/line-1"));
        assert_eq!(req.deployment_id.as_deref(), Some("d-1"));
        assert!(req.replace_group_roots);
        assert_eq!(req.failure_policy, FailurePolicy::DoNothing);
        assert_eq!(req.root_components_to_add["com.example.B"], "2.1.0");
        let update = &req.configuration_updates["com.example.A"];
        assert_eq!(update.merge, Some(json!({"x": 1})));
        assert_eq!(update.reset, vec!["/y".to_string()]);
        assert_eq!(
            req.run_with["com.example.A"].posix_user.as_deref(),
            Some("nobody")
        );
        assert_eq!(req.component_update_policy.timeout_in_seconds, 30);
        assert_eq!(req.configuration_validation_timeout_secs, Some(5));
        // The document survives a round trip unchanged.
        let back = serde_json::to_value(&config).unwrap();
        let again: FleetConfiguration = serde_json::from_value(back).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn bad_documents_name_the_field() {
        let mut d = doc();
        d["components"]["com.example.A"]["configurationUpdate"]["merge"] = json!("{not json");
        let config: FleetConfiguration = serde_json::from_value(d).unwrap();
        let err = config.to_request(None, None).unwrap_err();
        assert_eq!(
            err.field,
            "components.com.example.A.configurationUpdate.merge"
        );

        let mut d = doc();
        d["configurationArn"] = json!("arn:lichen:greengrass:::configuration:group/x:1");
        let config: FleetConfiguration = serde_json::from_value(d).unwrap();
        assert_eq!(
            config.to_request(None, None).unwrap_err().field,
            "configurationArn"
        );
    }

    #[test]
    fn configuration_arns() {
        assert_eq!(
            group_of_configuration_arn(&configuration_arn("thing/core-1", 7)).unwrap(),
            "thing/core-1"
        );
        assert_eq!(
            group_of_configuration_arn(
                "arn:aws:greengrass:us-east-1:123456789012:configuration:thinggroup/G:12"
            )
            .unwrap(),
            "thinggroup/G"
        );
        for bad in [
            "",
            "arn:x:configuration:thinggroup/G",
            "arn:x:configuration:thinggroup/G:",
            "arn:x:configuration:thinggroup/:1",
            "arn:x:configuration:thinggroup/G:1a",
        ] {
            assert!(group_of_configuration_arn(bad).is_err(), "{bad}");
        }
    }
}
