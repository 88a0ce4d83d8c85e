//! The cloud link's spool: PublishToIoTCore messages wait here, on disk by default, until
//! the cloud's PUBACK (issue 11). Built on `lichen-spool`.
//!
//! * **Configuration** (`mqtt.spooler` of the `aws.greengrass.Nucleus` configuration, the
//!   Greengrass names; read at start from the config file's `services` tree, a deployed
//!   Nucleus configuration taking precedence): `storageType` `Disk` (default, under
//!   `<root>/cloud/spool`) or `Memory`; `maxSizeInBytes` (default [`DEFAULT_MAX_BYTES`],
//!   at least [`MIN_MAX_BYTES`]); `keepQos0WhenOffline` (default false); lichen's own
//!   `fullStrategy` `reject` (default) or `dropOldestQos0`; `fsyncPolicy` `groupCommit`
//!   (default), `always` or `never`; `fsyncMaxDelayMs` (group commit delay, default 10).
//!   Changes apply at the next start. Greengrass's `pluginName` is not supported.
//! * **Acknowledgement:** a QoS 1 publish is answered once its record is durable under the
//!   fsync policy (`groupCommit`/`always`: survives kill -9 and a power cut; `never`: kill -9
//!   only; `Memory`: neither, it is lost with the process).
//! * **Drain** ([`CloudSpool::drain`], one per connection): reads from the first unacked
//!   record in order, keeps up to the connection's window (min of [`MAX_DRAIN_IN_FLIGHT`] and
//!   the server's Receive Maximum) in flight, queued in spool order so every topic keeps its
//!   order, and acks a record only after its PUBACK (QoS 0: once written). A connection that
//!   breaks leaves the unacked records in place; the next connection starts again from the
//!   first unacked one (at least once: a record whose ack was lost is sent again). A
//!   publish the cloud refuses (error reason code, over its Maximum Packet Size) or whose
//!   Message Expiry passed while spooled is dropped, counted and logged.
//! * **Bounds:** the spool's disk (or memory) use ≤ `maxSizeInBytes`; a record ≤
//!   [`lichen_spool::MAX_RECORD_BYTES`]; the drain holds ≤ [`READ_BATCH_RECORDS`] records /
//!   [`READ_BATCH_BYTES`] read ahead plus the in-flight window (≤ [`MAX_DRAIN_IN_FLIGHT_BYTES`]
//!   of payload, at least one message) in memory — never the spool.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lichen_model::control::CloudSpoolStatus;
use lichen_mqtt_client::{Client, ClientError, Message, Properties, QoS, ReasonCode};
use lichen_spool::{Entry, FsyncPolicy, Record, Seq, Spool, SpoolConfig, SpoolError, WhenFull};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// Default `maxSizeInBytes`: 64 MiB (Greengrass's in-memory default is 2.5 MB).
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest `maxSizeInBytes` accepted (four of the smallest segments).
pub const MIN_MAX_BYTES: u64 = 16 * 1024;
/// Largest segment file. Recovery reads one whole segment at a time, so this bounds the
/// memory an open of a full spool touches.
const SEGMENT_BYTES: u64 = 2 * 1024 * 1024;
/// Our bound on publishes in flight while draining (the server's Receive Maximum lowers it).
pub const MAX_DRAIN_IN_FLIGHT: usize = 64;
/// Payload bytes in flight while draining (at least one message, whatever its size).
pub const MAX_DRAIN_IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;
/// Records read ahead from the spool at once.
pub const READ_BATCH_RECORDS: usize = 64;
/// Payload bytes read ahead from the spool at once (at least one record).
pub const READ_BATCH_BYTES: usize = 256 * 1024;
const NUCLEUS: &str = "aws.greengrass.Nucleus";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    Disk,
    Memory,
}

/// `mqtt.spooler`, as read (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolerSettings {
    pub storage: StorageType,
    pub max_bytes: u64,
    pub keep_qos0_when_offline: bool,
    pub when_full: WhenFull,
    pub fsync: FsyncPolicy,
}

