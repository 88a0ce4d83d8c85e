//! The WASM function service: runs `lichen.wasm` components in-process with `lichen-wasm`.
//!
//! A `lichen.wasm` recipe's `Run` step names the module file (`{artifacts:path}/fn.wasm`);
//! its other steps (Install, Shutdown, …) are scripts run by the process runner as usual.
//! When the actor starts `Run`, [`WasmRunner`] compiles the module, instantiates it once on
//! trial (a module that cannot start fails the step, naming the module: after the retries
//! the component is BROKEN and its deployment fails), starts the function's worker and
//! subscribes its trigger topics; the component is RUNNING until it is stopped.
//!
//! Configuration (the component's own, all optional):
//! - `pubsubTopics`: `{"0": {"topic": "sensors/+", "type": "PUB_SUB"}, …}` (the Lambda
//!   shape): `PUB_SUB` topics are bus subscriptions, `IOT_CORE` ones subscriptions on the
//!   cloud service's link (QoS 1, restored after every reconnect; without a `cloud` section
//!   they are logged and stay silent);
//! - `maxQueueSize` (default 256, at most 10,000): events waiting for the function; a full
//!   queue drops the event (counted as `Dropped`, logged);
//! - `memoryLimitBytes` (default 16 MiB), `fuelPerInvocation` (default 100,000,000),
//!   `maxPayloadBytes` (default 1 MiB);
//! - `grantDirectory`: an absolute host directory preopened as `/data` (default: none).
//!
//! Publishing is authorized by the component's `accessControl` `aws.greengrass.ipc.pubsub`
//! policies (lichen-ipc's [`PolicyCache`], as for IPC). Its own publishes never trigger it
//! (`no_local`). `function.invoke` (control) runs one invocation and returns its result.

mod worker;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use lichen_bus::{Bus, Payload, SubscribeOptions};
use lichen_core::control::{ControlReply, ControlRequest, ControlService, FunctionResult};
use lichen_core::handle::BoxFuture;
use lichen_core::lifecycle::launch::{LaunchContext, Launched, Runner, StepLaunch};
use lichen_core::{CoreError, CoreHandle};
use lichen_ipc::authz::PolicyCache;
use lichen_wasm::{FunctionConfig, FunctionModule, Limits, WasmEngine};
use serde_json::Value;
use tokio::task::JoinHandle;

use self::worker::{FunctionWorker, Job, NodeHost};
use crate::service::{Service, ServiceContext, ServiceError};
use crate::services::cloud::CloudService;

/// The recipe `ComponentType` this service runs.
pub const COMPONENT_TYPE: &str = "lichen.wasm";
/// Default and largest `maxQueueSize`.
pub const DEFAULT_QUEUE: usize = 256;
pub const MAX_QUEUE: usize = 10_000;
/// How long `function.invoke` waits for its result (queueing included).
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Trigger topics per function.
pub const MAX_TRIGGERS: usize = 64;

pub struct WasmService {
    inner: Arc<Inner>,
}

struct Inner {
    engine: WasmEngine,
    /// Whose link `IOT_CORE` triggers subscribe through.
    cloud: Option<Arc<CloudService>>,
    /// Set by [`Service::shutdown`]: functions stopped from then on are not failures.
    stopping: AtomicBool,
    started: Mutex<Option<Started>>,
    functions: Mutex<HashMap<String, Arc<FunctionWorker>>>,
}

#[derive(Clone)]
struct Started {
    core: CoreHandle,
    bus: Bus,
    policies: Arc<PolicyCache>,
}

impl Default for WasmService {
    fn default() -> Self {
        Self::new()
    }
}

impl WasmService {
    /// Without a cloud service: `IOT_CORE` triggers are logged as having no cloud.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// `IOT_CORE` triggers subscribe through `cloud`'s link (which must start first).
    pub fn with_cloud(cloud: Arc<CloudService>) -> Self {
        Self::build(Some(cloud))
    }

