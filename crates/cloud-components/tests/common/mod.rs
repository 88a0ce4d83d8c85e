//! Test plumbing: a component store over a real backend and artifact directory, served on a
//! loopback socket, and a hyper client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use lichen_cloud_components::upload::{DeclaredArtifact, UPLOAD_CONTENT_TYPE, UploadHeader};
use lichen_cloud_components::{Components, Limits};
use lichen_cloud_store::{FsArtifactStore, Store};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpStream;

pub type TestComponents = Components<Store, FsArtifactStore>;

/// A client of another server (the device router).
pub struct Client {
    addr: SocketAddr,
}

/// A served component store over its own data directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub components: TestComponents,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The workspace root (for `examples/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl Env {
    /// On SQLite in a temp dir.
    pub async fn sqlite(limits: Limits) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), None)
            .await
            .expect("open sqlite store");
        Env::serve(dir, store, limits).await
    }

    pub async fn serve(dir: tempfile::TempDir, store: Store, limits: Limits) -> Env {
        let blobs = FsArtifactStore::new(dir.path()).expect("artifact store");
        let components = Components::new(store, blobs, limits);
        let app: axum::Router = lichen_cloud_components::router(components.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Env {
            dir,
            components,
            addr,
            server,
        }
    }

    /// Every stored artifact file (temporary files excluded).
    pub fn artifact_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![self.dir.path().join("artifacts")];
        while let Some(dir) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out.sort();
        out
    }

    pub fn client_for(addr: SocketAddr) -> Client {
        Client { addr }
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, hyper::HeaderMap, Vec<u8>) {
        Client { addr: self.addr }
            .request(method, path, content_type, body)
            .await
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self.request("GET", path, None, Vec::new()).await;
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    /// Publishes over HTTP with the framed upload.
    pub async fn publish(
        &self,
        recipe: &str,
        artifacts: &[(&str, &[u8])],
    ) -> (u16, serde_json::Value) {
        let body = upload_body(recipe, artifacts);
        let (status, _, body) = self
            .request("POST", "/components", Some(UPLOAD_CONTENT_TYPE), body)
            .await;
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }
}

impl Client {
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, hyper::HeaderMap, Vec<u8>) {
        let stream = TcpStream::connect(self.addr).await.expect("connect");

        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(Bytes::from(body))).expect("request");
        let resp = sender.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }
}

/// The framed body for a recipe and `(uri, content)` artifacts.
pub fn upload_body(recipe: &str, artifacts: &[(&str, &[u8])]) -> Vec<u8> {
    let header = UploadHeader {
        recipe: recipe.to_owned(),
        artifacts: artifacts
            .iter()
            .map(|(uri, content)| DeclaredArtifact {
                uri: (*uri).to_owned(),
                size: Some(content.len() as u64),
                sha256: None,
            })
            .collect(),
    };
    let mut body = header.encode_prefix();
    for (_, content) in artifacts {
        body.extend_from_slice(content);
    }
    body
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// The error message of a JSON error body.
pub fn message(body: &serde_json::Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub fn code(body: &serde_json::Value) -> String {
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A recipe with the given artifacts (one manifest, linux).
pub fn recipe(name: &str, version: &str, artifacts: &[&str]) -> String {
    let mut text = format!(
        "RecipeFormatVersion: \"2020-01-25\"\nComponentName: {name}\nComponentVersion: \"{version}\"\n\
         Manifests:\n  - Platform:\n      os: linux\n    Lifecycle:\n      Run: echo hi\n"
    );
    if !artifacts.is_empty() {
        text.push_str("    Artifacts:\n");
        for a in artifacts {
            text.push_str(&format!("      - URI: {a}\n"));
        }
    }
    text
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
