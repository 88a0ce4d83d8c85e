//! Persistence: retained messages, persistent sessions (subscriptions and queued QoS 1/2
//! messages) and the device registry, in SQLite (WAL, synchronous=FULL) under the state dir.
//!
//! Writes go through a channel to one writer thread that applies them in batched transactions.
//! A publisher's PUBACK/PUBREC for a QoS 1/2 message that was stored (retained, or queued for a
//! persistent session) is sent only after that batch committed, so an acknowledged message
//! survives kill -9 and a power cut (WAL with synchronous=FULL: each batch is fsynced before
//! its acks go out; batching keeps that to one fsync per batch, not per message).
//!
//! QoS 2 is exactly once across a crash for persistent sessions: a received message's
//! deliveries and its packet id (table `incoming_qos2`) commit in one transaction before the
//! PUBREC, the release commits before the PUBCOMP; an outgoing message's packet id and stage
//! (`queued.packet_id`, `queued.stage`) commit before its PUBLISH and before its PUBREL, and a
//! restart resends exactly those. Messages are stored as encoded MQTT 5 PUBLISH
//! packets, so every property survives.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lichen_mqtt::{Packet, Protocol, Publish, QoS, RetainHandling, SubscriptionOptions};
use rusqlite::{Connection, params};

use crate::BrokerError;
use crate::session::{Delivery, Msg, Stage};

pub enum StoreOp {
    PutRetained {
        msg: Arc<Msg>,
    },
    DelRetained {
        topic: Arc<str>,
    },
    PutSession {
        client_id: Arc<str>,
        expiry: u32,
        protocol: Protocol,
    },
    DelSession {
        client_id: Arc<str>,
    },
    /// The messages dropped for a persistent session so far (kept across restarts).
    SetDropped {
        client_id: Arc<str>,
        dropped: u64,
    },
    PutSub {
        client_id: Arc<str>,
        filter: String,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
    },
    DelSub {
        client_id: Arc<str>,
        filter: String,
    },
    PutQueued {
        id: u64,
        client_id: Arc<str>,
        delivery: Delivery,
    },
    DelQueued {
        id: u64,
    },
    /// A persistent session's QoS 2 message went in flight with `packet_id` (stage
    /// `Stage::Rec`) or its PUBREC arrived and PUBREL is due (`Stage::Comp`).
    SetInflight {
        id: u64,
        packet_id: u16,
        stage: Stage,
    },
    /// A QoS 2 packet id received from a persistent session, awaiting PUBREL.
    PutIncoming {
        client_id: Arc<str>,
        packet_id: u16,
    },
    DelIncoming {
        client_id: Arc<str>,
        packet_id: u16,
    },
    /// Everything between `GroupStart` and its `GroupEnd` commits in one transaction (a QoS 2
    /// message's deliveries together with its packet id: both or neither survive a crash).
    GroupStart,
    GroupEnd,
    PutDevice {
        fingerprint: String,
        name: String,
        cert_pem: String,
    },
    DelDevice {
        fingerprint: String,
    },
    Flush(mpsc::Sender<()>),
}

