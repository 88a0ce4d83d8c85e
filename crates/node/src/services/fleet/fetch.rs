//! Fetching a fleet deployment's artifacts over HTTPS from the cloud's `apiEndpoint`, as the
//! device (mutual TLS with the thing's certificate and key; the server checked against
//! `rootCaPath`): resumable with `Range` from a partial `<file>.part`, verified against the
//! recipe's SHA-256 `Digest`, fsynced and renamed into place only when complete.
//!
//! Dependencies: after the roots' recipes, when any has `ComponentDependencies`, the cloud is
//! asked for the closure (`POST /device/v1/resolve`, the cloud's own resolution from its
//! stored recipes, as Greengrass's ResolveComponentCandidates) and every resolved version the
//! core's store does not hold is fetched too; the core then plans from the fetched recipes and
//! its store. Each deployment's recipes go into their own directory, removed once the
//! deployment's record is final ([`Staging::sweep`]).
//!
//! Platform: only the artifacts of the manifest the core's platform selects (os, architecture
//! and `platformOverride`, [`Staging::platform`]) are fetched; a recipe with no manifest for it
//! fails the deployment naming the component and the platform, before any download.
//!
//! Already held: an artifact the core's component store (or this fetch directory) holds with
//! the recipe's digest is not downloaded again (a new deployment of the same version with
//! another configuration downloads nothing); [`FetchStats`] counts bytes and skips.
//!
//! Bounds: an artifact at most the size the caller gives (the recipe's, or
//! [`MAX_ARTIFACT_BYTES`]); a recipe, or the resolve answer, at most [`MAX_RECIPE_BYTES`]; connecting at most
//! [`CONNECT_TIMEOUT`]; progress logged at most every [`PROGRESS_EVERY`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Either, Empty, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use lichen_mqtt_client::TlsFiles;
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};

pub const MAX_ARTIFACT_BYTES: u64 = 2 << 30;
pub const MAX_RECIPE_BYTES: usize = 1 << 20;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cloud.apiEndpoint {0:?}: must be https://host[:port]")]
    BadEndpoint(String),
    #[error("TLS setup for the cloud API: {0}")]
    Tls(String),
    #[error("{url}: {message}")]
    Request { url: String, message: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{what}: {size} bytes is over the bound of {max}")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error("{what}: the cloud answered {status}: {message}")]
    Cloud {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what}: digest mismatch")]
    DigestMismatch { what: String },
    #[error("{0}")]
    NoMatchingPlatform(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let context = context.into();
    move |source| FetchError::Io { context, source }
}

/// An HTTPS client of the cloud's device API.
pub struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
    endpoint: String,
}

