//! The runtime: composes the config store, component store, tokens, supervisor and
//! deployment queue. [`crate::handle::CoreHandle`] is its public face.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use lichen_recipe::{Lifecycle, Platform, Recipe, Step};
use tokio::sync::broadcast;

use crate::config::ConfigStore;
use crate::deployment::model::{DeploymentRecord, DeploymentRequest};
use crate::deployment::planner::RenderVars;
use crate::deployment::queue::DeploymentQueue;
use crate::error::{CoreError, Result};
use crate::handle::{ComponentInfo, DeploymentHooks, LifecycleEvent, Metric};
use crate::lifecycle::launch::{LaunchContext, Runner};
use crate::lifecycle::orphans::GroupRegistry;
use crate::lifecycle::process::RunAs;
use crate::lifecycle::state::{LifecycleState, ReportedState};
use crate::lifecycle::{ComponentSpec, Supervisor};
use crate::paths::RootLayout;
use crate::settings::Settings;
use crate::store::ComponentStore;
use crate::tokens::TokenRegistry;

/// Metrics kept per component (newest win).
pub const MAX_METRICS_PER_COMPONENT: usize = 64;

/// The Greengrass nucleus version lichen is compatible with; components see it as
/// `GGC_VERSION` and built-in components report it.
pub const GGC_VERSION: &str = "2.14.0";