impl Default for SpoolerSettings {
    fn default() -> Self {
        SpoolerSettings {
            storage: StorageType::Disk,
            max_bytes: DEFAULT_MAX_BYTES,
            keep_qos0_when_offline: false,
            when_full: WhenFull::Reject,
            fsync: FsyncPolicy::GroupCommit {
                max_delay: Duration::from_millis(10),
            },
        }
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    // Greengrass configurations often carry numbers as strings.
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn as_bool(v: &Value) -> Option<bool> {
    v.as_bool().or_else(|| match v.as_str()? {
        "true" | "TRUE" | "True" => Some(true),
        "false" | "FALSE" | "False" => Some(false),
        _ => None,
    })
}

impl SpoolerSettings {
    /// Parses an `mqtt.spooler` object; errors name `origin` and the key.
    pub fn parse(value: &Value, origin: &str) -> Result<SpoolerSettings, String> {
        let Some(map) = value.as_object() else {
            return Err(format!("{origin}: must be an object"));
        };
        let mut s = SpoolerSettings::default();
        let mut delay = Duration::from_millis(10);
        let mut policy = "groupCommit".to_string();
        for (key, v) in map {
            let bad = |what: &str| format!("{origin}.{key}: {what}, got {v}");
            match key.as_str() {
                "storageType" => {
                    s.storage = match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                        Some("disk") => StorageType::Disk,
                        Some("memory") => StorageType::Memory,
                        _ => return Err(bad("must be \"Disk\" or \"Memory\"")),
                    }
                }
                "maxSizeInBytes" => {
                    s.max_bytes = as_u64(v)
                        .filter(|n| *n >= MIN_MAX_BYTES)
                        .ok_or_else(|| bad(&format!("must be a number ≥ {MIN_MAX_BYTES}")))?;
                }
                "keepQos0WhenOffline" => {
                    s.keep_qos0_when_offline = as_bool(v).ok_or_else(|| bad("must be a boolean"))?
                }
                "fullStrategy" => {
                    s.when_full = match v.as_str() {
                        Some("reject") => WhenFull::Reject,
                        Some("dropOldestQos0") => WhenFull::DropOldestQos0,
                        _ => return Err(bad("must be \"reject\" or \"dropOldestQos0\"")),
                    }
                }
                "fsyncPolicy" => match v.as_str() {
                    Some(p @ ("groupCommit" | "always" | "never")) => policy = p.to_string(),
                    _ => return Err(bad("must be \"groupCommit\", \"always\" or \"never\"")),
                },
                "fsyncMaxDelayMs" => {
                    let ms = as_u64(v)
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| bad("must be a number of milliseconds in 1..=1000"))?;
                    delay = Duration::from_millis(ms);
                }
                "pluginName" => {
                    return Err(format!(
                        "{origin}.pluginName: spooler plugins are not supported (lichen's disk spool is built in)"
                    ));
                }
                _ => return Err(format!("{origin}: unknown key {key:?}")),
            }
        }
        s.fsync = match policy.as_str() {
            "always" => FsyncPolicy::Always,
            "never" => FsyncPolicy::Never,
            _ => FsyncPolicy::GroupCommit { max_delay: delay },
        };
        Ok(s)
    }

    /// The settings in force: the deployed Nucleus configuration's `mqtt.spooler`, else the
    /// config file's (`services."aws.greengrass.Nucleus".configuration.mqtt.spooler`), else
    /// the defaults. A bad config file is an error; a bad deployed value is logged and the
    /// file's settings are used, so a deployment can never keep the core from starting.
    pub fn resolve(
        file: &lichen_core::settings::Settings,
        deployed: Option<Value>,
    ) -> Result<SpoolerSettings, String> {
        let from_file = file
            .service(NUCLEUS)
            .and_then(|n| n.pointer("/configuration/mqtt/spooler"));
        let base = match from_file {
            Some(v) => SpoolerSettings::parse(
                v,
                "services.aws.greengrass.Nucleus.configuration.mqtt.spooler",
            )?,
            None => SpoolerSettings::default(),
        };
        match deployed {
            None => Ok(base),
            Some(v) => match SpoolerSettings::parse(&v, "aws.greengrass.Nucleus mqtt.spooler") {
                Ok(s) => Ok(s),
                Err(e) => {
                    tracing::warn!(error = %e, "deployed spooler configuration ignored");
                    Ok(base)
                }
            },
        }
    }
}

