//! The lichen cloud's device endpoint: lichen's MQTT broker (`lichen-broker`) configured for
//! the cloud, so that real AWS IoT device clients work against it unchanged.
//!
//! ```text
//! let endpoint = lichen_cloud_endpoint::start(config, store, ca).await?;
//! endpoint.mqtt_addr();                       // MQTT 3.1.1/5 over mTLS
//! endpoint.certificate_revoked(&fp).await;    // kicks live connections of that certificate
//! endpoint.notify_jobs("thing").await;         // after queueing job executions for it
//! endpoint.shutdown().await;
//! ```
//!
//! # Who may connect
//! Every client presents a certificate issued by the cloud CA (the TLS layer trusts nothing
//! else) that the store knows and holds ACTIVE; anything else gets CONNACK Not authorized
//! (0x87 / return code 5) at its next attempt. [`EndpointHandle::certificate_revoked`] also
//! closes the certificate's live connections.
//! - A DEVICE certificate must be attached to a thing: that thing is the identity. Its client
//!   id must be the thing name, or the thing name followed by `#` and anything (`#` cannot
//!   occur in a thing name, so no thing can take over another thing's session).
//! - A CLAIM certificate (fleet provisioning) gets a claim identity; its client id may be
//!   anything that is not a thing name or a thing-name-`#` form (so it cannot take over a
//!   device's session).
//!
//! # What they may do
//! - A thing: publish and subscribe under `$aws/things/<its name>/` and
//!   `$lichen/things/<its name>/` (a subscription filter must start with that prefix
//!   literally, so no wildcard reaches another thing), plus what the cloud's device policy
//!   allows: a Greengrass `DeviceGroups` document at `<state_dir>/device-policy.json` if present
//!   (its grants never reach `$aws/` or `$lichen/` topics of other things), else nothing more.
//! - A core device: also the shadow topics (`$aws/things/<device>/shadow/…`, classic and
//!   named; publish, subscribe, receive) of the client devices associated with it
//!   (`associateClientDevices`), nothing else of theirs. The list is read at connect and
//!   again when the API changes it on this node (see [`client_devices`]).
//! - A claim identity: only the provisioning topics, `$aws/certificates/create/json`,
//!   `$aws/certificates/create-from-csr/json` and
//!   `$aws/provisioning-templates/<template that lists it>/provision/json`, each with
//!   `/accepted` and `/rejected` (or `/+`). Nothing else, before or after provisioning.
//!
//! # Services on the reserved topics
//! Client PUBLISHes under `$aws/` and `$lichen/` go to the endpoint's handler only (never to
//! other clients; a client cannot fake a service reply). Replies go to the topic's
//! subscribers (only the thing itself may subscribe there), except the provisioning replies,
//! which reach the requesting connection only.
//! - Device Shadow (classic and named) with `lichen_iot::shadow` over the store's shadows:
//!   `get`, `update` (`accepted`, `delta`, `documents`), `delete`, `rejected` with AWS codes;
//!   optimistic versions, retried on a concurrent write.
//! - Jobs (`lichen_iot::jobs` over the store's jobs and executions): `get`, `start-next`,
//!   `$next/get`, `<jobId>/get`, `<jobId>/update`; `notify` and `notify-next` when executions
//!   are queued ([`EndpointHandle::notify_jobs`]) or the current one ends.
//! - Fleet provisioning by claim: CreateKeysAndCertificate, CreateCertificateFromCsr (issued by
//!   the cloud CA; ownership token valid [`OWNERSHIP_TOKEN_SECS`]) and RegisterThing.
//! - Connectivity: `$lichen/things/<thing>/connectivity/update` with Greengrass's
//!   `UpdateConnectivityInfo` body; presence (online/offline) from connects and disconnects.
//!
//! # Bounds
//! | what | bound |
//! |---|---|
//! | reserved-topic requests queued | [`HANDLER_WORKERS`] workers × [`HANDLER_QUEUE`] messages; beyond it dropped, counted (`BrokerHandle::route_drops`), MQTT 5 QoS 1 answered Quota exceeded |
//! | presence changes pending | one per thing not yet written (coalesced: connects minus disconnects; never dropped, see `events`) |
//! | shadow write retries on a concurrent write | [`SHADOW_RETRIES`] |
//! | job-execution updates waiting for their batched write | `execution_writer::EXECUTION_QUEUE` (full: the handler worker waits), `EXECUTION_BATCH` per transaction |
//! | connectivity update | [`connectivity::MAX_ENDPOINTS`] endpoints, host ≤ 253 bytes, metadata ≤ 1 KiB |
//! | everything else | the broker's limits (`config.broker_limits`) and `lichen-iot`'s bounds |

mod authz;
pub mod client_devices;
pub mod connectivity;
mod events;
mod execution_writer;
pub mod fleet_status;
mod gate;
mod jobs;
mod provisioning;
mod service;
mod shadow;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};

