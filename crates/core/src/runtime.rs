//! The runtime: composes the config store, tokens, supervisor and deployment engine. Only
//! [`crate::handle::CoreHandle`] is public; this is its implementation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use crate::config::ConfigStore;
use crate::deployment::model::{DeploymentRecord, DeploymentRequest};
use crate::error::{CoreError, Result};
use crate::handle::{ComponentInfo, DeploymentHooks, LifecycleEvent, Metric};
use crate::lifecycle::state::ReportedState;
use crate::paths::RootLayout;
use crate::settings::Settings;
use crate::tokens::TokenRegistry;

/// Metrics kept per component (newest win).
pub const MAX_METRICS_PER_COMPONENT: usize = 64;

pub struct Runtime {
    pub(crate) layout: RootLayout,
    pub(crate) settings: Settings,
    pub(crate) bus: lichen_bus::Bus,
    pub(crate) config: ConfigStore,
    pub(crate) tokens: TokenRegistry,
    pub(crate) lifecycle_events: broadcast::Sender<LifecycleEvent>,
    pub(crate) hooks: RwLock<Option<Arc<dyn DeploymentHooks>>>,
    pub(crate) metrics: Mutex<HashMap<String, Vec<Metric>>>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Runtime {
    pub(crate) fn list_components(&self) -> Vec<ComponentInfo> {
        Vec::new()
    }

    pub(crate) fn component_details(&self, name: &str) -> Result<ComponentInfo> {
        Err(CoreError::ComponentNotFound(name.to_string()))
    }

    pub(crate) async fn restart_component(&self, name: &str) -> Result<()> {
        Err(CoreError::ComponentNotFound(name.to_string()))
    }

    pub(crate) async fn stop_component(&self, name: &str) -> Result<()> {
        Err(CoreError::ComponentNotFound(name.to_string()))
    }

    pub(crate) async fn pause_component(&self, name: &str, _pause: bool) -> Result<()> {
        Err(CoreError::ComponentNotFound(name.to_string()))
    }

    pub(crate) fn report_state(&self, component: &str, _state: ReportedState) -> Result<()> {
        Err(CoreError::ComponentNotFound(component.to_string()))
    }

    pub(crate) fn get_configuration(
        &self,
        component: &str,
        key_path: &[String],
    ) -> Result<serde_json::Value> {
        if !self.config.contains(component) {
            return Err(CoreError::ComponentNotFound(component.to_string()));
        }
        self.config.get(component, key_path).ok_or_else(|| {
            CoreError::InvalidArgument(format!(
                "key path /{} not found in the configuration of {component}",
                key_path.join("/")
            ))
        })
    }

    pub(crate) fn update_configuration(
        &self,
        component: &str,
        key_path: &[String],
        timestamp_ms: u64,
        value: serde_json::Value,
    ) -> Result<()> {
        self.config
            .update_from_component(component, key_path, timestamp_ms, value)
    }

    pub(crate) async fn create_deployment(&self, _request: DeploymentRequest) -> Result<String> {
        Err(CoreError::NotSupported("deployments".into()))
    }

    pub(crate) fn deployment(&self, id: &str) -> Result<DeploymentRecord> {
        Err(CoreError::DeploymentNotFound(id.to_string()))
    }

    pub(crate) fn list_deployments(&self) -> Vec<DeploymentRecord> {
        Vec::new()
    }

    pub(crate) async fn cancel_deployment(&self, id: &str) -> Result<()> {
        Err(CoreError::DeploymentNotFound(id.to_string()))
    }

    pub(crate) fn put_component_metrics(
        &self,
        component: &str,
        metrics: Vec<Metric>,
    ) -> Result<()> {
        let mut all = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let list = all.entry(component.to_string()).or_default();
        let now = now_ms();
        for mut m in metrics {
            m.timestamp = now;
            list.retain(|old| old.name != m.name);
            list.push(m);
        }
        let excess = list.len().saturating_sub(MAX_METRICS_PER_COMPONENT);
        list.drain(..excess);
        Ok(())
    }

    pub(crate) fn set_hooks(&self, hooks: Arc<dyn DeploymentHooks>) {
        *self.hooks.write().unwrap_or_else(|p| p.into_inner()) = Some(hooks);
    }
}
