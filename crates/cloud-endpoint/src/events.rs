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
//! Known weakness: a change dropped because the queue ([`PRESENCE_QUEUE`]) is full leaves the
//! count off by one until the endpoint restarts (a thing shown online after it left, or
//! offline while connected); drops are counted and logged. The fix is to coalesce pending
//! changes per thing (bounded by the live connections) instead of dropping them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lichen_broker::{ClientIdentity, ConnectionEvents, DisconnectKind};
use lichen_cloud_store::Backend;
use tokio::sync::mpsc;

use crate::authz::Principal;
use crate::{Inner, PRESENCE_QUEUE};

/// One connect or disconnect of a thing, queued for the store.
struct Change {
    thing: String,
    client_id: String,
    online: bool,
    at: String,
}

pub struct Presence {
    queue: mpsc::Sender<Change>,
    dropped: AtomicU64,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub fn now_rfc3339() -> String {
    lichen_sys::time::format_rfc3339_millis(std::time::SystemTime::now())
}

/// Marks every thing offline with no live connection, before the broker accepts any. A
/// failure is logged, not fatal: presence is advisory, and the next connects correct it.
pub async fn reset_at_start<B: Backend>(store: &B) {
    match store.reset_presence(&now_rfc3339()).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(things = n, "presence left by the last run reset to offline"),
        Err(e) => tracing::warn!(error = %e, "presence not reset at start"),
    }
}

impl Presence {
    pub fn start<B: Backend + 'static>(inner: Arc<Inner<B>>) -> Arc<Presence> {
        let (tx, mut rx) = mpsc::channel::<Change>(PRESENCE_QUEUE);
        let task = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let stored = if p.online {
                    inner
                        .store
                        .presence_connected(&p.thing, &p.client_id, &p.at)
                        .await
                } else {
                    inner
                        .store
                        .presence_disconnected(&p.thing, &p.client_id, &p.at)
                        .await
                };
                if let Err(e) = stored {
                    tracing::warn!(thing = %p.thing, error = %e, "presence not stored");
                }
                // last_seen follows every connect and disconnect.
                if let Err(e) = inner.store.touch_device(&p.thing, &p.at).await {
                    tracing::warn!(thing = %p.thing, error = %e, "last seen not stored");
                }
            }
        });
        Arc::new(Presence {
            queue: tx,
            dropped: AtomicU64::new(0),
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stops the writer (what is queued is abandoned: presence is refreshed at the next
    /// connect).
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }

    fn record(&self, client: &ClientIdentity, online: bool) {
        let Some(Principal::Thing { name }) = client
            .handle
            .as_ref()
            .and_then(|h| h.downcast_ref::<Principal>())
        else {
            return; // claim connections have no presence
        };
        let p = Change {
            thing: name.clone(),
            online,
            client_id: client.client_id.to_string(),
            at: now_rfc3339(),
        };
        if self.queue.try_send(p).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "presence queue full; updates dropped");
            }
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
