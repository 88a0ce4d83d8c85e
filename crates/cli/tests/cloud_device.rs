//! `lichen cloud device list|status` through the real binary against a real `lichen cloud
//! run`, after a device (mosquitto_pub with the thing's bundle, over mTLS) sent its fleet
//! status to `$aws/things/<thing>/greengrassv2/health/json`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cloud::RunningCloud;
use serde_json::json;

fn human(cloud: &RunningCloud, args: &[&str]) -> String {
    let out = cloud.cli(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn device_list_and_status_show_what_the_core_reported() {
    if Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("skipped: mosquitto_pub is not installed");
        return;
    }
    let cloud = RunningCloud::start();
    let bundle = cloud.dir.path().join("bundle");
    cloud.json(&[
        "thing",
        "create",
        "core-9",
        "--out",
        bundle.to_str().unwrap(),
    ]);
    cloud.json(&["thing", "create", "core-quiet"]);

    // Before any status: listed, never seen.
    let listed = cloud.json(&["device", "list"]);
    let quiet = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["thing"] == "core-quiet")
        .unwrap();
    assert_eq!(quiet["online"], false);
    assert!(quiet["lastDeployment"].is_null());

    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let message = json!({
        "ggcVersion": "2.12.0", "platform": "linux", "architecture": "amd64",
        "thing": "core-9", "overallDeviceStatus": "UNHEALTHY", "sequenceNumber": 1,
        "timestamp": now_ms, "messageType": "COMPLETE", "trigger": "THING_DEPLOYMENT",
        "components": [
            {"componentName": "com.example.Good", "version": "1.0.0", "state": "RUNNING",
             "isRoot": true, "fleetConfigArns": []},
            {"componentName": "com.example.Bad", "version": "2.0.0", "state": "BROKEN",
             "isRoot": true, "fleetConfigArns": []}
        ],
        "deploymentInformation": {
            "status": "FAILED",
            "statusDetails": {"detailedStatus": "FAILED_ROLLBACK_COMPLETE",
                              "failureCause": "com.example.Bad install exited with 1"},
            "fleetConfigurationArnForStatus": "arn:aws:greengrass:local:000000000000:configuration:thing/core-9:1",
            "deploymentId": "d-1234567890"
        }
    });
    let endpoint = cloud.ready["iotDataEndpoint"].as_str().unwrap();
    let (host, port) = endpoint.rsplit_once(':').unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-h", host, "-p", port, "-i", "core-9", "-q", "1"])
        .args(["-t", "$aws/things/core-9/greengrassv2/health/json"])
        .arg("-m")
        .arg(message.to_string())
        .arg("--cafile")
        .arg(bundle.join("ca.pem"))
        .arg("--cert")
        .arg(bundle.join("thing.cert.pem"))
        .arg("--key")
        .arg(bundle.join("thing.private.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "mosquitto_pub: {out:?}");

    let start = Instant::now();
    let status = loop {
        let v = cloud.json(&["device", "status", "core-9"]);
        if v["statusCount"].as_i64().unwrap_or(0) >= 1 {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no status recorded: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["overall"], "UNHEALTHY");
    assert_eq!(status["components"].as_array().unwrap().len(), 2);
    assert_eq!(status["lastDeployment"]["status"], "FAILED");
    assert!(status["lastSeen"].as_str().is_some());

    let list = human(&cloud, &["device", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with("core-9"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains(" s ago"), "{row}");
    assert!(
        row.contains("UNHEALTHY") && row.contains("FAILED (FAILED_ROLLBACK_COMPLETE)"),
        "{row}"
    );
    assert!(
        row.contains("d-123456 "),
        "the deployment id's start: {row}"
    );
    let quiet_row = list.lines().find(|l| l.starts_with("core-quiet")).unwrap();
    assert!(quiet_row.contains("never"), "{quiet_row}");
    assert!(list.lines().next().unwrap().contains("LAST SEEN"));

    let text = human(&cloud, &["device", "status", "core-9"]);
    assert!(
        text.contains("failure cause:   com.example.Bad install exited with 1"),
        "{text}"
    );
    let bad = text
        .lines()
        .find(|l| l.starts_with("com.example.Bad"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(bad.contains("2.0.0") && bad.contains("BROKEN"), "{bad}");
    let good = text
        .lines()
        .find(|l| l.starts_with("com.example.Good"))
        .unwrap();
    assert!(good.contains("RUNNING"), "{good}");

    let quiet = human(&cloud, &["device", "status", "core-quiet"]);
    assert!(
        quiet.contains("No component status reported yet."),
        "{quiet}"
    );
    cloud.fails(&["device", "status", "no-such-thing"], "no-such-thing");
    cloud.stop();
}
