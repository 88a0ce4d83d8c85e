//! Small system helpers that several lichen crates need, in one place so that each is
//! written (and made crash-safe) once: atomic file replacement, RFC 3339 dates, Unix socket
//! paths longer than `sun_path`, and exclusive `flock`s.

pub mod atomic;
pub mod lock;
pub mod socket;
pub mod time;

/// An I/O failure, with what was being done to which path.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct SysError {
    pub context: String,
    #[source]
    pub source: std::io::Error,
}

impl SysError {
    pub fn new(context: impl Into<String>, source: std::io::Error) -> SysError {
        SysError {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = SysError> = std::result::Result<T, E>;
