//! lichen-spool: a durable, bounded log of MQTT-shaped records (Vector's disk buffer is the
//! model). The cloud link spools QoS 0/1 publishes in it while offline; the stream manager
//! will store its streams in it.
//!
//! * **Storage:** segment files `<dir>/<first-seq>.seg` (20-digit, zero padded), each a run of
//!   records `len | crc32 | seq | qos | topic | properties | payload` (see [`format`]); acks
//!   in `<dir>/acks`, replaced crash-safely with `lichen_sys::atomic`. In-memory when
//!   `dir` is `None`.
//! * **Acks:** a record is removed only when acked; acks may come in any order; a sealed
//!   segment is deleted once every record in it is acked. Acks are persisted lazily (by
//!   [`Spool::flush`], the group-commit thread and drop), so after a crash an ack may be lost
//!   and its record delivered again: delivery is at least once, never lossy.
//! * **Durability:** [`Spool::append_durable`] returns once the record is on disk under the
//!   [`FsyncPolicy`]: `GroupCommit` shares one `fdatasync` among all appenders waiting at the
//!   same time (and a background thread syncs plain appends within `max_delay`); `Always`
//!   syncs every append on its own; `Never` leaves it to the OS (survives kill -9, not a power cut).
//! * **Recovery:** on open a torn or corrupt tail is logged and truncated, corrupt records
//!   mid-segment are skipped (counted in [`Stats::corrupt_skipped`]); never fatal.
//! * **Bounds:** a record's topic + properties + payload ≤ [`MAX_RECORD_BYTES`] (1 MiB); disk
//!   use (segment bytes, overhead included) ≤ `max_bytes`; RAM holds per-segment counters,
//!   ack ranges and one write buffer ([`WRITE_BUFFER_BYTES`]), never the spooled payloads.

mod disk;
pub mod format;
mod memory;
mod ranges;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub use format::MAX_RECORD_BYTES;

/// Sequence number of a record: increases by one per append, never reused in a directory.
pub type Seq = u64;

/// Appends are collected in memory up to this many bytes before one `write`.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    /// Opaque encoded MQTT 5 properties (the caller's encoding).
    pub properties: Vec<u8>,
}

impl Record {
    fn check(&self) -> Result<(), SpoolError> {
        let bytes = self.topic.len() + self.payload.len() + self.properties.len();
        if bytes > MAX_RECORD_BYTES || self.topic.len() > u16::MAX as usize {
            return Err(SpoolError::TooLarge {
                bytes,
                max: MAX_RECORD_BYTES,
            });
        }
        if self.qos > 2 {
            return Err(SpoolError::BadRecord(format!(
                "qos {} is not 0, 1 or 2",
                self.qos
            )));
        }
        Ok(())
    }
}

/// A stored record and its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: Seq,
    pub record: Record,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse the new record with [`SpoolError::Full`].
    Reject,
    /// Drop the oldest unacked QoS 0 records (counted in `dropped_qos0`) to make room; if
    /// only QoS 1/2 records remain, refuse with [`SpoolError::Full`].
    DropOldestQos0,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Waiters share one fsync; plain appends are synced within `max_delay`.
    GroupCommit { max_delay: Duration },
    /// One fsync per append.
    Always,
    /// No fsync: data reaches the OS (survives a process kill, not a power cut).
    Never,
}

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// `None` keeps the spool in memory.
    pub dir: Option<PathBuf>,
    /// Bound on disk (or memory) use, record overhead and segment files included.
    pub max_bytes: u64,
    /// A segment is sealed once it reaches this size (a record is never split).
    pub segment_bytes: u64,
    pub when_full: WhenFull,
    pub fsync: FsyncPolicy,
}

