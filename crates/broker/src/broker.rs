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
use crate::policy::PolicySet;
use crate::session::{Delivery, Msg, Session, SubRecord};
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
    pub sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
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
    pub bus: Bus,
    pub store: Option<Store>,
    pub connections: AtomicUsize,
    pub next_conn: AtomicU64,
    pub next_store_id: AtomicU64,
    share_rr: AtomicUsize,
    pub closing: AtomicBool,
    pub closed: Notify,
    epoch: Instant,
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
    /// Online sessions whose queues are over their bound: the publisher should slow down.
    pub congested: Vec<Arc<Session>>,
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
    pub fn new(limits: Limits, policies: PolicySet, bus: Bus, store: Option<Store>) -> Shared {
        Shared {
            limits,
            sessions: Mutex::new(HashMap::new()),
            subs: RwLock::new(SubTree::default()),
            retained: RwLock::new(HashMap::new()),
            policies: RwLock::new(Arc::new(policies)),
            policy_gen: AtomicU64::new(1),
            devices: Arc::new(RwLock::new(HashMap::new())),
            trusted_cas: AtomicBool::new(false),
            device_gen: AtomicU64::new(1),
            bridge: RwLock::new(Arc::new(Vec::new())),
            bus,
            store,
            connections: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            next_store_id: AtomicU64::new(1),
            share_rr: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
            epoch: Instant::now(),
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
        let mut congested = Vec::new();
        for t in targets {
            let qos = t.qos.min(msg.qos);
            let retain = t.retain_as_published && msg.retain;
            let (over, seq) = self.deliver(&t.session, &msg, qos, retain, t.ids);
            durable = durable.max(seq);
            if over {
                congested.push(t.session);
            }
        }
        Routed {
            matched,
            congested,
            durable,
        }
    }

    /// Queues one delivery; returns whether the session's queue is over its bound and the
    /// store sequence number if the delivery was persisted (else 0).
    pub fn deliver(
        &self,
        session: &Arc<Session>,
        msg: &Arc<Msg>,
        qos: QoS,
        retain: bool,
        subscription_ids: Vec<u32>,
    ) -> (bool, u64) {
        let mut store_id = 0;
        let mut seq = 0;
        if qos != QoS::AtMostOnce && self.store.is_some() && session.lock().expiry > 0 {
            store_id = self.next_store_id.fetch_add(1, Ordering::Relaxed);
        }
        let d = Delivery {
            msg: msg.clone(),
            qos,
            retain,
            subscription_ids,
            store_id,
        };
        if store_id != 0 {
            seq = self.persist(StoreOp::PutQueued {
                id: store_id,
                client_id: session.client_id.clone(),
                delivery: d.clone(),
            });
        }
        let (queued, congested) = session.enqueue(d, self.limits.max_queued_per_session);
        if !queued {
            tracing::debug!(client = %session.client_id, topic = %msg.topic, "session queue full; message dropped");
            if store_id != 0 {
                self.persist(StoreOp::DelQueued { id: store_id });
            }
        }
        (congested && session.is_online(), seq)
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
        client_id: &str,
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
                if !clean_start {
                    st.protocol = protocol;
                    st.expiry = expiry;
                    st.offline_since = None;
                }
            }
            if was_online {
                old.wake.notify_one();
            }
            if !clean_start {
                old.online.store(true, Ordering::Release);
                self.persist_session(&old.client_id, expiry, protocol);
                return Ok((old, true));
            }
            sessions.remove(client_id);
            self.drop_session(&old);
        }
        if sessions.len() >= self.limits.max_sessions {
            return Err(ReasonCode::QuotaExceeded);
        }
        let session = Session::new(Arc::from(client_id), protocol, expiry);
        {
            let mut st = session.lock();
            st.conn = conn;
            st.offline_since = None;
        }
        session.online.store(true, Ordering::Release);
        sessions.insert(session.client_id.clone(), session.clone());
        self.persist_session(&session.client_id, expiry, protocol);
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
        session.online.store(false, Ordering::Release);
        self.persist(StoreOp::DelSession {
            client_id: session.client_id.clone(),
        });
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
            drop(st);
            self.persist_session(&session.client_id, expiry, protocol);
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
    }

    /// Milliseconds since the broker started: the clock of keepalive checks.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes connections silent for more than 1.5 × their keep alive. One sweep over all
    /// sessions replaces a timer per connection, which keeps idle connections small.
    pub fn check_keepalives(&self) {
        let now = self.now_ms();
        let late: Vec<Arc<Session>> = lock(&self.sessions)
            .values()
            .filter(|s| {
                let ka = s.keepalive_ms.load(Ordering::Relaxed);
                s.is_online()
                    && ka > 0
                    && now.saturating_sub(s.last_rx_ms.load(Ordering::Relaxed)) > ka
            })
            .cloned()
            .collect();
        for s in late {
            self.kick(&s, ReasonCode::KeepAliveTimeout);
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
        session.wake.notify_one();
    }

    /// Closes every connection with `code` (shutdown).
    pub fn kick_all(&self, code: ReasonCode) {
        let all: Vec<Arc<Session>> = lock(&self.sessions).values().cloned().collect();
        for s in all {
            self.kick(&s, code);
        }
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
