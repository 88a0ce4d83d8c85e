//! Staging a component's artifacts into the store: locate, copy crash-safely, verify the
//! digest, apply the recipe's `Permission`, extract ZIP archives.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use lichen_recipe::{Access, Artifact, Permission, SelectedComponent, Unarchive};
use sha2::{Digest as _, Sha256};

use super::fsutil::{self, READ_ONLY_DIR};
use super::{ComponentStore, StoreError, check_segment, unzip};

const COPY_BUF: usize = 64 * 1024;

/// The file mode for an artifact (and for files extracted from it) under a recipe `Permission`.
///
/// The owner (the core) always keeps read access so it can verify and copy the file later, so
/// `Read: NONE` and `Read: OWNER` both give `0o400`; `Read: ALL` adds `0o044`. `Execute: OWNER`
/// adds `0o100`; `Execute: ALL` adds `0o111` and, since execute implies read, `0o044`. Nobody
/// gets write access: components must not edit their artifacts.
pub fn file_mode(permission: &Permission) -> u32 {
    let mut mode = 0o400;
    if matches!(permission.read, Access::All) {
        mode |= 0o044;
    }
    match permission.execute {
        Access::None => {}
        Access::Owner => mode |= 0o100,
        Access::All => mode |= 0o111 | 0o044,
    }
    mode
}

/// The SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// A digest from a recipe, decoded, remembering how it was written so a mismatch is reported
/// in the same notation.
struct Expected {
    bytes: [u8; 32],
    text: String,
    hex: bool,
}

impl Expected {
    fn render(&self, actual: &[u8; 32]) -> String {
        if self.hex {
            hex::encode(actual)
        } else {
            base64::engine::general_purpose::STANDARD.encode(actual)
        }
    }
}

/// Decodes the artifact's `Digest` (Greengrass: base64 of the SHA-256; hex also accepted).
fn expected_digest(component: &str, a: &Artifact) -> Result<Option<Expected>, StoreError> {
    let Some(digest) = a.digest.as_deref().map(str::trim).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    if let Some(alg) = a
        .algorithm
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let norm = alg.to_ascii_uppercase().replace(['-', '_'], "");
        if norm != "SHA256" {
            return Err(StoreError::UnsupportedAlgorithm {
                component: component.to_string(),
                uri: a.uri.clone(),
                algorithm: alg.to_string(),
            });
        }
    }
    let as_hex = (digest.len() == 64)
        .then(|| hex::decode(digest).ok())
        .flatten();
    let (decoded, hex) = match as_hex {
        Some(b) => (Some(b), true),
        None => {
            use base64::engine::general_purpose::{STANDARD, URL_SAFE};
            let b = STANDARD
                .decode(digest)
                .or_else(|_| URL_SAFE.decode(digest))
                .ok();
            (b, false)
        }
    };
    match decoded.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok()) {
        Some(bytes) => Ok(Some(Expected {
            bytes,
            text: digest.to_string(),
            hex,
        })),
        None => Err(StoreError::InvalidDigest {
            component: component.to_string(),
            uri: a.uri.clone(),
            digest: digest.to_string(),
        }),
    }
}

/// Refuses what lichen cannot provide and returns the artifact's file name.
fn usable_file_name<'a>(component: &str, a: &'a Artifact) -> Result<&'a str, StoreError> {
    let unsupported = |reason: &str| StoreError::UnsupportedArtifact {
        component: component.to_string(),
        uri: a.uri.clone(),
        reason: reason.to_string(),
    };
    if a.scheme().eq_ignore_ascii_case("docker") {
        return Err(unsupported(
            "docker artifacts need a container runtime, which lichen does not provide",
        ));
    }
    let name = a
        .file_name()
        .ok_or_else(|| unsupported("the artifact URI has no file name"))?;
    check_segment(name).map_err(|_| unsupported("the artifact URI has no usable file name"))?;
    if name.starts_with('.') && name.contains(".tmp") {
        return Err(unsupported(
            "the artifact file name collides with lichen's temporary files",
        ));
    }
    Ok(name)
}

