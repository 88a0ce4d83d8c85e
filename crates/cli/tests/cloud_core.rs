//! A core and a cloud, both the real binary: a provisioning bundle from `lichen cloud thing
//! create` starts a core that connects with that identity and shows as online; a revoked
//! certificate is refused at the next attempt; fleet provisioning by claim gives a core its
//! own identity and group, which it keeps across restarts without the claim.

mod common;

use std::time::Duration;

use common::cloud::RunningCloud;
use common::*;
use serde_json::Value;

/// Polls `what` every 100 ms until it returns Some, or panics naming it.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cloud_state(core: &TestCore) -> Value {
    core.json(&["core", "status"])["cloud"].clone()
}

#[test]
fn a_bundle_starts_a_core_that_connects_and_shows_online_until_its_certificate_is_revoked() {
    let cloud = RunningCloud::start();
    let core_dir = tempfile::tempdir().unwrap();
    let created = cloud.json(&[
        "thing",
        "create",
        "gw-bundle",
        "--out",
        core_dir.path().to_str().unwrap(),
    ]);
    let fingerprint = created["certificateId"].as_str().unwrap().to_string();
    // The bundle's config, as written (the harness only adds posixUser: root in front), plus
    // a local broker whose address the core reports as its connectivity.
    let config = format!(
        "{}broker:\n  listeners:\n    - {{ kind: tls, bind: \"127.0.0.1:0\" }}\n",
        read(&core_dir.path().join("config.yaml"))
    );
    let core = TestCore::start_in(core_dir, "root", &config);

    let status = wait_for("the core to connect", Duration::from_secs(30), || {
        let c = cloud_state(&core);
        (c["state"] == "connected").then_some(c)
    });
    assert_eq!(status["thingName"], "gw-bundle", "{status}");
    // The link's counters are part of the status, with the (empty, disk) spool. The fleet
    // deployment agent holds the link's only subscriptions: the three jobs topics of the
    // aws-gg-deployment namespace and the three of the deployment shadow.
    assert_eq!(status["subscriptions"], 6, "{status}");
    assert_eq!(status["messagesDropped"], 0, "{status}");
    assert_eq!(status["spool"]["depth"], 0, "{status}");
    assert_eq!(status["spool"]["storage"], "disk", "{status}");
    assert_eq!(
        status["endpoint"], cloud.ready["iotDataEndpoint"],
        "{status}"
    );
    let described = wait_for(
        "the cloud to see it online",
        Duration::from_secs(10),
        || {
            let d = cloud.json(&["thing", "describe", "gw-bundle"]);
            (d["online"] == true).then_some(d)
        },
    );
    assert_eq!(described["presence"]["online"], true, "{described}");
    // The core reported its broker's address as Greengrass connectivity info.
    let connectivity = wait_for("connectivity info", Duration::from_secs(15), || {
        let d = cloud.json(&["thing", "describe", "gw-bundle"]);
        (!d["connectivity"].is_null()).then(|| d["connectivity"].clone())
    });
    assert_eq!(connectivity["thing"], "gw-bundle", "{connectivity}");
    let endpoints = connectivity["endpoints"].as_array().expect("endpoints");
    assert!(
        endpoints
            .iter()
            .any(|e| e["hostAddress"] == "127.0.0.1" && e["port"].as_u64().unwrap_or(0) > 0),
        "{connectivity}"
    );

    // Revoked: the live connection is closed and every new attempt refused.
    cloud.json(&["cert", "revoke", &fingerprint]);
    let refused = wait_for(
        "the core to lose its connection",
        Duration::from_secs(30),
        || {
            let c = cloud_state(&core);
            (c["state"] != "connected" && !c["lastError"].is_null()).then_some(c)
        },
    );
    assert!(
        refused["lastError"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("authoriz")
            || refused["lastError"].as_str().unwrap().contains("refused")
            || refused["lastError"].as_str().unwrap().contains("closed"),
        "{refused}"
    );
    wait_for(
        "the cloud to see it offline",
        Duration::from_secs(10),
        || (cloud.json(&["thing", "describe", "gw-bundle"])["online"] == false).then_some(()),
    );
    // Still refused a few seconds later: revocation is final.
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(cloud_state(&core)["state"], "connected");
    drop(core);
    cloud.stop();
}

#[test]
fn fleet_provisioning_by_claim_gives_the_core_its_own_identity_and_keeps_it() {
    let cloud = RunningCloud::start();
    cloud.json(&["group", "create", "fleet"]);
    let body = cloud.dir.path().join("template.json");
    std::fs::write(
        &body,
        serde_json::json!({
            "Parameters": {"SerialNumber": {"Type": "String"}},
            "Resources": {
                "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                    "ThingName": {"Fn::Join": ["-", ["gw", {"Ref": "SerialNumber"}]]},
                    "AttributePayload": {"serial": {"Ref": "SerialNumber"}},
                    "ThingGroups": ["fleet"]
                }},
                "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                    "Status": "Active"
                }}
            }
        })
        .to_string(),
    )
    .unwrap();
    cloud.json(&[
        "template",
        "create",
        "Fleet",
        "--body",
        body.to_str().unwrap(),
    ]);
    let core_dir = tempfile::tempdir().unwrap();
    let claim = cloud.json(&[
        "claim",
        "create",
        "--template",
        "Fleet",
        "--out",
        core_dir.path().to_str().unwrap(),
    ]);
    let claim_id = claim["certificateId"].as_str().unwrap().to_string();
    let config = read(&core_dir.path().join("config.yaml")).replace(
        "templateParameters: {}",
        "templateParameters: { SerialNumber: \"0042\" }",
    );
    let mut core = TestCore::start_in(core_dir, "root", &config);

    let status = wait_for(
        "the provisioned core to connect",
        Duration::from_secs(30),
        || {
            let c = cloud_state(&core);
            (c["state"] == "connected").then_some(c)
        },
    );
    assert_eq!(status["thingName"], "gw-0042", "{status}");
    assert_eq!(status["provisioned"], true, "{status}");
    assert_eq!(core.json(&["core", "status"])["thingName"], "gw-0042");
    let thing = wait_for(
        "the cloud to see gw-0042 online",
        Duration::from_secs(10),
        || {
            let d = cloud.json(&["thing", "describe", "gw-0042"]);
            (d["online"] == true).then_some(d)
        },
    );
    assert_eq!(thing["groups"], serde_json::json!(["fleet"]), "{thing}");
    assert_eq!(thing["attributes"]["serial"], "0042", "{thing}");
    let own_cert = thing["certificates"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(own_cert, claim_id, "the device has its own certificate");
    let identity = core.root.join("cloud/identity");
    let key = identity.join("thing.private.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // From now on only that identity: with the claim's files gone and the claim revoked, a
    // restart still connects as gw-0042.
    core.stop();
    std::fs::remove_file(core.dir.path().join("claim.private.key")).unwrap();
    cloud.json(&["cert", "revoke", &claim_id]);
    core.spawn();
    let status = wait_for(
        "the restarted core to connect",
        Duration::from_secs(30),
        || {
            let c = cloud_state(&core);
            (c["state"] == "connected").then_some(c)
        },
    );
    assert_eq!(status["thingName"], "gw-0042", "{status}");
    assert_eq!(
        cloud.json(&["thing", "list"]).as_array().unwrap().len(),
        1,
        "no second thing was provisioned"
    );
    drop(core);
    cloud.stop();
}