/// What a spooled record's `properties` hold: the append time and the message's MQTT 5
/// properties, in short keys (it is stored with every record).
#[derive(Serialize, Deserialize, Default)]
struct Meta {
    /// Appended at, ms since the epoch.
    t: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    r: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    u: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ct: Option<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A message as a spool record.
pub(crate) fn to_record(message: &Message, at_ms: u64) -> Record {
    let p = &message.properties;
    let meta = Meta {
        t: at_ms,
        r: message.retain,
        u: p.user_properties.clone(),
        e: p.message_expiry_interval,
        c: p.correlation_data.as_ref().map(|c| B64.encode(c)),
        rt: p.response_topic.clone(),
        f: p.payload_format_indicator,
        ct: p.content_type.clone(),
    };
    Record {
        topic: message.topic.clone(),
        payload: message.payload.to_vec(),
        qos: message.qos as u8,
        properties: serde_json::to_vec(&meta).unwrap_or_default(),
    }
}

/// A spooled record as the message to send `now_ms`: `None` when its Message Expiry passed
/// (the remaining interval is sent otherwise, as MQTT 5 asks of a forwarder).
pub(crate) fn to_message(record: Record, now_ms: u64) -> Result<Option<Message>, String> {
    let meta: Meta = serde_json::from_slice(&record.properties)
        .map_err(|e| format!("unreadable spooled properties: {e}"))?;
    let qos = QoS::from_u8(record.qos).ok_or_else(|| format!("bad qos {}", record.qos))?;
    let mut m = Message::new(record.topic, record.payload, qos);
    m.retain = meta.r;
    let waited = now_ms.saturating_sub(meta.t) / 1000;
    let expiry = match meta.e {
        Some(e) if u64::from(e) <= waited => return Ok(None),
        Some(e) => Some(e - waited as u32),
        None => None,
    };
    m.properties = Properties {
        user_properties: meta.u,
        message_expiry_interval: expiry,
        correlation_data: match meta.c {
            Some(c) => Some(
                B64.decode(c)
                    .map_err(|e| format!("bad spooled correlation data: {e}"))?
                    .into(),
            ),
            None => None,
        },
        response_topic: meta.rt,
        payload_format_indicator: meta.f,
        content_type: meta.ct,
        ..Default::default()
    };
    Ok(Some(m))
}

fn appended_at(record: &Record) -> Option<u64> {
    serde_json::from_slice::<Meta>(&record.properties)
        .ok()
        .map(|m| m.t)
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("{0}")]
    Full(String),
    #[error("cloud spool: {0}")]
    Spool(#[from] SpoolError),
}

/// The cloud link's spool and its counters (see the module documentation).
pub struct CloudSpool {
    spool: Arc<Spool>,
    settings: SpoolerSettings,
    /// Woken by every append, so an idle drain picks the record up.
    wake: Notify,
    dropped_offline: AtomicU64,
    refused_by_cloud: AtomicU64,
    expired: AtomicU64,
    full: AtomicBool,
}

impl CloudSpool {
    /// Opens the spool (`dir` for `Disk`; recovery may scan it, so not on a runtime thread).
    pub fn open(settings: SpoolerSettings, dir: &Path) -> Result<CloudSpool, SpoolError> {
        let dir = match settings.storage {
            StorageType::Disk => {
                // Messages may be private: only the core's user reads the spool.
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| SpoolError::Io {
                        context: format!("creating {}", dir.display()),
                        source: e,
                    })?;
                Some(dir.to_path_buf())
            }
            StorageType::Memory => None,
        };
        let mut config = SpoolConfig::new(dir, settings.max_bytes);
        config.segment_bytes = (settings.max_bytes / 4).clamp(4096, SEGMENT_BYTES);
        config.when_full = settings.when_full;
        config.fsync = settings.fsync;
        let spool = Spool::open(config)?;
        let stats = spool.stats();
        if stats.depth_records > 0 || stats.corrupt_skipped > 0 || stats.truncated_bytes > 0 {
            tracing::info!(
                depth = stats.depth_records,
                bytes = stats.depth_bytes,
                corrupt_skipped = stats.corrupt_skipped,
                truncated_bytes = stats.truncated_bytes,
                "cloud spool recovered; its messages go out once connected"
            );
        }
        Ok(CloudSpool {
            spool: Arc::new(spool),
            settings,
            wake: Notify::new(),
            dropped_offline: AtomicU64::new(0),
            refused_by_cloud: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            full: AtomicBool::new(false),
        })
    }

    pub fn settings(&self) -> &SpoolerSettings {
        &self.settings
    }

