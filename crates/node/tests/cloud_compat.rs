//! The cloud link as a user pointing lichen at a standard broker sees it: Debian's mosquitto
//! with TLS and required client certificates is the cloud.
//!
//! - a component deployed with awsiotsdk's GreengrassCoreIPCClientV2 publishes to and
//!   subscribes on IoT Core with the MQTT 5 properties; one without an
//!   `aws.greengrass.ipc.mqttproxy` policy is refused (UnauthorizedError);
//! - the MQTT bridge's IotCore leg: LocalMqtt → IotCore, IotCore → LocalMqtt, Pubsub → IotCore,
//!   IotCore → Pubsub, with mosquitto_pub/sub on the local broker and on the cloud;
//! - after the cloud restarts (every session lost), the subscriptions (the bridge's and a
//!   component's SubscribeToIoTCore stream) are back and messages flow both ways.
//!
//! Skips with a message when mosquitto or the .venv python is missing.

mod cloud_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cloud_support::*;
use lichen_model::deployment::{DeploymentRequest, DeploymentStatus};
use lichen_node::{BridgeService, BrokerService, CloudService, Node, Service};
use lichen_pki::LocalCa;
use serde_json::{Value, json};

const BROKER: &str =
    "posixUser: root\nbroker:\n  listeners:\n    - { kind: tcp, bind: \"127.0.0.1:0\" }\n";

struct Device {
    node: Node,
    cloud: Arc<CloudService>,
    broker: Arc<BrokerService>,
    bridge: Arc<BridgeService>,
}

async fn device(dir: &Path, ca: &LocalCa, endpoint: std::net::SocketAddr, thing: &str) -> Device {
    device_with(dir, ca, endpoint, thing, 30).await
}

async fn device_with(
    dir: &Path,
    ca: &LocalCa,
    endpoint: std::net::SocketAddr,
    thing: &str,
    keep_alive_secs: u16,
) -> Device {
    let config = bundle(dir, ca, thing, endpoint, BROKER);
    let broker = Arc::new(BrokerService::new());
    let cloud = Arc::new(CloudService::with_options(
        Some(broker.clone()),
        fast(keep_alive_secs),
    ));
    let bridge = Arc::new(BridgeService::new(broker.clone(), cloud.clone()));
    let services: Vec<Arc<dyn Service>> = vec![broker.clone(), cloud.clone(), bridge.clone()];
    let node = start_node(&dir.join("root"), &config, services).await;
    Device {
        node,
        cloud,
        broker,
        bridge,
    }
}

async fn local_broker(broker: &BrokerService) -> std::net::SocketAddr {
    broker
        .local_addrs()
        .await
        .iter()
        .find(|l| l.kind == lichen_broker::ListenerKind::Tcp)
        .expect("the local broker's tcp listener")
        .addr
}

fn allow_all_devices() -> Value {
    json!({
        "formatVersion": "2021-03-05",
        "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
        "policies": {"all": {"s": {"operations": ["*"], "resources": ["*"]}}}
    })
}

fn recipe(name: &str, python: &Path, mode: &str, policy: Option<Value>) -> Value {
    let mut r = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!("MODE={mode} exec {} -u {{artifacts:path}}/iot_core_component.py", python.display())},
            "Artifacts": [{"URI": format!("s3://test/{name}/iot_core_component.py")}]
        }]
    });
    if let Some(p) = policy {
        r["ComponentConfiguration"] =
            json!({"DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.mqttproxy": p}}});
    }
    r
}

fn read_json(path: &Path) -> Option<Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
}

