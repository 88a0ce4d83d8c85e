//! Executing one deployment: resolve → select → stage → (validate, notify) → apply → wait,
//! and rollback.
//!
//! Nothing on the device changes before "apply": a deployment that fails earlier leaves the
//! previous state untouched (FAILED_NO_STATE_CHANGE). From "apply" on, the ongoing marker
//! holds the previous state so that a failure or a crash can put it back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lichen_recipe::{Lifecycle, Recipe};
use serde_json::Value;

use super::installed::{AttemptMarker, Installed, InstalledSet, MAX_ATTEMPTS, OngoingMarker};
use super::model::{
    ComponentUpdateAction, DeploymentRecord, DeploymentRequest, DetailedStatus, FailurePolicy,
};
use super::planner::{self, Plan, PlanError, PlanInputs, RenderEnv};
use super::status;
use crate::lifecycle::ComponentSpec;
use crate::lifecycle::actor::dependency_list;
use crate::runtime::{Runtime, now_ms};

/// Default time Greengrass gives components to answer a configuration validation, when the
/// request's `configuration_validation_timeout_secs` is unset.
pub const CONFIG_VALIDATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait a request may ask for, for validation and for update deferrals alike: a
/// deployment document cannot hold the queue for longer than a day.
pub const MAX_POLICY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long components may answer a configuration validation, per `request`.
fn validation_timeout(request: &DeploymentRequest) -> Duration {
    request
        .configuration_validation_timeout_secs
        .map_or(CONFIG_VALIDATION_TIMEOUT, Duration::from_secs)
        .min(MAX_POLICY_TIMEOUT)
}

/// How long components may defer the update, or `None` when the request's
/// `componentUpdatePolicy` skips the notification (no pre- or post-update event).
fn update_notice_timeout(request: &DeploymentRequest) -> Option<Duration> {
    let policy = request.component_update_policy;
    match policy.action {
        ComponentUpdateAction::SkipNotifyComponents => None,
        ComponentUpdateAction::NotifyComponents => {
            Some(Duration::from_secs(policy.timeout_in_seconds).min(MAX_POLICY_TIMEOUT))
        }
    }
}

/// How a deployment ended.
pub struct Outcome {
    pub detailed: DetailedStatus,
    pub cause: Option<String>,
    /// Greengrass error codes, general to specific (see [`super::status`]).
    pub error_stack: Vec<String>,
    pub error_types: Vec<String>,
    /// Record `statusDetails`: what did not fail the deployment but is not served.
    pub details: Vec<String>,
}

impl Outcome {
    fn success() -> Self {
        Outcome {
            detailed: DetailedStatus::Successful,
            cause: None,
            error_stack: Vec::new(),
            error_types: Vec::new(),
            details: Vec::new(),
        }
    }
    fn failed(detailed: DetailedStatus, kind: &str, cause: String) -> Self {
        Outcome {
            detailed,
            cause: Some(cause),
            error_stack: status::error_stack(kind),
            error_types: status::error_types(kind),
            details: Vec::new(),
        }
    }
}

fn progress(rt: &Runtime, id: &str, text: impl Into<String>) {
    rt.deployments.set_progress(id, text);
}

