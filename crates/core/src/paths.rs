//! Where everything lives under a core's root directory. The only place that knows the layout.

use std::path::{Path, PathBuf};

/// Used when neither `--root` nor `LICHEN_ROOT` is given.
pub const DEFAULT_ROOT: &str = "/var/lib/lichen";

/// `sun_path` holds 108 bytes including the NUL; longer socket paths cannot be bound directly.
pub const SUN_PATH_MAX: usize = lichen_sys::socket::SUN_PATH_MAX;

#[derive(Debug, Clone)]
pub struct RootLayout {
    root: PathBuf,
}

impl RootLayout {
    /// `root` is made absolute so that component environments and logs show full paths.
    pub fn new(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(root))
                .unwrap_or_else(|_| root.to_path_buf())
        };
        RootLayout { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lichen.lock")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.socket")
    }
    pub fn ipc_socket(&self) -> PathBuf {
        self.root.join("ipc.socket")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }
    pub fn config_store_file(&self) -> PathBuf {
        self.config_dir().join("effective.json")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn recipes_dir(&self) -> PathBuf {
        self.store_dir().join("recipes")
    }
    pub fn artifacts_dir(&self, component: &str, version: &str) -> PathBuf {
        self.store_dir()
            .join("artifacts")
            .join(component)
            .join(version)
    }
    pub fn unarchived_dir(&self, component: &str, version: &str) -> PathBuf {
        self.store_dir()
            .join("artifacts-unarchived")
            .join(component)
            .join(version)
    }
    pub fn deployments_dir(&self) -> PathBuf {
        self.root.join("deployments")
    }
    /// The deployed component set.
    pub fn installed_file(&self) -> PathBuf {
        self.config_dir().join("components.json")
    }
    /// Present only while a deployment is applying changes.
    pub fn ongoing_marker(&self) -> PathBuf {
        self.deployments_dir().join("ongoing.json")
    }
    pub fn deployment_records_dir(&self) -> PathBuf {
        self.deployments_dir().join("records")
    }
    /// Space kept back so that state can be written on a full disk ([`crate::reserve`]).
    pub fn space_reserve(&self) -> PathBuf {
        self.root.join("run").join("space.reserve")
    }

    /// Process groups started by the core (the journal is this path + `.journal`; a directory
    /// of one file per group in older roots), for cleanup after a crash.
    pub fn groups_dir(&self) -> PathBuf {
        self.root.join("run").join("groups")
    }
    /// How many times the core died inside the deployment in progress.
    pub fn attempt_marker(&self) -> PathBuf {
        self.deployments_dir().join("attempt.json")
    }
    /// The parent of every component's working directory.
    pub fn work_root(&self) -> PathBuf {
        self.root.join("work")
    }
    pub fn work_dir(&self, component: &str) -> PathBuf {
        self.work_root().join(component)
    }
    /// The CA the core trusts for its cloud endpoint, copied from `rootCaPath`.
    pub fn root_ca(&self) -> PathBuf {
        self.root.join("rootCA.pem")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn core_log(&self) -> PathBuf {
        self.logs_dir().join("lichen.log")
    }
    pub fn component_log(&self, component: &str) -> PathBuf {
        self.logs_dir().join(format!("{component}.log"))
    }
    pub fn broker_dir(&self) -> PathBuf {
        self.root.join("broker")
    }
    /// The cloud link's disk spool (QoS 1 publishes kept until the cloud's PUBACK).
    pub fn cloud_spool_dir(&self) -> PathBuf {
        self.root.join("cloud").join("spool")
    }
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// The IPC socket path to hand a component whose working directory is `work/<name>`.
    ///
    /// When the absolute path does not fit in `sun_path`, components get the relative path
    /// `../../ipc.socket` (as Greengrass does), which resolves from their cwd `work/<name>`.
    pub fn ipc_socket_for_component(&self) -> String {
        let abs = self.ipc_socket();
        if abs.as_os_str().len() <= SUN_PATH_MAX {
            abs.to_string_lossy().into_owned()
        } else {
            "../../ipc.socket".to_string()
        }
    }
}

/// Resolves the root: explicit flag, then `LICHEN_ROOT`, then [`DEFAULT_ROOT`].
pub fn resolve_root(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os("LICHEN_ROOT") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_ROOT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_roots_use_relative_socket_path() {
        let short = RootLayout::new("/tmp/r");
        assert_eq!(short.ipc_socket_for_component(), "/tmp/r/ipc.socket");
        let long = RootLayout::new(format!("/tmp/{}", "x".repeat(120)));
        assert_eq!(long.ipc_socket_for_component(), "../../ipc.socket");
    }

    #[test]
    fn relative_roots_become_absolute() {
        assert!(RootLayout::new("demo").root().is_absolute());
    }
}
