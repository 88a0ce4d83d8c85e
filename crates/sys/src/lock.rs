//! Exclusive advisory locks (`flock`). The kernel drops a lock when its process dies, so a
//! kill -9 never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::SysError;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Io(#[from] SysError),
    /// Another process (or another lock in this one) holds it.
    #[error("{path} is locked by another process")]
    Held { path: String },
}

/// An exclusive `flock`, held until dropped.
pub struct FileLock {
    _lock: Flock<File>,
}

impl FileLock {
    /// Takes an exclusive lock on `path` (created 0600) without waiting, and writes this
    /// process's pid into it for humans; the flock, not the pid, is what excludes.
    pub fn try_exclusive(path: &Path) -> Result<FileLock, LockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| SysError::new(format!("opening lock file {}", path.display()), e))?;
        let mut lock =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| LockError::Held {
                path: path.display().to_string(),
            })?;
        let _ = lock.set_len(0);
        let _ = writeln!(&mut *lock, "{}", std::process::id());
        Ok(FileLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = FileLock::try_exclusive(&path).unwrap();
        let err = FileLock::try_exclusive(&path).err().unwrap();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        drop(first);
        FileLock::try_exclusive(&path).unwrap();
        let pid: u32 = std::fs::read_to_string(&path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pid, std::process::id());
    }
}
