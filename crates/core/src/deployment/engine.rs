//! Executing one deployment: resolve → select → stage → (validate, notify) → apply → wait,
//! and rollback.
//!
//! Nothing on the device changes before "apply": a deployment that fails earlier leaves the
//! previous state untouched (FAILED_NO_STATE_CHANGE). From "apply" on, the ongoing marker
//! holds the previous state so that a failure or a crash can put it back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lichen_recipe::resolve::{ResolveError, RootRequirement, resolve_versions};
use lichen_recipe::{Recipe, VersionRange};
use serde_json::Value;

use super::builtin::is_builtin;
use super::installed::{Installed, InstalledSet, OngoingMarker};
use super::model::{DeploymentRecord, DetailedStatus, FailurePolicy, LOCAL_DEPLOYMENT_GROUP};
use crate::config::tree;
use crate::lifecycle::ComponentSpec;
use crate::lifecycle::actor::dependency_list;
use crate::runtime::{GGC_VERSION, Runtime, now_ms};

/// Default time Greengrass gives components to answer a configuration validation.
pub const CONFIG_VALIDATION_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time components may defer an update (Greengrass componentUpdatePolicy).
pub const COMPONENT_UPDATE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a deployment ended.
pub struct Outcome {
    pub detailed: DetailedStatus,
    pub cause: Option<String>,
    pub error_types: Vec<String>,
}

impl Outcome {
    fn success() -> Self {
        Outcome {
            detailed: DetailedStatus::Successful,
            cause: None,
            error_types: Vec::new(),
        }
    }
    fn failed(detailed: DetailedStatus, kind: &str, cause: String) -> Self {
        Outcome {
            detailed,
            cause: Some(cause),
            error_types: vec![kind.to_string()],
        }
    }
}

/// Everything decided before the device is touched.
struct Plan {
    set: InstalledSet,
    recipes: BTreeMap<String, Arc<Recipe>>,
    configs: BTreeMap<String, Value>,
    /// Components whose processes must be (re)started.
    changed: BTreeSet<String>,
    removed: Vec<String>,
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
    let plan = match plan(rt, record, &current) {
        Ok(p) => p,
        Err((kind, cause)) => {
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
                .validate_configuration(id, &proposed, CONFIG_VALIDATION_TIMEOUT)
                .await
            {
                return Outcome::failed(
                    DetailedStatus::FailedNoStateChange,
                    "COMPONENT_CONFIGURATION_NOT_VALID",
                    format!("a component rejected the new configuration: {reason}"),
                );
            }
        }
        if !plan.changed.is_empty() || !plan.removed.is_empty() {
            progress(rt, id, "notifying components of the update");
            hooks.notify_pre_update(id, COMPONENT_UPDATE_TIMEOUT).await;
        }
    }

