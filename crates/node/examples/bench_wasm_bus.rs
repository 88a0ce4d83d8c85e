//! A WASM function end to end in an in-process node: cold start (deployment created → first
//! result on the bus) and warm overhead (bus publish → the function's publish received), the
//! bus subscription, the worker queue and the host's authorized publish included.
//! `cargo run --release -p lichen-node --example bench_wasm_bus [-- ITERATIONS]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_bus::{Message, Payload, SubscribeOptions};
use lichen_core::settings::Settings;
use lichen_model::deployment::{DeploymentRequest, DeploymentStatus};
use lichen_node::services::wasm::WasmService;
use lichen_node::{Node, NodeOptions, Service};
use serde_json::json;

const ECHO: &str = r#"(module
  (import "lichen" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (data (i32.const 0) "out/echo")
  (func (export "lichen_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $len)))
    (local.get $p))
  (func (export "lichen_handle") (param i32 i32) (param $pp i32) (param $pl i32) (result i32)
    (drop (call $publish (i32.const 0) (i32.const 8) (local.get $pp) (local.get $pl)))
    (global.set $bump (i32.const 4096))
    (i32.const 0)))"#;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().expect("temp dir");
    let name = "com.bench.WasmEcho";
    let art = dir.path().join("artifacts").join(name).join("1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::write(art.join("f.wasm"), wat::parse_str(ECHO).unwrap()).unwrap();
    std::fs::create_dir_all(dir.path().join("recipes")).unwrap();
    let recipe = json!({
        "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
        "ComponentType": "lichen.wasm",
        "ComponentConfiguration": {"DefaultConfiguration": {
            "pubsubTopics": {"0": {"topic": "in/echo", "type": "PUB_SUB"}},
            "accessControl": {"aws.greengrass.ipc.pubsub": {"p": {
                "operations": ["aws.greengrass#PublishToTopic"], "resources": ["out/echo"]}}}}},
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "{artifacts:path}/f.wasm"},
            "Artifacts": [{"URI": format!("s3://b/{name}/f.wasm")}]}]
    });
    std::fs::write(dir.path().join("recipes/r.json"), recipe.to_string()).unwrap();
    let node = Node::start(
        NodeOptions {
            root: dir.path().join("root"),
            settings: Settings::parse("posixUser: root\n").unwrap(),
        },
        vec![Arc::new(WasmService::new()) as Arc<dyn Service>],
    )
    .await
    .expect("node starts");
    let out = node
        .bus()
        .subscribe(SubscribeOptions::new("out/echo", "bench"))
        .unwrap();
    let publish = |n: usize| {
        node.bus()
            .publish(Message::new(
                "in/echo",
                Payload::Json(json!({"n": n})),
                "component:bench",
            ))
            .unwrap();
    };

    let deployed = Instant::now();
    let id = node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: [(name.to_string(), "1.0.0".to_string())].into(),
            recipe_dir: Some(dir.path().join("recipes")),
            artifact_dir: Some(dir.path().join("artifacts")),
            ..Default::default()
        })
        .await
        .unwrap();
    // Publish until the function answers: deployment → first result.
    let cold = loop {
        publish(0);
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(2), out.recv()).await {
            break deployed.elapsed();
        }
    };
    while !node.handle().deployment(&id).unwrap().status.is_final() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        node.handle().deployment(&id).unwrap().status,
        DeploymentStatus::Succeeded
    );
    while out.try_recv().is_some() {}

    let mut warm = Vec::with_capacity(iterations);
    for n in 0..iterations {
        let t = Instant::now();
        publish(n);
        let m = out.recv().await.expect("echo");
        warm.push(t.elapsed());
        debug_assert_eq!(m.payload, Payload::Json(json!({"n": n})));
    }
    println!(
        "cold start (deployment created → first result on the bus): {:.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "warm bus publish → function's publish received ({iterations}x): p50 {:.1} us, p99 {:.1} us",
        pct(&mut warm, 0.5),
        pct(&mut warm, 0.99)
    );
    node.shutdown().await;
}
