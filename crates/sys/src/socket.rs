//! Unix socket paths longer than `sun_path` allows.
//!
//! `bind`/`connect` take at most [`SUN_PATH_MAX`] bytes. For a longer path the
//! socket is addressed through `/proc/self/fd/<dir fd>/<name>`, which is short and resolves to
//! the same directory entry. The returned guard keeps the directory descriptor open for as
//! long as the short path is used.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The longest path `bind`/`connect` accept on Linux (`sun_path` is 108 bytes with the NUL).
pub const SUN_PATH_MAX: usize = 107;

pub struct SocketPath {
    path: PathBuf,
    _dir: Option<File>,
}

impl SocketPath {
    pub fn new(path: &Path) -> std::io::Result<SocketPath> {
        if path.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(SocketPath {
                path: path.to_path_buf(),
                _dir: None,
            });
        }
        let dir = File::open(path.parent().unwrap_or(Path::new("/")))?;
        let name = path.file_name().unwrap_or_default();
        Ok(SocketPath {
            path: Path::new("/proc/self/fd")
                .join(dir.as_raw_fd().to_string())
                .join(name),
            _dir: Some(dir),
        })
    }

    /// The path to pass to `bind` or `connect`.
    pub fn as_path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_bind_and_connect_through_proc() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(100)).join("e".repeat(20));
        std::fs::create_dir_all(&deep).unwrap();
        let sock = deep.join("x.socket");
        assert!(sock.as_os_str().len() > SUN_PATH_MAX);
        let bind_path = SocketPath::new(&sock).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(bind_path.as_path()).unwrap();
        assert!(sock.exists(), "the socket is at its real path");
        let connect_path = SocketPath::new(&sock).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(connect_path.as_path()).unwrap();
        assert!(listener.accept().is_ok());
    }
}
