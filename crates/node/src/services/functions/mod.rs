//! Lambda function components. Registers the runner of `aws.greengrass.lambda` recipes
//! ([`runner::LambdaRunner`]), marks the Lambda built-ins a Lambda recipe depends on as
//! provided, feeds each running function the bus messages of its `PUB_SUB` event sources and
//! the cloud messages of its `IOT_CORE` ones (a subscription on the cloud service's
//! [`CloudLink`], restored after every reconnect), serves `function.invoke` for the functions
//! it runs, and reports their metrics (`component details`).
//!
//! Bounds: work per function is bounded by its pool (`maxQueueSize` queued +
//! `maxInstancesCount` running); each event source's bus subscription by the bus's own
//! default queue bounds, each cloud subscription by the link's receiver
//! ([`crate::services::cloud::SUBSCRIPTION_CAPACITY`], full → dropped, counted by the link);
//! a `function.invoke` payload by the control line (1 MiB).

pub mod legacy;
pub mod runner;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use lichen_bus::SubscribeOptions;
use lichen_core::control::{ControlReply, ControlRequest, ControlService, FunctionResult};
use lichen_core::handle::BoxFuture;
use lichen_core::{CoreError, CoreHandle, Metric};
use lichen_lambda::legacy::{
    Caller, LegacyServer, ROUTER_FUNCTION_ARN, SECRETS_MANAGER_FUNCTION_ARN, SHADOW_FUNCTION_ARN,
};
use lichen_lambda::{InvokeError, Pool, TopicSource};
use tokio::task::JoinHandle;

use crate::services::cloud::{CloudLink, CloudService};
use crate::{Service, ServiceContext, ServiceError};

/// The built-ins an imported Lambda recipe depends on, which this service stands in for.
/// TokenExchangeService is named by the recipe's hard dependency; lichen serves no AWS
/// credentials yet, so a function that calls AWS services gets none.
pub const LAMBDA_BUILTINS: &[&str] = &[
    "aws.greengrass.LambdaLauncher",
    "aws.greengrass.LambdaManager",
    "aws.greengrass.LambdaRuntimes",
    "aws.greengrass.TokenExchangeService",
    legacy::SUBSCRIPTION_ROUTER,
];

/// How often a running function's metrics are written to the core.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct FunctionsService {
    functions: Arc<Functions>,
}

impl FunctionsService {
    /// Without a cloud service: `IOT_CORE` event sources are logged as having no cloud.
    pub fn new() -> Self {
        Self::default()
    }

    /// `IOT_CORE` event sources subscribe through `cloud`'s link (which must start first).
    pub fn with_cloud(cloud: Arc<CloudService>) -> Self {
        FunctionsService {
            functions: Arc::new(Functions {
                cloud: Some(cloud),
                ..Default::default()
            }),
        }
    }
}

/// The functions running now, by component name.
#[derive(Default)]
pub struct Functions {
    running: Mutex<HashMap<String, Running>>,
    cloud: Option<Arc<CloudService>>,
    /// The v1 Lambda IPC API (`GG_DAEMON_PORT`), set when the service starts.
    legacy: OnceLock<LegacyServer>,
    /// Where the v1 runtime modules were written (`PYTHONPATH` of every instance).
    runtime_dir: OnceLock<PathBuf>,
}