pub(super) fn stage(
    store: &ComponentStore,
    component: &SelectedComponent,
    artifact_dir: Option<&Path>,
    owner: Option<(u32, u32)>,
    decompressed_dir: bool,
) -> Result<(), StoreError> {
    let name = component.name.as_str();
    // Validate every artifact before touching the store.
    let mut plan = Vec::with_capacity(component.artifacts.len());
    for a in &component.artifacts {
        let file = usable_file_name(name, a)?;
        let expected = expected_digest(name, a)?;
        plan.push((a, file, expected));
    }
    // `{artifacts:path}` exists even without artifacts, as in Greengrass, so scripts can
    // rely on it; the unarchived directory is made below only when needed.
    let dest_dir = store.artifacts_path(name, &component.version);
    let looked_in = artifact_dir.map(|d| d.join(name).join(component.version.to_string()));
    let fresh = fsutil::open_dir_for_writing(&dest_dir)?;
    let staged = (|| {
        if !fresh {
            remove_temporaries(&dest_dir);
        }
        let mut result = Vec::with_capacity(plan.len());
        for (a, file, expected) in &plan {
            let dest = dest_dir.join(file);
            let source = looked_in
                .as_ref()
                .map(|d| d.join(file))
                .filter(|p| p.is_file());
            let mode = file_mode(&a.permission);
            let copied = match source {
                Some(src) => {
                    copy_verified(name, &src, &dest, expected.as_ref(), mode, owner)?;
                    true
                }
                None if dest.is_file() => {
                    verify_stored(name, &dest, expected.as_ref())?;
                    fsutil::apply(&dest, mode, owner)?;
                    false
                }
                None => {
                    return Err(StoreError::MissingArtifact {
                        component: name.to_string(),
                        uri: a.uri.clone(),
                        looked_in: looked_in.clone(),
                    });
                }
            };
            result.push((*a, *file, dest, copied, mode));
        }
        // Only renames into the directory need its fsync; most components copy nothing.
        if result.iter().any(|(_, _, _, copied, _)| *copied) {
            fsutil::sync_dir(&dest_dir)?;
        }
        Ok(result)
    })();
    let sealed = fsutil::set_mode(&dest_dir, READ_ONLY_DIR);
    let staged = staged?;
    sealed?;

    let zips: Vec<_> = staged
        .iter()
        .filter(|(a, ..)| matches!(a.unarchive, Unarchive::Zip))
        .collect();
    let unarchived = store.unarchived_path(name, &component.version);
    if zips.is_empty() && !decompressed_dir {
        return Ok(());
    }
    let fresh = fsutil::open_dir_for_writing(&unarchived)?;
    let extracted = (|| {
        if !fresh {
            remove_temporaries(&unarchived);
        }
        for (_, file, archive, copied, mode) in zips {
            let stem = Path::new(file)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or(file);
            let target = unarchived.join(stem);
            // An archive already in the store whose extraction completed earlier is reused
            // (with this deployment's permission and owner).
            if !copied && target.is_dir() {
                fsutil::seal_tree(&target, *mode, owner)?;
                continue;
            }
            unzip::extract(name, archive, &unarchived, stem, *mode, owner)?;
        }
        Ok::<(), StoreError>(())
    })();
    let sealed = fsutil::set_mode(&unarchived, READ_ONLY_DIR);
    extracted?;
    sealed
}

/// Removes `.<name>.tmp<pid>` leftovers of an interrupted staging.
fn remove_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp") {
            let _ = fsutil::remove_tree(&entry.path());
        }
    }
}

