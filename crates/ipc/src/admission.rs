//! Who may hold an IPC connection before it has authenticated.
//!
//! `ipc.socket` is 0666 (components run as many users; the SVCUID authenticates), so any
//! local user can open connections. Until a connection completes CONNECT it is *pending*:
//! pending connections have their own small bounds, in total ([`MAX_PENDING`]) and per peer
//! uid ([`MAX_PENDING_PER_UID`], from `SO_PEERCRED`), and [`crate::conn::CONNECT_TIMEOUT`]
//! to authenticate. When a bound is reached the *oldest* pending connection of the uid that
//! holds the most is closed to make room, so a flood of idle connections only ever evicts
//! its own, and a component that sends CONNECT at once still gets in. Authenticated
//! connections count against `ipc.maxConnections` instead.
//!
//! Refusals, evictions and handshake timeouts are counted and logged in aggregate, at most
//! once per [`REFUSAL_LOG_INTERVAL`], so a flood cannot flood the log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

/// Connections that have not completed CONNECT, in total.
pub const MAX_PENDING: usize = 64;
/// Connections that have not completed CONNECT, per peer uid.
pub const MAX_PENDING_PER_UID: usize = 16;
/// Refusals are logged at most this often (one aggregated line).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Uids named in one aggregated refusal line.
const MAX_UIDS_LOGGED: usize = 8;
/// Authenticated connections one component identity may hold at once. A component needs a
/// few (the SDK opens one per client object); the bound keeps one component, or anyone who
/// stole its token, from taking every one of `ipc.maxConnections`.
pub const MAX_CONNECTIONS_PER_COMPONENT: usize = 32;
/// Distinct component names remembered per refusal report.
const MAX_COMPONENTS_LOGGED: usize = 8;

/// Why a connection was closed without being served.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// Closed while pending to make room for a newer connection.
    Evicted,
    /// Did not complete CONNECT in time.
    TimedOut,
    /// Authenticated while `ipc.maxConnections` connections were open.
    OverLimit,
    /// Sent something other than a valid CONNECT (bad token, bad frame).
    BadHandshake,
    /// Authenticated as a component that already holds
    /// [`MAX_CONNECTIONS_PER_COMPONENT`] connections.
    OverComponentLimit,
}

#[derive(Default)]
struct PendingSet {
    by_uid: HashMap<u32, VecDeque<(u64, AbortHandle)>>,
    total: usize,
    next_id: u64,
}

#[derive(Default)]
struct RefusalCounts {
    last_logged: Option<Instant>,
    evicted: u64,
    timed_out: u64,
    over_limit: u64,
    bad_handshake: u64,
    over_component_limit: u64,
    uids: BTreeMap<u32, u64>,
    components: BTreeMap<String, u64>,
}

impl RefusalCounts {
    fn any(&self) -> bool {
        self.evicted
            + self.timed_out
            + self.over_limit
            + self.bad_handshake
            + self.over_component_limit
            > 0
    }
}

/// Pending connections and refusal counts of one server.
#[derive(Default)]
pub struct Admission {
    pending: Mutex<PendingSet>,
    refusals: Mutex<RefusalCounts>,
    /// Authenticated connections per component name (entries at zero are removed, so the
    /// map holds at most one entry per open connection).
    per_component: Mutex<HashMap<String, usize>>,
}

/// Held by an authenticated connection; dropping it frees the component's place.
pub struct ComponentSlot {
    admission: Arc<Admission>,
    component: String,
}

impl Drop for ComponentSlot {
    fn drop(&mut self) {
        let mut map = self
            .admission
            .per_component
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.component) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.component);
            }
        }
    }
}

/// Held by a pending connection; dropping it (authenticated or closed) frees its place.
pub struct PendingSlot {
    admission: Arc<Admission>,
    uid: u32,
    id: u64,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut set = self
            .admission
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = set.by_uid.get_mut(&self.uid) {
            let before = queue.len();
            queue.retain(|(id, _)| *id != self.id);
            let removed = before - queue.len();
            if queue.is_empty() {
                set.by_uid.remove(&self.uid);
            }
            set.total -= removed;
        }
    }
}

