//! [`CloudLink`]: the handle other parts of the core (the IoT Core IPC operations, the fleet
//! deployment agent, later shadows and the bridge's IotCore leg) use to talk to the cloud
//! over the one connection the cloud service keeps.
//!
//! - [`CloudLink::subscribe`] registers a filter; its messages arrive on a bounded receiver
//!   ([`SUBSCRIPTION_CAPACITY`]). The registration outlives connections: the connection loop
//!   subscribes every registered filter again after each reconnect. Dropping the receiver ends
//!   the registration; the server-side subscription stays until the next reconnect (its
//!   messages are discarded), since another registration may share the filter.
//! - [`CloudLink::publish`] / [`CloudLink::publish_message`] wait for the PUBACK at QoS 1;
//!   while disconnected they fail with [`LinkError::NotConnected`]. A publish larger than the
//!   server's Maximum Packet Size is refused with [`LinkError::Refused`] and logged; the
//!   connection stays up.
//! - [`CloudLink::publish_spooled`] (PublishToIoTCore) goes through the spool (spool.rs):
//!   QoS 1 returns once durably spooled, connected or not; QoS 0 is sent now when connected,
//!   else spooled (`keepQos0WhenOffline`) or dropped and counted.
//! - [`CloudLink::state`] watches [`LinkState`].
//!
//! Bounds: [`MAX_SUBSCRIPTIONS`] registrations; each receiver holds [`SUBSCRIPTION_CAPACITY`]
//! messages; a message for a full receiver is dropped, counted ([`CloudLink::dropped`]) and
//! logged — a slow consumer never stalls the connection or the other subscribers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use lichen_mqtt_client::{
    Client, ClientError, Message, Publish, QoS, ReasonCode, SubscriptionOptions,
};
use tokio::sync::{mpsc, watch};

use super::spool::{AppendError, CloudSpool};

/// Messages buffered per subscription receiver.
pub const SUBSCRIPTION_CAPACITY: usize = 64;
/// Subscriptions registered at once (over every user of the link).
pub const MAX_SUBSCRIPTIONS: usize = 1024;
/// Filters per SUBSCRIBE packet when restoring after a reconnect.
const RESUBSCRIBE_BATCH: usize = 32;

/// The connection as its users see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Connected,
    /// Not connected (starting, or lost); `last_error` says why the last attempt or
    /// connection failed.
    Disconnected {
        last_error: Option<String>,
    },
}

/// Why a link operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("not connected to the cloud{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotConnected { last_error: Option<String> },
    #[error("at most {MAX_SUBSCRIPTIONS} cloud subscriptions may be registered")]
    TooManySubscriptions,
    /// Refused before sending (invalid topic, over the server's Maximum Packet Size or
    /// Maximum QoS) or rejected by the server (an error reason code); the link stays up.
    #[error("{0}")]
    Refused(ClientError),
    /// The connection broke while the operation was pending.
    #[error("the cloud connection broke: {0}")]
    ConnectionLost(ClientError),
    /// The spool refused the message (full: the message names the bound) or failed.
    #[error("{0}")]
    Spool(String),
}

impl From<ClientError> for LinkError {
    fn from(e: ClientError) -> Self {
        if e.is_connection_error() {
            LinkError::ConnectionLost(e)
        } else {
            LinkError::Refused(e)
        }
    }
}

struct Registration {
    id: u64,
    filter: String,
    qos: QoS,
    tx: mpsc::Sender<Publish>,
}

pub(crate) struct Shared {
    thing_name: String,
    state: watch::Sender<LinkState>,
    client: Mutex<Option<Client>>,
    registrations: Mutex<Vec<Registration>>,
    next_id: AtomicU64,
    dropped: AtomicU64,
    spool: OnceLock<Arc<CloudSpool>>,
}

/// A cloneable handle on the cloud connection (see the module documentation).
#[derive(Clone)]
pub struct CloudLink {
    shared: Arc<Shared>,
}

