use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    Access, ComponentType, DependencyType, Platform, RecipeError, SkipIf, Unarchive, parse_recipe,
};

fn ok(text: &str) -> crate::Recipe {
    match parse_recipe(text, "recipe.yaml") {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn err(text: &str) -> String {
    match parse_recipe(text, "recipe.yaml") {
        Ok(r) => panic!("expected an error, parsed {}", r.name),
        Err(e) => e.to_string(),
    }
}

fn json_recipe(extra: Value) -> String {
    let mut base = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Hello",
        "ComponentVersion": "1.0.0",
    });
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
    base.to_string()
}

fn linux() -> Platform {
    Platform::default()
        .with("os", "linux")
        .with("architecture", "amd64")
}

#[test]
fn parses_dg_hello_world_yaml() {
    let r = ok(r#"---
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.HelloWorld
ComponentVersion: '1.0.0'
ComponentDescription: My first AWS IoT Greengrass component.
ComponentPublisher: Amazon
ComponentConfiguration:
  DefaultConfiguration:
    Message: world
Manifests:
  - Platform:
      os: linux
    Lifecycle:
      Run: |
        python3 -u {artifacts:path}/hello_world.py "{configuration:/Message}"
  - Platform:
      os: windows
    Lifecycle:
      Run: |
        py -3 -u {artifacts:path}/hello_world.py "{configuration:/Message}"
"#);
    assert_eq!(r.name, "com.example.HelloWorld");
    assert_eq!(r.version, semver::Version::new(1, 0, 0));
    assert_eq!(r.format_version, "2020-01-25");
    assert_eq!(
        r.description.as_deref(),
        Some("My first AWS IoT Greengrass component.")
    );
    assert_eq!(r.publisher.as_deref(), Some("Amazon"));
    assert_eq!(r.component_type, ComponentType::Generic);
    assert_eq!(r.default_configuration, json!({"Message": "world"}));
    assert_eq!(r.manifests.len(), 2);
    let sel = r.select(&linux()).expect("linux");
    assert_eq!(sel.manifest_index, 0);
    assert!(
        sel.lifecycle
            .run
            .expect("run")
            .script
            .starts_with("python3 -u {artifacts:path}")
    );
    let win = r
        .select(&Platform::default().with("os", "windows"))
        .expect("windows");
    assert_eq!(win.manifest_index, 1);
    let e = r
        .select(&Platform::default().with("os", "darwin"))
        .expect_err("darwin")
        .to_string();
    assert!(
        e.contains("com.example.HelloWorld") && e.contains("os=darwin"),
        "{e}"
    );
    assert!(e.contains("[os=linux]"), "{e}");
}

#[test]
fn json_and_yaml_are_detected() {
    let j = ok(&json_recipe(json!({})));
    assert_eq!(j.default_configuration, json!({}));
    assert!(j.manifests.is_empty());
    let y = ok("RecipeFormatVersion: 2020-01-25\nComponentName: a.b\nComponentVersion: 1.0.0\n");
    assert_eq!(y.name, "a.b");
    // BOM and leading blanks before the JSON brace.
    let j2 = ok(&format!("\u{feff}\n  {}", json_recipe(json!({}))));
    assert_eq!(j2.name, "com.example.Hello");
}

#[test]
fn keys_are_case_insensitive_everywhere() {
    let r = ok(&json!({
        "recipeformatversion": "2020-01-25",
        "COMPONENTNAME": "com.example.Case",
        "componentVersion": "2.1.0",
        "componenttype": "AWS.GREENGRASS.LAMBDA",
        "componentconfiguration": {"defaultconfiguration": {"KeepMe": {"Inner": 1}}},
        "componentdependencies": {"com.example.Dep": {"versionrequirement": "~1.2", "dependencytype": "soft"}},
        "manifests": [{
            "name": "linux",
            "platform": {"OS": "linux", "Architecture": "amd64"},
            "lifecycle": {
                "SETENV": {"Mixed_Case": "v"},
                "INSTALL": {"SCRIPT": "i", "REQUIRESPRIVILEGE": "TRUE", "SKIPIF": "ONPATH git", "TIMEOUT": "5"},
                "run": "r"
            },
            "artifacts": [{"uri": "s3://b/k/f.zip", "UNARCHIVE": "zip",
                           "permission": {"read": "all", "EXECUTE": "owner"}, "digest": "d", "ALGORITHM": "SHA-256"}]
        }]
    }).to_string());
    assert_eq!(r.component_type, ComponentType::Lambda);
    assert_eq!(r.default_configuration, json!({"KeepMe": {"Inner": 1}}));
    let dep = &r.dependencies["com.example.Dep"];
    assert_eq!(dep.kind, DependencyType::Soft);
    assert_eq!(dep.requirement.as_str(), "~1.2");
    let sel = r.select(&linux()).expect("select");
    let install = sel.lifecycle.install.expect("install");
    assert!(install.requires_privilege);
    assert_eq!(install.skipif, Some(SkipIf::OnPath("git".into())));
    assert_eq!(install.timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        install.setenv.get("Mixed_Case").map(String::as_str),
        Some("v")
    );
    let a = &sel.artifacts[0];
    assert_eq!(a.unarchive, Unarchive::Zip);
    assert_eq!(
        (a.permission.read, a.permission.execute),
        (Access::All, Access::Owner)
    );
    assert_eq!(a.digest.as_deref(), Some("d"));
    assert_eq!(a.algorithm.as_deref(), Some("SHA-256"));
    assert_eq!(r.manifests[0].name.as_deref(), Some("linux"));
}

#[test]
fn duplicate_keys_differing_in_case_are_rejected() {
    let e = err(
        r#"{"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "componentname": "b", "ComponentVersion": "1.0.0"}"#,
    );
    assert!(
        e.contains("ComponentName") && e.contains("defined twice"),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"Manifests": [{"Platform": {"os": "linux", "OS": "windows"}}]}),
    ));
    assert!(e.contains("Manifests[0].Platform"), "{e}");
}

