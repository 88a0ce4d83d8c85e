//! Steps keyed by platform (`run: {posix: ..., windows: ...}`), as the Java nucleus takes.

use serde_json::{Value, json};

use crate::{Platform, parse_recipe};

fn recipe(lifecycle: Value) -> crate::Recipe {
    let doc = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Keyed",
        "ComponentVersion": "1.0.0",
        "Manifests": [{"Platform": {"os": "*"}, "Lifecycle": lifecycle}],
    });
    match parse_recipe(&doc.to_string(), "keyed.json") {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn on(os: &str) -> Platform {
    Platform::default()
        .with("os", os)
        .with("architecture", "amd64")
}

fn run_on(lifecycle: Value, os: &str) -> Option<String> {
    recipe(lifecycle)
        .select(&on(os))
        .unwrap()
        .lifecycle
        .run
        .map(|s| s.script)
}

#[test]
fn the_most_specific_key_wins() {
    let lc = json!({"Run": {"posix": "p", "linux": "l", "windows": "w", "all": "a"}});
    assert_eq!(run_on(lc.clone(), "linux").as_deref(), Some("l"));
    assert_eq!(run_on(lc.clone(), "darwin").as_deref(), Some("p"));
    assert_eq!(run_on(lc.clone(), "windows").as_deref(), Some("w"));
    let lc = json!({"run": {"posix": "p", "all": "a"}});
    assert_eq!(run_on(lc.clone(), "linux").as_deref(), Some("p"));
    assert_eq!(run_on(lc, "windows").as_deref(), Some("a"));
    let lc = json!({"Run": {"darwin": "d", "all": "a"}});
    assert_eq!(run_on(lc.clone(), "linux").as_deref(), Some("a"));
    assert_eq!(run_on(lc, "darwin").as_deref(), Some("d"));
}

#[test]
fn no_key_for_this_platform_means_no_step() {
    let lc = json!({"Install": {"windows": "w"}, "Run": {"posix": "p"}});
    let r = recipe(lc);
    let linux = r.select(&on("linux")).unwrap().lifecycle;
    assert!(linux.install.is_none());
    assert_eq!(linux.run.unwrap().script, "p");
    let windows = r.select(&on("windows")).unwrap().lifecycle;
    assert_eq!(windows.install.unwrap().script, "w");
    assert!(windows.run.is_none());
}

#[test]
fn script_map_form_keeps_the_other_fields() {
    let lc = json!({"Install": {
        "Script": {"posix": "sh install.sh", "windows": "install.cmd"},
        "Timeout": 30,
        "RequiresPrivilege": true,
    }});
    let r = recipe(lc);
    let install = r.select(&on("linux")).unwrap().lifecycle.install.unwrap();
    assert_eq!(install.script, "sh install.sh");
    assert_eq!(install.timeout, Some(std::time::Duration::from_secs(30)));
    assert!(install.requires_privilege);
    let lc = json!({"Install": {"Script": {"windows": "install.cmd"}, "Timeout": 30}});
    assert!(
        recipe(lc)
            .select(&on("linux"))
            .unwrap()
            .lifecycle
            .install
            .is_none()
    );
}

#[test]
fn yaml_form_and_bad_branches_name_the_field() {
    let yaml = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.example.Yaml
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      run:
        posix: "echo hi"
        windows: "echo hi.cmd"
"#;
    let r = parse_recipe(yaml, "y.yaml").unwrap();
    assert_eq!(
        r.select(&on("linux"))
            .unwrap()
            .lifecycle
            .run
            .unwrap()
            .script,
        "echo hi"
    );
    // A branch that is itself wrong is reported with its path.
    let doc = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Bad",
        "ComponentVersion": "1.0.0",
        "Manifests": [{"Lifecycle": {"Run": {"posix": {"Timeout": 3}}}}],
    });
    let e = parse_recipe(&doc.to_string(), "bad.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.json") && e.contains("Script: missing"),
        "{e}"
    );
    // A map with other keys is a step object and still needs its Script.
    let doc = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Bad",
        "ComponentVersion": "1.0.0",
        "Manifests": [{"Lifecycle": {"Run": {"posix": "x", "Timeout": 3}}}],
    });
    let e = parse_recipe(&doc.to_string(), "bad.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("Script: missing"), "{e}");
}