    /// Stores `message`; with `durable`, returns once it is durable (what a QoS 1
    /// publisher waits for). A full spool is an error naming the bound.
    pub async fn append(&self, message: &Message, durable: bool) -> Result<Seq, AppendError> {
        let record = to_record(message, now_ms());
        let spool = self.spool.clone();
        let result = tokio::task::spawn_blocking(move || {
            if durable {
                spool.append_durable(record)
            } else {
                spool.append(record)
            }
        })
        .await
        .map_err(|e| SpoolError::BadRecord(format!("append task failed: {e}")))?;
        match result {
            Ok(seq) => {
                if self.full.swap(false, Ordering::Relaxed) {
                    tracing::info!("cloud spool has room again");
                }
                self.wake.notify_one();
                Ok(seq)
            }
            Err(SpoolError::Full { needed, max_bytes }) => {
                let stats = self.spool.stats();
                if !self.full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(depth = stats.depth_records, bytes = stats.depth_bytes, max_bytes,
                        strategy = ?self.settings.when_full, "cloud spool full: refusing publishes");
                }
                let why = match self.settings.when_full {
                    WhenFull::Reject => "fullStrategy reject",
                    WhenFull::DropOldestQos0 => {
                        "fullStrategy dropOldestQos0, and no QoS 0 message is left to drop"
                    }
                };
                Err(AppendError::Full(format!(
                    "cloud spool full: {needed} more bytes do not fit in mqtt.spooler.maxSizeInBytes \
                     = {max_bytes} ({} messages spooled; {why})",
                    stats.depth_records
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A QoS 0 message dropped while offline (`keepQos0WhenOffline` false).
    pub fn count_offline_drop(&self, topic: &str) {
        let n = self.dropped_offline.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(
                topic,
                dropped_total = n,
                "QoS 0 cloud publish dropped while offline (mqtt.spooler.keepQos0WhenOffline is false)"
            );
        }
    }

    /// Depth, bytes, drops and the oldest unsent message's age. Reads the first unacked
    /// record (at most one segment scanned) when the spool is not empty.
    pub fn status(&self) -> CloudSpoolStatus {
        let s = self.spool.stats();
        let oldest_unsent_secs = if s.depth_records > 0 {
            self.spool
                .read_from(0, 1, 0)
                .ok()
                .and_then(|v| v.first().and_then(|e| appended_at(&e.record)))
                .map(|t| now_ms().saturating_sub(t) / 1000)
        } else {
            None
        };
        CloudSpoolStatus {
            depth: s.depth_records,
            bytes: s.depth_bytes,
            dropped: s.dropped_qos0
                + s.rejected
                + self.dropped_offline.load(Ordering::Relaxed)
                + self.refused_by_cloud.load(Ordering::Relaxed)
                + self.expired.load(Ordering::Relaxed),
            storage: match self.settings.storage {
                StorageType::Disk => "disk".into(),
                StorageType::Memory => "memory".into(),
            },
            max_bytes: self.settings.max_bytes,
            rejected: s.rejected,
            oldest_unsent_secs,
        }
    }

    async fn read(&self, cursor: Seq) -> Result<Vec<Entry>, SpoolError> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || {
            spool.read_from(cursor, READ_BATCH_RECORDS, READ_BATCH_BYTES)
        })
        .await
        .map_err(|e| SpoolError::BadRecord(format!("read task failed: {e}")))?
    }

    fn ack(&self, seq: Seq) {
        if let Err(e) = self.spool.ack(seq) {
            // The record stays and goes out again on the next connection: at least once.
            tracing::warn!(seq, error = %e, "cloud spool ack failed");
        }
    }

    /// Makes appends and acks durable (at shutdown).
    pub fn flush(&self) {
        if let Err(e) = self.spool.flush() {
            tracing::warn!(error = %e, "flushing the cloud spool failed");
        }
    }

    /// Sends the spool over `client` until the connection ends; returns why it ended.
    pub async fn drain(&self, client: &Client) -> ClientError {
        let window = client.info().inflight_window.clamp(1, MAX_DRAIN_IN_FLIGHT);
        let mut drain = Drain::new(window);
        let start = self.spool.stats();
        if start.depth_records > 0 {
            tracing::info!(
                depth = start.depth_records,
                bytes = start.depth_bytes,
                window,
                "draining the cloud spool"
            );
        }
        let mut in_flight: JoinSet<(Seq, usize, Result<ReasonCode, ClientError>)> = JoinSet::new();
        let mut in_flight_bytes = 0usize;
        let mut sent: u64 = 0;
        let mut since = Instant::now();
        loop {
            if drain.wants_read(in_flight.len()) {
                match self.read(drain.cursor).await {
                    Ok(entries) => drain.fill(entries),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the cloud spool failed; retrying in 1 s");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            e = client.closed() => return e,
                        }
                    }
                }
            }
            while in_flight.len() < window
                && (in_flight.is_empty() || in_flight_bytes < MAX_DRAIN_IN_FLIGHT_BYTES)
            {
                let Some(entry) = drain.next() else { break };
                let seq = entry.seq;
                let message = match to_message(entry.record, now_ms()) {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        let n = self.expired.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(
                            seq,
                            expired_total = n,
                            "spooled cloud publish expired before it could be sent; dropped"
                        );
                        self.ack(seq);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "unreadable spooled cloud publish dropped");
                        self.refused_by_cloud.fetch_add(1, Ordering::Relaxed);
                        self.ack(seq);
                        continue;
                    }
                };
                // Queued one after the other: the wire keeps the spool's order.
                let bytes = message.payload.len();
                match client.publish_queued(message).await {
                    Ok(outcome) => {
                        in_flight_bytes += bytes;
                        in_flight.spawn(async move { (seq, bytes, outcome.await) });
                    }
                    Err(e) => return e,
                }
            }
            if in_flight.is_empty() && drain.is_idle() {
                if sent > 0 {
                    let secs = since.elapsed().as_secs_f64();
                    tracing::info!(
                        sent,
                        secs = format!("{secs:.2}"),
                        per_sec = (sent as f64 / secs.max(1e-6)) as u64,
                        "cloud spool drained"
                    );
                    sent = 0;
                }
                tokio::select! {
                    _ = self.wake.notified() => {
                        drain.woken();
                        since = Instant::now();
                    }
                    e = client.closed() => return e,
                }
                continue;
            }
            tokio::select! {
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let Ok((seq, bytes, result)) = done else { continue };
                    in_flight_bytes -= bytes;
                    match result {
                        Ok(_) => {
                            self.ack(seq);
                            sent += 1;
                        }
                        Err(e) if e.is_connection_error() => return e,
                        Err(e) => {
                            // Refused for good (error reason code, too large for the
                            // server): retrying would block every later message.
                            let n = self.refused_by_cloud.fetch_add(1, Ordering::Relaxed) + 1;
                            tracing::warn!(seq, error = %e, refused_total = n, "the cloud refused a spooled publish; dropped");
                            self.ack(seq);
                        }
                    }
                }
                _ = self.wake.notified(), if drain.exhausted => drain.woken(),
                e = client.closed() => return e,
            }
        }
    }
}