#[test]
fn build_placeholders_are_named() {
    for (name, version, field) in [
        ("{COMPONENT_NAME}", "1.0.0", "ComponentName"),
        ("{{AppName}}", "1.0.0", "ComponentName"),
        ("COMPONENT_NAME", "1.0.0", "ComponentName"),
        ("$COMPONENT_NAME$", "1.0.0", "ComponentName"),
        ("${NAME}", "1.0.0", "ComponentName"),
        ("com.example.X", "{COMPONENT_VERSION}", "ComponentVersion"),
        ("com.example.X", "NEXT_PATCH", "ComponentVersion"),
        ("com.example.X", "COMPONENT_VERSION", "ComponentVersion"),
        ("com.example.X", "$COMPONENT_VERSION$", "ComponentVersion"),
        ("com.example.X", "{{version}}", "ComponentVersion"),
    ] {
        let text = json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version});
        match parse_recipe(&text.to_string(), "r.json") {
            Err(RecipeError::Placeholder {
                field: f,
                value,
                file,
            }) => {
                assert_eq!(f, field);
                assert_eq!(file, "r.json");
                assert!(value == name || value == version);
            }
            other => panic!("{name} {version}: {other:?}"),
        }
    }
    let e = err(&json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "{X}", "ComponentVersion": "1.0.0"}).to_string());
    assert!(
        e.contains("recipe.yaml: ComponentName: \"{X}\" is an unsubstituted build placeholder"),
        "{e}"
    );
}

