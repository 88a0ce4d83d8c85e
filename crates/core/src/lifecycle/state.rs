//! Component lifecycle states, as Greengrass IPC exposes them.

use serde::{Deserialize, Serialize};

pub use lichen_model::component::LifecycleState;

/// What a component may report about itself through IPC `UpdateState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportedState {
    Running,
    Errored,
}
