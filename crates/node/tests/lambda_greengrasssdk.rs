//! A v1-style Lambda, unmodified: its ZIP bundles `greengrasssdk` 1.6.1 (as Greengrass v1
//! users ship it), the handler runs under awslambdaric and calls
//! `greengrasssdk.client('iot-data').publish(...)`. lichen supplies the runtime modules the SDK
//! imports and the Lambda IPC HTTP API on `GG_DAEMON_PORT`; `aws.greengrass.LegacySubscriptionRouter`
//! routes the publish to a subscribed awsiotsdk component, which checks the payload; a topic
//! no subscription routes raises Greengrass's error text in the handler. A second function,
//! invoked by the first through `client('lambda').invoke`, answers a RequestResponse call.
//!
//! Skips with a message when the .venv (awslambdaric, awsiotsdk, .venv/lambda-sdk) is
//! missing, and fails then under `LICHEN_TEST_REQUIRE_ALL=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::settings::Settings;
use lichen_model::deployment::{ConfigurationUpdate, DeploymentRequest, DeploymentStatus};
use lichen_node::{FunctionsService, Node, NodeOptions, Service};
use serde_json::{Value, json};

const SOURCE_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:v1Publisher:3";
const HELPER_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:v1Helper:1";

/// Module-level client, as v1 samples do; publish to a routed and to an unrouted topic.
const PUBLISHER: &str = r#"
import json
import greengrasssdk

iot = greengrasssdk.client("iot-data")
lam = greengrasssdk.client("lambda")

def handler(event, context):
    iot.publish(topic="v1/out/" + event["id"], payload=json.dumps({"got": event, "via": "greengrasssdk"}))
    try:
        iot.publish(topic="unrouted/topic", payload=b"x")
        refused = None
    except Exception as e:
        refused = "%s: %s" % (type(e).__name__, e)
    helper = lam.invoke(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:v1Helper",
                        Qualifier="1", Payload=json.dumps({"x": 20}))
    return {"refused": refused, "helper": json.loads(helper["Payload"].read()),
            "helper_error": helper["FunctionError"]}
"#;

const HELPER: &str = r#"
def handler(event, context):
    return {"doubled": event["x"] * 2}
"#;

const SUBSCRIBER: &str = r#"
import json, os, sys, time
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
out = sys.argv[1]
ipc = GreengrassCoreIPCClientV2()
def on_event(event):
    if event.binary_message is not None:
        m = event.binary_message
        rec = {"topic": m.context.topic, "binary": m.message.decode()}
    else:
        m = event.json_message
        rec = {"topic": m.context.topic, "json": m.message}
    with open(os.path.join(out, "received.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
ipc.subscribe_to_topic(topic="v1/out/+", on_stream_event=on_event)
open(os.path.join(out, "ready"), "w").write("ok")
while True:
    time.sleep(1)
"#;

fn require_all() -> bool {
    std::env::var("LICHEN_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The venv python with awslambdaric + awsiotsdk, and the greengrasssdk package directory.
fn deps() -> Option<(PathBuf, PathBuf)> {
    let python = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let sdk = python
        .parent()
        .and_then(Path::parent)
        .map(|venv| venv.join("lambda-sdk/greengrasssdk"))
        .unwrap_or_default();
    let ok = std::process::Command::new(&python)
        .args(["-c", "import awslambdaric, awsiot.greengrasscoreipc"])
        .status()
        .is_ok_and(|s| s.success());
    if ok && sdk.join("__init__.py").is_file() {
        return Some((python, sdk));
    }
    let message = format!(
        "{} with awslambdaric + awsiotsdk, or {}, missing (scripts/setup-test-deps)",
        python.display(),
        sdk.display()
    );
    assert!(!require_all(), "LICHEN_TEST_REQUIRE_ALL=1: {message}");
    eprintln!("skipping: {message}");
    None
}

/// `files` plus the directory `sdk` as `greengrasssdk/` (no caches), zipped to `out`.
fn zip_with_sdk(python: &Path, out: &Path, files: &[(&str, &str)], sdk: Option<&Path>) {
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

fn lambda_recipe(name: &str, arn: &str, python: &Path) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentType": "aws.greengrass.lambda",
        "ComponentDependencies": {
            "aws.greengrass.LambdaLauncher": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"},
            "aws.greengrass.LegacySubscriptionRouter": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "SOFT"}
        },
        "ComponentConfiguration": {"DefaultConfiguration": {
            "containerMode": "NoContainer", "timeoutInSeconds": 10, "maxInstancesCount": 2,
            "inputPayloadEncodingType": "json", "maxQueueSize": 10, "pinned": true,
            "pubsubTopics": {}
        }},
        "Manifests": [{
            "Platform": {},
            "Lifecycle": {},
            "Artifacts": [{"Uri": "greengrass:lambda-artifact.zip", "Unarchive": "ZIP"}]
        }],
        "Lifecycle": {
            "startup": {"script": "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher start"},
            "setenv": {
                "AWS_GREENGRASS_LAMBDA_ARN": arn,
                "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": "app.handler",
                "AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH": "{artifacts:decompressedPath}/lambda-artifact",
                "LICHEN_LAMBDA_PYTHON": python.display().to_string()
            }
        }
    })
}

fn subscriber_recipe(python: &Path, out: &Path) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.V1Subscriber",
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.pubsub": {
            "s": {"operations": ["aws.greengrass#SubscribeToTopic"], "resources": ["v1/out/+"]}
        }}}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!("exec {} -u {{artifacts:path}}/subscriber.py {}", python.display(), out.display())},
            "Artifacts": [{"URI": "s3://test/subscriber.py"}]
        }]
    })
}

