//! Checks a deployment request before it is queued, so that nothing stored in its record
//! (or later in the configuration store) is something the core could not load again.

use super::model::DeploymentRequest;
use crate::config::tree::{MAX_CONFIG_DEPTH, check_depth, pointer_keys};
use crate::error::{CoreError, Result};

/// Refuses bad component names and configuration updates that would nest a configuration
/// deeper than [`MAX_CONFIG_DEPTH`], naming the field.
pub fn validate_request(request: &DeploymentRequest) -> Result<()> {
    let invalid = |field: String, message: String| {
        CoreError::InvalidArgument(format!("deployment request: {field}: {message}"))
    };
    let name_ok = |field: &str, name: &str| {
        lichen_recipe::check_component_name(name)
            .map_err(|m| invalid(format!("{field} component name"), m))
    };
    for name in request.root_components_to_add.keys() {
        name_ok("rootComponentsToAdd", name)?;
    }
    for name in &request.root_components_to_remove {
        name_ok("rootComponentsToRemove", name)?;
    }
    for name in request.run_with.keys() {
        name_ok("runWith", name)?;
    }
    for (name, update) in &request.configuration_updates {
        name_ok("configurationUpdates", name)?;
        let field = || format!("configurationUpdates.{name:?}");
        if let Some(merge) = &update.merge {
            check_depth("MERGE", 0, merge).map_err(|m| invalid(field(), m))?;
        }
        for pointer in &update.reset {
            let keys =
                pointer_keys(pointer).map_err(|m| invalid(field(), format!("RESET: {m}")))?;
            if keys.len() > MAX_CONFIG_DEPTH {
                return Err(invalid(
                    field(),
                    format!(
                        "RESET pointer has {} segments; at most {MAX_CONFIG_DEPTH} are allowed",
                        keys.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}
