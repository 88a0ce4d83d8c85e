//! The instances of one function and the queue in front of them.
//!
//! Work waits in one FIFO queue of at most `maxQueueSize` items (a full queue rejects new
//! work, counted and logged). Each instance is a process running a runtime interface client
//! against its own Runtime API server ([`crate::api`]); an instance waiting in `next` takes
//! the oldest item. Pinned: one long-lived instance, replaced when it dies. On-demand: an
//! instance is started when queued work outnumbers waiting instances, up to
//! `maxInstancesCount`, and stopped after `maxIdleTimeInSeconds` waiting. An invocation that
//! outlives `timeoutInSeconds` fails as a timeout and its instance is killed and replaced;
//! an instance that dies mid-invocation fails that invocation. An instance that is neither
//! waiting for work nor running an invocation for `statusTimeoutInSeconds` (its module code
//! never reaches the runtime loop, or it stops asking after a result) is unresponsive: it is
//! killed and, when pinned, replaced.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::process::Child;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Encoding, FunctionConfig};

/// How often an instance's supervisor checks its invocation's deadline and its idle time:
/// timeouts and idle stops are this precise.
pub const SUPERVISE_TICK: Duration = Duration::from_millis(50);
/// An instance that dies sooner than this after its start is replaced only after this delay,
/// so a handler that cannot start does not spin.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Starts instances: a process in its own process group whose runtime interface client talks
/// to `runtime_api` (`AWS_LAMBDA_RUNTIME_API`).
pub trait InstanceLauncher: Send + Sync + 'static {
    fn launch(&self, runtime_api: SocketAddr, instance: u64) -> std::io::Result<Child>;
    /// Called once the instance's process group `pgid` has been killed and reaped.
    fn ended(&self, pgid: i32) {
        let _ = pgid;
    }
}

/// What an invocation came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(Vec<u8>),
    /// The handler raised: the runtime client's error document.
    HandlerError(Vec<u8>),
    Timeout,
    /// The instance died or was stopped before answering.
    Crashed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvokeResult {
    pub outcome: Outcome,
    /// From acceptance into the queue to the result.
    pub duration: Duration,
}

impl InvokeResult {
    /// The result document (an error document for failures).
    pub fn body(&self) -> Vec<u8> {
        match &self.outcome {
            Outcome::Ok(b) | Outcome::HandlerError(b) => b.clone(),
            Outcome::Timeout => {
                br#"{"errorMessage":"Task timed out","errorType":"TimeoutError"}"#.to_vec()
            }
            Outcome::Crashed(why) => serde_json::json!({
                "errorMessage": format!("the function instance ended before answering: {why}"),
                "errorType": "InstanceCrashed"
            })
            .to_string()
            .into_bytes(),
        }
    }

    pub fn is_error(&self) -> bool {
        !matches!(self.outcome, Outcome::Ok(_))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(
        "{component}: the queue is full ({max} invocations waiting, maxQueueSize); invocation rejected"
    )]
    QueueFull { component: String, max: usize },
    #[error("{component}: the function is stopped")]
    Stopped { component: String },
    #[error("{component}: the payload is not JSON (inputPayloadEncodingType json): {message}")]
    NotJson { component: String, message: String },
}

/// Counters since the pool started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub invocations: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub rejected: u64,
    pub crashes: u64,
    /// Instances killed for missing `statusTimeoutInSeconds`.
    pub unresponsive: u64,
    pub queue_depth: u64,
    pub instances: u64,
    pub last_latency_ms: u64,
    pub mean_latency_ms: f64,
}

#[derive(Default)]
struct Counters {
    invocations: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    rejected: AtomicU64,
    crashes: AtomicU64,
    unresponsive: AtomicU64,
    last_latency_ms: AtomicU64,
    total_latency_ms: AtomicU64,
    completed: AtomicU64,
}

pub struct PoolOptions {
    pub component: String,
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    pub function_arn: String,
    pub config: FunctionConfig,
}

struct Work {
    payload: Vec<u8>,
    topic: Option<String>,
    reply: oneshot::Sender<Outcome>,
}

