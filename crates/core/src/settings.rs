//! The core's own settings, read once from `--config FILE` (YAML or JSON).
//!
//! Every key is known: a typo such as `posixUsr` is an error naming the key and the file.
//! Sections that belong to other services are explicit and kept opaque (`broker`), and so
//! is the Greengrass `services` tree (per-service configuration, free-form).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The connection to a lichen (or AWS IoT) cloud, read by the node's cloud service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudSettings>,
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
            cloud: None,
            services: BTreeMap::new(),
        }
    }
}

/// The `cloud` section. The identity is either a certificate and key issued for this thing
/// (`certificateFilePath` + `privateKeyPath`, the bundle `lichen cloud thing create` writes),
/// or obtained once by fleet provisioning with a claim certificate (`fleetProvisioning`).
/// Relative paths are relative to the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudSettings {
    /// The cloud's mTLS MQTT endpoint, `HOST:PORT` (port 8883 when left out).
    pub iot_data_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_path: Option<PathBuf>,
    /// The cloud's device HTTPS endpoint (artifact downloads), `https://HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_provisioning: Option<FleetProvisioningSettings>,
}

/// Fleet provisioning by claim (the Greengrass fleet provisioning plugin's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FleetProvisioningSettings {
    pub provisioning_template: String,
    pub claim_certificate_path: PathBuf,
    pub claim_certificate_private_key_path: PathBuf,
    /// Passed to RegisterThing as `parameters`.
    #[serde(default)]
    pub template_parameters: BTreeMap<String, String>,
}

/// MQTT port assumed when `iotDataEndpoint` names none.
pub const DEFAULT_IOT_DATA_PORT: u16 = 8883;

impl CloudSettings {
    /// `iotDataEndpoint` as `HOST:PORT`.
    pub fn endpoint(&self) -> String {
        let e = self.iot_data_endpoint.trim();
        let has_port = match e.rsplit_once(':') {
            Some((host, port)) => {
                !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && !host.ends_with(':')
                    && (!host.contains(':') || host.ends_with(']'))
            }
            None => false,
        };
        if has_port {
            e.to_string()
        } else {
            format!("{e}:{DEFAULT_IOT_DATA_PORT}")
        }
    }

    /// Checks the section's shape and resolves its paths against `base` (the config file's
    /// directory); every error names the key.
    fn resolve(&mut self, base: &Path) -> std::result::Result<(), String> {
        if self.iot_data_endpoint.trim().is_empty() {
            return Err("cloud.iotDataEndpoint: must be HOST:PORT, got an empty string".into());
        }
        let endpoint = self.endpoint();
        let (host, port) = endpoint.rsplit_once(':').unwrap_or((endpoint.as_str(), ""));
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "cloud.iotDataEndpoint: {:?} has an invalid port",
                self.iot_data_endpoint
            ));
        }
        let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
        if host.is_empty()
            || (host.contains(':') && !bracketed)
            || host.contains(char::is_whitespace)
        {
            return Err(format!(
                "cloud.iotDataEndpoint: {:?} is not HOST:PORT (write an IPv6 address as [ADDR]:PORT)",
                self.iot_data_endpoint
            ));
        }
        let explicit = self.certificate_file_path.is_some() || self.private_key_path.is_some();
        match (&mut self.fleet_provisioning, explicit) {
            (Some(_), true) => {
                return Err(
                    "cloud: set either certificateFilePath and privateKeyPath, or \
                            fleetProvisioning, not both"
                        .into(),
                );
            }
            (None, false) => {
                return Err("cloud: needs certificateFilePath and privateKeyPath, or \
                            fleetProvisioning"
                    .into());
            }
            (Some(fleet), false) => {
                if fleet.provisioning_template.trim().is_empty() {
                    return Err(
                        "cloud.fleetProvisioning.provisioningTemplate: must not be empty".into(),
                    );
                }
                // Only made absolute: the claim is needed once, until the core holds its own
                // identity, and users are told to delete it then (fleet-provisioning.md).
                // Provisioning names a missing file when it does need it.
                resolve_path(&mut fleet.claim_certificate_path, base);
                resolve_path(&mut fleet.claim_certificate_private_key_path, base);
            }
            (None, true) => {
                let (Some(cert), Some(key)) =
                    (&mut self.certificate_file_path, &mut self.private_key_path)
                else {
                    return Err("cloud: certificateFilePath and privateKeyPath go together".into());
                };
                resolve_file(cert, base, "cloud.certificateFilePath")?;
                resolve_file(key, base, "cloud.privateKeyPath")?;
            }
        }
        Ok(())
    }
}

