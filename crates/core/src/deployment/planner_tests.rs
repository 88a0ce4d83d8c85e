//! The planner over in-memory inputs: plans, errors naming what failed, renders per
//! deployment, and the bound on components per deployment on the default test stack.

use std::collections::BTreeMap;

use lichen_recipe::{Platform, Recipe, parse_recipe};
use serde_json::{Value, json};

use super::installed::{Installed, InstalledSet};
use super::model::{ConfigurationUpdate, DeploymentRequest};
use super::planner::*;
use crate::paths::RootLayout;

fn recipe(name: &str, version: &str, deps: &[(&str, &str)], run: &str) -> Recipe {
    let deps: serde_json::Map<String, Value> = deps
        .iter()
        .map(|(d, kind)| {
            (
                d.to_string(),
                json!({"VersionRequirement": "*", "DependencyType": kind}),
            )
        })
        .collect();
    let doc = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDependencies": deps,
        "ComponentConfiguration": {"DefaultConfiguration": {"mode": "one", "other": 1}},
        "Manifests": [{"Platform": {"os": "*"}, "Lifecycle": {"Run": run}}],
    });
    parse_recipe(&doc.to_string(), name).unwrap()
}

struct World {
    current: InstalledSet,
    configs: BTreeMap<String, Value>,
    stored: Vec<Recipe>,
    layout: RootLayout,
    platform: Platform,
}

impl World {
    fn new() -> World {
        World {
            current: InstalledSet::default(),
            configs: BTreeMap::new(),
            stored: Vec::new(),
            layout: RootLayout::new("/lichen-test-root"),
            platform: Platform::current(),
        }
    }

    fn plan(&self, request: &DeploymentRequest, imported: &[Recipe]) -> Result<Plan, PlanError> {
        let available = |name: &str| -> Vec<Recipe> {
            self.stored
                .iter()
                .filter(|r| r.name == name)
                .cloned()
                .collect()
        };
        plan(&PlanInputs {
            current: &self.current,
            current_configs: &self.configs,
            request,
            imported,
            available: &available,
            env: RenderEnv {
                layout: &self.layout,
                thing_name: "thing",
                platform: &self.platform,
            },
        })
    }

    /// Installs what `plan` decided, as the engine would.
    fn install(&mut self, plan: &Plan) {
        self.current = plan.set.clone();
        self.configs = plan.configs.clone();
        for r in plan.recipes.values() {
            if !self
                .stored
                .iter()
                .any(|s| s.name == r.name && s.version == r.version)
            {
                self.stored.push((**r).clone());
            }
        }
    }
}

