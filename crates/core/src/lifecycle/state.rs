//! Component lifecycle states, as Greengrass IPC exposes them.

use serde::{Deserialize, Serialize};

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

/// What a component may report about itself through IPC `UpdateState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportedState {
    Running,
    Errored,
}
