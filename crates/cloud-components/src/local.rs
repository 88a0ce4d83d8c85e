//! The client side of publishing from a local directory (`lichen cloud component create`):
//! finding each artifact's file, and the upload body as a stream with progress.
//!
//! Files are found as the core's local deployments find them, `DIR/<name>/<version>/<file>`,
//! or else `DIR/<file>`, where `<file>` is the last segment of the artifact's URI.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::error::{ComponentError, Result};
use crate::recipe::PublishedRecipe;
use crate::upload::{DeclaredArtifact, UploadHeader};

/// One artifact found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalArtifact {
    /// The URI as the recipe writes it.
    pub uri: String,
    /// Where its content is.
    pub path: PathBuf,
    /// Its size when found.
    pub size: u64,
}

/// Finds the file of every artifact the recipe lists under `dir` (`None`: the recipe must
/// list none). Errors name the artifact and the paths tried.
pub fn find_artifacts(recipe: &PublishedRecipe, dir: Option<&Path>) -> Result<Vec<LocalArtifact>> {
    let name = &recipe.recipe.name;
    let version = recipe.recipe.version.to_string();
    let mut found: Vec<LocalArtifact> = Vec::new();
    for uri in &recipe.artifact_uris {
        let file = recipe.file_name(uri).ok_or_else(|| {
            ComponentError::invalid("recipe", format!("artifact {uri:?} names no file"))
        })?;
        let Some(dir) = dir else {
            return Err(ComponentError::MissingArtifact {
                component: recipe.id.clone(),
                uri: uri.clone(),
            });
        };
        let candidates = [dir.join(name).join(&version).join(file), dir.join(file)];
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(ComponentError::invalid(
                format!("artifact {uri:?}"),
                format!(
                    "no file at {} or {}",
                    candidates[0].display(),
                    candidates[1].display()
                ),
            ));
        };
        if let Some(other) = found.iter().find(|f| &f.path == path) {
            return Err(ComponentError::invalid(
                format!("artifact {uri:?}"),
                format!(
                    "it and {:?} would both be read from {}: their file names are the same",
                    other.uri,
                    path.display()
                ),
            ));
        }
        let size = std::fs::metadata(path)
            .map_err(|e| ComponentError::Read {
                what: path.display().to_string(),
                message: e.to_string(),
            })?
            .len();
        found.push(LocalArtifact {
            uri: uri.clone(),
            path: path.clone(),
            size,
        });
    }
    Ok(found)
}

/// The header of an upload of `artifacts` (sizes as found).
pub fn upload_header(recipe_text: &str, artifacts: &[LocalArtifact]) -> UploadHeader {
    UploadHeader {
        recipe: recipe_text.to_owned(),
        artifacts: artifacts
            .iter()
            .map(|a| DeclaredArtifact {
                uri: a.uri.clone(),
                size: Some(a.size),
                sha256: None,
            })
            .collect(),
    }
}

/// Called with the bytes of artifact content sent so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// The whole upload body as one reader: prefix, then each file (exactly its declared size;
/// a file that shrank meanwhile makes the server refuse the upload). `progress` hears the
/// artifact bytes sent.
pub async fn upload_reader(
    header: &UploadHeader,
    artifacts: &[LocalArtifact],
    progress: Progress,
) -> Result<Pin<Box<dyn AsyncRead + Send>>> {
    let prefix = header.encode_prefix();
    let prefix_len = prefix.len() as u64;
    let mut reader: Pin<Box<dyn AsyncRead + Send>> = Box::pin(io::Cursor::new(prefix));
    for a in artifacts {
        let file = tokio::fs::File::open(&a.path)
            .await
            .map_err(|e| ComponentError::Read {
                what: a.path.display().to_string(),
                message: e.to_string(),
            })?;
        reader = Box::pin(reader.chain(file.take(a.size)));
    }
    Ok(Box::pin(Counting {
        inner: reader,
        read: 0,
        skip: prefix_len,
        progress,
    }))
}

struct Counting {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    read: u64,
    /// The prefix is not artifact content.
    skip: u64,
    progress: Progress,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                self.read += n;
                let content = self.read.saturating_sub(self.skip);
                (self.progress)(content);
            }
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_found_in_either_layout_and_missing_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = "RecipeFormatVersion: '2020-01-25'\nComponentName: com.ex.A\nComponentVersion: '1.0.0'\n\
            Manifests:\n  - Artifacts:\n      - URI: s3://b/x/one.sh\n      - URI: s3://b/two.bin\n";
        let recipe = PublishedRecipe::parse(text, "r.yaml").unwrap();
        std::fs::create_dir_all(dir.path().join("com.ex.A/1.0.0")).unwrap();
        std::fs::write(dir.path().join("com.ex.A/1.0.0/one.sh"), b"echo 1").unwrap();
        let err = find_artifacts(&recipe, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s3://b/two.bin") && err.contains("two.bin"),
            "{err}"
        );
        std::fs::write(dir.path().join("two.bin"), b"22").unwrap();
        let found = find_artifacts(&recipe, Some(dir.path())).unwrap();
        assert_eq!(found[0].path, dir.path().join("com.ex.A/1.0.0/one.sh"));
        assert_eq!(
            (found[1].path.clone(), found[1].size),
            (dir.path().join("two.bin"), 2)
        );
        assert!(find_artifacts(&recipe, None).is_err());
    }

    #[tokio::test]
    async fn the_reader_is_prefix_then_contents_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![5u8; 10_000]).unwrap();
        let artifacts = vec![LocalArtifact {
            uri: "s3://b/f".into(),
            path,
            size: 10_000,
        }];
        let header = upload_header("recipe", &artifacts);
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen2 = seen.clone();
        let progress: Progress =
            Arc::new(move |n| seen2.store(n, std::sync::atomic::Ordering::SeqCst));
        let mut reader = upload_reader(&header, &artifacts, progress).await.unwrap();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        let (back, used) = crate::upload::decode_prefix(&all).unwrap();
        assert_eq!(back, header);
        assert_eq!(&all[used..], &vec![5u8; 10_000][..]);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 10_000);
    }
}
