//! Extension points for a program that embeds the broker and decides itself who may connect,
//! what they may do and what happens to some topics (the cloud's device endpoint does). The
//! broker knows nothing of what is behind them.
//!
//! Pass them in [`Hooks`] to [`crate::start_with_hooks`]. With none set (the default, what
//! [`crate::start`] uses) the broker behaves as before: its device registry and trusted CAs
//! authenticate, the Greengrass [`crate::DeviceGroups`] policies authorize, and no connection
//! pays anything for the hooks (no allocation, one branch per decision).
//!
//! - [`ConnectionGate`]: after the TLS handshake and CONNECT, before CONNACK, admits a client
//!   with an identity (thing name + an opaque handle the authorizer gets back) or refuses it
//!   (CONNACK Not authorized: 0x87 for MQTT 5, return code 5 for 3.1.1). It may be async (a
//!   store lookup) and is bounded by `limits.connect_timeout_secs`; past it the client gets
//!   Server unavailable (0x88 / 3). A refusal is logged with the client id and the gate's
//!   reason, which must hold no secret.
//! - [`Authorizer`]: every connect/publish/subscribe decision (and, if it asks for them,
//!   every delivery) for an identity, instead of the device-group policies.
//! - [`TopicRoute`]: client PUBLISHes on topics under a prefix go to a [`TopicHandler`]
//!   (after authorization), instead of or in addition to normal routing ([`RouteMode`]).
//!   The handler runs on worker tasks fed by bounded queues, never on the connection: a full
//!   queue drops the message, counts it ([`crate::BrokerHandle::route_drops`]) and answers
//!   QoS 1/2 from MQTT 5 clients with Quota exceeded (0x97); 3.1.1 cannot be told.
//! - [`ConnectionEvents`]: connect and disconnect notifications with the identity.
//! - [`Hooks::ca`]: an existing CA issues the server certificate and is trusted for client
//!   certificates, instead of a CA the broker creates under its state directory.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lichen_mqtt::{Protocol, QoS};
use tokio::sync::mpsc;

use crate::BrokerError;
use crate::policy::{Action, DeviceGroups, PolicySet};

/// A boxed future, so that the hook traits stay object safe.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Opaque data a gate attaches to an identity, handed back to the authorizer and handlers.
pub type AuthHandle = Arc<dyn Any + Send + Sync>;

/// Default capacity of each worker queue of a [`TopicRoute`].
pub const DEFAULT_ROUTE_QUEUE: usize = 1024;
/// Most worker tasks (and queues) one route may have.
pub const MAX_ROUTE_WORKERS: usize = 64;

/// What a gate is told about a connecting client.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    /// SHA-256 of the client certificate (DER), lowercase hex; `None` on plain TCP.
    pub fingerprint: Option<String>,
    /// The certificate's subject common name, if it has one.
    pub common_name: Option<String>,
    /// The client identifier from CONNECT (or the one the broker assigned to an MQTT 5 client
    /// that sent none).
    pub client_id: String,
    pub peer: SocketAddr,
    pub protocol: Protocol,
}

/// An admitted client's identity: the thing name policies use and the gate's handle.
#[derive(Clone)]
pub struct Admission {
    pub thing: String,
    pub handle: Option<AuthHandle>,
}

/// A gate's answer.
#[derive(Clone)]
pub enum GateDecision {
    Admit(Admission),
    /// Refused; the reason is logged (it must not contain secrets).
    Refuse(String),
}

/// Decides whether a client may connect, and as whom.
pub trait ConnectionGate: Send + Sync + 'static {
    fn admit(&self, info: ConnectInfo) -> BoxFuture<GateDecision>;
}

/// A connected client as the authorizer sees it.
#[derive(Clone, Copy)]
pub struct ClientRef<'a> {
    pub client_id: &'a str,
    pub thing: &'a str,
    pub handle: Option<&'a AuthHandle>,
}

impl<'a> ClientRef<'a> {
    /// The gate's handle, if it is a `T`.
    pub fn handle_as<T: Any>(&self) -> Option<&'a T> {
        self.handle.and_then(|h| h.downcast_ref::<T>())
    }
}

