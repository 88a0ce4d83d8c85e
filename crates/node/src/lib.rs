//! A running lichen device, composed: the bus, the core, the IPC server, the services and the
//! control channel.
//!
//! [`Node::start`] creates the bus, runs fleet provisioning when the `cloud` section asks for
//! it and no identity is stored yet (the provisioned thing name becomes the core's), prepares
//! the core (takes the root's lock, loads state),
//! starts IPC with the core's operations plus those the services register, starts every
//! [`Service`], launches the components (so they never find a service missing), then serves
//! the control channel. [`Node::shutdown`] stops them in the order that keeps the root
//! consistent for the next core: the control channel, the services (newest first), IPC,
//! the components, and the root's lock last — so a core started on the same root while this
//! one stops never has its sockets removed or its databases shared.
//!
//! The binary (`lichen core run`) and in-process tests compose a device only through here.

pub mod check;
pub mod service;
pub mod services;

use std::path::PathBuf;
use std::sync::Arc;

use lichen_core::control::{
    ControlExtension, ControlReply, ControlRequest, ControlServer, ControlService, Extensions,
};
use lichen_core::handle::BoxFuture;
use lichen_core::settings::Settings;
use lichen_core::{Core, CoreError, CoreHandle, CoreOptions};
use lichen_ipc::{IpcError, IpcServer, Operations};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

pub use crate::services::cloud::BridgeService;
pub use service::{Service, ServiceContext, ServiceError};
pub use services::broker::BrokerService;
pub use services::cloud::{CloudLink, CloudOptions, CloudService, LinkError, LinkState};
pub use services::cloud::{CloudSpool, SpoolerSettings, StorageType};
pub use services::fleet::{AgentOptions, FleetService};
pub use services::functions::FunctionsService;
pub use services::streams::StreamsService;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("starting the IPC server: {0}")]
    Ipc(#[from] IpcError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Provisioning(#[from] services::provisioning::ProvisioningError),
    #[error("service {service}: {source}")]
    Operation {
        service: String,
        #[source]
        source: lichen_ipc::DuplicateOperation,
    },
}

pub struct NodeOptions {
    pub root: PathBuf,
    pub settings: Settings,
}

/// The services a device runs by default: the MQTT broker (which starts only when configured
/// or when a client-device component is deployed) and the cloud connection (only with a
/// `cloud` section; it reports the broker's addresses, and stops before it).
pub fn default_services() -> Vec<Arc<dyn Service>> {
    let broker = Arc::new(BrokerService::new());
    let cloud = Arc::new(CloudService::new(Some(broker.clone())));
    let fleet = Arc::new(FleetService::new(cloud.clone()));
    // After the broker and the cloud: it joins the two (the bridge's IotCore leg).
    let bridge = Arc::new(BridgeService::new(broker.clone(), cloud.clone()));
    // After the cloud, whose link its sync uses (and stops before it).
    let shadow = Arc::new(services::shadow::ShadowService::new(Some(cloud.clone())));
    // Runs while aws.greengrass.StreamManager is deployed.
    let streams = Arc::new(StreamsService::new());
    // After the cloud: IOT_CORE event sources subscribe through its link.
    let functions = Arc::new(services::functions::FunctionsService::with_cloud(
        cloud.clone(),
    ));
    #[allow(unused_mut)]
    let mut services: Vec<Arc<dyn Service>> = vec![
        broker,
        cloud.clone(),
        fleet,
        bridge,
        shadow,
        streams,
        functions,
    ];
    #[cfg(feature = "ml")]
    services.push(Arc::new(Arc::new(services::ml::MlService::new())));
    #[cfg(feature = "wasm")]
    services.push(Arc::new(services::wasm::WasmService::with_cloud(cloud)));
    services
}

/// A running device. Stop it with [`Node::shutdown`]; dropping it aborts its tasks without
/// running the components' Shutdown steps.
pub struct Node {
    core: Core,
    ctx: ServiceContext,
    ipc: IpcServer,
    services: Vec<Arc<dyn Service>>,
    watcher: JoinHandle<()>,
    control: ControlServer,
}

