//! What `lichen cloud run` starts: the data directory and CA, the store, the component store's
//! routes, the device endpoint, and the API over them. The one place that knows the concrete
//! parts; [`crate::server::start`] is generic over them.

use std::sync::Arc;

use lichen_cloud_store::Store;
use lichen_pki::LocalCa;

use crate::CloudError;
use crate::api::ApiExtension;
use crate::server::{CloudConfig, CloudHandle, StartedEndpoint};

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
/// artifacts under `<data>/artifacts`.
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
    Ok(vec![ApiExtension {
        router: axum::Router::new().nest("/v1", lichen_cloud_components::router(components)),
        openapi_paths: lichen_cloud_components::openapi_paths("/v1"),
        openapi_schemas: lichen_cloud_components::openapi_schemas(),
    }])
}

/// The one place the device endpoint starts (`lichen-cloud-endpoint`, when it is part of
/// the build); `None` runs the API alone.
pub async fn start_device_endpoint(
    _config: &CloudConfig,
    _store: Arc<Store>,
    _ca: Arc<LocalCa>,
) -> Result<Option<StartedEndpoint>, CloudError> {
    Ok(None)
}
