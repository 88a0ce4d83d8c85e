//! What `lichen cloud run` starts: the data directory and CA, the store, the component store's
//! routes, the device endpoint, and the API over them. The one place that knows the concrete
//! parts; [`crate::server::start`] is generic over them.

use std::sync::Arc;

use lichen_cloud_store::Store;
use lichen_pki::LocalCa;

use lichen_cloud_endpoint::{EndpointConfig, EndpointHandle};
use tokio::sync::RwLock;

use crate::CloudError;
use crate::api::{ApiExtension, BoxFuture, DeviceEndpoint};
use crate::server::{CloudConfig, CloudHandle, DataDir, StartedEndpoint};

/// Starts a cloud as `lichen cloud run` does.
pub async fn start_cloud(config: &CloudConfig) -> Result<CloudHandle, CloudError> {
    let ca = crate::server::prepare_data_dir(&config.data_dir)?;
    let store = Store::open(&config.data_dir, config.database_url.as_deref()).await?;
    tracing::info!(backend = store.backend_name(), "store open");
    let store = Arc::new(store);
    crate::server::start(
        config,
        store.clone(),
        ca,
        extensions(&store, config)?,
        |store, ca| start_device_endpoint(config, store, ca),
    )
    .await
}

/// The API routes other crates add: the component store (`lichen-cloud-components`), its
/// artifacts under `<data>/artifacts`, on `/v1` for administrators and on `/device/v1`
/// (recipes and artifacts) for devices.
pub fn extensions(
    store: &Arc<Store>,
    config: &CloudConfig,
) -> Result<Vec<ApiExtension>, CloudError> {
    let artifacts = lichen_cloud_store::FsArtifactStore::new(&config.data_dir)?;
    let components = lichen_cloud_components::Components::new(
        Store::clone(store),
        artifacts,
        lichen_cloud_components::Limits::default(),
    );
    // Content a crash left stored without its version: swept in the background, so a
    // large store does not delay the start.
    let sweeper = components.clone();
    tokio::spawn(async move {
        match sweeper
            .sweep_unreferenced(lichen_cloud_components::SWEEP_GRACE)
            .await
        {
            Ok((examined, removed)) => {
                tracing::info!(examined, removed, "artifact sweep done");
            }
            Err(e) => tracing::warn!(error = %e, "artifact sweep failed"),
        }
    });
    Ok(vec![ApiExtension {
        device_router: Some(lichen_cloud_components::device_router(components.clone())),
        router: axum::Router::new().nest("/v1", lichen_cloud_components::router(components)),
        openapi_paths: lichen_cloud_components::openapi_paths("/v1"),
        openapi_schemas: lichen_cloud_components::openapi_schemas(),
    }])
}

/// The running endpoint as the API sees it. The handle sits behind a lock only so that
/// shutdown can take it (`EndpointHandle::shutdown` consumes it) while the API may still hold
/// this.
struct EndpointHooks(RwLock<Option<EndpointHandle<Store>>>);

impl DeviceEndpoint for EndpointHooks {
    fn certificate_revoked<'a>(&'a self, fingerprint: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(handle) = self.0.read().await.as_ref() {
                handle.certificate_revoked(fingerprint).await;
            }
        })
    }

    fn jobs_changed<'a>(&'a self, thing: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(handle) = self.0.read().await.as_ref() {
                handle.notify_jobs(thing).await;
            }
        })
    }

    /// Publishes the shadow's delta to the device (it also re-reads the shadow when it
    /// connects).
    fn shadow_changed<'a>(&'a self, thing: &'a str, shadow_name: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(handle) = self.0.read().await.as_ref() {
                handle.shadow_updated(thing, shadow_name).await;
            }
        })
    }

    fn client_devices_changed<'a>(&'a self, thing: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(handle) = self.0.read().await.as_ref() {
                handle.client_devices_changed(thing).await;
            }
        })
    }
}

/// The one place the device endpoint (`lichen-cloud-endpoint`: mTLS MQTT, shadows, jobs,
/// fleet provisioning) starts, on `--mqtt-listen`, with its state in `DIR/endpoint`.
pub async fn start_device_endpoint(
    config: &CloudConfig,
    store: Arc<Store>,
    ca: Arc<LocalCa>,
) -> Result<Option<StartedEndpoint>, CloudError> {
    let data = DataDir(config.data_dir.clone());
    crate::server::private_dir(&data.endpoint_dir())?;
    let mut endpoint_config = EndpointConfig::new(config.mqtt_listen, data.endpoint_dir());
    endpoint_config.server_names = config.hostnames.clone();
    let handle = lichen_cloud_endpoint::start(endpoint_config, (*store).clone(), ca)
        .await
        .map_err(|e| CloudError::Config(format!("starting the device endpoint: {e}")))?;
    let mqtt_addr = handle.mqtt_addr();
    let hooks = Arc::new(EndpointHooks(RwLock::new(Some(handle))));
    let stopping = hooks.clone();
    Ok(Some(StartedEndpoint {
        hooks,
        mqtt_addr,
        shutdown: Box::new(move || {
            Box::pin(async move {
                if let Some(handle) = stopping.0.write().await.take() {
                    handle.shutdown().await;
                }
            })
        }),
    }))
}
