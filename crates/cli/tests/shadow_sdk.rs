//! Local shadows through the clients Greengrass users write, against the real binary:
//! - a deployed component using awsiotsdk's `GreengrassCoreIPCClientV2`: the four IPC
//!   operations with success, version conflict, oversized, too deep, bad name, not found and
//!   unauthorized, list paging, throttling over the per-thing rate limit, and the local
//!   pub/sub messages (accepted, delta, documents);
//! - a client device using awsiotsdk's `iotshadow` client over the embedded broker, reaching
//!   the shadow service through the bridge's mappings of the shadow topics, and seeing the
//!   delta of a desired change made on the core (`lichen shadow update`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The pinned Python with awsiotsdk; `None` (the test skips) when it is missing, unless
/// `LICHEN_TEST_REQUIRE_ALL` is set.
fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let ok = p.exists()
        && Command::new(&p)
            .args([
                "-c",
                "import awsiot.greengrasscoreipc.clientv2, awsiot.iotshadow",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipping: {} with awsiotsdk missing (scripts/setup-test-deps)",
            p.display()
        );
        assert!(
            std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
            "LICHEN_TEST_REQUIRE_ALL: {} lacks awsiotsdk",
            p.display()
        );
        return None;
    }
    Some(p)
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

const SIZE_LIMIT: usize = 1024;

