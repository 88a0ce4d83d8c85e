//! The pool driving real Python handlers under `awslambdaric` (the repo's .venv).
//! Skips with a message when the .venv or awslambdaric is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use lichen_lambda::{FunctionConfig, InstanceLauncher, InvokeError, Outcome, Pool, PoolOptions};
use tokio::process::{Child, Command};

const HANDLER: &str = r#"
import json, os, sys, time
STARTED = time.time()
print("module loaded", os.getpid(), flush=True)

def handler(event, context):
    kind = event.get("kind") if isinstance(event, dict) else None
    if kind == "sleep":
        time.sleep(event["seconds"])
    if kind == "crash":
        os._exit(3)
    if kind == "raise":
        raise ValueError("asked to fail")
    subject = None
    if context.client_context is not None:
        subject = context.client_context.custom.get("subject")
    return {"event": event, "subject": subject, "pid": os.getpid(), "started": STARTED,
            "request_id": context.aws_request_id,
            "remaining_ms": context.get_remaining_time_in_millis()}
"#;

fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import awslambdaric"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: .venv with awslambdaric missing (run scripts/setup-test-deps)");
        return None;
    }
    Some(python)
}

struct Ric {
    python: PathBuf,
    dir: PathBuf,
}

impl InstanceLauncher for Ric {
    fn launch(&self, runtime_api: SocketAddr, _instance: u64) -> std::io::Result<Child> {
        Command::new(&self.python)
            .args(["-m", "awslambdaric", "app.handler"])
            .current_dir(&self.dir)
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string())
            .env("PYTHONPATH", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    }
}

fn pool(dir: &Path, python: PathBuf, config: serde_json::Value) -> Pool {
    pool_with(dir, python, config, HANDLER)
}

fn pool_with(dir: &Path, python: PathBuf, config: serde_json::Value, handler: &str) -> Pool {
    std::fs::write(dir.join("app.py"), handler).unwrap();
    let config = FunctionConfig::from_config("com.example.Fn", &config).unwrap();
    Pool::start(
        PoolOptions {
            component: "com.example.Fn".into(),
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:Fn:1".into(),
            config,
        },
        Arc::new(Ric {
            python,
            dir: dir.to_path_buf(),
        }),
    )
}

