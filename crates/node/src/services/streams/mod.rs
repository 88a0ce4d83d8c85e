//! The stream manager (`aws.greengrass.StreamManager`), served from the core: the
//! Stream Manager SDKs' TCP protocol on loopback over `lichen-streams`' store under
//! `<root>/streams/`, and the streams' exports (see [`export`]).
//!
//! It runs while `aws.greengrass.StreamManager` is deployed (as in Greengrass), with that
//! component's keys: `STREAM_MANAGER_SERVER_PORT` (default 8088, `0` = a free port),
//! `STREAM_MANAGER_AUTHENTICATE_CLIENT` (default true: only a component's
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`, checked against the core's token table; false:
//! any local process). The port it listens on is written back under the component's `port`
//! key, which clients read with IPC `GetConfiguration`. `STREAM_MANAGER_STORE_ROOT_DIR`,
//! `STREAM_MANAGER_EXPORTER_MAX_BANDWIDTH`, `STREAM_MANAGER_THREAD_POOL_SIZE`, `JVM_ARGS`
//! and `LOG_LEVEL` are accepted and ignored (logged once). A changed port or
//! authentication setting restarts the listener; streams stay open.
//!
//! Bounds: see `server` (connections, frames, in-flight requests, long polls) and
//! `lichen_streams::store::StoreConfig` (streams per core, disk, memory, message size).

pub mod cloud_export;
pub mod export;
pub mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ciborium::value::Value;
use lichen_core::CoreHandle;
use lichen_core::handle::BoxFuture;
use lichen_streams::protocol::{self as proto, Request, Status};
use lichen_streams::store::{Store, StoreConfig, StoreError};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::service::{Service, ServiceContext, ServiceError};

pub const COMPONENT: &str = "aws.greengrass.StreamManager";
pub const DEFAULT_PORT: u16 = 8088;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// State shared by the connections and the exporters.
pub struct Shared {
    pub core: CoreHandle,
    pub store: Arc<Store>,
    authenticate: AtomicBool,
    appended: Mutex<HashMap<String, Arc<Notify>>>,
    long_polls: Arc<Semaphore>,
    pub exports: export::Exports,
    /// The lichen cloud, for `lichen-cloud:` exports (None: the core has no cloud section).
    pub cloud: Option<Arc<cloud_export::CloudTarget>>,
}

impl Shared {
    pub fn authenticate_client(&self) -> bool {
        self.authenticate.load(Ordering::Relaxed)
    }

    /// Woken at every append to `stream`.
    pub fn appended(&self, stream: &str) -> Arc<Notify> {
        let mut m = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(stream.to_string()).or_default().clone()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io {
            path: "stream manager".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

fn store_failure(id: &str, e: &StoreError) -> Value {
    if e.status() == Status::UnknownFailure {
        tracing::error!(error = %e, "stream manager storage failure");
    }
    proto::response(id, e.status(), Some(&e.to_string()), vec![])
}

/// Answers one request (the reply map; the caller frames it).
pub async fn handle(shared: &Arc<Shared>, id: &str, request: Request) -> Value {
    let ok = |extras| proto::response(id, Status::Success, None, extras);
    let store = shared.store.clone();
    match request {
        Request::Create(def) => {
            let d = def.clone();
            match blocking(move || store.create(d)).await {
                Ok(()) => {
                    shared.exports.configure(shared, &def, Vec::new());
                    ok(vec![])
                }
                Err(e) => store_failure(id, &e),
            }
        }
        Request::Update(def) => {
            let d = def.clone();
            match blocking(move || store.update(d)).await {
                Ok(()) => {
                    let kept = shared.exports.statuses(&def.name);
                    shared.exports.configure(shared, &def, kept);
                    ok(vec![])
                }
                Err(e) => store_failure(id, &e),
            }
        }
        Request::Delete { name } => {
            let n = name.clone();
            match blocking(move || store.delete(&n)).await {
                Ok(()) => {
                    shared.exports.remove(&name);
                    ok(vec![])
                }
                Err(e) => store_failure(id, &e),
            }
        }
        Request::Describe { name } => match store.describe(&name) {
            Ok(info) => {
                let statuses = shared.exports.statuses(&name);
                let v = proto::stream_info_value(
                    &info.definition,
                    info.oldest_sequence_number,
                    info.newest_sequence_number,
                    info.total_bytes,
                    &statuses,
                );
                ok(vec![("messageStreamInfo", Some(v))])
            }
            Err(e) => store_failure(id, &e),
        },
        Request::List => ok(vec![(
            "streams",
            Some(Value::Array(
                store.list().iter().map(|s| cbor_text(s)).collect(),
            )),
        )]),
        Request::Append { name, payload } => {
            let n = name.clone();
            match blocking(move || store.append(&n, &payload, now_ms())).await {
                Ok(seq) => {
                    shared.appended(&name).notify_waiters();
                    ok(vec![("sequenceNumber", Some(proto::cbor::int(seq as i64)))])
                }
                Err(e) => store_failure(id, &e),
            }
        }
        Request::Read {
            stream_name,
            options,
        } => read(shared, id, &stream_name, options).await,
    }
}

fn cbor_text(s: &str) -> Value {
    Value::Text(s.to_string())
}

async fn read(shared: &Arc<Shared>, id: &str, name: &str, o: proto::ReadOptions) -> Value {
    let _permit = if o.timeout_millis > 0 {
        match shared.long_polls.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let msg = format!(
                    "too many long-polling reads at once (at most {})",
                    server::MAX_LONG_POLLS
                );
                return proto::response(id, Status::UnknownFailure, Some(&msg), vec![]);
            }
        }
    } else {
        None
    };
    let wait = Duration::from_millis(o.timeout_millis).saturating_sub(server::LONG_POLL_MARGIN);
    let deadline = tokio::time::Instant::now() + wait;
    let notify = shared.appended(name);
    let max = o.max_count.min(1_000_000) as usize;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let store = shared.store.clone();
        let n = name.to_string();
        let start = o.desired_start;
        let got = blocking(move || store.read(&n, start, max, server::MAX_READ_REPLY_BYTES)).await;
        match got {
            Err(e) => return store_failure(id, &e),
            Ok((msgs, _)) if msgs.len() as u64 >= o.min_count => {
                let list = msgs
                    .iter()
                    .map(|m| {
                        proto::message_value(name, m.sequence_number, m.ingest_time, &m.payload)
                    })
                    .collect();
                return proto::response(
                    id,
                    Status::Success,
                    None,
                    vec![("messages", Some(Value::Array(list)))],
                );
            }
            Ok((msgs, _)) => {
                if o.timeout_millis == 0 || tokio::time::Instant::now() >= deadline {
                    let msg = format!(
                        "{} of the {} messages asked for are available",
                        msgs.len(),
                        o.min_count
                    );
                    return proto::response(id, Status::NotEnoughMessages, Some(&msg), vec![]);
                }
            }
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    port: u16,
    authenticate: bool,
}

fn setting<'a>(cfg: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    cfg.get(key).filter(|v| !v.is_null())
}

fn parse_settings(cfg: &serde_json::Value) -> Result<Settings, String> {
    let port = match setting(cfg, "STREAM_MANAGER_SERVER_PORT") {
        None => DEFAULT_PORT,
        Some(v) => {
            let text = match v {
                serde_json::Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            };
            text.parse::<u16>().map_err(|_| {
                format!("{COMPONENT} STREAM_MANAGER_SERVER_PORT {v} is not a port (0-65535)")
            })?
        }
    };
    let authenticate = match setting(cfg, "STREAM_MANAGER_AUTHENTICATE_CLIENT") {
        None => true,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(format!(
                "{COMPONENT} STREAM_MANAGER_AUTHENTICATE_CLIENT {v} is not true or false"
            ));
        }
    };
    Ok(Settings { port, authenticate })
}

struct Running {
    settings: Settings,
    port: u16,
    accept: JoinHandle<()>,
}

/// The stream manager as a node service (see the module docs).
#[derive(Default)]
pub struct StreamsService {
    shared: tokio::sync::Mutex<Option<Arc<Shared>>>,
    running: tokio::sync::Mutex<Option<Running>>,
    housekeeping: Mutex<Option<JoinHandle<()>>>,
}

impl StreamsService {
    pub fn new() -> Self {
        StreamsService::default()
    }

    /// The port the server listens on, while it runs.
    pub async fn port(&self) -> Option<u16> {
        self.running.lock().await.as_ref().map(|r| r.port)
    }

    async fn shared(&self, ctx: &ServiceContext) -> Result<Arc<Shared>, String> {
        let mut guard = self.shared.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let dir = ctx.layout.root().join("streams");
        let store = tokio::task::spawn_blocking(move || Store::open(StoreConfig::new(dir)))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("opening the stream store: {e}"))?;
        let shared = Arc::new(Shared {
            core: ctx.core.clone(),
            store: Arc::new(store),
            authenticate: AtomicBool::new(true),
            appended: Mutex::new(HashMap::new()),
            long_polls: Arc::new(Semaphore::new(server::MAX_LONG_POLLS)),
            exports: export::Exports::default(),
            cloud: ctx.settings.cloud.as_ref().map(|_| {
                Arc::new(cloud_export::CloudTarget::new(
                    ctx.layout.root().to_path_buf(),
                    ctx.settings.clone(),
                ))
            }),
        });
        shared.exports.resume_all(&shared);
        let weak = Arc::downgrade(&shared);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                let store = s.store.clone();
                drop(s);
                let _ = tokio::task::spawn_blocking(move || store.expire_all(now_ms())).await;
            }
        });
        *self.housekeeping.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        *guard = Some(shared.clone());
        Ok(shared)
    }

    async fn reconcile(&self, ctx: &ServiceContext) {
        let Ok(cfg) = ctx.core.get_configuration(COMPONENT, &[]) else {
            // Not deployed (or removed): stop listening; the streams stay on disk.
            if let Some(r) = self.running.lock().await.take() {
                r.accept.abort();
                tracing::info!("stream manager stopped ({COMPONENT} removed)");
            }
            return;
        };
        let settings = match parse_settings(&cfg) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "invalid stream manager configuration");
                return;
            }
        };
        let mut running = self.running.lock().await;
        if running.as_ref().is_some_and(|r| r.settings == settings) {
            return;
        }
        let shared = match self.shared(ctx).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "the stream manager could not start");
                return;
            }
        };
        shared
            .authenticate
            .store(settings.authenticate, Ordering::Relaxed);
        if let Some(r) = running.as_ref()
            && r.settings.port == settings.port
        {
            // Only authentication changed: the listener stays.
            if let Some(r) = running.as_mut() {
                r.settings = settings;
            }
            return;
        }
        if let Some(r) = running.take() {
            r.accept.abort();
        }
        for ignored in [
            "STREAM_MANAGER_STORE_ROOT_DIR",
            "STREAM_MANAGER_EXPORTER_MAX_BANDWIDTH",
            "STREAM_MANAGER_THREAD_POOL_SIZE",
            "JVM_ARGS",
            "LOG_LEVEL",
        ] {
            if setting(&cfg, ignored).is_some() {
                tracing::info!(
                    key = ignored,
                    "stream manager setting ignored (lichen stores under <root>/streams)"
                );
            }
        }
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(port = settings.port, error = %e, "the stream manager cannot listen");
                return;
            }
        };
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(settings.port);
        tracing::info!(
            port,
            authenticate = settings.authenticate,
            "stream manager listening"
        );
        let accept = tokio::spawn(server::accept_loop(listener, shared));
        *running = Some(Running {
            settings,
            port,
            accept,
        });
        drop(running);
        if cfg.get("port").and_then(|v| v.as_str()) != Some(port.to_string().as_str())
            && let Err(e) = ctx.core.update_configuration(
                COMPONENT,
                &[],
                now_ms().max(1) as u64,
                json!({"port": port.to_string()}),
            )
        {
            tracing::error!(error = %e, "cannot publish the stream manager's port");
        }
    }
}

impl Service for StreamsService {
    fn name(&self) -> &str {
        "streams"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            ctx.core.provide_builtin(COMPONENT);
            self.reconcile(ctx).await;
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
        Box::pin(self.reconcile(ctx))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(r) = self.running.lock().await.take() {
                r.accept.abort();
            }
            if let Some(t) = self
                .housekeeping
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                t.abort();
            }
            if let Some(s) = self.shared.lock().await.take() {
                s.exports.stop_all();
                let store = s.store.clone();
                let _ = tokio::task::spawn_blocking(move || store.sync_all()).await;
            }
        })
    }
}
