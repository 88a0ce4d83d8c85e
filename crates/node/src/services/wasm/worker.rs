//! One WASM function while its component runs: a worker thread that owns the warm
//! instance and runs invocations one at a time from a bounded queue, the node's side of the
//! host interface, and the component's metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lichen_bus::{Bus, Message, Payload};
use lichen_core::CoreHandle;
use lichen_core::handle::Metric;
use lichen_core::lifecycle::Slot;
use lichen_ipc::authz::{PolicyCache, SERVICE_PUBSUB};
use lichen_wasm::{FunctionModule, Host, Instance, InvokeError, LogLevel, PublishError};
use tokio::sync::{oneshot, watch};

/// What an invocation answers to whoever asked (the control channel).
pub type Reply = Result<lichen_wasm::Invocation, InvokeError>;

/// One unit of work for the function.
pub struct Job {
    pub topic: String,
    pub payload: Vec<u8>,
    pub reply: Option<oneshot::Sender<Reply>>,
}

/// The node's side of the host interface for one component.
pub struct NodeHost {
    pub component: String,
    pub origin: Arc<str>,
    pub bus: Bus,
    pub policies: Arc<PolicyCache>,
    pub core: CoreHandle,
    pub slot: Arc<Slot>,
}

const PUBLISH_OPERATION: &str = "aws.greengrass#PublishToTopic";

impl Host for NodeHost {
    fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), PublishError> {
        if !self
            .policies
            .allows(&self.component, SERVICE_PUBSUB, PUBLISH_OPERATION, topic)
        {
            tracing::warn!(component = %self.component, topic, "WASM publish not authorized");
            return Err(PublishError::Unauthorized(topic.to_string()));
        }
        // A JSON object or array goes out as a JSON message (IPC subscribers see
        // jsonMessage); anything else as bytes (binaryMessage).
        let body = match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
                Payload::Json(v)
            }
            _ => Payload::Binary(bytes::Bytes::copy_from_slice(payload)),
        };
        self.bus
            .publish(Message::new(topic, body, self.origin.clone()))
            .map(|_| ())
            .map_err(|e| PublishError::InvalidTopic {
                topic: topic.to_string(),
                reason: e.to_string(),
            })
    }

    fn configuration(&self, path: &[String]) -> Option<serde_json::Value> {
        match self.core.get_configuration(&self.component, path) {
            Ok(serde_json::Value::Null) | Err(_) => None,
            Ok(v) => Some(v),
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        let stream = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "stdout",
            LogLevel::Warn => "stderr",
            LogLevel::Error => "error",
        };
        self.slot.log().write_line(stream, message);
    }
}

/// Counters shown in `component details` (through `put_component_metrics`).
#[derive(Default)]
pub struct Counters {
    pub invocations: AtomicU64,
    pub errors: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub dropped: AtomicU64,
    pub instantiations: AtomicU64,
    latency: Mutex<LatencyWindow>,
}

/// The last [`LATENCY_WINDOW`] latencies, for p50/p99 without keeping them all.
#[derive(Default)]
struct LatencyWindow {
    samples: Vec<u64>,
    next: usize,
}

const LATENCY_WINDOW: usize = 1024;

impl Counters {
    fn record_latency(&self, micros: u64) {
        let mut w = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        if w.samples.len() < LATENCY_WINDOW {
            w.samples.push(micros);
        } else {
            let i = w.next;
            w.samples[i] = micros;
        }
        w.next = (w.next + 1) % LATENCY_WINDOW;
    }

    fn percentiles(&self) -> (f64, f64) {
        let mut s = self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .samples
            .clone();
        if s.is_empty() {
            return (0.0, 0.0);
        }
        s.sort_unstable();
        let at = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        (at(0.5), at(0.99))
    }

    pub fn metrics(&self) -> Vec<Metric> {
        let count = |name: &str, v: &AtomicU64| Metric {
            name: name.to_string(),
            unit: "COUNT".into(),
            value: v.load(Ordering::Relaxed) as f64,
            timestamp: 0,
        };
        let (p50, p99) = self.percentiles();
        let ms = |name: &str, value: f64| Metric {
            name: name.to_string(),
            unit: "MILLISECONDS".into(),
            value,
            timestamp: 0,
        };
        vec![
            count("Invocations", &self.invocations),
            count("Errors", &self.errors),
            count("Traps", &self.traps),
            count("Timeouts", &self.timeouts),
            count("Dropped", &self.dropped),
            count("Instantiations", &self.instantiations),
            ms("LatencyP50", p50),
            ms("LatencyP99", p99),
        ]
    }
}

/// What the worker's queue carries.
pub enum Work {
    Invoke(Job),
    /// Stop once what is queued before it has run.
    Stop,
}

