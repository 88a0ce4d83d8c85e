//! Running the control plane: the data directory, the CA, the API's TLS listener (an accept
//! loop over tokio-rustls and hyper, bounded; it hands each request the connection's verified
//! client certificate, if any, as [`PeerCertificate`]), the first admin token, `api.json`, and the
//! device endpoint seam. [`start`] composes them; [`CloudHandle::shutdown`] stops them.
//!
//! Bounds: [`MAX_CONNECTIONS`] concurrent API connections (further ones wait in the kernel's
//! backlog), [`HANDSHAKE_TIMEOUT`] for TLS, [`HEADER_TIMEOUT`] to read a request's headers,
//! [`MAX_HEADER_BYTES`] of buffered headers, and the API's own body and request bounds.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use lichen_cloud_store::Backend;
use lichen_pki::LocalCa;
use lichen_sys::atomic::{PRIVATE, PUBLIC, write_atomic, write_json_atomic};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::CloudError;
use crate::api::{ApiExtension, AppState, BoxFuture, DeviceEndpoint, Endpoints};
use crate::device_api::PeerCertificate;
use crate::tls::{ServerCert, server_config, server_names};

pub const MAX_CONNECTIONS: usize = 256;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the server certificate's expiry is checked.
const RENEW_CHECK: Duration = Duration::from_secs(3600);

/// Where a cloud keeps its state.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    /// The cloud CA: `ca.key` (0600) and `ca.pem`.
    pub fn ca_dir(&self) -> PathBuf {
        self.0.join("ca")
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }
    /// The first admin token's secret (0600), written when the store has none.
    pub fn admin_token(&self) -> PathBuf {
        self.0.join("admin.token")
    }
    /// `{url, caPath, mqttEndpoint}`: how a CLI on this machine reaches the API.
    pub fn api_json(&self) -> PathBuf {
        self.0.join("api.json")
    }
    /// The device endpoint's own state.
    pub fn endpoint_dir(&self) -> PathBuf {
        self.0.join("endpoint")
    }
}

/// `DIR/api.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiInfo {
    pub url: String,
    pub ca_path: PathBuf,
    #[serde(default)]
    pub mqtt_endpoint: String,
}

#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub data_dir: PathBuf,
    /// `postgres://…`; SQLite under `data_dir` when absent.
    pub database_url: Option<String>,
    pub api_listen: SocketAddr,
    pub mqtt_listen: SocketAddr,
    /// Names devices and administrators reach this cloud by; the first is advertised.
    pub hostnames: Vec<String>,
}

/// What a started device endpoint gives the control plane.
pub struct StartedEndpoint {
    pub hooks: Arc<dyn DeviceEndpoint>,
    pub mqtt_addr: SocketAddr,
    /// Stops the endpoint; called once, after the API stopped.
    pub shutdown: EndpointShutdown,
}

pub type EndpointShutdown = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A running cloud.
pub struct CloudHandle {
    pub api_addr: SocketAddr,
    /// The URL a CLI on this machine uses (also in `api.json`).
    pub local_url: String,
    pub endpoints: Endpoints,
    pub ca_path: PathBuf,
    /// Set when this start created the first admin token.
    pub admin_token_created: Option<PathBuf>,
    shutdown_tx: watch::Sender<bool>,
    server: JoinHandle<()>,
    renewal: JoinHandle<()>,
    endpoint_shutdown: Option<EndpointShutdown>,
}

impl CloudHandle {
    /// Stops accepting, lets requests in flight finish (up to [`SHUTDOWN_GRACE`]), then
    /// stops the device endpoint.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        self.renewal.abort();
        let _ = (&mut self.server).await;
        if let Some(stop) = self.endpoint_shutdown.take() {
            stop().await;
        }
        tracing::info!("cloud stopped");
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CloudError + '_ {
    move |e| CloudError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// Creates `dir` (and parents) and makes it 0700.
pub fn private_dir(dir: &Path) -> Result<(), CloudError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// The host part of a URL or endpoint for an address this process listens on.
fn host_for(listen: SocketAddr, hostnames: &[String], advertise: bool) -> String {
    if advertise && let Some(h) = hostnames.first() {
        return bracket(h);
    }
    match listen.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}

fn bracket(h: &str) -> String {
    match h.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => h.to_string(),
    }
}

