//! The endpoint's side of fleet deployments, with paho-mqtt over mTLS on SQLite and
//! PostgreSQL: namespaced jobs notifications (`notify-namespace-N`, `notify-next-namespace-N`)
//! next to the plain ones, and shadow updates made by the control plane reaching the device.

mod common;

use common::*;
use lichen_cloud_store::{Backend, Job, JobExecution, JobExecutionStatus, JobStatus};
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn queue_job(cloud: &Cloud, id: &str, thing: &str, namespace: Option<&str>) {
    cloud
        .store
        .create_job(&Job {
            id: id.into(),
            document: json!({"job": id}),
            status: JobStatus::InProgress,
            targets: vec![thing.into()],
            namespace: namespace.map(str::to_string),
            created_at: "2026-12-02T00:00:00Z".into(),
            updated_at: "2026-12-02T00:00:00Z".into(),
        })
        .await
        .unwrap();
    cloud
        .store
        .put_job_execution(
            &JobExecution {
                job_id: id.into(),
                thing: thing.into(),
                status: JobExecutionStatus::Queued,
                status_details: Default::default(),
                version_number: 1,
                execution_number: 1,
                queued_at: now(),
                started_at: None,
                last_updated_at: now(),
            },
            None,
        )
        .await
        .unwrap();
}