/// Makes `path` absolute against `base`.
fn resolve_path(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

/// Makes `path` absolute against `base` and checks that it names a file.
fn resolve_file(path: &mut PathBuf, base: &Path, key: &str) -> std::result::Result<(), String> {
    resolve_path(path, base);
    match std::fs::metadata(&*path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{key}: {} is not a file", path.display())),
        Err(e) => Err(format!("{key}: {}: {e}", path.display())),
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
    /// `text` (default) or `json` (JSON lines); `lichen --log-format` overrides it.
    pub format: String,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings {
            max_file_bytes: 10 * 1024 * 1024,
            max_files: 5,
            level: "info".into(),
            format: "text".into(),
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
    /// Reads settings from a YAML or JSON file; every error names the file. Relative paths
    /// (`rootCaPath`, the `cloud` files) are resolved against the file's directory, and the
    /// files they name must exist.
    pub fn load(path: &Path) -> Result<Settings> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CoreError::io(format!("reading config file {}", path.display()), e))?;
        let config_error = |message| CoreError::Config {
            path: path.to_path_buf(),
            message,
        };
        let mut settings = Self::parse(&text).map_err(config_error)?;
        let base = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&base).unwrap_or(base);
        settings.resolve_paths(&base).map_err(config_error)?;
        Ok(settings)
    }

    /// Resolves relative paths against `base` and checks the `cloud` section.
    pub fn resolve_paths(&mut self, base: &Path) -> std::result::Result<(), String> {
        if let Some(ca) = &mut self.root_ca_path {
            resolve_file(ca, base, "rootCaPath")?;
        }
        if let Some(cloud) = &mut self.cloud {
            if self.root_ca_path.is_none() {
                return Err(
                    "cloud: needs rootCaPath, the CA the cloud endpoint's certificate chains to"
                        .into(),
                );
            }
            cloud.resolve(base)?;
        }
        Ok(())
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

    fn bundle(dir: &Path) -> PathBuf {
        for f in [
            "ca.pem",
            "thing.cert.pem",
            "thing.private.key",
            "claim.cert.pem",
            "claim.private.key",
        ] {
            std::fs::write(dir.join(f), "-----BEGIN CERTIFICATE-----\n").unwrap();
        }
        dir.join("config.yaml")
    }

    #[test]
    fn a_bundle_config_resolves_its_paths_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = bundle(dir.path());
        std::fs::write(
            &config,
            "thingName: gw-1\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: cloud.example:8443\n  \
             certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n  \
             apiEndpoint: https://cloud.example:8444\n",
        )
        .unwrap();
        let s = Settings::load(&config).unwrap();
        assert_eq!(
            s.root_ca_path.as_deref(),
            Some(dir.path().join("ca.pem").as_path())
        );
        let cloud = s.cloud.unwrap();
        assert_eq!(cloud.endpoint(), "cloud.example:8443");
        assert_eq!(
            cloud.certificate_file_path.as_deref(),
            Some(dir.path().join("thing.cert.pem").as_path())
        );
        assert_eq!(
            cloud.private_key_path.as_deref(),
            Some(dir.path().join("thing.private.key").as_path())
        );
        assert_eq!(
            cloud.api_endpoint.as_deref(),
            Some("https://cloud.example:8444")
        );
    }

    proptest::proptest! {
        /// Whatever is written, an accepted endpoint is HOST:PORT with a valid port, and a
        /// written port is kept.
        #[test]
        fn accepted_endpoints_are_host_and_port(host in "[a-z0-9.:\\[\\]-]{0,20}", port in proptest::option::of(0u32..70000)) {
            let text = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
            let mut cloud = CloudSettings {
                iot_data_endpoint: text.clone(),
                certificate_file_path: None,
                private_key_path: None,
                api_endpoint: None,
                fleet_provisioning: None,
            };
            let dir = std::env::temp_dir();
            // Shape errors come before file checks; "needs certificateFilePath" means the
            // endpoint was accepted.
            let accepted = matches!(cloud.resolve(&dir), Err(e) if e.starts_with("cloud: needs"));
            if accepted {
                let e = cloud.endpoint();
                let (h, p) = e.rsplit_once(':').unwrap();
                proptest::prop_assert!(!h.is_empty());
                proptest::prop_assert!(p.parse::<u16>().is_ok_and(|p| p > 0));
                if let Some(p) = port && !host.contains(':') && !host.is_empty() {
                    proptest::prop_assert_eq!(e, format!("{host}:{p}"));
                }
            }
        }
    }

    #[test]
    fn a_fleet_provisioning_config_parses_with_its_template_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let config = bundle(dir.path());
        std::fs::write(
            &config,
            "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: cloud.example\n  fleetProvisioning:\n    \
             provisioningTemplate: GreengrassFleet\n    claimCertificatePath: claim.cert.pem\n    \
             claimCertificatePrivateKeyPath: claim.private.key\n    \
             templateParameters: { SerialNumber: \"abc123\" }\n",
        )
        .unwrap();
        let s = Settings::load(&config).unwrap();
        let cloud = s.cloud.unwrap();
        assert_eq!(cloud.endpoint(), "cloud.example:8883", "default port");
        let fleet = cloud.fleet_provisioning.unwrap();
        assert_eq!(fleet.provisioning_template, "GreengrassFleet");
        assert_eq!(
            fleet.claim_certificate_path,
            dir.path().join("claim.cert.pem")
        );
        assert_eq!(fleet.template_parameters["SerialNumber"], "abc123");
    }

    #[test]
    fn cloud_errors_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = bundle(dir.path());
        let cases = [
            // unknown key
            (
                "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:1\n  certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n  certificatePath: x\n",
                "certificatePath",
            ),
            // missing file, named with the key
            (
                "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:1\n  certificateFilePath: gone.pem\n  privateKeyPath: thing.private.key\n",
                "cloud.certificateFilePath",
            ),
            (
                "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:1\n  certificateFilePath: thing.cert.pem\n",
                "privateKeyPath go together",
            ),
            (
                "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:1\n",
                "fleetProvisioning",
            ),
            (
                "cloud:\n  iotDataEndpoint: h:1\n  certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n",
                "needs rootCaPath",
            ),
            (
                "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:99999\n  certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n",
                "invalid port",
            ),
            (
                "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:1\n  fleetProvisioning:\n    provisioningTemplate: t\n    claimCertificatePath: claim.cert.pem\n    claimCertificatePrivateKeyPath: claim.private.key\n    templateParameter: {}\n",
                "templateParameter",
            ),
            ("rootCaPath: missing-ca.pem\n", "missing-ca.pem"),
            (
                "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: \"::1:8883\"\n  certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n",
                "not HOST:PORT",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(&config, text).unwrap();
            let err = Settings::load(&config).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains("config.yaml"),
                "{want}: {err}"
            );
        }

        // The claim may be deleted once the core holds its own identity: a missing claim
        // file is not a configuration error, and the path is still made absolute.
        std::fs::write(&config, "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:1\n  fleetProvisioning:\n    provisioningTemplate: t\n    claimCertificatePath: claim.cert.pem\n    claimCertificatePrivateKeyPath: gone.pem\n").unwrap();
        let settings = Settings::load(&config).unwrap();
        let fleet = settings.cloud.unwrap().fleet_provisioning.unwrap();
        assert_eq!(
            fleet.claim_certificate_private_key_path,
            config.parent().unwrap().join("gone.pem")
        );
    }
}
