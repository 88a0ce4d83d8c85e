//! Safe ZIP extraction: every entry must stay inside the target directory (no `..`, no
//! absolute paths, no symlinks), and the archive is extracted into a temporary directory that
//! is renamed into place, so a failure leaves nothing half-extracted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::StoreError;
use super::fsutil;

/// Extracts `archive` to `parent/<stem>/`, replacing an earlier extraction. Files get
/// `file_mode` (and `owner`), directories 0o555.
pub(super) fn extract(
    component: &str,
    archive: &Path,
    parent: &Path,
    stem: &str,
    file_mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), StoreError> {
    super::check_segment(stem)?;
    let target = parent.join(stem);
    let tmp = parent.join(format!(".{stem}.tmp{}", std::process::id()));
    fsutil::remove_tree(&tmp)?;
    fs::create_dir(&tmp).map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
    let result = extract_into(component, archive, &tmp)
        .and_then(|()| fsutil::seal_tree(&tmp, file_mode, owner))
        .and_then(|()| fsutil::remove_tree(&target))
        .and_then(|()| {
            fs::rename(&tmp, &target).map_err(|e| {
                StoreError::io(
                    format!("renaming {} to {}", tmp.display(), target.display()),
                    e,
                )
            })
        });
    if result.is_err() {
        let _ = fsutil::remove_tree(&tmp);
        return result;
    }
    fsutil::sync_dir(parent)
}

/// The relative path a ZIP entry name denotes, or `None` when it would escape the target:
/// absolute names, `..` segments, drive prefixes or NUL bytes. Both `/` and `\` separate
/// segments (archives made on Windows use either).
pub(super) fn safe_relative_path(name: &str) -> Option<PathBuf> {
    if name.contains('\0') || name.starts_with('/') || name.starts_with('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for seg in name.split(['/', '\\']) {
        match seg {
            "" | "." => continue,
            ".." => return None,
            s => {
                // A segment that std would read as something other than a plain name.
                let mut comps = Path::new(s).components();
                match (comps.next(), comps.next()) {
                    (Some(Component::Normal(_)), None) => out.push(s),
                    _ => return None,
                }
            }
        }
    }
    Some(out)
}

fn extract_into(component: &str, archive: &Path, dest: &Path) -> Result<(), StoreError> {
    let bad = |message: String| StoreError::BadArchive {
        component: component.to_string(),
        file: archive.to_path_buf(),
        message,
    };
    let file = File::open(archive)
        .map_err(|e| StoreError::io(format!("opening {}", archive.display()), e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        let name = entry.name().to_string();
        let unsafe_entry = || StoreError::UnsafeArchive {
            component: component.to_string(),
            file: archive.to_path_buf(),
            entry: name.clone(),
        };
        if entry.is_symlink() {
            return Err(unsafe_entry());
        }
        let Some(rel) = safe_relative_path(&name) else {
            return Err(unsafe_entry());
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let path = dest.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&path)
                .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
            continue;
        }
        if let Some(p) = path.parent() {
            fs::create_dir_all(p)
                .map_err(|e| StoreError::io(format!("creating {}", p.display()), e))?;
        }
        // A duplicate entry replaces the earlier one; nothing else can exist here since
        // symlink entries are refused.
        let _ = fs::remove_file(&path);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::io(format!("creating {}", path.display()), e))?;
        io::copy(&mut entry, &mut out).map_err(|e| bad(format!("extracting {name}: {e}")))?;
        out.sync_all()
            .map_err(|e| StoreError::io(format!("syncing {}", path.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_that_escape_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "\\evil",
            "a\\..\\..\\x",
            "a/\0b",
        ] {
            assert!(
                safe_relative_path(bad).is_none(),
                "{bad:?} should be refused"
            );
        }
        assert_eq!(
            safe_relative_path("a/./b/c.txt").unwrap(),
            PathBuf::from("a/b/c.txt")
        );
        assert_eq!(safe_relative_path("dir/").unwrap(), PathBuf::from("dir"));
        assert_eq!(safe_relative_path("./").unwrap(), PathBuf::new());
        assert_eq!(
            safe_relative_path("a..b/c").unwrap(),
            PathBuf::from("a..b/c")
        );
    }

    proptest::proptest! {
        #[test]
        fn accepted_names_never_leave_the_directory(name in "[a./\\\\\0:]{0,12}") {
            if let Some(p) = safe_relative_path(&name) {
                proptest::prop_assert!(p.components().all(|c| matches!(c, Component::Normal(_))));
                let joined = Path::new("/base").join(&p);
                proptest::prop_assert!(joined.starts_with("/base"));
            }
        }
    }
}
