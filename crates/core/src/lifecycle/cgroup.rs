//! Resource limits and freezing through cgroup v2.
//!
//! The core creates `<cgroup root>/lichen/<component>` when the unified hierarchy is mounted
//! and writable, enables the memory and cpu controllers, and moves each step's process into
//! it. Where that is impossible (no cgroup v2, read-only mount, not root, controller missing),
//! [`CgroupSupport::probe`] says why, the core logs it once, `component details` shows it, and
//! components run without limits.

use std::path::{Path, PathBuf};

use crate::deployment::model::ResourceLimits;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone)]
pub enum CgroupSupport {
    Available { base: PathBuf },
    Unavailable { reason: String },
}

impl CgroupSupport {
    /// Checks whether limits can be applied under `root` (normally [`CGROUP_ROOT`]).
    pub fn probe(root: &Path) -> CgroupSupport {
        let controllers = root.join("cgroup.controllers");
        let Ok(available) = std::fs::read_to_string(&controllers) else {
            return CgroupSupport::Unavailable {
                reason: format!("cgroup v2 is not mounted at {}", root.display()),
            };
        };
        let base = root.join("lichen");
        if let Err(e) = std::fs::create_dir_all(&base) {
            return CgroupSupport::Unavailable {
                reason: format!("cannot create {}: {e}", base.display()),
            };
        }
        for ctl in ["memory", "cpu"] {
            if !available.split_whitespace().any(|c| c == ctl) {
                return CgroupSupport::Unavailable {
                    reason: format!(
                        "the {ctl} controller is not available in {}",
                        root.display()
                    ),
                };
            }
        }
        // Controllers must be enabled in every ancestor's subtree_control.
        for dir in [root, base.as_path()] {
            let ctl = dir.join("cgroup.subtree_control");
            if let Err(e) = std::fs::write(&ctl, "+memory +cpu") {
                return CgroupSupport::Unavailable {
                    reason: format!(
                        "cannot enable memory/cpu controllers in {}: {e}",
                        ctl.display()
                    ),
                };
            }
        }
        CgroupSupport::Available { base }
    }

    pub fn unavailable_reason(&self) -> Option<&str> {
        match self {
            CgroupSupport::Available { .. } => None,
            CgroupSupport::Unavailable { reason } => Some(reason),
        }
    }

    /// Creates the component's group with `limits`. Returns the group dir.
    pub fn prepare(&self, component: &str, limits: &ResourceLimits) -> Result<PathBuf, String> {
        let CgroupSupport::Available { base } = self else {
            return Err(self.unavailable_reason().unwrap_or_default().to_string());
        };
        let dir = base.join(component);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let memory = limits
            .memory
            .map(|kb| (kb.saturating_mul(1024)).to_string())
            .unwrap_or_else(|| "max".into());
        write(&dir.join("memory.max"), &memory)?;
        let period = 100_000u64;
        let cpu = limits
            .cpus
            .filter(|c| *c > 0.0)
            .map(|c| format!("{} {period}", ((c * period as f64) as u64).max(1000)))
            .unwrap_or_else(|| format!("max {period}"));
        write(&dir.join("cpu.max"), &cpu)?;
        Ok(dir)
    }

    /// Moves a process (and so its future children) into the component's group.
    pub fn attach(group: &Path, pid: u32) -> Result<(), String> {
        write(&group.join("cgroup.procs"), &pid.to_string())
    }

    /// Freezes or thaws everything in the group.
    pub fn freeze(group: &Path, frozen: bool) -> Result<(), String> {
        write(&group.join("cgroup.freeze"), if frozen { "1" } else { "0" })
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_hierarchy_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = CgroupSupport::probe(dir.path());
        let reason = s.unavailable_reason().unwrap();
        assert!(reason.contains("not mounted"), "{reason}");
        let err = s.prepare("c", &ResourceLimits::default()).unwrap_err();
        assert!(err.contains("not mounted"));
    }

    #[test]
    fn limits_are_written_in_cgroup_units() {
        // A fake hierarchy: plain files accept the writes a real one would.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory io").unwrap();
        let s = CgroupSupport::probe(dir.path());
        assert!(s.unavailable_reason().is_none());
        let group = s
            .prepare(
                "c",
                &ResourceLimits {
                    memory: Some(1024),
                    cpus: Some(0.5),
                },
            )
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(group.join("memory.max")).unwrap(),
            "1048576"
        );
        assert_eq!(
            std::fs::read_to_string(group.join("cpu.max")).unwrap(),
            "50000 100000"
        );
    }
}