use lichen_broker::{BrokerConfig, BrokerHandle, Hooks, ListenerConfig, ListenerKind, RouteMode};
use lichen_cloud_store::Backend;

pub use authz::Principal;

/// Worker tasks serving the reserved topics (a client always maps to the same one).
pub const HANDLER_WORKERS: usize = 8;
/// Requests queued per worker.
pub const HANDLER_QUEUE: usize = 1024;
/// How often a shadow write is retried when another write got in between.
pub const SHADOW_RETRIES: usize = 8;
/// How long a certificate ownership token from the claim flow stays valid (AWS: 5 minutes).
pub const OWNERSHIP_TOKEN_SECS: i64 = 300;

/// How the endpoint runs.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Where MQTT over mTLS listens (port 0 picks one; see [`EndpointHandle::mqtt_addr`]).
    pub mqtt_listen: SocketAddr,
    /// The broker's state (sessions, retained messages) and `device-policy.json`.
    pub state_dir: PathBuf,
    /// Host names and addresses for the server certificate, beyond localhost.
    pub server_names: Vec<String>,
    pub shadow: lichen_iot::shadow::ShadowLimits,
    /// Validity of certificates issued through fleet provisioning, in days.
    pub issued_cert_days: u32,
    pub broker_limits: lichen_broker::Limits,
    /// This endpoint node's name in the presence counts: distinct for every node that shares
    /// a store, and the same across a node's restarts (its start resets that node's counts).
    /// A node retired after a crash leaves its counts until a node of that name starts.
    pub node_id: String,
}

impl EndpointConfig {
    pub fn new(mqtt_listen: SocketAddr, state_dir: PathBuf) -> EndpointConfig {
        EndpointConfig {
            mqtt_listen,
            state_dir,
            server_names: Vec::new(),
            shadow: lichen_iot::shadow::ShadowLimits::default(),
            issued_cert_days: 365,
            broker_limits: lichen_broker::Limits::default(),
            node_id: lichen_cloud_store::DEFAULT_PRESENCE_NODE.to_string(),
        }
    }
}

/// Endpoint errors, naming the file or setting concerned.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("device endpoint: {0}")]
    Broker(#[from] lichen_broker::BrokerError),
    #[error("device policy {path}: {message}")]
    DevicePolicy { path: String, message: String },
}

/// What the handler, gate and events share.
pub(crate) struct Inner<B: Backend> {
    pub store: B,
    pub ca: Arc<lichen_pki::LocalCa>,
    pub config: EndpointConfig,
    /// Set once the broker runs (the hooks are built before it). Weak: the broker holds the
    /// handler, which holds this.
    pub broker: OnceLock<Weak<BrokerHandle>>,
    /// Jobs' namespaces and documents, which never change (bounded; see [`jobs::JobCache`]).
    pub jobs: jobs::JobCache,
    /// Fleet status messages for the batching writer ([`fleet_status::spawn_writer`]).
    pub fleet_status: fleet_status::StatusSender,
    /// Job-execution updates for the batching writer ([`execution_writer`]).
    pub executions: execution_writer::ExecutionWriter,
    /// The client devices of connected cores (see [`client_devices`]).
    pub client_devices: client_devices::Registry,
}

impl<B: Backend> Inner<B> {
    pub fn broker(&self) -> Option<Arc<BrokerHandle>> {
        self.broker.get().and_then(Weak::upgrade)
    }
}

/// A running endpoint.
pub struct EndpointHandle<B: Backend + 'static> {
    inner: Arc<Inner<B>>,
    broker: Arc<BrokerHandle>,
    events: Arc<events::Presence>,
}