#[test]
fn top_level_validation_errors_name_file_and_field() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"ComponentName": "a", "ComponentVersion": "1.0.0"}),
            "recipe.yaml: RecipeFormatVersion: missing",
        ),
        (
            json!({"RecipeFormatVersion": "2021-01-01", "ComponentName": "a", "ComponentVersion": "1.0.0"}),
            "recipe.yaml: RecipeFormatVersion: unsupported",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentVersion": "1.0.0"}),
            "recipe.yaml: ComponentName: missing",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "", "ComponentVersion": "1.0.0"}),
            "ComponentName: must not be empty",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "../etc", "ComponentVersion": "1.0.0"}),
            "ComponentName: \"../etc\" contains",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "..", "ComponentVersion": "1.0.0"}),
            "ComponentName: \"..\" is not",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a b", "ComponentVersion": "1.0.0"}),
            "ComponentName",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a"}),
            "ComponentVersion: missing",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "ComponentVersion": "1.0"}),
            "recipe.yaml: ComponentVersion: \"1.0\" is not a semantic version",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "ComponentVersion": 1}),
            "ComponentVersion: \"1\"",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": ["a"], "ComponentVersion": "1.0.0"}),
            "ComponentName: expected a string",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "ComponentVersion": "1.0.0", "ComponentType": "weird"}),
            "ComponentType: unknown component type \"weird\"",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "ComponentVersion": "1.0.0", "ComponentConfiguration": {"DefaultConfiguration": "x"}}),
            "ComponentConfiguration.DefaultConfiguration: expected an object",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "ComponentVersion": "1.0.0", "ComponentConfiguration": 3}),
            "ComponentConfiguration: expected an object",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "ComponentVersion": "1.0.0", "Manifests": {}}),
            "Manifests: expected a list",
        ),
        (
            json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "a", "ComponentVersion": "1.0.0", "Lifecycle": "x"}),
            "recipe.yaml: Lifecycle: expected an object",
        ),
    ];
    for (doc, want) in cases {
        let e = err(&doc.to_string());
        assert!(e.contains(want), "want {want:?} in {e:?}");
    }
    let e = err(
        &json!({"lambdaArn": "x", "componentName": "a", "componentVersion": "1.0.0"}).to_string(),
    );
    assert!(
        e.contains("RecipeFormatVersion") && e.contains("lambdaArn"),
        "{e}"
    );
}

#[test]
fn dependency_errors_name_the_path() {
    let e = err(&json_recipe(
        json!({"ComponentDependencies": {"com.x": {"VersionRequirement": "^^1"}}}),
    ));
    assert!(
        e.starts_with("recipe.yaml: ComponentDependencies.com.x.VersionRequirement: invalid version range \"^^1\": "),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"ComponentDependencies": {"com.x": {"DependencyType": "MEDIUM"}}}),
    ));
    assert!(
        e.contains("ComponentDependencies.com.x.DependencyType: \"MEDIUM\" is not HARD or SOFT"),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"ComponentDependencies": {"com.x": "^1.0.0"}}),
    ));
    assert!(
        e.contains("ComponentDependencies.com.x: expected an object"),
        "{e}"
    );
    let e = err(&json_recipe(json!({"ComponentDependencies": ["com.x"]})));
    assert!(
        e.contains("ComponentDependencies: expected an object"),
        "{e}"
    );
    let e = err(&json_recipe(json!({"ComponentDependencies": {"a/b": {}}})));
    assert!(e.contains("ComponentDependencies.a/b"), "{e}");
    let r = ok(&json_recipe(
        json!({"ComponentDependencies": {"com.x": null, "com.y": {"VersionRequirement": 2}}}),
    ));
    assert!(
        r.dependencies["com.x"]
            .requirement
            .matches(&semver::Version::new(9, 0, 0))
    );
    assert_eq!(r.dependencies["com.x"].kind, DependencyType::Hard);
    assert!(
        r.dependencies["com.y"]
            .requirement
            .matches(&semver::Version::new(2, 3, 0))
    );
}