pub(crate) async fn execute(rt: &Arc<Runtime>, record: &DeploymentRecord) -> Outcome {
    let id = record.deployment_id.as_str();
    let current = match InstalledSet::load(&rt.layout.installed_file()) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::failed(
                DetailedStatus::FailedNoStateChange,
                "IO_ERROR",
                e.to_string(),
            );
        }
    };
    progress(rt, id, "resolving component versions");
    let plan = match make_plan(rt, record, &current) {
        Ok(p) => p,
        Err(PlanError { kind, cause }) => {
            return Outcome::failed(DetailedStatus::FailedNoStateChange, kind, cause);
        }
    };
    let missing_builtins = rt.provided_builtins.missing(&plan.builtins);
    for line in &missing_builtins {
        tracing::warn!(deployment = %id, "{line}");
    }
    progress(rt, id, "staging recipes and artifacts");
    let staged = match stage(rt, record, &plan, &current) {
        Ok(s) => s,
        Err(PlanError { kind, cause }) => {
            return Outcome::failed(DetailedStatus::FailedNoStateChange, kind, cause);
        }
    };

    if let Some(hooks) = rt.hooks() {
        let proposed: BTreeMap<String, Value> = plan
            .configs
            .iter()
            .filter(|(n, v)| {
                current.components.contains_key(*n) && rt.config.get(n, &[]).as_ref() != Some(*v)
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        if !proposed.is_empty() {
            progress(
                rt,
                id,
                "waiting for components to validate the new configuration",
            );
            if let Err(reason) = hooks
                .validate_configuration(id, &proposed, validation_timeout(&record.request))
                .await
            {
                staged.discard(rt);
                return Outcome::failed(
                    DetailedStatus::FailedNoStateChange,
                    "COMPONENT_CONFIGURATION_NOT_VALID",
                    format!("a component rejected the new configuration: {reason}"),
                );
            }
        }
        if let Some(timeout) = update_notice_timeout(&record.request)
            && (!plan.changed.is_empty() || !plan.removed.is_empty())
        {
            progress(rt, id, "notifying components of the update");
            hooks.notify_pre_update(id, timeout).await;
        }
    }

    let marker = OngoingMarker {
        deployment_id: id.to_string(),
        previous: current.clone(),
        previous_config: rt.config.snapshot(),
    };
    if let Err(e) = marker.save(&rt.layout.ongoing_marker()) {
        staged.discard(rt);
        return Outcome::failed(
            DetailedStatus::FailedNoStateChange,
            "IO_ERROR",
            e.to_string(),
        );
    }

    let result = apply(rt, id, &plan).await;
    let outcome = match result {
        Ok(()) => {
            cleanup_store(rt, &current, &plan.set);
            Outcome::success()
        }
        Err(cause) => match record.request.failure_policy {
            FailurePolicy::DoNothing => Outcome::failed(
                DetailedStatus::FailedRollbackNotRequested,
                "COMPONENT_UPDATE_ERROR",
                cause,
            ),
            FailurePolicy::Rollback => {
                progress(rt, id, format!("failed ({cause}); rolling back"));
                match rollback(rt, &marker).await {
                    Ok(()) => {
                        // The new versions run nowhere now: take them out of the store.
                        staged.discard(rt);
                        Outcome::failed(
                            DetailedStatus::FailedRollbackComplete,
                            "COMPONENT_UPDATE_ERROR",
                            cause,
                        )
                    }
                    Err(e) => Outcome::failed(
                        DetailedStatus::FailedUnableToRollback,
                        "COMPONENT_UPDATE_ERROR",
                        format!("{cause}; rollback failed too: {e}"),
                    ),
                }
            }
        },
    };
    if let Err(e) = OngoingMarker::clear(&rt.layout.ongoing_marker()) {
        tracing::error!(error = %e, "could not clear the ongoing-deployment marker");
    }
    if let Some(hooks) = rt.hooks()
        && update_notice_timeout(&record.request).is_some()
    {
        hooks.notify_post_update(id);
    }
    Outcome {
        details: missing_builtins,
        ..outcome
    }
}

/// Reads what planning needs (the request's recipe directory, installed configurations)
/// and calls the pure [`planner::plan`].
fn make_plan(
    rt: &Runtime,
    record: &DeploymentRecord,
    current: &InstalledSet,
) -> Result<Plan, PlanError> {
    let req = &record.request;
    let imported: Vec<Recipe> = match &req.recipe_dir {
        None => Vec::new(),
        Some(dir) => {
            if !dir.is_dir() {
                return Err(PlanError {
                    kind: "INVALID_RECIPE_DIRECTORY",
                    cause: format!(
                        "recipe directory {} does not exist or is not a directory",
                        dir.display()
                    ),
                });
            }
            rt.store.import_recipe_dir(dir).map_err(|e| PlanError {
                kind: "RECIPE_PARSE_ERROR",
                cause: e.to_string(),
            })?
        }
    };
    if let Some(dir) = &req.artifact_dir
        && !dir.is_dir()
    {
        return Err(PlanError {
            kind: "INVALID_ARTIFACTS_DIRECTORY",
            cause: format!(
                "artifact directory {} does not exist or is not a directory",
                dir.display()
            ),
        });
    }
    let current_configs: BTreeMap<String, Value> = current
        .components
        .keys()
        .filter_map(|n| rt.config.get(n, &[]).map(|c| (n.clone(), c)))
        .collect();
    let platform = rt.platform();
    // One listing of the store, and each component's recipes parsed at most once.
    let index = rt.store.recipe_index();
    let parsed: std::cell::RefCell<BTreeMap<String, Vec<Recipe>>> = Default::default();
    let available = |name: &str| -> Vec<Recipe> {
        if let Some(found) = parsed.borrow().get(name) {
            return found.clone();
        }
        let found: Vec<Recipe> = index
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|v| match rt.store.load_recipe(name, v) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(component = name, version = %v, error = %e, "skipping unreadable stored recipe");
                    None
                }
            })
            .collect();
        parsed.borrow_mut().insert(name.to_string(), found.clone());
        found
    };
    planner::plan(&PlanInputs {
        current,
        current_configs: &current_configs,
        request: req,
        imported: &imported,
        available: &available,
        env: RenderEnv {
            layout: &rt.layout,
            thing_name: &rt.settings.thing_name,
            platform: &platform,
        },
    })
}

