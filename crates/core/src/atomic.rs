//! Crash-safe file replacement: write a temporary file, fsync it, rename it over the target,
//! fsync the directory. After a kill -9 or power cut a reader sees the old or the new
//! content, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{CoreError, Result};

/// Replaces `path` with `bytes` atomically. `mode` is applied to the new file (e.g. 0o600).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| CoreError::Other(format!("{} has no parent directory", path.display())))?;
    fs::create_dir_all(dir).map_err(|e| CoreError::io(format!("creating {}", dir.display()), e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| CoreError::io(ctx("creating"), e))?;
        f.write_all(bytes)
            .map_err(|e| CoreError::io(ctx("writing"), e))?;
        f.sync_all().map_err(|e| CoreError::io(ctx("syncing"), e))?;
    }
    fs::rename(&tmp, path).map_err(|e| {
        CoreError::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            e,
        )
    })?;
    sync_dir(dir)
}

/// Writes `value` as pretty JSON atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| CoreError::Other(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, &bytes, mode)
}

/// Reads JSON written by [`write_json_atomic`]; `Ok(None)` when the file does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CoreError::Config {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CoreError::io(format!("reading {}", path.display()), e)),
    }
}

/// Makes a completed rename durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CoreError::io(format!("syncing directory {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_sets_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1}), 0o600).unwrap();
        write_json_atomic(&p, &serde_json::json!({"a": 2}), 0o600).unwrap();
        let v: serde_json::Value = read_json(&p).unwrap().unwrap();
        assert_eq!(v["a"], 2);
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let v: Option<serde_json::Value> = read_json(&dir.path().join("nope")).unwrap();
        assert!(v.is_none());
    }
}
