//! WASM functions through a node composed in-process: `lichen.wasm` components deployed from
//! recipes with WAT-built modules, triggered from the bus and invoked over the control
//! seam; the core stays up through CPU and memory limits and refused publishes, and a
//! malformed module fails its deployment naming it.
#![cfg(feature = "wasm")]

#[path = "function_support/mod.rs"]
mod function_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use function_support::*;
use lichen_bus::{Message, Payload, SubscribeOptions};
use lichen_core::control::{ControlReply, ControlRequest, FunctionResult};
use lichen_model::deployment::DeploymentStatus;
use lichen_node::services::wasm::WasmService;
use lichen_node::{Node, Service};
use serde_json::json;

const LOOP: &str = r#"
  (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0))"#;

const GROW: &str = r#"
  (func (export "lichen_handle") (param i32 i32 i32 i32) (result i32)
    (block $refused
      (loop $more
        (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
    (unreachable))"#;

/// Publishes to out/secret (no policy allows it) and says what the host answered.
const SNEAKY: &str = r#"
  (data (i32.const 0) "out/secret")
  (data (i32.const 16) "denied")
  (data (i32.const 32) "published")
  (func (export "lichen_handle") (param i32) (param i32) (param $pp i32) (param $pl i32) (result i32)
    (global.set $bump (i32.const 4096))
    (if (result i32) (i32.eq (call $publish (i32.const 0) (i32.const 10) (local.get $pp) (local.get $pl)) (i32.const -1))
      (then (drop (call $set_result (i32.const 16) (i32.const 6))) (i32.const 0))
      (else (drop (call $set_result (i32.const 32) (i32.const 9))) (i32.const 0))))"#;

async fn start(dir: &Path) -> (Node, Arc<WasmService>) {
    let wasm = Arc::new(WasmService::new());
    let node = start_node(dir.join("root"), vec![wasm.clone() as Arc<dyn Service>]).await;
    (node, wasm)
}

async fn invoke(wasm: &WasmService, component: &str, payload: &str) -> FunctionResult {
    match wasm
        .control(ControlRequest::FunctionInvoke {
            component: component.into(),
            payload: payload.into(),
            topic: Some("direct/call".into()),
        })
        .await
    {
        Ok(ControlReply::FunctionResult(r)) => r,
        other => panic!("invoke {component}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_publish_are_limited_and_the_core_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let echo = "com.test.WasmEcho";
    let looping = "com.test.WasmLoop";
    let grow = "com.test.WasmGrow";
    let sneaky = "com.test.WasmSneaky";
    write_wasm_component(
        dir.path(),
        echo,
        &wasm_module(WASM_ECHO),
        json!({
            "pubsubTopics": {"0": {"topic": "in/+", "type": "PUB_SUB"}},
            "accessControl": {"aws.greengrass.ipc.pubsub": {"p": {
                "operations": ["aws.greengrass#PublishToTopic"], "resources": ["out/echo"]}}}
        }),
    );
    write_wasm_component(
        dir.path(),
        looping,
        &wasm_module(LOOP),
        json!({"fuelPerInvocation": 300000}),
    );
    write_wasm_component(
        dir.path(),
        grow,
        &wasm_module(GROW),
        json!({"memoryLimitBytes": 262144}),
    );
    write_wasm_component(
        dir.path(),
        sneaky,
        &wasm_module(SNEAKY),
        json!({"accessControl": {"aws.greengrass.ipc.pubsub": {"p": {
            "operations": ["aws.greengrass#PublishToTopic"], "resources": ["out/echo"]}}}}),
    );
    let (node, wasm) = start(dir.path()).await;
    let record = deploy(&node, dir.path(), &[echo, looping, grow, sneaky]).await;
    assert_eq!(record.status, DeploymentStatus::Succeeded, "{record:?}");

    // Triggered from the bus: one publish per event, JSON kept JSON.
    let out = node
        .bus()
        .subscribe(SubscribeOptions::new("out/#", "test"))
        .unwrap();
    for n in 0..3 {
        node.bus()
            .publish(Message::new(
                format!("in/{n}"),
                Payload::Json(json!({"n": n})),
                "component:com.test.Sender",
            ))
            .unwrap();
    }
    for n in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(10), out.recv())
            .await
            .expect("the function published")
            .unwrap();
        assert_eq!(&*m.topic, "out/echo");
        assert_eq!(m.payload, Payload::Json(json!({"n": n})));
        assert_eq!(&*m.origin, "component:com.test.WasmEcho");
    }

    // Invoked directly: the result is the topic it was given.
    let r = invoke(&wasm, echo, "{\"direct\":true}").await;
    assert_eq!(r.result, "direct/call");
    assert!(!r.error);
    let m = tokio::time::timeout(Duration::from_secs(10), out.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, Payload::Json(json!({"direct": true})));

    // The endless loop stops at the CPU limit, twice (a fresh instance each time).
    for _ in 0..2 {
        let r = invoke(&wasm, looping, "{}").await;
        assert!(r.error, "{r:?}");
        assert!(r.result.contains("\"cpu\""), "{r:?}");
    }
    let r = invoke(&wasm, grow, "{}").await;
    assert!(r.error && r.result.contains("\"memory\""), "{r:?}");
    let r = invoke(&wasm, sneaky, "{}").await;
    assert_eq!(r.result, "denied");
    // Nothing reached out/secret; the echo still answers after all of that.
    assert!(out.try_recv().is_none());
    assert_eq!(invoke(&wasm, echo, "{}").await.result, "direct/call");

    // A component the service does not run is not found (another service may run it).
    let other = wasm
        .control(ControlRequest::FunctionInvoke {
            component: "com.test.Nope".into(),
            payload: "{}".into(),
            topic: None,
        })
        .await;
    assert!(
        matches!(other, Err(lichen_core::CoreError::ComponentNotFound(ref n)) if n == "com.test.Nope")
    );

    // Metrics reach component details.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = invoke(&wasm, looping, "{}").await;
    let details = node.handle().component_details(looping).unwrap();
    let metric = |name: &str| {
        details
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    };
    assert!(
        metric("Timeouts").unwrap_or(0.0) >= 2.0,
        "{:?}",
        details.metrics
    );
    assert!(metric("Invocations").unwrap_or(0.0) >= 2.0);
    let log = std::fs::read_to_string(
        node.handle()
            .layout()
            .root()
            .join("logs/com.test.WasmLoop.log"),
    )
    .unwrap_or_default();
    assert!(
        log.contains("CPU limit"),
        "the failure is in the component log: {log}"
    );

    // Over the real control socket (what `lichen function invoke` uses).
    let root = node.handle().layout().root().to_path_buf();
    let reply = invoke_over_control(&root, "com.test.WasmEcho", "{}", Some("via/socket")).await;
    match reply {
        Ok(ControlReply::FunctionResult(r)) => assert_eq!(r.result, "via/socket"),
        other => panic!("control socket: {other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_module_fails_its_deployment_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "com.test.WasmBroken";
    write_wasm_component(
        dir.path(),
        broken,
        b"\0asm\x01\0\0\0not a module",
        json!({}),
    );
    let (node, wasm) = start(dir.path()).await;
    let record = deploy(&node, dir.path(), &[broken]).await;
    assert_eq!(record.status, DeploymentStatus::Failed, "{record:?}");
    let text = format!("{record:?}");
    println!("{text}");
    assert!(text.contains(broken), "names the component: {text}");
    assert!(
        text.contains("not a valid WebAssembly module") && text.contains("function.wasm"),
        "names the module: {text}"
    );
    // The core and the service are still up.
    assert!(
        wasm.control(ControlRequest::FunctionInvoke {
            component: broken.into(),
            payload: "{}".into(),
            topic: None
        })
        .await
        .is_err()
    );
    node.shutdown().await;
}