    fn build(cloud: Option<Arc<CloudService>>) -> Self {
        WasmService {
            inner: Arc::new(Inner {
                engine: WasmEngine::new(),
                cloud,
                stopping: AtomicBool::new(false),
                started: Mutex::new(None),
                functions: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    fn started(&self) -> Option<Started> {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn function(&self, name: &str) -> Option<Arc<FunctionWorker>> {
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

/// A function's settings, read from its configuration when it starts.
struct Settings {
    triggers: Vec<String>,
    /// `IOT_CORE` topic filters.
    cloud_triggers: Vec<String>,
    queue: usize,
    config: FunctionConfig,
}

fn number(config: &Value, key: &str, default: u64) -> Result<u64, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("configuration {key}: expected a positive integer, got {v}")),
    }
}

fn read_settings(component: &str, config: &Value) -> Result<Settings, String> {
    let mut triggers = Vec::new();
    let mut cloud_triggers = Vec::new();
    if let Some(topics) = config.get("pubsubTopics").and_then(Value::as_object) {
        for (key, entry) in topics {
            let topic = entry.get("topic").and_then(Value::as_str).ok_or_else(|| {
                format!("configuration pubsubTopics.{key}.topic: expected a topic")
            })?;
            let kind = entry
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("PUB_SUB");
            if kind.eq_ignore_ascii_case("PUB_SUB") {
                triggers.push(topic.to_string());
            } else if kind.eq_ignore_ascii_case("IOT_CORE") {
                cloud_triggers.push(topic.to_string());
            } else {
                return Err(format!(
                    "{component}: configuration pubsubTopics.{key}.type: expected PUB_SUB or IOT_CORE, got {kind}"
                ));
            }
        }
    }
    if triggers.len() + cloud_triggers.len() > MAX_TRIGGERS {
        return Err(format!(
            "configuration pubsubTopics: {} topics, at most {MAX_TRIGGERS}",
            triggers.len() + cloud_triggers.len()
        ));
    }
    let defaults = Limits::default();
    let limits = Limits {
        max_memory_bytes: number(config, "memoryLimitBytes", defaults.max_memory_bytes as u64)?
            as usize,
        fuel_per_invocation: number(config, "fuelPerInvocation", defaults.fuel_per_invocation)?,
        max_payload_bytes: number(config, "maxPayloadBytes", defaults.max_payload_bytes as u64)?
            as usize,
        ..defaults
    };
    let queue = number(config, "maxQueueSize", DEFAULT_QUEUE as u64)? as usize;
    if queue > MAX_QUEUE {
        return Err(format!(
            "configuration maxQueueSize: {queue} is over {MAX_QUEUE}"
        ));
    }
    let dir = match config.get("grantDirectory") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if Path::new(s).is_absolute() => Some(PathBuf::from(s)),
        Some(v) => {
            return Err(format!(
                "configuration grantDirectory: expected an absolute path, got {v}"
            ));
        }
    };
    Ok(Settings {
        triggers,
        cloud_triggers,
        queue,
        config: FunctionConfig { limits, dir },
    })
}

/// Starts `lichen.wasm` components' Run step as a function; their other steps go to the
/// process runner.
struct WasmRunner {
    inner: Arc<Inner>,
}

impl Runner for WasmRunner {
    fn launch(
        &self,
        ctx: &dyn LaunchContext,
        launch: StepLaunch<'_>,
    ) -> Result<Box<dyn Launched>, String> {
        let started = self
            .inner
            .started()
            .ok_or_else(|| "the WASM service is not running".to_string())?;
        if launch.step_name != "run" {
            return started.core.process_runner().launch(ctx, launch);
        }
        let name = launch.spec.name.clone();
        let config = started
            .core
            .get_configuration(&name, &[])
            .unwrap_or(Value::Null);
        let settings = read_settings(&name, &config)?;
        let path = PathBuf::from(launch.step.script.trim());
        if !path.is_absolute() {
            return Err(format!(
                "the Run step of a {COMPONENT_TYPE} component names its module file, e.g. \
                 {{artifacts:path}}/function.wasm (got {:?})",
                launch.step.script.trim()
            ));
        }
        let module_name = format!("{name} ({})", path.display());
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("WASM module {module_name}: reading it: {e}"))?;
        let module =
            FunctionModule::compile(&self.inner.engine, &module_name, &bytes, settings.config)
                .map_err(|e| e.to_string())?;
        let slot = ctx
            .component(&name)
            .ok_or_else(|| format!("component {name} has no slot"))?;
        let origin: Arc<str> = Arc::from(format!("component:{name}"));
        let host = Arc::new(NodeHost {
            component: name.clone(),
            origin: origin.clone(),
            bus: started.bus.clone(),
            policies: started.policies.clone(),
            core: started.core.clone(),
            slot,
        });
        let first = module.trial(host.clone()).map_err(|e| e.to_string())?;
        let module = Arc::new(module);
        let worker = FunctionWorker::start(module, host.clone(), first, settings.queue)
            .map_err(|e| format!("starting the worker of {name}: {e}"))?;
        let mut tasks = Vec::new();
        for filter in &settings.triggers {
            let mut options = SubscribeOptions::new(filter.clone(), origin.clone());
            // Its own publishes must not trigger it again (no loop through the bus).
            options.no_local = true;
            let subscription = match started.bus.subscribe(options) {
                Ok(s) => s,
                Err(e) => {
                    tasks.iter().for_each(|t: &JoinHandle<()>| t.abort());
                    worker.request_stop();
                    return Err(format!("configuration pubsubTopics: topic {filter}: {e}"));
                }
            };
            let w = worker.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(message) = subscription.recv().await {
                    let payload = match &message.payload {
                        Payload::Binary(b) => b.to_vec(),
                        Payload::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
                    };
                    let _ = w.submit(Job {
                        topic: message.topic.to_string(),
                        payload,
                        reply: None,
                    });
                }
            }));
        }
        if !settings.cloud_triggers.is_empty() {
            match self.inner.cloud.as_ref().and_then(|c| c.link()) {
                Some(link) => {
                    for filter in &settings.cloud_triggers {
                        tasks.push(tokio::spawn(feed_from_cloud(
                            link.clone(),
                            name.clone(),
                            filter.clone(),
                            worker.clone(),
                        )));
                    }
                }
                None => tracing::warn!(
                    component = %name,
                    topics = ?settings.cloud_triggers,
                    "IOT_CORE triggers: the core has no cloud connection configured (no cloud section), so the function gets no messages from them"
                ),
            }
        }
        let previous = self
            .inner
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), worker.clone());
        if let Some(previous) = previous {
            // Not on the actor's task: the old queue may still hold work.
            drop(tokio::task::spawn_blocking(move || previous.request_stop()));
        }
        tracing::info!(
            component = %name,
            triggers = settings.triggers.len(),
            cloud_triggers = settings.cloud_triggers.len(),
            "WASM function started"
        );
        Ok(Box::new(LaunchedFunction {
            name,
            worker,
            tasks,
            inner: self.inner.clone(),
        }))
    }
}