#[test]
fn a_deployed_awsiotsdk_component_runs_every_shadow_operation_and_its_errors() {
    let Some(python) = python() else { return };
    let core = TestCore::start_with(&format!(
        "thingName: gw-sdk\nservices:\n  aws.greengrass.ShadowManager:\n    configuration:\n      shadowDocumentSizeLimitBytes: {SIZE_LIMIT}\n      rateLimits: {{ maxLocalRequestsPerSecondPerThing: 40 }}\n"
    ));
    let base = core.dir.path();
    let artifacts = base.join("artifacts");
    let art = artifacts.join("com.test.ShadowSdk/1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(
        script("shadow_component.py"),
        art.join("shadow_component.py"),
    )
    .unwrap();
    let recipe = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.test.ShadowSdk",
        "ComponentVersion": "1.0.0",
        "ComponentDependencies": {
            "aws.greengrass.ShadowManager": {"VersionRequirement": "^2.0.0"}
        },
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {
            "aws.greengrass.ShadowManager": {
                "com.test.ShadowSdk:shadow:1": {
                    "operations": ["aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow",
                                   "aws.greengrass#DeleteThingShadow"],
                    "resources": ["$aws/things/{iot:thingName}/shadow",
                                  "$aws/things/{iot:thingName}/shadow/name/*"]
                },
                "com.test.ShadowSdk:shadow:2": {
                    "operations": ["aws.greengrass#ListNamedShadowsForThing"],
                    "resources": ["{iot:thingName}"]
                }
            },
            "aws.greengrass.ipc.pubsub": {"com.test.ShadowSdk:pubsub:1": {
                "operations": ["aws.greengrass#SubscribeToTopic"],
                "resources": ["$aws/things/{iot:thingName}/shadow/#"]
            }}
        }}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!(
                "exec env SIZE_LIMIT={SIZE_LIMIT} {} -u {{artifacts:path}}/shadow_component.py",
                python.display())},
            "Artifacts": [{"URI": "s3://test/com.test.ShadowSdk/shadow_component.py"}]
        }]
    });
    let recipes = recipe_dir(base, "recipes", &[("shadow.json", &recipe.to_string())]);
    let d = core.deploy(
        &recipes,
        Some(&artifacts),
        &["-m", "com.test.ShadowSdk=1.0.0"],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    let work = core.work("com.test.ShadowSdk");
    let log = || read(&core.root.join("logs/com.test.ShadowSdk.log"));
    eventually("the component's cases", Duration::from_secs(90), || {
        work.join("done").exists()
    });
    let r: Value = serde_json::from_str(&read(&work.join("results.json"))).unwrap();
    let err = |case: &str, class: &str| {
        let c = &r[case];
        assert_eq!(c["ok"], false, "{case}: {c}\n{}", log());
        assert_eq!(c["error"], class, "{case}: {c}");
        c["message"].as_str().unwrap_or_default().to_string()
    };
    let ok = |case: &str| {
        let c = &r[case];
        assert_eq!(c["ok"], true, "{case}: {c}\n{}", log());
        c["answer"].clone()
    };

    err("get_missing", "ResourceNotFoundError");
    let updated = ok("update");
    assert_eq!(updated["version"], 1, "{updated}");
    assert_eq!(updated["state"], json!({"desired": {"color": "red"}}));
    assert_eq!(updated["clientToken"], "sdk-1");
    assert!(updated["metadata"]["desired"]["color"]["timestamp"].is_u64());
    let got = ok("get");
    assert_eq!(got["state"]["delta"], json!({"color": "red"}), "{got}");
    assert_eq!(err("conflict", "ConflictError"), "Version conflict");
    assert!(
        err("oversized", "InvalidArgumentsError").contains("exceeds the maximum size"),
        "{}",
        r["oversized"]
    );
    assert!(
        err("too_deep", "InvalidArgumentsError").contains("too many levels of nesting"),
        "{}",
        r["too_deep"]
    );
    err("bad_name", "InvalidArgumentsError");
    assert!(
        err("empty_payload", "InvalidArgumentsError").contains("Missing update payload"),
        "{}",
        r["empty_payload"]
    );
    err("unauthorized", "UnauthorizedError");
    assert_eq!(ok("reported")["version"], 2);
    let page1 = ok("list_page1");
    assert_eq!(page1["results"], json!(["n1", "n2"]), "{page1}");
    assert!(page1["nextToken"].is_string(), "{page1}");
    let page2 = ok("list_page2");
    assert_eq!(page2["results"], json!(["n3"]), "{page2}");
    assert!(page2["nextToken"].is_null(), "{page2}");
    err("list_bad_size", "InvalidArgumentsError");
    err("list_unauthorized", "UnauthorizedError");
    assert_eq!(
        ok("delete")["payloadBytes"],
        0,
        "delete answers an empty payload"
    );
    err("delete_missing", "ResourceNotFoundError");
    // Over maxLocalRequestsPerSecondPerThing: ServiceError "Too Many Requests", then it
    // passes again once the second's budget refilled.
    let throttled = ok("burst")["throttled"].as_array().unwrap().clone();
    assert!(
        throttled.len() >= 5,
        "only {} of 200 throttled",
        throttled.len()
    );
    for t in &throttled {
        assert_eq!(t["error"], "ServiceError", "{t}");
        assert!(
            t["message"].as_str().unwrap().contains("Too Many Requests"),
            "{t}"
        );
    }
    ok("after_burst");

    // What the component saw on local pub/sub, in the reference's shapes and order.
    let events = r["events"].as_array().unwrap();
    let topics: Vec<&str> = events
        .iter()
        .map(|e| e["topic"].as_str().unwrap())
        .collect();
    let pos = |t: &str| {
        topics
            .iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("no {t} in {topics:?}"))
    };
    let p = "$aws/things/gw-sdk/shadow";
    assert!(pos(&format!("{p}/get/rejected")) < pos(&format!("{p}/update/accepted")));
    let accepted = pos(&format!("{p}/update/accepted"));
    let delta = pos(&format!("{p}/update/delta"));
    let documents = pos(&format!("{p}/update/documents"));
    assert!(accepted < delta && delta < documents, "{topics:?}");
    assert_eq!(events[accepted]["body"], updated);
    assert_eq!(events[delta]["body"]["state"], json!({"color": "red"}));
    assert_eq!(events[delta]["body"]["clientToken"], "sdk-1");
    assert_eq!(events[documents]["body"]["current"]["version"], 1);
    let rejected: Vec<&Value> = events
        .iter()
        .filter(|e| e["topic"] == format!("{p}/update/rejected"))
        .map(|e| &e["body"])
        .collect();
    let codes: Vec<u64> = rejected
        .iter()
        .map(|b| b["code"].as_u64().unwrap())
        .collect();
    // The bad name has no topic to answer on, and the empty payload is refused by the IPC
    // operation before it reaches the shadow: neither publishes.
    assert_eq!(codes, [409, 413, 400], "{rejected:?}");
    let deleted = pos(&format!("{p}/name/n2/delete/accepted"));
    assert_eq!(events[deleted]["body"]["version"], 1, "{}", events[deleted]);
    let missing = &events[pos(&format!("{p}/name/n2/delete/rejected"))]["body"];
    assert_eq!(missing["code"], 404);
    assert_eq!(missing["message"], "No shadow exists with name: n2");

    // The CLI sees the same store.
    let listed = core.json(&["shadow", "list", "gw-sdk"]);
    let names: Vec<Value> = listed["shadows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["deleted"] == false)
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, [Value::Null, json!("n1"), json!("n3")], "{listed}");
}

