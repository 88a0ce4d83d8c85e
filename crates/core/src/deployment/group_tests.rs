//! Per-group roots in the planner: fleet deployments replace their group's roots, the
//! device runs the union of every group, and versions resolve across all of them.

use std::collections::BTreeMap;

use lichen_recipe::{Platform, Recipe, parse_recipe};
use serde_json::{Value, json};

use super::installed::InstalledSet;
use super::model::DeploymentRequest;
use super::planner::*;
use crate::paths::RootLayout;

fn recipe(name: &str, version: &str, deps: &[(&str, &str)]) -> Recipe {
    let deps: serde_json::Map<String, Value> = deps
        .iter()
        .map(|(d, range)| (d.to_string(), json!({"VersionRequirement": range})))
        .collect();
    let doc = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDependencies": deps,
        "Manifests": [{"Platform": {"os": "*"}, "Lifecycle": {"Run": "true"}}],
    });
    parse_recipe(&doc.to_string(), name).unwrap()
}

/// A device with every recipe stored, applying plans as the engine would.
struct Device {
    current: InstalledSet,
    stored: Vec<Recipe>,
    layout: RootLayout,
    platform: Platform,
}

impl Device {
    fn new(stored: Vec<Recipe>) -> Device {
        Device {
            current: InstalledSet::default(),
            stored,
            layout: RootLayout::new("/lichen-test-root"),
            platform: Platform::current(),
        }
    }

    fn plan(&self, request: &DeploymentRequest) -> Result<Plan, PlanError> {
        let available = |name: &str| -> Vec<Recipe> {
            self.stored
                .iter()
                .filter(|r| r.name == name)
                .cloned()
                .collect()
        };
        plan(&PlanInputs {
            current: &self.current,
            current_configs: &BTreeMap::new(),
            request,
            imported: &[],
            available: &available,
            env: RenderEnv {
                layout: &self.layout,
                thing_name: "core-1",
                platform: &self.platform,
            },
        })
    }

    fn deploy(&mut self, request: &DeploymentRequest) -> Plan {
        let plan = self.plan(request).unwrap_or_else(|e| panic!("{e:?}"));
        self.current = plan.set.clone();
        plan
    }

    fn names(&self) -> Vec<&str> {
        self.current.components.keys().map(String::as_str).collect()
    }
}