/// Starts the endpoint: the broker with the cloud's gate, authorizer, reserved-topic handler
/// and presence events, its server certificate issued by `ca`.
pub async fn start<B: Backend + 'static>(
    config: EndpointConfig,
    store: B,
    ca: Arc<lichen_pki::LocalCa>,
) -> Result<EndpointHandle<B>, EndpointError> {
    let device_policy = authz::load_device_policy(&config.state_dir.join("device-policy.json"))?;
    let (status_tx, status_rx) = fleet_status::channel();
    let (executions, executions_rx) = execution_writer::ExecutionWriter::channel();
    let inner = Arc::new(Inner {
        store,
        ca: ca.clone(),
        config: config.clone(),
        broker: OnceLock::new(),
        jobs: jobs::JobCache::default(),
        fleet_status: status_tx,
        executions,
        client_devices: client_devices::Registry::default(),
    });
    fleet_status::spawn_writer(&inner, status_rx);
    execution_writer::spawn(&inner, executions_rx);
    let handler = Arc::new(service::Service {
        inner: inner.clone(),
    });
    let mut routes = Vec::new();
    for prefix in ["$aws/", "$lichen/"] {
        let mut r = lichen_broker::TopicRoute::new(prefix, RouteMode::HandlerOnly, handler.clone());
        r.workers = HANDLER_WORKERS;
        r.queue_capacity = HANDLER_QUEUE;
        routes.push(r);
    }
    events::reset_at_start(&inner.store, &inner.config.node_id).await;
    let events = events::Presence::start(inner.clone(), inner.config.node_id.clone());
    let hooks = Hooks {
        gate: Some(Arc::new(gate::CloudGate {
            inner: inner.clone(),
        })),
        authorizer: Some(Arc::new(authz::CloudAuthorizer { device_policy })),
        routes,
        events: Some(events.clone()),
        ca: Some(ca),
    };
    let tls = lichen_broker::TlsConfig {
        hostnames: config.server_names.clone(),
        ..Default::default()
    };
    let broker_config = BrokerConfig {
        state_dir: config.state_dir.join("broker"),
        listeners: vec![ListenerConfig {
            kind: ListenerKind::Tls,
            bind: config.mqtt_listen,
        }],
        allow_remote_plaintext: false,
        limits: config.broker_limits.clone(),
        tls,
        ..Default::default()
    };
    let broker = Arc::new(
        lichen_broker::start_with_hooks(broker_config, lichen_bus::Bus::new(), hooks).await?,
    );
    let _ = inner.broker.set(Arc::downgrade(&broker));
    Ok(EndpointHandle {
        inner,
        broker,
        events,
    })
}

impl<B: Backend + 'static> EndpointHandle<B> {
    /// Where MQTT over mTLS listens.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.broker
            .addr(ListenerKind::Tls)
            .unwrap_or(self.inner.config.mqtt_listen)
    }

    /// The broker underneath (stats, connected clients).
    pub fn broker(&self) -> &BrokerHandle {
        &self.broker
    }

    /// Closes the live connections of a certificate that was just revoked (the gate refuses
    /// its next attempt by itself). Returns how many were closed.
    pub async fn certificate_revoked(&self, fingerprint: &str) -> usize {
        let n = self.broker.disconnect_certificate(fingerprint);
        tracing::info!(%fingerprint, connections = n, "revoked certificate disconnected");
        n
    }

    /// Publishes `jobs/notify` and `jobs/notify-next` to `thing` for its un-namespaced jobs,
    /// and `notify[-next]-namespace-N` for each jobs namespace N of its executions (call after
    /// queueing, canceling or removing executions for it).
    pub async fn notify_jobs(&self, thing: &str) {
        jobs::notify(&self.inner, thing).await;
    }

    /// The client devices associated with the core `thing` changed: its live connections on
    /// this node read the list again (their next action sees it). Call after the change is
    /// committed.
    pub async fn client_devices_changed(&self, thing: &str) {
        if let Err(e) = self
            .inner
            .client_devices
            .refresh(&self.inner.store, thing)
            .await
        {
            tracing::error!(%thing, error = %e, "client devices not re-read; the core's connections see the change at their next connect");
        }
    }

    /// Applies a shadow update request (the body a device would publish on `…/update`) for
    /// the control plane, exactly as a device-initiated one: stored with the same optimistic
    /// version check, and `update/accepted`, `update/documents` and `update/delta` published
    /// to the device. `Err` carries AWS's rejection payload (`code`, `message`).
    pub async fn update_shadow(
        &self,
        thing: &str,
        shadow_name: &str,
        request: &serde_json::Value,
    ) -> Result<(), serde_json::Value> {
        let topic = lichen_iot::topic::ShadowTopic {
            thing: thing.to_string(),
            shadow: (!shadow_name.is_empty()).then(|| shadow_name.to_string()),
            op: lichen_iot::topic::ShadowOp::Update,
            reply: None,
        };
        shadow::handle(&self.inner, &topic, request.to_string().as_bytes()).await
    }

    /// After a shadow's desired state was written to the store directly: publishes its
    /// `update/delta` (the whole desired-vs-reported difference). Returns whether there was
    /// one. Prefer [`Self::update_shadow`], which also publishes `documents` and `accepted`.
    pub async fn shadow_updated(&self, thing: &str, shadow_name: &str) -> bool {
        match shadow::publish_delta(&self.inner, thing, shadow_name).await {
            Ok(sent) => sent,
            Err(e) => {
                tracing::error!(%thing, shadow = %shadow_name, error = %e, "shadow unreadable; delta not published");
                false
            }
        }
    }

    /// Presence events merged into a change already pending (the store was behind).
    pub fn presence_coalesced(&self) -> u64 {
        self.events.coalesced()
    }

    /// Stops the broker (every connection closes) and the presence writer.
    pub async fn shutdown(self) {
        self.broker.shutdown().await;
        self.events.stop();
    }
}
