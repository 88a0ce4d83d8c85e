//! Sessions: subscriptions, the queue of messages waiting to be sent, and QoS 1/2 state in both
//! directions. A session outlives its connection when its expiry interval is non-zero.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use lichen_mqtt::{Properties, Protocol, QoS, SubscriptionOptions};
use tokio::sync::Notify;

/// An application message as routed and stored. Shared by every delivery.
#[derive(Debug)]
pub struct Msg {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// PUBLISH properties except Topic Alias and Subscription Identifier.
    pub properties: Properties,
    /// From Message Expiry Interval.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher, for No Local.
    pub origin: Option<Arc<str>>,
    /// Injected by the bus bridge; never bridged back.
    pub from_bridge: bool,
}

impl Msg {
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Msg>,
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// Row id in the store for a persistent session's QoS 1/2 message; 0 when not stored.
    pub store_id: u64,
}

/// Bytes a queued or in-flight delivery is counted for against the memory bounds: what it
/// keeps alive (payload, topic) plus the bookkeeping around it. Shared payloads are counted
/// once per session that holds them, so the bound is conservative.
pub const DELIVERY_OVERHEAD: usize = 160;

impl Delivery {
    pub fn mem_size(&self) -> usize {
        msg_mem_size(&self.msg)
    }
}

pub fn msg_mem_size(msg: &Msg) -> usize {
    msg.payload.len() + msg.topic.len() + DELIVERY_OVERHEAD
}

/// State of a session that went over its memory bound: drop counts and the messages that live
/// only in the store until the client reads again. Allocated on the first overflow, so
/// ordinary sessions do not carry it.
#[derive(Debug, Default)]
pub struct Overflow {
    /// Messages dropped for this session (QoS 0 over the bound, QoS 1/2 of a session without
    /// persistence, or over the store bound).
    pub dropped: u64,
    /// The `dropped` value last sent to the store (persistent sessions keep their count across
    /// restarts; see `Shared::persist_drop_counts`).
    pub persisted_dropped: u64,
    /// Drops not yet reported in the log (reported at most every `DROP_LOG_INTERVAL_MS`).
    pub unlogged: u64,
    pub last_log_ms: u64,
    /// QoS 1/2 messages that are in the store but not in memory: all rows of this session
    /// with a row id above `spill_after`.
    pub spilled: usize,
    pub spilled_bytes: u64,
    pub spill_after: u64,
    /// Store sequence number of the last spilled message: wait for it before reading them back.
    pub spill_seq: u64,
    /// A connection is reading spilled messages back.
    pub loading: bool,
}

/// A session's drops are logged at most this often.
pub const DROP_LOG_INTERVAL_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What an in-flight outgoing message waits for.
pub enum Stage {
    /// QoS 1 sent, waiting for PUBACK.
    Ack,
    /// QoS 2 sent, waiting for PUBREC.
    Rec,
    /// PUBREL sent, waiting for PUBCOMP.
    Comp,
}

#[derive(Debug)]
pub struct Inflight {
    pub packet_id: u16,
    pub stage: Stage,
    pub delivery: Delivery,
}

#[derive(Debug, Clone)]
pub struct SubRecord {
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// A session's messages: queued, in flight to the client, and QoS 2 ids from it.
#[derive(Default)]
pub struct Flow {
    pub queue: VecDeque<Delivery>,
    pub inflight: VecDeque<Inflight>,
    /// QoS 2 packet ids received from the client and not yet released.
    pub incoming_qos2: Vec<u16>,
}

impl Flow {
    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty() && self.incoming_qos2.is_empty()
    }
}

/// What [`SessionState::flow`] shows while none is allocated.
static NO_FLOW: Flow = Flow {
    queue: VecDeque::new(),
    inflight: VecDeque::new(),
    incoming_qos2: Vec::new(),
};

pub struct SessionState {
    /// Connection generation attached to the session; 0 when offline.
    pub conn: u64,
    /// Set to make the attached connection close with this reason (takeover, admin action).
    pub kick: Option<lichen_mqtt::ReasonCode>,
    pub protocol: Protocol,
    /// Session Expiry Interval in seconds (u32::MAX: never; 0: ends with the connection).
    pub expiry: u32,
    pub offline_since: Option<Instant>,
    /// Full filter (including any `$share/` prefix) → options.
    pub subs: BTreeMap<Arc<str>, SubRecord>,
    /// Messages and QoS state, allocated on first use and freed when the connection parks
    /// with all of it empty (see [`SessionState::shrink`]): an idle session carries 8 bytes
    /// for them, not 88.
    pub flow: Option<Box<Flow>>,
    pub next_packet_id: u16,
    /// Bytes of `queue` and `inflight`, as counted by [`Delivery::mem_size`]; also counted in
    /// the broker-wide total.
    pub mem_bytes: usize,
    pub overflow: Option<Box<Overflow>>,
    /// The store may hold this session (it was persistent at some point): ending it deletes
    /// it there.
    pub persisted: bool,
}