struct Running {
    pool: Pool,
    function_arn: String,
    /// Its v1 API token (unregistered when it stops).
    token: Option<String>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a function's instances get for the v1 API and `greengrasssdk` (reference §2.2).
pub(crate) struct LegacyEnv {
    pub env: BTreeMap<String, String>,
    pub token: Option<String>,
    pub python_path: Option<PathBuf>,
}

impl Functions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The v1 environment of a function's instances; `svcuid` (the component's token, also
    /// its `AWS_CONTAINER_AUTHORIZATION_TOKEN`) authenticates it to the v1 API.
    pub(crate) fn legacy_env(
        &self,
        component: &str,
        function_arn: &str,
        svcuid: &str,
    ) -> LegacyEnv {
        let mut env = BTreeMap::new();
        let mut token = None;
        if let Some(server) = self.legacy.get() {
            let t = server.register(
                svcuid,
                Caller {
                    component: component.to_string(),
                    function_arn: function_arn.to_string(),
                },
            );
            let port = server.port().to_string();
            env.insert("GG_DAEMON_PORT".into(), port.clone());
            env.insert("AWS_GREENGRASS_LAMBDA_MESSAGE_PORT".into(), port);
            env.insert("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), t.clone());
            token = Some(t);
        }
        env.insert("MY_FUNCTION_ARN".into(), function_arn.to_string());
        env.insert("ROUTER_FUNCTION_ARN".into(), ROUTER_FUNCTION_ARN.into());
        env.insert("SHADOW_FUNCTION_ARN".into(), SHADOW_FUNCTION_ARN.into());
        env.insert(
            "SECRETS_MANAGER_FUNCTION_ARN".into(),
            SECRETS_MANAGER_FUNCTION_ARN.into(),
        );
        env.insert(
            "GGC_MAX_INTERFACE_VERSION".into(),
            legacy::INTERFACE_VERSION.into(),
        );
        LegacyEnv {
            env,
            token,
            python_path: self.runtime_dir.get().cloned(),
        }
    }

    /// A pool started: subscribe its event sources and report its metrics.
    pub(crate) fn started(
        &self,
        core: &CoreHandle,
        pool: Pool,
        function_arn: String,
        token: Option<String>,
    ) {
        let name = pool.component().to_string();
        let mut tasks = Vec::new();
        for source in &pool.config().event_sources {
            match source.source {
                TopicSource::PubSub => {
                    let options =
                        SubscribeOptions::new(source.topic.clone(), format!("component:{name}"));
                    match core.bus().subscribe(options) {
                        Ok(sub) => tasks.push(tokio::spawn(feed(sub, pool.clone()))),
                        Err(e) => {
                            tracing::warn!(component = %name, topic = %source.topic, error = %e, "cannot subscribe the function's event source");
                        }
                    }
                }
                TopicSource::IotCore => match self.cloud.as_ref().and_then(|c| c.link()) {
                    Some(link) => tasks.push(tokio::spawn(feed_from_cloud(
                        link,
                        source.topic.clone(),
                        pool.clone(),
                    ))),
                    None => {
                        tracing::warn!(component = %name, topic = %source.topic, "IOT_CORE event source: the core has no cloud connection configured (no cloud section), so the function gets no messages from this topic");
                    }
                },
            }
        }
        tasks.push(tokio::spawn(report_metrics(core.clone(), pool.clone())));
        let running = Running {
            pool,
            function_arn,
            token,
            tasks,
        };
        let new_token = running.token.clone();
        let old = self.lock().insert(name, running);
        if let Some(old) = old {
            // The same component's token (its SVCUID) now names the new pool.
            if old.token != new_token {
                self.forget_token(&old);
            }
            tokio::spawn(stop_running(old));
        }
    }

    pub(crate) async fn stop(&self, name: &str) {
        let running = self.lock().remove(name);
        if let Some(running) = running {
            self.forget_token(&running);
            stop_running(running).await;
        }
    }

    fn forget_token(&self, running: &Running) {
        if let (Some(server), Some(token)) = (self.legacy.get(), &running.token) {
            server.unregister(token);
        }
    }

    fn pool(&self, name: &str) -> Option<Pool> {
        self.lock().get(name).map(|r| r.pool.clone())
    }

    /// The function `arn` names: its exact ARN, or any version of it for an unqualified one.
    pub(crate) fn pool_by_arn(&self, arn: &str) -> Option<Pool> {
        let running = self.lock();
        running
            .values()
            .find(|r| r.function_arn == arn)
            .or_else(|| {
                running.values().find(|r| {
                    r.function_arn
                        .strip_prefix(arn)
                        .is_some_and(|rest| rest.starts_with(':') && !rest[1..].contains(':'))
                })
            })
            .map(|r| r.pool.clone())
    }
}

async fn stop_running(running: Running) {
    for t in &running.tasks {
        t.abort();
    }
    running.pool.stop().await;
}

/// Turns each bus message into an invocation. The result of an event-triggered invocation
/// goes nowhere (as in Greengrass); failures are logged. Spawned per message: each task
/// either waits in the pool's bounded queue or is refused at once.
async fn feed(sub: lichen_bus::Subscription, pool: Pool) {
    while let Some(message) = sub.recv().await {
        let payload = message.payload.to_bytes().to_vec();
        invoke_event(&pool, message.topic.to_string(), payload);
    }
}

/// An `IOT_CORE` event source: a subscription on the cloud link (QoS 1, as Greengrass's
/// Lambda manager asks; registered even while disconnected and restored after every
/// reconnect). A filter the cloud refuses is logged and the source stays silent.
async fn feed_from_cloud(link: CloudLink, filter: String, pool: Pool) {
    let mut rx = match link
        .subscribe(&filter, lichen_mqtt_client::QoS::AtLeastOnce)
        .await
    {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(component = %pool.component(), topic = %filter, error = %e, "cannot subscribe the function's IOT_CORE event source");
            return;
        }
    };
    tracing::debug!(component = %pool.component(), topic = %filter, "IOT_CORE event source subscribed");
    while let Some(publish) = rx.recv().await {
        invoke_event(&pool, publish.topic.to_string(), publish.payload.to_vec());
    }
}

