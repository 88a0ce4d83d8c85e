//! Shared by the function tests (`lambda_*`, `function_iot_core`, `wasm_functions`): the
//! test venv's python and the greengrasssdk beside it (skipping, or failing under
//! `LICHEN_TEST_REQUIRE_ALL=1`), Lambda ZIPs and recipes in the shape Greengrass's import
//! writes, WAT-built WASM components, a node started in-process, deployments waited to
//! their end, and the control socket.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_core::control::client::{ClientError, ControlClient};
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::settings::Settings;
use lichen_model::deployment::{DeploymentRecord, DeploymentRequest};
use lichen_node::{Node, NodeOptions, Service};
use serde_json::{Value, json};

pub const ROUTER: &str = "aws.greengrass.LegacySubscriptionRouter";

/// How long a deployment may take on a loaded 2-core CI machine before the test fails.
const DEPLOYMENT_TIMEOUT: Duration = Duration::from_secs(120);

pub fn require_all() -> bool {
    std::env::var("LICHEN_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Says why a test (or part of one) skips; under `LICHEN_TEST_REQUIRE_ALL=1` fails instead.
pub fn skip(what: &str, message: &str) {
    assert!(!require_all(), "LICHEN_TEST_REQUIRE_ALL=1: {message}");
    eprintln!("skipping{what}: {message}");
}

/// `LICHEN_TEST_PYTHON`, else the workspace's `.venv` python (it may not exist).
pub fn venv_python() -> PathBuf {
    std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

/// Whether `python` imports `modules` (a comma-separated list, as after `import`).
pub fn python_imports(python: &Path, modules: &str) -> bool {
    std::process::Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success())
}

/// The venv python when it imports `modules`; else skips (the test, or `part` of it)
/// saying `missing` is.
pub fn python_with(modules: &str, missing: &str, part: &str) -> Option<PathBuf> {
    let p = venv_python();
    if python_imports(&p, modules) {
        return Some(p);
    }
    let message = format!(
        "{} with {missing} missing (scripts/setup-test-deps)",
        p.display()
    );
    skip(part, &message);
    None
}

/// greengrasssdk 1.6.1 as setup-test-deps installs it beside the venv (it may not exist).
pub fn greengrasssdk_dir(python: &Path) -> PathBuf {
    python
        .parent()
        .and_then(Path::parent)
        .map(|venv| venv.join("lambda-sdk/greengrasssdk"))
        .unwrap_or_default()
}

/// `files` (name, text) zipped to `out` with the venv's python (no zip crate in the tree).
pub fn zip(python: &Path, out: &Path, files: &[(&str, &str)]) {
    zip_with_sdk(python, out, files, None);
}

/// `files` plus the directory `sdk` as `greengrasssdk/` (no caches), zipped to `out`, as v1
/// users ship their functions.
pub fn zip_with_sdk(python: &Path, out: &Path, files: &[(&str, &str)], sdk: Option<&Path>) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let spec = serde_json::to_string(&files).unwrap();
    let sdk = sdk.map(|p| p.display().to_string()).unwrap_or_default();
    let script = r#"
import json, os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1], "w")
for n, t in json.loads(sys.argv[2]):
    z.writestr(n, t)
sdk = sys.argv[3]
if sdk:
    for d, dirs, names in os.walk(sdk):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for n in names:
            p = os.path.join(d, n)
            z.write(p, os.path.join("greengrasssdk", os.path.relpath(p, sdk)))
z.close()
"#;
    let status = std::process::Command::new(python)
        .args(["-c", script])
        .arg(out)
        .arg(spec)
        .arg(sdk)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The ZIP artifact path of Lambda component `name` 1.0.0 under `dir/artifacts`.
pub fn lambda_zip_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("artifacts/{name}/1.0.0/lambda-artifact.zip"))
}

/// `recipe` as `recipes/<name>.json`.
pub fn write_recipe(recipes: &Path, name: &str, recipe: &Value) {
    std::fs::create_dir_all(recipes).unwrap();
    std::fs::write(recipes.join(format!("{name}.json")), recipe.to_string()).unwrap();
}

/// The usual ARN of the test Lambda `name`, version 1.
pub fn lambda_arn(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:1")
}

/// The parts in which the tests' imported Lambda recipes differ; each object is merged onto
/// the import's defaults.
pub struct LambdaRecipe<'a> {
    pub name: &'a str,
    pub arn: &'a str,
    /// Beside `aws.greengrass.LambdaLauncher` (HARD).
    pub dependencies: Value,
    /// Onto NoContainer, 5 s, 2 instances, json, queue 10, pinned.
    pub configuration: Value,
    /// Onto ARN, `app.handler`, the decompressed artifact path.
    pub setenv: Value,
}

/// An imported Lambda's recipe in the shape Greengrass's import writes (reference §2.1).
pub fn lambda_recipe(r: LambdaRecipe<'_>) -> Value {
    let mut dependencies = json!({
        "aws.greengrass.LambdaLauncher": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"}
    });
    merge(&mut dependencies, r.dependencies);
    let mut configuration = json!({
        "containerMode": "NoContainer", "timeoutInSeconds": 5, "maxInstancesCount": 2,
        "inputPayloadEncodingType": "json", "maxQueueSize": 10, "pinned": true
    });
    merge(&mut configuration, r.configuration);
    let mut setenv = json!({
        "AWS_GREENGRASS_LAMBDA_ARN": r.arn,
        "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": "app.handler",
        "AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH": "{artifacts:decompressedPath}/lambda-artifact"
    });
    merge(&mut setenv, r.setenv);
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": r.name,
        "ComponentVersion": "1.0.0",
        "ComponentType": "aws.greengrass.lambda",
        "ComponentDependencies": dependencies,
        "ComponentConfiguration": {"DefaultConfiguration": configuration},
        "Manifests": [{
            "Platform": {},
            "Lifecycle": {},
            "Artifacts": [{"Uri": "greengrass:lambda-artifact.zip", "Unarchive": "ZIP"}]
        }],
        "Lifecycle": {
            "startup": {"script": "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher start"},
            "setenv": setenv
        }
    })
}