pub struct Store {
    path: PathBuf,
    /// Second connection for reading spilled queues back while the writer thread writes (WAL
    /// lets them run concurrently). Opened on first use.
    reader: Mutex<Option<Connection>>,
    tx: Mutex<Option<mpsc::Sender<(u64, StoreOp)>>>,
    /// Sequence number of the last operation sent / committed.
    sent: AtomicU64,
    progress: Arc<Progress>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub struct LoadedSession {
    pub client_id: String,
    pub expiry: u32,
    pub protocol: Protocol,
    /// Seconds since the session went offline (at the last run's end, approximately).
    pub offline_for: u64,
    pub subs: Vec<(String, SubscriptionOptions, Option<u32>)>,
    /// QoS 2 messages in flight to the client: (packet id, stage, delivery), in order.
    pub inflight: Vec<(u16, Stage, Delivery)>,
    /// QoS 2 packet ids received from the client and awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
    /// (row id, delivery) in queue order, as many as the memory budget allows.
    pub queued: Vec<(u64, Delivery)>,
    /// The rest of the queue stays in the store: rows with an id above `spill_after`.
    pub spilled: usize,
    pub spilled_bytes: u64,
    pub spill_after: u64,
    /// Messages dropped for this session before (see `StoreOp::SetDropped`).
    pub dropped: u64,
}

/// How much of the stored queues `Store::open` loads into memory.
#[derive(Debug, Clone, Copy)]
pub struct QueueBudget {
    pub per_session_count: usize,
    pub per_session_bytes: usize,
    pub total_bytes: usize,
}

pub struct Loaded {
    pub retained: Vec<Arc<Msg>>,
    pub sessions: Vec<LoadedSession>,
    pub devices: Vec<(String, String, String)>,
    pub max_queued_id: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn expires_unix(msg: &Msg) -> Option<i64> {
    msg.expires_at.map(|t| {
        let left = t.saturating_duration_since(Instant::now()).as_secs();
        (unix_now() + left) as i64
    })
}

fn expires_instant(unix: Option<i64>) -> Option<Instant> {
    unix.and_then(|u| {
        let left = (u.max(0) as u64).saturating_sub(unix_now());
        Instant::now().checked_add(Duration::from_secs(left))
    })
}

fn encode_msg(msg: &Msg) -> Vec<u8> {
    let p = Packet::Publish(Publish {
        dup: false,
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic.clone(),
        packet_id: if msg.qos == QoS::AtMostOnce { 0 } else { 1 },
        properties: msg.properties.clone(),
        payload: msg.payload.clone(),
    });
    lichen_mqtt::to_vec(&p, Protocol::V5).unwrap_or_default()
}

fn decode_msg(blob: &[u8], origin: Option<String>, expires: Option<i64>) -> Option<Msg> {
    match lichen_mqtt::decode(blob, Protocol::V5, lichen_mqtt::MAX_PACKET_SIZE) {
        Ok(Some((Packet::Publish(p), _))) => Some(Msg {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            expires_at: expires_instant(expires),
            origin: origin.map(Arc::from),
            from_bridge: false,
        }),
        _ => None,
    }
}

fn options_byte(o: SubscriptionOptions) -> i64 {
    i64::from(
        (o.qos as u8)
            | (u8::from(o.no_local) << 2)
            | (u8::from(o.retain_as_published) << 3)
            | ((o.retain_handling as u8) << 4),
    )
}

fn options_from(b: i64) -> SubscriptionOptions {
    let b = b as u8;
    SubscriptionOptions {
        qos: QoS::from_u8(b & 3).unwrap_or(QoS::AtMostOnce),
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: match (b >> 4) & 3 {
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        },
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode=WAL;
PRAGMA synchronous=FULL;
CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, blob BLOB NOT NULL, origin TEXT, expires INTEGER);
CREATE TABLE IF NOT EXISTS sessions (client_id TEXT PRIMARY KEY, expiry INTEGER NOT NULL, protocol INTEGER NOT NULL, seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS subs (client_id TEXT NOT NULL, filter TEXT NOT NULL, options INTEGER NOT NULL, sub_id INTEGER, PRIMARY KEY (client_id, filter));
CREATE TABLE IF NOT EXISTS queued (id INTEGER PRIMARY KEY, client_id TEXT NOT NULL, blob BLOB NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, sub_ids TEXT NOT NULL, origin TEXT, expires INTEGER);
CREATE INDEX IF NOT EXISTS queued_client ON queued (client_id, id);
CREATE TABLE IF NOT EXISTS devices (fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL, cert_pem TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incoming_qos2 (client_id TEXT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (client_id, packet_id));
";

/// Columns added after the first release: (table, column, type). Added when missing.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // QoS 2 in flight to the client: its packet id and stage (1 = awaiting PUBREC, 2 = PUBREL
    // sent, awaiting PUBCOMP). NULL while queued.
    ("queued", "packet_id", "INTEGER"),
    ("queued", "stage", "INTEGER"),
    // Messages dropped for the session (queue bounds, retained over the subscribe bound).
    ("sessions", "dropped", "INTEGER"),
];

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, ty) in ADDED_COLUMNS {
        let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
        let exists = st
            .query_map([], |r| r.get::<_, String>(1))?
            .filter_map(Result::ok)
            .any(|c| c == *column);
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty};"))?;
        }
    }
    Ok(())
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> BrokerError + '_ {
    move |e| BrokerError::Store(format!("{}: {e}", path.display()))
}

