//! The HTTPS admin API: one route table ([`routes`]) from which both the axum router
//! ([`router`]) and the OpenAPI document ([`crate::openapi::document`]) are built, so the two
//! cannot drift apart.
//!
//! Every route but `/healthz` and `/openapi.json` requires an admin bearer token and no
//! client certificate (devices use `/device/v1`, [`crate::device_api`]). Bounds:
//! JSON bodies [`body::MAX_JSON_BODY`] (1 MiB, 413 beyond), a whole request
//! [`REQUEST_TIMEOUT`]; connections and header timeouts are the server's (`crate::server`).

pub mod body;
pub mod certificates;
pub mod core_devices;
pub mod deployment_status;
pub mod deployments;
pub mod devices;
pub mod error;
pub mod groups;
pub mod jobs;
pub mod meta;
pub mod streams;
pub mod templates;
pub mod things;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use lichen_cloud_store::{Backend, Page};
use lichen_pki::LocalCa;
use serde::{Deserialize, Serialize};

use self::error::{ApiError, ApiResult};

/// Longest a request may take, body included; then 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a device certificate issued from a CSR is valid.
pub const DEVICE_CERT_DAYS: u32 = 365;
/// How long a claim certificate is valid.
pub const CLAIM_CERT_DAYS: u32 = 365;

/// What the device endpoint must hear from the API. Implemented by the endpoint's handle
/// (`lichen-cloud-endpoint`); absent when the cloud runs without one.
pub trait DeviceEndpoint: Send + Sync {
    /// A certificate was revoked: close its connections (the endpoint refuses its next
    /// handshake by itself). The API answers only once this is done.
    fn certificate_revoked<'a>(&'a self, fingerprint: &'a str) -> BoxFuture<'a, ()>;
    /// A thing's job executions changed (a deployment queued or canceled one): the endpoint
    /// publishes `$aws/things/<thing>/jobs/notify(-next)` to it.
    fn jobs_changed<'a>(&'a self, thing: &'a str) -> BoxFuture<'a, ()>;
    /// The API wrote a thing's named shadow (the deployment shadow): the endpoint tells the
    /// device, which also re-reads it whenever it connects.
    fn shadow_changed<'a>(&'a self, thing: &'a str, shadow_name: &'a str) -> BoxFuture<'a, ()>;
    /// The client devices associated with the core `thing` changed (committed): the
    /// endpoint re-reads them for the core's live connections.
    fn client_devices_changed<'a>(&'a self, thing: &'a str) -> BoxFuture<'a, ()>;
}

/// A boxed future, as [`DeviceEndpoint`]'s methods return (the trait stays object-safe).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where devices and administrators reach this cloud, as written into provisioning bundles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `HOST:PORT` of the mTLS MQTT endpoint.
    pub iot_data_endpoint: String,
    /// `https://HOST:PORT` of this API.
    pub api_endpoint: String,
    /// Whether the device endpoint is running in this process.
    pub device_endpoint_running: bool,
    /// The cloud CA certificate (PEM): what devices trust for the endpoint and the API.
    pub root_ca_pem: String,
}

/// What every handler gets.
pub struct AppState<S> {
    pub store: Arc<S>,
    pub ca: Arc<LocalCa>,
    pub endpoint: Option<Arc<dyn DeviceEndpoint>>,
    pub endpoints: Arc<Endpoints>,
    /// The OpenAPI document, built once by [`router`] from the route table and extensions.
    pub openapi: Arc<std::sync::OnceLock<serde_json::Value>>,
}

impl<S> AppState<S> {
    pub fn new(
        store: Arc<S>,
        ca: Arc<LocalCa>,
        endpoint: Option<Arc<dyn DeviceEndpoint>>,
        endpoints: Endpoints,
    ) -> AppState<S> {
        AppState {
            store,
            ca,
            endpoint,
            endpoints: Arc::new(endpoints),
            openapi: Arc::new(std::sync::OnceLock::new()),
        }
    }
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            store: self.store.clone(),
            ca: self.ca.clone(),
            endpoint: self.endpoint.clone(),
            endpoints: self.endpoints.clone(),
            openapi: self.openapi.clone(),
        }
    }
}

/// HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }
}

/// A query parameter a route takes, for the document.
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema type: "string" or "integer".
    pub kind: &'static str,
}

pub const PAGING: &[QueryParam] = &[
    QueryParam {
        name: "limit",
        description: "At most this many results (1 to 1000; default 1000).",
        kind: "integer",
    },
    QueryParam {
        name: "after",
        description: "Continue after this key: the `next` of the previous page.",
        kind: "string",
    },
];

/// One operation of the API: how it is documented and the handler that serves it.
pub struct Route<S> {
    pub method: Method,
    /// axum path syntax, which is also OpenAPI's: `/v1/things/{name}`.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    /// `/healthz` and `/openapi.json` only: everything else needs an admin token.
    pub public: bool,
    /// Name of the request body's schema (under `components/schemas`), if it takes one.
    pub request: Option<&'static str>,
    /// Success status and the name of its body's schema (None: no body).
    pub response: (u16, Option<&'static str>),
    pub query: &'static [QueryParam],
    pub handler: MethodRouter<AppState<S>>,
}

/// Every route of the control plane.
pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    let mut all = Vec::new();
    all.extend(meta::routes());
    all.extend(things::routes());
    all.extend(groups::routes());
    all.extend(certificates::routes());
    all.extend(templates::routes());
    all.extend(tokens::routes());
    all.extend(deployments::routes());
    all.extend(devices::routes());
    all.extend(jobs::routes());
    all.extend(streams::routes());
    all.extend(core_devices::routes());
    all
}

