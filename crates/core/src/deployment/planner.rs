//! The deployment planner: a pure function from what is installed (set and configurations),
//! the request, the recipes available and the platform to a [`Plan`], or a [`PlanError`]
//! naming what failed. It reads no files and starts nothing; the engine stages and applies
//! what it returns.
//!
//! Every walk here is iterative, and a deployment reaches at most
//! [`MAX_COMPONENTS_PER_DEPLOYMENT`] components, so no dependency set can exhaust the stack.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use lichen_recipe::resolve::{ResolveError, RootRequirement, resolve_versions};
use lichen_recipe::{DependencyType, Platform, Recipe, SelectedComponent, VariableSource};
use lichen_recipe::{VersionRange, interpolate};
use serde_json::Value;

use super::builtin::is_builtin;
use super::installed::{GroupRoots, Installed, InstalledSet};
use super::model::{DeploymentRequest, LOCAL_DEPLOYMENT_GROUP};
use crate::config::tree;
use crate::paths::RootLayout;
use crate::runtime::GGC_VERSION;

/// Components (counted by name, built-ins excluded) a deployment may reach from its roots
/// through the dependencies of the recipes available. Beyond it the deployment is refused
/// before version resolution.
pub use lichen_recipe::resolve::MAX_COMPONENTS_PER_DEPLOYMENT;

/// Why a plan could not be made: an error type (as in Greengrass `errorTypes`) and a cause
/// naming the component, file or field concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanError {
    pub kind: &'static str,
    pub cause: String,
}

fn fail(kind: &'static str, cause: impl Into<String>) -> PlanError {
    PlanError {
        kind,
        cause: cause.into(),
    }
}

/// What recipe variables need besides configurations and versions.
#[derive(Clone, Copy)]
pub struct RenderEnv<'a> {
    pub layout: &'a RootLayout,
    pub thing_name: &'a str,
    pub platform: &'a Platform,
}

/// Everything the planner decides from.
pub struct PlanInputs<'a> {
    pub current: &'a InstalledSet,
    /// The configuration of each installed component.
    pub current_configs: &'a BTreeMap<String, Value>,
    pub request: &'a DeploymentRequest,
    /// Recipes the request brings (its recipe directory); they win over `available`.
    pub imported: &'a [Recipe],
    /// Recipes already stored, of one component name.
    pub available: &'a dyn Fn(&str) -> Vec<Recipe>,
    pub env: RenderEnv<'a>,
}

/// Everything decided before the device is touched.
#[derive(Debug)]
pub struct Plan {
    pub set: InstalledSet,
    pub recipes: BTreeMap<String, Arc<Recipe>>,
    /// Each recipe's manifest for this platform, rendered once with the new configuration.
    pub selected: BTreeMap<String, SelectedComponent>,
    pub configs: BTreeMap<String, Value>,
    /// Components whose processes must be (re)started.
    pub changed: BTreeSet<String>,
    pub removed: Vec<String>,
    /// Components whose recipe must be written to the store (new, or imported again).
    pub recipes_to_save: BTreeSet<String>,
    /// Built-in components in the new set (no recipe, served by the core or a service).
    pub builtins: BTreeSet<String>,
    /// Components whose `{artifacts:decompressedPath}` a rendered lifecycle names: their
    /// (possibly empty) extraction directory is created even without archives, as Greengrass
    /// creates it when the variable is resolved. The others get one only for a ZIP.
    pub decompressed_used: BTreeSet<String>,
}

/// Recipe variables over explicit inputs. Records the configuration values it reads, so
/// that the planner knows which configuration changes a rendered lifecycle depends on.
pub(crate) struct RenderVars<'a> {
    pub layout: &'a RootLayout,
    pub thing_name: &'a str,
    /// Component versions: being deployed, else running.
    pub versions: &'a dyn Fn(&str) -> Option<String>,
    /// A component's configuration value at a key path.
    pub config: &'a dyn Fn(&str, &[String]) -> Option<Value>,
    pub reads: RefCell<BTreeSet<(String, String)>>,
    /// Components whose `{artifacts:decompressedPath}` was rendered.
    pub decompressed: RefCell<BTreeSet<String>>,
}