impl Fetcher {
    pub fn new(api_endpoint: &str, files: &TlsFiles) -> Result<Fetcher, FetchError> {
        let bad = || FetchError::BadEndpoint(api_endpoint.to_string());
        let rest = api_endpoint.strip_prefix("https://").ok_or_else(bad)?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| bad())?),
            None => (authority.to_string(), 443),
        };
        if host.is_empty() {
            return Err(bad());
        }
        let tls =
            lichen_mqtt_client::tls_config(files).map_err(|e| FetchError::Tls(e.to_string()))?;
        Ok(Fetcher {
            tls: Arc::new(tls),
            host,
            port,
            endpoint: format!("https://{authority}"),
        })
    }

    async fn get(
        &self,
        path: &str,
        from: u64,
    ) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
        self.send(path, from, None).await
    }

    /// One request on a new connection: GET (from byte `from`), or POST of a JSON `body`.
    async fn send(
        &self,
        path: &str,
        from: u64,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
        let url = format!("{}{path}", self.endpoint);
        let fail = |message: String| FetchError::Request {
            url: url.clone(),
            message,
        };
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| fail("connect timed out".into()))?
        .map_err(|e| fail(format!("connect: {e}")))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| fail(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| fail(format!("TLS: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let method = if body.is_some() {
            hyper::Method::POST
        } else {
            hyper::Method::GET
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if from > 0 {
            request = request.header(hyper::header::RANGE, format!("bytes={from}-"));
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let body = match body {
            Some(b) => Either::Left(Full::new(Bytes::from(b))),
            None => Either::Right(Empty::<Bytes>::new()),
        };
        let request = request.body(body).map_err(|e| fail(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    /// The recipe of `name@version` as the cloud stores it.
    pub async fn recipe(&self, name: &str, version: &str) -> Result<Vec<u8>, FetchError> {
        let path = format!(
            "/device/v1/components/{}/versions/{}/recipe",
            encode(name),
            encode(version)
        );
        let url = format!("{}{path}", self.endpoint);
        let response = self.get(&path, 0).await?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status { url, status });
        }
        let body = Limited::new(response.into_body(), MAX_RECIPE_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Request {
                url: url.clone(),
                message: format!("recipe body (at most {MAX_RECIPE_BYTES} bytes): {e}"),
            })?;
        Ok(body.to_bytes().to_vec())
    }

    /// POSTs a JSON `body` to `path` as the device; the answer's status and body (at most
    /// `max` bytes). For the other device routes (the stream manager's cloud export).
    pub async fn post_json(
        &self,
        path: &str,
        body: Vec<u8>,
        max: usize,
    ) -> Result<(u16, Vec<u8>), FetchError> {
        let response = self.send(path, 0, Some(body)).await?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max)
            .collect()
            .await
            .map_err(|e| FetchError::Request {
                url: format!("{}{path}", self.endpoint),
                message: format!("answer (at most {max} bytes): {e}"),
            })?
            .to_bytes();
        Ok((status, body.to_vec()))
    }

    /// The versions of the dependency closure of `roots` (name → exact version), as the
    /// cloud resolves them (`POST /device/v1/resolve`). `Ok(None)`: the cloud has no such
    /// route (404), so the core resolves dependencies from its own store.
    /// `platform`: the core's, so the cloud picks dependency versions it can run.
    pub async fn resolve(
        &self,
        roots: &BTreeMap<String, String>,
        platform: &lichen_recipe::Platform,
    ) -> Result<Option<Resolved>, FetchError> {
        let path = "/device/v1/resolve";
        let url = format!("{}{path}", self.endpoint);
        let request = serde_json::json!({
            "components": roots,
            "platform": {"attributes": platform.attributes},
        });
        let body = serde_json::to_vec(&request).map_err(|e| FetchError::Request {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let response = self.send(path, 0, Some(body)).await?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RECIPE_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Request {
                url: url.clone(),
                message: format!("resolve answer (at most {MAX_RECIPE_BYTES} bytes): {e}"),
            })?
            .to_bytes();
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| FetchError::Request {
                    url,
                    message: format!("resolve answer: {e}"),
                }),
            404 => Ok(None),
            _ => {
                // The cloud's message names the conflict or the refusal.
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_string));
                match message {
                    Some(message) => Err(FetchError::Cloud {
                        what: "resolving the deployment's dependencies".into(),
                        status,
                        message,
                    }),
                    None => Err(FetchError::Status { url, status }),
                }
            }
        }
    }

    /// Downloads `path` into `dest`, resuming `dest.part`; `sha256_b64` is the recipe's
    /// Digest; `what` names the artifact in errors ("artifact <uri> of <name>@<version>").
    pub async fn artifact(
        &self,
        path: &str,
        dest: &Path,
        max: u64,
        sha256_b64: Option<&str>,
        what: &str,
    ) -> Result<u64, FetchError> {
        let url = format!("{}{path}", self.endpoint);
        let part = part_path(dest);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent.display().to_string()))?;
        }
        let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut response = self.get(path, have).await?;
        if have > 0 && response.status().as_u16() == 416 {
            // The part is no prefix of what the cloud has now: start over.
            std::fs::remove_file(&part).map_err(io(part.display().to_string()))?;
            have = 0;
            response = self.get(path, 0).await?;
        }
        let status = response.status().as_u16();
        let append = match status {
            206 if have > 0 => true,
            200 => false,
            _ => return Err(FetchError::Status { url, status }),
        };
        if !append {
            have = 0;
        }
        let total = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|len| len + have);
        if let Some(total) = total
            && total > max
        {
            return Err(FetchError::TooLarge {
                what: what.to_string(),
                size: total,
                max,
            });
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&part)
            .map_err(io(part.display().to_string()))?;
        let mut body = response.into_body();
        let mut last_log = Instant::now();
        let resumed_at = have;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FetchError::Request {
                url: url.clone(),
                message: e.to_string(),
            })?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            have += data.len() as u64;
            if have > max {
                return Err(FetchError::TooLarge {
                    what: what.to_string(),
                    size: have,
                    max,
                });
            }
            file.write_all(data)
                .map_err(io(part.display().to_string()))?;
            if last_log.elapsed() >= PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(artifact = %what, bytes = have, total = ?total, "downloading");
            }
        }
        file.sync_all().map_err(io(part.display().to_string()))?;
        drop(file);
        if let Some(expected) = sha256_b64 {
            // Hashing up to 2 GiB must not hold a runtime worker.
            let hashed = part.clone();
            let actual = tokio::task::spawn_blocking(move || sha256_of(&hashed))
                .await
                .map_err(|e| FetchError::Request {
                    url: url.clone(),
                    message: format!("hashing: {e}"),
                })??;
            if !digest_matches(expected, &actual) {
                // A corrupt part must not be resumed.
                let _ = std::fs::remove_file(&part);
                return Err(FetchError::DigestMismatch {
                    what: what.to_string(),
                });
            }
        }
        std::fs::rename(&part, dest).map_err(io(dest.display().to_string()))?;
        tracing::info!(artifact = %what, bytes = have, "downloaded");
        Ok(have - resumed_at)
    }
}