fn add(pairs: &[(&str, &str)]) -> DeploymentRequest {
    DeploymentRequest {
        root_components_to_add: pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn plans_dependencies_configuration_and_changes() {
    let world = World::new();
    let recipes = [
        recipe(
            "app",
            "1.0.0",
            &[("lib", "HARD"), ("aws.greengrass.Nucleus", "SOFT")],
            "run app",
        ),
        recipe("lib", "2.0.0", &[], "run lib"),
    ];
    let plan = world.plan(&add(&[("app", "1.0.0")]), &recipes).unwrap();
    assert_eq!(
        plan.set.components.keys().collect::<Vec<_>>(),
        ["app", "aws.greengrass.Nucleus", "lib"]
    );
    assert!(plan.set.components["app"].root);
    assert!(!plan.set.components["lib"].root);
    assert!(plan.set.components["aws.greengrass.Nucleus"].builtin);
    assert_eq!(plan.configs["lib"], json!({"mode": "one", "other": 1}));
    assert_eq!(plan.changed.len(), 3);
    assert_eq!(
        plan.selected["app"].lifecycle.run.as_ref().unwrap().script,
        "run app"
    );
    assert!(plan.recipes_to_save.contains("lib"));
    assert!(plan.removed.is_empty());
}

#[test]
fn errors_name_what_failed() {
    let world = World::new();
    let app = recipe("app", "1.0.0", &[("missing.Lib", "HARD")], "x");
    let err = world.plan(&add(&[("app", "1.0.0")]), &[app]).unwrap_err();
    assert_eq!(err.kind, "NO_AVAILABLE_COMPONENT_VERSION");
    assert!(err.cause.contains("missing.Lib"), "{}", err.cause);

    let err = world.plan(&add(&[("app", "one")]), &[]).unwrap_err();
    assert_eq!(err.kind, "INVALID_VERSION");
    assert!(err.cause.contains("app"), "{}", err.cause);

    let mut req = add(&[("lib", "2.0.0")]);
    req.configuration_updates
        .insert("stranger".into(), ConfigurationUpdate::default());
    let err = world
        .plan(&req, &[recipe("lib", "2.0.0", &[], "x")])
        .unwrap_err();
    assert_eq!(err.kind, "INVALID_CONFIGURATION_UPDATE");
    assert!(err.cause.contains("stranger"), "{}", err.cause);
}

#[test]
fn restarts_only_components_whose_lifecycle_reads_the_changed_configuration() {
    let mut world = World::new();
    let recipes = [
        recipe("reads", "1.0.0", &[], "echo {configuration:/mode}"),
        recipe("ignores", "1.0.0", &[], "echo fixed"),
        recipe("dependent", "1.0.0", &[("reads", "HARD")], "echo dep"),
    ];
    let first = world
        .plan(
            &add(&[
                ("reads", "1.0.0"),
                ("ignores", "1.0.0"),
                ("dependent", "1.0.0"),
            ]),
            &recipes,
        )
        .unwrap();
    world.install(&first);

    let mut req = DeploymentRequest::default();
    for name in ["reads", "ignores"] {
        req.configuration_updates.insert(
            name.into(),
            ConfigurationUpdate {
                reset: vec![],
                merge: Some(json!({"mode": "two"})),
            },
        );
    }
    let second = world.plan(&req, &[]).unwrap();
    assert_eq!(second.configs["ignores"]["mode"], "two");
    assert_eq!(
        second.changed.iter().collect::<Vec<_>>(),
        ["dependent", "reads"],
        "HARD dependent restarts with what it depends on; `ignores` does not"
    );
    assert_eq!(
        second.selected["reads"]
            .lifecycle
            .run
            .as_ref()
            .unwrap()
            .script,
        "echo two"
    );
    assert!(second.recipes_to_save.is_empty());

    let other = world.plan(&DeploymentRequest::default(), &[]).unwrap();
    assert!(other.changed.is_empty(), "{:?}", other.changed);
}

#[test]
fn each_recipe_is_rendered_once_per_deployment() {
    let world = World::new();
    let recipes = [
        recipe("a", "1.0.0", &[("b", "HARD")], "echo {configuration:/mode}"),
        recipe("b", "1.0.0", &[("c", "SOFT")], "echo b"),
        recipe("c", "1.0.0", &[], "echo c"),
    ];
    RENDERS.with(|r| r.set(0));
    let plan = world.plan(&add(&[("a", "1.0.0")]), &recipes).unwrap();
    assert_eq!(plan.selected.len(), 3);
    assert_eq!(RENDERS.with(|r| r.get()), 3);
}

#[test]
fn removal_lists_what_goes() {
    let mut world = World::new();
    let recipes = [
        recipe("a", "1.0.0", &[], "x"),
        recipe("b", "1.0.0", &[], "y"),
    ];
    let first = world
        .plan(&add(&[("a", "1.0.0"), ("b", "1.0.0")]), &recipes)
        .unwrap();
    world.install(&first);
    let req = DeploymentRequest {
        root_components_to_remove: vec!["b".into()],
        ..Default::default()
    };
    let second = world.plan(&req, &[]).unwrap();
    assert_eq!(second.removed, ["b"]);
    assert!(second.changed.is_empty());
    assert_eq!(
        second.set.components.get("a"),
        Some(&Installed {
            version: "1.0.0".into(),
            root: true,
            builtin: false,
            run_with: Default::default(),
        })
    );
}

fn chain(n: usize) -> Vec<Recipe> {
    (0..n)
        .map(|i| {
            let next = format!("c{}", i + 1);
            let deps: Vec<(&str, &str)> = if i + 1 < n {
                vec![(next.as_str(), "HARD")]
            } else {
                vec![]
            };
            recipe(&format!("c{i}"), "1.0.0", &deps, "x")
        })
        .collect()
}

fn fan(n: usize) -> Vec<Recipe> {
    let names: Vec<String> = (0..n).map(|i| format!("leaf{i}")).collect();
    let deps: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "SOFT")).collect();
    let mut out = vec![recipe("root", "1.0.0", &deps, "x")];
    out.extend(names.iter().map(|n| recipe(n, "1.0.0", &[], "x")));
    out
}

