//! State shared by every connection: sessions, the subscription tree, retained messages,
//! policies, the device registry and the bridge. Routing happens here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use lichen_bus::Bus;
use lichen_mqtt::{Protocol, QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use tokio::sync::Notify;

use crate::bridge::{self, BridgeMapping};
use crate::config::Limits;
use crate::hooks::{ActiveHooks, ClientIdentity};
use crate::policy::PolicySet;
use crate::session::{
    DROP_LOG_INTERVAL_MS, Delivery, Msg, Session, SessionMap, SessionState, SubRecord,
};
use crate::store::{Store, StoreOp};
use crate::topic::{SubEntry, SubTree, split_shared};

/// A registered client device.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub name: String,
    pub cert_pem: String,
}

pub struct Shared {
    pub limits: Limits,
    pub sessions: Mutex<SessionMap>,
    pub subs: RwLock<SubTree>,
    pub retained: RwLock<HashMap<Arc<str>, Arc<Msg>>>,
    pub policies: RwLock<Arc<PolicySet>>,
    pub policy_gen: AtomicU64,
    /// SHA-256 fingerprint (hex) of the DER certificate → device.
    pub devices: Arc<RwLock<HashMap<String, DeviceRecord>>>,
    /// Certificates from trusted CAs are accepted without registration.
    pub trusted_cas: AtomicBool,
    pub device_gen: AtomicU64,
    pub bridge: RwLock<Arc<Vec<(String, BridgeMapping)>>>,
    /// The embedder's `LocalMqtt → IotCore` leg (the broker knows no cloud).
    pub cloud_bridge: RwLock<Option<Arc<dyn bridge::CloudBridge>>>,
    pub bus: Bus,
    pub store: Option<Store>,
    pub connections: AtomicUsize,
    pub next_conn: AtomicU64,
    pub next_store_id: AtomicU64,
    /// Bytes of messages held in memory by all sessions (see `Limits::max_queued_bytes_total`).
    pub queued_bytes: AtomicUsize,
    /// Messages dropped for any session since start.
    pub dropped: AtomicU64,
    share_rr: AtomicUsize,
    pub closing: AtomicBool,
    pub closed: Notify,
    epoch: Instant,
    /// The embedder's hooks (none by default).
    pub(crate) hooks: ActiveHooks,
    /// Connected clients by client id, kept only when `hooks.track` (for events and
    /// disconnects by thing or certificate).
    pub connected: Mutex<HashMap<Arc<str>, ClientIdentity>>,
    /// Idle plain TCP connections without a task (None: they keep their tasks).
    pub(crate) parking: Option<crate::conn::Parking>,
}

pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

pub fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

/// What routing a message did.
pub struct Routed {
    /// Sessions that got it.
    pub matched: usize,
    /// Store sequence number the message's persistence needs (0: nothing stored).
    pub durable: u64,
}

/// What a subscribe did, for the SUBACK and the retained messages to send.
pub struct SubscribeOutcome {
    pub code: ReasonCode,
    pub retained: Vec<Delivery>,
    /// Store sequence number of a persistent session's new subscription (else 0).
    pub durable: u64,
}

impl Shared {
    pub(crate) fn new(
        limits: Limits,
        policies: PolicySet,
        bus: Bus,
        store: Option<Store>,
        hooks: ActiveHooks,
    ) -> Shared {
        Shared {
            limits,
            sessions: Mutex::new(SessionMap::default()),
            subs: RwLock::new(SubTree::default()),
            retained: RwLock::new(HashMap::new()),
            policies: RwLock::new(Arc::new(policies)),
            policy_gen: AtomicU64::new(1),
            devices: Arc::new(RwLock::new(HashMap::new())),
            trusted_cas: AtomicBool::new(false),
            device_gen: AtomicU64::new(1),
            bridge: RwLock::new(Arc::new(Vec::new())),
            cloud_bridge: RwLock::new(None),
            bus,
            store,
            connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            next_store_id: AtomicU64::new(1),
            queued_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            share_rr: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
            epoch: Instant::now(),
            hooks,
            connected: Mutex::new(HashMap::new()),
            parking: crate::conn::Parking::new(),
        }
    }