async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_handler_publishes_through_the_legacy_subscription_router() {
    let Some((python, sdk)) = deps() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let recipes = dir.path().join("recipes");
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(&recipes).unwrap();
    let write = |name: &str, v: Value| {
        std::fs::write(recipes.join(format!("{name}.json")), v.to_string()).unwrap()
    };
    write(
        "com.example.V1Publisher",
        lambda_recipe("com.example.V1Publisher", SOURCE_ARN, &python),
    );
    write(
        "com.example.V1Helper",
        lambda_recipe("com.example.V1Helper", HELPER_ARN, &python),
    );
    write("com.example.V1Subscriber", subscriber_recipe(&python, &out));
    zip_with_sdk(
        &python,
        &artifacts.join("com.example.V1Publisher/1.0.0/lambda-artifact.zip"),
        &[("app.py", PUBLISHER)],
        Some(&sdk),
    );
    zip_with_sdk(
        &python,
        &artifacts.join("com.example.V1Helper/1.0.0/lambda-artifact.zip"),
        &[("app.py", HELPER)],
        None,
    );
    let sub_dir = artifacts.join("com.example.V1Subscriber/1.0.0");
    std::fs::create_dir_all(&sub_dir).unwrap();
    std::fs::write(sub_dir.join("subscriber.py"), SUBSCRIBER).unwrap();

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

    let router = "aws.greengrass.LegacySubscriptionRouter";
    let mut configuration_updates = BTreeMap::new();
    configuration_updates.insert(
        router.to_string(),
        ConfigurationUpdate {
            merge: Some(json!({"subscriptions": {
                "toSubscriber": {"id": "toSubscriber", "source": SOURCE_ARN,
                                 "subject": "v1/out/+", "target": "component:com.example.V1Subscriber"}
            }})),
            ..Default::default()
        },
    );
    let roots = [
        "com.example.V1Publisher",
        "com.example.V1Helper",
        "com.example.V1Subscriber",
        router,
    ];
    let id = node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: roots
                .iter()
                .map(|r| {
                    (
                        r.to_string(),
                        if *r == router { "2.1.0" } else { "1.0.0" }.to_string(),
                    )
                })
                .collect(),
            configuration_updates,
            recipe_dir: Some(recipes.clone()),
            artifact_dir: Some(artifacts.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut record = None;
    wait_for("the deployment", Duration::from_secs(120), || {
        let r = node.handle().deployment(&id).unwrap();
        let done = r.status.is_final();
        record = Some(r);
        done
    })
    .await;
    let record = record.unwrap();
    assert_eq!(record.status, DeploymentStatus::Succeeded, "{record:?}");
    wait_for("the subscriber", Duration::from_secs(30), || {
        out.join("ready").exists()
    })
    .await;

    let root2 = root.clone();
    let reply = tokio::task::spawn_blocking(move || {
        let mut c = lichen_core::control::client::ControlClient::connect(&root2).unwrap();
        c.request(&ControlRequest::FunctionInvoke {
            component: "com.example.V1Publisher".into(),
            payload: r#"{"id": "7", "reading": 21.5}"#.into(),
            topic: None,
        })
    })
    .await
    .unwrap();
    let result = match reply.unwrap() {
        ControlReply::FunctionResult(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(!result.error, "{result:?}");
    let v: Value = serde_json::from_str(&result.result).unwrap();
    // The unrouted publish raised in the handler, with Greengrass's text.
    let refused = v["refused"].as_str().unwrap_or_default();
    assert!(
        refused.starts_with("InvocationException: Failed to invoke function due to ")
            && refused.contains(&format!(
                "No subscription exists for the source {SOURCE_ARN} and subject unrouted/topic. \
                 Deploy and configure aws.greengrass.LegacySubscriptionRouter component to support \
                 publishing from Lambdas."
            )),
        "{v}"
    );
    // Lambda-to-Lambda, RequestResponse, unqualified ARN + Qualifier.
    assert_eq!(v["helper"], json!({"doubled": 40}), "{v}");
    assert_eq!(v["helper_error"], "", "{v}");

    // The routed publish reached the subscribed component, payload unchanged.
    let read = || -> Vec<Value> {
        std::fs::read_to_string(out.join("received.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_for("the routed message", Duration::from_secs(20), || {
        !read().is_empty()
    })
    .await;
    let got = read();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["topic"], "v1/out/7");
    let payload: Value = serde_json::from_str(got[0]["binary"].as_str().unwrap()).unwrap();
    assert_eq!(
        payload,
        json!({"got": {"id": "7", "reading": 21.5}, "via": "greengrasssdk"})
    );
    node.shutdown().await;
}