impl Admission {
    /// Admits a new pending connection from `uid`, closing the oldest pending connection of
    /// the heaviest uid if a bound is reached. `spawn` starts the connection's task with its
    /// slot and returns the task's abort handle; it runs under the registry lock so that the
    /// slot is registered before the task can drop it.
    pub fn admit(self: &Arc<Self>, uid: u32, spawn: impl FnOnce(PendingSlot) -> AbortHandle) {
        let mut set = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let own = set.by_uid.get(&uid).map_or(0, VecDeque::len);
        let victim_uid = if own >= MAX_PENDING_PER_UID {
            Some(uid)
        } else if set.total >= MAX_PENDING {
            set.by_uid
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(u, _)| *u)
        } else {
            None
        };
        if let Some(victim_uid) = victim_uid {
            let evicted = set
                .by_uid
                .get_mut(&victim_uid)
                .and_then(VecDeque::pop_front);
            if let Some((_, handle)) = evicted {
                handle.abort();
                set.total -= 1;
                if set.by_uid.get(&victim_uid).is_some_and(VecDeque::is_empty) {
                    set.by_uid.remove(&victim_uid);
                }
                self.refused(Refusal::Evicted, victim_uid);
            }
        }
        let id = set.next_id;
        set.next_id += 1;
        let handle = spawn(PendingSlot {
            admission: self.clone(),
            uid,
            id,
        });
        set.by_uid.entry(uid).or_default().push_back((id, handle));
        set.total += 1;
    }

    /// Takes one of `component`'s [`MAX_CONNECTIONS_PER_COMPONENT`] places; `None` (counted
    /// and logged in aggregate) when it holds them all.
    pub fn claim_component(self: &Arc<Self>, component: &str, uid: u32) -> Option<ComponentSlot> {
        {
            let mut map = self.per_component.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(component.to_string()).or_default();
            if *n < MAX_CONNECTIONS_PER_COMPONENT {
                *n += 1;
                return Some(ComponentSlot {
                    admission: self.clone(),
                    component: component.to_string(),
                });
            }
        }
        {
            let mut c = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            if c.components.len() < MAX_COMPONENTS_LOGGED || c.components.contains_key(component) {
                *c.components.entry(component.to_string()).or_default() += 1;
            }
        }
        self.refused(Refusal::OverComponentLimit, uid);
        None
    }

    /// Authenticated connections `component` holds now.
    pub fn component_connections(&self, component: &str) -> usize {
        self.per_component
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(component)
            .copied()
            .unwrap_or(0)
    }

    /// Pending connections now.
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Counts a refusal; logs the counts since the last line if the interval has passed.
    pub fn refused(&self, why: Refusal, uid: u32) {
        let mut c = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        match why {
            Refusal::Evicted => c.evicted += 1,
            Refusal::TimedOut => c.timed_out += 1,
            Refusal::OverLimit => c.over_limit += 1,
            Refusal::BadHandshake => c.bad_handshake += 1,
            Refusal::OverComponentLimit => c.over_component_limit += 1,
        }
        if c.uids.len() < MAX_UIDS_LOGGED || c.uids.contains_key(&uid) {
            *c.uids.entry(uid).or_default() += 1;
        }
        if c.last_logged
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            Self::log(&mut c);
        }
    }

    /// Logs counts not yet logged, if the interval has passed (called periodically so the
    /// end of a flood is reported too).
    pub fn flush(&self) {
        let mut c = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        if c.any()
            && c.last_logged
                .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            Self::log(&mut c);
        }
    }

    fn log(c: &mut RefusalCounts) {
        let uids: Vec<String> = c.uids.iter().map(|(u, n)| format!("{u}:{n}")).collect();
        let components: Vec<String> = c
            .components
            .iter()
            .map(|(name, n)| format!("{name}:{n}"))
            .collect();
        tracing::warn!(
            evicted_pending = c.evicted,
            connect_timeouts = c.timed_out,
            over_connection_limit = c.over_limit,
            bad_handshakes = c.bad_handshake,
            over_component_limit = c.over_component_limit,
            peer_uids = %uids.join(","),
            components = %components.join(","),
            "IPC connections refused since the last report (at most one report per {}s)",
            REFUSAL_LOG_INTERVAL.as_secs()
        );
        *c = RefusalCounts {
            last_logged: Some(Instant::now()),
            ..Default::default()
        };
    }
}
