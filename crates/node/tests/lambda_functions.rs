//! Lambda components end to end: a recipe in the shape Greengrass's Lambda import writes,
//! its ZIP unarchived by the core, the handler run unmodified under `awslambdaric`, fed by
//! IPC publishes from an awsiotsdk component (PUB_SUB event source with a wildcard),
//! invoked over the control channel (`function.invoke`), metrics in `component details`;
//! a ZIP without its handler fails the deployment naming the handler.
//!
//! Skips with a message when the .venv python (awslambdaric, awsiotsdk) is missing, and fails
//! then under `LICHEN_TEST_REQUIRE_ALL=1`.

#[path = "function_support/mod.rs"]
mod function_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use function_support::*;
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_model::deployment::DeploymentStatus;
use serde_json::{Value, json};

const HANDLER: &str = r#"
import json, os, time
LOADED = time.time()

def handler(event, context):
    subject = context.client_context.custom.get("subject") if context.client_context else None
    line = {"event": event, "subject": subject, "pid": os.getpid(), "loaded": LOADED}
    with open(os.path.join(os.environ["OUT"], "events.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")
    return {"echo": event, "subject": subject, "greeting": os.environ.get("GREETING")}
"#;

const PUBLISHER: &str = r#"
import json, time
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model
ipc = GreengrassCoreIPCClientV2()
for i in range(3):
    ipc.publish_to_topic(topic="sensors/%d" % i,
                         publish_message=model.PublishMessage(json_message=model.JsonMessage(message={"n": i})))
    time.sleep(0.05)
open("published", "w").write("ok")
"#;

fn python() -> Option<PathBuf> {
    python_with(
        "awslambdaric, awsiot.greengrasscoreipc",
        "awslambdaric and awsiotsdk",
        "",
    )
}

/// An imported Lambda's recipe in full (reference §2.1), plus LICHEN_LAMBDA_PYTHON for the test's venv.
fn full_lambda_recipe(name: &str, handler: &str, python: &Path, out: &Path) -> Value {
    let mut recipe = lambda_recipe(LambdaRecipe {
        name,
        arn: &lambda_arn(name),
        dependencies: json!({
            "aws.greengrass.TokenExchangeService": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"},
            "aws.greengrass.LambdaRuntimes": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "SOFT"}
        }),
        configuration: json!({
            "lambdaExecutionParameters": {"EnvironmentVariables": {"OUT": out.display().to_string(), "GREETING": "hello"}},
            "containerParams": {"memorySize": 16384, "mountROSysfs": false, "volumes": {}, "devices": {}},
            "maxIdleTimeInSeconds": 60, "statusTimeoutInSeconds": 60,
            "pubsubTopics": {"0": {"topic": "sensors/+", "type": "PUB_SUB"}}
        }),
        setenv: json!({
            "AWS_GREENGRASS_LAMBDA_CONTAINER_MODE": "{configuration:/containerMode}",
            "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": handler,
            "AWS_GREENGRASS_LAMBDA_ENCODING_TYPE": "{configuration:/inputPayloadEncodingType}",
            "LICHEN_LAMBDA_PYTHON": python.display().to_string()
        }),
    });
    // What the import writes beyond the shape the other function tests share.
    recipe["ComponentPublisher"] = json!("AWS Lambda");
    recipe["Manifests"][0]["Artifacts"][0]["Permission"] =
        json!({"Read": "OWNER", "Execute": "NONE"});
    recipe["Lifecycle"]["startup"]["requiresPrivilege"] = json!(true);
    recipe["Lifecycle"]["shutdown"] = json!({"requiresPrivilege": true,
        "script": "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher stop; {aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher clean"});
    recipe
}

