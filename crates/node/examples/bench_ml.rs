//! The ML benchmark, side by side with onnxruntime's CPU provider in one run, on the models
//! the tests generate (crates/ml/tests/py/gen_models.py), both limited to the same threads:
//!
//! - single-request latency p50/p99 on the CNN (3×224×224): tract one thread, onnxruntime
//!   intra-op 1;
//! - throughput with CONCURRENCY requests at once (tract: `Concurrency` workers; onnxruntime:
//!   as many Python threads on one session, intra-op 1);
//! - memory a loaded CNN adds (RSS before/after load and warm-up);
//! - the service's own overhead: a request published on the bus to `lichen/ml/mlp/infer`
//!   until its reply arrives, minus the engine time the reply reports (node in-process,
//!   the model deployed as a component).
//!
//! `cargo run --release -p lichen-node --features ml --example bench_ml [RUNS] [CONCURRENCY]`
//! (needs the .venv with onnx/onnxruntime: scripts/setup-test-deps).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_bus::{Message, Payload, SubscribeOptions};
use lichen_ml::encoding::decode_npy;
use lichen_ml::{ModelRunner, ModelSpec, TractEngine};
use lichen_model::deployment::{DeploymentRequest, DeploymentStatus};
use lichen_node::services::ml::MlService;
use lichen_node::{Node, NodeOptions, Service};
use serde_json::{Value, json};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let conc: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join(".venv/bin/python");
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let out = std::process::Command::new(&python)
        .arg(repo.join("crates/ml/tests/py/gen_models.py"))
        .arg(&models)
        .args(["mlp", "cnn"])
        .output()
        .expect("run the .venv python (scripts/setup-test-deps)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // tract: latency on one thread, memory.
    let before = rss_kib();
    let spec = ModelSpec::from_component_config(
        "cnn",
        &json!({"Model": {"File": "cnn.onnx", "Concurrency": conc, "QueueDepth": 64}}),
    )
    .unwrap()
    .unwrap();
    let runner = ModelRunner::load(&TractEngine, spec, &models, "1").unwrap();
    let x = decode_npy(
        "data",
        &std::fs::read(models.join("cnn.in.data.npy")).unwrap(),
    )
    .unwrap();
    for _ in 0..5 {
        runner.model().run(vec![x.clone()]).unwrap();
    }
    let tract_rss = rss_kib().saturating_sub(before);
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        runner.model().run(vec![x.clone()]).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (t50, t99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    // tract: throughput through the runner (queue + `conc` workers), `conc` callers.
    let per = (runs / conc).max(1);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (runner, x) = (runner.clone(), x.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                runner.run(vec![x.clone()]).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let tract_tput = (per * conc) as f64 / t.elapsed().as_secs_f64();
    drop(runner);

    // onnxruntime, same model and input.
    let out = std::process::Command::new(&python)
        .arg(repo.join("crates/ml/tests/py/bench_ort.py"))
        .arg(models.join("cnn.onnx"))
        .arg(models.join("cnn.in.data.npy"))
        .arg(runs.to_string())
        .arg(conc.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ort: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (o50, o99, otput) = (
        ort["p50_us"].as_f64().unwrap(),
        ort["p99_us"].as_f64().unwrap(),
        ort["throughput_per_s"].as_f64().unwrap(),
    );

    // Bus overhead: the MLP deployed as a component, requests round-tripped on the bus.
    let (bus50, bus99, engine50) = bus_overhead(dir.path(), &models, runs.max(500)).await;

    println!("CNN 1×3×224×224, {runs} runs, concurrency {conc}");
    println!("                    tract        onnxruntime  ratio");
    println!(
        "latency p50 (ms)    {:>10.2}   {:>10.2}   {:.2}×",
        t50 / 1e3,
        o50 / 1e3,
        t50 / o50
    );
    println!(
        "latency p99 (ms)    {:>10.2}   {:>10.2}   {:.2}×",
        t99 / 1e3,
        o99 / 1e3,
        t99 / o99
    );
    println!(
        "throughput (/s)     {:>10.1}   {:>10.1}   {:.2}×",
        tract_tput,
        otput,
        otput / tract_tput
    );
    println!(
        "RSS per model (KiB) {:>10}   {:>10}",
        tract_rss, ort["rss_kib"]
    );
    println!(
        "bus overhead (MLP, request on the bus → reply, minus engine time): p50 {bus50:.0} µs, p99 {bus99:.0} µs (engine p50 {engine50:.0} µs)"
    );
}

async fn bus_overhead(dir: &Path, models: &Path, n: usize) -> (f64, f64, f64) {
    let name = "com.example.BenchMlp";
    let recipes = dir.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::write(
        recipes.join(format!("{name}.json")),
        json!({
            "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
            "ComponentConfiguration": {"DefaultConfiguration": {"Model": {"Name": "mlp", "File": "mlp.onnx"}}},
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Startup": {"Script": "true"}},
                           "Artifacts": [{"URI": format!("s3://b/{name}/mlp.onnx")}]}]
        })
        .to_string(),
    )
    .unwrap();
    let art: PathBuf = dir.join("artifacts").join(name).join("1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(models.join("mlp.onnx"), art.join("mlp.onnx")).unwrap();
    let ml = Arc::new(MlService::new());
    let settings = lichen_core::settings::Settings {
        posix_user: "root".into(),
        ..Default::default()
    };
    let node = Node::start(
        NodeOptions {
            root: dir.join("root"),
            settings,
        },
        vec![Arc::new(ml.clone()) as Arc<dyn Service>],
    )
    .await
    .unwrap();
    let id = node
        .handle()
        .create_deployment(DeploymentRequest {
            root_components_to_add: [(name.to_string(), "1.0.0".to_string())].into(),
            recipe_dir: Some(recipes),
            artifact_dir: Some(dir.join("artifacts")),
            ..Default::default()
        })
        .await
        .unwrap();
    loop {
        let r = node.handle().deployment(&id).unwrap();
        if r.status.is_final() {
            assert_eq!(r.status, DeploymentStatus::Succeeded, "{r:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while ml.runner("mlp").is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let x = decode_npy("x", &std::fs::read(models.join("mlp.in.x.npy")).unwrap()).unwrap();
    let request = json!({"inputs": {"x": json!([x.to_f64_vec()])}});
    let bus = node.bus().clone();
    let replies = bus
        .subscribe(SubscribeOptions::new("lichen/ml/mlp/result", "bench"))
        .unwrap();
    let (mut overhead, mut engine) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 20 {
        let t = Instant::now();
        bus.publish(Message::new(
            "lichen/ml/mlp/infer",
            Payload::Json(request.clone()),
            "bench",
        ))
        .unwrap();
        let m = replies.recv().await.unwrap();
        let rtt = t.elapsed().as_secs_f64() * 1e6;
        let Payload::Json(reply) = m.payload else {
            panic!("binary reply")
        };
        let e = reply["engineMicros"].as_f64().expect("a successful reply");
        if i >= 20 {
            overhead.push(rtt - e);
            engine.push(e);
        }
    }
    node.shutdown().await;
    (
        pct(&mut overhead, 0.5),
        pct(&mut overhead, 0.99),
        pct(&mut engine, 0.5),
    )
}