fn payload(ev: &Value) -> Value {
    serde_json::from_str(ev["payload"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

async fn namespaced_notify(db: Db) {
    let py = need!(python(), "python venv with paho-mqtt");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let creds = cloud.device("gg-1").await;
    let mut dev = cloud.agent(&py, "5", "gg-1", &creds);
    assert_eq!(dev.expect("connack", |_| true).await["rc"], 0);
    let ns = "aws-gg-deployment";
    for f in [
        format!("$aws/things/gg-1/jobs/notify-namespace-{ns}"),
        format!("$aws/things/gg-1/jobs/notify-next-namespace-{ns}"),
        "$aws/things/gg-1/jobs/notify".to_string(),
        "$aws/things/gg-1/jobs/notify-next".to_string(),
    ] {
        assert_eq!(dev.subscribe(&f, 1).await, vec![1], "{f}");
    }
    queue_job(&cloud, "fleet-1", "gg-1", Some(ns)).await;
    queue_job(&cloud, "plain-1", "gg-1", None).await;
    cloud.endpoint.notify_jobs("gg-1").await;

    // Published in this order: the plain pair, then each namespace's pair.
    let plain = dev
        .expect("message", |v| {
            v["topic"] == "$aws/things/gg-1/jobs/notify-next"
        })
        .await;
    assert_eq!(payload(&plain)["execution"]["jobId"], "plain-1");

    let notify_ns = dev
        .expect("message", |v| {
            v["topic"] == format!("$aws/things/gg-1/jobs/notify-namespace-{ns}")
        })
        .await;
    let p = payload(&notify_ns);
    let queued: Vec<&str> = p["jobs"]["QUEUED"]
        .as_array()
        .map(|a| a.iter().filter_map(|j| j["jobId"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(queued, vec!["fleet-1"], "namespaced notify: {p}");
    let next_ns = dev
        .expect("message", |v| {
            v["topic"] == format!("$aws/things/gg-1/jobs/notify-next-namespace-{ns}")
        })
        .await;
    let p = payload(&next_ns);
    assert_eq!(p["execution"]["jobId"], "fleet-1", "{p}");
    assert_eq!(p["execution"]["jobDocument"], json!({"job": "fleet-1"}));
    // The namespaced job ends: its namespace hears that nothing is pending there.
    let mut done = cloud
        .store
        .get_job_execution("fleet-1", "gg-1")
        .await
        .unwrap()
        .unwrap();
    done.status = JobExecutionStatus::Canceled;
    done.version_number += 1;
    cloud.store.put_job_execution(&done, Some(1)).await.unwrap();
    cloud.endpoint.notify_jobs("gg-1").await;
    let empty = dev
        .expect("message", |v| {
            v["topic"] == format!("$aws/things/gg-1/jobs/notify-next-namespace-{ns}")
        })
        .await;
    assert!(
        payload(&empty).get("execution").is_none_or(Value::is_null),
        "{:?}",
        payload(&empty)
    );
    dev.quit().await;
    cloud.endpoint.shutdown().await;
}
both!(
    namespaced_jobs_are_notified_on_their_own_topics,
    namespaced_notify
);

async fn control_plane_shadow(db: Db) {
    let py = need!(python(), "python venv with paho-mqtt");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let creds = cloud.device("gg-2").await;
    let mut dev = cloud.agent(&py, "5", "gg-2", &creds);
    assert_eq!(dev.expect("connack", |_| true).await["rc"], 0);
    let base = "$aws/things/gg-2/shadow/name/AWSManagedGreengrassV2Deployment/update";
    assert_eq!(dev.subscribe(&format!("{base}/+"), 1).await, vec![1]);
    let shadow = "AWSManagedGreengrassV2Deployment";
    // The device reports first, as a core does.
    dev.publish(base, r#"{"state":{"reported":{"fleet":"old"}}}"#, 1)
        .await;
    dev.expect("message", |v| v["topic"] == format!("{base}/accepted"))
        .await;
    dev.expect("message", |v| v["topic"] == format!("{base}/documents"))
        .await;
    // The control plane sets desired: the device sees accepted, documents and delta.
    cloud
        .endpoint
        .update_shadow(
            "gg-2",
            shadow,
            &json!({"state": {"desired": {"fleet": "new"}}, "clientToken": "cloud"}),
        )
        .await
        .expect("accepted");
    let docs = dev
        .expect("message", |v| v["topic"] == format!("{base}/documents"))
        .await;
    let d = payload(&docs);
    assert_eq!(d["previous"]["state"]["reported"]["fleet"], "old", "{d}");
    assert_eq!(d["current"]["state"]["desired"]["fleet"], "new", "{d}");
    let delta = dev
        .expect("message", |v| v["topic"] == format!("{base}/delta"))
        .await;
    let d = payload(&delta);
    assert_eq!(d["state"], json!({"fleet": "new"}), "{d}");
    assert_eq!(d["version"], 2);
    // A stale version is rejected to the caller and to the device.
    let err = cloud
        .endpoint
        .update_shadow(
            "gg-2",
            shadow,
            &json!({"state": {"desired": {"fleet": "x"}}, "version": 1}),
        )
        .await
        .expect_err("stale version");
    assert_eq!(err["code"], 409, "{err}");
    dev.expect("message", |v| v["topic"] == format!("{base}/rejected"))
        .await;

    // Written to the store directly: shadow_updated publishes the whole delta.
    let mut rec = cloud
        .store
        .get_shadow("gg-2", shadow)
        .await
        .unwrap()
        .unwrap();
    let old_version = rec.version;
    rec.document["state"]["desired"]["fleet"] = json!("direct");
    rec.document["version"] = json!(old_version + 1);
    rec.version = old_version + 1;
    cloud
        .store
        .put_shadow(&rec, Some(old_version))
        .await
        .unwrap();
    assert!(cloud.endpoint.shadow_updated("gg-2", shadow).await);
    let delta = dev
        .expect("message", |v| v["topic"] == format!("{base}/delta"))
        .await;
    let d = payload(&delta);
    assert_eq!(d["state"], json!({"fleet": "direct"}), "{d}");
    assert_eq!(d["version"], json!(old_version + 1));
    // Nothing to say for a shadow that does not exist.
    assert!(!cloud.endpoint.shadow_updated("gg-2", "nope").await);
    dev.quit().await;
    cloud.endpoint.shutdown().await;
}
both!(
    control_plane_shadow_updates_reach_the_device,
    control_plane_shadow
);

async fn fleet_status(db: Db) {
    let py = need!(python(), "python venv with paho-mqtt");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let creds = cloud.device("gg-3").await;
    let mut dev = cloud.agent(&py, "5", "gg-3", &creds);
    assert_eq!(dev.expect("connack", |_| true).await["rc"], 0);
    let topic = "$aws/things/gg-3/greengrassv2/health/json";
    // Connecting alone marks it seen.
    let mut seen = None;
    for _ in 0..50 {
        seen = cloud.store.get_device_status("gg-3").await.unwrap();
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let seen = seen.expect("last seen after connect");
    assert_eq!((seen.sequence, seen.message.is_none()), (0, true));
    // Junk is dropped, the connection lives on.
    dev.publish(topic, "{not json", 1).await;
    let status = json!({
        "ggcVersion": "2.12.0", "platform": "linux", "architecture": "amd64", "thing": "gg-3",
        "overallDeviceStatus": "UNHEALTHY", "sequenceNumber": 7, "timestamp": 1_796_000_000_000u64,
        "messageType": "COMPLETE", "trigger": "THING_GROUP_DEPLOYMENT",
        "components": [{"componentName": "com.example.Hello", "version": "1.0.0",
            "fleetConfigArns": [], "statusDetails": {"errorCodes": ["COMPONENT_BROKEN"]},
            "isRoot": true, "state": "BROKEN"}],
        "deploymentInformation": {"status": "FAILED",
            "fleetConfigurationArnForStatus": "arn:lichen:greengrass:::configuration:thinggroup/line-1:3",
            "statusDetails": {"detailedStatus": "FAILED_ROLLBACK_COMPLETE",
                "failureCause": "com.example.Hello is broken"}}
    });
    dev.publish(topic, &status.to_string(), 1).await;
    let mut got = None;
    for _ in 0..50 {
        let s = cloud
            .store
            .get_device_status("gg-3")
            .await
            .unwrap()
            .unwrap();
        if s.sequence == 1 {
            got = Some(s);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got = got.expect("fleet status stored");
    assert_eq!(got.message.as_ref(), Some(&status));
    assert!(got.received_at.is_some());
    assert!(got.last_seen >= seen.last_seen);
    // Another thing cannot speak for it.
    let other = cloud.device("gg-4").await;
    let mut o = cloud.agent(&py, "5", "gg-4", &other);
    assert_eq!(o.expect("connack", |_| true).await["rc"], 0);
    let mut forged = status.clone();
    forged["overallDeviceStatus"] = json!("HEALTHY");
    o.publish(topic, &forged.to_string(), 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let still = cloud
        .store
        .get_device_status("gg-3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.sequence, 1);
    assert_eq!(still.message.as_ref(), Some(&status));
    o.quit().await;
    dev.quit().await;
    cloud.endpoint.shutdown().await;
}
both!(
    fleet_status_messages_are_stored_for_their_own_thing,
    fleet_status
);