#[test]
fn artifact_and_manifest_errors_name_the_path() {
    let m = |art: Value| {
        json_recipe(json!({"Manifests": [{"Lifecycle": {"Run": "x"}, "Artifacts": [art]}]}))
    };
    let e = err(&m(json!({"URI": "s3://b/k", "Unarchive": "TAR"})));
    assert!(
        e.contains("Manifests[0].Artifacts[0].Unarchive: \"TAR\" is not NONE or ZIP"),
        "{e}"
    );
    let e = err(&m(
        json!({"URI": "s3://b/k", "Permission": {"Read": "EVERYONE"}}),
    ));
    assert!(
        e.contains("Manifests[0].Artifacts[0].Permission.Read"),
        "{e}"
    );
    let e = err(&m(
        json!({"URI": "s3://b/k", "Permission": {"Execute": true}}),
    ));
    assert!(e.contains("Permission.Execute"), "{e}");
    let e = err(&m(json!({"Unarchive": "ZIP"})));
    assert!(e.contains("Manifests[0].Artifacts[0].URI: missing"), "{e}");
    let e = err(&m(json!({"URI": " "})));
    assert!(e.contains("URI: must not be empty"), "{e}");
    let e = err(&m(json!("s3://b/k")));
    assert!(
        e.contains("Manifests[0].Artifacts[0]: expected an object"),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"Manifests": [{"Platform": {"os": "/(bad/"}}]}),
    ));
    assert!(
        e.contains("Manifests[0].Platform.os: invalid regular expression"),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"Manifests": [{"Platform": {"os": {"a": 1}}}]}),
    ));
    assert!(
        e.contains("Manifests[0].Platform.os: expected a string"),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"Manifests": [{"Platform": {"os": ["linux", ["x"]]}}]}),
    ));
    assert!(
        e.contains("Manifests[0].Platform.os[1]: nested lists"),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"Manifests": [{"Platform": {"arch": ["/(/"]}}]}),
    ));
    assert!(
        e.contains("Manifests[0].Platform.arch[0]: invalid regular expression"),
        "{e}"
    );
    let e = err(&json_recipe(json!({"Manifests": ["linux"]})));
    assert!(e.contains("Manifests[0]: expected an object"), "{e}");
    let e = err(&json_recipe(
        json!({"Manifests": [{}, {"Lifecycle": {"Install": {"Script": "x", "Timeout": -5}}}]}),
    ));
    assert!(
        e.contains("recipe.yaml: Manifests[1].Lifecycle.Install.Timeout: must not be negative"),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"Manifests": [{"Lifecycle": {"Run": "a", "Startup": "b"}}]}),
    ));
    assert!(
        e.contains("Manifests[0].Lifecycle.Run: only one of Run or Startup"),
        "{e}"
    );
    let e = err(&json_recipe(
        json!({"Manifests": [{"Selections": [{"a": 1}]}]}),
    ));
    assert!(e.contains("Manifests[0].Selections[0]"), "{e}");
}

#[test]
fn docker_s3_and_odd_uris_parse() {
    let r = ok(&json_recipe(
        json!({"Manifests": [{"Lifecycle": {"Run": "x"}, "Artifacts": [
            {"Uri": "docker:$DOCKER_IMAGE"},
            {"URI": "s3://bucket/key/app.zip", "Unarchive": "ZIP"},
            {"uri": "s3//some-bucket/hello-world2.py"},
            {"URI": "greengrass:hello.py"},
        ]}]}),
    ));
    let arts = &r.manifests[0].artifacts;
    let schemes: Vec<&str> = arts.iter().map(|a| a.scheme()).collect();
    assert_eq!(schemes, ["docker", "s3", "", "greengrass"]);
    let names: Vec<Option<&str>> = arts.iter().map(|a| a.file_name()).collect();
    assert_eq!(
        names,
        [
            None,
            Some("app.zip"),
            Some("hello-world2.py"),
            Some("hello.py")
        ]
    );
}

#[test]
fn platform_regex_wildcard_and_order() {
    let r = ok(&json_recipe(json!({"Manifests": [
        {"Platform": {"os": "windows"}, "Lifecycle": {"Run": "win"}},
        {"Platform": {"os": "linux", "architecture": "/aarch64|arm/"}, "Lifecycle": {"Run": "arm"}},
        {"Platform": {"os": "/darwin|linux/", "custom.radio": "*"}, "Lifecycle": {"Run": "unixish"}},
        {"Lifecycle": {"Run": "fallback"}},
    ]})));
    let run = |p: &Platform| {
        r.select(p)
            .expect("select")
            .lifecycle
            .run
            .expect("run")
            .script
    };
    assert_eq!(run(&linux()), "unixish");
    assert_eq!(
        run(&Platform::default()
            .with("os", "linux")
            .with("architecture", "aarch64")),
        "arm"
    );
    assert_eq!(run(&Platform::default().with("os", "windows")), "win");
    assert_eq!(run(&Platform::default().with("os", "solaris")), "fallback");
    let alts = ok(&json_recipe(json!({"Manifests": [
        {"Platform": {"os": ["darwin", "/lin.*/"], "gpu": null}, "Lifecycle": {"Run": "alt"}},
        {"Platform": {"gpu": "//"}, "Lifecycle": {"Run": "gpu"}},
    ]})));
    let run = |p: &Platform| {
        alts.select(p)
            .expect("select")
            .lifecycle
            .run
            .expect("run")
            .script
    };
    assert_eq!(run(&linux()), "alt");
    assert_eq!(run(&linux().with("gpu", "cuda")), "gpu");
    assert!(
        alts.select(&Platform::default().with("os", "windows"))
            .is_err()
    );
}

