//! A Node.js Lambda handler, unmodified, under the npm `aws-lambda-ric` runtime interface
//! client (pinned 3.3.0, installed by scripts/setup-test-deps into .venv/js-lambda): a recipe
//! in the import's shape with `AWS_GREENGRASS_LAMBDA_RUNTIME: nodejs18.x`, fed by bus
//! publishes on a wildcard `PUB_SUB` source and invoked over the control channel; the topic
//! is `context.clientContext.custom.subject`; a ZIP without its handler file fails the
//! deployment naming it.
//!
//! Skips with a message when node or aws-lambda-ric is missing, and fails then under
//! `LICHEN_TEST_REQUIRE_ALL=1`.

#[path = "function_support/mod.rs"]
mod function_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use function_support::*;
use lichen_bus::{Message, Payload};
use lichen_core::control::ControlReply;
use lichen_model::deployment::DeploymentStatus;
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

/// `bin/index.mjs` of the pinned aws-lambda-ric, and python (to write the ZIP).
fn deps() -> Option<(PathBuf, PathBuf)> {
    let python = venv_python();
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
    skip("", &message);
    None
}

fn recipe(name: &str, ric: &Path, out: &Path) -> Value {
    lambda_recipe(LambdaRecipe {
        name,
        arn: &lambda_arn(name),
        dependencies: json!({
            "aws.greengrass.LambdaRuntimes": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "SOFT"}
        }),
        configuration: json!({
            "lambdaExecutionParameters": {"EnvironmentVariables": {"OUT": out.display().to_string(), "GREETING": "hi from node"}},
            "pubsubTopics": {"0": {"topic": "plant/+/temp", "type": "PUB_SUB"}}
        }),
        setenv: json!({
            "AWS_GREENGRASS_LAMBDA_RUNTIME": "nodejs18.x",
            "LICHEN_LAMBDA_NODE_RIC": ric.display().to_string()
        }),
    })
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
        write_recipe(&dir.path().join("recipes"), name, &recipe(name, &ric, &out));
        zip(&python, &lambda_zip_path(dir.path(), name), &files);
    }
    let root = dir.path().join("root");
    let node = start_functions_node(root.clone()).await;
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
    let read = || read_jsonl(&out.join("events.jsonl"));
    wait_for("3 events", Duration::from_secs(30), || read().len() >= 3).await;
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
    let reply = invoke_over_control(
        &root,
        "com.example.NodeFn",
        r#"{"direct": true}"#,
        Some("cli/topic"),
    )
    .await;
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
