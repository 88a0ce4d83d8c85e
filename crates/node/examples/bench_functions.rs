//! Functions against the plain IPC baseline, in one in-process node and one run (issue 12's
//! benchmark). Each of three echo components takes a bus message on `bench/<kind>/in` and
//! publishes it back on `bench/<kind>/out`; the bench measures bus publish → echo received:
//!
//! - `ipc`: a generic component, awsiotsdk SubscribeToTopic → PublishToTopic (the baseline);
//! - `lambda`: a pinned Python Lambda under awslambdaric (PUB_SUB event source → Runtime API
//!   → handler), whose handler publishes with the same awsiotsdk call;
//! - `wasm`: a WASM function publishing through the host.
//!
//! Then cold starts (deployment created → first echo; an on-demand Lambda's first invocation
//! after its instance idled out) and the memory of the pinned Lambda instance (VmRSS, Pss).
//!
//! `cargo run --release -p lichen-node --example bench_functions [-- ITERATIONS]`, with
//! `LICHEN_TEST_PYTHON` (default `.venv/bin/python`: awslambdaric + awsiotsdk).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_bus::{Message, Payload, SubscribeOptions};
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::settings::Settings;
use lichen_model::deployment::{DeploymentRequest, DeploymentStatus};
use lichen_node::services::wasm::WasmService;
use lichen_node::{FunctionsService, Node, NodeOptions, Service};
use serde_json::{Value, json};

const IPC_ECHO: &str = r#"
import sys, time
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model
ipc = GreengrassCoreIPCClientV2()
def on_event(event):
    ipc.publish_to_topic(topic="bench/ipc/out",
        publish_message=model.PublishMessage(json_message=model.JsonMessage(message=event.json_message.message)))
ipc.subscribe_to_topic(topic="bench/ipc/in", on_stream_event=on_event)
while True:
    time.sleep(60)
"#;

const LAMBDA_ECHO: &str = r#"
import os
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model
ipc = GreengrassCoreIPCClientV2()
def handler(event, context):
    ipc.publish_to_topic(topic="bench/lambda/out",
        publish_message=model.PublishMessage(json_message=model.JsonMessage(message=event)))
    return {"pid": os.getpid()}
"#;

const PLAIN_HANDLER: &str = r#"
import os
def handler(event, context):
    return {"pid": os.getpid()}
"#;

const NODE_HANDLER: &str = r#"
exports.handler = async (event, context) => ({ pid: process.pid });
"#;

const WASM_ECHO: &str = r#"(module
  (import "lichen" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 0) "bench/wasm/out")
  (func (export "lichen_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  (func (export "lichen_handle") (param i32 i32) (param $pp i32) (param $pl i32) (result i32)
    (drop (call $publish (i32.const 0) (i32.const 14) (local.get $pp) (local.get $pl)))
    (global.set $bump (i32.const 4096))
    (i32.const 0)))"#;

fn pubsub_acl(subscribe: Option<&str>, publish: &str) -> Value {
    let mut acl =
        json!({"pub": {"operations": ["aws.greengrass#PublishToTopic"], "resources": [publish]}});
    if let Some(s) = subscribe {
        acl["sub"] = json!({"operations": ["aws.greengrass#SubscribeToTopic"], "resources": [s]});
    }
    json!({"aws.greengrass.ipc.pubsub": acl})
}

fn lambda_recipe(name: &str, python: &Path, config: Value) -> Value {
    lambda_recipe_env(
        name,
        config,
        json!({"LICHEN_LAMBDA_PYTHON": python.display().to_string()}),
    )
}

/// `extra`: setenv entries beside the Lambda ones (the runtime, its client).
fn lambda_recipe_env(name: &str, config: Value, extra: Value) -> Value {
    let mut setenv = json!({
        "AWS_GREENGRASS_LAMBDA_ARN": format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:1"),
        "AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER": "app.handler",
        "AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH": "{artifacts:decompressedPath}/lambda-artifact"
    });
    if let (Some(s), Some(e)) = (setenv.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
        "ComponentType": "aws.greengrass.lambda",
        "ComponentDependencies": {"aws.greengrass.LambdaLauncher": {"VersionRequirement": ">=2.0.0", "DependencyType": "HARD"}},
        "ComponentConfiguration": {"DefaultConfiguration": config},
        "Manifests": [{"Platform": {}, "Lifecycle": {},
            "Artifacts": [{"Uri": "greengrass:lambda-artifact.zip", "Unarchive": "ZIP"}]}],
        "Lifecycle": {
            "startup": {"script": "{aws.greengrass.LambdaLauncher:artifacts:path}/lambda-launcher start"},
            "setenv": setenv
        }
    })
}