#[test]
fn global_lifecycle_with_selections() {
    let text = r#"
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.Global
ComponentVersion: '1.0.0'
Manifests:
  - Platform:
      os: linux
    Selections: [linux]
  - Platform:
      os: windows
    Selections: windows
  - Platform:
      os: darwin
    Lifecycle:
      Run: own
  - {}
Lifecycle:
  linux:
    Run:
      Script: run-linux
      Timeout: 10
  windows:
    Run: run-windows
  all:
    Setenv:
      SHARED: "1"
    Install: install-all
"#;
    let r = ok(text);
    let lin = r.select(&linux()).expect("linux").lifecycle;
    assert_eq!(
        lin.run.as_ref().map(|s| s.script.as_str()),
        Some("run-linux")
    );
    assert_eq!(
        lin.run.as_ref().and_then(|s| s.timeout),
        Some(Duration::from_secs(10))
    );
    assert!(lin.install.is_none() && lin.setenv.is_empty());
    let win = r
        .select(&Platform::default().with("os", "windows"))
        .expect("win")
        .lifecycle;
    assert_eq!(win.run.map(|s| s.script), Some("run-windows".into()));
    let mac = r
        .select(&Platform::default().with("os", "darwin"))
        .expect("mac")
        .lifecycle;
    assert_eq!(mac.run.map(|s| s.script), Some("own".into()));
    let other = r
        .select(&Platform::default().with("os", "plan9"))
        .expect("other")
        .lifecycle;
    assert_eq!(other.install.map(|s| s.script), Some("install-all".into()));
    assert_eq!(other.setenv.get("SHARED").map(String::as_str), Some("1"));
    assert!(other.run.is_none());
    assert_eq!(
        r.lifecycle_value(0),
        Some(json!({"Run": {"Script": "run-linux", "Timeout": 10}}))
    );
    assert_eq!(r.lifecycle_value(9), None);
    // An invalid global section is reported at parse time for the manifest that uses it.
    let bad = text.replace("Timeout: 10", "Timeout: -1");
    let e = err(&bad);
    assert!(
        e.contains("recipe.yaml: Lifecycle.Run.Timeout: must not be negative"),
        "{e}"
    );
}

#[test]
fn select_with_interpolates_typed_fields() {
    let r = ok(&json_recipe(
        json!({"Manifests": [{"Lifecycle": {"startup": {
            "script": "docker run", "timeout": "{configuration:/t}", "requiresPrivilege": "{configuration:/p}"
        }}}]}),
    ));
    let plain = r
        .select(&linux())
        .expect("plain")
        .lifecycle
        .startup
        .expect("startup");
    assert_eq!((plain.timeout, plain.requires_privilege), (None, false));
    let f = |s: &str| {
        s.replace("{configuration:/t}", "90")
            .replace("{configuration:/p}", "true")
    };
    let typed = r
        .select_with(&linux(), &f)
        .expect("typed")
        .lifecycle
        .startup
        .expect("startup");
    assert_eq!(
        (typed.timeout, typed.requires_privilege),
        (Some(Duration::from_secs(90)), true)
    );
    let bad = |s: &str| s.replace("{configuration:/t}", "-3");
    let e = r
        .select_with(&linux(), &bad)
        .expect_err("negative")
        .to_string();
    assert!(
        e.contains("com.example.Hello 1.0.0: Manifests[0].Lifecycle.startup.Timeout")
            || e.contains("Timeout"),
        "{e}"
    );
}