/// Starts the control plane over `store`. `start_endpoint` is the one place the device
/// endpoint is started (it gets the CA and the store; `None` runs the API alone).
pub async fn start<S, F, Fut>(
    config: &CloudConfig,
    store: Arc<S>,
    ca: Arc<LocalCa>,
    extensions: Vec<ApiExtension>,
    start_endpoint: F,
) -> Result<CloudHandle, CloudError>
where
    S: Backend + 'static,
    F: FnOnce(Arc<S>, Arc<LocalCa>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<StartedEndpoint>, CloudError>>,
{
    // api.json names paths a CLI in any working directory must find.
    let data = DataDir(absolute(&config.data_dir)?);
    let admin_token_created = bootstrap_admin_token(&*store, &data).await?;

    let names = server_names(&config.hostnames);
    let cert = ServerCert::issue(&ca, &names)?;
    let ca_der = ca
        .cert_der()
        .map_err(|e| CloudError::Tls(format!("cloud CA: {e}")))?;
    let acceptor = TlsAcceptor::from(Arc::new(server_config(cert.clone(), &ca_der)?));
    let listener = TcpListener::bind(config.api_listen)
        .await
        .map_err(|e| CloudError::Listen {
            what: "API",
            addr: config.api_listen.to_string(),
            source: e,
        })?;
    let api_addr = listener.local_addr().map_err(|e| CloudError::Listen {
        what: "API",
        addr: config.api_listen.to_string(),
        source: e,
    })?;

    let endpoint = start_endpoint(store.clone(), ca.clone()).await?;
    let mqtt_addr = endpoint
        .as_ref()
        .map(|e| e.mqtt_addr)
        .unwrap_or(config.mqtt_listen);
    let endpoints = Endpoints {
        iot_data_endpoint: format!(
            "{}:{}",
            host_for(mqtt_addr, &config.hostnames, true),
            mqtt_addr.port()
        ),
        api_endpoint: format!(
            "https://{}:{}",
            host_for(api_addr, &config.hostnames, true),
            api_addr.port()
        ),
        device_endpoint_running: endpoint.is_some(),
        root_ca_pem: ca.cert_pem.clone(),
    };
    let local_url = format!(
        "https://{}:{}",
        host_for(api_addr, &config.hostnames, false),
        api_addr.port()
    );
    let (hooks, endpoint_shutdown) = match endpoint {
        Some(e) => (Some(e.hooks), Some(e.shutdown)),
        None => (None, None),
    };
    let state = AppState::new(store, ca.clone(), hooks, endpoints.clone());
    let app = crate::api::router(state, extensions);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, acceptor, app, shutdown_rx));
    let renewal = tokio::spawn(async move {
        loop {
            tokio::time::sleep(RENEW_CHECK).await;
            match cert.renew_if_due(&ca, &names) {
                Ok(true) => tracing::info!("API server certificate renewed"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "API server certificate renewal failed"),
            }
        }
    });

    let info = ApiInfo {
        url: local_url.clone(),
        ca_path: data.ca_cert(),
        mqtt_endpoint: endpoints.iot_data_endpoint.clone(),
    };
    write_json_atomic(&data.api_json(), &info, PUBLIC)?;
    tracing::info!(api = %api_addr, mqtt = %endpoints.iot_data_endpoint, "cloud ready");
    Ok(CloudHandle {
        api_addr,
        local_url,
        endpoints,
        ca_path: data.ca_cert(),
        admin_token_created,
        shutdown_tx,
        server,
        renewal,
        endpoint_shutdown,
    })
}

fn absolute(dir: &Path) -> Result<PathBuf, CloudError> {
    std::path::absolute(dir).map_err(io_err(dir))
}

/// Prepares the data directory (0700) and loads or creates the cloud CA.
pub fn prepare_data_dir(dir: &Path) -> Result<Arc<LocalCa>, CloudError> {
    private_dir(dir)?;
    let data = DataDir(dir.to_path_buf());
    private_dir(&data.ca_dir())?;
    let ca = LocalCa::load_or_create_named(&data.ca_dir(), "lichen cloud CA")?;
    Ok(Arc::new(ca))
}

/// When the store holds no admin token (first start, or all were lost), creates one and
/// writes its secret to `DIR/admin.token` (0600). The secret is never logged.
async fn bootstrap_admin_token<S: Backend>(
    store: &S,
    data: &DataDir,
) -> Result<Option<PathBuf>, CloudError> {
    if !store.list_admin_tokens().await?.is_empty() {
        return Ok(None);
    }
    // The database decides: of several nodes starting together on one empty database,
    // exactly one stores its token; the others find one there and write no file.
    let (token, secret) = crate::api::tokens::new_token("created at first start");
    if !store.create_first_admin_token(&token).await? {
        tracing::info!("another control-plane node created the first admin token");
        return Ok(None);
    }
    let path = data.admin_token();
    write_atomic(&path, format!("{secret}\n").as_bytes(), PRIVATE)?;
    tracing::info!(id = %token.id, path = %path.display(), "first admin token written");
    Ok(Some(path))
}

/// The accept loop: at most [`MAX_CONNECTIONS`] connections; each does its TLS handshake and
/// serves HTTP/1.1 until it closes or shutdown is signalled.
async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "API TLS handshake timed out");
                    return;
                }
            };
            // The verified client certificate, if any, goes with every request of this
            // connection: /device/v1 authenticates by it, the admin routes refuse it.
            let peer_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| PeerCertificate::from_der(der.as_ref()));
            let service =
                tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if let Some(p) = &peer_cert {
                        req.extensions_mut().insert(p.clone());
                    }
                    tower::ServiceExt::oneshot(app.clone(), req)
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES);
            let conn =
                builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "API connection ended with an error");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
                }
            }
        });
    }
    drop(listener);
    // Every connection holds a permit: having them all back means all are done.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        SHUTDOWN_GRACE + Duration::from_secs(1),
        permits.acquire_many(all),
    )
    .await;
}