/// Handle of a running function (the component is RUNNING while it lives).
pub struct FunctionWorker {
    pub name: String,
    jobs: SyncSender<Work>,
    pub counters: Arc<Counters>,
    /// Becomes `Some(reason)` when the worker has stopped for good.
    pub stopped: watch::Receiver<Option<String>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Consecutive instantiation failures after which the function stops (the component then
/// errors, and the core restarts or breaks it).
const MAX_INSTANTIATE_FAILURES: u32 = 3;

/// How often metrics are pushed to the core at most.
const METRICS_EVERY: Duration = Duration::from_millis(500);

impl FunctionWorker {
    /// Starts the worker with the trial instance made at launch.
    pub fn start(
        module: Arc<FunctionModule>,
        host: Arc<NodeHost>,
        first: Instance,
        queue: usize,
    ) -> std::io::Result<Arc<FunctionWorker>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue.max(1));
        let module_name = host.component.clone();
        let (stop_tx, stop_rx) = watch::channel(None);
        let counters = Arc::new(Counters::default());
        counters.instantiations.fetch_add(1, Ordering::Relaxed);
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wasm:{}", host.component))
            .spawn(move || {
                let reason = run(module, host, first, rx, &c);
                let _ = stop_tx.send(Some(reason));
            })?;
        Ok(Arc::new(FunctionWorker {
            name: module_name,
            jobs: tx,
            counters,
            stopped: stop_rx,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Queues a job; a full queue refuses it (counted).
    pub fn submit(&self, job: Job) -> Result<(), &'static str> {
        match self.jobs.try_send(Work::Invoke(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(100) {
                    tracing::warn!(function = %self.name, dropped = n, "WASM function queue full; event dropped");
                }
                Err("the function's queue is full")
            }
            Err(TrySendError::Disconnected(_)) => Err("the function has stopped"),
        }
    }

    /// Stops taking jobs and waits for the invocation in progress (bounded by its fuel).
    pub fn join(&self) -> Option<std::thread::JoinHandle<()>> {
        self.thread.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The worker loop: returns why it stopped.
fn run(
    module: Arc<FunctionModule>,
    host: Arc<NodeHost>,
    first: Instance,
    jobs: Receiver<Work>,
    counters: &Counters,
) -> String {
    let mut instance = Some(first);
    let mut failures = 0u32;
    let mut last_metrics = Instant::now();
    let mut dirty = false;
    loop {
        let job = match jobs.recv_timeout(METRICS_EVERY) {
            Ok(Work::Invoke(job)) => job,
            Ok(Work::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // Idle: what the last burst changed reaches `component details` now.
                if dirty {
                    dirty = false;
                    last_metrics = Instant::now();
                    let _ = host
                        .core
                        .put_component_metrics(&host.component, counters.metrics());
                }
                continue;
            }
        };
        dirty = true;
        let started = Instant::now();
        let live = match instance.take() {
            Some(i) => Ok(i),
            None => {
                counters.instantiations.fetch_add(1, Ordering::Relaxed);
                module.instantiate(host.clone() as Arc<dyn Host>)
            }
        };
        let outcome = match live {
            Ok(mut i) => {
                failures = 0;
                let out = i.invoke(&job.topic, &job.payload);
                // A failed invocation may leave memory half-written: start afresh next time.
                if matches!(out, Ok(_) | Err(InvokeError::PayloadTooLarge { .. })) {
                    instance = Some(i);
                }
                out
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(function = %host.component, error = %e, failures, "WASM instantiation failed");
                if failures >= MAX_INSTANTIATE_FAILURES {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return format!("{} could not be instantiated: {e}", module.name());
                }
                Err(e)
            }
        };
        counters.invocations.fetch_add(1, Ordering::Relaxed);
        counters.record_latency(started.elapsed().as_micros() as u64);
        match &outcome {
            Ok(inv) if inv.ok => {}
            Ok(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                match e {
                    InvokeError::CpuLimit { .. } => {
                        counters.timeouts.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => counters.traps.fetch_add(1, Ordering::Relaxed),
                };
                host.slot.log().write_line(
                    "error",
                    &format!("invocation on {} failed ({}): {e}", job.topic, e.kind()),
                );
            }
        }
        if let Some(reply) = job.reply {
            let _ = reply.send(outcome);
        }
        if last_metrics.elapsed() >= METRICS_EVERY {
            last_metrics = Instant::now();
            dirty = false;
            let _ = host
                .core
                .put_component_metrics(&host.component, counters.metrics());
        }
    }
    let _ = host
        .core
        .put_component_metrics(&host.component, counters.metrics());
    "stopped".to_string()
}

impl FunctionWorker {
    /// Asks the worker to stop after what is queued. A blocking send, so the stop is never
    /// lost to a full queue: it waits at most for the queued invocations (each fuel-bounded).
    pub fn request_stop(&self) {
        let _ = self.jobs.send(Work::Stop);
    }
}