/// What staging added to the store, so that a failed deployment can take it out again.
#[derive(Default)]
struct Staged {
    /// Component versions that had nothing in the store before this deployment.
    fresh: Vec<(String, semver::Version)>,
}

impl Staged {
    /// Removes what this deployment brought into the store.
    fn discard(self, rt: &Runtime) {
        for (name, version) in self.fresh {
            if let Err(e) = rt.store.remove_version(&name, &version) {
                tracing::warn!(component = %name, %version, error = %e, "could not remove what a failed deployment staged");
            }
        }
    }
}

/// Writes the plan's recipes and artifacts into the store; nothing running is touched. On
/// error, what was staged so far is removed again.
fn stage(
    rt: &Runtime,
    record: &DeploymentRecord,
    plan: &Plan,
    current: &InstalledSet,
) -> Result<Staged, PlanError> {
    let mut staged = Staged::default();
    match stage_into(rt, record, plan, current, &mut staged) {
        Ok(()) => Ok(staged),
        Err(e) => {
            staged.discard(rt);
            Err(e)
        }
    }
}

fn stage_into(
    rt: &Runtime,
    record: &DeploymentRecord,
    plan: &Plan,
    current: &InstalledSet,
    staged: &mut Staged,
) -> Result<(), PlanError> {
    let req = &record.request;
    let to_save: Vec<&Recipe> = plan
        .recipes
        .iter()
        .filter(|(name, _)| plan.recipes_to_save.contains(*name))
        .map(|(_, r)| r.as_ref())
        .collect();
    for (name, recipe) in &plan.recipes {
        let version = &recipe.version;
        let installed =
            current.components.get(name).map(|c| &c.version) == Some(&version.to_string());
        let untouched = !rt.store.contains(name, version)
            && !rt.store.artifacts_path(name, version).exists()
            && !rt.store.unarchived_path(name, version).exists();
        if untouched && !installed {
            staged.fresh.push((name.clone(), version.clone()));
        }
    }
    rt.store.save_recipes(&to_save).map_err(|e| PlanError {
        kind: "IO_ERROR",
        cause: e.to_string(),
    })?;
    for name in plan.recipes.keys() {
        let Some(selected) = plan.selected.get(name) else {
            continue;
        };
        // Artifacts belong to the user the component runs as, so `Read: OWNER` works.
        let run_with = plan
            .set
            .components
            .get(name)
            .map(|c| c.run_with.clone())
            .unwrap_or_default();
        let owner = rt
            .run_as_for(&run_with)
            .map_err(|e| PlanError {
                kind: "INVALID_RUN_WITH",
                cause: format!("component {name}: {e}"),
            })?
            .map(|u| (u.uid, u.gid));
        rt.store
            .stage_artifacts_as(
                selected,
                req.artifact_dir.as_deref(),
                owner,
                plan.decompressed_used.contains(name),
            )
            .map_err(|e| PlanError {
                kind: "ARTIFACT_ERROR",
                cause: e.to_string(),
            })?;
    }
    Ok(())
}

