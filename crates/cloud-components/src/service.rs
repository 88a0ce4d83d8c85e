//! The component store's operations: publish, list, describe, delete, artifact reads.
//!
//! Publishing is validate → stream → commit. Everything that can be refused without content
//! (the recipe, the artifact set, sizes, an existing version) is refused before the first
//! byte of an artifact is read. Content uploaded for a publish that then fails is removed
//! again unless a stored version refers to it; a publish cut short (its future dropped: the
//! client went away) cleans up on a spawned task.
//!
//! Artifacts are shared between versions by digest, so "remove unless referenced" needs care
//! against concurrent publishes: content a publish in flight has stored or named is *pinned*
//! (in this process), and collection skips pinned content. Pinning and collection take one
//! lock, so a collection cannot remove content between a publish's check and its pin.
//! (Several control-plane nodes over one PostgreSQL would need the pins in the database; see
//! ARCHITECTURE.md.)

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use lichen_cloud_store::{
    ArtifactReader, ArtifactStore, Backend, ComponentVersion, Page, StoreError, StoredArtifact,
};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::Mutex;

use crate::error::{ComponentError, Result};
use crate::recipe::PublishedRecipe;
use crate::upload::{DeclaredArtifact, MAX_ARTIFACTS_PER_VERSION, UploadHeader};

/// Digests a sweep examines per listing of the artifact store.
pub const SWEEP_PAGE: usize = 1000;
/// How old unreferenced content must be before the start-up sweep removes it: far longer
/// than any publish takes, so one in flight on another node is never swept.
pub const SWEEP_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Size bounds of a publish. Beyond them the publish is refused with
/// [`ComponentError::TooLarge`] (HTTP 413), before any content is read when the sizes are
/// declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single artifact (default 2 GiB).
    pub max_artifact_bytes: u64,
    /// Largest sum of the artifacts one publish uploads (default 4 GiB).
    pub max_version_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_artifact_bytes: 2 << 30,
            max_version_bytes: 4 << 30,
        }
    }
}

/// The component store. Cheap to clone (an `Arc` inside).
pub struct Components<B, A> {
    inner: Arc<Inner<B, A>>,
}

