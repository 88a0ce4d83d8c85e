//! Presence: connects and disconnects of things, written to the store by one task from a
//! bounded queue (the broker's connection tasks never wait for the store).
//!
//! The store counts a thing's live connections (`thing`, `thing#2`, … are one thing), so the
//! thing stays online until the last is gone. The counts are reset when the endpoint starts
//! ([`reset_at_start`]): connections an earlier run counted died with it. A takeover (a new
//! connection under the same client id) is one connect of the new connection and one
//! disconnect of the old; the old one reports only after closing its socket, so the count
//! goes 1 → 2 → 1 (were the order ever reversed, the thing would show offline for a moment
//! and the final count would still be right).
//!
//! Counts are kept per endpoint node ([`EndpointConfig::node_id`](crate::EndpointConfig)): an
//! endpoint that starts resets only its own node's counts, so another node's live
//! connections keep their things online.
//!
//! Pending changes are coalesced per thing (a map thing → net change, last client id, last
//! time) instead of queued one by one: nothing is dropped when connects come faster than the
//! store takes them (1,000 devices connecting at once filled the old 4,096-change queue, and
//! each dropped change left a count off until restart). Bound: one entry per thing with a
//! change the writer has not taken yet, so at most the things that connected or disconnected
//! since its last pass (each came through the gate: a registered thing with an active
//! certificate); an entry is a thing name, a client id, a time and a number. A change the
//! store refuses is merged back and retried after [`RETRY_AFTER`], unless the thing is gone.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lichen_broker::{ClientIdentity, ConnectionEvents, DisconnectKind};
use lichen_cloud_store::{Backend, PresenceChange, StoreError};
use tokio::sync::Notify;

use crate::Inner;
use crate::authz::Principal;

/// How long the writer waits before retrying changes the store refused.
pub const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A thing's connects minus disconnects not yet written, with its last event's client id and
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    delta: i64,
    client_id: String,
    /// The client id of the last connect among these events.
    last_connect: Option<String>,
    at: String,
}

type PendingMap = HashMap<String, Pending>;

/// Adds `change` to what is pending for `thing`; an earlier entry keeps its place, and
/// `client_id` and `at` follow the later event. Returns whether it merged into one.
fn merge(map: &mut PendingMap, thing: String, change: Pending) -> bool {
    match map.entry(thing) {
        Entry::Occupied(mut e) => {
            let p = e.get_mut();
            p.delta += change.delta;
            p.client_id = change.client_id;
            if change.last_connect.is_some() {
                p.last_connect = change.last_connect;
            }
            p.at = change.at;
            true
        }
        Entry::Vacant(e) => {
            e.insert(change);
            false
        }
    }
}

pub struct Presence {
    pending: Arc<Mutex<PendingMap>>,
    wake: Arc<Notify>,
    /// Events merged into a change already pending (the writer was behind).
    coalesced: AtomicU64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub fn now_rfc3339() -> String {
    lichen_sys::time::format_rfc3339_millis(std::time::SystemTime::now())
}

/// Forgets the live connections counted for `node` (the ones its last run counted died with
/// it) before the broker accepts any; things no other node holds go offline. A failure is
/// logged, not fatal: presence is advisory.
pub async fn reset_at_start<B: Backend>(store: &B, node: &str) {
    match store.reset_presence(node, &now_rfc3339()).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(
                things = n,
                node,
                "presence left by the last run of this node reset"
            )
        }
        Err(e) => tracing::warn!(error = %e, node, "presence not reset at start"),
    }
}

fn lock(m: &Mutex<PendingMap>) -> std::sync::MutexGuard<'_, PendingMap> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Presence {
    pub fn start<B: Backend + 'static>(inner: Arc<Inner<B>>, node: String) -> Arc<Presence> {
        let pending: Arc<Mutex<PendingMap>> = Arc::default();
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(write_changes(inner, node, pending.clone(), wake.clone()));
        Arc::new(Presence {
            pending,
            wake,
            coalesced: AtomicU64::new(0),
            task: Mutex::new(Some(task)),
        })
    }

    /// Events merged into a change already pending, since start.
    pub fn coalesced(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Things with a change not yet written.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Stops the writer (what is pending is abandoned: this node's counts are reset at its
    /// next start).
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    fn record(&self, client: &ClientIdentity, online: bool) {
        let Some(Principal::Thing { name, .. }) = client
            .handle
            .as_ref()
            .and_then(|h| h.downcast_ref::<Principal>())
        else {
            return; // claim connections have no presence
        };
        let change = Pending {
            delta: if online { 1 } else { -1 },
            client_id: client.client_id.to_string(),
            last_connect: online.then(|| client.client_id.to_string()),
            at: now_rfc3339(),
        };
        if merge(&mut lock(&self.pending), name.clone(), change) {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }
}

/// The writer: takes every pending change at once and writes each, then waits for more.
async fn write_changes<B: Backend + 'static>(
    inner: Arc<Inner<B>>,
    node: String,
    pending: Arc<Mutex<PendingMap>>,
    wake: Arc<Notify>,
) {
    loop {
        wake.notified().await;
        let batch = std::mem::take(&mut *lock(&pending));
        let mut failed = 0usize;
        for (thing, p) in batch {
            let change = PresenceChange {
                node: node.clone(),
                thing,
                client_id: p.client_id,
                last_connect: p.last_connect,
                delta: p.delta,
                at: p.at,
            };
            match inner.store.presence_changed(&change).await {
                Ok(()) => {}
                Err(StoreError::NotFound { .. }) => continue, // the thing was deleted
                Err(e) => {
                    tracing::warn!(thing = %change.thing, error = %e, "presence not stored; retrying");
                    failed += 1;
                    let back = Pending {
                        delta: change.delta,
                        client_id: change.client_id,
                        last_connect: change.last_connect,
                        at: change.at,
                    };
                    // Later events keep their client id and time: merge this under them.
                    let mut map = lock(&pending);
                    match map.entry(change.thing) {
                        Entry::Occupied(mut e) => {
                            let later = e.get_mut();
                            later.delta += back.delta;
                            if later.last_connect.is_none() {
                                later.last_connect = back.last_connect;
                            }
                        }
                        Entry::Vacant(e) => {
                            e.insert(back);
                        }
                    }
                    continue;
                }
            }
            // last_seen follows every connect and disconnect.
            if let Err(e) = inner.store.touch_device(&change.thing, &change.at).await {
                tracing::warn!(thing = %change.thing, error = %e, "last seen not stored");
            }
        }
        if failed > 0 {
            tokio::time::sleep(RETRY_AFTER).await;
            wake.notify_one();
        }
    }
}

impl ConnectionEvents for Presence {
    fn connected(&self, client: &ClientIdentity, _peer: std::net::SocketAddr) {
        self.record(client, true);
    }

    fn disconnected(&self, client: &ClientIdentity, _kind: DisconnectKind) {
        // A takeover too: the new connection was counted when it connected, and the thing
        // stays online through it.
        self.record(client, false);
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