impl VariableSource for RenderVars<'_> {
    fn thing_name(&self) -> Option<String> {
        Some(self.thing_name.to_string())
    }
    fn root_path(&self) -> Option<String> {
        Some(self.layout.root().display().to_string())
    }
    fn artifacts_path(&self, component: &str) -> Option<String> {
        let v = (self.versions)(component)?;
        Some(
            self.layout
                .artifacts_dir(component, &v)
                .display()
                .to_string(),
        )
    }
    fn decompressed_path(&self, component: &str) -> Option<String> {
        let v = (self.versions)(component)?;
        self.decompressed.borrow_mut().insert(component.to_string());
        Some(
            self.layout
                .unarchived_dir(component, &v)
                .display()
                .to_string(),
        )
    }
    fn work_path(&self, component: &str) -> Option<String> {
        Some(self.layout.work_dir(component).display().to_string())
    }
    fn configuration(&self, component: &str, json_pointer: &str) -> Option<Value> {
        let keys = tree::pointer_keys(json_pointer).ok()?;
        self.reads
            .borrow_mut()
            .insert((component.to_string(), json_pointer.to_string()));
        (self.config)(component, &keys)
    }
}

#[cfg(test)]
thread_local! {
    /// Recipes rendered on this thread, for tests that check each is rendered once.
    pub(crate) static RENDERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Selects `recipe`'s manifest for `platform` and renders it with `vars`.
pub(crate) fn render(
    recipe: &Recipe,
    platform: &Platform,
    vars: &RenderVars<'_>,
) -> Result<SelectedComponent, String> {
    #[cfg(test)]
    RENDERS.with(|r| r.set(r.get() + 1));
    let deps: Vec<&str> = recipe.dependencies.keys().map(String::as_str).collect();
    let interpolate_text = |s: &str| interpolate(s, &recipe.name, &deps, vars);
    recipe
        .select_with(platform, &interpolate_text)
        .map_err(|e| e.to_string())
}

/// Names ordered so that every component comes after those it depends on (Kahn's
/// algorithm, iterative). Dependencies outside `deps` are ignored; members of a cycle come
/// last, by name.
pub fn dependency_order(deps: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut waiting_on: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, list) in deps {
        let inside: BTreeSet<&str> = list
            .iter()
            .map(String::as_str)
            .filter(|d| deps.contains_key(*d) && *d != name)
            .collect();
        waiting_on.insert(name, inside.len());
        for d in inside {
            dependents.entry(d).or_default().push(name);
        }
    }
    let mut ready: VecDeque<&str> = waiting_on
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(name, _)| *name)
        .collect();
    let mut order = Vec::with_capacity(deps.len());
    let mut placed = BTreeSet::new();
    while let Some(name) = ready.pop_front() {
        order.push(name.to_string());
        placed.insert(name);
        for dependent in dependents.get(name).into_iter().flatten() {
            if let Some(n) = waiting_on.get_mut(dependent) {
                *n -= 1;
                if *n == 0 {
                    ready.push_back(dependent);
                }
            }
        }
    }
    order.extend(
        deps.keys()
            .filter(|n| !placed.contains(n.as_str()))
            .cloned(),
    );
    order
}

/// Components that (transitively) HARD-depend on any of `changed`, plus `changed`.
fn with_hard_dependents(
    recipes: &BTreeMap<String, Arc<Recipe>>,
    changed: BTreeSet<String>,
) -> BTreeSet<String> {
    let mut hard_dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, recipe) in recipes {
        for (dep, d) in &recipe.dependencies {
            if d.kind == DependencyType::Hard {
                hard_dependents.entry(dep).or_default().push(name);
            }
        }
    }
    let mut out = changed.clone();
    let mut frontier: Vec<String> = changed.into_iter().collect();
    while let Some(name) = frontier.pop() {
        for dependent in hard_dependents.get(name.as_str()).into_iter().flatten() {
            if out.insert(dependent.to_string()) {
                frontier.push(dependent.to_string());
            }
        }
    }
    out
}

