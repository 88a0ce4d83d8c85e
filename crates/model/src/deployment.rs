//! Deployment requests and records, shared by the CLI, the control channel, IPC and the cloud.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The group name Greengrass uses for local deployments.
pub const LOCAL_DEPLOYMENT_GROUP: &str = "LOCAL_DEPLOYMENT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailurePolicy {
    #[default]
    Rollback,
    DoNothing,
}

/// Per-component configuration update: RESET (JSON pointers) runs before MERGE.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationUpdate {
    #[serde(
        default,
        rename = "RESET",
        alias = "reset",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub reset: Vec<String>,
    #[serde(
        default,
        rename = "MERGE",
        alias = "merge",
        skip_serializing_if = "Option::is_none"
    )]
    pub merge: Option<serde_json::Value>,
}

/// Per-component run-with settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunWith {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posix_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_resource_limits: Option<ResourceLimits>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Kilobytes, as in Greengrass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Number of CPUs (may be fractional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

/// What `deployment create` and IPC `CreateLocalDeployment` ask for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// Root components to add or change: name → version.
    #[serde(default)]
    pub root_components_to_add: BTreeMap<String, String>,
    #[serde(default)]
    pub root_components_to_remove: Vec<String>,
    #[serde(default)]
    pub configuration_updates: BTreeMap<String, ConfigurationUpdate>,
    #[serde(default)]
    pub run_with: BTreeMap<String, RunWith>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_dir: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_dir: Option<std::path::PathBuf>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Set by the fleet deployment agent: the cloud's `deploymentId`, used as the local
    /// record's id so that a deployment delivered twice (a reconnect, a re-sent job) is
    /// queued once. Local deployments leave it unset and get a generated id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Fleet deployments (`group_name` = `thinggroup/<G>` or `thing/<T>`) carry the target's
    /// whole set of root components: `root_components_to_add` replaces what that group had,
    /// and the device runs the union over every group. Local deployments (`false`) add and
    /// remove incrementally.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace_group_roots: bool,
    #[serde(default, skip_serializing_if = "ComponentUpdatePolicy::is_default")]
    pub component_update_policy: ComponentUpdatePolicy,
    /// Seconds components get to validate a configuration (Greengrass default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_validation_timeout_secs: Option<u64>,
}

/// What happens to components before an update (Greengrass `componentUpdatePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ComponentUpdateAction {
    /// Components subscribed to component updates get a pre-update event and may defer.
    NotifyComponents,
    SkipNotifyComponents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentUpdatePolicy {
    pub action: ComponentUpdateAction,
    /// How long components may defer, in seconds (Greengrass default 60).
    pub timeout_in_seconds: u64,
}

impl Default for ComponentUpdatePolicy {
    fn default() -> Self {
        ComponentUpdatePolicy {
            action: ComponentUpdateAction::NotifyComponents,
            timeout_in_seconds: 60,
        }
    }
}

impl ComponentUpdatePolicy {
    pub fn is_default(&self) -> bool {
        *self == ComponentUpdatePolicy::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    Canceled,
}

impl DeploymentStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Succeeded | DeploymentStatus::Failed | DeploymentStatus::Canceled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DetailedStatus {
    Successful,
    FailedNoStateChange,
    FailedRollbackNotRequested,
    FailedRollbackComplete,
    FailedUnableToRollback,
    Rejected,
}

/// A deployment as stored and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    pub deployment_id: String,
    pub status: DeploymentStatus,
    /// Milliseconds since the epoch.
    pub created_on: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_status: Option<DetailedStatus>,
    /// The message naming what failed (Greengrass `deploymentFailureCause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_cause: Option<String>,
    /// Error codes, general to specific: `DEPLOYMENT_FAILURE`, then the specific code
    /// (e.g. `NO_AVAILABLE_COMPONENT_VERSION`), as Greengrass's `errorStack`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_stack: Vec<String>,
    /// Categories of the failure (`DEPENDENCY_ERROR`, `REQUEST_ERROR`, …), as Greengrass's
    /// `errorTypes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_types: Vec<String>,
    /// What the deployment could not do although it did not fail, e.g. a built-in service
    /// it depends on that lichen does not provide yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_details: Vec<String>,
    /// What the deployment is doing now, for progress displays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    pub request: DeploymentRequest,
}
