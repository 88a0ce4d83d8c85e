//! `CoreHandle`: the one way services outside the core (IPC server, control channel, broker
//! wiring) reach the runtime. Cheap to clone.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::deployment::model::{DeploymentRecord, DeploymentRequest};
use crate::error::Result;
use crate::lifecycle::state::{LifecycleState, ReportedState};
use crate::paths::RootLayout;
use crate::runtime::Runtime;
pub use lichen_model::component::{ComponentInfo, Metric};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A configuration change, sent to `SubscribeToConfigurationUpdate` subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    pub component: String,
    /// Path of the changed node (empty = the whole configuration).
    pub key_path: Vec<String>,
}

/// A lifecycle transition, for observers.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleEvent {
    pub component: String,
    pub state: LifecycleState,
}

/// How a deployment consults components through IPC. Installed by the IPC server; without
/// it deployments skip these steps.
pub trait DeploymentHooks: Send + Sync + 'static {
    /// `proposed` holds the new configuration of every component whose configuration changes.
    /// Components subscribed to validation get the proposal and must answer within
    /// `timeout`; `Err(reason)` (a REJECTED report) fails the deployment.
    fn validate_configuration<'a>(
        &'a self,
        deployment_id: &'a str,
        proposed: &'a BTreeMap<String, serde_json::Value>,
        timeout: Duration,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;

    /// Tells components subscribed to component updates that an update is about to happen,
    /// and resolves when none defers any longer or `timeout` has passed.
    fn notify_pre_update<'a>(
        &'a self,
        deployment_id: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, ()>;

    /// Tells subscribed components the update is done.
    fn notify_post_update(&self, deployment_id: &str);
}

#[derive(Clone)]
pub struct CoreHandle {
    pub(crate) rt: Arc<Runtime>,
}

impl CoreHandle {
    pub fn layout(&self) -> &RootLayout {
        &self.rt.layout
    }

    pub fn thing_name(&self) -> &str {
        &self.rt.settings.thing_name
    }

    pub fn bus(&self) -> &lichen_bus::Bus {
        &self.rt.bus
    }

    /// The platform deployments select recipe manifests for: os and architecture of this
    /// machine plus the Nucleus `platformOverride` attributes.
    pub fn platform(&self) -> lichen_recipe::Platform {
        self.rt.platform()
    }

    /// The core's settings (from `--config`), including sections for other services.
    pub fn settings(&self) -> &crate::settings::Settings {
        &self.rt.settings
    }

    /// Marks a built-in Greengrass component (e.g. `aws.greengrass.ShadowManager`) as
    /// provided by a service that started, so deployments that depend on it no longer
    /// report it missing. Returns false for a name that is not a built-in.
    pub fn provide_builtin(&self, name: &str) -> bool {
        self.rt.provided_builtins.provide(name)
    }

    /// Maps an SVCUID to the component it was issued to.
    pub fn authenticate(&self, svcuid: &str) -> Option<String> {
        self.rt.tokens.component_for(svcuid)
    }

    /// The SVCUID of `component`, minted on first use (the same token its processes get in
    /// their environment), so that tests and benchmarks can act as a component. Only with the
    /// `test-support` feature: a holder of the handle could otherwise impersonate any
    /// component. Never log it.
    #[cfg(feature = "test-support")]
    pub fn component_token(&self, component: &str) -> String {
        self.rt.tokens.token_for(component)
    }

    pub fn list_components(&self) -> Vec<ComponentInfo> {
        self.rt.list_components()
    }

    pub fn component_details(&self, name: &str) -> Result<ComponentInfo> {
        self.rt.component_details(name)
    }

    pub async fn restart_component(&self, name: &str) -> Result<()> {
        self.rt.restart_component(name).await
    }

    pub async fn stop_component(&self, name: &str) -> Result<()> {
        self.rt.stop_component(name).await
    }

    /// Freezes the component's processes (cgroup freezer, or SIGSTOP on its process groups).
    pub async fn pause_component(&self, name: &str) -> Result<()> {
        self.rt.pause_component(name, true).await
    }

    pub async fn resume_component(&self, name: &str) -> Result<()> {
        self.rt.pause_component(name, false).await
    }

    /// IPC `UpdateState` from `component`.
    pub fn report_state(&self, component: &str, state: ReportedState) -> Result<()> {
        self.rt.report_state(component, state)
    }

    /// `GetConfiguration`: the value at `key_path` (empty = whole configuration).
    pub fn get_configuration(
        &self,
        component: &str,
        key_path: &[String],
    ) -> Result<serde_json::Value> {
        self.rt.get_configuration(component, key_path)
    }

    /// `UpdateConfiguration` on `component`'s own configuration. `timestamp_ms` follows the
    /// Greengrass rule: an update older than the node's last update is refused with
    /// [`crate::CoreError::FailedUpdateCondition`].
    pub fn update_configuration(
        &self,
        component: &str,
        key_path: &[String],
        timestamp_ms: u64,
        value_to_merge: serde_json::Value,
    ) -> Result<()> {
        self.rt
            .update_configuration(component, key_path, timestamp_ms, value_to_merge)
    }

    pub fn subscribe_configuration(&self) -> tokio::sync::broadcast::Receiver<ConfigChange> {
        self.rt.config.subscribe()
    }

    pub fn subscribe_lifecycle(&self) -> tokio::sync::broadcast::Receiver<LifecycleEvent> {
        self.rt.lifecycle_events.subscribe()
    }

    /// Queues a deployment and returns its id.
    pub async fn create_deployment(&self, request: DeploymentRequest) -> Result<String> {
        self.rt.create_deployment(request).await
    }

    pub fn deployment(&self, id: &str) -> Result<DeploymentRecord> {
        self.rt.deployment(id)
    }

    /// Newest first.
    pub fn list_deployments(&self) -> Vec<DeploymentRecord> {
        self.rt.list_deployments()
    }

    pub async fn cancel_deployment(&self, id: &str) -> Result<()> {
        self.rt.cancel_deployment(id).await
    }

    pub fn put_component_metrics(&self, component: &str, metrics: Vec<Metric>) -> Result<()> {
        self.rt.put_component_metrics(component, metrics)
    }

    pub fn set_deployment_hooks(&self, hooks: Arc<dyn DeploymentHooks>) {
        self.rt.set_hooks(hooks);
    }

    /// Runs the steps of components whose recipe has this `ComponentType` (its
    /// `ComponentType::as_str()` spelling) through `runner` instead of the process runner.
    /// Services call it in `Service::start`, before components launch; a second runner for
    /// the same type replaces the first (with a warning).
    pub fn register_runner(
        &self,
        component_type: &str,
        runner: Arc<dyn crate::lifecycle::launch::Runner>,
    ) {
        self.rt.register_runner(component_type, runner);
    }

    /// The runner of ordinary process components, for a runner that hands some steps
    /// (e.g. a recipe's own Install script) back to it.
    pub fn process_runner(&self) -> Arc<dyn crate::lifecycle::launch::Runner> {
        self.rt.process_runner.clone()
    }

    /// The registry of live process groups, so that a runner's own processes (a function's
    /// instances) are ended at shutdown and reaped after a crash like step processes.
    pub fn process_groups(&self) -> Arc<crate::lifecycle::orphans::GroupRegistry> {
        self.rt.orphans.clone()
    }
}
