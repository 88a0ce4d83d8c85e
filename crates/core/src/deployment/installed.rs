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

use super::model::{LOCAL_DEPLOYMENT_GROUP, RunWith};
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

/// Root components one deployment group asks for: name → version.
pub type GroupRoots = BTreeMap<String, String>;

/// Every component on the core, by name, and the root components of every deployment group
/// (`LOCAL_DEPLOYMENT`, `thinggroup/<G>`, `thing/<T>`). The components are the union of the
/// groups' roots and their dependencies; `Installed::root` says a component is a root of at
/// least one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstalledSet {
    pub components: BTreeMap<String, Installed>,
    /// Absent in files written before groups existed: their roots were all local.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupRoots>,
}

impl InstalledSet {
    pub fn load(path: &Path) -> Result<InstalledSet> {
        let mut set: InstalledSet = read_json(path)?.unwrap_or_default();
        set.groups = set.group_roots();
        Ok(set)
    }

    /// The roots per group. A set without groups (an older file, or one built in memory
    /// from root flags) has its roots in `LOCAL_DEPLOYMENT`.
    pub fn group_roots(&self) -> BTreeMap<String, GroupRoots> {
        if !self.groups.is_empty() {
            return self.groups.clone();
        }
        let local: GroupRoots = self
            .roots()
            .map(|(n, c)| (n.clone(), c.version.clone()))
            .collect();
        if local.is_empty() {
            return BTreeMap::new();
        }
        BTreeMap::from([(LOCAL_DEPLOYMENT_GROUP.to_string(), local)])
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

/// How many times the core has started the deployment it is running, persisted before each
/// start. A deployment that kills the core (say, by exhausting memory) would otherwise be
/// re-run at every start, and the core would crash-loop: at [`MAX_ATTEMPTS`] starts in a
/// row without an end, the next start fails it instead of running it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptMarker {
    pub deployment_id: String,
    pub attempts: u32,
}

/// Starts of one deployment, each ended by the death of the core, after which it is failed.
pub const MAX_ATTEMPTS: u32 = 2;

impl AttemptMarker {
    pub fn load(path: &Path) -> Result<Option<AttemptMarker>> {
        read_json(path)
    }

    /// Records one more start of `deployment_id` (the first, if the marker names another).
    pub fn begin(path: &Path, deployment_id: &str) -> Result<AttemptMarker> {
        let attempts = match Self::load(path).ok().flatten() {
            Some(m) if m.deployment_id == deployment_id => m.attempts.saturating_add(1),
            _ => 1,
        };
        let marker = AttemptMarker {
            deployment_id: deployment_id.to_string(),
            attempts,
        };
        write_json_atomic(path, &marker, 0o600)?;
        Ok(marker)
    }

    pub fn clear(path: &Path) -> Result<()> {
        OngoingMarker::clear(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_starts_of_the_same_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::paths::RootLayout::new(dir.path()).attempt_marker();
        assert_eq!(AttemptMarker::begin(&path, "a").unwrap().attempts, 1);
        assert_eq!(AttemptMarker::begin(&path, "a").unwrap().attempts, 2);
        assert_eq!(AttemptMarker::begin(&path, "b").unwrap().attempts, 1);
        assert_eq!(
            AttemptMarker::load(&path).unwrap().unwrap().deployment_id,
            "b"
        );
        AttemptMarker::clear(&path).unwrap();
        assert_eq!(AttemptMarker::load(&path).unwrap(), None);
        assert_eq!(AttemptMarker::begin(&path, "b").unwrap().attempts, 1);
    }

    #[test]
    fn a_file_without_groups_loads_its_roots_as_local_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("components.json");
        // As written before groups existed.
        std::fs::write(
            &path,
            r#"{"components":{"app":{"version":"1.0.0","root":true},"lib":{"version":"2.0.0"}}}"#,
        )
        .unwrap();
        let set = InstalledSet::load(&path).unwrap();
        assert_eq!(
            set.groups,
            BTreeMap::from([(
                "LOCAL_DEPLOYMENT".to_string(),
                BTreeMap::from([("app".to_string(), "1.0.0".to_string())])
            )])
        );
        // Groups persist as they are, and an empty file stays empty.
        let mut grouped = set.clone();
        grouped.groups.insert(
            "thinggroup/fleet".into(),
            BTreeMap::from([("app".to_string(), "1.0.0".to_string())]),
        );
        grouped.save(&path).unwrap();
        assert_eq!(InstalledSet::load(&path).unwrap(), grouped);
        let empty = dir.path().join("none.json");
        assert!(InstalledSet::load(&empty).unwrap().groups.is_empty());
    }
}