/// The spec of one component. `lifecycle` is the recipe's rendered lifecycle (the plan's,
/// rendered once per deployment); `None` renders it now (rollback, boot).
fn spec_for(
    rt: &Runtime,
    name: &str,
    c: &Installed,
    recipe: Option<&Arc<Recipe>>,
    lifecycle: Option<&Lifecycle>,
) -> Result<ComponentSpec, String> {
    let (lifecycle, dependencies) = match recipe {
        None => (Default::default(), Vec::new()),
        Some(r) => (
            match lifecycle {
                Some(l) => l.clone(),
                None => {
                    rt.select(r, &BTreeMap::new())
                        .map_err(|e| e.to_string())?
                        .lifecycle
                }
            },
            dependency_list(&r.dependencies),
        ),
    };
    Ok(ComponentSpec {
        name: name.to_string(),
        version: c.version.clone(),
        recipe: recipe.cloned(),
        lifecycle,
        dependencies,
        root: c.root,
        builtin: c.builtin,
        run_with: c.run_with.clone(),
    })
}

/// Makes the running set match `target`, restarting `changed` and anything not healthy.
/// Returns the components it (re)started, with their error counts before the start.
async fn converge(
    rt: &Arc<Runtime>,
    target: &InstalledSet,
    recipes: &BTreeMap<String, Arc<Recipe>>,
    lifecycles: &BTreeMap<String, Lifecycle>,
    changed: &BTreeSet<String>,
    removed: &[String],
) -> Result<BTreeMap<String, u64>, String> {
    for name in removed {
        let _ = rt.supervisor.remove(name).await;
        rt.tokens.revoke(name);
    }
    for name in changed {
        if rt.supervisor.slot(name).is_some() {
            let _ = rt.supervisor.stop(name).await;
        }
    }
    for (name, c) in &target.components {
        let spec = spec_for(rt, name, c, recipes.get(name), lifecycles.get(name))?;
        let new_version = rt
            .supervisor
            .slot(name)
            .is_none_or(|s| s.spec().version != c.version);
        rt.supervisor
            .upsert(rt.clone(), spec)
            .map_err(|e| e.to_string())?;
        if new_version {
            rt.supervisor.request_bootstrap(name);
        }
    }
    let mut started = BTreeMap::new();
    for name in rt.supervisor.dependency_order() {
        if !target.components.contains_key(&name) {
            continue;
        }
        let needs_start = changed.contains(&name)
            || matches!(
                rt.state_of(&name),
                Some(crate::LifecycleState::New | crate::LifecycleState::Broken)
            );
        if needs_start {
            started.extend(rt.supervisor.error_baseline(std::slice::from_ref(&name)));
            rt.supervisor
                .start_fresh(&name)
                .map_err(|e| e.to_string())?;
        }
    }
    let names: Vec<String> = target.components.keys().cloned().collect();
    let timeout = startup_budget(rt, lifecycles);
    rt.supervisor.wait_up(&names, timeout).await?;
    Ok(started)
}

/// How long a deployment waits for its components: the largest Install + Startup timeouts
/// among them, at least the configured default.
fn startup_budget(rt: &Runtime, lifecycles: &BTreeMap<String, Lifecycle>) -> Duration {
    use crate::lifecycle::actor::{DEFAULT_INSTALL_TIMEOUT, DEFAULT_STARTUP_TIMEOUT};
    let base = Duration::from_secs(rt.settings.deployment_startup_timeout_secs);
    lifecycles
        .values()
        .map(|l| {
            let install = l
                .install
                .as_ref()
                .and_then(|i| i.timeout)
                .unwrap_or(DEFAULT_INSTALL_TIMEOUT);
            let startup = l
                .startup
                .as_ref()
                .and_then(|i| i.timeout)
                .unwrap_or(DEFAULT_STARTUP_TIMEOUT);
            install + startup
        })
        .fold(base, Duration::max)
}