fn zip(python: &Path, out: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(out.parent().expect("parent")).expect("artifact dir");
    let status = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\nz.writestr(sys.argv[2], sys.argv[3])\nz.close()",
        ])
        .arg(out)
        .arg(name)
        .arg(text)
        .status()
        .expect("python runs");
    assert!(status.success(), "zip written");
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn proc_kib(pid: u64, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Bench {
    node: Node,
    functions: Arc<FunctionsService>,
}

impl Bench {
    fn publish(&self, kind: &str, n: usize) {
        self.node
            .bus()
            .publish(Message::new(
                format!("bench/{kind}/in"),
                Payload::Json(json!({"n": n})),
                "component:bench",
            ))
            .expect("publish");
    }

    async fn invoke(&self, component: &str) -> (Value, Duration) {
        let t = Instant::now();
        let reply = self
            .functions
            .control(ControlRequest::FunctionInvoke {
                component: component.into(),
                payload: "{}".into(),
                topic: None,
            })
            .await
            .expect("invoke");
        let elapsed = t.elapsed();
        match reply {
            ControlReply::FunctionResult(r) => (
                serde_json::from_str(&r.result).expect("json result"),
                elapsed,
            ),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let python = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let dir = tempfile::tempdir().expect("temp dir");
    let recipes = dir.path().join("recipes");
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(&recipes).expect("recipes");
    let write = |name: &str, v: Value| {
        std::fs::write(recipes.join(format!("{name}.json")), v.to_string()).expect("recipe")
    };
    write(
        "com.bench.IpcEcho",
        json!({
            "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.bench.IpcEcho", "ComponentVersion": "1.0.0",
            "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": pubsub_acl(Some("bench/ipc/in"), "bench/ipc/out")}},
            "Manifests": [{"Platform": {"os": "linux"},
                "Lifecycle": {"Run": format!("exec {} -u {{artifacts:path}}/echo.py", python.display())},
                "Artifacts": [{"URI": "s3://b/echo.py"}]}]
        }),
    );
    let ipc_art = artifacts.join("com.bench.IpcEcho/1.0.0");
    std::fs::create_dir_all(&ipc_art).expect("dir");
    std::fs::write(ipc_art.join("echo.py"), IPC_ECHO).expect("echo.py");
    write(
        "com.bench.LambdaEcho",
        lambda_recipe(
            "com.bench.LambdaEcho",
            &python,
            json!({"pinned": true, "timeoutInSeconds": 10, "maxQueueSize": 100,
                   "pubsubTopics": {"0": {"topic": "bench/lambda/in", "type": "PUB_SUB"}},
                   "accessControl": pubsub_acl(None, "bench/lambda/out")}),
        ),
    );
    zip(
        &python,
        &artifacts.join("com.bench.LambdaEcho/1.0.0/lambda-artifact.zip"),
        "app.py",
        LAMBDA_ECHO,
    );
    write(
        "com.bench.LambdaOnDemand",
        lambda_recipe(
            "com.bench.LambdaOnDemand",
            &python,
            json!({"pinned": false, "timeoutInSeconds": 10, "maxIdleTimeInSeconds": 1, "maxInstancesCount": 1}),
        ),
    );
    zip(
        &python,
        &artifacts.join("com.bench.LambdaOnDemand/1.0.0/lambda-artifact.zip"),
        "app.py",
        PLAIN_HANDLER,
    );
    write(
        "com.bench.WasmEcho",
        json!({
            "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.bench.WasmEcho", "ComponentVersion": "1.0.0",
            "ComponentType": "lichen.wasm",
            "ComponentConfiguration": {"DefaultConfiguration": {
                "pubsubTopics": {"0": {"topic": "bench/wasm/in", "type": "PUB_SUB"}},
                "accessControl": pubsub_acl(None, "bench/wasm/out")}},
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "{artifacts:path}/f.wasm"},
                "Artifacts": [{"URI": "s3://b/f.wasm"}]}]
        }),
    );
    let wasm_art = artifacts.join("com.bench.WasmEcho/1.0.0");
    std::fs::create_dir_all(&wasm_art).expect("dir");
    std::fs::write(
        wasm_art.join("f.wasm"),
        wat::parse_str(WASM_ECHO).expect("wat"),
    )
    .expect("wasm");

    // Node.js (aws-lambda-ric from setup-test-deps), when installed: on-demand cold start,
    // warm function.invoke and pinned memory beside Python's.
    let ric = python
        .parent()
        .and_then(Path::parent)
        .map(|venv| venv.join("js-lambda/node_modules/aws-lambda-ric/bin/index.mjs"))
        .filter(|p| p.is_file());
    let mut roots = vec![
        "com.bench.IpcEcho",
        "com.bench.LambdaEcho",
        "com.bench.LambdaOnDemand",
        "com.bench.WasmEcho",
    ];
    if let Some(ric) = &ric {
        let env = json!({"AWS_GREENGRASS_LAMBDA_RUNTIME": "nodejs18.x",
                         "LICHEN_LAMBDA_NODE_RIC": ric.display().to_string()});
        for (name, pinned) in [
            ("com.bench.NodePinned", true),
            ("com.bench.NodeOnDemand", false),
        ] {
            write(
                name,
                lambda_recipe_env(
                    name,
                    json!({"pinned": pinned, "timeoutInSeconds": 10, "maxIdleTimeInSeconds": 1, "maxInstancesCount": 1}),
                    env.clone(),
                ),
            );
            zip(
                &python,
                &artifacts.join(format!("{name}/1.0.0/lambda-artifact.zip")),
                "app.js",
                NODE_HANDLER,
            );
            roots.push(name);
        }
    } else {
        eprintln!("aws-lambda-ric not installed beside the venv: Node.js figures skipped");
    }
    let functions = Arc::new(FunctionsService::new());
    let node = Node::start(
        NodeOptions {
            root: dir.path().join("root"),
            settings: Settings::parse("posixUser: root\n").expect("settings"),
        },
        vec![
            functions.clone() as Arc<dyn Service>,
            Arc::new(WasmService::new()) as Arc<dyn Service>,
        ],
    )
    .await
    .expect("node starts");
    let bench = Bench { node, functions };
    let outs: Vec<(&str, lichen_bus::Subscription)> = ["ipc", "lambda", "wasm"]
        .into_iter()
        .map(|k| {
            let s = bench
                .node
                .bus()
                .subscribe(SubscribeOptions::new(format!("bench/{k}/out"), "bench"))
                .expect("subscribe");
            (k, s)
        })
        .collect();

    // Cold: deployment created → first echo of each, publishing every 5 ms until it answers.
    let deployed = Instant::now();
    let id = bench
        .node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: roots
                .iter()
                .map(|n| (n.to_string(), "1.0.0".to_string()))
                .collect(),
            recipe_dir: Some(recipes.clone()),
            artifact_dir: Some(artifacts.clone()),
            ..Default::default()
        })
        .await
        .expect("deployment");
    // All three at once: each publish round goes to the ones that have not answered yet.
    let mut cold: Vec<Option<Duration>> = vec![None; outs.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while cold.iter().any(Option::is_none) {
        for (i, (kind, _)) in outs.iter().enumerate() {
            if cold[i].is_none() {
                bench.publish(kind, 0);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        for (i, (_, out)) in outs.iter().enumerate() {
            if cold[i].is_none() && out.try_recv().is_some() {
                cold[i] = Some(deployed.elapsed());
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every echo answered: {cold:?}"
        );
    }
    while !bench
        .node
        .handle()
        .deployment(&id)
        .expect("record")
        .status
        .is_final()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        bench.node.handle().deployment(&id).expect("record").status,
        DeploymentStatus::Succeeded
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, out) in &outs {
        while out.try_recv().is_some() {}
    }

    // Warm: sequential round trips, interleaved so load drifts hit all three alike.
    let warmup = 50;
    let mut warm: Vec<Vec<Duration>> = vec![Vec::new(); outs.len()];
    for n in 0..iterations + warmup {
        for (i, (kind, out)) in outs.iter().enumerate() {
            let t = Instant::now();
            bench.publish(kind, n);
            let m = tokio::time::timeout(Duration::from_secs(10), out.recv())
                .await
                .expect("an echo in time")
                .expect("echo");
            if n >= warmup {
                warm[i].push(t.elapsed());
            }
            debug_assert_eq!(m.payload, Payload::Json(json!({"n": n})));
        }
    }

    // On-demand cold start: the first invocation after the instance idled out.
    let mut on_demand: Vec<(&str, Vec<Duration>, Vec<Duration>)> = vec![("python", vec![], vec![])];
    if ric.is_some() {
        on_demand.push(("node", vec![], vec![]));
    }
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1600)).await;
        for (runtime, cold, warm) in on_demand.iter_mut() {
            let name = match *runtime {
                "node" => "com.bench.NodeOnDemand",
                _ => "com.bench.LambdaOnDemand",
            };
            cold.push(bench.invoke(name).await.1);
            warm.push(bench.invoke(name).await.1);
        }
    }
    // Warm function.invoke on the pinned instances (no bus, no IPC publish in the handler).
    let node_pinned = if ric.is_some() {
        let mut warm = Vec::new();
        for _ in 0..200 {
            warm.push(bench.invoke("com.bench.NodePinned").await.1);
        }
        let (reply, _) = bench.invoke("com.bench.NodePinned").await;
        let pid = reply["pid"].as_u64().expect("pid");
        Some((
            warm,
            proc_kib(pid, "status", "VmRSS:"),
            proc_kib(pid, "smaps_rollup", "Pss:"),
        ))
    } else {
        None
    };

    // Memory of the pinned instance (its handler reports its pid).
    let (reply, _) = bench.invoke("com.bench.LambdaEcho").await;
    let pid = reply["pid"].as_u64().expect("pid");
    let rss = proc_kib(pid, "status", "VmRSS:");
    let pss = proc_kib(pid, "smaps_rollup", "Pss:");

    println!("iterations: {iterations} per kind (after {warmup} warm-up), sequential, interleaved");
    println!("warm bus publish → echo received (ms):");
    let mut p50s = Vec::new();
    for (i, (kind, _)) in outs.iter().enumerate() {
        let p50 = pct(&mut warm[i], 0.5);
        let p99 = pct(&mut warm[i], 0.99);
        p50s.push(p50);
        println!("  {kind:<7} p50 {p50:.3}  p99 {p99:.3}");
    }
    println!(
        "  lambda over the ipc baseline at p50: {:+.3} ms",
        p50s[1] - p50s[0]
    );
    println!("cold start, deployment created → first echo (ms):");
    for ((kind, _), t) in outs.iter().zip(&cold) {
        let t = t.unwrap_or_default();
        println!("  {kind:<7} {:.1} (±5 ms polling)", t.as_secs_f64() * 1e3);
    }
    for (runtime, cold, warm) in on_demand.iter_mut() {
        cold.sort();
        warm.sort();
        println!(
            "on-demand {runtime} Lambda invoke (function.invoke, 5 each): cold (new instance) median {:.1} ms, max {:.1} ms; warm median {:.2} ms",
            cold[2].as_secs_f64() * 1e3,
            cold[4].as_secs_f64() * 1e3,
            warm[2].as_secs_f64() * 1e3
        );
    }
    if let Some((mut warm, rss, pss)) = node_pinned {
        println!(
            "pinned Node.js Lambda (aws-lambda-ric): function.invoke p50 {:.3} ms, p99 {:.3} ms (200x); VmRSS {:.1} MiB, Pss {:.1} MiB",
            pct(&mut warm, 0.5),
            pct(&mut warm, 0.99),
            rss as f64 / 1024.0,
            pss as f64 / 1024.0
        );
    }
    println!(
        "pinned Python Lambda instance (awslambdaric + awsiotsdk IPC client): VmRSS {:.1} MiB, Pss {:.1} MiB",
        rss as f64 / 1024.0,
        pss as f64 / 1024.0
    );
    bench.node.shutdown().await;
}