pub struct Runtime {
    pub(crate) layout: RootLayout,
    pub(crate) settings: Settings,
    pub(crate) bus: lichen_bus::Bus,
    pub(crate) config: ConfigStore,
    pub(crate) store: ComponentStore,
    pub(crate) tokens: TokenRegistry,
    pub(crate) supervisor: Supervisor,
    pub(crate) orphans: Arc<crate::lifecycle::orphans::GroupRegistry>,
    /// Starts the steps of process components (every type without a registered runner).
    pub(crate) process_runner: Arc<dyn Runner>,
    /// Runners services registered per recipe `ComponentType` (e.g. `aws.greengrass.lambda`),
    /// see [`crate::handle::CoreHandle::register_runner`].
    pub(crate) runners: RwLock<HashMap<String, Arc<dyn Runner>>>,
    pub(crate) deployments: DeploymentQueue,
    pub(crate) lifecycle_events: broadcast::Sender<LifecycleEvent>,
    pub(crate) hooks: RwLock<Option<Arc<dyn DeploymentHooks>>>,
    pub(crate) metrics: Mutex<HashMap<String, Vec<Metric>>>,
    /// The core's effective user is root: components then run as the configured user.
    pub(crate) is_root: bool,
    /// Who components run as when the core is root and neither the deployment nor the core
    /// configuration names a `posixUser` ([`crate::lifecycle::process::default_component_user`]);
    /// `None` when no unprivileged user exists.
    pub(crate) default_user: Option<String>,
    /// `<root>/rootCA.pem` once `rootCaPath` is configured and copied; `GG_ROOT_CA_PATH`.
    pub(crate) root_ca: Option<PathBuf>,
    /// Built-in Greengrass components this core really provides.
    pub(crate) provided_builtins: crate::deployment::builtin::ProvidedBuiltins,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Runtime {
    /// The platform manifests are matched against: this machine plus `platformOverride`.
    pub(crate) fn platform(&self) -> Platform {
        let mut p = Platform::current();
        for (k, v) in &self.settings.platform_override {
            p = p.with(k.clone(), v.clone());
        }
        p
    }

    /// Selects `recipe`'s manifest for this platform and renders its lifecycle with the
    /// current configuration. `versions` names versions being deployed; other components'
    /// versions are those running.
    pub(crate) fn select(
        &self,
        recipe: &Recipe,
        versions: &BTreeMap<String, String>,
    ) -> Result<lichen_recipe::SelectedComponent> {
        let version_of = |component: &str| {
            versions.get(component).cloned().or_else(|| {
                self.supervisor
                    .slot(component)
                    .map(|s| s.spec().version.clone())
            })
        };
        let config_of = |component: &str, keys: &[String]| self.config.get(component, keys);
        let vars = RenderVars {
            layout: &self.layout,
            thing_name: &self.settings.thing_name,
            versions: &version_of,
            config: &config_of,
            reads: Default::default(),
            decompressed: Default::default(),
        };
        crate::deployment::planner::render(recipe, &self.platform(), &vars)
            .map_err(CoreError::Other)
    }

    /// The lifecycle to run now, rendered with the current configuration.
    pub(crate) fn render_lifecycle(
        &self,
        spec: &ComponentSpec,
    ) -> std::result::Result<Lifecycle, String> {
        match &spec.recipe {
            None => Ok(Lifecycle::default()),
            Some(recipe) => self
                .select(recipe, &BTreeMap::new())
                .map(|s| s.lifecycle)
                .map_err(|e| e.to_string()),
        }
    }

    /// The environment of one step (Greengrass variables plus Setenv).
    pub(crate) fn component_env(
        &self,
        spec: &ComponentSpec,
        step: &Step,
    ) -> BTreeMap<String, String> {
        let token = self.tokens.token_for(&spec.name);
        let mut env = BTreeMap::new();
        let abs_socket = self.layout.ipc_socket().display().to_string();
        env.insert("SVCUID".into(), token.clone());
        env.insert("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), token);
        env.insert(
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT".into(),
            self.layout.ipc_socket_for_component(),
        );
        env.insert("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH".into(), abs_socket);
        env.insert(
            "AWS_IOT_THING_NAME".into(),
            self.settings.thing_name.clone(),
        );
        env.insert("AWS_REGION".into(), self.settings.aws_region.clone());
        env.insert(
            "AWS_DEFAULT_REGION".into(),
            self.settings.aws_region.clone(),
        );
        env.insert("GGC_VERSION".into(), GGC_VERSION.into());
        if let Some(ca) = &self.root_ca {
            env.insert("GG_ROOT_CA_PATH".into(), ca.display().to_string());
        }
        env.insert("LICHEN_COMPONENT_NAME".into(), spec.name.clone());
        env.insert("LICHEN_COMPONENT_VERSION".into(), spec.version.clone());
        for (k, v) in &step.setenv {
            env.insert(k.clone(), v.clone());
        }
        env
    }

    /// Who the component's steps run as: the deployment's `runWith.posixUser`, else the
    /// core's `posixUser`, else the default user (`ggc_user`, else `nobody`) — but only
    /// when the core is root; otherwise the core's own user. Never root unless configured.
    pub(crate) fn run_as(
        &self,
        spec: &ComponentSpec,
    ) -> std::result::Result<Option<RunAs>, String> {
        self.run_as_for(&spec.run_with)
    }

    pub(crate) fn run_as_for(
        &self,
        run_with: &crate::deployment::model::RunWith,
    ) -> std::result::Result<Option<RunAs>, String> {
        if !self.is_root {
            return Ok(None);
        }
        let wanted = run_with
            .posix_user
            .as_deref()
            .filter(|u| !u.is_empty())
            .or(Some(self.settings.posix_user.as_str()).filter(|u| !u.is_empty()))
            .or(self.default_user.as_deref());
        match wanted {
            Some(user) => RunAs::resolve(user).map(Some),
            None => Err(
                "the core runs as root and no posixUser is configured, and neither ggc_user nor \
                 nobody exists to run components as; create ggc_user or set posixUser"
                    .to_string(),
            ),
        }
    }

    /// Creates `work/<name>`, owned by the user the component runs as.
    pub(crate) fn prepare_work_dir(
        &self,
        name: &str,
        run_as: Option<&RunAs>,
    ) -> std::result::Result<PathBuf, String> {
        let dir = self.layout.work_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        Ok(dir)
    }

    fn info_for(&self, slot: &crate::lifecycle::Slot) -> ComponentInfo {
        let spec = slot.spec();
        let status = slot.status();
        ComponentInfo {
            component_name: spec.name.clone(),
            version: spec.version.clone(),
            state: status.state,
            configuration: self
                .config
                .get(&spec.name, &[])
                .unwrap_or_else(|| serde_json::json!({})),
            status_reason: status.reason,
            builtin: spec.builtin,
            root: spec.root,
            resource_limits: slot.limits_note().or_else(|| {
                self.supervisor
                    .cgroups
                    .unavailable_reason()
                    .map(|r| format!("cgroup v2 unavailable ({r}); limits cannot be applied"))
            }),
            metrics: self
                .metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&spec.name)
                .cloned()
                .unwrap_or_default(),
            pid: slot.pid(),
        }
    }

    pub(crate) fn list_components(&self) -> Vec<ComponentInfo> {
        self.supervisor
            .slots()
            .iter()
            .map(|s| self.info_for(s))
            .collect()
    }

    pub(crate) fn component_details(&self, name: &str) -> Result<ComponentInfo> {
        self.supervisor
            .slot(name)
            .map(|s| self.info_for(&s))
            .ok_or_else(|| CoreError::ComponentNotFound(name.to_string()))
    }

    pub(crate) async fn restart_component(&self, name: &str) -> Result<()> {
        self.supervisor.restart(name).await
    }

    pub(crate) async fn stop_component(&self, name: &str) -> Result<()> {
        self.supervisor.stop(name).await
    }

    pub(crate) async fn pause_component(&self, name: &str, pause: bool) -> Result<()> {
        self.supervisor.pause(name, pause)
    }

    pub(crate) fn report_state(&self, component: &str, state: ReportedState) -> Result<()> {
        self.supervisor.report(component, state)
    }

    pub(crate) fn get_configuration(
        &self,
        component: &str,
        key_path: &[String],
    ) -> Result<serde_json::Value> {
        if !self.config.contains(component) && self.supervisor.slot(component).is_none() {
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

    pub(crate) async fn create_deployment(&self, request: DeploymentRequest) -> Result<String> {
        self.deployments.enqueue(request)
    }

    pub(crate) fn deployment(&self, id: &str) -> Result<DeploymentRecord> {
        self.deployments
            .get(id)
            .ok_or_else(|| CoreError::DeploymentNotFound(id.to_string()))
    }

    pub(crate) fn list_deployments(&self) -> Vec<DeploymentRecord> {
        self.deployments.list()
    }

    pub(crate) async fn cancel_deployment(&self, id: &str) -> Result<()> {
        self.deployments.cancel(id)
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

    pub(crate) fn hooks(&self) -> Option<Arc<dyn DeploymentHooks>> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The runner registered for the recipe's component type, else the process runner
    /// (built-ins and recipe-less specs always get the process runner).
    pub(crate) fn runner_for(&self, spec: &ComponentSpec) -> Arc<dyn Runner> {
        let Some(recipe) = spec.recipe.as_ref() else {
            return self.process_runner.clone();
        };
        let runners = self.runners.read().unwrap_or_else(|p| p.into_inner());
        runners
            .get(recipe.component_type.as_str())
            .cloned()
            .unwrap_or_else(|| self.process_runner.clone())
    }

    pub(crate) fn register_runner(&self, component_type: &str, runner: Arc<dyn Runner>) {
        let mut runners = self.runners.write().unwrap_or_else(|p| p.into_inner());
        if runners.insert(component_type.to_string(), runner).is_some() {
            tracing::warn!(component_type, "a second runner replaced the first");
        }
    }

    pub(crate) fn state_of(&self, name: &str) -> Option<LifecycleState> {
        self.supervisor.slot(name).map(|s| s.status().state)
    }
}

impl LaunchContext for Runtime {
    fn render_lifecycle(&self, spec: &ComponentSpec) -> std::result::Result<Lifecycle, String> {
        Runtime::render_lifecycle(self, spec)
    }

    fn step_env(&self, spec: &ComponentSpec, step: &Step) -> BTreeMap<String, String> {
        self.component_env(spec, step)
    }

    fn run_as(&self, spec: &ComponentSpec) -> std::result::Result<Option<RunAs>, String> {
        Runtime::run_as(self, spec)
    }

    fn prepare_work_dir(
        &self,
        name: &str,
        run_as: Option<&RunAs>,
    ) -> std::result::Result<PathBuf, String> {
        Runtime::prepare_work_dir(self, name, run_as)
    }

    fn open_log(&self, name: &str) -> std::result::Result<crate::logs::RotatingLog, String> {
        crate::logs::RotatingLog::open(
            &self.layout.component_log(name),
            self.settings.logging.max_file_bytes,
            self.settings.logging.max_files,
        )
        .map_err(|e| format!("opening log of {name}: {e}"))
    }

    fn groups(&self) -> &GroupRegistry {
        &self.orphans
    }

    fn component(&self, name: &str) -> Option<Arc<crate::lifecycle::Slot>> {
        self.supervisor.slot(name)
    }

    fn publish_state(&self, component: &str, state: LifecycleState) {
        let _ = self.lifecycle_events.send(LifecycleEvent {
            component: component.to_string(),
            state,
        });
    }

    fn runner_for(&self, spec: &ComponentSpec) -> Arc<dyn Runner> {
        Runtime::runner_for(self, spec)
    }
}