    /// Wakes the connection attached to `session`: it runs its loop again (work queued, a kick,
    /// a takeover), resumed first if it is parked.
    pub fn wake(&self, session: &Session) {
        session.wake.notify_one();
        if let Some(p) = &self.parking {
            p.unpark(session);
        }
    }

    /// Queues a store operation; returns its sequence number (0 without a store).
    pub fn persist(&self, op: StoreOp) -> u64 {
        match &self.store {
            Some(s) => s.send(op),
            None => 0,
        }
    }

    /// Routes a message to matching subscriptions, the retained store and the bridge.
    pub fn route(&self, msg: Arc<Msg>) -> Routed {
        let mut durable = 0;
        if msg.retain {
            durable = self.store_retained(&msg);
        }
        if !msg.from_bridge {
            let mappings = read(&self.bridge).clone();
            if !mappings.is_empty() {
                bridge::to_bus(&self.bus, &mappings, &msg);
                if let Some(cloud) = read(&self.cloud_bridge).as_ref() {
                    bridge::to_cloud(cloud.as_ref(), &mappings, &msg);
                }
            }
        }
        struct Target {
            session: Arc<Session>,
            qos: QoS,
            retain_as_published: bool,
            ids: Vec<u32>,
        }
        let mut targets: Vec<Target> = Vec::new();
        {
            let tree = read(&self.subs);
            let mut entries: Vec<&SubEntry> = Vec::new();
            tree.matches(&msg.topic, &mut entries);
            let mut shared: Vec<(&str, Vec<&SubEntry>)> = Vec::new();
            let mut add = |e: &SubEntry| {
                if let Some(t) = targets
                    .iter_mut()
                    .find(|t| Arc::ptr_eq(&t.session, &e.session))
                {
                    t.qos = t.qos.max(e.options.qos);
                    t.retain_as_published |= e.options.retain_as_published;
                    t.ids.extend(e.subscription_id);
                } else {
                    targets.push(Target {
                        session: e.session.clone(),
                        qos: e.options.qos,
                        retain_as_published: e.options.retain_as_published,
                        ids: e.subscription_id.into_iter().collect(),
                    });
                }
            };
            for e in entries {
                if let Some(group) = e.share.as_deref() {
                    match shared.iter_mut().find(|(g, _)| *g == group) {
                        Some((_, v)) => v.push(e),
                        None => shared.push((group, vec![e])),
                    }
                    continue;
                }
                if e.options.no_local && msg.origin.as_deref() == Some(&*e.session.client_id) {
                    continue;
                }
                add(e);
            }
            for (_, members) in shared {
                let start = self.share_rr.fetch_add(1, Ordering::Relaxed);
                let n = members.len();
                let pick = (0..n)
                    .map(|i| members[(start + i) % n])
                    .find(|e| e.session.is_online())
                    .unwrap_or(members[start % n]);
                add(pick);
            }
        }
        let matched = targets.len();
        for t in targets {
            let qos = t.qos.min(msg.qos);
            let retain = t.retain_as_published && msg.retain;
            let seq = self.deliver(&t.session, &msg, qos, retain, t.ids);
            durable = durable.max(seq);
        }
        Routed { matched, durable }
    }