    let marker = OngoingMarker {
        deployment_id: id.to_string(),
        previous: current.clone(),
        previous_config: rt.config.snapshot(),
    };
    if let Err(e) = marker.save(&rt.layout.ongoing_marker()) {
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
                    Ok(()) => Outcome::failed(
                        DetailedStatus::FailedRollbackComplete,
                        "COMPONENT_UPDATE_ERROR",
                        cause,
                    ),
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
    if let Some(hooks) = rt.hooks() {
        hooks.notify_post_update(id);
    }
    outcome
}

type PlanError = (&'static str, String);

fn plan(
    rt: &Runtime,
    record: &DeploymentRecord,
    current: &InstalledSet,
) -> Result<Plan, PlanError> {
    let req = &record.request;
    let group = req.group_name.as_deref().unwrap_or(LOCAL_DEPLOYMENT_GROUP);
    let imported: Vec<Recipe> = match &req.recipe_dir {
        None => Vec::new(),
        Some(dir) => {
            if !dir.is_dir() {
                return Err((
                    "INVALID_RECIPE_DIRECTORY",
                    format!(
                        "recipe directory {} does not exist or is not a directory",
                        dir.display()
                    ),
                ));
            }
            rt.store
                .import_recipe_dir(dir)
                .map_err(|e| ("RECIPE_PARSE_ERROR", e.to_string()))?
        }
    };
    if let Some(dir) = &req.artifact_dir
        && !dir.is_dir()
    {
        return Err((
            "INVALID_ARTIFACTS_DIRECTORY",
            format!(
                "artifact directory {} does not exist or is not a directory",
                dir.display()
            ),
        ));
    }

    // Roots: what was there, plus additions, minus removals.
    let mut roots: BTreeMap<String, (String, bool)> = current
        .roots()
        .map(|(n, c)| (n.clone(), (c.version.clone(), false)))
        .collect();
    for (name, version) in &req.root_components_to_add {
        semver::Version::parse(version).map_err(|e| {
            (
                "INVALID_VERSION",
                format!(
                    "component {name}: version {version:?} is not a valid semantic version: {e}"
                ),
            )
        })?;
        roots.insert(name.clone(), (version.clone(), true));
    }
    for name in &req.root_components_to_remove {
        roots.remove(name);
    }

    // Built-in components need no recipe; strip them from the resolution.
    let strip = |mut r: Recipe| {
        r.dependencies.retain(|d, _| !is_builtin(d));
        r
    };
    let catalog = |name: &str| -> Vec<Recipe> {
        let mut out: Vec<Recipe> = imported
            .iter()
            .filter(|r| r.name == name)
            .cloned()
            .map(strip)
            .collect();
        for r in rt.store.recipes(name) {
            if !out.iter().any(|o| o.version == r.version) {
                out.push(strip(r));
            }
        }
        out
    };
    let mut requirements = Vec::new();
    for (name, (version, _)) in roots.iter().filter(|(n, _)| !is_builtin(n)) {
        let requirement = VersionRange::parse(&format!("={version}"))
            .map_err(|e| ("INVALID_VERSION", e.to_string()))?;
        requirements.push(RootRequirement {
            name: name.clone(),
            requirement,
            origin: group.to_string(),
        });
    }
    let resolved = resolve_versions(&requirements, &catalog).map_err(|e| match e {
        ResolveError::TooManyComponents { .. } => ("TOO_MANY_COMPONENTS", e.to_string()),
        _ => ("NO_AVAILABLE_COMPONENT_VERSION", e.to_string()),
    })?;

    // The full (unstripped) recipes, as they will be stored and run.
    let mut recipes: BTreeMap<String, Arc<Recipe>> = BTreeMap::new();
    for (name, r) in &resolved {
        let full = imported
            .iter()
            .find(|i| &i.name == name && i.version == r.version)
            .cloned()
            .or_else(|| rt.store.load_recipe(name, &r.version).ok())
            .ok_or_else(|| {
                (
                    "COMPONENT_NOT_FOUND",
                    format!("recipe of {name} {} vanished", r.version),
                )
            })?;
        recipes.insert(name.clone(), Arc::new(full));
    }
    // Built-ins named as roots or depended on by anything resolved.
    let builtins: BTreeSet<String> = roots
        .keys()
        .chain(recipes.values().flat_map(|r| r.dependencies.keys()))
        .filter(|n| is_builtin(n))
        .cloned()
        .collect();
    let versions: BTreeMap<String, String> = recipes
        .iter()
        .map(|(n, r)| (n.clone(), r.version.to_string()))
        .collect();

    // Manifests and artifacts; nothing running is touched.
    for (name, recipe) in &recipes {
        let selected = rt
            .select(recipe, &versions)
            .map_err(|e| ("NO_MATCHING_PLATFORM", e.to_string()))?;
        let is_new_version =
            current.components.get(name).map(|c| &c.version) != Some(&recipe.version.to_string());
        if is_new_version || imported.iter().any(|i| &i.name == name) {
            rt.store
                .save_recipe(recipe)
                .map_err(|e| ("IO_ERROR", e.to_string()))?;
        }
        // Artifacts belong to the user the component runs as, so `Read: OWNER` works.
        let run_with = req
            .run_with
            .get(name)
            .cloned()
            .or_else(|| current.components.get(name).map(|c| c.run_with.clone()))
            .unwrap_or_default();
        let owner = rt
            .run_as_for(&run_with)
            .map_err(|e| ("INVALID_RUN_WITH", format!("component {name}: {e}")))?
            .map(|u| (u.uid, u.gid));
        rt.store
            .stage_artifacts_as(&selected, req.artifact_dir.as_deref(), owner)
            .map_err(|e| ("ARTIFACT_ERROR", e.to_string()))?;
    }

    // The new set.
    let mut set = InstalledSet::default();
    for (name, recipe) in &recipes {
        let previous = current.components.get(name);
        let run_with = req
            .run_with
            .get(name)
            .cloned()
            .or_else(|| previous.map(|p| p.run_with.clone()))
            .unwrap_or_default();
        set.components.insert(
            name.clone(),
            Installed {
                version: recipe.version.to_string(),
                root: roots.contains_key(name),
                builtin: false,
                run_with,
            },
        );
    }
    for name in builtins {
        let version = roots
            .get(&name)
            .map(|(v, _)| v.clone())
            .unwrap_or_else(|| GGC_VERSION.to_string());
        set.components.insert(
            name.clone(),
            Installed {
                version,
                root: roots.contains_key(&name),
                builtin: true,
                run_with: Default::default(),
            },
        );
    }

    // Configuration: RESET then MERGE on top of what each component has.
    for name in req.configuration_updates.keys() {
        if !set.components.contains_key(name) {
            return Err((
                "INVALID_CONFIGURATION_UPDATE",
                format!("configuration update for {name}, which is not part of the deployment"),
            ));
        }
    }
    let mut configs = BTreeMap::new();
    for name in set.components.keys() {
        let defaults = recipes
            .get(name)
            .map(|r| r.default_configuration.clone())
            .unwrap_or_else(|| Value::Object(Default::default()));
        let update = req.configuration_updates.get(name);
        let current_cfg = if current.components.contains_key(name) {
            rt.config.get(name, &[])
        } else {
            None
        };
        let cfg = tree::compute_update(
            current_cfg.as_ref(),
            &defaults,
            update.map(|u| u.reset.as_slice()).unwrap_or_default(),
            update.and_then(|u| u.merge.as_ref()),
        )
        .map_err(|e| {
            (
                "INVALID_CONFIGURATION_UPDATE",
                format!("component {name}: {e}"),
            )
        })?;
        configs.insert(name.clone(), cfg);
    }

    // A component restarts when its version or run-with changes, or when the new
    // configuration changes its rendered lifecycle (what its scripts would see).
    let mut changed = BTreeSet::new();
    for (name, c) in &set.components {
        let before = current.components.get(name);
        let lifecycle_changes = recipes.get(name).is_some_and(|r| {
            let now = rt.select(r, &versions).map(|s| s.lifecycle).ok();
            let next = rt
                .select_with_configs(r, &versions, Some(&configs))
                .map(|s| s.lifecycle)
                .ok();
            now != next
        });
        if before != Some(c) || lifecycle_changes {
            changed.insert(name.clone());
        }
    }
    // HARD dependents of a changed component restart with it.
    loop {
        let mut more = Vec::new();
        for (name, recipe) in &recipes {
            if changed.contains(name) {
                continue;
            }
            let hard_dep_changed = recipe.dependencies.iter().any(|(d, dep)| {
                dep.kind == lichen_recipe::DependencyType::Hard && changed.contains(d)
            });
            if hard_dep_changed {
                more.push(name.clone());
            }
        }
        if more.is_empty() {
            break;
        }
        changed.extend(more);
    }
    let removed = current
        .components
        .keys()
        .filter(|n| !set.components.contains_key(*n))
        .cloned()
        .collect();
    Ok(Plan {
        set,
        recipes,
        configs,
        changed,
        removed,
    })
}

fn spec_for(
    rt: &Runtime,
    name: &str,
    c: &Installed,
    recipe: Option<&Arc<Recipe>>,
) -> Result<ComponentSpec, String> {
    let (lifecycle, dependencies) = match recipe {
        None => (Default::default(), Vec::new()),
        Some(r) => (
            rt.select(r, &BTreeMap::new())
                .map_err(|e| e.to_string())?
                .lifecycle,
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
async fn converge(
    rt: &Arc<Runtime>,
    target: &InstalledSet,
    recipes: &BTreeMap<String, Arc<Recipe>>,
    changed: &BTreeSet<String>,
    removed: &[String],
) -> Result<(), String> {
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
        let spec = spec_for(rt, name, c, recipes.get(name))?;
        let new_version = rt
            .supervisor
            .slot(name)
            .is_none_or(|s| s.spec().version != c.version);
        rt.supervisor.upsert(rt, spec).map_err(|e| e.to_string())?;
        if new_version {
            rt.supervisor.request_bootstrap(name);
        }
    }
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
            rt.supervisor
                .start_fresh(&name)
                .map_err(|e| e.to_string())?;
        }
    }
    let names: Vec<String> = target.components.keys().cloned().collect();
    let timeout = startup_budget(rt, recipes);
    rt.supervisor.wait_up(&names, timeout).await
}

/// How long a deployment waits for its components: the largest Install + Startup timeouts
/// among them, at least the configured default.
fn startup_budget(rt: &Runtime, recipes: &BTreeMap<String, Arc<Recipe>>) -> Duration {
    use crate::lifecycle::actor::{DEFAULT_INSTALL_TIMEOUT, DEFAULT_STARTUP_TIMEOUT};
    let base = Duration::from_secs(rt.settings.deployment_startup_timeout_secs);
    recipes
        .values()
        .filter_map(|r| rt.select(r, &BTreeMap::new()).ok())
        .map(|s| {
            let install = s
                .lifecycle
                .install
                .and_then(|i| i.timeout)
                .unwrap_or(DEFAULT_INSTALL_TIMEOUT);
            let startup = s
                .lifecycle
                .startup
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
    converge(rt, &plan.set, &plan.recipes, &plan.changed, &plan.removed).await
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
    converge(rt, target, &recipes, &changed, &removed).await
}

/// Removes component versions no deployment uses any longer.
fn cleanup_store(rt: &Runtime, before: &InstalledSet, after: &InstalledSet) {
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
            r.error_types = vec!["CORE_RESTARTED".into()];
            r.progress = None;
        });
        OngoingMarker::clear(&marker_path).map_err(|e| e.to_string())?;
    }
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
        match spec_for(rt, name, c, recipe.as_ref()) {
            Ok(spec) => {
                if let Err(e) = rt.supervisor.upsert(rt, spec) {
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
