//! What the fleet agent reports: a deployment's result as job-execution `statusDetails` and as
//! the deployment shadow's `reported`, and the fleet-status message
//! (`greengrass-dg/device-status.md`).
//!
//! Bounds: at most [`MAX_STATUS_DETAILS`] keys, each value at most [`MAX_STATUS_VALUE_BYTES`]
//! bytes (the AWS IoT Jobs limits); longer values are cut on a character boundary.

use std::collections::BTreeMap;

use lichen_core::CoreHandle;
use lichen_model::deployment::{DeploymentRecord, DeploymentStatus};
use lichen_model::fleet::{
    DeploymentStatusDetails, FleetStatusComponent, FleetStatusDeployment, FleetStatusMessage,
    status_keys,
};

/// Keys of a job execution's `statusDetails` (AWS IoT Jobs allows 10).
pub const MAX_STATUS_DETAILS: usize = 10;
/// Bytes of one `statusDetails` value (AWS IoT Jobs allows 1024).
pub const MAX_STATUS_VALUE_BYTES: usize = 1024;
/// The Greengrass version the core reports (what `GGC_VERSION` says to components).
pub const GGC_VERSION: &str = "2.14.0";

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The job/shadow status word of a core deployment status.
pub fn status_word(status: DeploymentStatus) -> &'static str {
    match status {
        DeploymentStatus::Queued => "QUEUED",
        DeploymentStatus::InProgress => "IN_PROGRESS",
        DeploymentStatus::Succeeded => "SUCCEEDED",
        DeploymentStatus::Failed => "FAILED",
        DeploymentStatus::Canceled => "CANCELED",
    }
}

/// The outcome of one fleet deployment as the agent reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// SUCCEEDED, FAILED or CANCELED.
    pub status: &'static str,
    pub details: DeploymentStatusDetails,
}

impl Outcome {
    pub fn failed(cause: impl Into<String>) -> Outcome {
        Outcome {
            status: "FAILED",
            details: DeploymentStatusDetails {
                detailed_status: Some("FAILED_NO_STATE_CHANGE".into()),
                failure_cause: Some(truncate(&cause.into(), MAX_STATUS_VALUE_BYTES)),
                error_stack: vec!["DEPLOYMENT_FAILURE".into()],
                error_types: vec!["REQUEST_ERROR".into()],
            },
        }
    }

    /// The result of a finished core deployment.
    pub fn of_record(record: &DeploymentRecord) -> Outcome {
        let detailed = record.detailed_status.and_then(|d| {
            serde_json::to_value(d)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
        });
        Outcome {
            status: status_word(record.status),
            details: DeploymentStatusDetails {
                detailed_status: detailed,
                failure_cause: record
                    .failure_cause
                    .as_deref()
                    .map(|c| truncate(c, MAX_STATUS_VALUE_BYTES)),
                error_stack: record.error_stack.clone(),
                error_types: record.error_types.clone(),
            },
        }
    }
}

/// `details` as job-execution `statusDetails`: string values under [`status_keys`], bounded.
pub fn job_status_details(details: &DeploymentStatusDetails) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        if out.len() < MAX_STATUS_DETAILS && !value.is_empty() {
            out.insert(key.to_string(), truncate(&value, MAX_STATUS_VALUE_BYTES));
        }
    };
    if let Some(d) = &details.detailed_status {
        put(status_keys::DETAILED_STATUS, d.clone());
    }
    if let Some(c) = &details.failure_cause {
        put(status_keys::FAILURE_CAUSE, c.clone());
    }
    // Greengrass writes the lists as JSON arrays in one string value.
    if !details.error_stack.is_empty() {
        put(
            status_keys::ERROR_STACK,
            serde_json::to_string(&details.error_stack).unwrap_or_default(),
        );
    }
    if !details.error_types.is_empty() {
        put(
            status_keys::ERROR_TYPES,
            serde_json::to_string(&details.error_types).unwrap_or_default(),
        );
    }
    out
}

/// Why a fleet-status message is sent (Greengrass `Trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Reconnect,
    ThingDeployment,
    ThingGroupDeployment,
    ComponentStatusChange,
    Cadence,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Reconnect => "RECONNECT",
            Trigger::ThingDeployment => "THING_DEPLOYMENT",
            Trigger::ThingGroupDeployment => "THING_GROUP_DEPLOYMENT",
            Trigger::ComponentStatusChange => "COMPONENT_STATUS_CHANGE",
            Trigger::Cadence => "CADENCE",
        }
    }
}

/// The last fleet deployment's result, carried in the next fleet-status messages.
#[derive(Debug, Clone, PartialEq)]
pub struct LastDeployment {
    pub deployment_id: String,
    pub configuration_arn: String,
    pub outcome: Outcome,
}

/// A COMPLETE fleet-status message of the core's components now.
pub fn fleet_status(
    core: &CoreHandle,
    thing: &str,
    sequence_number: u64,
    trigger: Trigger,
    last: Option<&LastDeployment>,
) -> FleetStatusMessage {
    use lichen_model::component::LifecycleState;
    let components = core.list_components();
    let unhealthy = components
        .iter()
        .any(|c| matches!(c.state, LifecycleState::Errored | LifecycleState::Broken));
    FleetStatusMessage {
        ggc_version: GGC_VERSION.into(),
        platform: std::env::consts::OS.into(),
        architecture: std::env::consts::ARCH.into(),
        thing: thing.to_string(),
        overall_device_status: if unhealthy { "UNHEALTHY" } else { "HEALTHY" }.into(),
        sequence_number,
        timestamp: now_ms(),
        message_type: "COMPLETE".into(),
        trigger: trigger.as_str().into(),
        components: components
            .into_iter()
            .map(|c| FleetStatusComponent {
                fleet_config_arns: match last {
                    Some(l) if c.root => vec![l.configuration_arn.clone()],
                    _ => Vec::new(),
                },
                component_name: c.component_name,
                version: c.version,
                state: c.state.as_str().to_string(),
                is_root: c.root,
                component_status_details: c.status_reason.map(
                    |r| serde_json::json!({ "statusReason": truncate(&r, MAX_STATUS_VALUE_BYTES) }),
                ),
            })
            .collect(),
        deployment_information: last.map(|l| FleetStatusDeployment {
            status: l.outcome.status.into(),
            status_details: l.outcome.details.clone(),
            fleet_configuration_arn_for_status: l.configuration_arn.clone(),
            deployment_id: Some(l.deployment_id.clone()),
        }),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_bounded() {
        let long = "é".repeat(2000);
        let outcome = Outcome::failed(long);
        let cause = outcome.details.failure_cause.clone().unwrap();
        assert!(cause.len() <= MAX_STATUS_VALUE_BYTES);
        assert!(cause.chars().all(|c| c == 'é'));
        let map = job_status_details(&outcome.details);
        assert_eq!(map[status_keys::DETAILED_STATUS], "FAILED_NO_STATE_CHANGE");
        assert_eq!(map[status_keys::ERROR_STACK], "[\"DEPLOYMENT_FAILURE\"]");
        assert!(map.len() <= MAX_STATUS_DETAILS);
        assert!(map.values().all(|v| v.len() <= MAX_STATUS_VALUE_BYTES));
    }
}