#[test]
fn ten_times_the_bound_is_refused_cleanly() {
    let world = World::new();
    let n = MAX_COMPONENTS_PER_DEPLOYMENT * 10;
    let err = world.plan(&add(&[("c0", "1.0.0")]), &chain(n)).unwrap_err();
    assert_eq!(err.kind, "TOO_MANY_COMPONENTS");
    assert!(
        err.cause
            .contains(&MAX_COMPONENTS_PER_DEPLOYMENT.to_string()),
        "{}",
        err.cause
    );
    let err = world.plan(&add(&[("root", "1.0.0")]), &fan(n)).unwrap_err();
    assert_eq!(err.kind, "TOO_MANY_COMPONENTS");
}

#[test]
fn ordering_ten_times_the_bound_is_iterative() {
    let n = MAX_COMPONENTS_PER_DEPLOYMENT * 10;
    let deps: BTreeMap<String, Vec<String>> = (0..n)
        .map(|i| (format!("c{i:05}"), vec![format!("c{:05}", i + 1)]))
        .collect();
    let order = dependency_order(&deps);
    assert_eq!(order.len(), n);
    assert_eq!(
        order.first().map(String::as_str),
        Some(&*format!("c{:05}", n - 1))
    );
    assert_eq!(order.last().map(String::as_str), Some("c00000"));
    // A cycle does not hang or lose members.
    let cyclic: BTreeMap<String, Vec<String>> = [("a", "b"), ("b", "a"), ("c", "a")]
        .iter()
        .map(|(n, d)| (n.to_string(), vec![d.to_string()]))
        .collect();
    assert_eq!(dependency_order(&cyclic).len(), 3);
}

#[test]
fn a_fan_at_the_bound_plans() {
    let world = World::new();
    let plan = world
        .plan(
            &add(&[("root", "1.0.0")]),
            &fan(MAX_COMPONENTS_PER_DEPLOYMENT - 1),
        )
        .unwrap();
    assert_eq!(plan.set.components.len(), MAX_COMPONENTS_PER_DEPLOYMENT);
}

#[test]
fn a_chain_at_the_bound_plans() {
    let world = World::new();
    let plan = world
        .plan(
            &add(&[("c0", "1.0.0")]),
            &chain(MAX_COMPONENTS_PER_DEPLOYMENT),
        )
        .unwrap();
    assert_eq!(plan.set.components.len(), MAX_COMPONENTS_PER_DEPLOYMENT);
    assert_eq!(plan.changed.len(), MAX_COMPONENTS_PER_DEPLOYMENT);
}

#[test]
fn independent_roots_resolve_apart_and_shared_dependencies_together() {
    let world = World::new();
    let recipes = [
        recipe("a", "1.0.0", &[("shared", "HARD")], "x"),
        recipe("b", "1.0.0", &[("shared", "SOFT")], "x"),
        recipe("shared", "1.0.0", &[], "x"),
        recipe("shared", "2.0.0", &[], "x"),
        recipe("alone", "1.0.0", &[], "x"),
    ];
    let plan = world
        .plan(
            &add(&[("a", "1.0.0"), ("b", "1.0.0"), ("alone", "1.0.0")]),
            &recipes,
        )
        .unwrap();
    assert_eq!(plan.set.components.len(), 4);
    assert_eq!(plan.set.components["shared"].version, "2.0.0");
    // 400 independent roots plan, each resolved on its own.
    let many: Vec<Recipe> = (0..400)
        .map(|i| recipe(&format!("r{i}"), "1.0.0", &[], "x"))
        .collect();
    let names: Vec<(String, String)> = (0..400)
        .map(|i| (format!("r{i}"), "1.0.0".into()))
        .collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let plan = world.plan(&add(&pairs), &many).unwrap();
    assert_eq!(plan.set.components.len(), 400);
}

#[test]
fn records_whose_decompressed_path_a_lifecycle_names() {
    let world = World::new();
    let recipes = [
        recipe("own", "1.0.0", &[], "ls {artifacts:decompressedPath}"),
        recipe("lib", "1.0.0", &[], "echo lib {artifacts:path}"),
        recipe(
            "user",
            "1.0.0",
            &[("lib", "HARD")],
            "ls {lib:artifacts:decompressedPath}",
        ),
        recipe("plain", "1.0.0", &[], "echo plain"),
    ];
    let plan = world
        .plan(
            &add(&[
                ("own", "1.0.0"),
                ("lib", "1.0.0"),
                ("user", "1.0.0"),
                ("plain", "1.0.0"),
            ]),
            &recipes,
        )
        .unwrap();
    assert_eq!(
        plan.decompressed_used.iter().collect::<Vec<_>>(),
        ["lib", "own"],
        "a dependency's path named by its user counts; {{artifacts:path}} does not"
    );
}
