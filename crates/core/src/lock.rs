//! One core per root: an exclusive `flock` on `<root>/lichen.lock`, held for the life of the
//! core. The kernel drops it when the process dies, so a kill -9 never leaves a stale lock.

use lichen_sys::lock::{FileLock, LockError};

use crate::error::{CoreError, Result};
use crate::paths::RootLayout;

pub struct RootLock {
    _lock: FileLock,
}

impl RootLock {
    pub fn acquire(layout: &RootLayout) -> Result<RootLock> {
        let path = layout.lock_file();
        match FileLock::try_exclusive(&path) {
            Ok(lock) => Ok(RootLock { _lock: lock }),
            Err(LockError::Held { .. }) => Err(CoreError::RootLocked {
                root: layout.root().to_path_buf(),
                lock: path,
            }),
            Err(LockError::Io(e)) => Err(CoreError::io(e.context, e.source)),
        }
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
