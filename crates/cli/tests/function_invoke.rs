//! `lichen function invoke` against a real core running an imported Lambda (on-demand)
//! under awslambdaric. Skips with a message when the .venv python is missing.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

const HANDLER: &str = r#"
def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return {"echo": event, "subject": context.client_context.custom.get("subject") if context.client_context else None}
"#;

fn python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = std::process::Command::new(&p)
        .args(["-c", "import awslambdaric"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipping: {} with awslambdaric missing (scripts/setup-test-deps)",
            p.display()
        );
        return None;
    }
    Some(p)
}

fn recipe(python: &Path) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Fn",
        "ComponentVersion": "1.0.0",
        "ComponentType": "aws.greengrass.lambda",
        "ComponentDependencies": {
            "aws.greengrass.LambdaLauncher": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"},
            "aws.greengrass.TokenExchangeService": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"}
        },
        "ComponentConfiguration": {"DefaultConfiguration": {
            "pinned": false, "timeoutInSeconds": 10, "maxInstancesCount": 1, "maxQueueSize": 4,
            "inputPayloadEncodingType": "json", "containerMode": "NoContainer", "pubsubTopics": {}
        }},
        "Manifests": [{"Platform": {}, "Lifecycle": {},
            "Artifacts": [{"Uri": "greengrass:lambda-artifact.zip", "Unarchive": "ZIP"}]}],
        "Lifecycle": {
            "startup": {"requiresPrivilege": true, "script": "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher start"},
            "setenv": {
                "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": "fn.handler",
                "AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH": "{artifacts:decompressedPath}/lambda-artifact",
                "LICHEN_LAMBDA_PYTHON": python.display().to_string()
            }
        }
    })
}

#[test]
fn function_invoke_prints_the_handlers_result() {
    let Some(python) = python() else { return };
    let core = TestCore::start();
    let base = core.dir.path().to_path_buf();
    let recipes = recipe_dir(
        &base,
        "recipes",
        &[("fn.json", &recipe(&python).to_string())],
    );
    let zip = base.join("artifacts/com.example.Fn/1.0.0/lambda-artifact.zip");
    std::fs::create_dir_all(zip.parent().unwrap()).unwrap();
    let made = std::process::Command::new(&python)
        .args(["-c", "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\nz.writestr('fn.py', sys.argv[2])\nz.close()"])
        .arg(&zip)
        .arg(HANDLER)
        .status()
        .unwrap();
    assert!(made.success());
    let d = core.deploy(
        &recipes,
        Some(&base.join("artifacts")),
        &["-m", "com.example.Fn=1.0.0"],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}");

    let out = core.cli(&[
        "function",
        "invoke",
        "com.example.Fn",
        "--payload",
        r#"{"n": 1}"#,
        "--topic",
        "a/b",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"echo": {"n": 1}, "subject": "a/b"}));

    std::fs::write(base.join("event.json"), r#"{"from": "file"}"#).unwrap();
    let file = base.join("event.json").display().to_string();
    let j = core.json(&[
        "function",
        "invoke",
        "com.example.Fn",
        "--payload-file",
        &file,
    ]);
    assert_eq!(j["error"], false);
    let inner: Value = serde_json::from_str(j["result"].as_str().unwrap()).unwrap();
    assert_eq!(inner["echo"]["from"], "file");
    assert!(inner["subject"].is_null());

    let failed = core.cli(&[
        "function",
        "invoke",
        "com.example.Fn",
        "--payload",
        r#"{"fail": true}"#,
    ]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stdout).contains("asked to fail"));

    let bad = core.cli(&[
        "function",
        "invoke",
        "com.example.Fn",
        "--payload",
        "not json",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not JSON"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let unknown = core.cli(&["function", "invoke", "com.example.Nope", "--payload", "{}"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("com.example.Nope"));
}
