//! Lambda components end to end: a recipe in the shape Greengrass's Lambda import writes,
//! its ZIP unarchived by the core, the handler run unmodified under `awslambdaric`, fed by
//! IPC publishes from an awsiotsdk component (PUB_SUB event source with a wildcard),
//! invoked over the control channel (`function.invoke`), metrics in `component details`;
//! a ZIP without its handler fails the deployment naming the handler.
//!
//! Skips with a message when the .venv python (awslambdaric, awsiotsdk) is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::settings::Settings;
use lichen_model::deployment::{DeploymentRequest, DeploymentStatus};
use lichen_node::{FunctionsService, Node, NodeOptions, Service};
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
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    let ok = std::process::Command::new(&p)
        .args(["-c", "import awslambdaric, awsiot.greengrasscoreipc"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipping: {} with awslambdaric and awsiotsdk missing (scripts/setup-test-deps)",
            p.display()
        );
        return None;
    }
    Some(p)
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

/// An imported Lambda's recipe (reference §2.1), plus LICHEN_LAMBDA_PYTHON for the test's venv.
fn lambda_recipe(name: &str, handler: &str, python: &Path, out: &Path) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentType": "aws.greengrass.lambda",
        "ComponentPublisher": "AWS Lambda",
        "ComponentDependencies": {
            "aws.greengrass.LambdaLauncher": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"},
            "aws.greengrass.TokenExchangeService": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"},
            "aws.greengrass.LambdaRuntimes": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "SOFT"}
        },
        "ComponentConfiguration": {"DefaultConfiguration": {
            "lambdaExecutionParameters": {"EnvironmentVariables": {"OUT": out.display().to_string(), "GREETING": "hello"}},
            "containerParams": {"memorySize": 16384, "mountROSysfs": false, "volumes": {}, "devices": {}},
            "containerMode": "NoContainer",
            "timeoutInSeconds": 5, "maxInstancesCount": 2, "inputPayloadEncodingType": "json",
            "maxQueueSize": 10, "pinned": true, "maxIdleTimeInSeconds": 60, "statusTimeoutInSeconds": 60,
            "pubsubTopics": {"0": {"topic": "sensors/+", "type": "PUB_SUB"}}
        }},
        "Manifests": [{
            "Platform": {},
            "Lifecycle": {},
            "Artifacts": [{"Uri": "greengrass:lambda-artifact.zip", "Unarchive": "ZIP",
                           "Permission": {"Read": "OWNER", "Execute": "NONE"}}]
        }],
        "Lifecycle": {
            "startup": {"requiresPrivilege": true,
                        "script": "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher start"},
            "setenv": {
                "AWS_GREENGRASS_LAMBDA_CONTAINER_MODE": "{configuration:/containerMode}",
                "AWS_GREENGRASS_LAMBDA_ARN": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:1"),
                "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": handler,
                "AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH": "{artifacts:decompressedPath}/lambda-artifact",
                "AWS_GREENGRASS_LAMBDA_ENCODING_TYPE": "{configuration:/inputPayloadEncodingType}",
                "LICHEN_LAMBDA_PYTHON": python.display().to_string()
            },
            "shutdown": {"requiresPrivilege": true,
                         "script": "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher stop; {aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher clean"}
        }
    })
}

fn publisher_recipe(python: &Path) -> Value {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Publisher",
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.pubsub": {
            "p": {"policyDescription": "publish sensors", "operations": ["aws.greengrass#PublishToTopic"], "resources": ["sensors/*"]}
        }}}},
        "ComponentDependencies": {"com.example.Lambda": {"VersionRequirement": "1.0.0", "DependencyType": "HARD"}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!("exec {} -u {{artifacts:path}}/publisher.py", python.display())},
            "Artifacts": [{"URI": "s3://test/publisher.py"}]
        }]
    })
}

async fn deploy(
    node: &Node,
    recipes: &Path,
    artifacts: &Path,
    roots: &[&str],
) -> lichen_model::deployment::DeploymentRecord {
    let id = node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: roots
                .iter()
                .map(|r| (r.to_string(), "1.0.0".to_string()))
                .collect(),
            recipe_dir: Some(recipes.to_path_buf()),
            artifact_dir: Some(artifacts.to_path_buf()),
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..600 {
        let r = node.handle().deployment(&id).unwrap();
        if r.status.is_final() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("deployment {id} not final");
}

fn read_events(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_lambda_runs_under_awslambdaric_fed_by_ipc_and_control() {
    let Some(python) = python() else { return };
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
        "com.example.Lambda",
        lambda_recipe("com.example.Lambda", "app.handler", &python, &out),
    );
    write(
        "com.example.NoHandler",
        lambda_recipe("com.example.NoHandler", "missing.handler", &python, &out),
    );
    write("com.example.Publisher", publisher_recipe(&python));
    zip(
        &python,
        &artifacts.join("com.example.Lambda/1.0.0/lambda-artifact.zip"),
        &[("app.py", HANDLER)],
    );
    zip(
        &python,
        &artifacts.join("com.example.NoHandler/1.0.0/lambda-artifact.zip"),
        &[("other.py", "x = 1\n")],
    );
    let pub_dir = artifacts.join("com.example.Publisher/1.0.0");
    std::fs::create_dir_all(&pub_dir).unwrap();
    std::fs::write(pub_dir.join("publisher.py"), PUBLISHER).unwrap();

    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "posixUser: root\n").unwrap();
    let root = dir.path().join("root");
    let services: Vec<Arc<dyn Service>> = vec![Arc::new(FunctionsService::new())];
    let node = Node::start(
        NodeOptions {
            root: root.clone(),
            settings: Settings::load(&config).unwrap(),
        },
        services,
    )
    .await
    .unwrap();

    let r = deploy(
        &node,
        &recipes,
        &artifacts,
        &["com.example.Lambda", "com.example.Publisher"],
    )
    .await;
    assert_eq!(r.status, DeploymentStatus::Succeeded, "{r:?}");

    // Three IPC publishes on sensors/0..2 reach the handler through the wildcard source,
    // with the topic as context.client_context.custom['subject'], all in one pinned process.
    let mut events = Vec::new();
    for _ in 0..300 {
        events = read_events(&out);
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events.len(), 3, "{events:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["event"]["n"], i, "{e}");
        assert_eq!(e["subject"], format!("sensors/{i}"));
        assert_eq!(e["pid"], events[0]["pid"], "one pinned instance");
        assert_eq!(e["loaded"], events[0]["loaded"], "module code ran once");
    }

    // function.invoke over the control channel (what `lichen function invoke` sends).
    let root2 = root.clone();
    let reply = tokio::task::spawn_blocking(move || {
        let mut c = ControlClient::connect(&root2).unwrap();
        let ok = c.request(&ControlRequest::FunctionInvoke {
            component: "com.example.Lambda".into(),
            payload: r#"{"direct": true}"#.into(),
            topic: Some("cli/topic".into()),
        });
        let unknown = c.request(&ControlRequest::FunctionInvoke {
            component: "com.example.Nope".into(),
            payload: "{}".into(),
            topic: None,
        });
        (ok, unknown)
    })
    .await
    .unwrap();
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
    let r = deploy(&node, &recipes, &artifacts, &["com.example.NoHandler"]).await;
    assert_eq!(r.status, DeploymentStatus::Failed, "{r:?}");
    let text = format!("{r:?}");
    assert!(text.contains("missing.handler"), "{text}");

    node.shutdown().await;
}
