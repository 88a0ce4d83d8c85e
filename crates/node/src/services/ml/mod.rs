//! The ML inference service (issue 15): ONNX models deployed as components, served over the
//! local bus, `lichen ml run` and `ml.list`.
//!
//! **Models are components.** A component whose configuration has a `Model` section (see
//! `lichen_ml::spec`) declares a model; its `File` is one of the component version's
//! artifacts. The service loads it (optimized once, shared by every request) when the
//! component reaches STARTING/RUNNING/FINISHED with a version or declaration it has not
//! loaded, and when its configuration changes. A model that cannot load is reported ERRORED
//! for the component (again each time it comes back up, so it ends BROKEN), which fails the
//! deployment within its stability window and rolls it back — give model components a
//! lifecycle that keeps them RUNNING (e.g. `Startup: {Script: "true"}`); a component with
//! no lifecycle is FINISHED and ignores reports, so its broken version is only logged. While
//! a new version fails, the model loaded before it keeps serving; after a rollback the
//! previous version is loaded again (it is still in the store).
//!
//! **Topics** (local bus; IPC components publish and subscribe with their pubsub policy,
//! MQTT devices through the bridge's mappings):
//! - requests: `lichen/ml/<model>/infer` — JSON or binary, as `lichen_ml::request` says;
//! - replies: the request's `replyTo` if it is `lichen/ml/<model>/result` or under it
//!   (nothing else: the service publishes nowhere its callers could not), else
//!   `lichen/ml/<model>/result`; the reply echoes the request's `id`.
//!
//! Bounds: the request subscription queues 256 messages / 64 MiB (the bus drops the oldest
//! beyond); at most [`MAX_IN_FLIGHT`] requests are being prepared or run at once across all
//! models (more are answered `QueueFull`); per model, `QueueDepth` wait and `Concurrency`
//! run; a request over its model's `MaxRequestBytes` is refused before it is decoded.
//!
//! **Metrics** per model, as the component's metrics (`component details`) every
//! [`METRICS_EVERY`]: `ml.requests`, `ml.errors`, `ml.queueFull` (COUNT), `ml.latencyP50`,
//! `ml.latencyP90`, `ml.latencyP99` (SECONDS); logged once a minute when they changed.

mod periodic;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use lichen_bus::{Message, Payload, SubscribeOptions};
use lichen_core::control::{ControlReply, ControlRequest, ControlService};
use lichen_core::handle::BoxFuture;
use lichen_core::handle::Metric;
use lichen_core::{CoreError, CoreHandle, LifecycleState, ReportedState};
use lichen_ml::request::error_reply;
use lichen_ml::{Engine, InferRequest, MlError, ModelRunner, ModelSpec, TractEngine};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::service::{Service, ServiceContext, ServiceError};

pub const REQUEST_FILTER: &str = "lichen/ml/+/infer";
pub const MAX_IN_FLIGHT: usize = 64;
pub const METRICS_EVERY: Duration = Duration::from_secs(5);
const ORIGIN: &str = "service:ml";

/// What the service holds for one model component.
struct Loaded {
    runner: Arc<ModelRunner>,
    periodic: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    /// Model name → the component serving it.
    models: BTreeMap<String, String>,
    /// Component → its loaded model.
    components: BTreeMap<String, Loaded>,
    /// Component → (version, declaration) that failed to load, and why.
    failed: BTreeMap<String, (String, ModelSpec, String)>,
}

pub struct MlService {
    engine: Arc<dyn Engine>,
    state: Arc<Mutex<State>>,
    /// Serializes loads (one component at a time; loading is CPU-bound and rare).
    reconcile: tokio::sync::Mutex<()>,
    core: Mutex<Option<CoreHandle>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for MlService {
    fn default() -> Self {
        Self::new()
    }
}

impl MlService {
    pub fn new() -> Self {
        Self::with_engine(Arc::new(TractEngine))
    }

