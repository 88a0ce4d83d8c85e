//! The core's fleet deployment agent (issue 10, device side): a node service that, when the
//! core has a cloud connection, takes fleet deployments (thing-group jobs and the thing's
//! deployment shadow) over the [`CloudLink`], runs them on the core and reports their status
//! and the device's fleet status. See [`agent`] for the protocol and bounds, [`status`] for
//! what is reported.

pub mod agent;
pub mod fetch;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use lichen_core::handle::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use agent::AgentOptions;

use lichen_mqtt_client::TlsFiles;

use super::cloud::CloudService;
use super::provisioning::{PROVISIONING_TIMEOUT, ensure_identity};
use crate::service::{Service, ServiceContext, ServiceError};

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The fleet agent as a node service; idle without a cloud connection. Starts after
/// [`CloudService`] (whose link it takes) and stops before it.
pub struct FleetService {
    cloud: Arc<CloudService>,
    options: AgentOptions,
    running: tokio::sync::Mutex<Option<Running>>,
}

impl FleetService {
    pub fn new(cloud: Arc<CloudService>) -> Self {
        Self::with_options(cloud, AgentOptions::default())
    }

    pub fn with_options(cloud: Arc<CloudService>, options: AgentOptions) -> Self {
        FleetService {
            cloud,
            options,
            running: tokio::sync::Mutex::new(None),
        }
    }
}

/// `fleetStatus.periodicStatusPublishIntervalSeconds` of the Nucleus configuration, if set.
fn configured_status_interval(ctx: &ServiceContext) -> Option<Duration> {
    let key = [
        "fleetStatus".to_string(),
        "periodicStatusPublishIntervalSeconds".to_string(),
    ];
    let value = ctx
        .core
        .get_configuration("aws.greengrass.Nucleus", &key)
        .ok()?;
    let secs = value
        .as_u64()
        .or_else(|| value.as_f64().map(|f| f as u64))?;
    // Below a minute would flood the cloud; Greengrass enforces a floor too.
    Some(Duration::from_secs(secs.max(60)))
}

/// How deployments are fetched: from `cloud.apiEndpoint` as the device, or (`None`) not at
/// all, the components resolving from the core's store.
async fn staging(ctx: &ServiceContext) -> Result<Option<fetch::Staging>, String> {
    let (Some(cloud), Some(ca)) = (&ctx.settings.cloud, &ctx.settings.root_ca_path) else {
        return Ok(None);
    };
    let Some(api) = cloud.api_endpoint.clone() else {
        return Ok(None);
    };
    let identity = ensure_identity(ctx.layout.root(), &ctx.settings, PROVISIONING_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let files = TlsFiles {
        ca: ca.clone(),
        client_cert: Some(identity.cert_path.clone()),
        client_key: Some(identity.key_path.clone()),
        server_name: None,
    };
    let fetcher = fetch::Fetcher::new(&api, &files).map_err(|e| e.to_string())?;
    let mut staging = fetch::Staging::new(fetcher, ctx.layout.root().join("cloud").join("fetch"));
    staging.platform = ctx.core.platform();
    staging.store = Some(lichen_core::store::ComponentStore::new(ctx.layout.clone()));
    Ok(Some(staging))
}

impl Service for FleetService {
    fn name(&self) -> &str {
        "fleet"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            let Some(link) = self.cloud.link() else {
                return Ok(());
            };
            let mut options = self.options.clone();
            if let Some(interval) = configured_status_interval(ctx) {
                options.status_interval = interval;
            }
            // A bad apiEndpoint must not stop the core: its fleet deployments fail with why.
            let staging = match staging(ctx).await {
                Ok(s) => Ok(s.map(Arc::new)),
                Err(e) => {
                    tracing::error!(error = %e, "fleet deployments cannot fetch from the cloud");
                    Err(e)
                }
            };
            let agent = agent::Agent {
                core: ctx.core.clone(),
                link,
                options,
                staging,
            };
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(agent.run(stop_rx));
            *self.running.lock().await = Some(Running { stop, task });
            tracing::info!("fleet deployment agent started");
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(running) = self.running.lock().await.take() {
                let _ = running.stop.send(true);
                let mut task = running.task;
                if tokio::time::timeout(Duration::from_secs(5), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
            }
        })
    }
}
