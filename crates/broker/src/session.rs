//! Sessions: subscriptions, the queue of messages waiting to be sent, and QoS 1/2 state in both
//! directions. A session outlives its connection when its expiry interval is non-zero.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    pub queue: VecDeque<Delivery>,
    pub inflight: VecDeque<Inflight>,
    pub next_packet_id: u16,
    /// QoS 2 packet ids received from the client and not yet released.
    pub incoming_qos2: Vec<u16>,
    pub dropped: u64,
}

pub struct Session {
    pub client_id: Arc<str>,
    pub state: Mutex<SessionState>,
    /// Wakes the attached connection: work queued, or a kick.
    pub wake: Notify,
    pub online: AtomicBool,
    /// Last time a packet arrived, in ms since the broker started (see `Shared::now_ms`).
    pub last_rx_ms: AtomicU64,
    /// 1.5 × the connection's keep alive in ms; 0 = none. Enforced by the broker's sweeper.
    pub keepalive_ms: AtomicU64,
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
                queue: VecDeque::new(),
                inflight: VecDeque::new(),
                next_packet_id: 1,
                incoming_qos2: Vec::new(),
                dropped: 0,
            }),
            wake: Notify::new(),
            online: AtomicBool::new(false),
            last_rx_ms: AtomicU64::new(0),
            keepalive_ms: AtomicU64::new(0),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    pub fn queue_len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Queues a delivery. Returns `(queued, congested)`. Online sessions may exceed `limit` up to
    /// twice (the publisher is then slowed); offline ones drop, QoS 0 first.
    pub fn enqueue(&self, d: Delivery, limit: usize) -> (bool, bool) {
        let online = self.is_online();
        let mut st = self.lock();
        let len = st.queue.len();
        let mut congested = false;
        if len >= limit {
            if online && len < limit.saturating_mul(2) {
                congested = true;
            } else if d.qos == QoS::AtMostOnce {
                st.dropped += 1;
                return (false, true);
            } else if let Some(pos) = st.queue.iter().position(|q| q.qos == QoS::AtMostOnce) {
                st.queue.remove(pos);
                st.dropped += 1;
            } else {
                st.dropped += 1;
                return (false, true);
            }
        }
        st.queue.push_back(d);
        drop(st);
        if online {
            self.wake.notify_one();
        }
        (true, congested)
    }
}

impl SessionState {
    /// Next free packet identifier for an outgoing QoS 1/2 message.
    pub fn alloc_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|i| i.packet_id == id) {
                return id;
            }
        }
    }

    /// Position of the in-flight message with `packet_id` (usually the first).
    pub fn find_inflight(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|i| i.packet_id == packet_id)
    }
}