impl Store {
    /// Opens (creating) the database and loads what it holds, queues within `budget`.
    pub fn open(path: &Path, budget: QueueBudget) -> Result<(Store, Loaded), BrokerError> {
        let err = db_err(path);
        let conn = Connection::open(path).map_err(&err)?;
        conn.execute_batch(SCHEMA).map_err(&err)?;
        migrate(&conn).map_err(&err)?;
        let loaded = load(&conn, budget).map_err(&err)?;
        let (tx, rx) = mpsc::channel::<(u64, StoreOp)>();
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name("lichen-broker-store".into())
            .spawn(move || writer(conn, rx, p))
            .map_err(|e| BrokerError::Store(format!("store thread: {e}")))?;
        Ok((
            Store {
                path: path.to_path_buf(),
                reader: Mutex::new(None),
                tx: Mutex::new(Some(tx)),
                sent: AtomicU64::new(0),
                progress,
                thread: Mutex::new(Some(thread)),
            },
            loaded,
        ))
    }

    /// Queues an operation; returns its sequence number (see [`Store::wait_committed`]).
    pub fn send(&self, op: StoreOp) -> u64 {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.sent.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(tx) = tx.as_ref() {
            let _ = tx.send((seq, op));
        }
        seq
    }

    /// Waits (up to 5 s) until operation `seq` is committed to disk. Publishers' PUBACK/PUBREC
    /// wait for this when their message was stored, so an acknowledged message survives kill -9.
    pub async fn wait_committed(&self, seq: u64) {
        let wait = async {
            loop {
                let notified = self.progress.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.progress.committed.load(Ordering::Acquire) >= seq {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
    }

    pub fn committed(&self) -> u64 {
        self.progress.committed.load(Ordering::Acquire)
    }

    /// Reads `client_id`'s stored queue after row `after`, in order: at most `max_count`
    /// messages and `max_bytes` (as counted by `Delivery::mem_size`; at least one message).
    /// Blocking: call it from a blocking thread.
    pub fn read_queued(
        &self,
        client_id: &str,
        after: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Delivery)>, BrokerError> {
        let err = db_err(&self.path);
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            *reader = Some(Connection::open(&self.path).map_err(&err)?);
        }
        let Some(conn) = reader.as_ref() else {
            return Ok(Vec::new());
        };
        let mut st = conn.prepare_cached(QUEUED_AFTER).map_err(&err)?;
        let rows = st
            .query_map(
                params![
                    client_id,
                    after as i64,
                    max_count.min(i64::MAX as usize) as i64
                ],
                queued_row,
            )
            .map_err(&err)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for row in rows {
            let row = row.map_err(&err)?;
            let (id, d) = match row.into_delivery() {
                Some(x) => x,
                None => continue,
            };
            bytes += d.mem_size();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push((id, d));
        }
        Ok(out)
    }

    /// Waits until every operation sent so far is committed.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(StoreOp::Flush(tx));
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }

    /// Commits everything and stops the writer.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

const QUEUED_AFTER: &str = "SELECT id, blob, qos, retain, sub_ids, origin, expires, packet_id, stage FROM queued WHERE client_id = ?1 AND id > ?2 AND packet_id IS NULL ORDER BY id LIMIT ?3";

/// A `queued` row as read.
struct QueuedRow {
    id: i64,
    blob: Vec<u8>,
    qos: i64,
    retain: bool,
    sub_ids: String,
    origin: Option<String>,
    expires: Option<i64>,
    /// Set while a QoS 2 message is in flight: (packet id, stage).
    inflight: Option<(u16, Stage)>,
}

fn queued_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedRow> {
    Ok(QueuedRow {
        id: r.get(0)?,
        blob: r.get(1)?,
        qos: r.get(2)?,
        retain: r.get(3)?,
        sub_ids: r.get(4)?,
        origin: r.get(5)?,
        expires: r.get(6)?,
        inflight: match (r.get::<_, Option<i64>>(7)?, r.get::<_, Option<i64>>(8)?) {
            (Some(pid), Some(stage)) if (1..=65535).contains(&pid) => Some((
                pid as u16,
                if stage == 2 { Stage::Comp } else { Stage::Rec },
            )),
            _ => None,
        },
    })
}

impl QueuedRow {
    /// None for a row whose message does not decode (skipped).
    fn into_delivery(self) -> Option<(u64, Delivery)> {
        let msg = decode_msg(&self.blob, self.origin, self.expires)?;
        let id = self.id as u64;
        Some((
            id,
            Delivery {
                msg: Arc::new(msg),
                qos: QoS::from_u8(self.qos as u8).unwrap_or(QoS::AtLeastOnce),
                retain: self.retain,
                subscription_ids: serde_json::from_str(&self.sub_ids).unwrap_or_default(),
                store_id: id,
            },
        ))
    }
}

fn load(conn: &Connection, budget: QueueBudget) -> rusqlite::Result<Loaded> {
    let now = unix_now() as i64;
    conn.execute(
        "DELETE FROM retained WHERE expires IS NOT NULL AND expires <= ?1",
        [now],
    )?;
    let mut retained = Vec::new();
    let mut st = conn.prepare("SELECT blob, origin, expires FROM retained")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    for row in rows {
        let (blob, origin, expires) = row?;
        if let Some(m) = decode_msg(&blob, origin, expires) {
            retained.push(Arc::new(m));
        }
    }
    let mut sessions = Vec::new();
    let mut st = conn.prepare("SELECT client_id, expiry, protocol, seen, dropped FROM sessions")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
        ))
    })?;
    for row in rows {
        let (client_id, expiry, protocol, seen, dropped) = row?;
        sessions.push(LoadedSession {
            client_id,
            expiry: expiry as u32,
            protocol: if protocol == 5 {
                Protocol::V5
            } else {
                Protocol::V311
            },
            offline_for: (now - seen).max(0) as u64,
            subs: Vec::new(),
            inflight: Vec::new(),
            incoming_qos2: Vec::new(),
            queued: Vec::new(),
            spilled: 0,
            spilled_bytes: 0,
            spill_after: 0,
            dropped: dropped.unwrap_or(0).max(0) as u64,
        });
    }
    let mut max_queued_id = 0;
    let mut total_bytes = 0;
    for s in &mut sessions {
        let mut st =
            conn.prepare("SELECT filter, options, sub_id FROM subs WHERE client_id = ?1")?;
        let rows = st.query_map([&s.client_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        for row in rows {
            let (f, o, id) = row?;
            s.subs.push((f, options_from(o), id.map(|i| i as u32)));
        }
        let mut st = conn.prepare(
            "SELECT packet_id FROM incoming_qos2 WHERE client_id = ?1 ORDER BY packet_id",
        )?;
        for pid in st.query_map([&s.client_id], |r| r.get::<_, i64>(0))? {
            if let Ok(pid) = u16::try_from(pid?) {
                s.incoming_qos2.push(pid);
            }
        }
        let mut st = conn.prepare(
            "SELECT id, blob, qos, retain, sub_ids, origin, expires, packet_id, stage FROM queued WHERE client_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([&s.client_id], queued_row)?;
        let mut bytes = 0;
        for row in rows {
            let row = row?;
            let inflight = row.inflight;
            let Some((id, d)) = row.into_delivery() else {
                continue;
            };
            max_queued_id = max_queued_id.max(id);
            if let Some((pid, stage)) = inflight {
                // In flight: always in memory, whatever the budget (bounded by max_inflight).
                let size = d.mem_size();
                bytes += size;
                total_bytes += size;
                s.inflight.push((pid, stage, d));
                continue;
            }
            let size = d.mem_size();
            let fits = s.spilled == 0
                && s.queued.len() < budget.per_session_count
                && bytes + size <= budget.per_session_bytes
                && total_bytes + size <= budget.total_bytes;
            if fits {
                bytes += size;
                total_bytes += size;
                s.queued.push((id, d));
            } else {
                if s.spilled == 0 {
                    s.spill_after = id - 1;
                }
                s.spilled += 1;
                s.spilled_bytes += size as u64;
            }
        }
    }
    let max_row: Option<i64> = conn.query_row("SELECT MAX(id) FROM queued", [], |r| r.get(0))?;
    max_queued_id = max_queued_id.max(max_row.unwrap_or(0).max(0) as u64);
    let mut devices = Vec::new();
    let mut st = conn.prepare("SELECT fingerprint, name, cert_pem FROM devices")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        devices.push(row?);
    }
    Ok(Loaded {
        retained,
        sessions,
        devices,
        max_queued_id,
    })
}

fn apply(
    tx: &rusqlite::Transaction<'_>,
    op: StoreOp,
    flushes: &mut Vec<mpsc::Sender<()>>,
) -> rusqlite::Result<()> {
    match op {
        StoreOp::PutRetained { msg } => {
            tx.execute(
                "INSERT OR REPLACE INTO retained (topic, blob, origin, expires) VALUES (?1, ?2, ?3, ?4)",
                params![&*msg.topic, encode_msg(&msg), msg.origin.as_deref(), expires_unix(&msg)],
            )?;
        }
        StoreOp::DelRetained { topic } => {
            tx.execute("DELETE FROM retained WHERE topic = ?1", [&*topic])?;
        }
        StoreOp::PutSession {
            client_id,
            expiry,
            protocol,
        } => {
            // An upsert, not a replace: the row's drop count stays.
            tx.execute(
                "INSERT INTO sessions (client_id, expiry, protocol, seen) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (client_id) DO UPDATE SET expiry = excluded.expiry, \
                 protocol = excluded.protocol, seen = excluded.seen",
                params![
                    &*client_id,
                    i64::from(expiry),
                    i64::from(protocol.level()),
                    unix_now() as i64
                ],
            )?;
        }
        StoreOp::SetDropped { client_id, dropped } => {
            tx.execute(
                "UPDATE sessions SET dropped = ?2 WHERE client_id = ?1",
                params![&*client_id, dropped.min(i64::MAX as u64) as i64],
            )?;
        }
        StoreOp::DelSession { client_id } => {
            tx.execute("DELETE FROM sessions WHERE client_id = ?1", [&*client_id])?;
            tx.execute("DELETE FROM subs WHERE client_id = ?1", [&*client_id])?;
            tx.execute("DELETE FROM queued WHERE client_id = ?1", [&*client_id])?;
            tx.execute(
                "DELETE FROM incoming_qos2 WHERE client_id = ?1",
                [&*client_id],
            )?;
        }
        StoreOp::PutSub {
            client_id,
            filter,
            options,
            subscription_id,
        } => {
            tx.execute(
                "INSERT OR REPLACE INTO subs (client_id, filter, options, sub_id) VALUES (?1, ?2, ?3, ?4)",
                params![&*client_id, filter, options_byte(options), subscription_id.map(i64::from)],
            )?;
        }
        StoreOp::DelSub { client_id, filter } => {
            tx.execute(
                "DELETE FROM subs WHERE client_id = ?1 AND filter = ?2",
                params![&*client_id, filter],
            )?;
        }
        StoreOp::PutQueued {
            id,
            client_id,
            delivery,
        } => {
            let d = delivery;
            tx.execute(
                "INSERT OR REPLACE INTO queued (id, client_id, blob, qos, retain, sub_ids, origin, expires) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id as i64,
                    &*client_id,
                    encode_msg(&d.msg),
                    d.qos as i64,
                    d.retain,
                    serde_json::to_string(&d.subscription_ids).unwrap_or_else(|_| "[]".into()),
                    d.msg.origin.as_deref(),
                    expires_unix(&d.msg)
                ],
            )?;
        }
        StoreOp::DelQueued { id } => {
            tx.execute("DELETE FROM queued WHERE id = ?1", [id as i64])?;
        }
        StoreOp::SetInflight {
            id,
            packet_id,
            stage,
        } => {
            let stage: i64 = if stage == Stage::Comp { 2 } else { 1 };
            tx.execute(
                "UPDATE queued SET packet_id = ?2, stage = ?3 WHERE id = ?1",
                params![id as i64, i64::from(packet_id), stage],
            )?;
        }
        StoreOp::PutIncoming {
            client_id,
            packet_id,
        } => {
            tx.execute(
                "INSERT OR REPLACE INTO incoming_qos2 (client_id, packet_id) VALUES (?1, ?2)",
                params![&*client_id, i64::from(packet_id)],
            )?;
        }
        StoreOp::DelIncoming {
            client_id,
            packet_id,
        } => {
            tx.execute(
                "DELETE FROM incoming_qos2 WHERE client_id = ?1 AND packet_id = ?2",
                params![&*client_id, i64::from(packet_id)],
            )?;
        }
        // Handled by the writer loop.
        StoreOp::GroupStart | StoreOp::GroupEnd => {}
        StoreOp::PutDevice {
            fingerprint,
            name,
            cert_pem,
        } => {
            tx.execute(
                "INSERT OR REPLACE INTO devices (fingerprint, name, cert_pem) VALUES (?1, ?2, ?3)",
                params![fingerprint, name, cert_pem],
            )?;
        }
        StoreOp::DelDevice { fingerprint } => {
            tx.execute("DELETE FROM devices WHERE fingerprint = ?1", [fingerprint])?;
        }
        StoreOp::Flush(done) => flushes.push(done),
    }
    Ok(())
}