/// Refuses a deployment whose roots reach more than [`MAX_COMPONENTS_PER_DEPLOYMENT`]
/// component names through the dependencies of any available version (breadth first).
///
/// Returns the roots grouped so that no two groups can share a component: version
/// resolution of one group cannot constrain another, so each is resolved on its own. (The
/// resolver's cost grows with the square of the components it holds at once; 400
/// independent roots resolved together took tens of megabytes.)
fn check_reach(
    roots: impl Iterator<Item = String>,
    catalog: &dyn Fn(&str) -> Vec<Recipe>,
) -> Result<Vec<Vec<String>>, PlanError> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut groups = UnionFind::default();
    let mut root_names = Vec::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for root in roots.filter(|r| !is_builtin(r)) {
        root_names.push(root.clone());
        if seen.insert(root.clone()) {
            queue.push_back(root);
        }
    }
    while let Some(name) = queue.pop_front() {
        if seen.len() > MAX_COMPONENTS_PER_DEPLOYMENT {
            return Err(fail(
                "TOO_MANY_COMPONENTS",
                format!(
                    "the deployment reaches more than {MAX_COMPONENTS_PER_DEPLOYMENT} components \
                     through its dependencies (at {name}); split it or reduce the dependencies"
                ),
            ));
        }
        for recipe in catalog(&name) {
            for dep in recipe.dependencies.keys() {
                if is_builtin(dep) {
                    continue;
                }
                groups.union(&name, dep);
                if seen.insert(dep.clone()) {
                    queue.push_back(dep.clone());
                }
            }
        }
    }
    if seen.len() > MAX_COMPONENTS_PER_DEPLOYMENT {
        return Err(fail(
            "TOO_MANY_COMPONENTS",
            format!(
                "the deployment reaches {} components through its dependencies; at most \
                 {MAX_COMPONENTS_PER_DEPLOYMENT} are allowed",
                seen.len()
            ),
        ));
    }
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for root in root_names {
        by_group.entry(groups.find(&root)).or_default().push(root);
    }
    Ok(by_group.into_values().collect())
}

/// Disjoint sets of component names (iterative find with path halving).
#[derive(Default)]
struct UnionFind {
    parent: BTreeMap<String, String>,
}

impl UnionFind {
    fn find(&mut self, name: &str) -> String {
        let mut at = name.to_string();
        loop {
            let Some(up) = self.parent.get(&at).cloned() else {
                return at;
            };
            if let Some(grand) = self.parent.get(&up).cloned() {
                self.parent.insert(at.clone(), grand);
            }
            at = up;
        }
    }

    fn union(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent.insert(ra, rb);
        }
    }
}

/// Deployment groups whose roots one device keeps at most (thing groups it belongs to, its
/// thing deployment, local deployments); a deployment that would add one more is refused.
pub const MAX_DEPLOYMENT_GROUPS: usize = 100;

/// The roots of every group after `req`: a fleet deployment (`replace_group_roots`) replaces
/// its group's roots, a local one adds to and removes from them. Other groups keep theirs,
/// and a group left with no roots is dropped.
fn group_roots_after(
    current: &InstalledSet,
    req: &DeploymentRequest,
    group: &str,
) -> Result<BTreeMap<String, GroupRoots>, PlanError> {
    let mut groups = current.group_roots();
    let members = groups.entry(group.to_string()).or_default();
    if req.replace_group_roots {
        members.clear();
    }
    for (name, version) in &req.root_components_to_add {
        semver::Version::parse(version).map_err(|e| {
            fail(
                "INVALID_VERSION",
                format!(
                    "component {name}: version {version:?} is not a valid semantic version: {e}"
                ),
            )
        })?;
        members.insert(name.clone(), version.clone());
    }
    for name in &req.root_components_to_remove {
        members.remove(name);
    }
    if members.is_empty() {
        groups.remove(group);
    }
    if groups.len() > MAX_DEPLOYMENT_GROUPS {
        return Err(fail(
            "TOO_MANY_GROUPS",
            format!(
                "{group} would be deployment group number {}; a device keeps the roots of at \
                 most {MAX_DEPLOYMENT_GROUPS} groups",
                groups.len()
            ),
        ));
    }
    Ok(groups)
}