#[test]
fn document_round_trips() {
    let r = ok(r#"
RecipeFormatVersion: 2020-01-25
ComponentName: com.example.Round
ComponentVersion: 1.2.3-rc.1+build.5
ComponentConfiguration:
  DefaultConfiguration:
    n: 1
    f: 1.5
    list: [a, 2, true, null]
Manifests:
  - Lifecycle:
      run: echo hi
"#);
    assert_eq!(r.version.to_string(), "1.2.3-rc.1+build.5");
    let again = parse_recipe(&r.document.to_string(), "store.json").expect("reparse");
    assert_eq!(again, r);
    assert_eq!(
        crate::recipe_from_value(r.document.clone(), "x").expect("value"),
        r
    );
    assert!(crate::recipe_from_value(json!([1]), "x").is_err());
}

#[test]
fn syntax_errors_name_the_file() {
    for bad in [
        "{\"a\": ",
        "key: [unclosed",
        "- a\n- b",
        "",
        "   ",
        "42",
        "\"str\"",
        "{}",
    ] {
        let e = parse_recipe(bad, "bad.recipe").expect_err(bad).to_string();
        assert!(e.starts_with("bad.recipe: "), "{bad:?}: {e}");
    }
    let big = "a".repeat(crate::MAX_RECIPE_BYTES + 1);
    assert!(parse_recipe(&big, "big").is_err());
}

#[test]
fn hostile_yaml_is_rejected_without_crashing() {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("a{}", i - 1)
        };
        bomb.push_str(&format!("a{i}: &a{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    assert!(parse_recipe(&bomb, "bomb.yaml").is_err());
    let deep = format!("{}x{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse_recipe(&deep, "deep.yaml").is_err());
    let deep_json = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse_recipe(&deep_json, "deep.json").is_err());
    // Aliases that expand past the size limit are rejected, so the stored JSON re-parses.
    let mut wide = format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: a\nComponentVersion: 1.0.0\nx0: &x0 \"{}\"\n",
        "x".repeat(2000)
    );
    for level in 1..5 {
        let refs = vec![format!("*x{}", level - 1); 10].join(", ");
        wide.push_str(&format!("x{level}: &x{level} [{refs}]\n"));
    }
    let e = parse_recipe(&wide, "wide.yaml")
        .expect_err("too large")
        .to_string();
    assert!(e.contains("expands to"), "{e}");
    // Non-string keys and anchors do not crash the parser.
    let _ = parse_recipe(
        "RecipeFormatVersion: 2020-01-25\n1: 2\ntrue: x\n? [a]\n: b\n",
        "keys.yaml",
    );
    let r = parse_recipe(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: &n a.b\nComponentVersion: 1.0.0\nComponentDescription: *n\n",
        "alias.yaml",
    )
    .expect("aliases");
    assert_eq!(r.description.as_deref(), Some("a.b"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-zA-Z0-9 :/{}.*^~<>=|-]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "2020-01-25",
                "1.0.0",
                "^1.0.0",
                "linux",
                "/linux|darwin/",
                "*",
                "ZIP",
                "ALL",
                "onpath git",
                "exists /x",
                "true",
                "-1",
                "{configuration:/x}",
                "s3://b/k.zip",
            ])
            .prop_map(|s| Value::String(s.to_owned())),
        ];
        let keys = prop::sample::select(vec![
            "RecipeFormatVersion",
            "ComponentName",
            "componentversion",
            "ComponentDependencies",
            "VersionRequirement",
            "DependencyType",
            "Manifests",
            "Platform",
            "os",
            "Lifecycle",
            "Selections",
            "Artifacts",
            "URI",
            "Unarchive",
            "Permission",
            "Read",
            "Execute",
            "Run",
            "Startup",
            "install",
            "Script",
            "Timeout",
            "RequiresPrivilege",
            "Skipif",
            "Setenv",
            "ComponentConfiguration",
            "DefaultConfiguration",
            "all",
            "key1",
            "ComponentType",
        ]);
        leaf.prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_strings(s in "\\PC*") {
            let _ = parse_recipe(&s, "fuzz");
        }

        #[test]
        fn parse_never_panics_on_yamlish(s in "[a-zA-Z0-9 :\\-\\[\\]{}&*!|>'\"#\n]{0,200}") {
            let _ = parse_recipe(&s, "fuzz");
        }

        #[test]
        fn parsed_yaml_recipes_round_trip(
            body in "(RecipeFormatVersion: '2020-01-25'\nComponentName: a\nComponentVersion: 1.0.0\n)[a-zA-Z0-9 :\\-\\[\\]{}&*|>'\"#\n]{0,120}"
        ) {
            if let Ok(r) = parse_recipe(&body, "fuzz.yaml") {
                let again = parse_recipe(&r.document.to_string(), "again.json");
                prop_assert!(again.is_ok(), "{:?}", again.err());
                let _ = r.select(&Platform::current());
            }
        }

        #[test]
        fn parse_never_panics_on_json(v in arb_json()) {
            let text = v.to_string();
            if let Ok(r) = parse_recipe(&text, "fuzz.json") {
                let _ = r.select(&Platform::current());
                let _ = r.select(&Platform::default());
            }
        }

        #[test]
        fn recipe_shaped_json_selects_or_errors(
            name in "[a-z]{1,8}(\\.[A-Za-z]{1,8}){0,2}",
            (a, b, c) in (0u64..50, 0u64..50, 0u64..50),
            manifests in prop::collection::vec(arb_json(), 0..3),
            lifecycle in arb_json(),
        ) {
            let doc = json!({
                "RecipeFormatVersion": "2020-01-25",
                "ComponentName": name,
                "ComponentVersion": format!("{a}.{b}.{c}"),
                "Manifests": manifests,
                "Lifecycle": lifecycle,
            });
            if let Ok(r) = parse_recipe(&doc.to_string(), "fuzz.json") {
                prop_assert_eq!(&r.name, &name);
                let again = parse_recipe(&r.document.to_string(), "again.json");
                prop_assert!(again.is_ok());
                let _ = r.select(&Platform::current());
            }
        }
    }
}

