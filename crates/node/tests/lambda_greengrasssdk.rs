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

#[path = "function_support/mod.rs"]
mod function_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use function_support::*;
use lichen_core::control::ControlReply;
use lichen_model::deployment::{ConfigurationUpdate, DeploymentStatus};
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

/// The venv python with awslambdaric + awsiotsdk, and the greengrasssdk package directory.
fn deps() -> Option<(PathBuf, PathBuf)> {
    let python = venv_python();
    let sdk = greengrasssdk_dir(&python);
    if python_imports(&python, "awslambdaric, awsiot.greengrasscoreipc")
        && sdk.join("__init__.py").is_file()
    {
        return Some((python, sdk));
    }
    let message = format!(
        "{} with awslambdaric + awsiotsdk, or {}, missing (scripts/setup-test-deps)",
        python.display(),
        sdk.display()
    );
    skip("", &message);
    None
}

fn v1_lambda_recipe(name: &str, arn: &str, python: &Path) -> Value {
    lambda_recipe(LambdaRecipe {
        name,
        arn,
        dependencies: json!({
            "aws.greengrass.LegacySubscriptionRouter": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "SOFT"}
        }),
        configuration: json!({"timeoutInSeconds": 10, "pubsubTopics": {}}),
        setenv: json!({"LICHEN_LAMBDA_PYTHON": python.display().to_string()}),
    })
}

fn subscriber_recipe(python: &Path, out: &Path) -> Value {
    python_recipe(
        "com.example.V1Subscriber",
        python,
        "subscriber.py",
        &format!(" {}", out.display()),
        json!({"s": {"operations": ["aws.greengrass#SubscribeToTopic"], "resources": ["v1/out/+"]}}),
        json!({}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_handler_publishes_through_the_legacy_subscription_router() {
    let Some((python, sdk)) = deps() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let recipes = dir.path().join("recipes");
    let write = |name: &str, v: Value| write_recipe(&recipes, name, &v);
    write(
        "com.example.V1Publisher",
        v1_lambda_recipe("com.example.V1Publisher", SOURCE_ARN, &python),
    );
    write(
        "com.example.V1Helper",
        v1_lambda_recipe("com.example.V1Helper", HELPER_ARN, &python),
    );
    write("com.example.V1Subscriber", subscriber_recipe(&python, &out));
    zip_with_sdk(
        &python,
        &lambda_zip_path(dir.path(), "com.example.V1Publisher"),
        &[("app.py", PUBLISHER)],
        Some(&sdk),
    );
    zip(
        &python,
        &lambda_zip_path(dir.path(), "com.example.V1Helper"),
        &[("app.py", HELPER)],
    );
    write_artifact(
        dir.path(),
        "com.example.V1Subscriber",
        "subscriber.py",
        SUBSCRIBER.as_bytes(),
    );

    let root = dir.path().join("root");
    let node = start_functions_node(root.clone()).await;

    let mut request = deployment_request(
        dir.path(),
        &[
            "com.example.V1Publisher",
            "com.example.V1Helper",
            "com.example.V1Subscriber",
            ROUTER,
        ],
    );
    request.configuration_updates.insert(
        ROUTER.to_string(),
        ConfigurationUpdate {
            merge: Some(json!({"subscriptions": {
                "toSubscriber": {"id": "toSubscriber", "source": SOURCE_ARN,
                                 "subject": "v1/out/+", "target": "component:com.example.V1Subscriber"}
            }})),
            ..Default::default()
        },
    );
    let record = deploy_request(&node, request).await;
    assert_eq!(record.status, DeploymentStatus::Succeeded, "{record:?}");
    wait_for("the subscriber", Duration::from_secs(30), || {
        out.join("ready").exists()
    })
    .await;

    let reply = invoke_over_control(
        &root,
        "com.example.V1Publisher",
        r#"{"id": "7", "reading": 21.5}"#,
        None,
    )
    .await;
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
    let read = || read_jsonl(&out.join("received.jsonl"));
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