fn publisher_recipe(python: &Path) -> Value {
    python_recipe(
        "com.example.Publisher",
        python,
        "publisher.py",
        "",
        json!({"p": {"policyDescription": "publish sensors", "operations": ["aws.greengrass#PublishToTopic"], "resources": ["sensors/*"]}}),
        json!({"com.example.Lambda": {"VersionRequirement": "1.0.0", "DependencyType": "HARD"}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_lambda_runs_under_awslambdaric_fed_by_ipc_and_control() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let recipes = dir.path().join("recipes");
    let write = |name: &str, v: Value| write_recipe(&recipes, name, &v);
    write(
        "com.example.Lambda",
        full_lambda_recipe("com.example.Lambda", "app.handler", &python, &out),
    );
    write(
        "com.example.NoHandler",
        full_lambda_recipe("com.example.NoHandler", "missing.handler", &python, &out),
    );
    write("com.example.Publisher", publisher_recipe(&python));
    zip(
        &python,
        &lambda_zip_path(dir.path(), "com.example.Lambda"),
        &[("app.py", HANDLER)],
    );
    zip(
        &python,
        &lambda_zip_path(dir.path(), "com.example.NoHandler"),
        &[("other.py", "x = 1\n")],
    );
    write_artifact(
        dir.path(),
        "com.example.Publisher",
        "publisher.py",
        PUBLISHER.as_bytes(),
    );

    let root = dir.path().join("root");
    let node = start_functions_node(root.clone()).await;

    let r = deploy(
        &node,
        dir.path(),
        &["com.example.Lambda", "com.example.Publisher"],
    )
    .await;
    assert_eq!(r.status, DeploymentStatus::Succeeded, "{r:?}");

    // Three IPC publishes on sensors/0..2 reach the handler through the wildcard source,
    // with the topic as context.client_context.custom['subject'], all in one pinned process.
    let read = || read_jsonl(&out.join("events.jsonl"));
    wait_for("3 events", Duration::from_secs(30), || read().len() >= 3).await;
    let events = read();
    assert_eq!(events.len(), 3, "{events:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["event"]["n"], i, "{e}");
        assert_eq!(e["subject"], format!("sensors/{i}"));
        assert_eq!(e["pid"], events[0]["pid"], "one pinned instance");
        assert_eq!(e["loaded"], events[0]["loaded"], "module code ran once");
    }

    // function.invoke over the control channel (what `lichen function invoke` sends).
    let mut reply = control(
        &root,
        vec![
            ControlRequest::FunctionInvoke {
                component: "com.example.Lambda".into(),
                payload: r#"{"direct": true}"#.into(),
                topic: Some("cli/topic".into()),
            },
            ControlRequest::FunctionInvoke {
                component: "com.example.Nope".into(),
                payload: "{}".into(),
                topic: None,
            },
        ],
    )
    .await
    .into_iter();
    let reply = (reply.next().unwrap(), reply.next().unwrap());
    match reply.0.unwrap() {
        ControlReply::FunctionResult(r) => {
            assert!(!r.error && !r.base64, "{r:?}");
            let v: Value = serde_json::from_str(&r.result).unwrap();
            assert_eq!(
                v,
                json!({"echo": {"direct": true}, "subject": "cli/topic", "greeting": "hello"})
            );
        }
        other => panic!("{other:?}"),
    }
    let unknown = reply.1.unwrap_err().to_string();
    assert!(unknown.contains("com.example.Nope"), "{unknown}");

    // Metrics in component details.
    let mut invocations = 0.0;
    for _ in 0..50 {
        let info = node
            .handle()
            .component_details("com.example.Lambda")
            .unwrap();
        invocations = info
            .metrics
            .iter()
            .find(|m| m.name == "FunctionInvocations")
            .map(|m| m.value)
            .unwrap_or(0.0);
        if invocations >= 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(invocations, 4.0);

    // A ZIP without its handler fails the deployment, naming the handler.
    let r = deploy(&node, dir.path(), &["com.example.NoHandler"]).await;
    assert_eq!(r.status, DeploymentStatus::Failed, "{r:?}");
    let text = format!("{r:?}");
    assert!(text.contains("missing.handler"), "{text}");

    node.shutdown().await;
}