/// Authorizes what a client does. Deny unless allowed.
pub trait Authorizer: Send + Sync + 'static {
    /// Whether `client` may do `action` (`Connect`, `Publish`, `Subscribe`, and `Receive` when
    /// [`Authorizer::checks_receive`] is true).
    fn allows(&self, client: ClientRef<'_>, action: Action<'_>) -> bool;
    /// Whether every delivery to a client is checked with `Action::Receive` (one call per
    /// message). Default false: subscribing is the only check.
    fn checks_receive(&self) -> bool {
        false
    }
}

/// The Greengrass client-device-auth policy engine as an [`Authorizer`], for embedders that
/// combine it with rules of their own.
pub struct PolicyAuthorizer {
    set: PolicySet,
}

impl PolicyAuthorizer {
    pub fn new(groups: &DeviceGroups) -> Result<PolicyAuthorizer, BrokerError> {
        Ok(PolicyAuthorizer {
            set: PolicySet::compile(groups)?,
        })
    }
}

impl Authorizer for PolicyAuthorizer {
    fn allows(&self, client: ClientRef<'_>, action: Action<'_>) -> bool {
        self.set
            .grants_for(client.thing)
            .allows(action, client.thing, client.client_id)
    }
}

/// A connected client: who it is and on which connection.
#[derive(Clone)]
pub struct ClientIdentity {
    pub client_id: Arc<str>,
    pub thing: Arc<str>,
    /// SHA-256 of its certificate, hex (`None` on plain TCP).
    pub fingerprint: Option<Arc<str>>,
    pub handle: Option<AuthHandle>,
    /// Increases with every connection the broker accepts: tells a reconnect from the
    /// connection it replaced.
    pub connection: u64,
}

impl ClientIdentity {
    pub fn as_ref(&self) -> ClientRef<'_> {
        ClientRef {
            client_id: &self.client_id,
            thing: &self.thing,
            handle: self.handle.as_ref(),
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("client_id", &self.client_id)
            .field("thing", &self.thing)
            .field("fingerprint", &self.fingerprint)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

/// A client PUBLISH handed to a [`TopicHandler`].
#[derive(Debug, Clone)]
pub struct InboundPublish {
    pub client: ClientIdentity,
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
}

/// Handles the PUBLISHes of a route. Calls on one worker run one after another, so one
/// client's messages are handled in the order it sent them.
pub trait TopicHandler: Send + Sync + 'static {
    fn handle(&self, message: InboundPublish) -> BoxFuture<()>;
}

/// Whether a routed PUBLISH also reaches subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMode {
    /// Only the handler sees it (not retained, not bridged, no subscriber gets it).
    HandlerOnly,
    /// The handler gets it and it is routed as usual.
    HandlerAndSubscribers,
}

/// Topics under `prefix` (a plain string prefix, e.g. `$aws/things/`) go to `handler`.
#[derive(Clone)]
pub struct TopicRoute {
    pub prefix: String,
    pub mode: RouteMode,
    pub handler: Arc<dyn TopicHandler>,
    /// Messages each worker queue holds (default [`DEFAULT_ROUTE_QUEUE`]).
    pub queue_capacity: usize,
    /// Worker tasks, 1..=[`MAX_ROUTE_WORKERS`] (default 1). A client always maps to the same
    /// worker (by client id), so its messages stay in order.
    pub workers: usize,
}

impl TopicRoute {
    pub fn new(prefix: &str, mode: RouteMode, handler: Arc<dyn TopicHandler>) -> TopicRoute {
        TopicRoute {
            prefix: prefix.to_string(),
            mode,
            handler,
            queue_capacity: DEFAULT_ROUTE_QUEUE,
            workers: 1,
        }
    }
}

/// Why a connection ended, for [`ConnectionEvents::disconnected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectKind {
    /// The client sent DISCONNECT.
    Client,
    /// The socket closed or failed, or the keep alive ran out.
    Lost,
    /// The broker closed it (kick, protocol error, shutdown).
    Server,
    /// A newer connection with the same client id took the session over: the client is
    /// still online.
    TakenOver,
}