    /// With another backend (an accelerator one, later).
    pub fn with_engine(engine: Arc<dyn Engine>) -> Self {
        MlService {
            engine,
            state: Default::default(),
            reconcile: Default::default(),
            core: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// The runner serving `model`, if loaded.
    pub fn runner(&self, model: &str) -> Option<Arc<ModelRunner>> {
        let state = self.state.lock().ok()?;
        let component = state.models.get(model)?;
        state.components.get(component).map(|l| l.runner.clone())
    }

    /// The loaded models, described (inputs, outputs, metrics).
    pub fn describe(&self) -> Value {
        let state = match self.state.lock() {
            Ok(s) => s,
            Err(_) => return json!([]),
        };
        let mut out: Vec<Value> = state
            .components
            .iter()
            .map(|(c, l)| {
                let mut d = l.runner.describe();
                d["component"] = json!(c);
                d
            })
            .collect();
        for (c, (version, spec, reason)) in &state.failed {
            out.push(
                json!({"component": c, "name": spec.name, "version": version, "loadError": reason}),
            );
        }
        Value::Array(out)
    }

    /// Runs one request (the request-and-reply call for Rust callers and `ml.run`).
    pub async fn infer(&self, model: &str, payload: &[u8]) -> Result<Value, MlError> {
        let runner = self
            .runner(model)
            .ok_or_else(|| MlError::UnknownModel(model.to_string()))?;
        let request = InferRequest::parse(payload, runner.spec.max_request_bytes)?;
        let id = request.id.clone();
        let inference = runner.infer(request).await?;
        Ok(inference.to_json(id.as_deref(), model, &runner.version))
    }

    /// Loads, reloads or unloads the model of `component` to match its version and
    /// configuration. `came_up`: the component just reached a running state (a failed load
    /// is reported again).
    async fn reconcile(
        &self,
        core: &CoreHandle,
        bus: &lichen_bus::Bus,
        component: &str,
        came_up: bool,
    ) {
        let _one_at_a_time = self.reconcile.lock().await;
        let details = match core.component_details(component) {
            Ok(d) => Some(d),
            Err(CoreError::ComponentNotFound(_)) => None,
            Err(e) => {
                tracing::warn!(component, error = %e, "ml: reading the component");
                return;
            }
        };
        let spec = match details
            .as_ref()
            .map(|d| ModelSpec::from_component_config(component, &d.configuration))
        {
            None | Some(Ok(None)) => {
                self.unload(component);
                return;
            }
            Some(Ok(Some(spec))) => Ok(spec),
            Some(Err(e)) => Err(e),
        };
        let Some(details) = details else { return };
        let version = details.version.clone();
        let spec = match spec {
            Ok(s) => s,
            Err(e) => {
                self.fail(core, component, &version, None, e.to_string(), came_up);
                return;
            }
        };
        {
            let state = match self.state.lock() {
                Ok(s) => s,
                Err(_) => return,
            };
            if let Some(l) = state.components.get(component)
                && l.runner.version == version
                && l.runner.spec == spec
            {
                return;
            }
            if let Some((v, s, reason)) = state.failed.get(component)
                && *v == version
                && *s == spec
            {
                if came_up {
                    let reason = reason.clone();
                    drop(state);
                    report_errored(core, component, &reason);
                }
                return;
            }
            if let Some(owner) = state.models.get(&spec.name)
                && owner != component
            {
                let reason = format!("model name {:?} is already served by {owner}", spec.name);
                drop(state);
                self.fail(core, component, &version, Some(spec), reason, came_up);
                return;
            }
        }
        let artifacts = core.layout().artifacts_dir(component, &version);
        // A configuration change arrives before a deployment installs the new version: the
        // version read now may be the old one. Load then only what that version holds; the
        // new version is loaded when it comes up.
        if !came_up && !artifacts.join(&spec.file).is_file() {
            tracing::debug!(component, version, file = %spec.file, "ml: waiting for the version that holds the model");
            return;
        }
        let engine = self.engine.clone();
        let (load_spec, load_version) = (spec.clone(), version.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            ModelRunner::load(engine.as_ref(), load_spec, &artifacts, &load_version)
        })
        .await
        .unwrap_or_else(|_| Err(MlError::Run("the model loader panicked".into())));
        match loaded {
            Ok(runner) => {
                tracing::info!(component, model = %spec.name, version = %version, inputs = ?runner.model().inputs().iter().map(|i| format!("{} {} {}", i.name, i.dtype, i.shape_text())).collect::<Vec<_>>(), "ml: model loaded");
                let periodic =
                    periodic::start(core, bus, component, &details.configuration, runner.clone());
                if let Ok(mut state) = self.state.lock() {
                    state.failed.remove(component);
                    if let Some(old) = state.components.remove(component) {
                        state.models.remove(&old.runner.spec.name);
                        if let Some(p) = old.periodic {
                            p.abort();
                        }
                    }
                    state
                        .models
                        .insert(spec.name.clone(), component.to_string());
                    state
                        .components
                        .insert(component.to_string(), Loaded { runner, periodic });
                }
            }
            Err(e) => self.fail(
                core,
                component,
                &version,
                Some(spec),
                e.to_string(),
                came_up,
            ),
        }
    }

    /// Records a model that cannot load; `report`: tell the component's lifecycle (ERRORED),
    /// which fails a deployment that is starting it.
    fn fail(
        &self,
        core: &CoreHandle,
        component: &str,
        version: &str,
        spec: Option<ModelSpec>,
        reason: String,
        report: bool,
    ) {
        let serving = self.state.lock().ok().and_then(|s| {
            s.components
                .get(component)
                .map(|l| l.runner.version.clone())
        });
        tracing::error!(component, version, error = %reason, still_serving = ?serving, "ml: model cannot load; the component is reported ERRORED");
        if let (Some(spec), Ok(mut state)) = (spec, self.state.lock()) {
            state.failed.insert(
                component.to_string(),
                (version.to_string(), spec, reason.clone()),
            );
        }
        if report {
            report_errored(core, component, &reason);
        }
    }

    fn unload(&self, component: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.failed.remove(component);
            if let Some(old) = state.components.remove(component) {
                state.models.remove(&old.runner.spec.name);
                if let Some(p) = old.periodic {
                    p.abort();
                }
                tracing::info!(component, model = %old.runner.spec.name, "ml: model unloaded");
            }
        }
    }

