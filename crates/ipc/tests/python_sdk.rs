//! The real AWS SDK (awsiotsdk GreengrassCoreIPCClientV2, Python) against the IPC server of an
//! in-process core. The same script runs as a deployed component in the end-to-end suite.
//!
//! Needs the test venv: `scripts/setup-test-deps` creates it and `scripts/test` sets
//! LICHEN_TEST_PYTHON. Without either, the test says so and passes vacuously.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Harness, now_ms};
use serde_json::{Value, json};

pub const CLIENT: &str = "com.lichen.test.IpcClient";
pub const PEER: &str = "com.lichen.test.IpcPeer";

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LICHEN_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "LICHEN_TEST_PYTHON={} does not exist",
            p.display()
        );
        return Some(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.exists().then_some(venv)
}

fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

/// Checks every mode runs, by name.
const COMMON_CHECKS: &[&str] = &[
    "connect",
    "pubsub_json_roundtrip",
    "pubsub_binary_roundtrip",
    "pubsub_large_message",
    "v1_client_publish_subscribe",
    "pubsub_wildcard_receive_modes",
    "pubsub_unauthorized_publish",
    "pubsub_unauthorized_subscribe",
    "pubsub_invalid_topic",
    "pubsub_invalid_filter",
    "stream_opened_received_closed",
    "get_configuration_own",
    "get_configuration_other_component",
    "get_configuration_unknown_component",
    "get_configuration_unknown_key",
    "update_configuration_and_subscribe",
    "update_configuration_stale_timestamp",
    "update_configuration_access_control_refused",
    "update_state_running",
    "update_state_invalid",
    "list_components",
    "get_component_details",
    "get_component_details_unknown",
    "restart_component_unknown",
    "stop_component_unknown",
    "pause_component_unauthorized",
    "pause_resume_component",
    "create_local_deployment_bad_recipe_dir",
    "get_local_deployment_status_unknown",
    "cancel_local_deployment_unknown",
    "list_local_deployments",
    "validate_authorization_token",
    "validate_authorization_token_invalid",
    "put_component_metric",
    "put_component_metric_invalid",
    "unsupported_operation",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_exercises_every_operation() {
    let Some(python) = python() else {
        eprintln!(
            "SKIPPED: no Python venv (run scripts/setup-test-deps or set LICHEN_TEST_PYTHON)"
        );
        return;
    };
    let h = Harness::start().await;
    let acl: Value = serde_json::from_str(
        &std::fs::read_to_string(py_dir().join("access_control.json")).unwrap(),
    )
    .unwrap();
    let token = h.component(CLIENT, acl);
    h.handle
        .update_configuration(CLIENT, &["testKey".into()], now_ms(), json!("hello"))
        .unwrap();
    h.handle
        .update_configuration(PEER, &[], now_ms(), json!({"peerKey": "peer-value"}))
        .unwrap();
    let results = h.dir.path().join("results.json");
    let child = tokio::process::Command::new(&python)
        .arg(py_dir().join("ipc_component.py"))
        .env("SVCUID", &token)
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", &token)
        .env(
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
            h.server.socket_path(),
        )
        .env("LICHEN_IPC_TEST_MODE", "inprocess")
        .env("LICHEN_IPC_TEST_PEER", PEER)
        .env("LICHEN_IPC_TEST_RESULTS", &results)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .expect("python client finished in time")
        .unwrap();
    let log = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&results).unwrap_or_else(|e| panic!("no results ({e})\n{log}")),
    )
    .unwrap();
    let checks = report["checks"].as_array().unwrap();
    for name in COMMON_CHECKS {
        let c = checks
            .iter()
            .find(|c| c["name"] == *name)
            .unwrap_or_else(|| panic!("check {name} did not run\n{log}"));
        assert_eq!(c["ok"], true, "check {name} failed: {}\n{log}", c["detail"]);
    }
    eprintln!("{log}");
    assert!(checks.iter().all(|c| c["ok"] == true), "{log}");
    assert!(out.status.success(), "{log}");
    // The connection and its streams are gone once the client exits.
    let bus = h.handle.bus().clone();
    common::eventually("python subscriptions dropped", || {
        bus.stats().subscriptions == 0
    })
    .await;
}