    /// Queues one delivery without ever waiting for the subscriber; returns the store sequence
    /// number if the delivery was persisted (else 0).
    ///
    /// Within the memory bounds the delivery joins the session's queue. Beyond them a
    /// persistent session's QoS 1/2 message is kept in the store only (read back when the
    /// client drains its queue) and a connected client is disconnected with Quota exceeded, so
    /// its session continues offline; anything else is dropped and counted. Store row ids are
    /// allocated and persisted under the session lock, so one session's rows are committed in
    /// row id order (the read-back relies on it).
    pub fn deliver(
        &self,
        session: &Arc<Session>,
        msg: &Arc<Msg>,
        qos: QoS,
        retain: bool,
        subscription_ids: Vec<u32>,
    ) -> u64 {
        let limits = &self.limits;
        let size = crate::session::msg_mem_size(msg);
        let mut st = session.lock();
        let persistent = qos != QoS::AtMostOnce && self.store.is_some() && st.expiry > 0;
        // Over its own bounds the subscriber is not keeping up; over the total, the broker as a
        // whole is short of memory (then nobody is disconnected for it).
        let over_own = st.flow().queue.len() >= limits.max_queued_per_session
            || st.mem_bytes + size > limits.max_queued_bytes_per_session;
        let fits_memory = st.spilled() == 0
            && !over_own
            && self.queued_bytes.load(Ordering::Relaxed) + size <= limits.max_queued_bytes_total;
        let mut d = Delivery {
            msg: msg.clone(),
            qos,
            retain,
            subscription_ids,
            store_id: 0,
        };
        if fits_memory {
            let mut seq = 0;
            if persistent {
                d.store_id = self.next_store_id.fetch_add(1, Ordering::Relaxed);
                seq = self.persist(StoreOp::PutQueued {
                    id: d.store_id,
                    client_id: session.client_id.clone(),
                    delivery: d.clone(),
                });
            }
            // Wake the connection only when its queue stops being empty: with anything queued it
            // is already busy (sending, or waiting for acks that come by reads), and a wake per
            // message would make a stalled subscriber's task spin on its pending write.
            let was_empty = st.flow().queue.is_empty();
            st.push_queued(d, &self.queued_bytes);
            drop(st);
            if was_empty && session.is_online() {
                self.wake(session);
            }
            return seq;
        }
        let online = st.conn != 0;
        let store_room = st.overflow.as_ref().is_none_or(|o| {
            o.spilled < limits.max_stored_per_session
                && o.spilled_bytes + size as u64 <= limits.max_stored_bytes_per_session
        });
        if persistent && store_room {
            d.store_id = self.next_store_id.fetch_add(1, Ordering::Relaxed);
            let id = d.store_id;
            let seq = self.persist(StoreOp::PutQueued {
                id,
                client_id: session.client_id.clone(),
                delivery: d,
            });
            let o = st.overflow_mut();
            if o.spilled == 0 {
                o.spill_after = id - 1;
            }
            o.spilled += 1;
            o.spilled_bytes += size as u64;
            o.spill_seq = seq;
            if online && over_own && st.kick.is_none() {
                tracing::info!(client = %session.client_id, "subscriber does not keep up; disconnecting it, its session continues offline");
                st.kick = Some(ReasonCode::QuotaExceeded);
                drop(st);
                self.wake(session);
            }
            return seq;
        }
        self.count_drops(
            &session.client_id,
            &mut st,
            1,
            "session queue full; messages dropped",
        );
        0
    }

    /// Counts `n` messages dropped for a session (here and broker-wide) and logs the drops at
    /// most every `DROP_LOG_INTERVAL_MS` per session. A persistent session's count reaches the
    /// store within a second (`persist_drop_counts`).
    pub fn count_drops(&self, client_id: &str, st: &mut SessionState, n: u64, why: &'static str) {
        if n == 0 {
            return;
        }
        self.dropped.fetch_add(n, Ordering::Relaxed);
        let now = self.now_ms();
        let o = st.overflow_mut();
        o.dropped += n;
        o.unlogged += n;
        if o.last_log_ms == 0 || now.saturating_sub(o.last_log_ms) >= DROP_LOG_INTERVAL_MS {
            tracing::warn!(
                client = %client_id,
                dropped = o.unlogged,
                dropped_total = o.dropped,
                "{why}"
            );
            o.unlogged = 0;
            o.last_log_ms = now.max(1);
        }
    }

