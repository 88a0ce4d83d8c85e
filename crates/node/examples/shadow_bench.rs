//! Local shadow benchmark (issue 13): a node with the shadow service composed in-process on
//! a temporary root (the store durable: SQLite WAL, `synchronous = FULL`, on disk), driven
//! over the real IPC socket.
//!
//! - `ipc`: UpdateThingShadow through lichen's Rust IPC client, one client sequentially
//!   (latency p50/p99) and `--clients` clients at once (throughput); then the same through
//!   awsiotsdk's GreengrassCoreIPCClientV2 (`examples/shadow_bench_sdk.py`, run with
//!   `LICHEN_TEST_PYTHON` or `.venv/bin/python`), sequentially.
//! - `rss`: the process's VmRSS before and after storing `--shadows` shadows (default
//!   10,000, each ~100 B of reported state, written through IPC 16 at a time), and after
//!   reading them all back.
//!
//! `cargo run --release -p lichen-node --example shadow_bench -- ipc|rss [--updates N]
//! [--clients C] [--shadows N]`. Rate limits are raised for the run (the defaults, 200/s
//! in all and 20/s per thing, would measure the limiter).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lichen_ipc::IpcClient;
use lichen_node::services::shadow::ShadowService;
use lichen_node::{Node, NodeOptions};
use serde_json::{Value, json};

const COMPONENT: &str = "com.example.ShadowBench";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn start(root: &Path) -> Node {
    let mut settings = lichen_core::settings::Settings {
        thing_name: "bench-core".into(),
        posix_user: "root".into(),
        ..Default::default()
    };
    settings.services.insert(
        "aws.greengrass.ShadowManager".into(),
        json!({"configuration": {"rateLimits": {
            "maxTotalLocalRequestsRate": 1_000_000, "maxLocalRequestsPerSecondPerThing": 1_000_000}}}),
    );
    let node = Node::start(
        NodeOptions {
            root: root.to_path_buf(),
            settings,
        },
        vec![Arc::new(ShadowService::new(None))],
    )
    .await
    .expect("node starts");
    node.handle()
        .update_configuration(
            COMPONENT,
            &["accessControl".into()],
            1,
            json!({"aws.greengrass.ShadowManager": {"b:1": {
                "operations": ["*"], "resources": ["*"]}}}),
        )
        .expect("access control");
    node
}

async fn client(node: &Node) -> IpcClient {
    let token = node.handle().component_token(COMPONENT);
    IpcClient::connect(node.ipc().socket_path(), &token)
        .await
        .expect("IPC connects")
}

fn update(thing: &str, name: Option<&str>, n: usize) -> Value {
    let body = json!({"state": {"reported": {"n": n, "temperature": 21.5, "status": "nominal", "fw": "1.2.3"}}});
    let mut v =
        json!({"thingName": thing, "payload": B64.encode(serde_json::to_vec(&body).unwrap())});
    if let Some(n) = name {
        v["shadowName"] = json!(n);
    }
    v
}

fn python() -> Option<PathBuf> {
    std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
            p.exists().then_some(p)
        })
        .filter(|p| p.exists())
}

async fn ipc(updates: usize, clients: usize) {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("root")).await;
    let c = client(&node).await;
    // Warm up (the store's first pages, the blocking pool).
    for n in 0..50 {
        c.call("UpdateThingShadow", &update("bench-core", None, n))
            .await
            .unwrap();
    }
    let mut lat = Vec::with_capacity(updates);
    let t0 = Instant::now();
    for n in 0..updates {
        let t = Instant::now();
        c.call("UpdateThingShadow", &update("bench-core", None, n))
            .await
            .unwrap();
        lat.push(t.elapsed());
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "rust ipc, 1 client:  {updates} updates in {secs:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        updates as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(client(&node).await);
    }
    let per = updates / clients.max(1);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let thing = format!("bench-thing-{i}");
            let mut lat = Vec::with_capacity(per);
            for n in 0..per {
                let t = Instant::now();
                c.call("UpdateThingShadow", &update(&thing, None, n))
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    all.sort();
    println!(
        "rust ipc, {clients} clients: {} updates in {secs:.2} s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        all.len(),
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );

    match python() {
        None => println!("awsiotsdk: skipped (no LICHEN_TEST_PYTHON / .venv python)"),
        Some(py) => {
            let token = node.handle().component_token(COMPONENT);
            let out = tokio::process::Command::new(py)
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shadow_bench_sdk.py"))
                .arg(updates.to_string())
                .env("SVCUID", token)
                .env(
                    "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
                    node.ipc().socket_path(),
                )
                .env("AWS_IOT_THING_NAME", "bench-core")
                .output()
                .await
                .expect("python runs");
            print!("{}", String::from_utf8_lossy(&out.stdout));
            if !out.status.success() {
                eprintln!("awsiotsdk failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
    node.shutdown().await;
}

async fn rss(shadows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir.path().join("root")).await;
    let mut conns = Vec::new();
    for _ in 0..16 {
        conns.push(Arc::new(client(&node).await));
    }
    // Warm up, then the baseline.
    for n in 0..200 {
        conns[0]
            .call("UpdateThingShadow", &update("warm-thing", Some("w"), n))
            .await
            .unwrap();
    }
    let before = rss_kib();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while n < shadows {
                // 100 things × 100 named shadows for 10,000.
                let thing = format!("thing-{}", n / 100);
                let name = format!("s{}", n % 100);
                c.call("UpdateThingShadow", &update(&thing, Some(&name), n))
                    .await
                    .unwrap();
                n += 16;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wrote = t0.elapsed().as_secs_f64();
    let after_write = rss_kib();
    for n in 0..shadows {
        let thing = format!("thing-{}", n / 100);
        let name = format!("s{}", n % 100);
        conns[n % 16]
            .call(
                "GetThingShadow",
                &json!({"thingName": thing, "shadowName": name}),
            )
            .await
            .unwrap();
    }
    let after_read = rss_kib();
    let db = dir.path().join("root/shadows");
    let db_bytes: u64 = std::fs::read_dir(&db)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    println!(
        "{shadows} shadows stored in {wrote:.1} s ({:.0}/s, 16 clients); RSS {:.1} MiB before, {:.1} MiB after writing (+{:.1}), {:.1} MiB after reading all back; database {:.1} MiB",
        shadows as f64 / wrote,
        before as f64 / 1024.0,
        after_write as f64 / 1024.0,
        (after_write as f64 - before as f64) / 1024.0,
        after_read as f64 / 1024.0,
        db_bytes as f64 / 1024.0 / 1024.0
    );
    node.shutdown().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "ipc".into());
    match mode.as_str() {
        "ipc" => ipc(arg("--updates", 2000), arg("--clients", 16)).await,
        "rss" => rss(arg("--shadows", 10_000)).await,
        other => {
            eprintln!(
                "usage: shadow_bench ipc|rss [--updates N] [--clients C] [--shadows N] ({other}?)"
            );
            std::process::exit(2);
        }
    }
}