/// Batch size bound: at most this many operations per transaction...
const BATCH: usize = 4096;
/// ...unless a group is open: then up to this many.
const GROUP_BATCH: usize = 16 * BATCH;
/// Longest wait for the next operation of an open group.
const GROUP_WAIT: Duration = Duration::from_secs(2);

fn group_depth(depth: usize, op: &StoreOp) -> usize {
    match op {
        StoreOp::GroupStart => depth + 1,
        StoreOp::GroupEnd => depth.saturating_sub(1),
        _ => depth,
    }
}

/// Commit progress shared with async waiters.
#[derive(Default)]
struct Progress {
    committed: AtomicU64,
    notify: tokio::sync::Notify,
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<(u64, StoreOp)>, progress: Arc<Progress>) {
    while let Ok((first_seq, first)) = rx.recv() {
        let mut flushes = Vec::new();
        let mut last = first_seq;
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            // Open groups: the batch does not end inside one (they are sent without awaiting
            // anything, so the end follows quickly). GROUP_WAIT and GROUP_BATCH bound a broken
            // group.
            let mut depth = group_depth(0, &first);
            apply(&tx, first, &mut flushes)?;
            let mut n = 1;
            while n < BATCH || (depth > 0 && n < GROUP_BATCH) {
                let next = if depth > 0 {
                    rx.recv_timeout(GROUP_WAIT).ok()
                } else {
                    rx.try_recv().ok()
                };
                let Some((seq, op)) = next else {
                    if depth > 0 {
                        tracing::error!("store group not closed in time; committing it as is");
                    }
                    break;
                };
                last = seq;
                depth = group_depth(depth, &op);
                apply(&tx, op, &mut flushes)?;
                n += 1;
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "broker store write failed");
        }
        // Even a failed batch counts as done, so no publisher waits forever.
        progress.committed.store(last, Ordering::Release);
        progress.notify.notify_waiters();
        for f in flushes {
            let _ = f.send(());
        }
    }
    // Fold the WAL back into the database on a clean stop.
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
}
