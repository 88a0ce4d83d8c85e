//! The local shadow service: lichen's `aws.greengrass.ShadowManager` (issue 13).
//!
//! - Store and semantics: [`lichen_shadow::ShadowManager`] over `<root>/shadows/shadows.db`.
//! - IPC ([`ipc`]): GetThingShadow, UpdateThingShadow, DeleteThingShadow,
//!   ListNamedShadowsForThing, authorized by `aws.greengrass.ShadowManager` policies.
//! - Local pub/sub: a request on `$aws/things/<t>/shadow[/name/<n>]/{get,update,delete}` runs
//!   the operation (as the service, no per-component authorization, as in Greengrass); every
//!   operation, whoever started it, publishes its `accepted`/`rejected`, `update/delta` and
//!   `update/documents` (origin [`ORIGIN`]). Client devices reach these topics through the
//!   broker's bridge mappings (`LocalMqtt → Pubsub` for the requests, `Pubsub → LocalMqtt` for
//!   the answers), as in Greengrass.
//! - Control: `shadow.get|update|delete|list` for the CLI.
//! - Cloud sync ([`sync`]) over the cloud link, when `synchronize` is configured.
//!
//! Configuration: the config file's `services."aws.greengrass.ShadowManager".configuration`
//! with the deployed `aws.greengrass.ShadowManager` configuration merged over it key by key,
//! over the defaults; it is re-read when the deployed one changes (a bad deployed value is
//! logged and ignored, leaving the file's). The
//! service always runs (it is built in), and marks `aws.greengrass.ShadowManager` provided.
//!
//! Bounds: the bus subscription queues 1,024 requests (drop-oldest, the bus's); at most
//! [`MAX_CONCURRENT_OPS`] operations run at once on the blocking pool; request payloads are
//! bounded by lichen-iot (128 KiB) and documents by `shadowDocumentSizeLimitBytes`.

pub mod ipc;
pub mod sync;

use std::sync::{Arc, Mutex, OnceLock};

use lichen_bus::{Bus, Message, Payload, SubscribeOptions};
use lichen_core::CoreError;
use lichen_core::control::{ControlReply, ControlRequest, ControlService};
use lichen_core::handle::BoxFuture;
use lichen_iot::topic::{ShadowAddress, ShadowOp, ShadowTopic};
use lichen_model::control::{ShadowEntry, ShadowListing, ShadowSyncState};
use lichen_shadow::{Executed, Failure, Origin, ShadowManager, ShadowManagerConfig, ShadowStore};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::cloud::CloudService;
use crate::service::{Service, ServiceContext, ServiceError};

pub const COMPONENT: &str = "aws.greengrass.ShadowManager";
/// The bus origin (and subscriber id) of the service's messages.
pub const ORIGIN: &str = "service:aws.greengrass.ShadowManager";
/// Operations running at once (each is one SQLite transaction on the blocking pool).
pub const MAX_CONCURRENT_OPS: usize = 16;

/// What the IPC operations, the bus listener, the control channel and sync share.
pub(crate) struct Shared {
    manager: OnceLock<Arc<ShadowManager>>,
    bus: OnceLock<Bus>,
    permits: Semaphore,
    sync: sync::SyncSignal,
    config: Mutex<ShadowManagerConfig>,
}

impl Shared {
    pub(crate) fn manager(&self) -> Option<&Arc<ShadowManager>> {
        self.manager.get()
    }

    /// Runs one operation off the async threads, publishes what it produced, and wakes the
    /// sync when a synced shadow changed locally.
    pub(crate) async fn run(
        &self,
        op: ShadowOp,
        address: ShadowAddress,
        payload: Vec<u8>,
        origin: Origin,
    ) -> Result<Value, Failure> {
        let Some(manager) = self.manager.get().cloned() else {
            return Err(Failure::Invalid("the shadow service is not running".into()));
        };
        let _permit = self.permits.acquire().await;
        let executed =
            tokio::task::spawn_blocking(move || manager.execute(op, &address, &payload, origin))
                .await;
        let Executed {
            result,
            publications,
            sync_needed,
        } = match executed {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "shadow operation panicked");
                return Err(Failure::Invalid("internal service failure".into()));
            }
        };
        if let Some(bus) = self.bus.get() {
            for p in publications {
                let m = Message::new(p.topic, Payload::Binary(p.payload.into()), ORIGIN);
                if let Err(e) = bus.publish(m) {
                    tracing::warn!(error = %e, "shadow message not published");
                }
            }
        }
        if sync_needed {
            self.sync.notify();
        }
        result
    }
}

