//! Checks a deployment request must pass before it is recorded: a record that could not be
//! read back (or that would break `deployment list`) must never reach the disk.

use super::model::DeploymentRequest;
use crate::config::tree;
use crate::error::{CoreError, Result};

/// Refuses a request whose configuration updates nest deeper than a component configuration
/// may ([`tree::MAX_CONFIG_DEPTH`]), naming the component and field.
pub fn check_request(request: &DeploymentRequest) -> Result<()> {
    for (name, update) in &request.configuration_updates {
        if let Some(merge) = &update.merge {
            tree::check_depth(&format!("configurationUpdates.{name}.MERGE"), 0, merge)
                .map_err(CoreError::InvalidArgument)?;
        }
        for pointer in &update.reset {
            let segments = pointer.matches('/').count();
            if segments > tree::MAX_CONFIG_DEPTH {
                return Err(CoreError::InvalidArgument(format!(
                    "configurationUpdates.{name}.RESET: a pointer has {segments} segments; at \
                     most {} are allowed",
                    tree::MAX_CONFIG_DEPTH
                )));
            }
        }
    }
    Ok(())
}
