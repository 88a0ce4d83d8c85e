//! The core's own settings, read once from `--config FILE` (YAML or JSON).
//!
//! Every key is known: a typo such as `posixUsr` is an error naming the key and the file.
//! Sections that belong to other services are explicit and kept opaque (`broker`), and so
//! is the Greengrass `services` tree (per-service configuration, free-form).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Settings {
    /// `{iot:thingName}` and `AWS_IOT_THING_NAME`.
    pub thing_name: String,
    pub aws_region: String,
    /// `user[:group]` that components run as when the core is root (Greengrass
    /// `runWithDefault.posixUser`). Empty means: `ggc_user:ggc_group` when it exists, else
    /// `nobody:nogroup` (never root); when the core is not root, the core's own user.
    pub posix_user: String,
    /// Group (besides root) allowed to use the admin control channel.
    pub admin_group: String,
    pub logging: LoggingSettings,
    pub ipc: IpcSettings,
    /// Seconds a deployment waits for a component to reach RUNNING/FINISHED when its recipe
    /// sets no Startup timeout. Greengrass has no such bound for Run; we use one so that a
    /// deployment always ends.
    pub deployment_startup_timeout_secs: u64,
    /// Seconds every new or restarted component must stay RUNNING or FINISHED, with no
    /// error, before a deployment succeeds. 0 gives the Greengrass behaviour (success as
    /// soon as each component is up).
    pub deployment_stability_secs: u64,
    /// The CA certificate(s) (PEM) the core trusts for its cloud endpoint (Greengrass
    /// `system.rootCaPath`). Copied to `<root>/rootCA.pem` at start; components find it
    /// through `GG_ROOT_CA_PATH`, which is unset until this is configured.
    pub root_ca_path: Option<std::path::PathBuf>,
    /// Extra platform attributes for manifest matching (Greengrass `platformOverride`).
    pub platform_override: BTreeMap<String, String>,
    /// The embedded MQTT broker's section, read by the broker service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<serde_json::Value>,
    /// The Greengrass `services` tree: configuration by service or component name, passed
    /// through untouched (unknown keys allowed).
    pub services: BTreeMap<String, serde_json::Value>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            thing_name: default_thing_name(),
            aws_region: "us-east-1".into(),
            posix_user: String::new(),
            admin_group: "lichen-admin".into(),
            logging: LoggingSettings::default(),
            ipc: IpcSettings::default(),
            deployment_startup_timeout_secs: 120,
            deployment_stability_secs: 2,
            root_ca_path: None,
            platform_override: BTreeMap::new(),
            broker: None,
            services: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LoggingSettings {
    /// A log file is rotated when it would exceed this size.
    pub max_file_bytes: u64,
    /// Rotated files kept per log (`name.log.1` … `name.log.N`).
    pub max_files: u32,
    /// tracing filter for the core log, e.g. `info` or `lichen_core=debug`.
    pub level: String,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            max_file_bytes: 10 * 1024 * 1024,
            max_files: 5,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct IpcSettings {
    /// Largest event-stream frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Largest number of concurrent IPC connections.
    pub max_connections: usize,
}

impl Default for IpcSettings {
    fn default() -> Self {
        IpcSettings {
            max_frame_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
        }
    }
}

fn default_thing_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lichen-core".into())
}

impl Settings {
    /// Reads settings from a YAML or JSON file; every error names the file.
    pub fn load(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CoreError::io(format!("reading config file {}", path.display()), e))?;
        Self::parse(&text).map_err(|message| CoreError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> std::result::Result<Settings, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else if text.trim().is_empty() {
            Ok(Settings::default())
        } else {
            serde_saphyr::from_str(text).map_err(|e| e.to_string())
        }
    }

    /// A service's section: `broker`, else that name under the Greengrass `services` tree.
    pub fn service(&self, name: &str) -> Option<&serde_json::Value> {
        match name {
            "broker" => self.broker.as_ref(),
            _ => self.services.get(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_settings_with_service_sections() {
        let s = Settings::parse(
            "thingName: gw-1\nlogging:\n  maxFileBytes: 1000\nbroker:\n  listeners: []\n",
        )
        .unwrap();
        assert_eq!(s.thing_name, "gw-1");
        assert_eq!(s.logging.max_file_bytes, 1000);
        assert_eq!(s.logging.max_files, 5);
        assert!(s.service("broker").is_some());
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_and_file() {
        let err = Settings::parse("thingName: t\nposixUsr: ggc_user\n").unwrap_err();
        assert!(err.contains("posixUsr"), "{err}");
        let err = Settings::parse("logging:\n  levl: debug\n").unwrap_err();
        assert!(err.contains("levl"), "{err}");
        let err = Settings::parse("{\"ipc\": {\"maxConnection\": 3}}").unwrap_err();
        assert!(err.contains("maxConnection"), "{err}");
        // The Greengrass services tree is free-form.
        let s = Settings::parse(
            "services:\n  aws.greengrass.Nucleus:\n    configuration: { anything: 1 }\n",
        )
        .unwrap();
        assert!(s.service("aws.greengrass.Nucleus").is_some());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("core.yaml");
        std::fs::write(&path, "posixUsr: x\n").unwrap();
        let err = Settings::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("core.yaml") && err.contains("posixUsr"),
            "{err}"
        );
    }

    #[test]
    fn bad_settings_name_the_problem() {
        let err = Settings::parse("{\"logging\": {\"maxFiles\": \"many\"}}").unwrap_err();
        assert!(
            err.contains("maxFiles") || err.contains("invalid type"),
            "{err}"
        );
    }
}
