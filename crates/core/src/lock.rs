//! One core per root: an exclusive `flock` on `<root>/lichen.lock`, held for the life of the
//! core. The kernel drops it when the process dies, so a kill -9 never leaves a stale lock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{CoreError, Result};
use crate::paths::RootLayout;

pub struct RootLock {
    _lock: Flock<File>,
}

impl RootLock {
    pub fn acquire(layout: &RootLayout) -> Result<RootLock> {
        let path = layout.lock_file();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| CoreError::io(format!("opening lock file {}", path.display()), e))?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            CoreError::RootLocked {
                root: layout.root().to_path_buf(),
                lock: path.clone(),
            }
        })?;
        // The pid is informational (for humans); the flock is what excludes.
        let _ = lock.set_len(0);
        let _ = writeln!(&mut *lock, "{}", std::process::id());
        Ok(RootLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_root_fails() {
        let dir = tempfile::tempdir().unwrap();
        let layout = RootLayout::new(dir.path());
        let first = RootLock::acquire(&layout).unwrap();
        let err = RootLock::acquire(&layout).err().unwrap();
        assert!(matches!(err, CoreError::RootLocked { .. }), "{err}");
        drop(first);
        RootLock::acquire(&layout).unwrap();
    }
}