impl CloudLink {
    pub(crate) fn new(thing_name: String) -> CloudLink {
        let (state, _) = watch::channel(LinkState::Disconnected { last_error: None });
        CloudLink {
            shared: Arc::new(Shared {
                thing_name,
                state,
                client: Mutex::new(None),
                registrations: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
                dropped: AtomicU64::new(0),
                spool: OnceLock::new(),
            }),
        }
    }

    /// The thing name the core connects as (its MQTT client id).
    pub fn thing_name(&self) -> &str {
        &self.shared.thing_name
    }

    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// Messages dropped because a subscriber's receiver was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Subscriptions registered now (receivers still held).
    pub fn subscriptions(&self) -> usize {
        self.shared
            .registrations
            .lock()
            .map(|r| r.iter().filter(|r| !r.tx.is_closed()).count())
            .unwrap_or(0)
    }

    fn client(&self) -> Option<Client> {
        self.shared.client.lock().ok().and_then(|c| c.clone())
    }

    fn not_connected(&self) -> LinkError {
        let last_error = match &*self.shared.state.borrow() {
            LinkState::Disconnected { last_error } => last_error.clone(),
            LinkState::Connected => None,
        };
        LinkError::NotConnected { last_error }
    }

    /// Publishes `payload` to `topic`; at QoS 1 returns once the cloud's PUBACK arrived.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<lichen_mqtt_client::Bytes>,
        qos: QoS,
    ) -> Result<ReasonCode, LinkError> {
        self.publish_message(Message::new(topic, payload, qos))
            .await
    }

    /// Like [`CloudLink::publish`] with the retain flag and MQTT 5 properties.
    pub async fn publish_message(&self, message: Message) -> Result<ReasonCode, LinkError> {
        let Some(client) = self.client() else {
            return Err(self.not_connected());
        };
        let topic = message.topic.clone();
        match client.publish_message(message).await {
            Ok(code) => Ok(code),
            Err(e) => {
                let e = LinkError::from(e);
                if let LinkError::Refused(reason) = &e {
                    tracing::warn!(topic = %topic, error = %reason, "cloud publish refused");
                }
                Err(e)
            }
        }
    }

    /// The spool publishes go through (set once when the service starts).
    pub fn spool(&self) -> Option<&Arc<CloudSpool>> {
        self.shared.spool.get()
    }

    pub(crate) fn set_spool(&self, spool: Arc<CloudSpool>) {
        let _ = self.shared.spool.set(spool);
    }

    /// Publishes through the spool (what PublishToIoTCore does): QoS 1 returns once the
    /// message is durably spooled (the drain sends it and removes it after the PUBACK);
    /// QoS 0 is sent now when connected, else spooled when `keepQos0WhenOffline`, else
    /// dropped (counted) with [`LinkError::NotConnected`]. Without a spool, as
    /// [`CloudLink::publish_message`].
    pub async fn publish_spooled(&self, message: Message) -> Result<(), LinkError> {
        lichen_mqtt_client::topic::validate_topic_name(&message.topic).map_err(|e| {
            LinkError::Refused(ClientError::InvalidArgument {
                field: "topic",
                reason: format!("{:?}: {e}", message.topic),
            })
        })?;
        let Some(spool) = self.spool().cloned() else {
            return self.publish_message(message).await.map(|_| ());
        };
        let spool_error = |e: AppendError| match e {
            AppendError::Full(m) => LinkError::Spool(m),
            other => LinkError::Spool(other.to_string()),
        };
        if message.qos != QoS::AtMostOnce {
            // The IPC operation offers QoS 0 and 1; the spool stores QoS 1.
            let mut message = message;
            message.qos = QoS::AtLeastOnce;
            spool.append(&message, true).await.map_err(spool_error)?;
            return Ok(());
        }
        let topic = message.topic.clone();
        let message = match self.client() {
            Some(client) => match client.publish_message(message.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if !e.is_connection_error() => {
                    tracing::warn!(topic = %topic, error = %e, "cloud publish refused");
                    return Err(LinkError::Refused(e));
                }
                Err(_) => message,
            },
            None => message,
        };
        if spool.settings().keep_qos0_when_offline {
            spool.append(&message, false).await.map_err(spool_error)?;
            return Ok(());
        }
        spool.count_offline_drop(&topic);
        Err(self.not_connected())
    }

    /// Registers `filter` and returns its messages. Subscribed now when connected (a refusal
    /// by the server is returned and nothing stays registered), and after every reconnect.
    pub async fn subscribe(
        &self,
        filter: &str,
        qos: QoS,
    ) -> Result<mpsc::Receiver<Publish>, LinkError> {
        lichen_mqtt_client::topic::validate_topic_filter(filter).map_err(|e| {
            LinkError::Refused(ClientError::InvalidArgument {
                field: "topic filter",
                reason: format!("{filter:?}: {e}"),
            })
        })?;
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut regs = self
                .shared
                .registrations
                .lock()
                .map_err(|_| LinkError::TooManySubscriptions)?;
            regs.retain(|r| !r.tx.is_closed());
            if regs.len() >= MAX_SUBSCRIPTIONS {
                return Err(LinkError::TooManySubscriptions);
            }
            regs.push(Registration {
                id,
                filter: filter.to_string(),
                qos,
                tx,
            });
        }
        // Registered first, then the client read: a connection made meanwhile restores it.
        if let Some(client) = self.client() {
            match client.subscribe_one(filter, qos).await {
                Ok(_) => {}
                Err(e) if e.is_connection_error() => {} // restored after the reconnect
                Err(e) => {
                    self.remove(id);
                    tracing::warn!(filter, error = %e, "cloud subscription refused");
                    return Err(LinkError::Refused(e));
                }
            }
        }
        Ok(rx)
    }

    fn remove(&self, id: u64) {
        if let Ok(mut regs) = self.shared.registrations.lock() {
            regs.retain(|r| r.id != id);
        }
    }

    // ---- used by the connection loop ----

    pub(crate) fn set_state(&self, state: LinkState) {
        self.shared.state.send_replace(state);
    }

    /// A new connection: makes it current and subscribes every registered filter on it.
    pub(crate) async fn attach(&self, client: &Client) -> Result<(), ClientError> {
        if let Ok(mut c) = self.shared.client.lock() {
            *c = Some(client.clone());
        }
        let filters: Vec<(String, SubscriptionOptions)> = {
            let mut regs = match self.shared.registrations.lock() {
                Ok(r) => r,
                Err(_) => return Ok(()),
            };
            regs.retain(|r| !r.tx.is_closed());
            let mut seen: Vec<(String, SubscriptionOptions)> = Vec::new();
            for r in regs.iter() {
                match seen.iter_mut().find(|(f, _)| *f == r.filter) {
                    Some((_, o)) => o.qos = o.qos.max(r.qos),
                    None => seen.push((
                        r.filter.clone(),
                        SubscriptionOptions {
                            qos: r.qos,
                            ..Default::default()
                        },
                    )),
                }
            }
            seen
        };
        for batch in filters.chunks(RESUBSCRIBE_BATCH) {
            let codes = client.subscribe(batch.to_vec()).await?;
            for ((filter, _), code) in batch.iter().zip(codes) {
                if code.is_error() {
                    tracing::warn!(filter = %filter, code = ?code, "cloud refused a subscription on reconnect");
                }
            }
        }
        if !filters.is_empty() {
            tracing::info!(filters = filters.len(), "cloud subscriptions restored");
        }
        Ok(())
    }

    /// The connection ended.
    pub(crate) fn detach(&self) {
        if let Ok(mut c) = self.shared.client.lock() {
            *c = None;
        }
    }

    /// Hands a message from the cloud to every registration whose filter matches.
    pub(crate) fn route(&self, publish: Publish) {
        let Ok(mut regs) = self.shared.registrations.lock() else {
            return;
        };
        regs.retain(|r| !r.tx.is_closed());
        for r in regs.iter() {
            if !lichen_mqtt_client::topic::topic_matches(&r.filter, &publish.topic) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = r.tx.try_send(publish.clone()) {
                let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(filter = %r.filter, topic = %publish.topic, dropped_total = n,
                    "cloud message dropped: the subscriber's receiver is full ({SUBSCRIPTION_CAPACITY})");
            }
        }
    }
}
