//! The embedded MQTT broker, the node's first service.
//!
//! The broker runs when the core's settings have a `broker` section, or as soon as one of the
//! built-in client-device components (`aws.greengrass.clientdevices.Auth`, `.mqtt.Bridge`,
//! `.mqtt.Moquette`, `.mqtt.EMQX`) is deployed — as in Greengrass, where deploying the
//! broker component is what starts a broker. Those components' configuration (Auth's
//! `deviceGroups`, Bridge's `mqttTopicMapping`) is applied whenever a deployment changes it.
//! `device.*` control operations (`lichen device add|remove|list`) are served here.

use std::sync::Arc;

use lichen_broker::{BUILTIN_COMPONENTS, BrokerConfig, BrokerHandle};
use lichen_core::control::{
    BrokerInfo, ControlReply, ControlRequest, ControlService, DeviceInfo, DeviceRemoved,
    ListenerInfo,
};
use lichen_core::handle::BoxFuture;
use lichen_core::{CoreError, CoreHandle};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::service::{Service, ServiceContext, ServiceError};

/// The embedded MQTT broker as a node service. Starts on demand (see the module docs).
#[derive(Default)]
pub struct BrokerService {
    broker: Mutex<Option<Arc<BrokerHandle>>>,
}

impl BrokerService {
    pub fn new() -> Self {
        BrokerService::default()
    }

    fn deployed_builtins(core: &CoreHandle) -> Vec<(String, Value)> {
        BUILTIN_COMPONENTS
            .iter()
            .filter_map(|name| {
                core.get_configuration(name, &[])
                    .ok()
                    .map(|cfg| (name.to_string(), cfg))
            })
            .collect()
    }

    /// Starts the broker if it should run, and applies the built-in components' config.
    async fn reconcile(&self, ctx: &ServiceContext) {
        let builtins = Self::deployed_builtins(&ctx.core);
        let section = ctx.settings.service("broker").cloned();
        let mut guard = self.broker.lock().await;
        if guard.is_none() && (section.is_some() || !builtins.is_empty()) {
            match Self::build_config(ctx, section, &builtins) {
                Ok(config) => match lichen_broker::start(config, ctx.bus.clone()).await {
                    Ok(handle) => {
                        for l in handle.local_addrs() {
                            tracing::info!(kind = ?l.kind, addr = %l.addr, "MQTT broker listening");
                        }
                        *guard = Some(Arc::new(handle));
                    }
                    Err(e) => tracing::error!(error = %e, "the MQTT broker could not start"),
                },
                Err(e) => tracing::error!(error = %e, "invalid broker configuration"),
            }
            return;
        }
        if let Some(handle) = guard.as_ref() {
            for (name, cfg) in &builtins {
                if let Err(e) = handle.apply_component_config(name, cfg) {
                    tracing::error!(component = %name, error = %e, "cannot apply broker configuration");
                }
            }
        }
    }

    fn build_config(
        ctx: &ServiceContext,
        section: Option<Value>,
        builtins: &[(String, Value)],
    ) -> Result<BrokerConfig, String> {
        let mut config: BrokerConfig = match section {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| format!("broker section of the core config: {e}"))?,
            None => BrokerConfig::default(),
        };
        if config.state_dir.is_relative() {
            config.state_dir = ctx.layout.broker_dir();
        }
        lichen_broker::config_from_components(config, builtins.iter().map(|(n, c)| (n.as_str(), c)))
            .map_err(|e| e.to_string())
    }

    async fn device_op(&self, request: ControlRequest) -> Result<ControlReply, CoreError> {
        let guard = self.broker.lock().await;
        let broker = guard.as_ref().ok_or_else(|| {
            CoreError::NotSupported(
                "client devices without a broker: add a `broker` section to the core config or deploy \
                 aws.greengrass.clientdevices.Auth"
                    .into(),
            )
        })?;
        match request {
            ControlRequest::DeviceAdd { name, cert_pem } => {
                let info = broker
                    .add_device(&name, &cert_pem)
                    .map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
                Ok(ControlReply::Device(DeviceInfo {
                    name: info.name,
                    fingerprint: info.fingerprint,
                }))
            }
            ControlRequest::DeviceRemove { name } => {
                if broker.remove_device(&name) {
                    Ok(ControlReply::DeviceRemoved(DeviceRemoved {
                        name,
                        removed: true,
                    }))
                } else {
                    Err(CoreError::InvalidArgument(format!(
                        "no device named {name}"
                    )))
                }
            }
            ControlRequest::DeviceList {} => Ok(ControlReply::Devices(
                broker
                    .list_devices()
                    .into_iter()
                    .map(|d| DeviceInfo {
                        name: d.name,
                        fingerprint: d.fingerprint,
                    })
                    .collect(),
            )),
            ControlRequest::DeviceBroker {} => Ok(ControlReply::Broker(BrokerInfo {
                listeners: broker
                    .local_addrs()
                    .iter()
                    .map(|l| ListenerInfo {
                        kind: format!("{:?}", l.kind).to_lowercase(),
                        addr: l.addr.to_string(),
                    })
                    .collect(),
                ca_cert_path: broker.ca_cert_path().map(|p| p.to_path_buf()),
            })),
            other => Err(CoreError::NotSupported(format!(
                "control operation {:?}",
                other.op()
            ))),
        }
    }
}

impl Service for BrokerService {
    fn name(&self) -> &str {
        "broker"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        // A broker that cannot start is logged, not fatal: the rest of the device runs.
        Box::pin(async move {
            self.reconcile(ctx).await;
            Ok(())
        })
    }

    fn follows(&self) -> &[&str] {
        BUILTIN_COMPONENTS
    }

    fn apply_configuration<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        _component: Option<&'a str>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.reconcile(ctx))
    }

    fn control_service(&self) -> Option<ControlService> {
        Some(ControlService::Devices)
    }

    fn control<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(self.device_op(request))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(handle) = self.broker.lock().await.take() {
                handle.shutdown().await;
            }
        })
    }
}

impl BrokerService {
    /// The running broker (`None` while it is not running), for the cloud bridge.
    pub async fn handle(&self) -> Option<Arc<BrokerHandle>> {
        self.broker.lock().await.clone()
    }

    /// Where the broker listens; empty while it is not running.
    pub async fn local_addrs(&self) -> Vec<lichen_broker::ListenerAddr> {
        match self.broker.lock().await.as_ref() {
            Some(b) => b.local_addrs().to_vec(),
            None => Vec::new(),
        }
    }
}