    /// Sends the drop count of a persistent session to the store if it changed since last sent.
    fn persist_dropped(&self, client_id: &Arc<str>, st: &mut SessionState) {
        if st.expiry == 0 || self.store.is_none() {
            return;
        }
        if let Some(o) = st.overflow.as_mut()
            && o.dropped != o.persisted_dropped
        {
            o.persisted_dropped = o.dropped;
            let dropped = o.dropped;
            self.persist(StoreOp::SetDropped {
                client_id: client_id.clone(),
                dropped,
            });
        }
    }

    /// Stores the changed drop counts of every persistent session (each second, and at
    /// shutdown), so they survive a restart.
    pub fn persist_drop_counts(&self) {
        if self.store.is_none() {
            return;
        }
        let all: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        for s in all {
            let mut st = s.lock();
            self.persist_dropped(&s.client_id, &mut st);
        }
    }

    /// Updates the retained store; returns the store sequence number of the change (or 0).
    fn store_retained(&self, msg: &Arc<Msg>) -> u64 {
        let mut retained = write(&self.retained);
        if msg.payload.is_empty() {
            if retained.remove(&msg.topic).is_some() {
                return self.persist(StoreOp::DelRetained {
                    topic: msg.topic.clone(),
                });
            }
            return 0;
        }
        if retained.len() >= self.limits.max_retained && !retained.contains_key(&msg.topic) {
            tracing::warn!(topic = %msg.topic, "retained message limit reached; not retained");
            return 0;
        }
        retained.insert(msg.topic.clone(), msg.clone());
        self.persist(StoreOp::PutRetained { msg: msg.clone() })
    }