impl SpoolConfig {
    pub fn new(dir: Option<PathBuf>, max_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            dir,
            max_bytes,
            segment_bytes: 8 * 1024 * 1024,
            when_full: WhenFull::Reject,
            fsync: FsyncPolicy::GroupCommit {
                max_delay: Duration::from_millis(10),
            },
        }
    }

    fn check(&self) -> Result<(), SpoolError> {
        if self.dir.is_none() {
            return Ok(()); // memory mode has no segments
        }
        if self.segment_bytes < 4096 {
            return Err(SpoolError::BadConfig(format!(
                "segment_bytes {} is below 4096",
                self.segment_bytes
            )));
        }
        if self.max_bytes < self.segment_bytes * 2 {
            return Err(SpoolError::BadConfig(format!(
                "max_bytes {} must hold at least two segments of {} bytes",
                self.max_bytes, self.segment_bytes
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Unacked records.
    pub depth_records: u64,
    /// Bytes used (segment files on disk, or encoded records in memory).
    pub depth_bytes: u64,
    pub dropped_qos0: u64,
    pub rejected: u64,
    pub segments: u64,
    /// Corrupt regions skipped while opening.
    pub corrupt_skipped: u64,
    /// Bytes of torn or corrupt tails truncated while opening.
    pub truncated_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: {needed} more bytes do not fit in max_bytes {max_bytes}")]
    Full { needed: u64, max_bytes: u64 },
    #[error("record of {bytes} bytes is over the {max} byte bound")]
    TooLarge { bytes: usize, max: usize },
    #[error("bad record: {0}")]
    BadRecord(String),
    #[error("bad spool configuration: {0}")]
    BadConfig(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl SpoolError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<lichen_sys::SysError> for SpoolError {
    fn from(e: lichen_sys::SysError) -> SpoolError {
        SpoolError::Io {
            context: e.context,
            source: e.source,
        }
    }
}

pub(crate) enum Backend {
    Disk(Box<disk::DiskLog>),
    Memory(memory::MemLog),
}

impl Backend {
    fn as_log(&mut self) -> &mut dyn Log {
        match self {
            Backend::Disk(d) => d.as_mut(),
            Backend::Memory(m) => m,
        }
    }
}

/// What both backends do; the [`Spool`] front adds locking and group commit.
pub(crate) trait Log {
    fn append(&mut self, record: &Record) -> Result<Seq, SpoolError>;
    fn read_from(
        &mut self,
        cursor: Seq,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, SpoolError>;
    fn ack(&mut self, seq: Seq) -> Result<bool, SpoolError>;
    fn stats(&self) -> Stats;
    fn next_seq(&self) -> Seq;
    /// Writes buffered bytes to the OS; returns the file to sync (disk only) and the seq
    /// below which everything is then covered by that sync.
    fn prepare_sync(&mut self) -> Result<(Option<Arc<std::fs::File>>, Seq), SpoolError>;
    fn persist_acks(&mut self, force: bool) -> Result<(), SpoolError>;
}

struct DurableState {
    /// Every seq below this is durable.
    durable_below: Seq,
    syncing: bool,
}

struct Shared {
    log: Mutex<Backend>,
    durable: Mutex<DurableState>,
    synced: Condvar,
    policy: FsyncPolicy,
    stop: Mutex<bool>,
    stop_signal: Condvar,
}

/// A durable log; share it between threads with `Arc<Spool>` (every method takes `&self`).
pub struct Spool {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

// The cloud link and the stream manager share one spool between threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Spool>();
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves counters, not torn data: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spool {
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        config.check()?;
        let (backend, next) = match &config.dir {
            Some(dir) => {
                let d = disk::DiskLog::open(dir, &config)?;
                let n = d.next_seq();
                (Backend::Disk(Box::new(d)), n)
            }
            None => (Backend::Memory(memory::MemLog::new(&config)), 0),
        };
        let shared = Arc::new(Shared {
            log: Mutex::new(backend),
            durable: Mutex::new(DurableState {
                durable_below: next,
                syncing: false,
            }),
            synced: Condvar::new(),
            policy: config.fsync,
            stop: Mutex::new(false),
            stop_signal: Condvar::new(),
        });
        let flusher = match (config.dir.is_some(), config.fsync) {
            (true, FsyncPolicy::GroupCommit { max_delay }) => {
                let shared = shared.clone();
                let handle = std::thread::Builder::new()
                    .name("spool-flush".into())
                    .spawn(move || flush_loop(&shared, max_delay.max(Duration::from_millis(1))))
                    .map_err(|e| SpoolError::io("starting the spool flush thread", e))?;
                Some(handle)
            }
            _ => None,
        };
        Ok(Spool { shared, flusher })
    }

    /// Appends a record; it is durable later (see [`FsyncPolicy`]).
    pub fn append(&self, record: Record) -> Result<Seq, SpoolError> {
        record.check()?;
        let mut log = lock(&self.shared.log);
        let seq = log.as_log().append(&record)?;
        if self.shared.policy == FsyncPolicy::Always {
            let (file, below) = log.as_log().prepare_sync()?;
            if let Some(file) = file {
                file.sync_data()
                    .map_err(|e| SpoolError::io("syncing the spool segment", e))?;
            }
            drop(log);
            let mut d = lock(&self.shared.durable);
            d.durable_below = d.durable_below.max(below);
        }
        Ok(seq)
    }

    /// Appends a record and returns once it is durable: what a QoS 1 publisher waits for.
    pub fn append_durable(&self, record: Record) -> Result<Seq, SpoolError> {
        let seq = self.append(record)?;
        self.wait_durable(seq)?;
        Ok(seq)
    }

    /// Returns once `seq` (and everything before it) is durable. Concurrent callers share
    /// one fsync: the first becomes the leader, the others wait for its result.
    pub fn wait_durable(&self, seq: Seq) -> Result<(), SpoolError> {
        loop {
            let mut d = lock(&self.shared.durable);
            if d.durable_below > seq {
                return Ok(());
            }
            if d.syncing {
                let _d = self
                    .shared
                    .synced
                    .wait(d)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            d.syncing = true;
            drop(d);
            let result = self.sync_once();
            let mut d = lock(&self.shared.durable);
            d.syncing = false;
            if let Ok(below) = result {
                d.durable_below = d.durable_below.max(below);
            }
            self.shared.synced.notify_all();
            drop(d);
            result?;
        }
    }

    fn sync_once(&self) -> Result<Seq, SpoolError> {
        sync_shared(&self.shared)
    }

    /// Makes everything appended so far durable and persists the acks.
    pub fn flush(&self) -> Result<(), SpoolError> {
        let next = lock(&self.shared.log).as_log().next_seq();
        if next > 0 {
            self.wait_durable(next - 1)?;
        }
        lock(&self.shared.log).as_log().persist_acks(true)
    }

    /// Up to `max_records` unacked records with seq ≥ `cursor`, in order, at most about
    /// `max_bytes` of payload (at least one record if any is there).
    pub fn read_from(
        &self,
        cursor: Seq,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, SpoolError> {
        lock(&self.shared.log)
            .as_log()
            .read_from(cursor, max_records, max_bytes)
    }

    /// Marks `seq` delivered; returns false if it was already acked or never existed.
    pub fn ack(&self, seq: Seq) -> Result<bool, SpoolError> {
        lock(&self.shared.log).as_log().ack(seq)
    }

    pub fn stats(&self) -> Stats {
        lock(&self.shared.log).as_log().stats()
    }

    /// The seq the next append gets.
    pub fn next_seq(&self) -> Seq {
        lock(&self.shared.log).as_log().next_seq()
    }
}

fn sync_shared(shared: &Shared) -> Result<Seq, SpoolError> {
    let (file, below) = lock(&shared.log).as_log().prepare_sync()?;
    if let Some(file) = file
        && shared.policy != FsyncPolicy::Never
    {
        file.sync_data()
            .map_err(|e| SpoolError::io("syncing the spool segment", e))?;
    }
    Ok(below)
}

fn flush_loop(shared: &Shared, every: Duration) {
    let mut stop = lock(&shared.stop);
    while !*stop {
        let (guard, _) = shared
            .stop_signal
            .wait_timeout(stop, every)
            .unwrap_or_else(|p| p.into_inner());
        stop = guard;
        drop(stop);
        let pending = {
            let next = lock(&shared.log).as_log().next_seq();
            let d = lock(&shared.durable);
            !d.syncing && d.durable_below < next
        };
        if pending {
            let claimed = {
                let mut d = lock(&shared.durable);
                !std::mem::replace(&mut d.syncing, true)
            };
            if claimed {
                let result = sync_shared(shared);
                let mut d = lock(&shared.durable);
                d.syncing = false;
                match result {
                    Ok(below) => d.durable_below = d.durable_below.max(below),
                    Err(e) => tracing::warn!(error = %e, "spool background sync failed"),
                }
                shared.synced.notify_all();
            }
        }
        if let Err(e) = lock(&shared.log).as_log().persist_acks(false) {
            tracing::warn!(error = %e, "persisting spool acks failed");
        }
        stop = lock(&shared.stop);
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        *lock(&self.shared.stop) = true;
        self.shared.stop_signal.notify_all();
        if let Some(handle) = self.flusher.take() {
            let _ = handle.join();
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "flushing the spool on close failed");
        }
    }
}
