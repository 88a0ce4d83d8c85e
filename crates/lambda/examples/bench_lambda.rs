//! Lambda overhead on this machine: cold start of a pinned and of an on-demand instance
//! (pool start → first result), warm invocation latency p50/p99 (queue → Runtime API →
//! awslambdaric → handler → result), and the RSS of one pinned instance.
//!
//! `cargo run --release -p lichen-lambda --example bench_lambda -- [N]` (default 500), from
//! the repository root (uses .venv/bin/python with awslambdaric).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_lambda::{FunctionConfig, InstanceLauncher, Outcome, Pool, PoolOptions};
use tokio::process::{Child, Command};

const HANDLER: &str =
    "import os\ndef handler(event, context):\n    return {'n': event['n'], 'pid': os.getpid()}\n";

struct Ric {
    python: PathBuf,
    dir: PathBuf,
}

impl InstanceLauncher for Ric {
    fn launch(&self, api: SocketAddr, _instance: u64) -> std::io::Result<Child> {
        Command::new(&self.python)
            .args(["-m", "awslambdaric", "app.handler"])
            .current_dir(&self.dir)
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .env("PYTHONPATH", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    }
}

fn start(dir: &std::path::Path, pinned: bool) -> Pool {
    let config = FunctionConfig::from_config(
        "bench",
        &serde_json::json!({"pinned": pinned, "maxInstancesCount": 1, "timeoutInSeconds": 30}),
    )
    .expect("config");
    Pool::start(
        PoolOptions {
            component: "bench".into(),
            function_arn: "arn:aws:lambda:::function:bench".into(),
            config,
        },
        Arc::new(Ric {
            // Absolute: the instance runs in the handler directory.
            python: std::fs::canonicalize(".venv/bin/python")
                .expect(".venv/bin/python (run from the repository root)"),
            dir: dir.to_path_buf(),
        }),
    )
}

async fn call(pool: &Pool, n: usize) -> (Duration, i64) {
    let t = Instant::now();
    let r = pool
        .invoke(
            format!("{{\"n\": {n}}}").into_bytes(),
            Some("bench/t".into()),
        )
        .await
        .expect("invoke");
    let Outcome::Ok(body) = r.outcome else {
        panic!("invocation failed: {:?}", r.outcome)
    };
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    (t.elapsed(), v["pid"].as_i64().unwrap_or_default())
}

fn rss_kib(pid: i64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("app.py"), HANDLER).expect("write handler");

    let pinned = start(dir.path(), true);
    let (cold, pid) = call(&pinned, 0).await;
    println!(
        "pinned cold start (pool start -> first result): {:.1} ms",
        cold.as_secs_f64() * 1e3
    );
    for i in 0..20 {
        call(&pinned, i).await;
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        lat.push(call(&pinned, i).await.0);
    }
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "warm invocation, {n} sequential: p50 {:.0} us, p99 {:.0} us",
        pct(0.50),
        pct(0.99)
    );
    println!(
        "pinned instance RSS (python + awslambdaric): {} KiB",
        rss_kib(pid)
    );
    pinned.stop().await;

    let on_demand = start(dir.path(), false);
    let (cold, _) = call(&on_demand, 0).await;
    println!(
        "on-demand instance cold start: {:.1} ms",
        cold.as_secs_f64() * 1e3
    );
    on_demand.stop().await;
}