async fn apply(rt: &Arc<Runtime>, id: &str, plan: &Plan) -> Result<(), String> {
    progress(rt, id, "applying configuration");
    let mut config_changes: BTreeMap<String, Option<Value>> = plan
        .configs
        .iter()
        .map(|(n, v)| (n.clone(), Some(v.clone())))
        .collect();
    for name in &plan.removed {
        config_changes.insert(name.clone(), None);
    }
    rt.config
        .commit(config_changes, now_ms())
        .map_err(|e| e.to_string())?;
    plan.set
        .save(&rt.layout.installed_file())
        .map_err(|e| e.to_string())?;
    progress(
        rt,
        id,
        format!(
            "starting components ({} changed, {} removed)",
            plan.changed.len(),
            plan.removed.len()
        ),
    );
    let lifecycles: BTreeMap<String, Lifecycle> = plan
        .selected
        .iter()
        .map(|(n, s)| (n.clone(), s.lifecycle.clone()))
        .collect();
    let started = converge(
        rt,
        &plan.set,
        &plan.recipes,
        &lifecycles,
        &plan.changed,
        &plan.removed,
    )
    .await?;
    let window = Duration::from_secs(rt.settings.deployment_stability_secs);
    if !window.is_zero() && !started.is_empty() {
        progress(
            rt,
            id,
            format!(
                "watching {} started components for {}s",
                started.len(),
                window.as_secs()
            ),
        );
        rt.supervisor.wait_stable(&started, window).await?;
    }
    Ok(())
}

/// Puts back the state recorded in `marker`: components, versions and configuration.
pub(crate) async fn rollback(rt: &Arc<Runtime>, marker: &OngoingMarker) -> Result<(), String> {
    let target = &marker.previous;
    rt.config
        .restore(marker.previous_config.clone())
        .map_err(|e| e.to_string())?;
    target
        .save(&rt.layout.installed_file())
        .map_err(|e| e.to_string())?;
    let mut recipes = BTreeMap::new();
    for (name, c) in target.components.iter().filter(|(_, c)| !c.builtin) {
        let version = semver::Version::parse(&c.version).map_err(|e| e.to_string())?;
        let recipe = rt
            .store
            .load_recipe(name, &version)
            .map_err(|e| format!("previous version of {name} is no longer stored: {e}"))?;
        recipes.insert(name.clone(), Arc::new(recipe));
    }
    let removed: Vec<String> = rt
        .supervisor
        .slots()
        .iter()
        .map(|s| s.name.clone())
        .filter(|n| !target.components.contains_key(n))
        .collect();
    let changed: BTreeSet<String> = rt
        .supervisor
        .slots()
        .iter()
        .filter(|s| {
            let spec = s.spec();
            target
                .components
                .get(&s.name)
                .is_none_or(|c| c.version != spec.version || c.run_with != spec.run_with)
        })
        .map(|s| s.name.clone())
        .collect();
    let mut lifecycles = BTreeMap::new();
    for (name, recipe) in &recipes {
        let selected = rt
            .select(recipe, &BTreeMap::new())
            .map_err(|e| format!("component {name}: {e}"))?;
        lifecycles.insert(name.clone(), selected.lifecycle);
    }
    converge(rt, target, &recipes, &lifecycles, &changed, &removed)
        .await
        .map(drop)
}

/// Removes component versions no deployment uses any longer, and the work directories of
/// components that are gone: that is what makes removing a component that filled the disk
/// give the space back.
fn cleanup_store(rt: &Runtime, before: &InstalledSet, after: &InstalledSet) {
    for name in before.components.keys() {
        if after.components.contains_key(name) {
            continue;
        }
        let work = rt.layout.work_dir(name);
        match std::fs::remove_dir_all(&work) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(component = %name, dir = %work.display(), error = %e, "could not remove the work directory of a removed component")
            }
        }
    }
    for (name, c) in before.components.iter().filter(|(_, c)| !c.builtin) {
        let still_used = after
            .components
            .get(name)
            .is_some_and(|a| a.version == c.version);
        if still_used {
            continue;
        }
        if let Ok(v) = semver::Version::parse(&c.version)
            && let Err(e) = rt.store.remove_version(name, &v)
        {
            tracing::warn!(component = %name, error = %e, "could not remove old version from the store");
        }
    }
}

