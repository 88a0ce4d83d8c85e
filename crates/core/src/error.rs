//! Errors the core reports to its callers (CLI, IPC server). Each names what it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{context}: {source}{}", disk_full_hint(source))]
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

/// A full disk is the one I/O error an operator can act on at once: say so.
fn disk_full_hint(source: &std::io::Error) -> &'static str {
    if source.kind() == std::io::ErrorKind::StorageFull {
        " (the disk holding the lichen root is full: free space, e.g. files a component \
         wrote under its work directory, then retry)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named() {
        let full = CoreError::io("writing x", std::io::Error::from_raw_os_error(28));
        assert!(
            full.to_string()
                .contains("disk holding the lichen root is full"),
            "{full}"
        );
        let other = CoreError::io("writing x", std::io::Error::from_raw_os_error(13));
        assert!(!other.to_string().contains("full"), "{other}");
    }
}