pub(crate) struct Inner {
    component: String,
    function_arn: String,
    cfg: FunctionConfig,
    launcher: Arc<dyn InstanceLauncher>,
    tx: mpsc::Sender<Work>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Work>>,
    live: AtomicUsize,
    starting: AtomicUsize,
    waiting: AtomicUsize,
    next_id: AtomicU64,
    counters: Counters,
    stop: watch::Sender<bool>,
}

/// One function's pool. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// Creates the pool; a pinned function's instance starts now.
    pub fn start(options: PoolOptions, launcher: Arc<dyn InstanceLauncher>) -> Pool {
        let (tx, rx) = mpsc::channel(options.config.max_queue.max(1));
        let inner = Arc::new(Inner {
            component: options.component,
            function_arn: options.function_arn,
            cfg: options.config,
            launcher,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            live: AtomicUsize::new(0),
            starting: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            stop: watch::channel(false).0,
        });
        if inner.cfg.pinned {
            inner.live.fetch_add(1, Ordering::AcqRel);
            tokio::spawn(run_instance(inner.clone()));
        }
        Pool { inner }
    }

    pub fn component(&self) -> &str {
        &self.inner.component
    }

    pub fn config(&self) -> &FunctionConfig {
        &self.inner.cfg
    }

    /// Queues one invocation and waits for its outcome.
    pub async fn invoke(
        &self,
        payload: Vec<u8>,
        topic: Option<String>,
    ) -> Result<InvokeResult, InvokeError> {
        let inner = &self.inner;
        let accepted = Instant::now();
        if *inner.stop.borrow() {
            return Err(InvokeError::Stopped {
                component: inner.component.clone(),
            });
        }
        if inner.cfg.encoding == Encoding::Json
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload)
        {
            return Err(InvokeError::NotJson {
                component: inner.component.clone(),
                message: e.to_string(),
            });
        }
        let (reply, outcome) = oneshot::channel();
        match inner.tx.try_send(Work {
            payload,
            topic,
            reply,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = inner.counters.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(component = %inner.component, rejected = n, max_queue = inner.cfg.max_queue, "function queue full: invocation rejected");
                return Err(InvokeError::QueueFull {
                    component: inner.component.clone(),
                    max: inner.cfg.max_queue,
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(InvokeError::Stopped {
                    component: inner.component.clone(),
                });
            }
        }
        inner.counters.invocations.fetch_add(1, Ordering::Relaxed);
        inner.scale();
        let outcome = outcome.await.map_err(|_| InvokeError::Stopped {
            component: inner.component.clone(),
        })?;
        let duration = accepted.elapsed();
        let c = &inner.counters;
        let ms = duration.as_millis() as u64;
        c.last_latency_ms.store(ms, Ordering::Relaxed);
        c.total_latency_ms.fetch_add(ms, Ordering::Relaxed);
        c.completed.fetch_add(1, Ordering::Relaxed);
        match &outcome {
            Outcome::Ok(_) => {}
            Outcome::Timeout => {
                c.timeouts.fetch_add(1, Ordering::Relaxed);
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Crashed(_) => {
                c.crashes.fetch_add(1, Ordering::Relaxed);
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::HandlerError(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(InvokeResult { outcome, duration })
    }

    pub fn stats(&self) -> Stats {
        let inner = &self.inner;
        let c = &inner.counters;
        let completed = c.completed.load(Ordering::Relaxed);
        Stats {
            invocations: c.invocations.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            crashes: c.crashes.load(Ordering::Relaxed),
            unresponsive: c.unresponsive.load(Ordering::Relaxed),
            queue_depth: inner.queued() as u64,
            instances: inner.live.load(Ordering::Acquire) as u64,
            last_latency_ms: c.last_latency_ms.load(Ordering::Relaxed),
            mean_latency_ms: if completed == 0 {
                0.0
            } else {
                c.total_latency_ms.load(Ordering::Relaxed) as f64 / completed as f64
            },
        }
    }

    /// Stops every instance; queued work fails as stopped. Waits up to 5 s for the
    /// instances to be reaped.
    pub async fn stop(&self) {
        let inner = &self.inner;
        inner.stop.send_replace(true);
        {
            let mut rx = inner.rx.lock().await;
            rx.close();
            while let Ok(work) = rx.try_recv() {
                let _ = work
                    .reply
                    .send(Outcome::Crashed("the function stopped".into()));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while inner.live.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(SUPERVISE_TICK).await;
        }
    }
}

impl Inner {
    fn queued(&self) -> usize {
        self.cfg.max_queue.max(1) - self.tx.capacity()
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// On-demand: starts an instance when queued work outnumbers instances that will take
    /// it, within `maxInstancesCount`.
    fn scale(self: &Arc<Self>) {
        if self.cfg.pinned || self.stopping() {
            return;
        }
        let ready = self.waiting.load(Ordering::Acquire) + self.starting.load(Ordering::Acquire);
        if self.queued() <= ready {
            return;
        }
        let max = self.cfg.max_instances;
        if self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
        {
            tokio::spawn(run_instance(self.clone()));
        }
    }
}

/// What `next` hands the runtime client.
pub(crate) struct NextWork {
    pub request_id: String,
    pub deadline_ms: u64,
    pub function_arn: String,
    pub client_context: Option<String>,
    pub content_type: &'static str,
    pub payload: Vec<u8>,
}

struct Current {
    request_id: String,
    reply: oneshot::Sender<Outcome>,
    deadline: Instant,
}

pub(crate) struct Instance {
    pool: Arc<Inner>,
    id: u64,
    current: Mutex<Option<Current>>,
    idle_since: Mutex<Option<Instant>>,
    /// Has this instance asked for work yet (it is "starting" until then).
    asked: std::sync::atomic::AtomicBool,
    /// When it last showed it is alive (started, asked for work, answered).
    last_seen: Mutex<Instant>,
    pub(crate) ended: watch::Sender<bool>,
}

/// Decrements a counter when dropped (an HTTP handler can be cancelled at any await).
struct CountGuard<'a>(&'a AtomicUsize);
impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Instance {
    pub(crate) async fn next_invocation(&self) -> Option<NextWork> {
        let pool = &self.pool;
        if !self.asked.swap(true, Ordering::AcqRel) {
            pool.starting.fetch_sub(1, Ordering::AcqRel);
        }
        self.seen();
        // A client asking again without answering gave up on its invocation.
        if let Some(previous) = self.lock_current().take() {
            let _ = previous.reply.send(Outcome::Crashed(
                "the runtime client asked for the next invocation without answering".into(),
            ));
        }
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        pool.waiting.fetch_add(1, Ordering::AcqRel);
        let guard = CountGuard(&pool.waiting);
        let mut ended = self.ended.subscribe();
        let work = tokio::select! {
            work = async { pool.rx.lock().await.recv().await } => work,
            _ = ended.wait_for(|e| *e) => None,
        };
        drop(guard);
        // Seen first: the supervisor must not catch it between waiting and working.
        self.seen();
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let work = work?;
        let request_id = format!("{:032x}", rand::random::<u128>());
        let timeout = pool.cfg.timeout;
        let client_context = work.topic.as_ref().map(|topic| {
            serde_json::json!({"custom": {"subject": topic}, "client": {}, "env": {}}).to_string()
        });
        *self.lock_current() = Some(Current {
            request_id: request_id.clone(),
            reply: work.reply,
            deadline: Instant::now() + timeout,
        });
        Some(NextWork {
            request_id,
            deadline_ms: epoch_ms() + timeout.as_millis() as u64,
            function_arn: pool.function_arn.clone(),
            client_context,
            content_type: match pool.cfg.encoding {
                Encoding::Json => "application/json",
                Encoding::Binary => "application/octet-stream",
            },
            payload: work.payload,
        })
    }

    /// The runtime client answered `request_id`; false when it is not the current one.
    pub(crate) fn complete(&self, request_id: &str, outcome: Outcome) -> bool {
        self.seen();
        let mut current = self.lock_current();
        match current.take() {
            Some(c) if c.request_id == request_id => {
                let _ = c.reply.send(outcome);
                true
            }
            other => {
                *current = other;
                false
            }
        }
    }

    pub(crate) fn init_failed(&self, error: &str) {
        let error = error.chars().take(2048).collect::<String>();
        tracing::warn!(component = %self.pool.component, instance = self.id, %error, "function init failed");
    }

    fn seen(&self) {
        *self.last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Neither waiting for work nor in an invocation since `status_timeout`.
    fn unresponsive(&self, now: Instant, status_timeout: Duration) -> bool {
        if self.lock_current().is_some()
            || self
                .idle_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
        {
            return false;
        }
        let seen = *self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        now.duration_since(seen) >= status_timeout
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs one instance until it dies, times out, idles out or the pool stops; then replaces
/// it when the pool still needs it. `inner.live` was incremented for it by the caller.
async fn run_instance(inner: Arc<Inner>) {
    loop {
        let started = Instant::now();
        let lived = run_one(&inner).await;
        let replace = !inner.stopping() && inner.cfg.pinned;
        if !replace {
            inner.live.fetch_sub(1, Ordering::AcqRel);
            // On-demand: work may have queued while this one ended.
            inner.scale();
            return;
        }
        if lived.is_none() || started.elapsed() < RESTART_BACKOFF {
            let mut stop = inner.stop.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(RESTART_BACKOFF) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            if inner.stopping() {
                inner.live.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        }
    }
}

/// One instance's life. `None` when it could not start.
async fn run_one(inner: &Arc<Inner>) -> Option<()> {
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    inner.starting.fetch_add(1, Ordering::AcqRel);
    let instance = Arc::new(Instance {
        pool: inner.clone(),
        id,
        current: Mutex::new(None),
        idle_since: Mutex::new(None),
        asked: Default::default(),
        last_seen: Mutex::new(Instant::now()),
        ended: watch::channel(false).0,
    });
    let unstarted = |instance: &Instance| {
        if !instance.asked.swap(true, Ordering::AcqRel) {
            inner.starting.fetch_sub(1, Ordering::AcqRel);
        }
    };
    let addr = match crate::api::serve(instance.clone()).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(component = %inner.component, error = %e, "cannot bind the Runtime API");
            unstarted(&instance);
            return None;
        }
    };
    let mut child = match inner.launcher.launch(addr, id) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(component = %inner.component, error = %e, "cannot start a function instance");
            instance.ended.send_replace(true);
            unstarted(&instance);
            return None;
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or_default();
    tracing::info!(component = %inner.component, instance = id, pid = pgid, runtime_api = %addr, "function instance started");
    let mut stop = inner.stop.subscribe();
    let mut tick = tokio::time::interval(SUPERVISE_TICK);
    let reason = loop {
        tokio::select! {
            status = child.wait() => break match status {
                Ok(s) => format!("the instance exited ({s})"),
                Err(e) => format!("waiting for the instance: {e}"),
            },
            _ = stop.wait_for(|s| *s) => break "the function stopped".to_string(),
            _ = tick.tick() => {
                let now = Instant::now();
                let mut current = instance.lock_current();
                if current.as_ref().is_some_and(|c| now >= c.deadline) {
                    if let Some(c) = current.take() {
                        let _ = c.reply.send(Outcome::Timeout);
                    }
                    tracing::warn!(component = %inner.component, instance = id, timeout_s = inner.cfg.timeout.as_secs_f64(), "invocation timed out; instance replaced");
                    break "timed out".to_string();
                }
                drop(current);
                let idle = *instance.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                if !inner.cfg.pinned && idle.is_some_and(|t| now.duration_since(t) >= inner.cfg.max_idle) {
                    tracing::info!(component = %inner.component, instance = id, "idle instance stopped (maxIdleTimeInSeconds)");
                    break "idle".to_string();
                }
                if instance.unresponsive(now, inner.cfg.status_timeout) {
                    inner.counters.unresponsive.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(component = %inner.component, instance = id, status_timeout_s = inner.cfg.status_timeout.as_secs_f64(),
                        "instance unresponsive: neither waiting for work nor in an invocation within statusTimeoutInSeconds; killed");
                    break "unresponsive (statusTimeoutInSeconds)".to_string();
                }
            }
        }
    };
    instance.ended.send_replace(true);
    if pgid > 0 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.wait().await;
    inner.launcher.ended(pgid);
    unstarted(&instance);
    if let Some(c) = instance.lock_current().take() {
        tracing::warn!(component = %inner.component, instance = id, %reason, "instance ended mid-invocation");
        let _ = c.reply.send(Outcome::Crashed(reason.clone()));
    }
    tracing::info!(component = %inner.component, instance = id, %reason, "function instance ended");
    Some(())
}
