//! Lambda function components. Registers the runner of `aws.greengrass.lambda` recipes
//! ([`runner::LambdaRunner`]), marks the Lambda built-ins a Lambda recipe depends on as
//! provided, feeds each running function the bus messages of its `PUB_SUB` event sources,
//! serves `function.invoke` for the functions it runs, and reports their metrics
//! (`component details`).
//!
//! Bounds: work per function is bounded by its pool (`maxQueueSize` queued +
//! `maxInstancesCount` running); each event source's bus subscription by the bus's own
//! default queue bounds; a `function.invoke` payload by the control line (1 MiB).

pub mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use lichen_bus::SubscribeOptions;
use lichen_core::control::{ControlReply, ControlRequest, ControlService, FunctionResult};
use lichen_core::handle::BoxFuture;
use lichen_core::{CoreError, CoreHandle, Metric};
use lichen_lambda::{InvokeError, Pool, TopicSource};
use tokio::task::JoinHandle;

use crate::{Service, ServiceContext, ServiceError};

/// The built-ins an imported Lambda recipe depends on, which this service stands in for.
/// TokenExchangeService is named by the recipe's hard dependency; lichen serves no AWS
/// credentials yet, so a function that calls AWS services gets none.
pub const LAMBDA_BUILTINS: &[&str] = &[
    "aws.greengrass.LambdaLauncher",
    "aws.greengrass.LambdaManager",
    "aws.greengrass.LambdaRuntimes",
    "aws.greengrass.TokenExchangeService",
];

/// How often a running function's metrics are written to the core.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct FunctionsService {
    functions: Arc<Functions>,
}

impl FunctionsService {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The functions running now, by component name.
#[derive(Default)]
pub struct Functions {
    running: Mutex<HashMap<String, Running>>,
}

struct Running {
    pool: Pool,
    tasks: Vec<JoinHandle<()>>,
}

impl Functions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pool started: subscribe its event sources and report its metrics.
    pub(crate) fn started(&self, core: &CoreHandle, pool: Pool) {
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
                TopicSource::IotCore => {
                    tracing::warn!(component = %name, topic = %source.topic, "IOT_CORE event sources are not supported yet: the function gets no messages from this topic");
                }
            }
        }
        tasks.push(tokio::spawn(report_metrics(core.clone(), pool.clone())));
        let old = self.lock().insert(name, Running { pool, tasks });
        if let Some(old) = old {
            tokio::spawn(stop_running(old));
        }
    }

    pub(crate) async fn stop(&self, name: &str) {
        let running = self.lock().remove(name);
        if let Some(running) = running {
            stop_running(running).await;
        }
    }

    fn pool(&self, name: &str) -> Option<Pool> {
        self.lock().get(name).map(|r| r.pool.clone())
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
        let pool = pool.clone();
        tokio::spawn(async move {
            let payload = message.payload.to_bytes().to_vec();
            match pool.invoke(payload, Some(message.topic.to_string())).await {
                Ok(r) if r.is_error() => {
                    let body = r.body();
                    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_string();
                    tracing::warn!(component = %pool.component(), topic = %message.topic, error = %text, "function invocation failed");
                }
                Ok(_) => {}
                // Logged and counted by the pool.
                Err(InvokeError::QueueFull { .. }) => {}
                Err(e) => {
                    tracing::warn!(topic = %message.topic, error = %e, "function invocation refused")
                }
            }
        });
    }
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
                stop_running(running).await;
            }
        })
    }
}
