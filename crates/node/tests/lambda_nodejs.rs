//! A Node.js Lambda handler, unmodified, under the npm `aws-lambda-ric` runtime interface
//! client (pinned 3.3.0, installed by scripts/setup-test-deps into .venv/js-lambda): a recipe
//! in the import's shape with `AWS_GREENGRASS_LAMBDA_RUNTIME: nodejs18.x`, fed by bus
//! publishes on a wildcard `PUB_SUB` source and invoked over the control channel; the topic
//! is `context.clientContext.custom.subject`; a ZIP without its handler file fails the
//! deployment naming it.
//!
//! Skips with a message when node or aws-lambda-ric is missing, and fails then under
//! `LICHEN_TEST_REQUIRE_ALL=1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_bus::{Message, Payload};
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::settings::Settings;
use lichen_model::deployment::{DeploymentRecord, DeploymentRequest, DeploymentStatus};
use lichen_node::{FunctionsService, Node, NodeOptions, Service};
use serde_json::{Value, json};

const HANDLER: &str = r#"
const fs = require("fs");
const path = require("path");
const LOADED = Date.now() + Math.random();
exports.handler = async (event, context) => {
  const custom = context.clientContext && context.clientContext.custom;
  const subject = custom ? custom.subject : null;
  fs.appendFileSync(path.join(process.env.OUT, "events.jsonl"),
    JSON.stringify({ event, subject, pid: process.pid, loaded: LOADED }) + "\n");
  return { echo: event, subject, greeting: process.env.GREETING,
           requestId: context.awsRequestId, remaining: context.getRemainingTimeInMillis() };
};
"#;

fn require_all() -> bool {
    std::env::var("LICHEN_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// `bin/index.mjs` of the pinned aws-lambda-ric, and python (to write the ZIP).
fn deps() -> Option<(PathBuf, PathBuf)> {
    let python = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let ric = python
        .parent()
        .and_then(Path::parent)
        .map(|venv| venv.join("js-lambda/node_modules/aws-lambda-ric/bin/index.mjs"))
        .unwrap_or_default();
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if node && ric.is_file() && python.exists() {
        return Some((ric, python));
    }
    let message = format!(
        "node, {} or {} missing (scripts/setup-test-deps)",
        ric.display(),
        python.display()
    );
    assert!(!require_all(), "LICHEN_TEST_REQUIRE_ALL=1: {message}");
    eprintln!("skipping: {message}");
    None
}

fn zip(python: &Path, out: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let spec = serde_json::to_string(&files).unwrap();
    let status = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\nfor n, t in json.loads(sys.argv[2]): z.writestr(n, t)\nz.close()",
        ])
        .arg(out)
        .arg(spec)
        .status()
        .unwrap();
    assert!(status.success());
}

fn recipe(name: &str, ric: &Path, out: &Path) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentType": "aws.greengrass.lambda",
        "ComponentDependencies": {
            "aws.greengrass.LambdaLauncher": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"},
            "aws.greengrass.LambdaRuntimes": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "SOFT"}
        },
        "ComponentConfiguration": {"DefaultConfiguration": {
            "lambdaExecutionParameters": {"EnvironmentVariables": {"OUT": out.display().to_string(), "GREETING": "hi from node"}},
            "containerMode": "NoContainer", "timeoutInSeconds": 5, "maxInstancesCount": 2,
            "inputPayloadEncodingType": "json", "maxQueueSize": 10, "pinned": true,
            "pubsubTopics": {"0": {"topic": "plant/+/temp", "type": "PUB_SUB"}}
        }},
        "Manifests": [{
            "Platform": {},
            "Lifecycle": {},
            "Artifacts": [{"Uri": "greengrass:lambda-artifact.zip", "Unarchive": "ZIP"}]
        }],
        "Lifecycle": {
            "startup": {"script": "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher start"},
            "setenv": {
                "AWS_GREENGRASS_LAMBDA_ARN": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:1"),
                "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": "app.handler",
                "AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH": "{artifacts:decompressedPath}/lambda-artifact",
                "AWS_GREENGRASS_LAMBDA_RUNTIME": "nodejs18.x",
                "LICHEN_LAMBDA_NODE_RIC": ric.display().to_string()
            }
        }
    })
}