/// The drain's read cursor and read-ahead (the part of [`CloudSpool::drain`] that decides
/// what is read and sent next; unit-tested on its own).
struct Drain {
    /// Next seq to read: records below it were handed out on this connection.
    cursor: Seq,
    batch: VecDeque<Entry>,
    /// The last read found nothing new: read again only after an append.
    exhausted: bool,
    window: usize,
}

impl Drain {
    fn new(window: usize) -> Drain {
        // Every connection starts from the first unacked record.
        Drain {
            cursor: 0,
            batch: VecDeque::new(),
            exhausted: false,
            window,
        }
    }

    fn wants_read(&self, in_flight: usize) -> bool {
        self.batch.is_empty() && !self.exhausted && in_flight < self.window
    }

    fn fill(&mut self, entries: Vec<Entry>) {
        match entries.last() {
            None => self.exhausted = true,
            Some(last) => self.cursor = last.seq + 1,
        }
        self.batch.extend(entries);
    }

    fn next(&mut self) -> Option<Entry> {
        self.batch.pop_front()
    }

    fn is_idle(&self) -> bool {
        self.batch.is_empty() && self.exhausted
    }

    fn woken(&mut self) {
        self.exhausted = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(seq: Seq, topic: &str) -> Entry {
        Entry {
            seq,
            record: Record {
                topic: topic.into(),
                payload: seq.to_be_bytes().to_vec(),
                qos: 1,
                properties: b"{\"t\":0}".to_vec(),
            },
        }
    }

    #[test]
    fn the_drain_reads_on_from_its_cursor_and_waits_for_an_append_when_exhausted() {
        let mut d = Drain::new(2);
        assert!(d.wants_read(0));
        d.fill(vec![entry(5, "a"), entry(6, "b"), entry(7, "a")]);
        assert_eq!(
            d.cursor, 8,
            "the next read starts after the last record read"
        );
        assert!(!d.wants_read(0), "no read while the batch holds records");
        let order: Vec<Seq> = std::iter::from_fn(|| d.next()).map(|e| e.seq).collect();
        assert_eq!(order, [5, 6, 7], "handed out in spool order");
        assert!(!d.wants_read(2), "a full window reads nothing ahead");
        assert!(d.wants_read(1));
        d.fill(Vec::new());
        assert!(d.exhausted && d.is_idle());
        assert!(!d.wants_read(0), "exhausted: wait for an append");
        assert_eq!(d.cursor, 8, "an empty read keeps the cursor");
        d.woken();
        assert!(d.wants_read(0));
        // A new connection starts again from the first unacked record.
        assert_eq!(Drain::new(4).cursor, 0);
    }

    #[test]
    fn a_record_carries_the_mqtt5_properties_and_its_expiry_counts_down() {
        let mut m = Message::new("up/t", "21.5", QoS::AtLeastOnce);
        m.retain = true;
        m.properties.user_properties = vec![("unit".into(), "C".into())];
        m.properties.message_expiry_interval = Some(60);
        m.properties.correlation_data = Some(lichen_mqtt_client::Bytes::from_static(b"r-1"));
        m.properties.response_topic = Some("down/a".into());
        m.properties.payload_format_indicator = Some(1);
        m.properties.content_type = Some("text/plain".into());
        let r = to_record(&m, 1_000_000);
        assert_eq!(r.qos, 1);
        let back = to_message(r.clone(), 1_000_000 + 20_500).unwrap().unwrap();
        assert_eq!(back.topic, "up/t");
        assert_eq!(&back.payload[..], b"21.5");
        assert!(back.retain);
        assert_eq!(back.properties.message_expiry_interval, Some(40));
        assert_eq!(
            back.properties.user_properties,
            m.properties.user_properties
        );
        assert_eq!(
            back.properties.correlation_data,
            m.properties.correlation_data
        );
        assert_eq!(back.properties.response_topic, m.properties.response_topic);
        assert_eq!(back.properties.payload_format_indicator, Some(1));
        assert_eq!(back.properties.content_type, m.properties.content_type);
        assert!(
            to_message(r, 1_000_000 + 60_000).unwrap().is_none(),
            "expired while spooled"
        );
        let bad = Record {
            properties: b"not json".to_vec(),
            ..to_record(&m, 0)
        };
        assert!(to_message(bad, 0).unwrap_err().contains("unreadable"));
    }

    #[test]
    fn spooler_settings_use_the_greengrass_names_and_errors_name_the_key() {
        let s = SpoolerSettings::parse(
            &json!({"storageType": "Memory", "maxSizeInBytes": "2621440",
                    "keepQos0WhenOffline": true, "fullStrategy": "dropOldestQos0",
                    "fsyncPolicy": "always"}),
            "spooler",
        )
        .unwrap();
        assert_eq!(s.storage, StorageType::Memory);
        assert_eq!(s.max_bytes, 2_621_440);
        assert!(s.keep_qos0_when_offline);
        assert_eq!(s.when_full, WhenFull::DropOldestQos0);
        assert_eq!(s.fsync, FsyncPolicy::Always);
        let d = SpoolerSettings::parse(&json!({}), "spooler").unwrap();
        assert_eq!(d, SpoolerSettings::default());
        assert_eq!(d.storage, StorageType::Disk);
        for (bad, key) in [
            (json!({"storageType": "Tape"}), "spooler.storageType"),
            (json!({"maxSizeInBytes": 10}), "spooler.maxSizeInBytes"),
            (
                json!({"keepQos0WhenOffline": "maybe"}),
                "spooler.keepQos0WhenOffline",
            ),
            (json!({"fullStrategy": "panic"}), "spooler.fullStrategy"),
            (json!({"fsyncMaxDelayMs": 0}), "spooler.fsyncMaxDelayMs"),
            (json!({"pluginName": "x"}), "not supported"),
            (json!({"maxSize": 1}), "maxSize"),
        ] {
            let e = SpoolerSettings::parse(&bad, "spooler").unwrap_err();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