/// One event-triggered invocation, spawned: it either waits in the pool's bounded queue or
/// is refused at once.
fn invoke_event(pool: &Pool, topic: String, payload: Vec<u8>) {
    let pool = pool.clone();
    tokio::spawn(async move {
        match pool.invoke(payload, Some(topic.clone())).await {
            Ok(r) if r.is_error() => {
                let body = r.body();
                let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_string();
                tracing::warn!(component = %pool.component(), topic = %topic, error = %text, "function invocation failed");
            }
            Ok(_) => {}
            // Logged and counted by the pool.
            Err(InvokeError::QueueFull { .. }) => {}
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "function invocation refused")
            }
        }
    });
}

fn metrics(pool: &Pool) -> Vec<Metric> {
    let s = pool.stats();
    let m = |name: &str, unit: &str, value: f64| Metric {
        name: name.to_string(),
        unit: unit.to_string(),
        value,
        timestamp: 0,
    };
    vec![
        m("FunctionInvocations", "COUNT", s.invocations as f64),
        m("FunctionErrors", "COUNT", s.errors as f64),
        m("FunctionTimeouts", "COUNT", s.timeouts as f64),
        m("FunctionRejected", "COUNT", s.rejected as f64),
        m("FunctionCrashes", "COUNT", s.crashes as f64),
        m("FunctionUnresponsive", "COUNT", s.unresponsive as f64),
        m("FunctionQueueDepth", "COUNT", s.queue_depth as f64),
        m("FunctionInstances", "COUNT", s.instances as f64),
        m(
            "FunctionLastLatency",
            "SECONDS",
            s.last_latency_ms as f64 / 1000.0,
        ),
        m("FunctionMeanLatency", "SECONDS", s.mean_latency_ms / 1000.0),
    ]
}

async fn report_metrics(core: CoreHandle, pool: Pool) {
    let mut tick = tokio::time::interval(METRICS_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = core.put_component_metrics(pool.component(), metrics(&pool)) {
            tracing::debug!(component = %pool.component(), error = %e, "cannot record function metrics");
        }
    }
}

impl Service for FunctionsService {
    fn name(&self) -> &str {
        "functions"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            for builtin in LAMBDA_BUILTINS {
                ctx.core.provide_builtin(builtin);
            }
            match legacy::write_runtime(ctx.layout.root()) {
                Ok(dir) => {
                    let _ = self.functions.runtime_dir.set(dir);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the greengrasssdk runtime modules: v1-style functions will not import greengrasssdk");
                }
            }
            let router = Arc::new(legacy::LegacyRouter {
                core: ctx.core.clone(),
                functions: Arc::downgrade(&self.functions),
            });
            let server = LegacyServer::start(router).await.map_err(|e| {
                ServiceError::new(
                    "functions",
                    format!("the Lambda IPC API (GG_DAEMON_PORT): {e}"),
                )
            })?;
            tracing::info!(
                port = server.port(),
                "Lambda IPC API for greengrasssdk listening"
            );
            let _ = self.functions.legacy.set(server);
            ctx.core.register_runner(
                lichen_recipe::ComponentType::Lambda.as_str(),
                Arc::new(runner::LambdaRunner {
                    core: ctx.core.clone(),
                    functions: self.functions.clone(),
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
            let Some(pool) = self.functions.pool(&component) else {
                return Err(CoreError::ComponentNotFound(component));
            };
            let result = pool
                .invoke(payload.into_bytes(), topic)
                .await
                .map_err(|e| match e {
                    InvokeError::NotJson { .. } => CoreError::InvalidArgument(e.to_string()),
                    other => CoreError::Other(other.to_string()),
                })?;
            let body = result.body();
            let (text, base64) = match String::from_utf8(body) {
                Ok(text) => (text, false),
                Err(e) => (
                    base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                    true,
                ),
            };
            Ok(ControlReply::FunctionResult(FunctionResult {
                result: text,
                base64,
                error: result.is_error(),
                duration_ms: result.duration.as_millis() as u64,
            }))
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let all: Vec<Running> = self.functions.lock().drain().map(|(_, r)| r).collect();
            for running in all {
                self.functions.forget_token(&running);
                stop_running(running).await;
            }
        })
    }
}
