//! What the component store needs of the content-addressed artifact store.
//!
//! A narrow seam: the service streams content in and learns its digest, asks whether content
//! is present, reads it back and removes what no version refers to any more. The cloud's
//! artifact store (`lichen_cloud_store`'s filesystem store, later an object store) implements
//! it.

use std::future::Future;
use std::pin::Pin;

use lichen_cloud_store::StoreError;
use tokio::io::AsyncRead;

/// A readable artifact and its size.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// What [`ArtifactBlobs::put`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutBlob {
    /// Lowercase hex SHA-256 of the content: its key.
    pub sha256: String,
    /// Bytes stored.
    pub size: u64,
}

/// Why a put failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The content is longer than the bound the caller gave (`at_least` bytes were read).
    #[error("more than {limit} bytes (at least {at_least} read)")]
    TooLarge {
        /// The bound.
        limit: u64,
        /// How many bytes had been read when it was exceeded.
        at_least: u64,
    },
    /// Reading the content failed (the uploader went away).
    #[error("reading the content: {0}")]
    Read(std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The content-addressed artifact store, as the component store uses it.
pub trait ArtifactBlobs: Send + Sync + 'static {
    /// Streams `content` into the store, at most `max_bytes` of it, computing its SHA-256.
    /// Storing content that is already present keeps one copy. Nothing is left behind when
    /// it fails.
    fn put(
        &self,
        content: &mut (dyn AsyncRead + Unpin + Send),
        max_bytes: u64,
    ) -> impl Future<Output = Result<PutBlob, PutError>> + Send;

    /// The size of the content stored under `sha256`, or `None` when absent.
    fn size(&self, sha256: &str) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Opens the content stored under `sha256` (`None` when absent).
    fn open(
        &self,
        sha256: &str,
    ) -> impl Future<Output = Result<Option<(BlobReader, u64)>, StoreError>> + Send;

    /// Removes the content; absent content is not an error.
    fn remove(&self, sha256: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}
