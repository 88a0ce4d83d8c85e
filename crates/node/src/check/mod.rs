//! `lichen check`: diagnoses a device, in the manner of `iotedge check`.
//!
//! Each check answers ok, warning or error with a message and, when not ok, a hint saying what
//! to do. The checks read the host (`host`), ask the running core over its control channel
//! (`running`) and probe the endpoints it talks to over TCP and TLS (`probe`). Everything is
//! blocking and bounded by [`CheckOptions::timeout`] per network step: the CLI has no runtime,
//! and a check must answer even when the core hangs.
//!
//! The check ids are stable (scripts read `--json`): `config`, `state-root.permissions`,
//! `state-root.disk`, `state-root.inodes`, `clock`, `cgroup`, `component-user`,
//! `control-socket`, `ipc-socket`, `broker.listeners`, `broker.certificate`,
//! `cloud.certificate`, `cloud.dns`, `cloud.tcp`, `cloud.tls`, `cloud.connection`,
//! `cloud.spool`, `components.broken`.

mod host;
mod probe;
mod running;

use std::path::PathBuf;
use std::time::Duration;

use lichen_core::settings::Settings;
use serde::Serialize;

pub use probe::{CertificateInfo, TlsProbe, probe_tls};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        })
    }
}

/// One check's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub message: String,
    /// What to do about it; absent when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    pub fn ok(id: &'static str, message: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Ok,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(id: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Warning,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn error(id: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            id,
            status: Status::Error,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warning: usize,
    pub error: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub summary: Summary,
}

impl Report {
    fn new(checks: Vec<Check>) -> Report {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Ok => summary.ok += 1,
                Status::Warning => summary.warning += 1,
                Status::Error => summary.error += 1,
            }
        }
        Report { checks, summary }
    }

    pub fn has_errors(&self) -> bool {
        self.summary.error > 0
    }

    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The core's state root.
    pub root: PathBuf,
    /// The core's config file. `None`: no file (the defaults apply).
    pub config: Option<PathBuf>,
    /// Bound on each network step (connect, TLS handshake, a control request).
    pub timeout: Duration,
    /// Who the core runs as when it is not running yet (the unit's user: root); the running
    /// core's own uid is not asked for.
    pub core_is_root: bool,
}

/// Runs every check, in the order a person fixes things: the config first, then the host,
/// then the running core, then what it connects to.
pub fn run(options: &CheckOptions) -> Report {
    let mut checks = Vec::new();
    let (config, settings) = host::config(options.config.as_deref());
    checks.push(config);
    checks.extend(host::state_root(&options.root));
    checks.push(host::clock());
    checks.push(host::cgroup(std::path::Path::new(
        lichen_core::lifecycle::cgroup::CGROUP_ROOT,
    )));
    checks.push(host::component_user(
        settings.as_ref(),
        options.core_is_root,
    ));
    checks.extend(running::checks(options, settings.as_ref()));
    Report::new(checks)
}

/// The settings the check reads, or `None` when the config did not parse (the checks that
/// need it then say so instead of guessing).
pub type LoadedSettings = Option<Settings>;