async fn deploy(node: &Node, recipes: &Path, artifacts: &Path, roots: &[&str]) {
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
    let mut last = None;
    for _ in 0..600 {
        let r = node.handle().deployment(&id).unwrap();
        if r.status.is_final() {
            assert_eq!(r.status, DeploymentStatus::Succeeded, "{r:?}");
            return;
        }
        last = Some(r);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("deployment not final: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awsiotsdk_component_talks_to_iot_core_with_mqtt5_properties_and_needs_mqttproxy() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let Some(mut m) = Mosquitto::start(dir.path(), &ca) else {
        return;
    };
    let d = device(dir.path(), &ca, m.tls, "gw-sdk").await;
    let link = d.cloud.link().unwrap();
    wait_link(&link, true, Duration::from_secs(15)).await;

    let recipes = dir.path().join("recipes");
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(&recipes).unwrap();
    let allowed = "com.test.IotCoreSdk";
    let denied = "com.test.IotCoreDenied";
    for (name, mode, policy) in [
        (
            allowed,
            "allowed",
            Some(json!({"c:1": {
                "operations": ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"],
                "resources": ["up/#", "down/#"]}})),
        ),
        (denied, "denied", None),
    ] {
        let art = artifacts.join(name).join("1.0.0");
        std::fs::create_dir_all(&art).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/iot_core_component.py"),
            art.join("iot_core_component.py"),
        )
        .unwrap();
        std::fs::write(
            recipes.join(format!("{name}.json")),
            recipe(name, &python, mode, policy).to_string(),
        )
        .unwrap();
    }

    // The cloud side: a subscriber on the plain listener, printing the MQTT 5 properties.
    let up = Sub::start(m.tcp, "up/#", 1, &["-F", "%t|%p|%P|%E|%C|%R|%F"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    deploy(&d.node, &recipes, &artifacts, &[allowed, denied]).await;

    let layout = d.node.handle().layout().clone();
    let work = layout.work_dir(allowed);
    eventually("the component subscribed", Duration::from_secs(30), || {
        work.join("ready").exists() || work.join("crashed.json").exists()
    })
    .await;
    assert!(
        !work.join("crashed.json").exists(),
        "{:?}\n{}",
        read_json(&work.join("crashed.json")),
        std::fs::read_to_string(layout.component_log(allowed)).unwrap_or_default()
    );

    // Component → cloud, every property the SDK sets.
    let lines = tokio::task::spawn_blocking(move || up.lines())
        .await
        .unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let fields: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(fields[0], "up/telemetry");
    assert_eq!(fields[1], "21.5");
    assert_eq!(fields[2], "unit:C");
    let expiry: u32 = fields[3].parse().expect("message expiry interval");
    assert!(expiry > 0 && expiry <= 120, "{expiry}");
    assert_eq!(fields[4], "text/plain");
    assert_eq!(fields[5], "down/answers");
    assert_eq!(fields[6], "1", "payload format indicator");
    // Outside its policy's resources.
    eventually(
        "the forbidden publish answered",
        Duration::from_secs(10),
        || work.join("published.json").exists(),
    )
    .await;
    assert_eq!(
        read_json(&work.join("published.json")).unwrap()["forbidden"],
        "UnauthorizedError"
    );

    // Cloud → component with properties (mosquitto_pub sets them).
    publish(
        m.tcp,
        "cloud-app",
        "down/answers",
        "ok",
        &[
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "content-type",
            "application/json",
            "-D",
            "publish",
            "correlation-data",
            "req-1",
            "-D",
            "publish",
            "response-topic",
            "up/replies",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
            "-D",
            "publish",
            "message-expiry-interval",
            "90",
        ],
    );
    let received = work.join("received.jsonl");
    eventually("the component received", Duration::from_secs(10), || {
        std::fs::read_to_string(&received).is_ok_and(|s| s.contains('\n'))
    })
    .await;
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&received)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["topic"], "down/answers");
    assert_eq!(first["payload"], "ok");
    assert_eq!(first["userProperties"], json!([["k", "v"]]));
    assert_eq!(first["contentType"], "application/json");
    assert_eq!(first["correlationData"], "req-1");
    assert_eq!(first["responseTopic"], "up/replies");
    assert_eq!(first["payloadFormat"], "1");
    let e = first["messageExpiryIntervalSeconds"].as_u64().unwrap();
    assert!(e > 0 && e <= 90, "{e}");

    // The cloud restarts (its sessions gone): the component's IPC stream still delivers, as
    // the link subscribed again.
    m.stop();
    wait_link(&link, false, Duration::from_secs(10)).await;
    m.restart();
    wait_link(&link, true, Duration::from_secs(20)).await;
    publish(m.tcp, "cloud-app", "down/after-restart", "again", &[]);
    eventually(
        "the component received after the restart",
        Duration::from_secs(10),
        || std::fs::read_to_string(&received).is_ok_and(|s| s.matches('\n').count() >= 2),
    )
    .await;
    let second: Value = serde_json::from_str(
        std::fs::read_to_string(&received)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(second["topic"], "down/after-restart");
    assert_eq!(second["payload"], "again");

    // No mqttproxy policy: both operations refused.
    let dwork = layout.work_dir(denied);
    eventually(
        "the denied component tried",
        Duration::from_secs(30),
        || dwork.join("denied.json").exists(),
    )
    .await;
    let out = read_json(&dwork.join("denied.json")).unwrap();
    assert_eq!(out["publish"], "UnauthorizedError", "{out}");
    assert_eq!(out["subscribe"], "UnauthorizedError", "{out}");

    assert_eq!(
        d.bridge
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    d.node.shutdown().await;
}

/// Every leg of the Bridge's IotCore mappings, then the same after the cloud restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_iotcore_legs_relay_both_ways_and_resubscribe_after_a_cloud_restart() {
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let Some(mut m) = Mosquitto::start(dir.path(), &ca) else {
        return;
    };
    let d = device(dir.path(), &ca, m.tls, "gw-bridge").await;
    let link = d.cloud.link().unwrap();
    wait_link(&link, true, Duration::from_secs(15)).await;
    let handle = d.node.handle().clone();
    handle
        .update_configuration(
            "aws.greengrass.clientdevices.Auth",
            &["deviceGroups".into()],
            1,
            allow_all_devices(),
        )
        .unwrap();
    handle
        .update_configuration(
            "aws.greengrass.clientdevices.mqtt.Bridge",
            &["mqttTopicMapping".into()],
            1,
            json!({
                "toCloud": {"topic": "sensors/+/temp", "source": "LocalMqtt", "target": "IotCore",
                            "targetTopicPrefix": "fleet/"},
                "fromCloud": {"topic": "cmd/#", "source": "IotCore", "target": "LocalMqtt"},
                "busToCloud": {"topic": "app/out/#", "source": "Pubsub", "target": "IotCore"},
                "cloudToBus": {"topic": "app/in/#", "source": "IotCore", "target": "Pubsub",
                               "targetTopicPrefix": "cloud/"},
                // A loop if the bridge re-bridged its own messages: cloud → local → cloud.
                "echo": {"topic": "cmd/#", "source": "LocalMqtt", "target": "IotCore"}
            }),
        )
        .unwrap();
    let local = local_broker(&d.broker).await;
    // The node applies configuration asynchronously: wait for both cloud subscriptions.
    eventually(
        "the bridge's cloud subscriptions",
        Duration::from_secs(15),
        || link.subscriptions() >= 2,
    )
    .await;
    // A component on the bus (IotCore → Pubsub arrives here, Pubsub → IotCore leaves here).
    let bus = handle.bus().clone();
    let from_cloud = bus
        .subscribe(lichen_bus::SubscribeOptions::new(
            "cloud/#",
            "component:test",
        ))
        .unwrap();

    for (i, round) in ["before", "after"].into_iter().enumerate() {
        if round == "after" {
            // The cloud restarts: every session and subscription is gone on its side.
            m.stop();
            wait_link(&link, false, Duration::from_secs(10)).await;
            m.restart();
            wait_link(&link, true, Duration::from_secs(20)).await;
        }
        // LocalMqtt → IotCore, with the device's user property kept.
        let up = Sub::start(m.tcp, "fleet/#", 1, &["-F", "%t|%p|%P"]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        publish(
            local,
            "sensor-1",
            "sensors/s1/temp",
            &format!("21-{round}"),
            &["-D", "publish", "user-property", "unit", "C"],
        );
        let lines = tokio::task::spawn_blocking(move || up.lines())
            .await
            .unwrap();
        assert_eq!(
            lines,
            [format!("fleet/sensors/s1/temp|21-{round}|unit:C")],
            "{round}"
        );

        // IotCore → LocalMqtt, and not back to the cloud through the `echo` mapping.
        let down = Sub::start(local, "cmd/#", 1, &["-F", "%t|%p|%P"]);
        let echo = Sub::start(m.tcp, "cmd/#", 2, &["-F", "%t|%p", "-W", "3"]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        publish(
            m.tcp,
            "cloud-app",
            "cmd/s1/reboot",
            &format!("now-{round}"),
            &["-D", "publish", "user-property", "by", "ops"],
        );
        let lines = tokio::task::spawn_blocking(move || down.lines())
            .await
            .unwrap();
        assert_eq!(
            lines,
            [format!("cmd/s1/reboot|now-{round}|by:ops")],
            "{round}"
        );
        let echoed = tokio::task::spawn_blocking(move || echo.lines())
            .await
            .unwrap();
        assert_eq!(
            echoed,
            [format!("cmd/s1/reboot|now-{round}")],
            "{round}: the cloud sees its own message once, never bridged back"
        );

        // IotCore → Pubsub, with the prefix.
        publish(
            m.tcp,
            "cloud-app",
            "app/in/config",
            &format!("cfg-{round}"),
            &[],
        );
        let got = tokio::time::timeout(Duration::from_secs(10), from_cloud.recv())
            .await
            .expect("IotCore → Pubsub in time")
            .unwrap();
        assert_eq!(&*got.topic, "cloud/app/in/config");
        assert_eq!(
            &got.payload.to_bytes()[..],
            format!("cfg-{round}").as_bytes()
        );
        assert_eq!(&*got.origin, lichen_node::services::cloud::IOTCORE_ORIGIN);

        // Pubsub → IotCore.
        let out = Sub::start(m.tcp, "app/out/#", 1, &["-F", "%t|%p"]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        bus.publish(lichen_bus::Message::new(
            "app/out/result",
            lichen_bus::Payload::Binary(format!("res-{round}").into_bytes().into()),
            "component:test",
        ))
        .unwrap();
        let lines = tokio::task::spawn_blocking(move || out.lines())
            .await
            .unwrap();
        assert_eq!(lines, [format!("app/out/result|res-{round}")], "{round}");
        // Both messages to the cloud acknowledged before the cloud is stopped (a PUBACK lost
        // to the stop would count the message as not relayed, although it arrived).
        let stats = d.bridge.stats();
        eventually("this round's PUBACKs", Duration::from_secs(5), || {
            stats.to_cloud.load(Ordering::Relaxed) >= 2 * (i as u64 + 1)
        })
        .await;
    }
    let stats = d.bridge.stats();
    assert_eq!(
        stats.dropped.load(Ordering::Relaxed),
        0,
        "{:?}",
        stats.last_drop.lock().unwrap()
    );
    // Counted once the cloud's PUBACK is back, which may be after the subscriber printed.
    eventually(
        "the relayed messages counted",
        Duration::from_secs(5),
        || {
            stats.to_cloud.load(Ordering::Relaxed) >= 4
                && stats.from_cloud.load(Ordering::Relaxed) >= 4
        },
    )
    .await;

    // Removing the mappings stops the legs: a device message no longer reaches the cloud.
    handle
        .update_configuration(
            "aws.greengrass.clientdevices.mqtt.Bridge",
            &["mqttTopicMapping".into()],
            2,
            Value::Null,
        )
        .unwrap();
    eventually(
        "the bridge's cloud subscriptions dropped",
        Duration::from_secs(10),
        || link.subscriptions() == 0,
    )
    .await;
    let up = Sub::start(m.tcp, "fleet/#", 1, &["-W", "2"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    publish(local, "sensor-1", "sensors/s1/temp", "late", &[]);
    let lines = tokio::task::spawn_blocking(move || up.lines())
        .await
        .unwrap();
    assert!(lines.is_empty(), "{lines:?}");
    d.node.shutdown().await;
}

/// Half-open: a proxy between the core and the cloud stops forwarding (sockets stay open).
/// The core notices within its keep-alive bound, device messages bridged to IotCore meanwhile
/// are spooled, and they arrive, in order, once the proxy forwards again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_link_spools_bridged_messages_and_drains_them_when_it_forwards_again() {
    use std::sync::atomic::Ordering;

    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let Some(m) = Mosquitto::start(dir.path(), &ca) else {
        return;
    };
    let (forward_tx, forward_rx) = tokio::sync::watch::channel(true);
    let endpoint = proxy(m.tls, forward_rx).await;
    let keep_alive = Duration::from_secs(2);
    let d = device_with(dir.path(), &ca, endpoint, "gw-halfopen", 2).await;
    let link = d.cloud.link().unwrap();
    wait_link(&link, true, Duration::from_secs(15)).await;
    let handle = d.node.handle().clone();
    handle
        .update_configuration(
            "aws.greengrass.clientdevices.Auth",
            &["deviceGroups".into()],
            1,
            allow_all_devices(),
        )
        .unwrap();
    handle
        .update_configuration(
            "aws.greengrass.clientdevices.mqtt.Bridge",
            &["mqttTopicMapping".into()],
            1,
            json!({"toCloud": {"topic": "sensors/#", "source": "LocalMqtt", "target": "IotCore"}}),
        )
        .unwrap();
    let local = local_broker(&d.broker).await;
    let stats = d.bridge.stats();
    // The leg is up once a device message reaches the cloud.
    let first = Sub::start(m.tcp, "sensors/#", 1, &["-F", "%t|%p"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut attempts = 0;
    while stats.to_cloud.load(Ordering::Relaxed) == 0 {
        attempts += 1;
        assert!(attempts < 100, "the bridge leg never started");
        publish(local, "sensor-1", "sensors/probe", "probe", &[]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = tokio::task::spawn_blocking(move || first.lines())
        .await
        .unwrap();
    assert_eq!(lines[0], "sensors/probe|probe");

    forward_tx.send_replace(false);
    let took = wait_link(&link, false, Duration::from_secs(10)).await;
    assert!(
        took <= keep_alive.mul_f64(1.5) + Duration::from_millis(500),
        "half-open noticed after {took:?}"
    );
    let status = d.cloud.status().unwrap();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("keep alive")),
        "{status:?}"
    );
    // Devices keep publishing; the bridge spools for the cloud.
    let before = stats.to_cloud.load(Ordering::Relaxed);
    for i in 0..5 {
        publish(local, "sensor-1", "sensors/s1/temp", &format!("t{i}"), &[]);
    }
    eventually("the bridge spooled five", Duration::from_secs(10), || {
        stats.to_cloud.load(Ordering::Relaxed) >= before + 5
    })
    .await;
    assert_eq!(
        stats.dropped.load(Ordering::Relaxed),
        0,
        "{:?}",
        stats.last_drop.lock().unwrap()
    );
    let spooled = d.cloud.status().unwrap();
    assert!(
        spooled.spool.as_ref().is_some_and(|s| s.depth >= 5),
        "{spooled:?}"
    );

    let after = Sub::start(m.tcp, "sensors/s1/temp", 5, &["-F", "%t|%p"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    forward_tx.send_replace(true);
    wait_link(&link, true, Duration::from_secs(25)).await;
    let lines = tokio::task::spawn_blocking(move || after.lines())
        .await
        .unwrap();
    let want: Vec<String> = (0..5).map(|i| format!("sensors/s1/temp|t{i}")).collect();
    assert_eq!(lines, want, "every spooled message, in order");
    d.node.shutdown().await;
}