/// An `IOT_CORE` trigger: each cloud message becomes a job (a full queue drops it, counted by
/// the worker). A filter the cloud refuses is logged and the trigger stays silent.
async fn feed_from_cloud(
    link: crate::services::cloud::CloudLink,
    component: String,
    filter: String,
    worker: Arc<FunctionWorker>,
) {
    let mut rx = match link
        .subscribe(&filter, lichen_mqtt_client::QoS::AtLeastOnce)
        .await
    {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(component = %component, topic = %filter, error = %e, "cannot subscribe the function's IOT_CORE trigger");
            return;
        }
    };
    while let Some(publish) = rx.recv().await {
        let _ = worker.submit(Job {
            topic: publish.topic.to_string(),
            payload: publish.payload.to_vec(),
            reply: None,
        });
    }
}

struct LaunchedFunction {
    name: String,
    worker: Arc<FunctionWorker>,
    tasks: Vec<JoinHandle<()>>,
    inner: Arc<Inner>,
}

impl Launched for LaunchedFunction {
    fn wait(&mut self) -> BoxFuture<'_, std::io::Result<ExitStatus>> {
        let mut stopped = self.worker.stopped.clone();
        Box::pin(async move {
            let reason = match stopped.wait_for(Option::is_some).await {
                Ok(r) => r.clone().unwrap_or_default(),
                Err(_) => "the worker ended".to_string(),
            };
            if self.inner.stopping.load(Ordering::Acquire) {
                // The node is stopping: the actor's own stop ends this step (end()), so the
                // stop must not look like the function failing (and be restarted).
                std::future::pending::<()>().await;
            }
            tracing::warn!(component = %self.name, reason, "WASM function stopped");
            // Exit status 1: the function ended without being asked to.
            Ok(ExitStatus::from_raw(1 << 8))
        })
    }

    fn end(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            for t in &self.tasks {
                t.abort();
            }
            {
                let mut functions = self
                    .inner
                    .functions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if functions
                    .get(&self.name)
                    .is_some_and(|w| Arc::ptr_eq(w, &self.worker))
                {
                    functions.remove(&self.name);
                }
            }
            let worker = self.worker.clone();
            let _ = tokio::task::spawn_blocking(move || {
                worker.request_stop();
                if let Some(thread) = worker.join() {
                    let _ = thread.join();
                }
            })
            .await;
        })
    }
}