#[test]
fn a_client_device_uses_its_shadow_with_iotshadow_through_the_broker_and_bridge() {
    let Some(python) = python() else { return };
    let core = TestCore::start_with(
        "thingName: gw-dev\nbroker:\n  listeners:\n    - { kind: tcp, bind: \"127.0.0.1:0\" }\n",
    );
    let broker = core.json(&["device", "broker"]);
    let addr = broker["listeners"][0]["addr"].as_str().unwrap().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    // As the Greengrass docs configure it: the device's shadow topics both ways.
    let config = json!({
        "aws.greengrass.clientdevices.Auth": {"MERGE": {"deviceGroups": {
            "formatVersion": "2021-03-05",
            "definitions": {"Sensors": {"selectionRule": "thingName: sensor-*", "policyName": "SensorPolicy"}},
            "policies": {"SensorPolicy": {
                "connect": {"operations": ["mqtt:connect"], "resources": ["*"]},
                "pubsub": {"operations": ["mqtt:publish", "mqtt:subscribe"],
                           "resources": ["mqtt:topic:$aws/things/${iot:Connection.Thing.ThingName}/shadow/*",
                                         "mqtt:topicfilter:$aws/things/${iot:Connection.Thing.ThingName}/shadow/*",
                                         "*"]}
            }}
        }}},
        "aws.greengrass.clientdevices.mqtt.Bridge": {"MERGE": {"mqttTopicMapping": {
            "ShadowsLocalMqttToPubsub": {"topic": "$aws/things/sensor-1/shadow/#", "source": "LocalMqtt", "target": "Pubsub"},
            "ShadowsPubsubToLocalMqtt": {"topic": "$aws/things/sensor-1/shadow/#", "source": "Pubsub", "target": "LocalMqtt"}
        }}}
    });
    let empty = recipe_dir(core.dir.path(), "recipes", &[]);
    let d = core.deploy(
        &empty,
        None,
        &[
            "-m",
            "aws.greengrass.clientdevices.Auth=2.5.0",
            "-m",
            "aws.greengrass.clientdevices.mqtt.Bridge=2.3.0",
            "-m",
            "aws.greengrass.ShadowManager=2.3.0",
            "-c",
            &config.to_string(),
        ],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());

    let ready = core.dir.path().join("device-ready");
    let go = core.dir.path().join("device-go");
    let device = Command::new(&python)
        .arg("-u")
        .arg(script("shadow_device.py"))
        .args([host, port, "sensor-1"])
        .arg(&ready)
        .arg(&go)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = device.id() as i32;
    eventually("the device's own checks", Duration::from_secs(60), || {
        ready.exists() || !pid_alive(pid)
    });
    if ready.exists() {
        // The core sets desired; the device must see the delta over the bridge.
        core.json(&[
            "shadow",
            "update",
            "sensor-1",
            r#"{"state":{"desired":{"temp":18}}}"#,
        ]);
        std::fs::write(&go, "").unwrap();
    }
    let out = device.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all ok"),
        "device: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        core.stderr()
    );
    // The device's named shadow is in the core's store.
    let cfg = core.json(&["shadow", "get", "sensor-1", "--name", "cfg"]);
    assert_eq!(cfg["state"]["reported"], json!({"mode": "eco"}), "{cfg}");
}
