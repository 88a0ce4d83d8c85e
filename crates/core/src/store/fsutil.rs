//! File-system helpers for the store: permission changes and removal of read-only trees.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::StoreError;

/// Mode of staged artifact directories and extracted directories: readable and traversable
/// by all, writable by nobody (the core restores owner write before changing them).
pub(crate) const READ_ONLY_DIR: u32 = 0o555;
/// Mode while the core is changing a directory.
pub(crate) const WRITABLE_DIR: u32 = 0o755;

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| StoreError::io(format!("setting mode {mode:o} on {}", path.display()), e))
}

/// Gives a file to `owner` (uid, gid) when one is given, then sets `mode` (chown after chmod
/// could clear bits). Symlinks are never followed.
pub(crate) fn apply(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), StoreError> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| {
            StoreError::io(
                format!("changing owner of {} to {uid}:{gid}", path.display()),
                e,
            )
        })?;
    }
    set_mode(path, mode)
}

/// Creates `dir` (and parents) and makes it writable by the owner; returns whether it was
/// created now (and so is empty).
///
/// A new component version is the common case, where neither `dir` nor its parent (the
/// component's directory) exists: the parent is made first, then `dir` with
/// [`WRITABLE_DIR`], so that costs two mkdirs, where `create_dir_all` tried the full path
/// first and failed, and a chmod followed. An existing `dir` is made writable again.
pub(crate) fn open_dir_for_writing(dir: &Path) -> Result<bool, StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    let creating = |e| StoreError::io(format!("creating {}", dir.display()), e);
    if let Some(parent) = dir.parent() {
        match fs::create_dir(parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(parent).map_err(creating)?
            }
            Err(e) => return Err(creating(e)),
        }
    }
    match fs::DirBuilder::new().mode(WRITABLE_DIR).create(dir) {
        // The umask may have taken bits, but never the owner's: writable as it is, and
        // sealed with an exact mode afterwards.
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            set_mode(dir, WRITABLE_DIR)?;
            Ok(false)
        }
        Err(e) => Err(creating(e)),
    }
}

/// Removes `path` (file or directory tree) after restoring owner write permission on every
/// directory inside it. A missing path is not an error.
pub(crate) fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(format!("inspecting {}", path.display()), e)),
    };
    if meta.is_dir() {
        make_tree_writable(path)?;
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
    .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))
}

/// Gives the owner rwx on every directory and rw on every file below (and including) `dir`.
/// Symlinks are not followed.
fn make_tree_writable(dir: &Path) -> Result<(), StoreError> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mode = fs::symlink_metadata(&d)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0);
        set_mode(&d, mode | 0o700)?;
        let entries =
            fs::read_dir(&d).map_err(|e| StoreError::io(format!("listing {}", d.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(format!("listing {}", d.display()), e))?;
            let ft = entry
                .file_type()
                .map_err(|e| StoreError::io(format!("inspecting {}", entry.path().display()), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                let p = entry.path();
                let mode = entry
                    .metadata()
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0);
                set_mode(&p, mode | 0o600)?;
            }
        }
    }
    Ok(())
}

/// Applies `mode` (and `owner`) to every file and [`READ_ONLY_DIR`] to every directory below
/// `dir`, then to `dir` itself. Directories stay owned by the core so components cannot add
/// files to them.
pub(crate) fn seal_tree(
    dir: &Path,
    file_mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), StoreError> {
    let entries =
        fs::read_dir(dir).map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(format!("listing {}", dir.display()), e))?;
        let ft = entry
            .file_type()
            .map_err(|e| StoreError::io(format!("inspecting {}", entry.path().display()), e))?;
        if ft.is_dir() {
            seal_tree(&entry.path(), file_mode, owner)?;
        } else if ft.is_file() {
            apply(&entry.path(), file_mode, owner)?;
        }
    }
    set_mode(dir, READ_ONLY_DIR)
}

/// fsyncs a directory after renames inside it.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(format!("syncing directory {}", dir.display()), e))
}