/// The top-level keys of object `extra` into object `base`.
fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

/// A component running `python -u {artifacts:path}/<script> <args>` with `access` as its
/// pubsub policies and `dependencies` as they stand.
pub fn python_recipe(
    name: &str,
    python: &Path,
    script: &str,
    args: &str,
    access: Value,
    dependencies: Value,
) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.pubsub": access}}},
        "ComponentDependencies": dependencies,
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!("exec {} -u {{artifacts:path}}/{script}{args}", python.display())},
            "Artifacts": [{"URI": format!("s3://test/{script}")}]
        }]
    })
}

/// `text` as artifact `file` of component `name` 1.0.0 under `dir/artifacts`.
pub fn write_artifact(dir: &Path, name: &str, file: &str, text: &[u8]) {
    let art = dir.join("artifacts").join(name).join("1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::write(art.join(file), text).unwrap();
}

/// A WASM module with a bump allocator (reset by handlers after each event) and the lichen
/// imports, `body` holding the handler (WAT: no wasm target here).
pub fn wasm_module(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "lichen" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (import "lichen" "set_result" (func $set_result (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (func (export "lichen_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  {body})"#
    ))
    .expect("test WAT parses")
}

/// Publishes each event's payload to out/echo and returns the topic it came on.
pub const WASM_ECHO: &str = r#"
  (data (i32.const 0) "out/echo")
  (func (export "lichen_handle") (param $tp i32) (param $tl i32) (param $pp i32) (param $pl i32) (result i32)
    (drop (call $publish (i32.const 0) (i32.const 8) (local.get $pp) (local.get $pl)))
    (drop (call $set_result (local.get $tp) (local.get $tl)))
    (global.set $bump (i32.const 4096))
    (i32.const 0))"#;

pub fn wasm_recipe(name: &str, config: Value) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentType": "lichen.wasm",
        "ComponentConfiguration": {"DefaultConfiguration": config},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": "{artifacts:path}/function.wasm"},
            "Artifacts": [{"URI": format!("s3://test/{name}/function.wasm")}]
        }]
    })
}

/// A `lichen.wasm` component: its module as `function.wasm` and its recipe, under `dir`.
pub fn write_wasm_component(dir: &Path, name: &str, wasm: &[u8], config: Value) {
    write_artifact(dir, name, "function.wasm", wasm);
    write_recipe(&dir.join("recipes"), name, &wasm_recipe(name, config));
}

/// A node at `root` as root's, running `services`.
pub async fn start_node(root: PathBuf, services: Vec<Arc<dyn Service>>) -> Node {
    Node::start(
        NodeOptions {
            root,
            settings: Settings::parse("posixUser: root\n").unwrap(),
        },
        services,
    )
    .await
    .unwrap()
}

/// A node at `root` running the Lambda functions service alone.
pub async fn start_functions_node(root: PathBuf) -> Node {
    start_node(root, vec![Arc::new(lichen_node::FunctionsService::new())]).await
}

/// A local deployment of `roots` from `dir/recipes` and `dir/artifacts`: the router at
/// 2.1.0, every other root at 1.0.0.
pub fn deployment_request(dir: &Path, roots: &[&str]) -> DeploymentRequest {
    DeploymentRequest {
        root_components_to_add: roots
            .iter()
            .map(|r| {
                let v = if *r == ROUTER { "2.1.0" } else { "1.0.0" };
                (r.to_string(), v.to_string())
            })
            .collect(),
        recipe_dir: Some(dir.join("recipes")),
        artifact_dir: Some(dir.join("artifacts")),
        ..Default::default()
    }
}

/// `request` deployed, waited until final.
pub async fn deploy_request(node: &Node, request: DeploymentRequest) -> DeploymentRecord {
    let id = node.handle().create_deployment(request).await.unwrap();
    let deadline = Instant::now() + DEPLOYMENT_TIMEOUT;
    loop {
        let r = node.handle().deployment(&id).unwrap();
        if r.status.is_final() {
            return r;
        }
        assert!(Instant::now() < deadline, "deployment {id} not final");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn deploy(node: &Node, dir: &Path, roots: &[&str]) -> DeploymentRecord {
    deploy_request(node, deployment_request(dir, roots)).await
}

pub async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JSON lines of `path` so far (none when it does not exist yet).
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `requests` over one connection to the node's real control socket (what `lichen` uses).
pub async fn control(
    root: &Path,
    requests: Vec<ControlRequest>,
) -> Vec<Result<ControlReply, ClientError>> {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut c = ControlClient::connect(&root).unwrap();
        requests.iter().map(|r| c.request(r)).collect()
    })
    .await
    .unwrap()
}

/// `function.invoke` of `component` over the control socket.
pub async fn invoke_over_control(
    root: &Path,
    component: &str,
    payload: &str,
    topic: Option<&str>,
) -> Result<ControlReply, ClientError> {
    let request = ControlRequest::FunctionInvoke {
        component: component.into(),
        payload: payload.into(),
        topic: topic.map(str::to_string),
    };
    control(root, vec![request]).await.remove(0)
}