fn ok_json(outcome: &Outcome) -> serde_json::Value {
    match outcome {
        Outcome::Ok(body) => serde_json::from_slice(body).unwrap(),
        other => panic!("expected a result, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_handler_keeps_state_times_out_survives_a_crash_and_bounds_its_queue() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(
        dir.path(),
        python,
        serde_json::json!({"pinned": true, "timeoutInSeconds": 2, "maxQueueSize": 2}),
    );
    let first = pool
        .invoke(br#"{"n": 1}"#.to_vec(), Some("sensors/1".into()))
        .await
        .unwrap();
    let a = ok_json(&first.outcome);
    assert_eq!(a["event"]["n"], 1);
    assert_eq!(a["subject"], "sensors/1");
    assert!(a["remaining_ms"].as_i64().unwrap() > 0 && a["remaining_ms"].as_i64().unwrap() <= 2000);
    let second = pool.invoke(br#"{"n": 2}"#.to_vec(), None).await.unwrap();
    let b = ok_json(&second.outcome);
    // Pinned: the same process, its module-level code ran once.
    assert_eq!(a["pid"], b["pid"]);
    assert_eq!(a["started"], b["started"]);
    assert_ne!(a["request_id"], b["request_id"]);
    assert!(b["subject"].is_null());

    // A handler error is the runtime client's error document.
    let raised = pool
        .invoke(br#"{"kind": "raise"}"#.to_vec(), None)
        .await
        .unwrap();
    match &raised.outcome {
        Outcome::HandlerError(doc) => {
            assert!(String::from_utf8_lossy(doc).contains("asked to fail"))
        }
        other => panic!("{other:?}"),
    }

    // Not JSON for a json function: refused naming the component.
    match pool.invoke(b"not json".to_vec(), None).await {
        Err(e @ InvokeError::NotJson { .. }) => assert!(e.to_string().contains("com.example.Fn")),
        other => panic!("{other:?}"),
    }

    // Timeout: the invocation fails after ~2 s and the instance is replaced.
    let t = pool
        .invoke(br#"{"kind": "sleep", "seconds": 30}"#.to_vec(), None)
        .await
        .unwrap();
    assert_eq!(t.outcome, Outcome::Timeout);
    assert!(
        t.duration >= Duration::from_secs(2) && t.duration < Duration::from_secs(5),
        "{:?}",
        t.duration
    );
    let after = ok_json(
        &pool
            .invoke(br#"{"n": 3}"#.to_vec(), None)
            .await
            .unwrap()
            .outcome,
    );
    assert_ne!(after["pid"], a["pid"], "a new instance after the timeout");

    // A crash mid-invocation fails that invocation; the function keeps serving.
    let crashed = pool
        .invoke(br#"{"kind": "crash"}"#.to_vec(), None)
        .await
        .unwrap();
    assert!(
        matches!(crashed.outcome, Outcome::Crashed(_)),
        "{:?}",
        crashed.outcome
    );
    let again = ok_json(
        &pool
            .invoke(br#"{"n": 4}"#.to_vec(), None)
            .await
            .unwrap()
            .outcome,
    );
    assert_eq!(again["event"]["n"], 4);

    // Full queue: one running, two queued, the fourth is rejected and counted.
    let mut running = Vec::new();
    for _ in 0..3 {
        let p = pool.clone();
        running.push(tokio::spawn(async move {
            p.invoke(br#"{"kind": "sleep", "seconds": 0.5}"#.to_vec(), None)
                .await
        }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    match pool.invoke(br#"{"n": 5}"#.to_vec(), None).await {
        Err(InvokeError::QueueFull { max, .. }) => assert_eq!(max, 2),
        other => panic!("expected a full queue, got {other:?}"),
    }
    for r in running {
        assert!(matches!(r.await.unwrap().unwrap().outcome, Outcome::Ok(_)));
    }
    let stats = pool.stats();
    assert_eq!(stats.rejected, 1);
    assert_eq!(stats.timeouts, 1);
    assert_eq!(stats.crashes, 1);
    assert_eq!(stats.errors, 3);
    pool.stop().await;
    assert_eq!(pool.stats().instances, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_scales_to_max_instances_and_stops_idle_ones() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pool = pool(
        dir.path(),
        python,
        serde_json::json!({"pinned": false, "timeoutInSeconds": 20, "maxInstancesCount": 2,
                           "maxIdleTimeInSeconds": 2, "maxQueueSize": 10}),
    );
    assert_eq!(
        pool.stats().instances,
        0,
        "on-demand starts nothing up front"
    );
    let mut calls = Vec::new();
    for _ in 0..4 {
        let p = pool.clone();
        calls.push(tokio::spawn(async move {
            p.invoke(br#"{"kind": "sleep", "seconds": 1}"#.to_vec(), None)
                .await
        }));
    }
    let mut pids = std::collections::BTreeSet::new();
    for c in calls {
        let r = c.await.unwrap().unwrap();
        pids.insert(ok_json(&r.outcome)["pid"].as_i64().unwrap());
    }
    assert_eq!(
        pids.len(),
        2,
        "four slow invocations ran on exactly maxInstancesCount instances"
    );
    assert!(pool.stats().instances <= 2);
    // Idle stop after maxIdleTimeInSeconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.stats().instances > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pool.stats().instances, 0, "idle instances stopped");
    for pid in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone"
        );
    }
    // And a new invocation starts a fresh one.
    let r = pool
        .invoke(br#"{"n": 9}"#.to_vec(), Some("x/y".into()))
        .await
        .unwrap();
    assert_eq!(ok_json(&r.outcome)["subject"], "x/y");
    pool.stop().await;
}

/// The first instance's module code hangs (it never reaches the runtime loop); the marker it
/// removes lets its replacement start normally.
const HANGS_ONCE: &str = r#"
import os, time
if os.path.exists("hang-once"):
    os.remove("hang-once")
    time.sleep(3600)

def handler(event, context):
    return {"pid": os.getpid()}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_silent_past_status_timeout_is_replaced() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hang-once"), "").unwrap();
    let started = std::time::Instant::now();
    let pool = pool_with(
        dir.path(),
        python,
        serde_json::json!({"pinned": true, "timeoutInSeconds": 5, "statusTimeoutInSeconds": 2}),
        HANGS_ONCE,
    );
    // Queued while the first instance hangs; served by its replacement.
    let r = pool.invoke(b"{}".to_vec(), None).await.unwrap();
    let elapsed = started.elapsed();
    assert!(matches!(r.outcome, Outcome::Ok(_)), "{:?}", r.outcome);
    assert!(!dir.path().join("hang-once").exists());
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
    let stats = pool.stats();
    assert_eq!(stats.unresponsive, 1, "{stats:?}");
    assert_eq!(stats.instances, 1);
    // A responsive instance idle for longer than statusTimeout is not touched: it is waiting.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = pool.invoke(b"{}".to_vec(), None).await.unwrap();
    assert_eq!(ok_json(&again.outcome)["pid"], ok_json(&r.outcome)["pid"]);
    assert_eq!(pool.stats().unresponsive, 1);
    pool.stop().await;
}
