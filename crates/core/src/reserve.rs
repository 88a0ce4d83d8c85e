//! Space kept back so that the core can still write its state on a full disk.
//!
//! A component that fills the root's filesystem must still be removable through lichen, and
//! removing it means writing a deployment record, markers, the configuration and the
//! installed set, each through a temporary file that needs new blocks first. So the core
//! keeps `run/space.reserve` ([`RESERVE_BYTES`], written with real blocks, not sparse). When a
//! crash-safe write fails with ENOSPC, the reserve is deleted and the write tried once more;
//! the reserve is written again after each deployment, when there is room.
//!
//! There is one reserve per process (one core per process), so the writers need not carry it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size of the reserve: many times the state a removal writes (records and markers are
/// kilobytes; the configuration is bounded by the configuration limits).
pub const RESERVE_BYTES: u64 = 2 * 1024 * 1024;
/// Below this many free bytes on the root's filesystem (or [`LOW_SPACE_FRACTION`] of it,
/// whichever is smaller), `core status` warns.
pub const LOW_SPACE_BYTES: u64 = 64 * 1024 * 1024;
/// One tenth: a small filesystem warns when 10 % is left.
pub const LOW_SPACE_FRACTION: u64 = 10;

/// The free-space threshold below which the core warns, for a filesystem of `total` bytes.
pub fn low_space_threshold(total: u64) -> u64 {
    LOW_SPACE_BYTES.min(total / LOW_SPACE_FRACTION)
}

static RESERVE: Mutex<Option<PathBuf>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<PathBuf>> {
    RESERVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes `path` the reserve and fills it (when there is room). Called at start.
pub fn install(path: PathBuf) {
    *lock() = Some(path);
    replenish();
}

/// Whether the reserve file is in place and whole.
pub fn held() -> bool {
    lock()
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .is_some_and(|m| m.len() >= RESERVE_BYTES)
}

/// Writes the reserve again if it is missing or short. A full disk leaves it missing (and
/// logs that once per call); nothing fails because of it.
pub fn replenish() {
    let guard = lock();
    let Some(path) = guard.as_ref() else {
        return;
    };
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= RESERVE_BYTES) {
        return;
    }
    if let Err(e) = write_reserve(path) {
        let _ = std::fs::remove_file(path);
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the disk-space reserve; a full disk may block deployments");
    }
}

fn write_reserve(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    // Real zeros, not a sparse file or fallocate: every filesystem then counts them used.
    let chunk = vec![0u8; 64 * 1024];
    let mut left = RESERVE_BYTES;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Frees the reserve after a write failed for lack of space. Returns whether there was one
/// to free (so the write is worth trying again).
pub fn release() -> bool {
    let guard = lock();
    let Some(path) = guard.as_ref() else {
        return false;
    };
    match std::fs::remove_file(path) {
        Ok(()) => {
            tracing::warn!(path = %path.display(), "the disk is full: released the space reserve to write the core's state");
            true
        }
        Err(_) => false,
    }
}

/// Whether an I/O error means the filesystem (or the user's quota) is full.
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == libc::ENOSPC || code == libc::EDQUOT
    )
}

/// Free and total bytes of the filesystem holding `path` (free as available to the core).
pub fn disk_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frsize = s.fragment_size() as u64;
    Ok((
        s.blocks_available() as u64 * frsize,
        s.blocks() as u64 * frsize,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_is_enospc_or_quota() {
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_full(&std::io::Error::from_raw_os_error(libc::EDQUOT)));
        assert!(!is_full(&std::io::Error::from_raw_os_error(libc::EACCES)));
    }

    #[test]
    fn the_threshold_is_64_mib_or_a_tenth_of_a_small_disk() {
        assert_eq!(low_space_threshold(100 << 30), LOW_SPACE_BYTES);
        assert_eq!(low_space_threshold(10 << 20), 1 << 20);
    }

    #[test]
    fn disk_space_reports_a_filesystem() {
        let (free, total) = disk_space(Path::new("/")).unwrap();
        assert!(total > 0 && free <= total);
    }
}