#[test]
fn bidirectional_controls_in_names_are_refused_and_escaped_in_the_error() {
    let bidi = [
        '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
        '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    ];
    for c in bidi {
        let name = format!("com.example.{c}txt.exe");
        let e = err(
            &json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": name,
            "ComponentVersion": "1.0.0"})
            .to_string(),
        );
        assert!(
            e.starts_with("recipe.yaml: ComponentName: ") && e.contains("bidirectional-control"),
            "{e}"
        );
        assert!(!e.contains(c), "the raw character is not echoed: {e:?}");
        let e = err(&json_recipe(
            json!({"ComponentDependencies": {name.clone(): {"VersionRequirement": "^1"}}}),
        ));
        assert!(
            e.contains("ComponentDependencies.") && e.contains("bidirectional"),
            "{e}"
        );
        assert_eq!(crate::find_bidi_control(&name), Some(c));
    }
    // Other non-ASCII letters stay allowed.
    assert_eq!(crate::find_bidi_control("com.example.Grüße"), None);
    ok(
        "RecipeFormatVersion: 2020-01-25\nComponentName: com.example.Grüße\nComponentVersion: 1.0.0\n",
    );
    // Control characters are escaped in the error too (no forged log lines).
    let e = err(&json!({"RecipeFormatVersion": "2020-01-25",
        "ComponentName": "a\nFAKE LOG LINE", "ComponentVersion": "1.0.0"})
    .to_string());
    assert!(!e.contains('\n') && e.contains("\\n"), "{e:?}");
}

#[test]
fn default_configuration_deeper_than_the_bound_is_refused() {
    let nested = |levels: usize| {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "k": v });
        }
        v
    };
    let limit = crate::MAX_DEFAULT_CONFIGURATION_DEPTH;
    let recipe =
        |cfg: Value| json_recipe(json!({"ComponentConfiguration": {"DefaultConfiguration": cfg}}));
    ok(&recipe(nested(limit)));
    let e = err(&recipe(nested(limit + 1)));
    assert!(
        e.contains("ComponentConfiguration.DefaultConfiguration: nests more than 64"),
        "{e}"
    );
    // YAML documents are already depth-limited by the parser's budget.
    let yaml = format!(
        "RecipeFormatVersion: 2020-01-25\nComponentName: a.b\nComponentVersion: 1.0.0\n\
         ComponentConfiguration:\n  DefaultConfiguration: {}1{}\n",
        "{k: ".repeat(100),
        "}".repeat(100)
    );
    let e = err(&yaml);
    assert!(e.contains("Depth"), "{e}");
}
