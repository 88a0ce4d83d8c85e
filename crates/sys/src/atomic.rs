//! Crash-safe file replacement: write a temporary file (created with its final mode, so a
//! private file is never readable by others, not even briefly), fsync it, rename it over the
//! target, fsync the directory. After a kill -9 or power cut a reader sees the old or the new
//! content, never a torn file, and the rename itself is durable.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::{Result, SysError};

/// Mode for keys and tokens.
pub const PRIVATE: u32 = 0o600;
/// Mode for certificates and other files anyone may read.
pub const PUBLIC: u32 = 0o644;

/// Replaces `path` with `bytes` atomically; the new file has exactly `mode` (e.g. 0o600).
/// On error the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        SysError::new(
            format!("{} has no parent directory", path.display()),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    fs::create_dir_all(dir).map_err(|e| SysError::new(format!("creating {}", dir.display()), e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let written = write_synced(&tmp, bytes, mode).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| {
            SysError::new(
                format!("renaming {} to {}", tmp.display(), path.display()),
                e,
            )
        })
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Whether `name` is a temporary file of [`write_atomic`] (`.<file>.tmp<pid>`).
pub fn is_atomic_temp(name: &str) -> bool {
    name.starts_with('.')
        && name.rsplit_once(".tmp").is_some_and(|(stem, pid)| {
            stem.len() > 1 && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Removes the temporary files [`write_atomic`] left in `dir` when a writer died between
/// creating and renaming them (kill -9, power loss, or a full disk in an older version).
/// Call only while this process is the directory's one writer (holding the root's lock).
/// Returns how many were removed; a missing directory has none.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file
            && name.to_str().is_some_and(is_atomic_temp)
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

fn write_synced(tmp: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| SysError::new(ctx("creating"), e))?;
    // The umask may have narrowed the mode, and a stale temp file keeps its old one.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| SysError::new(ctx("chmod"), e))?;
    f.write_all(bytes)
        .map_err(|e| SysError::new(ctx("writing"), e))?;
    f.sync_all().map_err(|e| SysError::new(ctx("syncing"), e))
}

/// Writes `value` as pretty JSON atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| {
        SysError::new(
            format!("serializing {}", path.display()),
            std::io::Error::other(e),
        )
    })?;
    write_atomic(path, &bytes, mode)
}

/// Makes a completed rename (or create/remove) in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SysError::new(format!("syncing directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn stale_temps_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            ".a.json.tmp123",
            ".effective.json.tmp9",
            "a.json",
            ".hidden",
            "x.tmp1",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()), 2);
        assert_eq!(entries(dir.path()), [".hidden", "a.json", "x.tmp1"]);
        assert_eq!(remove_stale_temps(&dir.path().join("missing")), 0);
    }

    #[test]
    fn replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1}), PUBLIC).unwrap();
        write_json_atomic(&p, &serde_json::json!({"a": 2}), PUBLIC).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["a"], 2);
        assert_eq!(entries(p.parent().unwrap()), vec!["state.json".to_string()]);
    }

    #[test]
    fn private_files_are_0600_even_over_a_wider_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.key");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
        // A temp file left by a crashed writer with a wide mode must not keep it.
        let stale = dir
            .path()
            .join(format!(".ca.key.tmp{}", std::process::id()));
        fs::write(&stale, "stale").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&p, b"secret", PRIVATE).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(&p).unwrap(), b"secret");
    }

    #[test]
    fn a_failed_rename_leaves_no_temp_and_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temp is written.
        let target = dir.path().join("state");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), "x").unwrap();
        let err = write_atomic(&target, b"new", PUBLIC).unwrap_err();
        assert!(err.to_string().contains("renaming"), "{err}");
        assert_eq!(entries(dir.path()), vec!["state".to_string()]);
        assert_eq!(fs::read(target.join("keep")).unwrap(), b"x");
    }

    #[test]
    fn directory_sync_reports_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        sync_dir(dir.path()).unwrap();
        let missing = dir.path().join("gone");
        let err = sync_dir(&missing).unwrap_err();
        assert!(err.to_string().contains("syncing directory"), "{err}");
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