    /// Adds a subscription (the filter is already validated and authorized).
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &str,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) -> SubscribeOutcome {
        let Ok((share, plain)) = split_shared(filter) else {
            return SubscribeOutcome {
                code: ReasonCode::TopicFilterInvalid,
                retained: Vec::new(),
                durable: 0,
            };
        };
        let existed;
        let mut durable = 0;
        {
            let mut st = session.lock();
            existed = st.subs.contains_key(filter);
            if !existed && st.subs.len() >= self.limits.max_subscriptions_per_session {
                return SubscribeOutcome {
                    code: ReasonCode::QuotaExceeded,
                    retained: Vec::new(),
                    durable: 0,
                };
            }
            st.subs.insert(
                Arc::from(filter),
                SubRecord {
                    options,
                    subscription_id,
                },
            );
            if st.expiry > 0 {
                durable = self.persist(StoreOp::PutSub {
                    client_id: session.client_id.clone(),
                    filter: filter.to_string(),
                    options,
                    subscription_id,
                });
            }
        }
        write(&self.subs).insert(
            plain,
            SubEntry {
                session: session.clone(),
                options,
                subscription_id,
                share: share.map(Arc::from),
            },
        );
        let send_retained = share.is_none()
            && match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => !existed,
                RetainHandling::DoNotSend => false,
            };
        let mut retained = Vec::new();
        if send_retained {
            let now = Instant::now();
            let store = read(&self.retained);
            for (topic, msg) in store.iter() {
                if lichen_mqtt::topic::topic_matches(plain, topic) && !msg.expired(now) {
                    retained.push(Delivery {
                        msg: msg.clone(),
                        qos: options.qos.min(msg.qos),
                        retain: true,
                        subscription_ids: subscription_id.into_iter().collect(),
                        store_id: 0,
                    });
                }
            }
        }
        SubscribeOutcome {
            code: options.qos.granted(),
            retained,
            durable,
        }
    }

    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        let existed = session.lock().subs.remove(filter).is_some();
        if let Ok((share, plain)) = split_shared(filter) {
            write(&self.subs).remove(plain, session, share);
        }
        if existed {
            self.persist(StoreOp::DelSub {
                client_id: session.client_id.clone(),
                filter: filter.to_string(),
            });
        }
        existed
    }

    /// Attaches a new connection to the session of `client_id`, taking it over from any other
    /// connection. Returns the session and whether it was present.
    pub fn attach(
        &self,
        client_id: &Arc<str>,
        protocol: Protocol,
        clean_start: bool,
        expiry: u32,
        conn: u64,
    ) -> Result<(Arc<Session>, bool), ReasonCode> {
        let mut sessions = lock(&self.sessions);
        if let Some(old) = sessions.get(client_id).cloned() {
            let was_online;
            {
                let mut st = old.lock();
                was_online = st.conn != 0;
                // The old connection sees the generation change and closes (Session taken over).
                st.conn = if clean_start { 0 } else { conn };
                st.kick = None;
                // A read-back by the old connection no longer counts: it discards what it reads
                // (the generation changed) and the new connection reads again.
                if let Some(o) = st.overflow.as_mut() {
                    o.loading = false;
                }
                if !clean_start {
                    st.protocol = protocol;
                    st.expiry = expiry;
                    st.offline_since = None;
                }
            }
            if was_online {
                self.wake(&old);
            }
            if !clean_start {
                old.online.store(true, Ordering::Release);
                self.persist_session(&old.client_id, expiry, protocol);
                old.lock().persisted = true;
                return Ok((old, true));
            }
            sessions.remove(client_id);
            self.drop_session(&old);
        }
        if sessions.len() >= self.limits.max_sessions {
            return Err(ReasonCode::QuotaExceeded);
        }
        // Shares the connection's client id: one allocation per client, not two.
        let session = Session::new(client_id.clone(), protocol, expiry);
        {
            let mut st = session.lock();
            st.conn = conn;
            st.offline_since = None;
            // A new session that ends with its connection has nothing in the store (restore
            // loaded every stored session, and this client id had none): no store work.
            st.persisted = expiry > 0;
        }
        session.online.store(true, Ordering::Release);
        sessions.insert(session.clone());
        if expiry > 0 {
            self.persist_session(&session.client_id, expiry, protocol);
        }
        Ok((session, false))
    }

    fn persist_session(&self, client_id: &Arc<str>, expiry: u32, protocol: Protocol) {
        if expiry > 0 {
            self.persist(StoreOp::PutSession {
                client_id: client_id.clone(),
                expiry,
                protocol,
            });
        } else {
            self.persist(StoreOp::DelSession {
                client_id: client_id.clone(),
            });
        }
    }

    /// Removes a session's subscriptions and stored state (the caller removed it from the map).
    pub fn drop_session(&self, session: &Arc<Session>) {
        write(&self.subs).remove_session(session);
        let persisted = {
            let mut st = session.lock();
            st.release_all(&self.queued_bytes);
            st.persisted
        };
        session.online.store(false, Ordering::Release);
        if persisted {
            self.persist(StoreOp::DelSession {
                client_id: session.client_id.clone(),
            });
        }
    }

    /// Detaches connection `conn`; ends the session if its expiry is 0.
    pub fn detach(&self, session: &Arc<Session>, conn: u64) {
        let mut sessions = lock(&self.sessions);
        let mut st = session.lock();
        if st.conn != conn {
            return; // taken over
        }
        st.conn = 0;
        st.kick = None;
        session.online.store(false, Ordering::Release);
        if st.expiry == 0 {
            drop(st);
            if sessions
                .get(&session.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                sessions.remove(&session.client_id);
            }
            drop(sessions);
            self.drop_session(session);
        } else {
            st.offline_since = Some(Instant::now());
            let expiry = st.expiry;
            let protocol = st.protocol;
            self.persist_session(&session.client_id, expiry, protocol);
            self.persist_dropped(&session.client_id, &mut st);
            drop(st);
        }
    }

    /// Ends offline sessions whose expiry interval has passed.
    pub fn expire_sessions(&self) {
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        let expired: Vec<Arc<Session>> = sessions
            .values()
            .filter(|s| {
                let st = s.lock();
                st.conn == 0
                    && st.expiry != u32::MAX
                    && st.offline_since.is_some_and(|t| {
                        now.duration_since(t) >= Duration::from_secs(u64::from(st.expiry))
                    })
            })
            .cloned()
            .collect();
        for s in expired {
            sessions.remove(&s.client_id);
            tracing::debug!(client = %s.client_id, "session expired");
            self.drop_session(&s);
        }
        drop(sessions);
        self.persist_drop_counts();
    }

    /// Milliseconds since the broker started: the clock of keepalive checks.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes connections silent for more than 1.5 × their keep alive, and wakes connections
    /// idle on their tasks for `PARK_AFTER_MS` so that they park. One sweep over all sessions
    /// replaces a timer per connection (parked ones included), which keeps idle connections
    /// small.
    pub fn check_keepalives(&self) {
        let now = self.now_ms();
        let mut late = Vec::new();
        let mut to_park = Vec::new();
        for s in lock(&self.sessions).values() {
            if !s.is_online() {
                continue;
            }
            let ka = u64::from(s.keepalive_ms.load(Ordering::Relaxed));
            let silent = now.saturating_sub(s.last_rx_ms.load(Ordering::Relaxed));
            if ka > 0 && silent > ka {
                late.push(s.clone());
            } else if silent >= crate::conn::PARK_AFTER_MS
                && s.park_wanted.swap(false, Ordering::Relaxed)
            {
                to_park.push(s.clone());
            }
        }
        for s in late {
            self.kick(&s, ReasonCode::KeepAliveTimeout);
        }
        for s in to_park {
            s.wake.notify_one();
        }
    }

    /// Makes the connection attached to `session` close with `code`.
    pub fn kick(&self, session: &Arc<Session>, code: ReasonCode) {
        {
            let mut st = session.lock();
            if st.conn == 0 {
                return;
            }
            st.kick = Some(code);
        }
        self.wake(session);
    }

    /// Closes every connection with `code` (shutdown).
    pub fn kick_all(&self, code: ReasonCode) {
        let all: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        for s in all {
            self.kick(&s, code);
        }
    }

    /// Delivers `msg` to the session of `client_id` alone, at most at `qos` and at the highest
    /// QoS of its subscriptions matching the topic. Returns whether it had one.
    pub fn deliver_to(&self, client_id: &str, msg: &Arc<Msg>, qos: QoS) -> bool {
        let Some(session) = lock(&self.sessions).get(client_id).cloned() else {
            return false;
        };
        let mut best: Option<QoS> = None;
        let mut ids = Vec::new();
        {
            let st = session.lock();
            for (filter, rec) in st.subs.iter() {
                let plain = split_shared(filter).map_or(&**filter, |(_, p)| p);
                if lichen_mqtt::topic::topic_matches(plain, &msg.topic) {
                    best = Some(best.map_or(rec.options.qos, |q| q.max(rec.options.qos)));
                    ids.extend(rec.subscription_id);
                }
            }
        }
        match best {
            Some(granted) => {
                self.deliver(&session, msg, granted.min(qos), false, ids);
                true
            }
            None => false,
        }
    }

    /// Kicks the connected clients `pick` chooses (tracked identities only); returns how many.
    pub fn kick_where(&self, code: ReasonCode, pick: impl Fn(&ClientIdentity) -> bool) -> usize {
        let chosen: Vec<Arc<str>> = lock(&self.connected)
            .values()
            .filter(|c| pick(c))
            .map(|c| c.client_id.clone())
            .collect();
        let mut n = 0;
        for id in chosen {
            if self.kick_client(&id, code) {
                n += 1;
            }
        }
        n
    }

    /// Kicks the connection of `client_id`; false if it is not connected.
    pub fn kick_client(&self, client_id: &str, code: ReasonCode) -> bool {
        let Some(s) = lock(&self.sessions).get(client_id).cloned() else {
            return false;
        };
        if !s.is_online() {
            return false;
        }
        self.kick(&s, code);
        true
    }

    pub fn policies(&self) -> Arc<PolicySet> {
        read(&self.policies).clone()
    }

    pub fn trusts_cas(&self) -> bool {
        self.trusted_cas.load(Ordering::Acquire)
    }

    pub fn device_by_fingerprint(&self, fp: &str) -> Option<String> {
        read(&self.devices).get(fp).map(|d| d.name.clone())
    }
}