/// Makes the plan for `inputs`, or says why none can be made.
pub fn plan(inputs: &PlanInputs<'_>) -> Result<Plan, PlanError> {
    let PlanInputs {
        current,
        current_configs,
        request: req,
        imported,
        available,
        env,
    } = inputs;
    let group = req.group_name.as_deref().unwrap_or(LOCAL_DEPLOYMENT_GROUP);

    let groups = group_roots_after(current, req, group)?;
    // The device runs the union of every group's roots; each group's version is a
    // requirement of its own, so two groups naming different versions conflict.
    let mut roots: BTreeMap<String, String> = BTreeMap::new();
    let mut wanted_by: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (group_name, members) in &groups {
        for (name, version) in members {
            roots.entry(name.clone()).or_insert_with(|| version.clone());
            wanted_by
                .entry(name)
                .or_default()
                .push((group_name, version));
        }
    }

    // Imported recipes first, then stored versions not imported again.
    let catalog = |name: &str| -> Vec<Recipe> {
        let mut out: Vec<Recipe> = imported
            .iter()
            .filter(|r| r.name == name)
            .cloned()
            .collect();
        for r in available(name) {
            if !out.iter().any(|o| o.version == r.version) {
                out.push(r);
            }
        }
        out
    };
    let root_groups = check_reach(roots.keys().cloned(), &catalog)?;

    // Built-in components need no recipe; strip them from the resolution.
    let stripped = |name: &str| -> Vec<Recipe> {
        catalog(name)
            .into_iter()
            .map(|mut r| {
                r.dependencies.retain(|d, _| !is_builtin(d));
                r
            })
            .collect()
    };
    let mut resolved = BTreeMap::new();
    for names in &root_groups {
        let mut requirements = Vec::new();
        for name in names {
            for (origin, version) in wanted_by.get(name.as_str()).into_iter().flatten() {
                let requirement = VersionRange::parse(&format!("={version}"))
                    .map_err(|e| fail("INVALID_VERSION", format!("component {name}: {e}")))?;
                requirements.push(RootRequirement {
                    name: name.clone(),
                    requirement,
                    origin: origin.to_string(),
                });
            }
        }
        let chosen = resolve_versions(&requirements, &stripped).map_err(|e| match e {
            ResolveError::TooManyComponents { .. } => fail("TOO_MANY_COMPONENTS", e.to_string()),
            _ => fail("NO_AVAILABLE_COMPONENT_VERSION", e.to_string()),
        })?;
        resolved.extend(chosen);
    }

    // The full (unstripped) recipes, as they will be stored and run.
    let mut recipes: BTreeMap<String, Arc<Recipe>> = BTreeMap::new();
    for (name, r) in &resolved {
        let full = catalog(name)
            .into_iter()
            .find(|c| c.version == r.version)
            .ok_or_else(|| {
                fail(
                    "COMPONENT_NOT_FOUND",
                    format!("recipe of {name} {} vanished", r.version),
                )
            })?;
        recipes.insert(name.clone(), Arc::new(full));
    }
    let builtins: BTreeSet<String> = roots
        .keys()
        .chain(recipes.values().flat_map(|r| r.dependencies.keys()))
        .filter(|n| is_builtin(n))
        .cloned()
        .collect();

    // The new set.
    let mut set = InstalledSet {
        groups,
        ..Default::default()
    };
    for (name, recipe) in &recipes {
        let run_with = req
            .run_with
            .get(name)
            .cloned()
            .or_else(|| current.components.get(name).map(|p| p.run_with.clone()))
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
    for name in &builtins {
        let version = roots
            .get(name)
            .cloned()
            .unwrap_or_else(|| GGC_VERSION.to_string());
        set.components.insert(
            name.clone(),
            Installed {
                version,
                root: roots.contains_key(name),
                builtin: true,
                run_with: Default::default(),
            },
        );
    }

    // Configuration: RESET then MERGE on top of what each component has.
    for name in req.configuration_updates.keys() {
        if !set.components.contains_key(name) {
            return Err(fail(
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
        let current_cfg = current
            .components
            .contains_key(name)
            .then(|| current_configs.get(name))
            .flatten();
        let cfg = tree::compute_update(
            current_cfg,
            &defaults,
            update.map(|u| u.reset.as_slice()).unwrap_or_default(),
            update.and_then(|u| u.merge.as_ref()),
        )
        .map_err(|e| {
            fail(
                "INVALID_CONFIGURATION_UPDATE",
                format!("component {name}: {e}"),
            )
        })?;
        configs.insert(name.clone(), cfg);
    }

    // Each recipe rendered once, with the new versions and configuration. The values it
    // read tell whether the configuration change reaches its scripts.
    let version_of = |component: &str| {
        set.components
            .get(component)
            .or_else(|| current.components.get(component))
            .map(|c| c.version.clone())
    };
    let config_of = |component: &str, keys: &[String]| {
        configs
            .get(component)
            .or_else(|| current_configs.get(component))
            .and_then(|c| tree::get(c, keys).cloned())
    };
    let mut selected = BTreeMap::new();
    let mut reads_per_component = BTreeMap::new();
    let mut decompressed_used = BTreeSet::new();
    for (name, recipe) in &recipes {
        let vars = RenderVars {
            layout: env.layout,
            thing_name: env.thing_name,
            versions: &version_of,
            config: &config_of,
            reads: RefCell::new(BTreeSet::new()),
            decompressed: RefCell::new(BTreeSet::new()),
        };
        let chosen =
            render(recipe, env.platform, &vars).map_err(|e| fail("NO_MATCHING_PLATFORM", e))?;
        selected.insert(name.clone(), chosen);
        decompressed_used.append(&mut vars.decompressed.borrow_mut());
        reads_per_component.insert(name.clone(), vars.reads.into_inner());
    }

    // A component restarts when its version or run-with changes, or when a configuration
    // value its lifecycle reads changes.
    let mut changed = BTreeSet::new();
    for (name, c) in &set.components {
        let before = current.components.get(name);
        let reads_changed = reads_per_component.get(name).is_some_and(|reads| {
            reads.iter().any(|(component, pointer)| {
                let Ok(keys) = tree::pointer_keys(pointer) else {
                    return false;
                };
                let old = current_configs
                    .get(component)
                    .and_then(|c| tree::get(c, &keys));
                let new = configs
                    .get(component)
                    .or_else(|| current_configs.get(component))
                    .and_then(|c| tree::get(c, &keys));
                old != new
            })
        });
        if before != Some(c) || reads_changed {
            changed.insert(name.clone());
        }
    }
    let changed = with_hard_dependents(&recipes, changed);

    let recipes_to_save = recipes
        .iter()
        .filter(|(name, recipe)| {
            let is_new_version = current.components.get(*name).map(|c| &c.version)
                != Some(&recipe.version.to_string());
            is_new_version || imported.iter().any(|i| &i.name == *name)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let removed = current
        .components
        .keys()
        .filter(|n| !set.components.contains_key(*n))
        .cloned()
        .collect();
    Ok(Plan {
        set,
        recipes,
        selected,
        configs,
        changed,
        removed,
        recipes_to_save,
        builtins,
        decompressed_used,
    })
}
