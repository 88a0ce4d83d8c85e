//! What is deployed on this core, persisted crash-safely, and the marker that makes an
//! interrupted deployment recoverable.
//!
//! Before a deployment changes anything it writes `deployments/ongoing.json` holding the
//! previous component set and configuration. Only after the new state is fully applied and
//! healthy (or rolled back) is the marker removed. A core that starts and finds the marker
//! knows a deployment was cut short and puts the previous state back.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::model::RunWith;
use crate::atomic::{read_json, write_json_atomic};
use crate::config::ConfigSnapshot;
use crate::error::{CoreError, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Installed {
    pub version: String,
    #[serde(default)]
    pub root: bool,
    #[serde(default)]
    pub builtin: bool,
    #[serde(default)]
    pub run_with: RunWith,
}

/// Every component on the core, by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstalledSet {
    pub components: BTreeMap<String, Installed>,
}

impl InstalledSet {
    pub fn load(path: &Path) -> Result<InstalledSet> {
        Ok(read_json(path)?.unwrap_or_default())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, self, 0o600)
    }

    pub fn roots(&self) -> impl Iterator<Item = (&String, &Installed)> {
        self.components.iter().filter(|(_, c)| c.root)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OngoingMarker {
    pub deployment_id: String,
    pub previous: InstalledSet,
    pub previous_config: ConfigSnapshot,
}

impl OngoingMarker {
    pub fn load(path: &Path) -> Result<Option<OngoingMarker>> {
        read_json(path)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, self, 0o600)
    }

    pub fn clear(path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CoreError::io(format!("removing {}", path.display()), e)),
        }?;
        if let Some(dir) = path.parent() {
            crate::atomic::sync_dir(dir)?;
        }
        Ok(())
    }
}