/// Connect and disconnect notifications. Called on the connection's task: must not block
/// (queue the work elsewhere).
pub trait ConnectionEvents: Send + Sync + 'static {
    fn connected(&self, client: &ClientIdentity, peer: SocketAddr);
    fn disconnected(&self, client: &ClientIdentity, kind: DisconnectKind);
}

/// The hooks of a broker. Everything is optional; see the module documentation.
#[derive(Default, Clone)]
pub struct Hooks {
    pub gate: Option<Arc<dyn ConnectionGate>>,
    pub authorizer: Option<Arc<dyn Authorizer>>,
    pub routes: Vec<TopicRoute>,
    pub events: Option<Arc<dyn ConnectionEvents>>,
    /// Issues the TLS server certificate and is trusted for client certificates.
    pub ca: Option<Arc<lichen_pki::LocalCa>>,
}

impl Hooks {
    pub(crate) fn validate(&self) -> Result<(), BrokerError> {
        for r in &self.routes {
            if r.prefix.is_empty() {
                return Err(BrokerError::Config(
                    "hooks.routes: a route prefix must not be empty".into(),
                ));
            }
            if r.queue_capacity == 0 {
                return Err(BrokerError::Config(format!(
                    "hooks.routes[{:?}].queue_capacity must be at least 1",
                    r.prefix
                )));
            }
            if r.workers == 0 || r.workers > MAX_ROUTE_WORKERS {
                return Err(BrokerError::Config(format!(
                    "hooks.routes[{:?}].workers must be 1 to {MAX_ROUTE_WORKERS}",
                    r.prefix
                )));
            }
        }
        Ok(())
    }
}

/// A route at run time: its worker queues and drop counter.
pub(crate) struct ActiveRoute {
    pub prefix: String,
    pub mode: RouteMode,
    queues: Vec<mpsc::Sender<InboundPublish>>,
    pub dropped: AtomicU64,
}

impl ActiveRoute {
    /// Starts the route's workers.
    pub fn start(route: &TopicRoute) -> (ActiveRoute, Vec<tokio::task::JoinHandle<()>>) {
        let mut queues = Vec::with_capacity(route.workers);
        let mut tasks = Vec::with_capacity(route.workers);
        for _ in 0..route.workers {
            let (tx, mut rx) = mpsc::channel::<InboundPublish>(route.queue_capacity);
            let handler = route.handler.clone();
            queues.push(tx);
            tasks.push(tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    handler.handle(m).await;
                }
            }));
        }
        (
            ActiveRoute {
                prefix: route.prefix.clone(),
                mode: route.mode,
                queues,
                dropped: AtomicU64::new(0),
            },
            tasks,
        )
    }

    /// Queues a message for its client's worker; false (and counted) if that queue is full.
    pub fn offer(&self, message: InboundPublish) -> bool {
        let i = if self.queues.len() == 1 {
            0
        } else {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            message.client.client_id.hash(&mut h);
            (h.finish() % self.queues.len() as u64) as usize
        };
        match self.queues[i].try_send(message) {
            Ok(()) => true,
            Err(e) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let m = match &e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
                };
                // Logged on powers of two so a flood does not flood the log.
                if n.is_power_of_two() {
                    tracing::warn!(prefix = %self.prefix, client = %m.client.client_id, dropped = n, "topic handler queue full; message dropped");
                }
                false
            }
        }
    }
}

/// The hooks as the running broker holds them.
#[derive(Default)]
pub(crate) struct ActiveHooks {
    pub gate: Option<Arc<dyn ConnectionGate>>,
    pub authorizer: Option<Arc<dyn Authorizer>>,
    pub routes: Vec<ActiveRoute>,
    pub events: Option<Arc<dyn ConnectionEvents>>,
    /// Set when a connection's identity must be kept (for events and disconnects by thing or
    /// certificate): any hook is set.
    pub track: bool,
}

impl ActiveHooks {
    pub fn route_for(&self, topic: &str) -> Option<&ActiveRoute> {
        if self.routes.is_empty() {
            return None;
        }
        self.routes.iter().find(|r| topic.starts_with(&r.prefix))
    }
}
