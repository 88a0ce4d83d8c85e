//! Hostile deployment input on the real binary: `--update-config` past the depth bound is
//! refused at creation (the report's 122 levels made `deployment list` fail from then on)
//! and the deepest allowed configuration survives a restart; dependency sets past the
//! component bound fail the deployment without taking the core down; names with
//! bidirectional-control characters are refused, naming the field.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// The bound documented as `lichen_core::config::tree::MAX_CONFIG_DEPTH`.
const MAX_CONFIG_DEPTH: usize = 64;
const NAME: &str = "com.test.Deep";

/// `--update-config` whose MERGE nests `levels` containers deep (the MERGE object included).
fn update_config(levels: usize) -> String {
    let inner = format!("{}1{}", r#"{"k":"#.repeat(levels), "}".repeat(levels));
    format!(r#"{{"{NAME}": {{"MERGE": {inner}}}}}"#)
}

fn recipe() -> String {
    format!(
        r#"{{"RecipeFormatVersion": "2020-01-25", "ComponentName": "{NAME}",
  "ComponentVersion": "1.0.0",
  "Manifests": [{{"Platform": {{"os": "linux"}}, "Lifecycle": {{"Run": "exec sleep 300"}}}}]}}"#
    )
}

fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0)];
    while let Some((node, above)) = stack.pop() {
        let children: Vec<&Value> = match node {
            Value::Object(m) => m.values().collect(),
            Value::Array(a) => a.iter().collect(),
            _ => continue,
        };
        deepest = deepest.max(above + 1);
        stack.extend(children.into_iter().map(|c| (c, above + 1)));
    }
    deepest
}

#[test]
fn deep_update_config_is_refused_at_creation_and_the_deepest_allowed_survives_restart() {
    let mut core = TestCore::start();
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("deep.json", &recipe())]);
    let recipes = recipes.display().to_string();

    // Just past the bound, the report's 122 and 10x the bound: each refused, nothing queued.
    for levels in [MAX_CONFIG_DEPTH + 1, 122, MAX_CONFIG_DEPTH * 10] {
        let config = update_config(levels);
        let out = core.cli(&[
            "deployment",
            "create",
            "--recipe-dir",
            &recipes,
            "-m",
            &format!("{NAME}=1.0.0"),
            "--update-config",
            &config,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{levels} levels were accepted");
        assert!(
            stderr.contains("--update-config") || stderr.contains(&format!("{NAME}.MERGE")),
            "{levels} levels: the error names the field: {stderr}"
        );
        let list = core.json(&["deployment", "list"]);
        assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    }
    let out = core.cli(&[
        "deployment",
        "create",
        "--recipe-dir",
        &recipes,
        "-m",
        &format!("{NAME}=1.0.0"),
        "--update-config",
        &update_config(MAX_CONFIG_DEPTH + 1),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("configurationUpdates.{NAME}.MERGE")) && stderr.contains("64"),
        "the core's refusal names the field and the bound: {stderr}"
    );

    // Exactly the bound: deployed, listed, and read back the same after a restart.
    let record = core.deploy(
        std::path::Path::new(&recipes),
        None,
        &[
            "-m",
            &format!("{NAME}=1.0.0"),
            "--update-config",
            &update_config(MAX_CONFIG_DEPTH),
        ],
    );
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    let before = core.json(&["component", "details", NAME]);
    core.stop();
    core.spawn();
    core.wait_state(NAME, "RUNNING", Duration::from_secs(60));
    let after = core.json(&["component", "details", NAME]);
    assert_eq!(after["configuration"], before["configuration"]);
    assert_eq!(depth(&after["configuration"]), MAX_CONFIG_DEPTH, "{after}");
    assert_eq!(
        core.json(&["deployment", "list"]).as_array().map(Vec::len),
        Some(1)
    );
}

/// The report's 600 SOFT dependencies and a chain 10x the bound: the deployment fails with
/// the bound named, the core keeps running and the next deployment succeeds.
#[test]
fn too_many_components_fail_the_deployment_and_the_core_survives() {
    // lichen_recipe::MAX_COMPONENTS_PER_DEPLOYMENT
    const MAX_COMPONENTS: usize = 500;
    let core = TestCore::start();
    let simple = |name: &str, deps: &str| {
        format!(
            r#"{{"RecipeFormatVersion": "2020-01-25", "ComponentName": "{name}",
  "ComponentVersion": "1.0.0", "ComponentDependencies": {{{deps}}},
  "Manifests": [{{"Platform": {{"os": "linux"}}, "Lifecycle": {{}}}}]}}"#
        )
    };
    let dep = |name: &str| {
        format!(r#""{name}": {{"VersionRequirement": "^1", "DependencyType": "SOFT"}}"#)
    };

    let wide: Vec<String> = (0..600).map(|i| format!("com.test.Soft{i}")).collect();
    let mut files: Vec<(String, String)> = wide
        .iter()
        .map(|n| (format!("{n}.json"), simple(n, "")))
        .collect();
    let deps: Vec<String> = wide.iter().map(|n| dep(n)).collect();
    files.push(("wide.json".into(), simple("com.test.Wide", &deps.join(","))));
    let n = MAX_COMPONENTS * 10;
    for i in 0..n {
        let next = if i + 1 < n {
            dep(&format!("com.test.Chain{}", i + 1))
        } else {
            String::new()
        };
        files.push((
            format!("chain{i}.json"),
            simple(&format!("com.test.Chain{i}"), &next),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    let recipes = recipe_dir(core.dir.path(), "recipes", &refs);

    for root in ["com.test.Wide", "com.test.Chain0"] {
        let record = core.deploy(&recipes, None, &["-m", &format!("{root}=1.0.0")]);
        assert_eq!(record["status"], "FAILED", "{root}: {record}");
        let text = record.to_string();
        assert!(text.contains("more than 500 components"), "{root}: {text}");
    }
    let ok = core.deploy(&recipes, None, &["-m", "com.test.Soft1=1.0.0"]);
    assert_eq!(ok["status"], "SUCCEEDED", "the core still deploys: {ok}");
}

#[test]
fn bidi_component_names_are_refused_naming_the_field() {
    let core = TestCore::start();
    let spoof = "com.test.\u{202E}gnp.exe";
    let out = core.cli(&["deployment", "create", "-m", &format!("{spoof}=1.0.0")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains("rootComponentsToAdd") && stderr.contains("bidirectional"),
        "{stderr}"
    );
    assert_eq!(
        core.json(&["deployment", "list"]).as_array().map(Vec::len),
        Some(0)
    );

    let recipe = format!(
        r#"{{"RecipeFormatVersion": "2020-01-25", "ComponentName": "{spoof}",
  "ComponentVersion": "1.0.0", "Manifests": [{{"Lifecycle": {{}}}}]}}"#
    );
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("spoof.json", &recipe)]);
    let record = core.deploy(&recipes, None, &["-m", "com.test.Plain=1.0.0"]);
    let text = record.to_string();
    assert_eq!(record["status"], "FAILED", "{text}");
    assert!(
        text.contains("ComponentName") && text.contains("bidirectional"),
        "{text}"
    );
}