impl<B, A> Clone for Components<B, A> {
    fn clone(&self) -> Self {
        Components {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B, A> {
    store: B,
    blobs: A,
    limits: Limits,
    /// Content pinned by publishes in flight (sha256 → how many). A std mutex, never held
    /// across an await, so a publish records a pin in the same step as it learns the digest
    /// (a drop cannot come between them).
    pins: std::sync::Mutex<HashMap<String, usize>>,
    /// Serializes collection with "is it present? then pin it", so content cannot be removed
    /// between a publish's check and its pin.
    collecting: Mutex<()>,
}

/// One artifact of a publish, once its content is known.
struct Staged {
    uri: String,
    sha256: String,
    size: u64,
}

/// A publish in progress: what it pinned and what it uploaded, so a failure (or a drop) can
/// undo it.
struct Publication<B: Backend + 'static, A: ArtifactStore + 'static> {
    components: Components<B, A>,
    recipe: PublishedRecipe,
    staged: Vec<Staged>,
    /// Digests pinned by this publish (each once).
    pinned: Vec<String>,
    /// Digests this publish stored content for (candidates for removal on failure).
    uploaded: Vec<String>,
    uploaded_bytes: u64,
    finished: bool,
}

impl<B: Backend + 'static, A: ArtifactStore + 'static> Components<B, A> {
    /// A component store over a backend and an artifact store.
    pub fn new(store: B, blobs: A, limits: Limits) -> Self {
        Components {
            inner: Arc::new(Inner {
                store,
                blobs,
                limits,
                pins: std::sync::Mutex::new(HashMap::new()),
                collecting: Mutex::new(()),
            }),
        }
    }

    /// The size bounds in force.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The backend.
    pub fn store(&self) -> &B {
        &self.inner.store
    }

    /// The artifact store.
    pub fn blobs(&self) -> &A {
        &self.inner.blobs
    }

    /// Publishes from an upload: `header` as decoded, `body` positioned at the first
    /// artifact's content (see [`crate::upload`]). `source` names the recipe in errors.
    pub async fn publish_upload(
        &self,
        header: &UploadHeader,
        body: &mut (dyn AsyncRead + Unpin + Send),
        source: &str,
    ) -> Result<ComponentVersion> {
        let mut publication = self
            .begin(&header.recipe, source, &header.artifacts)
            .await?;
        let result = async {
            for declared in &header.artifacts {
                if let Some(size) = declared.size {
                    let mut content = (&mut *body).take(size);
                    publication.receive(declared, size, &mut content).await?;
                }
            }
            let mut rest = [0u8; 1];
            let extra = body
                .read(&mut rest)
                .await
                .map_err(|e| ComponentError::Read {
                    what: "the end of the upload".into(),
                    message: e.to_string(),
                })?;
            if extra > 0 {
                return Err(ComponentError::invalid(
                    "upload",
                    "the body continues after the last declared artifact",
                ));
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => publication.commit().await,
            Err(e) => {
                publication.abort().await;
                Err(e)
            }
        }
    }

    /// Publishes a recipe with artifacts read from local files (`uri → path`). Every URI the
    /// recipe lists must be in `files`, and nothing else may be.
    pub async fn publish_files(
        &self,
        recipe_text: &str,
        source: &str,
        files: &BTreeMap<String, PathBuf>,
    ) -> Result<ComponentVersion> {
        let mut declared = Vec::with_capacity(files.len());
        for (uri, path) in files {
            let meta = tokio::fs::metadata(path)
                .await
                .map_err(|e| ComponentError::Read {
                    what: format!("artifact {uri:?} from {}", path.display()),
                    message: e.to_string(),
                })?;
            declared.push(DeclaredArtifact {
                uri: uri.clone(),
                size: Some(meta.len()),
                sha256: None,
            });
        }
        let mut publication = self.begin(recipe_text, source, &declared).await?;
        let result = async {
            for (declared, path) in declared.iter().zip(files.values()) {
                let size = declared.size.unwrap_or_default();
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| ComponentError::Read {
                        what: format!("artifact {:?} from {}", declared.uri, path.display()),
                        message: e.to_string(),
                    })?;
                let mut content = file.take(size);
                publication.receive(declared, size, &mut content).await?;
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => publication.commit().await,
            Err(e) => {
                publication.abort().await;
                Err(e)
            }
        }
    }

    /// Validates everything that needs no content, and pins the referenced content.
    async fn begin(
        &self,
        recipe_text: &str,
        source: &str,
        declared: &[DeclaredArtifact],
    ) -> Result<Publication<B, A>> {
        let recipe = PublishedRecipe::parse(recipe_text, source)?;
        let id = recipe.id.clone();
        let version = recipe.recipe.version.to_string();
        match self
            .inner
            .store
            .get_component_version(&recipe.recipe.name, &version)
            .await
        {
            Ok(_) => return Err(ComponentError::AlreadyExists { component: id }),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if declared.len() > MAX_ARTIFACTS_PER_VERSION {
            return Err(ComponentError::invalid(
                "artifacts",
                format!("more than {MAX_ARTIFACTS_PER_VERSION} artifacts"),
            ));
        }
        for d in declared {
            if !recipe.artifact_uris.contains(&d.uri) {
                return Err(ComponentError::UnexpectedArtifact {
                    component: id,
                    uri: d.uri.clone(),
                });
            }
        }
        for uri in &recipe.artifact_uris {
            if !declared.iter().any(|d| &d.uri == uri) {
                return Err(ComponentError::MissingArtifact {
                    component: id,
                    uri: uri.clone(),
                });
            }
        }
        let limits = self.inner.limits;
        let mut total: u64 = 0;
        for d in declared {
            let Some(size) = d.size else { continue };
            if size > limits.max_artifact_bytes {
                return Err(ComponentError::TooLarge {
                    what: format!("artifact {:?} of {id}", d.uri),
                    size,
                    limit: limits.max_artifact_bytes,
                });
            }
            total = total.saturating_add(size);
        }
        if total > limits.max_version_bytes {
            return Err(ComponentError::TooLarge {
                what: format!("the artifacts of {id} together"),
                size: total,
                limit: limits.max_version_bytes,
            });
        }
        let mut publication = Publication {
            components: self.clone(),
            recipe,
            staged: Vec::new(),
            pinned: Vec::new(),
            uploaded: Vec::new(),
            uploaded_bytes: 0,
            finished: false,
        };
        for d in declared.iter().filter(|d| d.size.is_none()) {
            let sha256 = d.sha256.clone().unwrap_or_default();
            let present = self.pin_if_present(&sha256).await;
            let size = match present {
                Ok(Some(size)) => size,
                Ok(None) => {
                    publication.abort().await;
                    return Err(ComponentError::UnknownDigest {
                        component: id,
                        uri: d.uri.clone(),
                        sha256,
                    });
                }
                Err(e) => {
                    publication.abort().await;
                    return Err(e);
                }
            };
            publication.pinned.push(sha256.clone());
            publication.staged.push(Staged {
                uri: d.uri.clone(),
                sha256,
                size,
            });
        }
        Ok(publication)
    }

    /// Pins `sha256` and returns its size, or leaves it unpinned and returns `None` when the
    /// content is absent.
    async fn pin_if_present(&self, sha256: &str) -> Result<Option<u64>> {
        let _collecting = self.inner.collecting.lock().await;
        let size = self.inner.blobs.size(sha256).await?;
        if size.is_some() {
            self.pin(sha256);
        }
        Ok(size)
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // A panic while holding it cannot leave the counts half-updated: each update is one
        // map operation.
        self.inner
            .pins
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pin(&self, sha256: &str) {
        *self.pins().entry(sha256.to_owned()).or_default() += 1;
    }

    fn unpin(&self, sha256: &str) {
        let mut pins = self.pins();
        if let Some(n) = pins.get_mut(sha256) {
            *n -= 1;
            if *n == 0 {
                pins.remove(sha256);
            }
        }
    }

    /// Removes the content unless a stored version refers to it or a publish in flight pinned
    /// it; whether it removed it. Failures are logged, not returned: the version operation
    /// they follow is done.
    async fn collect(&self, sha256: &str) -> bool {
        let _collecting = self.inner.collecting.lock().await;
        if self.pins().contains_key(sha256) {
            return false;
        }
        match self.inner.store.artifact_referenced(sha256).await {
            Ok(true) => false,
            Ok(false) => match self.inner.blobs.remove(sha256).await {
                Ok(removed) => removed,
                Err(e) => {
                    tracing::warn!(sha256, error = %e, "removing an unreferenced artifact failed");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(sha256, error = %e, "checking whether an artifact is referenced failed; kept");
                false
            }
        }
    }

    /// Removes content that no version refers to, stored more than `grace` ago and not
    /// pinned: what a publish cut short by a crash (content stored, version not) leaves
    /// behind. The grace period protects a publish in flight on another control-plane node,
    /// whose pins this process cannot see. Returns (examined, removed). Pages through the
    /// store [`SWEEP_PAGE`] digests at a time, so memory stays bounded.
    pub async fn sweep_unreferenced(&self, grace: std::time::Duration) -> Result<(usize, usize)> {
        let (mut examined, mut removed) = (0, 0);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .blobs
                .stored_before(grace, after.as_deref(), SWEEP_PAGE)
                .await?;
            for sha256 in &page {
                examined += 1;
                if self.collect(sha256).await {
                    removed += 1;
                    tracing::info!(sha256 = %sha256, "removed an artifact no version refers to");
                }
            }
            if page.len() < SWEEP_PAGE {
                return Ok((examined, removed));
            }
            after = page.last().cloned();
        }
    }

    /// Component versions, latest version first within each name (see [`Backend`]'s
    /// paging).
    pub async fn list(&self, name: Option<&str>, page: &Page) -> Result<Vec<ComponentVersion>> {
        Ok(self.inner.store.list_component_versions(name, page).await?)
    }

    /// One component version, with its stored recipe.
    pub async fn describe(&self, name: &str, version: &str) -> Result<ComponentVersion> {
        match self.inner.store.get_component_version(name, version).await {
            Ok(c) => Ok(c),
            Err(StoreError::NotFound { .. }) => Err(ComponentError::NotFound {
                what: format!("component {name}@{version}"),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a version (refused while a deployment names it) and the artifacts no other
    /// version refers to.
    pub async fn delete(&self, name: &str, version: &str) -> Result<()> {
        let component = self.describe(name, version).await?;
        match self
            .inner
            .store
            .delete_component_version(name, version)
            .await
        {
            Ok(()) => {}
            Err(StoreError::InUse { by, .. }) => {
                return Err(ComponentError::InUse {
                    component: format!("{name}@{version}"),
                    deployments: by,
                });
            }
            Err(StoreError::NotFound { .. }) => {
                return Err(ComponentError::NotFound {
                    what: format!("component {name}@{version}"),
                });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(component = %format!("{name}@{version}"), "component version deleted");
        for artifact in &component.artifacts {
            self.collect(&artifact.sha256).await;
        }
        Ok(())
    }

    /// Opens one artifact of a version. `uri` is the artifact's URI as the recipe writes it,
    /// or its file name when exactly one artifact of the version has that file name.
    pub async fn artifact(
        &self,
        name: &str,
        version: &str,
        uri: &str,
    ) -> Result<(StoredArtifact, ArtifactReader)> {
        self.artifact_from(name, version, uri, 0).await
    }

    /// As [`Components::artifact`], the reader positioned `offset` bytes in (a resumed
    /// download). The artifact's `size` is the whole content's.
    pub async fn artifact_from(
        &self,
        name: &str,
        version: &str,
        uri: &str,
        offset: u64,
    ) -> Result<(StoredArtifact, ArtifactReader)> {
        let component = self.describe(name, version).await?;
        let artifact =
            find_artifact(&component.artifacts, uri).ok_or_else(|| ComponentError::NotFound {
                what: format!("artifact {uri:?} of component {name}@{version}"),
            })?;
        match self.inner.blobs.open_at(&artifact.sha256, offset).await {
            Ok(reader) => {
                let mut artifact = artifact.clone();
                artifact.size = reader.size;
                Ok((artifact, reader))
            }
            Err(StoreError::NotFound { .. }) => Err(ComponentError::NotFound {
                what: format!(
                    "content {} of artifact {:?} of component {name}@{version}",
                    artifact.sha256, artifact.uri
                ),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// By exact URI, else by a file name only one artifact has.
fn find_artifact<'a>(artifacts: &'a [StoredArtifact], uri: &str) -> Option<&'a StoredArtifact> {
    if let Some(a) = artifacts.iter().find(|a| a.uri == uri) {
        return Some(a);
    }
    let mut by_name = artifacts
        .iter()
        .filter(|a| a.uri.rsplit('/').next() == Some(uri));
    match (by_name.next(), by_name.next()) {
        (Some(a), None) => Some(a),
        _ => None,
    }
}

impl<B: Backend + 'static, A: ArtifactStore + 'static> Publication<B, A> {
    /// Streams one artifact's content into the artifact store and checks it against its
    /// declaration.
    async fn receive(
        &mut self,
        declared: &DeclaredArtifact,
        size: u64,
        content: &mut (dyn AsyncRead + Unpin + Send),
    ) -> Result<()> {
        let id = self.recipe.id.clone();
        let limits = self.components.inner.limits;
        let budget = limits
            .max_version_bytes
            .saturating_sub(self.uploaded_bytes)
            .min(limits.max_artifact_bytes)
            .min(size);
        // Tells a failure to read the upload (the client's doing: 400) from a failure of the
        // store (500).
        let mut source = Source {
            inner: content,
            failed: None,
        };
        let put = self
            .components
            .inner
            .blobs
            .put(&mut source, None, budget)
            .await;
        let put = match put {
            Ok(put) => put,
            Err(_) if source.failed.is_some() => {
                return Err(ComponentError::Read {
                    what: format!("artifact {:?} of {id}", declared.uri),
                    message: source.failed.unwrap_or_default(),
                });
            }
            Err(StoreError::Invalid {
                field: "artifact", ..
            }) => {
                return Err(ComponentError::TooLarge {
                    what: format!("artifact {:?} of {id}", declared.uri),
                    size: budget.saturating_add(1),
                    limit: budget,
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.components.pin(&put.sha256);
        self.pinned.push(put.sha256.clone());
        self.uploaded.push(put.sha256.clone());
        self.uploaded_bytes += put.size;
        // Content-addressed stores keep one copy: a concurrent delete may have collected
        // content equal to this between the put and the pin.
        if self.components.inner.blobs.size(&put.sha256).await? != Some(put.size) {
            return Err(ComponentError::Conflict(format!(
                "artifact {:?} of {id} was collected while it was uploaded",
                declared.uri
            )));
        }
        if put.size != size {
            return Err(ComponentError::ContentMismatch {
                component: id,
                uri: declared.uri.clone(),
                message: format!("the content ended after {} of {size} bytes", put.size),
            });
        }
        if let Some(expected) = &declared.sha256
            && *expected != put.sha256
        {
            return Err(ComponentError::ContentMismatch {
                component: id,
                uri: declared.uri.clone(),
                message: format!(
                    "its sha256 is {}, the upload declared {expected}",
                    put.sha256
                ),
            });
        }
        self.staged.push(Staged {
            uri: declared.uri.clone(),
            sha256: put.sha256,
            size: put.size,
        });
        Ok(())
    }

    /// Writes the version (digests injected into the recipe) and releases the pins.
    async fn commit(mut self) -> Result<ComponentVersion> {
        let result = self.write().await;
        match result {
            Ok(component) => {
                self.finished = true;
                for sha in std::mem::take(&mut self.pinned) {
                    self.components.unpin(&sha);
                }
                tracing::info!(component = %self.recipe.id, artifacts = component.artifacts.len(), "component version published");
                Ok(component)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn write(&self) -> Result<ComponentVersion> {
        let digests: BTreeMap<String, String> = self
            .staged
            .iter()
            .map(|s| (s.uri.clone(), s.sha256.clone()))
            .collect();
        let document = self.recipe.stored_document(&digests)?;
        // Artifacts in the order the recipe lists them.
        let artifacts = self
            .recipe
            .artifact_uris
            .iter()
            .filter_map(|uri| self.staged.iter().find(|s| &s.uri == uri))
            .map(|s| StoredArtifact {
                uri: s.uri.clone(),
                sha256: s.sha256.clone(),
                size: s.size,
            })
            .collect();
        let component = ComponentVersion {
            name: self.recipe.recipe.name.clone(),
            version: self.recipe.recipe.version.to_string(),
            recipe: document,
            artifacts,
            created_at: lichen_sys::time::format_rfc3339_millis(SystemTime::now()),
        };
        match self
            .components
            .inner
            .store
            .create_component_version(&component)
            .await
        {
            Ok(()) => Ok(component),
            Err(StoreError::AlreadyExists { .. }) => Err(ComponentError::AlreadyExists {
                component: self.recipe.id.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Releases the pins and removes the content this publish uploaded that nothing refers
    /// to.
    async fn abort(&mut self) {
        self.finished = true;
        let pinned = std::mem::take(&mut self.pinned);
        let uploaded = std::mem::take(&mut self.uploaded);
        undo(&self.components, pinned, uploaded).await;
    }
}

async fn undo<B: Backend + 'static, A: ArtifactStore + 'static>(
    components: &Components<B, A>,
    pinned: Vec<String>,
    uploaded: Vec<String>,
) {
    for sha in &pinned {
        components.unpin(sha);
    }
    for sha in &uploaded {
        components.collect(sha).await;
    }
}

impl<B: Backend + 'static, A: ArtifactStore + 'static> Drop for Publication<B, A> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Cut short (the request was dropped mid-upload): undo on a task of its own.
        let pinned = std::mem::take(&mut self.pinned);
        let uploaded = std::mem::take(&mut self.uploaded);
        let components = self.components.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { undo(&components, pinned, uploaded).await });
            }
            Err(_) => tracing::warn!(
                component = %self.recipe.id,
                "a publish was dropped outside a runtime; its uploaded artifacts stay until collected"
            ),
        }
    }
}

/// The upload as the artifact store reads it, remembering whether reading it failed.
struct Source<'a> {
    inner: &'a mut (dyn AsyncRead + Unpin + Send),
    failed: Option<String>,
}

impl AsyncRead for Source<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Err(e)) = &poll {
            self.failed = Some(e.to_string());
        }
        poll
    }
}