/// Whether a recipe's `Digest` (base64 as Greengrass writes it, or hex) names `actual`.
fn digest_matches(expected: &str, actual: &[u8; 32]) -> bool {
    let expected = expected.trim();
    let b64 = base64::engine::general_purpose::STANDARD.encode(actual);
    let hex: String = actual.iter().map(|b| format!("{b:02x}")).collect();
    expected == b64 || expected.eq_ignore_ascii_case(&hex)
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// The SHA-256 of a file (recipes write it base64, as Greengrass does, or hex).
pub fn sha256_of(path: &Path) -> Result<[u8; 32], FetchError> {
    let mut file = std::fs::File::open(path).map_err(io(path.display().to_string()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io(path.display().to_string()))?;
    Ok(hasher.finalize().into())
}

/// The cloud's answer to `POST /device/v1/resolve`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    pub resolved_component_versions: Vec<ResolvedVersion>,
    /// Dependencies the cloud holds no version of (built-ins, local components): the core
    /// resolves them from its store.
    #[serde(default)]
    pub external: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedVersion {
    pub component_name: String,
    pub component_version: String,
}

/// What the fetcher did, for the log and tests: bytes downloaded and artifacts not
/// downloaded because a copy with the same digest was held.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub downloaded_bytes: AtomicU64,
    pub artifacts_downloaded: AtomicU64,
    pub artifacts_skipped: AtomicU64,
}

/// Where a deployment's fetched recipes and artifacts go, and how they are fetched.
pub struct Staging {
    pub fetcher: Fetcher,
    /// `<root>/cloud/fetch`: artifacts under `<name>/<version>/`, each deployment's recipes
    /// under `recipes/<key>/` ([`Staging::recipe_dir`]).
    pub dir: PathBuf,
    /// The platform manifests are selected for (the core's: [`CoreHandle::platform`]).
    ///
    /// [`CoreHandle::platform`]: lichen_core::handle::CoreHandle::platform
    pub platform: lichen_recipe::Platform,
    /// The core's component store: an artifact it holds with the recipe's digest is not
    /// downloaded. None: only this fetch directory is looked in.
    pub store: Option<lichen_core::store::ComponentStore>,
    pub stats: FetchStats,
}

impl Staging {
    /// A staging for this machine's platform, looking in no component store.
    pub fn new(fetcher: Fetcher, dir: PathBuf) -> Staging {
        Staging {
            fetcher,
            dir,
            platform: lichen_recipe::Platform::current(),
            store: None,
            stats: FetchStats::default(),
        }
    }

    /// Where the recipes fetched for deployment `deployment_id` go: `recipes/` + 16 hex
    /// digits of the id's SHA-256 (ids come from the cloud; a hash is always a safe name).
    pub fn recipe_dir(&self, deployment_id: &str) -> PathBuf {
        let hash: String = Sha256::digest(deployment_id.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join("recipes").join(hash)
    }

    /// Fetches, for deployment `deployment_id`, the recipe of each root component and of each
    /// dependency the cloud resolves that `stored(name, version)` says the core's store does
    /// not have yet, and the artifacts each recipe lists (not `docker:` images, which the core
    /// pulls itself). Returns the deployment's recipe directory, emptied first.
    pub async fn fetch(
        &self,
        deployment_id: &str,
        roots: &BTreeMap<String, String>,
        stored: impl Fn(&str, &str) -> bool,
    ) -> Result<PathBuf, FetchError> {
        let recipes = self.recipe_dir(deployment_id);
        // An earlier attempt's recipes would be planned again: start from nothing.
        if recipes.exists() {
            std::fs::remove_dir_all(&recipes).map_err(io(recipes.display().to_string()))?;
        }
        std::fs::create_dir_all(&recipes).map_err(io(recipes.display().to_string()))?;
        let mut has_dependencies = false;
        for (name, version) in roots {
            let recipe = self.fetch_component(&recipes, name, version).await?;
            has_dependencies |= !recipe.dependencies.is_empty();
        }
        if !has_dependencies {
            return Ok(recipes);
        }
        let Some(resolved) = self.fetcher.resolve(roots, &self.platform).await? else {
            tracing::warn!(deployment = %deployment_id, "the cloud cannot resolve dependencies (no /device/v1/resolve); they must be in the core's store");
            return Ok(recipes);
        };
        let mut fetched = 0usize;
        for c in &resolved.resolved_component_versions {
            let (name, version) = (&c.component_name, &c.component_version);
            if roots.contains_key(name) || stored(name, version) {
                continue;
            }
            self.fetch_component(&recipes, name, version).await?;
            fetched += 1;
        }
        tracing::info!(
            deployment = %deployment_id,
            components = resolved.resolved_component_versions.len(),
            fetched,
            left_to_the_core = resolved.external.len(),
            "dependencies resolved by the cloud"
        );
        Ok(recipes)
    }

    /// Removes everything under `recipes/` but the directories in `keep` (those of the core
    /// deployments not final yet, which the core may still plan from): once a deployment's
    /// record is final its recipes are in the core's store, or it failed. Also removes the
    /// flat files earlier versions left directly in `recipes/`.
    pub fn sweep(&self, keep: &[PathBuf]) {
        let root = self.dir.join("recipes");
        if keep.iter().any(|k| k == &root) {
            return;
        }
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(dir = %root.display(), error = %e, "could not list fetched recipes");
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if keep.iter().any(|k| k == &path) {
                continue;
            }
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            match removed {
                Ok(()) => tracing::debug!(path = %path.display(), "fetched recipes removed"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove fetched recipes")
                }
            }
        }
    }

    /// Fetches `name@version`'s recipe into `recipes` and its artifacts; returns the recipe.
    async fn fetch_component(
        &self,
        recipes: &Path,
        name: &str,
        version: &str,
    ) -> Result<lichen_recipe::Recipe, FetchError> {
        let text = self.fetcher.recipe(name, version).await?;
        let what = format!("recipe of {name}@{version}");
        let text = String::from_utf8(text).map_err(|_| FetchError::Request {
            url: what.clone(),
            message: "not UTF-8".into(),
        })?;
        let recipe =
            lichen_recipe::parse_recipe(&text, &what).map_err(|e| FetchError::Request {
                url: what.clone(),
                message: e.to_string(),
            })?;
        if recipe.name != name || recipe.version.to_string() != version {
            return Err(FetchError::Request {
                url: what,
                message: format!("the cloud sent {}@{}", recipe.name, recipe.version),
            });
        }
        let ext = if text.trim_start().starts_with('{') {
            "json"
        } else {
            "yaml"
        };
        let file = recipes.join(format!("{name}-{version}.{ext}"));
        lichen_sys::atomic::write_atomic(&file, text.as_bytes(), 0o644).map_err(|e| {
            FetchError::Request {
                url: file.display().to_string(),
                message: e.to_string(),
            }
        })?;
        // Only the manifest this platform selects: the core plans with it, and another
        // platform's artifacts are of no use here.
        let Some(manifest) = recipe.manifest_for(&self.platform) else {
            let message = match recipe.select(&self.platform) {
                Err(e) => e.to_string(),
                Ok(_) => format!(
                    "component {name} {version} has no manifest for platform {}",
                    self.platform
                ),
            };
            return Err(FetchError::NoMatchingPlatform(message));
        };
        let mut done = BTreeSet::new();
        for artifact in recipe.manifests[manifest].artifacts.iter() {
            if artifact.scheme() == "docker" {
                continue;
            }
            let Some(file_name) = artifact.file_name() else {
                continue;
            };
            if !done.insert(file_name.to_string()) {
                continue;
            }
            if file_name.contains('/') || file_name.starts_with('.') {
                return Err(FetchError::Request {
                    url: artifact.uri.clone(),
                    message: "artifact file name not usable".into(),
                });
            }
            let dest = self.dir.join(name).join(version).join(file_name);
            let path = format!(
                "/device/v1/components/{}/versions/{}/artifacts/{}",
                encode(name),
                encode(version),
                encode(file_name)
            );
            let what = format!("artifact {} of {name}@{version}", artifact.uri);
            if let Some(digest) = artifact.digest.as_deref()
                && let Some(held) = self.held(name, version, file_name, &dest, digest).await
            {
                self.stats.artifacts_skipped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(artifact = %what, held = %held.display(), "already held with the same digest; not downloaded");
                continue;
            }
            let bytes = self
                .fetcher
                .artifact(
                    &path,
                    &dest,
                    MAX_ARTIFACT_BYTES,
                    artifact.digest.as_deref(),
                    &what,
                )
                .await?;
            self.stats
                .downloaded_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            self.stats
                .artifacts_downloaded
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(recipe)
    }

    /// A file holding `name@version`'s artifact `file_name` with this digest: the core's
    /// store copy (what the core stages from when the fetch directory has none), else the
    /// fetch directory's `dest`. Each is hashed off the runtime.
    async fn held(
        &self,
        name: &str,
        version: &str,
        file_name: &str,
        dest: &Path,
        digest: &str,
    ) -> Option<PathBuf> {
        let stored = semver::Version::parse(version).ok().and_then(|v| {
            self.store
                .as_ref()
                .map(|s| s.artifacts_path(name, &v).join(file_name))
        });
        for candidate in stored.into_iter().chain([dest.to_path_buf()]) {
            if !candidate.is_file() {
                continue;
            }
            let path = candidate.clone();
            let hashed = tokio::task::spawn_blocking(move || sha256_of(&path)).await;
            match hashed {
                Ok(Ok(actual)) if digest_matches(digest, &actual) => return Some(candidate),
                Ok(Ok(_)) => {
                    tracing::info!(file = %candidate.display(), "held artifact differs from the recipe's digest; downloading")
                }
                Ok(Err(e)) => {
                    tracing::warn!(file = %candidate.display(), error = %e, "held artifact unreadable; downloading")
                }
                Err(e) => tracing::warn!(error = %e, "hashing a held artifact failed"),
            }
        }
        None
    }
}

/// Percent-encodes a path segment (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
