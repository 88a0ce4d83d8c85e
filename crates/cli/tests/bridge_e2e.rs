//! End to end through the real binary: an MQTT client device (mosquitto_pub/sub) talks to an
//! IPC component written with awsiotsdk, through the embedded broker and the MQTT bridge,
//! both configured by deploying the Greengrass client-device components.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn python() -> PathBuf {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-test-deps (scripts/test does)",
        p.display()
    );
    p
}

#[test]
fn device_to_ipc_component_and_back_through_the_bridge() {
    let python = python();
    let core = TestCore::start_with(
        "thingName: bridge-test\nbroker:\n  listeners:\n    - { kind: tcp, bind: \"127.0.0.1:0\" }\n",
    );
    let broker = core.json(&["device", "broker"]);
    let addr = broker["listeners"][0]["addr"].as_str().unwrap().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();

    let base = core.dir.path();
    let artifacts = base.join("artifacts");
    let art_dir = artifacts.join("com.test.BridgeEcho/1.0.0");
    std::fs::create_dir_all(&art_dir).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/bridge_echo.py"),
        art_dir.join("bridge_echo.py"),
    )
    .unwrap();
    let recipe = serde_json::json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.test.BridgeEcho",
        "ComponentVersion": "1.0.0",
        "ComponentDependencies": {
            "aws.greengrass.clientdevices.mqtt.Bridge": {"VersionRequirement": "^2.0.0"},
            "aws.greengrass.clientdevices.Auth": {"VersionRequirement": "^2.0.0"}
        },
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.pubsub": {
            "com.test.BridgeEcho:pubsub:1": {
                "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
                "resources": ["devices/*"]
            }
        }}}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!("exec {} -u {{artifacts:path}}/bridge_echo.py", python.display())},
            "Artifacts": [{"URI": "s3://test/com.test.BridgeEcho/bridge_echo.py"}]
        }]
    });
    let recipes = recipe_dir(base, "recipes", &[("echo.json", &recipe.to_string())]);
    let config = serde_json::json!({
        "aws.greengrass.clientdevices.Auth": {"MERGE": {"deviceGroups": {
            "formatVersion": "2021-03-05",
            "definitions": {"Sensors": {"selectionRule": "thingName: sensor-*", "policyName": "SensorPolicy"}},
            "policies": {"SensorPolicy": {
                "connect": {"operations": ["mqtt:connect"], "resources": ["*"]},
                "pubsub": {"operations": ["mqtt:publish", "mqtt:subscribe"], "resources": ["*"]}
            }}
        }}},
        "aws.greengrass.clientdevices.mqtt.Bridge": {"MERGE": {"mqttTopicMapping": {
            "Up": {"topic": "devices/+/up", "source": "LocalMqtt", "target": "Pubsub"},
            "Down": {"topic": "devices/+/down", "source": "Pubsub", "target": "LocalMqtt"}
        }}}
    });
    let d = core.deploy(
        &recipes,
        Some(&artifacts),
        &[
            "-m",
            "com.test.BridgeEcho=1.0.0",
            "-m",
            "aws.greengrass.clientdevices.Auth=2.5.0",
            "-m",
            "aws.greengrass.clientdevices.mqtt.Bridge=2.3.0",
            "-c",
            &config.to_string(),
        ],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    let list = core.json(&["component", "list"]);
    let bridge = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["componentName"] == "aws.greengrass.clientdevices.mqtt.Bridge")
        .unwrap();
    assert_eq!(bridge["builtin"], true);
    assert_eq!(bridge["state"], "RUNNING");
    let work = core.work("com.test.BridgeEcho");
    eventually(
        "component subscribed over IPC",
        Duration::from_secs(30),
        || work.join("ready").exists(),
    );

    for version in ["mqttv311", "mqttv5"] {
        let device = format!("sensor-{version}");
        let sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                host,
                "-p",
                port,
                "-V",
                version,
                "-i",
                &format!("{device}-sub"),
                "-q",
                "1",
            ])
            .args([
                "-t",
                &format!("devices/{device}/down"),
                "-C",
                "1",
                "-W",
                "20",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients; scripts/test installs it)");
        std::thread::sleep(Duration::from_millis(500));
        let status = Command::new("mosquitto_pub")
            .args([
                "-h", host, "-p", port, "-V", version, "-i", &device, "-q", "1",
            ])
            .args(["-t", &format!("devices/{device}/up"), "-m", "hello lichen"])
            .status()
            .unwrap();
        assert!(status.success());
        let out = sub.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "echo:hello lichen",
            "{version}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            read(&core.root.join("logs/com.test.BridgeEcho.log"))
        );
    }

    // A device outside the policy's selection rule is refused.
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-V",
            "mqttv5",
            "-i",
            "intruder",
            "-t",
            "devices/x/up",
            "-m",
            "x",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "an unselected client id must not connect"
    );
}