pub struct ShadowService {
    shared: Arc<Shared>,
    cloud: Option<Arc<CloudService>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ShadowService {
    /// `cloud`: the link sync uses (none: local shadows only).
    pub fn new(cloud: Option<Arc<CloudService>>) -> ShadowService {
        ShadowService {
            shared: Arc::new(Shared {
                manager: OnceLock::new(),
                bus: OnceLock::new(),
                permits: Semaphore::new(MAX_CONCURRENT_OPS),
                sync: sync::SyncSignal::default(),
                config: Mutex::new(ShadowManagerConfig::default()),
            }),
            cloud,
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// The configuration in force (see the module documentation): the config file's, with
    /// the deployed one merged over it key by key — as Greengrass treats the config file's
    /// `services` section as the component's starting configuration, so deploying
    /// `aws.greengrass.ShadowManager` (say, as a dependency, with no configuration) does not
    /// throw the file's settings away.
    fn resolve_config(ctx: &ServiceContext) -> Result<ShadowManagerConfig, String> {
        let file = ctx
            .settings
            .service(COMPONENT)
            .and_then(|s| s.get("configuration"))
            .cloned();
        let base = match &file {
            Some(v) => ShadowManagerConfig::parse(v).map_err(|e| format!("config file: {e}"))?,
            None => ShadowManagerConfig::default(),
        };
        match ctx.core.get_configuration(COMPONENT, &[]) {
            Ok(deployed) => {
                let mut merged = file.unwrap_or_else(|| Value::Object(Default::default()));
                merge_over(&mut merged, &deployed);
                match ShadowManagerConfig::parse(&merged) {
                    Ok(c) => Ok(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "deployed shadow manager configuration ignored");
                        Ok(base)
                    }
                }
            }
            Err(_) => Ok(base),
        }
    }

    fn apply(&self, ctx: &ServiceContext, config: ShadowManagerConfig) {
        let synced = config
            .synchronize
            .as_ref()
            .map(|s| s.addresses(ctx.core.thing_name()))
            .unwrap_or_default();
        if let Some(m) = self.shared.manager.get() {
            m.configure(&config, synced);
        }
        *self.shared.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.shared.sync.reconfigured();
    }

    async fn listen(shared: Arc<Shared>, bus: Bus) {
        let mut options = SubscribeOptions::new("$aws/things/+/shadow/#", ORIGIN);
        options.no_local = true;
        let sub = match bus.subscribe(options) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "shadow service cannot subscribe to the bus");
                return;
            }
        };
        while let Some(message) = sub.recv().await {
            let Ok(topic) = ShadowTopic::parse(&message.topic) else {
                continue;
            };
            if topic.reply.is_some() {
                // Answers (ours or a cloud bridge's) are not requests.
                continue;
            }
            let payload = message.payload.to_bytes().to_vec();
            let shared = shared.clone();
            // Each request runs on its own task (bounded by the permits) so a slow fsync
            // does not hold up the next request's admission.
            tokio::spawn(async move {
                let _ = shared
                    .run(topic.op, topic.address(), payload, Origin::Local)
                    .await;
            });
        }
    }

    async fn control_op(&self, request: ControlRequest) -> Result<ControlReply, CoreError> {
        let address = |thing: &str, name: Option<&str>| {
            ShadowAddress::new(thing, name.filter(|n| !n.is_empty()))
                .map_err(|e| CoreError::InvalidArgument(e.to_string()))
        };
        let (op, addr, payload) = match &request {
            ControlRequest::ShadowGet { thing, name } => {
                (ShadowOp::Get, address(thing, name.as_deref())?, Vec::new())
            }
            ControlRequest::ShadowUpdate {
                thing,
                name,
                document,
            } => (
                ShadowOp::Update,
                address(thing, name.as_deref())?,
                serde_json::to_vec(document).unwrap_or_default(),
            ),
            ControlRequest::ShadowDelete { thing, name } => (
                ShadowOp::Delete,
                address(thing, name.as_deref())?,
                Vec::new(),
            ),
            ControlRequest::ShadowList { thing } => {
                return self.listing(address(thing, None)?.thing).await;
            }
            other => {
                return Err(CoreError::NotSupported(format!(
                    "control operation {:?}",
                    other.op()
                )));
            }
        };
        // A local request like any other: rate limited, and synced when configured.
        let origin = Origin::Local;
        match self.shared.run(op, addr, payload, origin).await {
            Ok(doc) => Ok(ControlReply::ShadowDocument(doc)),
            Err(Failure::Rejected(e)) => Err(match e.code.as_u16() {
                404 => CoreError::InvalidArgument(e.message),
                409 => CoreError::Conflict(e.message),
                _ => CoreError::InvalidArgument(e.message),
            }),
            Err(e) => Err(CoreError::Other(e.to_string())),
        }
    }

    async fn listing(&self, thing: String) -> Result<ControlReply, CoreError> {
        let Some(manager) = self.shared.manager.get().cloned() else {
            return Err(CoreError::Other("the shadow service is not running".into()));
        };
        let direction = self
            .shared
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .synchronize
            .as_ref()
            .map(|s| s.direction.as_str().to_string());
        tokio::task::spawn_blocking(move || listing(&manager, thing, direction))
            .await
            .map_err(|e| CoreError::Other(e.to_string()))?
    }
}

