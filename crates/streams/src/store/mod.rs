//! The streams of one core: `<root>/streams/<id>/` per File stream, where `<id>` is the
//! first 32 hex digits of the SHA-256 of the name (names may hold characters and lengths
//! a file name cannot), holding `definition.cbor` (the definition as the SDK sends it,
//! written crash-safely), the segments `<first seq:020>.seg` and `exports.json` (the
//! export cursors). Memory streams live only in RAM and are gone after a restart.
//!
//! Why not `lichen-spool`: the spool deletes records when they are acked and refuses or
//! drops QoS 0 records when full; a stream has no acks, drops whole unacknowledged
//! segments under OverwriteOldestData, expires segments by ingest time, and needs the
//! ingest time and the sequence number in every record. Its acks file is also persisted
//! lazily, which would bring overwritten data back after a crash.
//!
//! Bounds ([`StoreConfig`]): streams per core, bytes on disk over all File streams and
//! bytes in RAM over all Memory streams (both counted as segment bytes, overhead
//! included), and one message's payload. RAM per stream: the definition, a few counters
//! per segment and one sparse index entry per 32 records.

pub mod segment;
pub mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::Digest;
use thiserror::Error;

pub use segment::StoredMessage;
pub use stream::Stream;

use crate::protocol::cbor;
use crate::protocol::{ExportStatus, Persistence, Status, StreamDefinition};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("message stream {0:?} does not exist")]
    NotFound(String),
    #[error("message stream {0:?} already exists")]
    Exists(String),
    #[error(
        "message stream {stream:?} is full (maxSize {max} bytes, strategyOnFull RejectNewData)"
    )]
    Full { stream: String, max: u64 },
    #[error("the stream manager's {what} bound of {max} bytes is reached")]
    CoreFull { what: &'static str, max: u64 },
    #[error("message of {bytes} bytes does not fit in stream {stream:?} (at most {max} bytes)")]
    TooLarge {
        stream: String,
        bytes: u64,
        max: u64,
    },
    #[error("at most {0} message streams may exist")]
    TooManyStreams(usize),
    #[error("update of stream {stream:?} not allowed: {message}")]
    UpdateNotAllowed { stream: String, message: String },
    #[error("update of stream {stream:?} failed: {message}")]
    UpdateFailed { stream: String, message: String },
    #[error("reading stream {stream:?}: {message}")]
    Read { stream: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// The status the client is answered with (see the crate docs for the pinned ones).
    pub fn status(&self) -> Status {
        match self {
            StoreError::NotFound(_) => Status::ResourceNotFound,
            StoreError::Exists(_)
            | StoreError::Full { .. }
            | StoreError::CoreFull { .. }
            | StoreError::TooManyStreams(_) => Status::InvalidRequest,
            StoreError::TooLarge { .. } => Status::RequestPayloadTooLarge,
            StoreError::UpdateNotAllowed { .. } => Status::UpdateNotAllowed,
            StoreError::UpdateFailed { .. } => Status::UpdateFailed,
            StoreError::Read { .. } => Status::MessageStoreReadError,
            StoreError::Io { .. } => Status::UnknownFailure,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `<root>/streams`.
    pub dir: PathBuf,
    pub max_streams: usize,
    /// Segment bytes over all File streams.
    pub max_file_bytes: u64,
    /// Segment bytes over all Memory streams.
    pub max_memory_bytes: u64,
    /// One message's payload.
    pub max_message_bytes: u64,
}

pub const DEFAULT_MAX_STREAMS: usize = 1024;
pub const DEFAULT_MAX_FILE_BYTES: u64 = 8 * 1024 * 1024 * 1024;
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
/// Below the protocol's frame bound (16 MiB) with room for the request's other fields.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 15 * 1024 * 1024;

impl StoreConfig {
    pub fn new(dir: PathBuf) -> StoreConfig {
        StoreConfig {
            dir,
            max_streams: DEFAULT_MAX_STREAMS,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// What Describe reports about storage.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub definition: StreamDefinition,
    pub oldest_sequence_number: i64,
    pub newest_sequence_number: i64,
    pub total_bytes: u64,
}

pub struct Store {
    config: StoreConfig,
    streams: Mutex<BTreeMap<String, Arc<Mutex<Stream>>>>,
    file_bytes: AtomicU64,
    memory_bytes: AtomicU64,
}

const DEFINITION: &str = "definition.cbor";
const EXPORTS: &str = "exports.json";

fn io(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sys(path: &Path, e: impl std::fmt::Display) -> StoreError {
    io(path, std::io::Error::other(e.to_string()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The directory name of a stream.
pub fn stream_id(name: &str) -> String {
    hex::encode(&sha2::Sha256::digest(name.as_bytes())[..16])
}

impl Store {
    /// Opens (creating) `config.dir` and every File stream in it.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let store = Store {
            config,
            streams: Mutex::new(BTreeMap::new()),
            file_bytes: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
        };
        lichen_sys::atomic::remove_stale_temps(&dir);
        let mut streams = lock(&store.streams);
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let entry = entry.map_err(|e| io(&dir, e))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            lichen_sys::atomic::remove_stale_temps(&path);
            let def_path = path.join(DEFINITION);
            let bytes = match std::fs::read(&def_path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A delete interrupted after the definition went: finish it.
                    tracing::info!(dir = %path.display(), "removing a half-deleted stream");
                    let _ = std::fs::remove_dir_all(&path);
                    continue;
                }
                Err(e) => return Err(io(&def_path, e)),
            };
            let definition =
                match cbor::decode_map(&bytes).and_then(|m| StreamDefinition::from_map(&m)) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(file = %def_path.display(), error = %e,
                        "unreadable stream definition; stream left on disk, not served");
                        continue;
                    }
                };
            let name = definition.name.clone();
            let s = Stream::open(definition, path, store.config.max_message_bytes)?;
            store
                .file_bytes
                .fetch_add(s.total_bytes(), Ordering::Relaxed);
            tracing::info!(stream = %name, next = s.next_seq(), bytes = s.total_bytes(), "stream reopened");
            streams.insert(name, Arc::new(Mutex::new(s)));
        }
        drop(streams);
        Ok(store)
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn counter(&self, p: Persistence) -> (&AtomicU64, u64, &'static str) {
        match p {
            Persistence::File => (&self.file_bytes, self.config.max_file_bytes, "disk"),
            Persistence::Memory => (&self.memory_bytes, self.config.max_memory_bytes, "memory"),
        }
    }

    fn write_definition(dir: &Path, d: &StreamDefinition) -> Result<(), StoreError> {
        let path = dir.join(DEFINITION);
        lichen_sys::atomic::write_atomic(&path, &cbor::encode(&d.to_value()), 0o600)
            .map_err(|e| sys(&path, e))
    }

    pub fn create(&self, definition: StreamDefinition) -> Result<(), StoreError> {
        let mut streams = lock(&self.streams);
        if streams.contains_key(&definition.name) {
            return Err(StoreError::Exists(definition.name));
        }
        if streams.len() >= self.config.max_streams {
            return Err(StoreError::TooManyStreams(self.config.max_streams));
        }
        let dir = match definition.persistence {
            Persistence::File => {
                let dir = self.config.dir.join(stream_id(&definition.name));
                // Leftovers of an earlier stream of this name (a delete cut short).
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                Self::write_definition(&dir, &definition)?;
                Some(dir)
            }
            Persistence::Memory => None,
        };
        let name = definition.name.clone();
        let stream = Stream::create(definition, dir, self.config.max_message_bytes)?;
        streams.insert(name, Arc::new(Mutex::new(stream)));
        Ok(())
    }

    pub fn update(&self, definition: StreamDefinition) -> Result<(), StoreError> {
        let stream = self.stream(&definition.name)?;
        let mut s = lock(&stream);
        let name = definition.name.clone();
        if definition.persistence != s.persistence() {
            return Err(StoreError::UpdateNotAllowed {
                stream: name,
                message: "persistence cannot change".into(),
            });
        }
        let max = definition.max_size as u64;
        if max < s.total_bytes() {
            return Err(StoreError::UpdateFailed {
                stream: name,
                message: format!(
                    "maxSize {max} is below the stream's size of {} bytes",
                    s.total_bytes()
                ),
            });
        }
        if definition.max_size < definition.stream_segment_size {
            return Err(StoreError::UpdateFailed {
                stream: name,
                message: format!(
                    "maxSize {} is below streamSegmentSize {}",
                    definition.max_size, definition.stream_segment_size
                ),
            });
        }
        if let Some(dir) = s.dir() {
            Self::write_definition(dir, &definition)?;
        }
        s.set_definition(definition);
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let stream = lock(&self.streams)
            .remove(name)
            .ok_or_else(|| StoreError::NotFound(name.to_string()))?;
        let s = lock(&stream);
        let (counter, _, _) = self.counter(s.persistence());
        counter.fetch_sub(s.total_bytes(), Ordering::Relaxed);
        if let Some(dir) = s.dir() {
            // The definition first: a crash after it leaves a directory the next open removes.
            let def = dir.join(DEFINITION);
            std::fs::remove_file(&def).map_err(|e| io(&def, e))?;
            std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        Ok(())
    }

    pub fn stream(&self, name: &str) -> Result<Arc<Mutex<Stream>>, StoreError> {
        lock(&self.streams)
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(name.to_string()))
    }

    pub fn list(&self) -> Vec<String> {
        lock(&self.streams).keys().cloned().collect()
    }

    pub fn describe(&self, name: &str) -> Result<StreamInfo, StoreError> {
        let stream = self.stream(name)?;
        let s = lock(&stream);
        Ok(StreamInfo {
            definition: s.definition.clone(),
            oldest_sequence_number: s.oldest_seq() as i64,
            newest_sequence_number: s.next_seq() as i64 - 1,
            total_bytes: s.total_bytes(),
        })
    }

    /// Appends one message; returns its sequence number.
    pub fn append(&self, name: &str, payload: &[u8], now_ms: i64) -> Result<u64, StoreError> {
        if payload.len() as u64 > self.config.max_message_bytes {
            return Err(StoreError::TooLarge {
                stream: name.to_string(),
                bytes: payload.len() as u64,
                max: self.config.max_message_bytes,
            });
        }
        let stream = self.stream(name)?;
        let mut s = lock(&stream);
        let (counter, limit, what) = self.counter(s.persistence());
        let rec = Stream::record_len(payload.len());
        // The core-wide bound: an OverwriteOldestData stream makes room from its own data;
        // others are refused.
        let used = counter.load(Ordering::Relaxed);
        if used + rec > limit {
            let freed = s.free_for(rec, used, limit)?;
            counter.fetch_sub(freed, Ordering::Relaxed);
            if used - freed + rec > limit {
                return Err(StoreError::CoreFull { what, max: limit });
            }
        }
        let before = s.total_bytes();
        let result = s.append(payload, now_ms);
        let after = s.total_bytes();
        if after >= before {
            counter.fetch_add(after - before, Ordering::Relaxed);
        } else {
            counter.fetch_sub(before - after, Ordering::Relaxed);
        }
        result.map(|o| o.sequence_number)
    }

    /// Reads from `start` (clamped to the oldest retained): up to `max_count` messages,
    /// payloads together ≤ `max_bytes` (one message at least, when any). Also returns the
    /// stream's next sequence number.
    pub fn read(
        &self,
        name: &str,
        start: u64,
        max_count: usize,
        max_bytes: u64,
    ) -> Result<(Vec<StoredMessage>, u64), StoreError> {
        let stream = self.stream(name)?;
        let s = lock(&stream);
        Ok((s.read(start, max_count, max_bytes)?, s.next_seq()))
    }

    /// Drops expired segments of every stream (the service calls it periodically).
    pub fn expire_all(&self, now_ms: i64) {
        let all: Vec<_> = lock(&self.streams).values().cloned().collect();
        for stream in all {
            let mut s = lock(&stream);
            match s.expire(now_ms) {
                Ok(freed) => {
                    let (counter, _, _) = self.counter(s.persistence());
                    counter.fetch_sub(freed, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(stream = %s.definition.name, error = %e, "TTL expiry failed")
                }
            }
        }
    }

    /// Bytes in use: (File streams on disk, Memory streams in RAM).
    pub fn usage(&self) -> (u64, u64) {
        (
            self.file_bytes.load(Ordering::Relaxed),
            self.memory_bytes.load(Ordering::Relaxed),
        )
    }

    /// The persisted export cursors of a File stream (empty for Memory streams).
    pub fn load_exports(&self, name: &str) -> Result<Vec<ExportStatus>, StoreError> {
        let stream = self.stream(name)?;
        let s = lock(&stream);
        let Some(dir) = s.dir() else {
            return Ok(Vec::new());
        };
        let path = dir.join(EXPORTS);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| sys(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Persists the export cursors of a File stream (crash-safe; a no-op for Memory).
    pub fn save_exports(&self, name: &str, statuses: &[ExportStatus]) -> Result<(), StoreError> {
        let stream = self.stream(name)?;
        let s = lock(&stream);
        if let Some(dir) = s.dir() {
            let path = dir.join(EXPORTS);
            lichen_sys::atomic::write_json_atomic(&path, &statuses, 0o600)
                .map_err(|e| sys(&path, e))?;
        }
        Ok(())
    }

    /// Syncs every active segment (clean shutdown).
    pub fn sync_all(&self) {
        for s in lock(&self.streams).values() {
            lock(s).sync();
        }
    }
}