/// Copies `src` to `dest` through a temporary file (fsynced, verified, chmodded, renamed).
/// On a digest mismatch the temporary copy is removed and `dest` is left as it was.
fn copy_verified(
    component: &str,
    src: &Path,
    dest: &Path,
    expected: Option<&Expected>,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), StoreError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let actual = copy_hashing(src, &tmp)?;
        if let Some(exp) = expected
            && exp.bytes != actual
        {
            return Err(StoreError::DigestMismatch {
                component: component.to_string(),
                file: src.to_path_buf(),
                expected: exp.text.clone(),
                actual: exp.render(&actual),
            });
        }
        fsutil::apply(&tmp, mode, owner)?;
        fs::rename(&tmp, dest).map_err(|e| {
            StoreError::io(
                format!("renaming {} to {}", tmp.display(), dest.display()),
                e,
            )
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies `src` to a new `tmp` file, fsyncs it and returns the SHA-256 of what was copied.
fn copy_hashing(src: &Path, tmp: &Path) -> Result<[u8; 32], StoreError> {
    let mut input =
        File::open(src).map_err(|e| StoreError::io(format!("opening {}", src.display()), e))?;
    let _ = fs::remove_file(tmp);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(format!("reading {}", src.display()), e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| StoreError::io(format!("writing {}", tmp.display()), e))?;
    }
    out.sync_all()
        .map_err(|e| StoreError::io(format!("syncing {}", tmp.display()), e))?;
    Ok(hasher.finalize().into())
}

/// Checks an artifact already in the store; a corrupt copy is removed so the next deployment
/// (with an artifact directory) copies it afresh.
fn verify_stored(
    component: &str,
    path: &Path,
    expected: Option<&Expected>,
) -> Result<(), StoreError> {
    let Some(exp) = expected else {
        return Ok(());
    };
    let actual =
        sha256_file(path).map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
    if actual == exp.bytes {
        return Ok(());
    }
    let _ = fs::remove_file(path);
    Err(StoreError::DigestMismatch {
        component: component.to_string(),
        file: path.to_path_buf(),
        expected: exp.text.clone(),
        actual: exp.render(&actual),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(read: Access, execute: Access) -> Permission {
        Permission { read, execute }
    }

    #[test]
    fn modes_follow_greengrass_permissions() {
        assert_eq!(file_mode(&perm(Access::Owner, Access::None)), 0o400);
        assert_eq!(file_mode(&perm(Access::None, Access::None)), 0o400);
        assert_eq!(file_mode(&perm(Access::All, Access::None)), 0o444);
        assert_eq!(file_mode(&perm(Access::Owner, Access::Owner)), 0o500);
        assert_eq!(file_mode(&perm(Access::Owner, Access::All)), 0o555);
        assert_eq!(file_mode(&perm(Access::All, Access::Owner)), 0o544);
    }

    fn artifact(uri: &str, digest: Option<&str>, algorithm: Option<&str>) -> Artifact {
        let mut a = test_artifact(uri);
        a.digest = digest.map(str::to_string);
        a.algorithm = algorithm.map(str::to_string);
        a
    }

    pub(crate) fn test_artifact(uri: &str) -> Artifact {
        super::super::tests::artifact(uri)
    }

    #[test]
    fn digests_decode_from_base64_and_hex() {
        let sum: [u8; 32] = Sha256::digest(b"hello").into();
        let b64 = base64::engine::general_purpose::STANDARD.encode(sum);
        let hx = hex::encode(sum);
        let e = expected_digest("c", &artifact("s3://b/f", Some(&b64), Some("SHA-256")))
            .unwrap()
            .unwrap();
        assert_eq!(e.bytes, sum);
        assert!(!e.hex);
        let e = expected_digest("c", &artifact("s3://b/f", Some(&hx), None))
            .unwrap()
            .unwrap();
        assert_eq!(e.bytes, sum);
        assert!(e.hex);
        assert!(
            expected_digest("c", &artifact("s3://b/f", None, Some("MD5")))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_digests_and_algorithms_are_named() {
        let err = expected_digest("com.ex", &artifact("s3://b/f", Some("zz"), None))
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::InvalidDigest { .. }), "{err}");
        assert!(err.to_string().contains("com.ex") && err.to_string().contains("s3://b/f"));
        let err = expected_digest("com.ex", &artifact("s3://b/f", Some("AAAA"), Some("SHA-1")))
            .err()
            .unwrap();
        assert!(
            matches!(err, StoreError::UnsupportedAlgorithm { .. }),
            "{err}"
        );
    }

    #[test]
    fn unusable_uris_are_refused() {
        let err = usable_file_name("com.ex", &test_artifact("docker:nginx:latest"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("container runtime"), "{err}");
        assert!(usable_file_name("c", &test_artifact("s3://bucket/..")).is_err());
        assert_eq!(
            usable_file_name("c", &test_artifact("s3://bucket/dir/run.sh")).unwrap(),
            "run.sh"
        );
    }
}
