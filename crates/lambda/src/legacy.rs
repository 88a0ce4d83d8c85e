//! The Greengrass v1 "Lambda IPC" HTTP API that `greengrasssdk` (1.6.1) talks to on
//! `127.0.0.1:GG_DAEMON_PORT`, through the `greengrass_ipc_python_sdk.ipc_client` module lichen
//! ships (reference §2.3):
//!
//! - `POST /2016-11-01/functions/{arn}` with `Authorization: <token>`,
//!   `X-Amz-Invocation-Type: RequestResponse|Event` and `X-Amz-Client-Context: <base64 JSON>`,
//!   body = payload → `202` with `X-Amz-InvocationId`;
//! - `GET /2016-11-01/functions/{arn}` with `X-Amz-InvocationId` → the result as body, with
//!   `X-Amz-Function-Error` (`Handled` / `Unhandled`) when the function failed.
//!
//! One server per core. What an invocation does (publish through the subscription router,
//! Lambda-to-Lambda invoke, "not supported") is the [`LegacyHost`]'s business; this module
//! only speaks HTTP, authenticates the caller by its token and keeps results until fetched.
//! The runtime side of the v1 API (`/work`, `/initialized`) is not served: instances run under
//! the Runtime API (`api.rs`).
//!
//! Bounds: request bodies ≤ [`MAX_PAYLOAD_BYTES`]; results waiting to be fetched ≤
//! [`MAX_PENDING_RESULTS`] (the oldest dropped first) and ≤ [`RESULT_TTL`] old.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use rand::RngCore;
use tokio::sync::watch;

/// `ROUTER_FUNCTION_ARN`: `iot-data` `publish` invokes it with the topic as `subject`.
pub const ROUTER_FUNCTION_ARN: &str = "arn:aws:lambda:::function:GGRouter";
/// `SHADOW_FUNCTION_ARN` (classic shadow operations; v2 serves none: reference §2.3).
pub const SHADOW_FUNCTION_ARN: &str = "arn:aws:lambda:::function:GGShadowService";
/// `SECRETS_MANAGER_FUNCTION_ARN`.
pub const SECRETS_MANAGER_FUNCTION_ARN: &str = "arn:aws:lambda:::function:GGSecretManager:1";
/// The Lambda payload limit, as for the Runtime API.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Results of `RequestResponse` invocations kept until their GET.
pub const MAX_PENDING_RESULTS: usize = 256;
/// A result not fetched within this is dropped.
pub const RESULT_TTL: Duration = Duration::from_secs(60);

/// The function a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub component: String,
    pub function_arn: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    RequestResponse,
    Event,
}

/// One authenticated invocation.
#[derive(Debug)]
pub struct LegacyRequest {
    pub caller: Caller,
    /// The ARN in the path (the router, another function, …).
    pub target_arn: String,
    pub invocation_type: InvocationType,
    /// The decoded `X-Amz-Client-Context` (`{"custom": {"subject", "source", …}}`).
    pub client_context: Option<serde_json::Value>,
    pub payload: Vec<u8>,
}

impl LegacyRequest {
    /// `client_context.custom[key]` as a string.
    pub fn custom(&self, key: &str) -> Option<&str> {
        self.client_context
            .as_ref()?
            .get("custom")?
            .get(key)?
            .as_str()
    }
}

/// What an invocation produced.
#[derive(Debug)]
pub enum LegacyReply {
    /// `Event`: accepted, nothing to fetch.
    Accepted,
    /// `RequestResponse`: the function's result, and `Handled`/`Unhandled` if it failed.
    Result {
        payload: Vec<u8>,
        function_error: Option<&'static str>,
    },
}

/// A refused invocation: the status and the text the SDK raises (as `IPCException`).
#[derive(Debug, Clone)]
pub struct LegacyRefusal {
    pub status: u16,
    pub message: String,
}

impl LegacyRefusal {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        LegacyRefusal {
            status,
            message: message.into(),
        }
    }
}

pub type LegacyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<LegacyReply, LegacyRefusal>> + Send + 'a>>;

/// What invocations do (the node: subscription routing, other functions).
pub trait LegacyHost: Send + Sync + 'static {
    fn invoke(&self, request: LegacyRequest) -> LegacyFuture<'_>;
}

struct Stored {
    id: String,
    caller: Caller,
    at: Instant,
    payload: Vec<u8>,
    function_error: Option<&'static str>,
}

struct Shared {
    host: Arc<dyn LegacyHost>,
    tokens: Mutex<HashMap<String, Caller>>,
    results: Mutex<VecDeque<Stored>>,
}