impl Node {
    /// Starts a device on `options.root` with `services` (see the crate documentation for
    /// the order). Fails fast when another core holds the root.
    pub async fn start(
        options: NodeOptions,
        services: Vec<Arc<dyn Service>>,
    ) -> Result<Node, NodeError> {
        let bus = lichen_bus::Bus::new();
        let mut settings = options.settings;
        // Fleet provisioning comes first: the thing name it yields is the core's
        // (AWS_IOT_THING_NAME, `{iot:thingName}`) before any component starts.
        if settings
            .cloud
            .as_ref()
            .is_some_and(|c| c.fleet_provisioning.is_some())
        {
            let identity = services::provisioning::ensure_identity(
                &options.root,
                &settings,
                services::provisioning::PROVISIONING_TIMEOUT,
            )
            .await?;
            settings.thing_name = identity.thing_name;
        }
        let mut core = Core::prepare_on_bus(
            CoreOptions {
                root: options.root,
                settings: settings.clone(),
            },
            bus.clone(),
        )
        .await?;
        let handle = core.handle();
        let ctx = ServiceContext {
            core: handle.clone(),
            bus,
            layout: handle.layout().clone(),
            settings,
        };
        let mut operations = Operations::builtin();
        for service in &services {
            for op in service.ipc_operations() {
                operations
                    .register(op)
                    .map_err(|source| NodeError::Operation {
                        service: service.name().to_string(),
                        source,
                    })?;
            }
        }
        let ipc = lichen_ipc::serve_with(handle.clone(), operations).await?;
        // Subscribed before the services start, so that no change between their start and
        // the watcher's is missed.
        let changes = handle.subscribe_configuration();
        let mut started: Vec<Arc<dyn Service>> = Vec::with_capacity(services.len());
        for service in services {
            if let Err(e) = service.start(&ctx).await {
                stop_services(&started).await;
                ipc.shutdown().await;
                drop(core.shutdown().await);
                return Err(e.into());
            }
            tracing::debug!(service = service.name(), "service started");
            started.push(service);
        }
        let watcher = tokio::spawn(watch_configuration(changes, ctx.clone(), started.clone()));
        let launched = core.launch().await;
        let control = launched.and_then(|()| {
            lichen_core::control::serve(handle.clone(), control_extensions(&started))
        });
        let control = match control {
            Ok(control) => control,
            Err(e) => {
                watcher.abort();
                stop_services(&started).await;
                ipc.shutdown().await;
                drop(core.shutdown().await);
                return Err(e.into());
            }
        };
        Ok(Node {
            core,
            ctx,
            ipc,
            services: started,
            watcher,
            control,
        })
    }

    pub fn handle(&self) -> &CoreHandle {
        &self.ctx.core
    }

    pub fn bus(&self) -> &lichen_bus::Bus {
        &self.ctx.bus
    }

    pub fn ipc(&self) -> &IpcServer {
        &self.ipc
    }

    /// Stops the device: the control channel, then the services (newest first), then IPC,
    /// then the components (Shutdown steps within their timeouts, process groups ended), and
    /// releases the root's lock last.
    pub async fn shutdown(self) {
        self.control.shutdown();
        self.watcher.abort();
        stop_services(&self.services).await;
        self.ipc.shutdown().await;
        let lock = self.core.shutdown().await;
        drop(lock);
        tracing::debug!("root released");
    }
}

async fn stop_services(services: &[Arc<dyn Service>]) {
    for service in services.iter().rev() {
        service.shutdown().await;
        tracing::debug!(service = service.name(), "service stopped");
    }
}

/// Tells each service when a component it follows changes configuration.
async fn watch_configuration(
    mut changes: tokio::sync::broadcast::Receiver<lichen_core::ConfigChange>,
    ctx: ServiceContext,
    services: Vec<Arc<dyn Service>>,
) {
    loop {
        match changes.recv().await {
            Ok(change) => {
                for s in &services {
                    if service::follows(s.follows(), &change.component) {
                        s.apply_configuration(&ctx, Some(&change.component)).await;
                    }
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    "configuration changes missed; services re-read theirs"
                );
                for s in services.iter().filter(|s| !s.follows().is_empty()) {
                    s.apply_configuration(&ctx, None).await;
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Routes the control requests of one [`ControlService`] to the services that serve it, in
/// registration order: a service answers `ComponentNotFound` for a component it does not run
/// (e.g. the Lambda service for a WASM function), and the next one is asked. When none runs
/// it, that error is the answer.
struct ServiceControl {
    services: Vec<Arc<dyn Service>>,
    serves: ControlService,
}

impl ControlExtension for ServiceControl {
    fn service(&self) -> ControlService {
        self.serves
    }

    fn handle<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(async move {
            let mut last = None;
            for service in &self.services {
                match service.control(request.clone()).await {
                    Err(CoreError::ComponentNotFound(name)) => {
                        last = Some(CoreError::ComponentNotFound(name));
                    }
                    other => return other,
                }
            }
            Err(last.unwrap_or_else(|| {
                CoreError::NotSupported(format!("control operation {:?}", request.op()))
            }))
        })
    }
}

fn control_extensions(services: &[Arc<dyn Service>]) -> Extensions {
    let mut grouped: Vec<ServiceControl> = Vec::new();
    for service in services {
        let Some(serves) = service.control_service() else {
            continue;
        };
        match grouped.iter_mut().find(|g| g.serves == serves) {
            Some(group) => group.services.push(service.clone()),
            None => grouped.push(ServiceControl {
                services: vec![service.clone()],
                serves,
            }),
        }
    }
    grouped
        .into_iter()
        .map(|g| Arc::new(g) as Arc<dyn ControlExtension>)
        .collect()
}

#[cfg(test)]
mod control_tests;