pub struct Session {
    pub client_id: Arc<str>,
    pub state: Mutex<SessionState>,
    /// Wakes the attached connection: work queued, or a kick.
    pub wake: Notify,
    pub online: AtomicBool,
    /// Last time a packet arrived, in ms since the broker started (see `Shared::now_ms`).
    pub last_rx_ms: AtomicU64,
    /// 1.5 × the connection's keep alive in ms (at most 98,302,500: it fits 32 bits); 0 =
    /// none. Enforced by the broker's sweeper.
    pub keepalive_ms: AtomicU32,
    /// Token of the parked connection (see `conn::park`); 0 while it runs on a task. Whoever
    /// swaps it to 0 resumes the connection.
    pub parked: AtomicU64,
    /// The connection waits idle on its task and would park once idle long enough: the sweeper
    /// wakes it then (`conn::park::PARK_AFTER_MS`).
    pub park_wanted: AtomicBool,
}

impl Session {
    pub fn new(client_id: Arc<str>, protocol: Protocol, expiry: u32) -> Arc<Session> {
        Arc::new(Session {
            client_id,
            state: Mutex::new(SessionState {
                conn: 0,
                kick: None,
                protocol,
                expiry,
                offline_since: Some(Instant::now()),
                subs: BTreeMap::new(),
                flow: None,
                next_packet_id: 1,
                mem_bytes: 0,
                overflow: None,
                persisted: false,
            }),
            wake: Notify::new(),
            online: AtomicBool::new(false),
            last_rx_ms: AtomicU64::new(0),
            keepalive_ms: AtomicU32::new(0),
            parked: AtomicU64::new(0),
            park_wanted: AtomicBool::new(false),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }
}

impl SessionState {
    /// The session's messages (empty ones if none were allocated).
    pub fn flow(&self) -> &Flow {
        self.flow.as_deref().unwrap_or(&NO_FLOW)
    }

    pub fn flow_mut(&mut self) -> &mut Flow {
        self.flow.get_or_insert_with(Default::default)
    }

    /// Frees the message state while it is empty (the connection parks).
    pub fn shrink(&mut self) {
        if self.flow.as_ref().is_some_and(|f| f.is_empty()) {
            self.flow = None;
        }
    }

    pub fn overflow_mut(&mut self) -> &mut Overflow {
        self.overflow.get_or_insert_with(Default::default)
    }

    pub fn spilled(&self) -> usize {
        self.overflow.as_ref().map_or(0, |o| o.spilled)
    }

    pub fn dropped(&self) -> u64 {
        self.overflow.as_ref().map_or(0, |o| o.dropped)
    }

    /// Adds a delivery to the queue, counting its memory here and in `total`.
    pub fn push_queued(&mut self, d: Delivery, total: &AtomicUsize) {
        let size = d.mem_size();
        self.mem_bytes += size;
        total.fetch_add(size, Ordering::Relaxed);
        self.flow_mut().queue.push_back(d);
    }

    /// Uncounts a delivery that left the queue or the in-flight window.
    pub fn release(&mut self, d: &Delivery, total: &AtomicUsize) {
        let size = d.mem_size().min(self.mem_bytes);
        self.mem_bytes -= size;
        total.fetch_sub(size, Ordering::Relaxed);
    }

    /// Uncounts everything the session holds (it ends).
    pub fn release_all(&mut self, total: &AtomicUsize) {
        total.fetch_sub(self.mem_bytes, Ordering::Relaxed);
        self.mem_bytes = 0;
    }

    /// Next free packet identifier for an outgoing QoS 1/2 message.
    pub fn alloc_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.flow().inflight.iter().any(|i| i.packet_id == id) {
                return id;
            }
        }
    }

    /// Position of the in-flight message with `packet_id` (usually the first).
    pub fn find_inflight(&self, packet_id: u16) -> Option<usize> {
        self.flow()
            .inflight
            .iter()
            .position(|i| i.packet_id == packet_id)
    }
}

/// The broker's sessions by client id: a set of sessions keyed by their own client id, so an
/// entry is one pointer (a map would hold the id a second time beside it).
#[derive(Default)]
pub struct SessionMap(std::collections::HashSet<ById>);

struct ById(Arc<Session>);

impl std::borrow::Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

impl std::hash::Hash for ById {
    // As `str` hashes: lookups by `&str` must find it.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (*self.0.client_id).hash(h);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for ById {}

impl SessionMap {
    pub fn get(&self, client_id: &str) -> Option<&Arc<Session>> {
        self.0.get(client_id).map(|b| &b.0)
    }

    /// Adds (or replaces) the session of its client id.
    pub fn insert(&mut self, session: Arc<Session>) {
        self.0.replace(ById(session));
    }

    pub fn remove(&mut self, client_id: &str) -> Option<Arc<Session>> {
        self.0.take(client_id).map(|b| b.0)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.0.iter().map(|b| &b.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