/// The running server (see the module documentation). Dropping it stops it.
pub struct LegacyServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl Drop for LegacyServer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl LegacyServer {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start(host: Arc<dyn LegacyHost>) -> std::io::Result<LegacyServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            host,
            tokens: Mutex::new(HashMap::new()),
            results: Mutex::new(VecDeque::new()),
        });
        let app = Router::new()
            .route(
                "/2016-11-01/functions/{arn}",
                post(invoke).get(fetch_result),
            )
            .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
            .with_state(shared.clone());
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "the Lambda IPC server (GG_DAEMON_PORT) ended");
            }
        });
        Ok(LegacyServer { addr, shared, stop })
    }

    /// `GG_DAEMON_PORT`.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Lets `token` (what a function's instances send as `Authorization`: their
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`, the component's SVCUID) authenticate as `caller`;
    /// an empty `token` gets a fresh one. Returns the token. Never log it.
    pub fn register(&self, token: &str, caller: Caller) -> String {
        let token = if token.is_empty() {
            let mut bytes = [0u8; 24];
            rand::rng().fill_bytes(&mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        } else {
            token.to_string()
        };
        lock(&self.shared.tokens).insert(token.clone(), caller);
        token
    }

    /// The function stopped: its token no longer authenticates.
    pub fn unregister(&self, token: &str) {
        lock(&self.shared.tokens).remove(token);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refuse(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, message.into()).into_response()
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Caller, LegacyRefusal> {
    let token = header(headers, "Authorization").unwrap_or_default();
    lock(&shared.tokens)
        .get(token)
        .cloned()
        .ok_or_else(|| LegacyRefusal::new(403, "invalid or missing Authorization token"))
}

fn client_context(headers: &HeaderMap) -> Result<Option<serde_json::Value>, LegacyRefusal> {
    let Some(text) = header(headers, "X-Amz-Client-Context").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| LegacyRefusal::new(400, format!("X-Amz-Client-Context is not base64: {e}")))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| LegacyRefusal::new(400, format!("X-Amz-Client-Context is not JSON: {e}")))
}

fn new_invocation_id() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn invoke(
    State(shared): State<Arc<Shared>>,
    Path(arn): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match authenticate(&shared, &headers) {
        Ok(c) => c,
        Err(r) => return refuse(r.status, r.message),
    };
    let invocation_type = match header(&headers, "X-Amz-Invocation-Type") {
        None | Some("") | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("Event") => InvocationType::Event,
        Some(other) => {
            return refuse(
                400,
                format!("X-Amz-Invocation-Type must be RequestResponse or Event, not {other:?}"),
            );
        }
    };
    let client_context = match client_context(&headers) {
        Ok(c) => c,
        Err(r) => return refuse(r.status, r.message),
    };
    let request = LegacyRequest {
        caller: caller.clone(),
        target_arn: arn,
        invocation_type,
        client_context,
        payload: body.to_vec(),
    };
    let id = header(&headers, "X-Amz-InvocationId")
        .filter(|i| !i.is_empty() && i.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_invocation_id);
    match shared.host.invoke(request).await {
        Err(refusal) => refuse(refusal.status, refusal.message),
        Ok(reply) => {
            if let LegacyReply::Result {
                payload,
                function_error,
            } = reply
            {
                let mut results = lock(&shared.results);
                results.retain(|r| r.at.elapsed() < RESULT_TTL);
                while results.len() >= MAX_PENDING_RESULTS {
                    results.pop_front();
                }
                results.push_back(Stored {
                    id: id.clone(),
                    caller,
                    at: Instant::now(),
                    payload,
                    function_error,
                });
            }
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&id) {
                headers.insert("X-Amz-InvocationId", v);
            }
            (StatusCode::ACCEPTED, headers, Body::empty()).into_response()
        }
    }
}

async fn fetch_result(
    State(shared): State<Arc<Shared>>,
    Path(_arn): Path<String>,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate(&shared, &headers) {
        Ok(c) => c,
        Err(r) => return refuse(r.status, r.message),
    };
    let id = header(&headers, "X-Amz-InvocationId").unwrap_or_default();
    let stored = {
        let mut results = lock(&shared.results);
        let at = results
            .iter()
            .position(|r| r.id == id && r.caller == caller);
        at.and_then(|i| results.remove(i))
    };
    let Some(stored) = stored else {
        return refuse(404, format!("no result for invocation {id:?}"));
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        "X-Amz-Function-Error",
        HeaderValue::from_static(stored.function_error.unwrap_or("")),
    );
    (StatusCode::OK, headers, Body::from(stored.payload)).into_response()
}