    fn runners(&self) -> Vec<(String, Arc<ModelRunner>)> {
        self.state
            .lock()
            .map(|s| {
                s.components
                    .iter()
                    .map(|(c, l)| (c.clone(), l.runner.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn report_errored(core: &CoreHandle, component: &str, reason: &str) {
    if let Err(e) = core.report_state(component, ReportedState::Errored) {
        tracing::warn!(component, error = %e, reason, "ml: could not report the component ERRORED");
    }
}

/// The model named by a request topic `lichen/ml/<model>/infer`.
fn model_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("lichen/ml/")?
        .strip_suffix("/infer")
        .filter(|m| !m.contains('/'))
}

/// Where the reply to a request for `model` goes.
fn reply_topic(model: &str, asked: Option<&str>) -> String {
    let default = format!("lichen/ml/{model}/result");
    match asked {
        Some(t)
            if t == default
                || (t.starts_with(&default) && t.as_bytes().get(default.len()) == Some(&b'/')) =>
        {
            if lichen_bus::validate_topic_name(t).is_ok() {
                t.to_string()
            } else {
                default
            }
        }
        _ => default,
    }
}

async fn serve_requests(
    service: Arc<MlService>,
    bus: lichen_bus::Bus,
    subscription: lichen_bus::Subscription,
) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(message) = subscription.recv().await {
        let Some(model) = model_of(&message.topic).map(str::to_string) else {
            continue;
        };
        let payload = match &message.payload {
            Payload::Binary(b) => b.to_vec(),
            Payload::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
        };
        let (service, bus) = (service.clone(), bus.clone());
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let e = MlError::QueueFull {
                model: model.clone(),
                depth: MAX_IN_FLIGHT,
                running: MAX_IN_FLIGHT,
            };
            publish(
                &bus,
                &reply_topic(&model, None),
                error_reply(None, &model, &e),
            );
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let (id, reply_to) = peek_addressing(&payload);
            let reply = match service.infer(&model, &payload).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(model = %model, origin = %message.origin, error = %e, "ml: request refused");
                    error_reply(id.as_deref(), &model, &e)
                }
            };
            publish(&bus, &reply_topic(&model, reply_to.as_deref()), reply);
        });
    }
}

/// The `id` and `replyTo` of a request, for error replies (best effort; bounded by the
/// request size check in `infer`).
fn peek_addressing(payload: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Addr {
        id: Option<String>,
        #[serde(rename = "replyTo")]
        reply_to: Option<String>,
    }
    let header: &[u8] =
        if payload.starts_with(lichen_ml::request::ENVELOPE_MAGIC) && payload.len() >= 8 {
            let len = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]) as usize;
            payload
                .get(8..8usize.saturating_add(len.min(lichen_ml::request::MAX_HEADER_BYTES)))
                .unwrap_or(&[])
        } else if payload.len() <= lichen_ml::spec::MAX_REQUEST_BYTES_LIMIT {
            payload
        } else {
            &[]
        };
    match serde_json::from_slice::<Addr>(header) {
        Ok(a) => (
            a.id.filter(|i| i.len() <= lichen_ml::request::MAX_ID_BYTES),
            a.reply_to,
        ),
        Err(_) => (None, None),
    }
}

fn publish(bus: &lichen_bus::Bus, topic: &str, reply: Value) {
    if let Err(e) = bus.publish(Message::new(topic, Payload::Json(reply), ORIGIN)) {
        tracing::warn!(topic, error = %e, "ml: could not publish a reply");
    }
}

