//! Checks a deployment request must pass before it is recorded: a record that could not be
//! read back (or that would break `deployment list`) must never reach the disk.

use super::model::DeploymentRequest;
use crate::config::tree;
use crate::error::{CoreError, Result};

/// Refuses a request that names a component with a bidirectional-control character (it
/// could pose as another name in listings and logs), or whose configuration updates nest
/// deeper than a component configuration may ([`tree::MAX_CONFIG_DEPTH`]); the error names
/// the field.
pub fn check_request(request: &DeploymentRequest) -> Result<()> {
    if let Some(id) = &request.deployment_id {
        check_deployment_id(id)?;
    }
    if let Some(group) = &request.group_name {
        check_group_name(group)?;
    }
    let names = [
        (
            "rootComponentsToAdd",
            request.root_components_to_add.keys().collect::<Vec<_>>(),
        ),
        (
            "rootComponentsToRemove",
            request.root_components_to_remove.iter().collect(),
        ),
        (
            "configurationUpdates",
            request.configuration_updates.keys().collect(),
        ),
        ("runWith", request.run_with.keys().collect()),
    ];
    for (field, list) in names {
        for name in list {
            if let Some(c) = lichen_recipe::find_bidi_control(name) {
                return Err(CoreError::InvalidArgument(format!(
                    "{field}: component name {name:?} contains the bidirectional-control \
                     character {c:?}, which a component name may not contain"
                )));
            }
        }
    }
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

/// Longest `groupName` accepted (`thinggroup/` + a 128-character thing group name fits).
pub const MAX_GROUP_NAME_LEN: usize = 256;

/// A group name keys the installed set's roots and appears in logs and conflict messages:
/// no control or bidirectional-control characters, at most [`MAX_GROUP_NAME_LEN`] bytes.
fn check_group_name(group: &str) -> Result<()> {
    if group.len() > MAX_GROUP_NAME_LEN {
        return Err(CoreError::InvalidArgument(format!(
            "groupName: {} bytes; at most {MAX_GROUP_NAME_LEN} are allowed",
            group.len()
        )));
    }
    if let Some(c) = group
        .chars()
        .find(|c| c.is_control())
        .or_else(|| lichen_recipe::find_bidi_control(group))
    {
        return Err(CoreError::InvalidArgument(format!(
            "groupName {group:?} contains the control character {c:?}"
        )));
    }
    Ok(())
}

/// Longest `deploymentId` accepted (Greengrass ids are 36-character UUIDs).
pub const MAX_DEPLOYMENT_ID_LEN: usize = 128;

/// A fleet deployment's id names its record file: ASCII letters, digits, `-`, `_`, `.` and
/// `:`, not starting with `.`, at most [`MAX_DEPLOYMENT_ID_LEN`] characters.
fn check_deployment_id(id: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if id.is_empty()
        || id.len() > MAX_DEPLOYMENT_ID_LEN
        || id.starts_with('.')
        || !id.chars().all(allowed)
    {
        return Err(CoreError::InvalidArgument(format!(
            "deploymentId {:?}: must be 1 to {MAX_DEPLOYMENT_ID_LEN} characters of letters, \
             digits, '-', '_', '.' or ':', not starting with '.'",
            id.chars()
                .take(MAX_DEPLOYMENT_ID_LEN + 1)
                .collect::<String>()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_names_are_refused_naming_the_field() {
        let spoof = "com.example.\u{202E}gnp.exe".to_string();
        let mut add = DeploymentRequest::default();
        add.root_components_to_add
            .insert(spoof.clone(), "1.0.0".into());
        let mut remove = DeploymentRequest::default();
        remove.root_components_to_remove.push(spoof.clone());
        let mut config = DeploymentRequest::default();
        config
            .configuration_updates
            .insert(spoof.clone(), Default::default());
        let mut run_with = DeploymentRequest::default();
        run_with.run_with.insert(spoof.clone(), Default::default());
        for (req, field) in [
            (add, "rootComponentsToAdd"),
            (remove, "rootComponentsToRemove"),
            (config, "configurationUpdates"),
            (run_with, "runWith"),
        ] {
            let msg = check_request(&req).unwrap_err().to_string();
            assert!(
                msg.contains(field) && msg.contains("bidirectional"),
                "{msg}"
            );
            assert!(!msg.contains('\u{202E}'), "escaped: {msg}");
        }
        let mut fine = DeploymentRequest::default();
        fine.root_components_to_add
            .insert("com.example.Grüße".into(), "1.0.0".into());
        check_request(&fine).unwrap();
    }

    #[test]
    fn group_names_with_control_characters_or_too_long_are_refused() {
        for bad in [
            "thinggroup/a\nb".to_string(),
            "thinggroup/\u{202E}x".to_string(),
            format!("thinggroup/{}", "g".repeat(MAX_GROUP_NAME_LEN)),
        ] {
            let req = DeploymentRequest {
                group_name: Some(bad.clone()),
                ..Default::default()
            };
            let msg = check_request(&req).unwrap_err().to_string();
            assert!(msg.contains("groupName"), "{bad:?}: {msg}");
            assert!(!msg.contains('\n') && !msg.contains('\u{202E}'), "{msg}");
        }
        for fine in ["thinggroup/Fleet-1", "thing/core-1", "LOCAL_DEPLOYMENT"] {
            let req = DeploymentRequest {
                group_name: Some(fine.into()),
                ..Default::default()
            };
            check_request(&req).unwrap();
        }
    }

    #[test]
    fn configuration_updates_past_the_depth_bound_are_refused() {
        let mut merge = serde_json::json!(1);
        for _ in 0..tree::MAX_CONFIG_DEPTH * 10 {
            merge = serde_json::json!({ "k": merge });
        }
        let mut req = DeploymentRequest::default();
        req.configuration_updates.insert(
            "com.example.A".into(),
            super::super::model::ConfigurationUpdate {
                reset: Vec::new(),
                merge: Some(merge),
            },
        );
        let msg = check_request(&req).unwrap_err().to_string();
        assert!(
            msg.contains("configurationUpdates.com.example.A.MERGE"),
            "{msg}"
        );
        let pointer = "/k".repeat(tree::MAX_CONFIG_DEPTH * 10);
        req.configuration_updates.insert(
            "com.example.A".into(),
            super::super::model::ConfigurationUpdate {
                reset: vec![pointer],
                merge: None,
            },
        );
        let msg = check_request(&req).unwrap_err().to_string();
        assert!(
            msg.contains("configurationUpdates.com.example.A.RESET"),
            "{msg}"
        );
        let mut fine = DeploymentRequest::default();
        fine.root_components_to_add
            .insert("com.example.Grüße".into(), "1.0.0".into());
        check_request(&fine).unwrap();
    }
}
