//! Presence: connects and disconnects of things, written to the store by one task from a
//! bounded queue (the broker's connection tasks never wait for the store).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lichen_broker::{ClientIdentity, ConnectionEvents, DisconnectKind};
use lichen_cloud_store::{Backend, Presence as PresenceRecord};
use tokio::sync::mpsc;

use crate::authz::Principal;
use crate::{Inner, PRESENCE_QUEUE};

pub struct Presence {
    queue: mpsc::Sender<PresenceRecord>,
    dropped: AtomicU64,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub fn now_rfc3339() -> String {
    lichen_sys::time::format_rfc3339_millis(std::time::SystemTime::now())
}

impl Presence {
    pub fn start<B: Backend + 'static>(inner: Arc<Inner<B>>) -> Arc<Presence> {
        let (tx, mut rx) = mpsc::channel::<PresenceRecord>(PRESENCE_QUEUE);
        let task = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                if let Err(e) = inner.store.set_presence(&p).await {
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
        let p = PresenceRecord {
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

    fn disconnected(&self, client: &ClientIdentity, kind: DisconnectKind) {
        // A takeover leaves the thing online through the new connection.
        if kind != DisconnectKind::TakenOver {
            self.record(client, false);
        }
    }
}