/// Merges `over` into `base`: objects key by key (recursively), anything else replaces.
fn merge_over(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge_over(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn listing(
    manager: &ShadowManager,
    thing: String,
    direction: Option<String>,
) -> Result<ControlReply, CoreError> {
    let store_err = |e: lichen_shadow::StoreError| CoreError::Other(e.to_string());
    let mut addresses = vec![ShadowAddress {
        thing: thing.clone(),
        shadow: None,
    }];
    for name in manager
        .store()
        .list_named(&thing, None, ShadowListing::MAX_ENTRIES)
        .map_err(store_err)?
    {
        addresses.push(ShadowAddress {
            thing: thing.clone(),
            shadow: Some(name),
        });
    }
    // Synced shadows show even when deleted here (their tombstone awaits the cloud).
    for a in manager.synced() {
        if a.thing == thing && !addresses.contains(&a) {
            addresses.push(a);
        }
    }
    let mut shadows = Vec::new();
    for a in addresses {
        let stored = manager.store().get(&a).map_err(store_err)?;
        let synced = manager.is_synced(&a);
        if stored.is_none() && !synced {
            continue;
        }
        let sync = match (&direction, synced) {
            (Some(direction), true) => {
                let r = manager.sync_record(&a).map_err(store_err)?;
                Some(ShadowSyncState {
                    direction: direction.clone(),
                    pending: r.pending,
                    cloud_version: r.cloud_version,
                    last_sync_time: r.last_sync_time,
                    last_error: r.last_error,
                })
            }
            _ => None,
        };
        shadows.push(ShadowEntry {
            name: a.shadow.clone(),
            version: stored.as_ref().map_or(0, |s| s.version),
            deleted: stored.as_ref().is_none_or(|s| s.deleted),
            sync,
        });
        if shadows.len() >= ShadowListing::MAX_ENTRIES {
            break;
        }
    }
    Ok(ControlReply::Shadows(ShadowListing { thing, shadows }))
}

impl Service for ShadowService {
    fn name(&self) -> &str {
        "shadow"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let config = Self::resolve_config(ctx).map_err(|e| ServiceError::new("shadow", e))?;
            let dir = ctx.layout.root().join("shadows");
            let store = tokio::task::spawn_blocking(move || ShadowStore::open(&dir))
                .await
                .map_err(|e| ServiceError::new("shadow", e.to_string()))?
                .map_err(|e| ServiceError::new("shadow", e.to_string()))?;
            let manager = Arc::new(ShadowManager::new(store, &config));
            let _ = self.shared.manager.set(manager);
            let _ = self.shared.bus.set(ctx.bus.clone());
            self.apply(ctx, config);
            ctx.core.provide_builtin(COMPONENT);
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.push(tokio::spawn(Self::listen(
                self.shared.clone(),
                ctx.bus.clone(),
            )));
            if let Some(cloud) = &self.cloud {
                tasks.push(tokio::spawn(sync::run(self.shared.clone(), cloud.clone())));
            }
            Ok(())
        })
    }

    fn follows(&self) -> &[&str] {
        &[COMPONENT]
    }

    fn apply_configuration<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        _component: Option<&'a str>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match Self::resolve_config(ctx) {
                Ok(config) => self.apply(ctx, config),
                Err(e) => tracing::warn!(error = %e, "shadow manager configuration not applied"),
            }
        })
    }

    fn control_service(&self) -> Option<ControlService> {
        Some(ControlService::Shadows)
    }

    fn control<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(self.control_op(request))
    }

    fn ipc_operations(&self) -> Vec<lichen_ipc::Operation> {
        ipc::operations(self.shared.clone())
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
            for t in tasks {
                t.abort();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::merge_over;
    use serde_json::json;

    #[test]
    fn the_deployed_configuration_merges_over_the_config_files() {
        let mut base = json!({"shadowDocumentSizeLimitBytes": 1024, "rateLimits": {"maxTotalLocalRequestsRate": 50}});
        merge_over(
            &mut base,
            &json!({"rateLimits": {"maxLocalRequestsPerSecondPerThing": 5}, "synchronize": {"direction": "deviceToCloud"}}),
        );
        assert_eq!(
            base,
            json!({"shadowDocumentSizeLimitBytes": 1024,
                   "rateLimits": {"maxTotalLocalRequestsRate": 50, "maxLocalRequestsPerSecondPerThing": 5},
                   "synchronize": {"direction": "deviceToCloud"}})
        );
        let mut base = json!({"a": 1});
        merge_over(&mut base, &json!({}));
        assert_eq!(
            base,
            json!({"a": 1}),
            "an empty deployed configuration keeps the file's"
        );
    }
}