async fn deploy(node: &Node, dir: &Path, roots: &[&str]) -> DeploymentRecord {
    let id = node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: roots
                .iter()
                .map(|r| (r.to_string(), "1.0.0".to_string()))
                .collect(),
            recipe_dir: Some(dir.join("recipes")),
            artifact_dir: Some(dir.join("artifacts")),
            ..Default::default()
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = node.handle().deployment(&id).unwrap();
        if r.status.is_final() {
            return r;
        }
        assert!(Instant::now() < deadline, "deployment {id} not final");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodejs_handler_runs_under_aws_lambda_ric() {
    let Some((ric, python)) = deps() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(dir.path().join("recipes")).unwrap();
    for (name, files) in [
        ("com.example.NodeFn", vec![("app.js", HANDLER)]),
        (
            "com.example.NodeNoHandler",
            vec![("other.js", "exports.x = 1;\n")],
        ),
    ] {
        std::fs::write(
            dir.path().join(format!("recipes/{name}.json")),
            recipe(name, &ric, &out).to_string(),
        )
        .unwrap();
        zip(
            &python,
            &dir.path()
                .join(format!("artifacts/{name}/1.0.0/lambda-artifact.zip")),
            &files,
        );
    }
    let root = dir.path().join("root");
    let services: Vec<Arc<dyn Service>> = vec![Arc::new(FunctionsService::new())];
    let node = Node::start(
        NodeOptions {
            root: root.clone(),
            settings: Settings::parse("posixUser: root\n").unwrap(),
        },
        services,
    )
    .await
    .unwrap();
    let r = deploy(&node, dir.path(), &["com.example.NodeFn"]).await;
    assert_eq!(r.status, DeploymentStatus::Succeeded, "{r:?}");

    // Bus publishes through the wildcard source, in one pinned process.
    for i in 0..3 {
        node.bus()
            .publish(Message::new(
                format!("plant/{i}/temp"),
                Payload::Json(json!({"celsius": 20 + i})),
                "component:com.example.Sensor",
            ))
            .unwrap();
    }
    let read = || -> Vec<Value> {
        std::fs::read_to_string(out.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while read().len() < 3 {
        assert!(Instant::now() < deadline, "events: {:?}", read());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut events = read();
    assert_eq!(events.len(), 3, "{events:?}");
    events.sort_by_key(|e| e["event"]["celsius"].as_i64());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["event"]["celsius"], 20 + i as i64, "{e}");
        assert_eq!(e["subject"], format!("plant/{i}/temp"));
        assert_eq!(e["pid"], events[0]["pid"], "one pinned instance");
        assert_eq!(e["loaded"], events[0]["loaded"], "module code ran once");
    }

    // function.invoke over the control channel.
    let root2 = root.clone();
    let reply = tokio::task::spawn_blocking(move || {
        let mut c = lichen_core::control::client::ControlClient::connect(&root2).unwrap();
        c.request(&ControlRequest::FunctionInvoke {
            component: "com.example.NodeFn".into(),
            payload: r#"{"direct": true}"#.into(),
            topic: Some("cli/topic".into()),
        })
    })
    .await
    .unwrap();
    match reply.unwrap() {
        ControlReply::FunctionResult(r) => {
            assert!(!r.error, "{r:?}");
            let v: Value = serde_json::from_str(&r.result).unwrap();
            assert_eq!(v["echo"], json!({"direct": true}), "{v}");
            assert_eq!(v["subject"], "cli/topic");
            assert_eq!(v["greeting"], "hi from node");
            assert!(v["requestId"].as_str().is_some_and(|s| !s.is_empty()));
            let remaining = v["remaining"].as_i64().unwrap_or(-1);
            assert!(remaining > 0 && remaining <= 5000, "{v}");
        }
        other => panic!("{other:?}"),
    }

    // No handler file in the ZIP: the deployment fails naming it.
    let r = deploy(&node, dir.path(), &["com.example.NodeNoHandler"]).await;
    assert_eq!(r.status, DeploymentStatus::Failed, "{r:?}");
    let text = format!("{r:?}");
    assert!(
        text.contains("app.handler") && text.contains("app.js"),
        "{text}"
    );
    node.shutdown().await;
}