async fn watch_lifecycle(service: Arc<MlService>, core: CoreHandle, bus: lichen_bus::Bus) {
    let mut events = core.subscribe_lifecycle();
    loop {
        match events.recv().await {
            Ok(ev) => {
                if matches!(
                    ev.state,
                    LifecycleState::Starting | LifecycleState::Running | LifecycleState::Finished
                ) {
                    service.reconcile(&core, &bus, &ev.component, true).await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                for c in core.list_components() {
                    service
                        .reconcile(&core, &bus, &c.component_name, false)
                        .await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn report_metrics(service: Arc<MlService>, core: CoreHandle) {
    let mut tick = tokio::time::interval(METRICS_EVERY);
    let mut logged: BTreeMap<String, (u64, std::time::Instant)> = BTreeMap::new();
    loop {
        tick.tick().await;
        for (component, runner) in service.runners() {
            let s = &runner.stats;
            let (requests, errors) = (
                s.requests.load(Ordering::Relaxed),
                s.errors.load(Ordering::Relaxed),
            );
            let [p50, p90, p99] = s.percentiles();
            let metric = |name: &str, unit: &str, value: f64| Metric {
                name: name.into(),
                unit: unit.into(),
                value,
                timestamp: 0,
            };
            let metrics = vec![
                metric("ml.requests", "COUNT", requests as f64),
                metric("ml.errors", "COUNT", errors as f64),
                metric(
                    "ml.queueFull",
                    "COUNT",
                    s.rejected_queue_full.load(Ordering::Relaxed) as f64,
                ),
                metric("ml.latencyP50", "SECONDS", p50 as f64 / 1e6),
                metric("ml.latencyP90", "SECONDS", p90 as f64 / 1e6),
                metric("ml.latencyP99", "SECONDS", p99 as f64 / 1e6),
            ];
            if let Err(e) = core.put_component_metrics(&component, metrics) {
                tracing::debug!(component, error = %e, "ml: metrics not recorded");
            }
            let last = logged.get(&component).copied();
            if last.is_none_or(|(n, at)| n != requests && at.elapsed() >= Duration::from_secs(60))
                && requests > 0
            {
                tracing::info!(component, model = %runner.spec.name, requests, errors, p50_us = p50, p90_us = p90, p99_us = p99, "ml: model metrics");
                logged.insert(component, (requests, std::time::Instant::now()));
            }
        }
    }
}

impl Service for Arc<MlService> {
    fn name(&self) -> &str {
        "ml"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            if let Ok(mut core) = self.core.lock() {
                *core = Some(ctx.core.clone());
            }
            let mut options = SubscribeOptions::new(REQUEST_FILTER, ORIGIN);
            options.queue_capacity = 256;
            options.queue_bytes = 64 * 1024 * 1024;
            let subscription = ctx
                .bus
                .subscribe(options)
                .map_err(|e| ServiceError::new("ml", e.to_string()))?;
            for c in ctx.core.list_components() {
                self.reconcile(&ctx.core, &ctx.bus, &c.component_name, false)
                    .await;
            }
            let tasks = vec![
                tokio::spawn(serve_requests(self.clone(), ctx.bus.clone(), subscription)),
                tokio::spawn(watch_lifecycle(
                    self.clone(),
                    ctx.core.clone(),
                    ctx.bus.clone(),
                )),
                tokio::spawn(report_metrics(self.clone(), ctx.core.clone())),
            ];
            if let Ok(mut t) = self.tasks.lock() {
                t.extend(tasks);
            }
            Ok(())
        })
    }

    fn follows(&self) -> &[&str] {
        // Any component may declare a model.
        &["*"]
    }

    fn apply_configuration<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        component: Option<&'a str>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match component {
                Some(c) => self.reconcile(&ctx.core, &ctx.bus, c, false).await,
                None => {
                    for c in ctx.core.list_components() {
                        self.reconcile(&ctx.core, &ctx.bus, &c.component_name, false)
                            .await;
                    }
                }
            }
        })
    }

    fn control_service(&self) -> Option<ControlService> {
        Some(ControlService::Ml)
    }

    fn control<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(async move {
            match request {
                ControlRequest::MlRun { model, input } => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(input.as_bytes())
                        .map_err(|e| {
                            CoreError::InvalidArgument(format!("ml.run: input is not base64: {e}"))
                        })?;
                    match self.infer(&model, &bytes).await {
                        Ok(v) => Ok(ControlReply::Ml(v)),
                        Err(e @ MlError::UnknownModel(_)) => {
                            Err(CoreError::InvalidArgument(e.to_string()))
                        }
                        Err(e) => Err(CoreError::InvalidArgument(format!("model {model}: {e}"))),
                    }
                }
                ControlRequest::MlList {} => Ok(ControlReply::Ml(self.describe())),
                other => Err(CoreError::NotSupported(format!(
                    "control operation {:?}",
                    other.op()
                ))),
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Ok(mut tasks) = self.tasks.lock() {
                for t in tasks.drain(..) {
                    t.abort();
                }
            }
            if let Ok(mut state) = self.state.lock() {
                for (_, l) in std::mem::take(&mut state.components) {
                    if let Some(p) = l.periodic {
                        p.abort();
                    }
                }
                state.models.clear();
            }
        })
    }
}
