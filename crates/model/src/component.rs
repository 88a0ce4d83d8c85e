//! Components as the CLI, IPC `GetComponentDetails` and the cloud see them.

use serde::{Deserialize, Serialize};

/// Component lifecycle states, as Greengrass IPC exposes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LifecycleState {
    New,
    Installed,
    Starting,
    Running,
    Stopping,
    Finished,
    Errored,
    Broken,
}

impl LifecycleState {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleState::New => "NEW",
            LifecycleState::Installed => "INSTALLED",
            LifecycleState::Starting => "STARTING",
            LifecycleState::Running => "RUNNING",
            LifecycleState::Stopping => "STOPPING",
            LifecycleState::Finished => "FINISHED",
            LifecycleState::Errored => "ERRORED",
            LifecycleState::Broken => "BROKEN",
        }
    }

    /// RUNNING or FINISHED: what dependents wait for and what a deployment calls success.
    pub fn is_up(self) -> bool {
        matches!(self, LifecycleState::Running | LifecycleState::Finished)
    }
}

impl std::fmt::Display for LifecycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A component as `component list` / `GetComponentDetails` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInfo {
    pub component_name: String,
    pub version: String,
    pub state: LifecycleState,
    pub configuration: serde_json::Value,
    /// Why the component is in its state (last error, exit code, BROKEN reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// Built-in components are served by the core itself (e.g. aws.greengrass.Nucleus).
    #[serde(default)]
    pub builtin: bool,
    #[serde(default)]
    pub root: bool,
    /// Resource limits actually applied, or why they could not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_limits: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

/// A metric a component reported with `PutComponentMetric`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    /// BYTES, BYTES_PER_SECOND, COUNT, COUNT_PER_SECOND, MEGABYTES, SECONDS.
    pub unit: String,
    pub value: f64,
    /// Milliseconds since the epoch when the core recorded it.
    #[serde(default)]
    pub timestamp: u64,
}
