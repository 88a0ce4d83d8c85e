//! `GET /v1/devices` and `/v1/devices/{thing}` over HTTPS with the admin token, on SQLite and
//! PostgreSQL, from device status as the endpoint stores it (the endpoint's own tests drive a
//! real device publishing it: crates/cloud-endpoint/tests/fleet.rs).

mod common;

use common::Cloud;
use lichen_cloud_store::{Backend, Presence};
use serde_json::json;

async fn devices(c: &Cloud) {
    for name in ["gg-a", "gg-b"] {
        c.expect("POST", "/v1/things", Some(json!({"name": name})), 201)
            .await;
    }
    let status = json!({
        "ggcVersion": "2.12.0", "platform": "linux", "architecture": "amd64", "thing": "gg-a",
        "overallDeviceStatus": "UNHEALTHY", "sequenceNumber": 7, "timestamp": 1,
        "messageType": "COMPLETE", "trigger": "THING_GROUP_DEPLOYMENT",
        "components": [
            {"componentName": "com.example.Hello", "version": "1.0.0", "state": "BROKEN",
             "statusDetails": {"errorCodes": ["COMPONENT_BROKEN"]}, "isRoot": true, "fleetConfigArns": []},
            {"componentName": "aws.greengrass.Nucleus", "version": "2.12.0", "state": "FINISHED",
             "isRoot": false, "fleetConfigArns": []}],
        "deploymentInformation": {"status": "FAILED", "deploymentId": "d-1",
            "fleetConfigurationArnForStatus": "arn:lichen:greengrass:::configuration:thinggroup/line-1:3",
            "statusDetails": {"detailedStatus": "FAILED_ROLLBACK_COMPLETE", "failureCause": "Hello is broken"}}
    });
    c.store
        .record_fleet_status("gg-a", &status, "2026-12-03T09:00:00.000Z")
        .await
        .unwrap();
    c.store
        .set_presence(&Presence {
            thing: "gg-a".into(),
            online: true,
            client_id: "gg-a".into(),
            at: "2026-12-03T08:59:00.000Z".into(),
        })
        .await
        .unwrap();
    let list = c.expect("GET", "/v1/devices", None, 200).await;
    let rows = list["devices"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{list}");
    assert_eq!(rows[0]["thing"], "gg-a");
    assert_eq!(rows[0]["online"], true);
    assert_eq!(rows[0]["overall"], "UNHEALTHY");
    assert_eq!(rows[0]["componentCount"], 2);
    assert_eq!(rows[0]["lastSeen"], "2026-12-03T09:00:00.000Z");
    assert_eq!(rows[0]["lastDeployment"]["status"], "FAILED");
    assert_eq!(rows[0]["lastDeployment"]["failureCause"], "Hello is broken");
    assert_eq!(rows[1]["thing"], "gg-b");
    assert_eq!(rows[1]["online"], false);
    assert!(rows[1]["overall"].is_null() && rows[1]["lastDeployment"].is_null());

    let one = c.expect("GET", "/v1/devices/gg-a", None, 200).await;
    assert_eq!(one["lastStatusAt"], "2026-12-03T09:00:00.000Z");
    assert_eq!(one["statusCount"], 1);
    assert_eq!(one["components"][0]["componentName"], "com.example.Hello");
    assert_eq!(one["components"][0]["state"], "BROKEN");
    assert_eq!(one["components"][1]["version"], "2.12.0");
    assert_eq!(
        one["lastDeployment"]["detailedStatus"],
        "FAILED_ROLLBACK_COMPLETE"
    );
    c.expect_error("GET", "/v1/devices/ghost", None, 404, "NotFound", "ghost")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_show_the_last_fleet_status_sqlite() {
    let c = common::start(common::Backend::Sqlite).await.unwrap();
    devices(&c).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_show_the_last_fleet_status_postgres() {
    let Some(c) = common::start(common::Backend::Postgres).await else {
        eprintln!("SKIP: PostgreSQL (initdb) not available");
        return;
    };
    devices(&c).await;
    c.stop().await;
}
