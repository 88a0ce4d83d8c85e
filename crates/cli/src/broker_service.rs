//! Composes the embedded MQTT broker with the core.
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
    BrokerInfo, ControlExtension, ControlReply, ControlRequest, ControlService, DeviceInfo,
    DeviceRemoved, ListenerInfo,
};
use lichen_core::handle::BoxFuture;
use lichen_core::{CoreError, CoreHandle};
use serde_json::Value;
use tokio::sync::Mutex;

#[derive(Clone)]
pub struct BrokerService {
    core: CoreHandle,
    broker: Arc<Mutex<Option<BrokerHandle>>>,
    watcher: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl BrokerService {
    pub async fn start(core: CoreHandle) -> anyhow::Result<BrokerService> {
        let service = BrokerService {
            core: core.clone(),
            broker: Arc::new(Mutex::new(None)),
            watcher: Arc::new(std::sync::Mutex::new(None)),
        };
        service.reconcile().await;
        let mut changes = core.subscribe_configuration();
        let watch = service.clone();
        let task = tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(change) if BUILTIN_COMPONENTS.contains(&change.component.as_str()) => {
                        watch.reconcile().await;
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        watch.reconcile().await
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        *service.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(service)
    }

    fn deployed_builtins(&self) -> Vec<(String, Value)> {
        BUILTIN_COMPONENTS
            .iter()
            .filter_map(|name| {
                self.core
                    .get_configuration(name, &[])
                    .ok()
                    .map(|cfg| (name.to_string(), cfg))
            })
            .collect()
    }

    /// Starts the broker if it should run, and applies the built-in components' config.
    async fn reconcile(&self) {
        let builtins = self.deployed_builtins();
        let section = self.core.settings().service("broker").cloned();
        let mut guard = self.broker.lock().await;
        if guard.is_none() && (section.is_some() || !builtins.is_empty()) {
            match self.build_config(section, &builtins) {
                Ok(config) => match lichen_broker::start(config, self.core.bus().clone()).await {
                    Ok(handle) => {
                        for l in handle.local_addrs() {
                            tracing::info!(kind = ?l.kind, addr = %l.addr, "MQTT broker listening");
                        }
                        *guard = Some(handle);
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
        &self,
        section: Option<Value>,
        builtins: &[(String, Value)],
    ) -> Result<BrokerConfig, String> {
        let mut config: BrokerConfig = match section {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| format!("broker section of the core config: {e}"))?,
            None => BrokerConfig::default(),
        };
        if config.state_dir.is_relative() {
            config.state_dir = self.core.layout().broker_dir();
        }
        lichen_broker::config_from_components(config, builtins.iter().map(|(n, c)| (n.as_str(), c)))
            .map_err(|e| e.to_string())
    }

    pub async fn shutdown(self) {
        if let Some(task) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
        if let Some(handle) = self.broker.lock().await.take() {
            handle.shutdown().await;
        }
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

impl ControlExtension for BrokerService {
    fn service(&self) -> ControlService {
        ControlService::Devices
    }

    fn handle<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>> {
        Box::pin(self.device_op(request))
    }
}
