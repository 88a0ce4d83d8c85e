//! Safe ZIP extraction: every entry must stay inside the target directory (no `..`, no
//! absolute paths, no symlinks), and the archive is extracted into a temporary directory that
//! is renamed into place, so a failure leaves nothing half-extracted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::StoreError;
use super::fsutil;

/// Entries an archive may hold.
pub const MAX_ZIP_ENTRIES: usize = 100_000;
/// Bytes an archive may expand to, counted as written (headers are not trusted), so a zip
/// bomb stops here instead of filling the disk.
pub const MAX_UNZIPPED_BYTES: u64 = 8 << 30;

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
    extract_entries(component, archive, &mut zip, dest, MAX_UNZIPPED_BYTES)
}

fn extract_entries<R: io::Read + io::Seek>(
    component: &str,
    archive: &Path,
    zip: &mut zip::ZipArchive<R>,
    dest: &Path,
    max_bytes: u64,
) -> Result<(), StoreError> {
    let bad = |message: String| StoreError::BadArchive {
        component: component.to_string(),
        file: archive.to_path_buf(),
        message,
    };
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(bad(format!(
            "{} entries; at most {MAX_ZIP_ENTRIES} are extracted",
            zip.len()
        )));
    }
    let mut written: u64 = 0;
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
        let room = max_bytes - written;
        let copied = io::copy(&mut io::Read::take(&mut entry, room + 1), &mut out)
            .map_err(|e| bad(format!("extracting {name}: {e}")))?;
        if copied > room {
            return Err(bad(format!(
                "expands beyond {max_bytes} bytes (at entry {name}); refusing a possible zip bomb"
            )));
        }
        written += copied;
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

#[cfg(test)]
mod bound_tests {
    use std::io::Write;

    use super::*;

    fn archive(entries: &[(&str, usize)]) -> zip::ZipArchive<io::Cursor<Vec<u8>>> {
        let mut buf = io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut buf);
            for (name, len) in entries {
                w.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                w.write_all(&vec![b'z'; *len]).unwrap();
            }
            w.finish().unwrap();
        }
        buf.set_position(0);
        zip::ZipArchive::new(buf).unwrap()
    }

    #[test]
    fn expansion_beyond_the_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut zip = archive(&[("a", 1000), ("b", 1000)]);
        let err = extract_entries("c", Path::new("x.zip"), &mut zip, dir.path(), 1500).unwrap_err();
        assert!(err.to_string().contains("zip bomb"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let mut zip = archive(&[("a", 1000), ("b", 1000)]);
        extract_entries("c", Path::new("x.zip"), &mut zip, dir.path(), 2000).unwrap();
        assert_eq!(fs::read(dir.path().join("b")).unwrap().len(), 1000);
    }
}
