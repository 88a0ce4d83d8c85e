//! Crash-safe file replacement (see `lichen_sys::atomic`), with the core's error type.

use std::fs;
use std::path::Path;

use crate::error::{CoreError, Result};

/// Replaces `path` with `bytes` atomically. `mode` is applied to the new file (e.g. 0o600).
/// On a full disk, the core's space reserve is released and the write tried once more, so
/// that the state a removal needs can still be written ([`crate::reserve`]).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    match lichen_sys::atomic::write_atomic(path, bytes, mode) {
        Err(e) if crate::reserve::is_full(&e.source) && crate::reserve::release() => {
            lichen_sys::atomic::write_atomic(path, bytes, mode).map_err(from_sys)
        }
        other => other.map_err(from_sys),
    }
}

/// Writes `value` as pretty JSON atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T, mode: u32) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| CoreError::Other(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, &bytes, mode)
}

fn from_sys(e: lichen_sys::SysError) -> CoreError {
    CoreError::io(e.context, e.source)
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
    lichen_sys::atomic::sync_dir(dir).map_err(from_sys)
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
