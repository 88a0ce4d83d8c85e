//! Errors the core reports to its callers (CLI, IPC server). Each names what it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("another core is already running on root {root} (lock file {lock} is held)")]
    RootLocked { root: PathBuf, lock: PathBuf },
    #[error("component {0} not found")]
    ComponentNotFound(String),
    #[error("deployment {0} not found")]
    DeploymentNotFound(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("update rejected: {0}")]
    FailedUpdateCondition(String),
    #[error("{0} is not supported yet")]
    NotSupported(String),
    #[error("configuration file {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{0}")]
    Other(String),
}

impl CoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CoreError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