/// Routes another crate adds (the component store), already bound to its own state, and the
/// OpenAPI `paths` (and `components/schemas`) that document them. They are nested under
/// `/v1` and get the same admin-token check, but not [`REQUEST_TIMEOUT`]: they bound their
/// own requests (an upload of gigabytes takes longer than any fixed bound).
pub struct ApiExtension {
    pub router: Router,
    /// Routes for devices, nested under `/device/v1` behind the device-certificate check and
    /// the deployment authorization of [`crate::device_api`] instead of the admin token.
    pub device_router: Option<Router>,
    /// OpenAPI `paths` object, paths relative to `/v1` already prefixed (`/v1/components`).
    pub openapi_paths: serde_json::Value,
    pub openapi_schemas: serde_json::Value,
}

/// Builds the router from the route table plus any extensions.
pub fn router<S: Backend + 'static>(state: AppState<S>, extensions: Vec<ApiExtension>) -> Router {
    let table = routes::<S>();
    let _ = state
        .openapi
        .set(crate::openapi::document(&table, &extensions));
    let mut public = Router::new();
    let mut private = Router::new();
    for r in table {
        if r.public {
            public = public.route(r.path, r.handler);
        } else {
            private = private.route(r.path, r.handler);
        }
    }
    let auth = from_fn_with_state(state.clone(), authenticate::<S>);
    let mut app = public
        .merge(private.route_layer(auth.clone()))
        .with_state(state.clone())
        .layer(from_fn(request_timeout));
    // Extensions bound their own requests: the component store's uploads stream gigabytes,
    // bounded by idle time rather than by REQUEST_TIMEOUT for the whole.
    for ext in extensions {
        app = app.merge(ext.router.route_layer(auth.clone()));
        if let Some(device) = ext.device_router {
            app = app.merge(crate::device_api::router(state.clone(), device));
        }
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "no route {} {}; GET /openapi.json lists them",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!(
            "{} is not an operation of {}",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn request_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Timeout",
            format!(
                "the request took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}

/// The admin-token check: the bearer token's sha256 must be a stored token's (compared in
/// constant time). Runs before the body is read, so an unauthenticated request reaches
/// nothing.
async fn authenticate<S: Backend>(
    State(state): State<AppState<S>>,
    req: Request,
    next: Next,
) -> Response {
    // A device certificate authenticates on /device/v1 only: a request that carries one is
    // a device's, and no device may use the admin API, whatever token it sends.
    if req
        .extensions()
        .get::<crate::device_api::PeerCertificate>()
        .is_some()
    {
        return ApiError::unauthorized(
            "client certificates are accepted on /device/v1 only; admin routes take an admin token and no client certificate",
        )
        .into_response();
    }
    let Some(header) = req.headers().get(axum::http::header::AUTHORIZATION) else {
        return ApiError::unauthorized(
            "missing admin token: send `Authorization: Bearer <token>` (see DIR/admin.token)",
        )
        .into_response();
    };
    let Some(secret) = header.to_str().ok().and_then(crate::tokens::bearer) else {
        return ApiError::unauthorized("Authorization is not `Bearer <token>`").into_response();
    };
    let hash = crate::tokens::hash(secret);
    match state.store.find_admin_token(&hash).await {
        Ok(Some(t))
            if crate::tokens::constant_time_eq(t.token_hash.as_bytes(), hash.as_bytes()) =>
        {
            next.run(req).await
        }
        Ok(_) => ApiError::unauthorized("the admin token is not valid").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `?limit=&after=` of a listing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> ApiResult<Page> {
        let limit = self.limit.unwrap_or(lichen_cloud_store::MAX_PAGE);
        if limit == 0 || limit > lichen_cloud_store::MAX_PAGE {
            return Err(ApiError::invalid(
                "limit",
                format!(
                    "must be 1 to {} (got {limit})",
                    lichen_cloud_store::MAX_PAGE
                ),
            ));
        }
        Ok(Page {
            after: self.after.clone(),
            limit,
        })
    }
}

/// The key to pass as `after` for the next page: the last key when the page is full.
pub fn next_key<T>(items: &[T], page: &Page, key: impl Fn(&T) -> &str) -> Option<String> {
    if items.len() as u64 >= u64::from(page.effective_limit()) {
        items.last().map(|i| key(i).to_string())
    } else {
        None
    }
}

/// Checks a path or body field with a validator, as a 422 naming it.
pub fn check(r: Result<(), String>) -> ApiResult<()> {
    r.map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "InvalidField", m))
}

/// Now, RFC 3339 UTC.
pub fn now() -> String {
    lichen_sys::time::format_rfc3339_millis(std::time::SystemTime::now())
}