fn local(pairs: &[(&str, &str)]) -> DeploymentRequest {
    DeploymentRequest {
        root_components_to_add: pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn fleet(group: &str, pairs: &[(&str, &str)]) -> DeploymentRequest {
    DeploymentRequest {
        group_name: Some(group.into()),
        replace_group_roots: true,
        ..local(pairs)
    }
}

fn catalog() -> Vec<Recipe> {
    vec![
        recipe("a", "1.0.0", &[]),
        recipe("b", "1.0.0", &[("lib", ">=1.0.0")]),
        recipe("c", "1.0.0", &[]),
        recipe("lib", "1.0.0", &[]),
        recipe("lib", "2.0.0", &[]),
        recipe("compC", "1.0.0", &[]),
        recipe("compC", "1.1.0", &[]),
    ]
}

#[test]
fn the_device_runs_the_union_and_a_group_replaces_only_its_own_roots() {
    let mut device = Device::new(catalog());
    device.deploy(&local(&[("a", "1.0.0")]));
    device.deploy(&fleet("thinggroup/x", &[("a", "1.0.0"), ("b", "1.0.0")]));
    device.deploy(&fleet("thing/core-1", &[("c", "1.0.0")]));
    assert_eq!(device.names(), ["a", "b", "c", "lib"]);
    assert_eq!(
        device.current.groups.keys().collect::<Vec<_>>(),
        ["LOCAL_DEPLOYMENT", "thing/core-1", "thinggroup/x"]
    );

    // x no longer names a: the local deployment still does, so it stays, still a root.
    let plan = device.deploy(&fleet("thinggroup/x", &[("b", "1.0.0")]));
    assert!(plan.removed.is_empty(), "{:?}", plan.removed);
    assert!(device.current.components["a"].root);
    assert_eq!(
        device.current.groups["thinggroup/x"]
            .keys()
            .collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(
        device.current.groups["LOCAL_DEPLOYMENT"]
            .keys()
            .collect::<Vec<_>>(),
        ["a"]
    );

    // x names nothing: b and the dependency only it had go; the group is dropped.
    let plan = device.deploy(&fleet("thinggroup/x", &[]));
    assert_eq!(plan.removed, ["b", "lib"]);
    assert_eq!(device.names(), ["a", "c"]);
    assert!(!device.current.groups.contains_key("thinggroup/x"));

    // A local removal removes from the local group only.
    device.deploy(&fleet("thinggroup/y", &[("a", "1.0.0")]));
    let plan = device.deploy(&DeploymentRequest {
        root_components_to_remove: vec!["a".into(), "c".into()],
        ..Default::default()
    });
    assert!(plan.removed.is_empty(), "{:?}", plan.removed);
    assert_eq!(device.names(), ["a", "c"]);
    assert!(!device.current.groups.contains_key("LOCAL_DEPLOYMENT"));
}

#[test]
fn local_deployments_still_add_incrementally() {
    let mut device = Device::new(catalog());
    device.deploy(&local(&[("a", "1.0.0")]));
    device.deploy(&local(&[("c", "1.0.0")]));
    assert_eq!(device.names(), ["a", "c"]);
    assert_eq!(device.current.groups["LOCAL_DEPLOYMENT"].len(), 2);
}

#[test]
fn a_version_conflict_between_groups_names_both_requirements() {
    let mut device = Device::new(catalog());
    device.deploy(&fleet("thinggroup/a", &[("compC", "1.0.0")]));
    let err = device
        .plan(&fleet("thing/core-1", &[("compC", "1.1.0")]))
        .unwrap_err();
    assert_eq!(err.kind, "NO_AVAILABLE_COMPONENT_VERSION");
    assert!(
        err.cause.contains("compC")
            && err.cause.contains("thinggroup/a requires =1.0.0")
            && err.cause.contains("thing/core-1 requires =1.1.0"),
        "{}",
        err.cause
    );
    // The same version from both is no conflict, and the first group's removal keeps it.
    device.deploy(&fleet("thing/core-1", &[("compC", "1.0.0")]));
    let plan = device.deploy(&fleet("thinggroup/a", &[]));
    assert!(plan.removed.is_empty());
    assert_eq!(device.current.components["compC"].version, "1.0.0");
    // Now the thing alone names compC: it may move to 1.1.0.
    device.deploy(&fleet("thing/core-1", &[("compC", "1.1.0")]));
    assert_eq!(device.current.components["compC"].version, "1.1.0");
}

#[test]
fn a_dependency_requirement_conflicting_with_another_groups_root_is_named() {
    let mut stored = catalog();
    stored.push(recipe("needs-old", "1.0.0", &[("lib", "<2.0.0")]));
    let mut device = Device::new(stored);
    device.deploy(&fleet("thinggroup/a", &[("lib", "2.0.0")]));
    let err = device
        .plan(&fleet("thing/core-1", &[("needs-old", "1.0.0")]))
        .unwrap_err();
    assert!(
        err.cause.contains("needs-old requires <2.0.0")
            && err.cause.contains("thinggroup/a requires =2.0.0"),
        "{}",
        err.cause
    );
}

#[test]
fn groups_beyond_the_bound_are_refused() {
    let mut device = Device::new(catalog());
    for i in 0..MAX_DEPLOYMENT_GROUPS {
        let mut set = device.current.group_roots();
        set.insert(
            format!("thinggroup/g{i}"),
            BTreeMap::from([("a".to_string(), "1.0.0".to_string())]),
        );
        device.current.groups = set;
    }
    let err = device
        .plan(&fleet("thinggroup/one-more", &[("c", "1.0.0")]))
        .unwrap_err();
    assert_eq!(err.kind, "TOO_MANY_GROUPS");
    assert!(err.cause.contains("thinggroup/one-more"), "{}", err.cause);
}