fn function_result(outcome: worker::Reply, elapsed: Duration) -> FunctionResult {
    let duration_ms = elapsed.as_millis() as u64;
    match outcome {
        Ok(inv) => {
            let (result, base64) = match String::from_utf8(inv.result) {
                Ok(text) => (text, false),
                Err(e) => (
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                    true,
                ),
            };
            FunctionResult {
                result,
                base64,
                error: !inv.ok,
                duration_ms,
            }
        }
        Err(e) => FunctionResult {
            result: serde_json::json!({"errorType": e.kind(), "errorMessage": e.to_string()})
                .to_string(),
            base64: false,
            error: true,
            duration_ms,
        },
    }
}

impl Service for WasmService {
    fn name(&self) -> &str {
        "wasm"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let policies = PolicyCache::new(ctx.core.clone());
            // Ends by itself when the core's configuration channel closes.
            drop(policies.spawn_invalidator());
            *self.inner.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Started {
                core: ctx.core.clone(),
                bus: ctx.bus.clone(),
                policies,
            });
            ctx.core.register_runner(
                COMPONENT_TYPE,
                Arc::new(WasmRunner {
                    inner: self.inner.clone(),
                }),
            );
            Ok(())
        })
    }

    fn control_service(&self) -> Option<ControlService> {
        Some(ControlService::Functions)
    }

    fn control<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(async move {
            let ControlRequest::FunctionInvoke {
                component,
                payload,
                topic,
            } = request
            else {
                return Err(CoreError::NotSupported(format!(
                    "control operation {:?}",
                    request.op()
                )));
            };
            let worker = self
                .inner
                .function(&component)
                .ok_or(CoreError::ComponentNotFound(component.clone()))?;
            let started = Instant::now();
            let (tx, rx) = tokio::sync::oneshot::channel();
            worker
                .submit(Job {
                    topic: topic.unwrap_or_default(),
                    payload: payload.into_bytes(),
                    reply: Some(tx),
                })
                .map_err(|e| CoreError::Other(format!("function {component}: {e}")))?;
            let outcome = tokio::time::timeout(INVOKE_TIMEOUT, rx)
                .await
                .map_err(|_| {
                    CoreError::Other(format!(
                        "function {component}: no result within {}s",
                        INVOKE_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|_| CoreError::Other(format!("function {component} stopped")))?;
            Ok(ControlReply::FunctionResult(function_result(
                outcome,
                started.elapsed(),
            )))
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.inner.stopping.store(true, Ordering::Release);
            let workers: Vec<_> = self
                .inner
                .functions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .map(|(_, w)| w)
                .collect();
            let _ = tokio::task::spawn_blocking(move || {
                for w in &workers {
                    w.request_stop();
                }
                for w in workers {
                    if let Some(t) = w.join() {
                        let _ = t.join();
                    }
                }
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn triggers_split_by_type_and_an_unknown_type_is_refused() {
        let s = read_settings(
            "com.example.F",
            &json!({"pubsubTopics": {
                "0": {"topic": "local/+", "type": "PUB_SUB"},
                "1": {"topic": "cloud/#", "type": "IOT_CORE"},
                "2": {"topic": "default/type"}
            }}),
        )
        .unwrap();
        assert_eq!(s.triggers, vec!["local/+", "default/type"]);
        assert_eq!(s.cloud_triggers, vec!["cloud/#"]);
        let e = read_settings(
            "com.example.F",
            &json!({"pubsubTopics": {"0": {"topic": "x", "type": "KAFKA"}}}),
        )
        .err()
        .unwrap();
        assert!(
            e.contains("pubsubTopics.0.type") && e.contains("KAFKA"),
            "{e}"
        );
    }
}
