//! Component artifacts, content-addressed by sha256, outside the database.
//!
//! [`ArtifactStore`] is the interface (an object store can implement it later);
//! [`FsArtifactStore`] keeps each artifact at `<data_dir>/artifacts/<aa>/<sha256>` where `aa`
//! is the digest's first two hex digits. Uploads stream from any `AsyncRead` into a temporary
//! file under `artifacts/tmp/`, hashed as they are written and cut off at the caller's size
//! limit; then fsync, rename into place and fsync the directory, so a stored artifact is
//! always complete and its name always its digest. A temporary file a crash left behind is
//! removed at the next start once it is an hour old.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::{Result, StoreError};

/// Bytes read from the upload per write.
const CHUNK: usize = 64 * 1024;
/// A temporary upload file older than this at start-up belongs to a writer that died.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// What was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    pub size: u64,
}

/// An artifact opened for reading.
pub struct ArtifactReader {
    pub size: u64,
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
}

impl std::fmt::Debug for ArtifactReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactReader")
            .field("size", &self.size)
            .finish()
    }
}

pub trait ArtifactStore: Send + Sync {
    /// Streams `content` in. More than `max_size` bytes is refused (Invalid `artifact`), and
    /// so is content whose digest is not `expected_sha256` when one is given (Invalid
    /// `sha256`); nothing is stored then. Storing content already present is not an error.
    fn put<R: AsyncRead + Unpin + Send>(
        &self,
        content: R,
        expected_sha256: Option<&str>,
        max_size: u64,
    ) -> impl Future<Output = Result<ArtifactInfo>> + Send;
    /// NotFound (kind `artifact`) when absent.
    fn open(&self, sha256: &str) -> impl Future<Output = Result<ArtifactReader>> + Send;
    /// As [`ArtifactStore::open`], the reader positioned `offset` bytes in (a resumed
    /// download); `size` stays the whole content's. An offset past the end is Invalid
    /// `range`.
    fn open_at(
        &self,
        sha256: &str,
        offset: u64,
    ) -> impl Future<Output = Result<ArtifactReader>> + Send;
    /// The stored size, or None when absent.
    fn size(&self, sha256: &str) -> impl Future<Output = Result<Option<u64>>> + Send;
    /// Whether it was there. Callers check `Backend::artifact_referenced` first.
    fn remove(&self, sha256: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Digests of content stored longer ago than `age`, in digest order, after `after`,
    /// at most `limit`: the candidates of a sweep for content no version refers to.
    fn stored_before(
        &self,
        age: Duration,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// Whether `s` is a digest this store names files by (64 lowercase hex digits).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_digest(sha256: &str) -> Result<()> {
    if is_sha256_hex(sha256) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field: "sha256",
            message: format!("{sha256:?} is not 64 lowercase hex digits"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct FsArtifactStore {
    root: PathBuf,
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Artifacts {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Removes the temporary upload unless disarmed, also when the upload future is dropped.
struct TempGuard {
    path: Option<PathBuf>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl FsArtifactStore {
    /// Uses (creating it) `<data_dir>/artifacts`.
    pub fn new(data_dir: &Path) -> Result<FsArtifactStore> {
        let root = data_dir.join("artifacts");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| io_error(&tmp, e))?;
        for dir in [&root, &tmp] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error(dir, e))?;
        }
        let store = FsArtifactStore { root };
        store.remove_stale_temps();
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where an artifact lives (the digest must be valid).
    pub fn path_of(&self, sha256: &str) -> Result<PathBuf> {
        check_digest(sha256)?;
        Ok(self.root.join(&sha256[..2]).join(sha256))
    }

    fn remove_stale_temps(&self) {
        let tmp = self.root.join("tmp");
        let Ok(entries) = std::fs::read_dir(&tmp) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP_AGE);
            if old && std::fs::remove_file(entry.path()).is_ok() {
                tracing::info!(path = %entry.path().display(), "removed a stale artifact upload");
            }
        }
    }

    async fn sync_dir(dir: PathBuf) -> Result<()> {
        tokio::task::spawn_blocking(move || {
            lichen_sys::atomic::sync_dir(&dir).map_err(|e| StoreError::Artifacts {
                path: dir.display().to_string(),
                message: e.to_string(),
            })
        })
        .await
        .map_err(|e| StoreError::Artifacts {
            path: String::new(),
            message: format!("directory sync task failed: {e}"),
        })?
    }
}

impl ArtifactStore for FsArtifactStore {
    async fn put<R: AsyncRead + Unpin + Send>(
        &self,
        mut content: R,
        expected_sha256: Option<&str>,
        max_size: u64,
    ) -> Result<ArtifactInfo> {
        if let Some(expected) = expected_sha256 {
            check_digest(expected)?;
        }
        let temp_path = self.root.join("tmp").join(format!(
            "{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut guard = TempGuard {
            path: Some(temp_path.clone()),
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp_path)
            .await
            .map_err(|e| io_error(&temp_path, e))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let n = content
                .read(&mut buffer)
                .await
                .map_err(|e| StoreError::Artifacts {
                    path: "upload".into(),
                    message: format!("reading the upload: {e}"),
                })?;
            if n == 0 {
                break;
            }
            size = size.saturating_add(n as u64);
            if size > max_size {
                return Err(StoreError::Invalid {
                    field: "artifact",
                    message: format!("larger than the limit of {max_size} bytes"),
                });
            }
            hasher.update(&buffer[..n]);
            file.write_all(&buffer[..n])
                .await
                .map_err(|e| io_error(&temp_path, e))?;
        }
        file.sync_all().await.map_err(|e| io_error(&temp_path, e))?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        if let Some(expected) = expected_sha256
            && expected != sha256
        {
            return Err(StoreError::Invalid {
                field: "sha256",
                message: format!("the content's digest is {sha256}, not {expected}"),
            });
        }
        let final_path = self.path_of(&sha256)?;
        let shard = self.root.join(&sha256[..2]);
        if tokio::fs::try_exists(&final_path).await.unwrap_or(false) {
            return Ok(ArtifactInfo { sha256, size });
        }
        let new_shard = !tokio::fs::try_exists(&shard).await.unwrap_or(false);
        tokio::fs::create_dir_all(&shard)
            .await
            .map_err(|e| io_error(&shard, e))?;
        tokio::fs::rename(&temp_path, &final_path)
            .await
            .map_err(|e| io_error(&final_path, e))?;
        guard.path = None;
        Self::sync_dir(shard).await?;
        if new_shard {
            Self::sync_dir(self.root.clone()).await?;
        }
        Ok(ArtifactInfo { sha256, size })
    }

    async fn open(&self, sha256: &str) -> Result<ArtifactReader> {
        let path = self.path_of(sha256)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    kind: "artifact",
                    key: sha256.to_owned(),
                });
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let size = file.metadata().await.map_err(|e| io_error(&path, e))?.len();
        Ok(ArtifactReader {
            size,
            reader: Box::pin(file),
        })
    }

    async fn open_at(&self, sha256: &str, offset: u64) -> Result<ArtifactReader> {
        use tokio::io::AsyncSeekExt as _;
        let path = self.path_of(sha256)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    kind: "artifact",
                    key: sha256.to_owned(),
                });
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let size = file.metadata().await.map_err(|e| io_error(&path, e))?.len();
        if offset > size {
            return Err(StoreError::Invalid {
                field: "range",
                message: format!("starts at byte {offset}, past the end ({size} bytes)"),
            });
        }
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_error(&path, e))?;
        Ok(ArtifactReader {
            size,
            reader: Box::pin(file),
        })
    }

    async fn size(&self, sha256: &str) -> Result<Option<u64>> {
        let path = self.path_of(sha256)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    async fn remove(&self, sha256: &str) -> Result<bool> {
        let path = self.path_of(sha256)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                Self::sync_dir(self.root.join(&sha256[..2])).await?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    async fn stored_before(
        &self,
        age: Duration,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let root = self.root.clone();
        let after = after.map(str::to_owned);
        tokio::task::spawn_blocking(move || stored_before(&root, age, after.as_deref(), limit))
            .await
            .map_err(|e| StoreError::Artifacts {
                path: String::new(),
                message: format!("artifact listing task failed: {e}"),
            })?
    }
}

/// The walk behind [`FsArtifactStore::stored_before`]: the fan-out directories in order,
/// each one's digests sorted, skipping what is not a digest (`tmp/`, strays).
fn stored_before(
    root: &Path,
    age: Duration,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let now = SystemTime::now();
    let mut fanout: Vec<String> = std::fs::read_dir(root)
        .map_err(|e| io_error(root, e))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .filter(|n| after.is_none_or(|a| n.as_str() >= &a[..2.min(a.len())]))
        .collect();
    fanout.sort();
    let mut found = Vec::new();
    for dir in fanout {
        let path = root.join(&dir);
        let mut names: Vec<(String, Option<SystemTime>)> = std::fs::read_dir(&path)
            .map_err(|e| io_error(&path, e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let modified = e.metadata().and_then(|m| m.modified()).ok();
                Some((name, modified))
            })
            .filter(|(n, _)| is_sha256_hex(n) && n.starts_with(&dir))
            .filter(|(n, _)| after.is_none_or(|a| n.as_str() > a))
            .collect();
        names.sort();
        for (name, modified) in names {
            // Unknown age counts as young: never remove what cannot be dated.
            let old = modified
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|a| a > age);
            if old {
                found.push(name);
                if found.len() >= limit {
                    return Ok(found);
                }
            }
        }
    }
    Ok(found)
}