/// Starts what the installed set says, after a restart of the core. A deployment cut short
/// by a crash is rolled back first.
pub(crate) async fn boot(rt: &Arc<Runtime>) -> Result<(), String> {
    let marker_path = rt.layout.ongoing_marker();
    if let Some(marker) = OngoingMarker::load(&marker_path).map_err(|e| e.to_string())? {
        tracing::warn!(deployment = %marker.deployment_id, "a deployment was interrupted by a restart; restoring the previous state");
        rt.config
            .restore(marker.previous_config.clone())
            .map_err(|e| e.to_string())?;
        marker
            .previous
            .save(&rt.layout.installed_file())
            .map_err(|e| e.to_string())?;
        let _ = rt.deployments.update(&marker.deployment_id, |r| {
            r.status = super::model::DeploymentStatus::Failed;
            r.detailed_status = Some(DetailedStatus::FailedRollbackComplete);
            r.failure_cause = Some("the core stopped while this deployment was being applied; the previous state was restored".into());
            r.error_stack = status::error_stack(status::CORE_RESTARTED);
            r.error_types = status::error_types(status::CORE_RESTARTED);
            r.progress = None;
        });
        OngoingMarker::clear(&marker_path).map_err(|e| e.to_string())?;
    }
    fail_crash_looping_deployment(rt)?;
    let set = InstalledSet::load(&rt.layout.installed_file()).map_err(|e| e.to_string())?;
    for (name, c) in &set.components {
        let recipe = if c.builtin {
            None
        } else {
            let v = semver::Version::parse(&c.version).map_err(|e| e.to_string())?;
            match rt.store.load_recipe(name, &v) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::error!(component = %name, error = %e, "cannot load recipe; component not started");
                    continue;
                }
            }
        };
        match spec_for(rt, name, c, recipe.as_ref(), None) {
            Ok(spec) => {
                if let Err(e) = rt.supervisor.upsert(rt.clone(), spec) {
                    tracing::error!(component = %name, error = %e, "cannot start component");
                }
            }
            Err(e) => tracing::error!(component = %name, error = %e, "cannot start component"),
        }
    }
    for name in rt.supervisor.dependency_order() {
        let _ = rt.supervisor.start(&name);
    }
    Ok(())
}

/// A deployment the core started [`MAX_ATTEMPTS`] times in a row, dying each time, is failed
/// instead of run again. The device state is the previous one: a death after the ongoing
/// marker was written has been rolled back above, and before it nothing had changed.
fn fail_crash_looping_deployment(rt: &Runtime) -> Result<(), String> {
    let path = rt.layout.attempt_marker();
    let Some(marker) = AttemptMarker::load(&path).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let unfinished = rt
        .deployments
        .get(&marker.deployment_id)
        .is_some_and(|r| !r.status.is_final());
    if unfinished && marker.attempts < MAX_ATTEMPTS {
        return Ok(());
    }
    if unfinished {
        let cause = format!(
            "the core stopped {} times in a row while running this deployment; it was not run again",
            marker.attempts
        );
        tracing::error!(deployment = %marker.deployment_id, %cause, "deployment failed");
        let _ = rt.deployments.update(&marker.deployment_id, |r| {
            r.status = super::model::DeploymentStatus::Failed;
            r.detailed_status = Some(DetailedStatus::FailedNoStateChange);
            r.error_stack = status::error_stack("CORE_CRASH_LOOP");
            r.failure_cause = Some(cause);
            r.error_types = status::error_types("CORE_CRASH_LOOP");
            r.progress = None;
        });
    }
    AttemptMarker::clear(&path).map_err(|e| e.to_string())
}
