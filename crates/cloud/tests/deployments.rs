//! Fleet deployments through the API on real sockets, SQLite and PostgreSQL: a group deployment
//! queues an aws-gg-deployment job execution per member and cancels the group's previous job;
//! a thing deployment writes the deployment shadow's desired in Greengrass's shape; joining a
//! group catches up, leaving cancels; cancel; bad documents are refused naming the field with
//! nothing stored; status follows the executions as a device updates them; a replaced
//! deployment stays in the history (INACTIVE, naming its successor, its devices' results
//! kept) and cancelling it answers 409 naming the successor without touching it.

mod common;

use common::Cloud;
use lichen_cloud_store::{Backend, ComponentVersion, JobExecutionStatus, Page};
use serde_json::{Value, json};

async fn component(c: &Cloud, name: &str, version: &str) {
    c.store
        .create_component_version(&ComponentVersion {
            name: name.to_string(),
            version: version.to_string(),
            recipe: json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version}),
            artifacts: vec![],
            created_at: "2026-01-01T00:00:00.000Z".to_string(),
        })
        .await
        .unwrap();
}

async fn thing(c: &Cloud, name: &str) {
    c.expect("POST", "/v1/things", Some(json!({"name": name})), 201)
        .await;
}

fn notified(c: &Cloud) -> Vec<String> {
    c.revoked.0.lock().unwrap().clone()
}

async fn executions(c: &Cloud, job: &str) -> Vec<(String, JobExecutionStatus)> {
    c.store
        .list_job_executions_for_job(job, &Page::first(100))
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.thing, e.status))
        .collect()
}

async fn group_deployments(c: &Cloud) {
    component(c, "com.example.A", "1.0.0").await;
    component(c, "com.example.A", "2.0.0").await;
    for t in ["g-1", "g-2", "late"] {
        thing(c, t).await;
    }
    c.expect(
        "POST",
        "/v1/thing-groups",
        Some(json!({"name": "line"})),
        201,
    )
    .await;
    for t in ["g-1", "g-2"] {
        c.expect(
            "PUT",
            &format!("/v1/thing-groups/line/members/{t}"),
            None,
            204,
        )
        .await;
    }
    let first = c
        .expect(
            "POST",
            "/v1/deployments",
            Some(json!({
                "targetArn": "arn:aws:iot:us-east-1:123456789012:thinggroup/line",
                "deploymentName": "first",
                "components": {"com.example.A": {"componentVersion": "1.0.0",
                    "configurationUpdate": {"merge": "{\"x\":1}"}}},
                "deploymentPolicies": {"failureHandlingPolicy": "DO_NOTHING",
                    "componentUpdatePolicy": {"timeoutInSeconds": 10, "action": "SKIP_NOTIFY_COMPONENTS"}}
            })),
            201,
        )
        .await;
    assert_eq!(first["targetArn"], "thinggroup/line");
    assert_eq!(first["revision"], 1);
    assert_eq!(
        first["configurationArn"],
        "arn:lichen:greengrass:::configuration:thinggroup/line:1"
    );
    let job1 = first["jobId"].as_str().unwrap().to_string();
    let job = c.store.get_job(&job1).await.unwrap();
    assert_eq!(job.namespace.as_deref(), Some("aws-gg-deployment"));
    // The job document is the configuration the core's agent reads.
    let config: lichen_model::fleet::FleetConfiguration =
        serde_json::from_value(job.document.clone()).unwrap();
    assert_eq!(
        config.deployment_id,
        first["deploymentId"].as_str().unwrap()
    );
    let request = config.to_request(None, None).unwrap();
    assert_eq!(request.root_components_to_add["com.example.A"], "1.0.0");
    assert_eq!(request.component_update_policy.timeout_in_seconds, 10);
    assert_eq!(
        executions(c, &job1).await,
        vec![
            ("g-1".to_string(), JobExecutionStatus::Queued),
            ("g-2".to_string(), JobExecutionStatus::Queued)
        ]
    );
    let n = notified(c);
    assert!(
        n.contains(&"jobs:g-1".to_string()) && n.contains(&"jobs:g-2".to_string()),
        "{n:?}"
    );

    // A device takes its execution and reports; status shows it.
    let mut e = c
        .store
        .get_job_execution(&job1, "g-1")
        .await
        .unwrap()
        .unwrap();
    e.status = JobExecutionStatus::Succeeded;
    e.status_details
        .insert("detailed-deployment-status".into(), "SUCCESSFUL".into());
    e.version_number += 1;
    c.store.put_job_execution(&e, Some(1)).await.unwrap();
    let id1 = first["deploymentId"].as_str().unwrap();
    let status = c
        .expect("GET", &format!("/v1/deployments/{id1}/status"), None, 200)
        .await;
    assert_eq!(status["counts"], json!({"QUEUED": 1, "SUCCEEDED": 1}));
    let g1 = &status["devices"][0];
    assert_eq!(g1["thing"], "g-1");
    assert_eq!(
        g1["statusDetails"]["detailed-deployment-status"],
        "SUCCESSFUL"
    );

    // A replacement: revision 2, the first job and its pending execution canceled.
    let second = c
        .expect(
            "POST",
            "/v1/deployments",
            Some(json!({"target": "thinggroup/line",
                "components": {"com.example.A": {"componentVersion": "2.0.0"}}})),
            201,
        )
        .await;
    assert_eq!(second["revision"], 2);
    assert_eq!(
        c.store.get_job(&job1).await.unwrap().status,
        lichen_cloud_store::JobStatus::Canceled
    );
    assert_eq!(
        executions(c, &job1).await,
        vec![
            ("g-1".to_string(), JobExecutionStatus::Succeeded),
            ("g-2".to_string(), JobExecutionStatus::Canceled)
        ]
    );
    let job2 = second["jobId"].as_str().unwrap().to_string();
    assert_eq!(executions(c, &job2).await.len(), 2);
    let listed = c.expect("GET", "/v1/deployments", None, 200).await;
    assert_eq!(listed["deployments"].as_array().unwrap().len(), 1);
    let id2 = second["deploymentId"].as_str().unwrap();

    // The replaced one is history: listed with its state, readable, its results kept.
    let all = c
        .expect("GET", "/v1/deployments?historyFilter=ALL", None, 200)
        .await;
    let states: Vec<(String, String)> = all["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["deploymentId"].as_str().unwrap().to_owned(),
                d["deploymentStatus"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(states.len(), 2, "{all}");
    assert!(
        states.contains(&(id1.to_owned(), "INACTIVE".to_owned())),
        "{all}"
    );
    assert!(
        states.contains(&(id2.to_owned(), "ACTIVE".to_owned())),
        "{all}"
    );
    let old = c
        .expect("GET", &format!("/v1/deployments/{id1}"), None, 200)
        .await;
    assert_eq!(old["deploymentStatus"], "INACTIVE");
    assert_eq!(old["supersededBy"], id2);
    let old_status = c
        .expect("GET", &format!("/v1/deployments/{id1}/status"), None, 200)
        .await;
    assert_eq!(old_status["counts"], json!({"CANCELED": 1, "SUCCEEDED": 1}));
    c.expect_error(
        "GET",
        "/v1/deployments?historyFilter=SOME",
        None,
        422,
        "InvalidField",
        "historyFilter",
    )
    .await;
    // Cancelling it is refused naming its successor, whose job stays untouched.
    c.expect_error(
        "POST",
        &format!("/v1/deployments/{id1}/cancel"),
        None,
        409,
        "Superseded",
        id2,
    )
    .await;
    assert_eq!(
        c.store.get_job(&job2).await.unwrap().status,
        lichen_cloud_store::JobStatus::InProgress
    );
    assert!(
        executions(c, &job2)
            .await
            .iter()
            .all(|(_, s)| *s == JobExecutionStatus::Queued)
    );

    // Joining catches up; leaving cancels.
    c.expect("PUT", "/v1/thing-groups/line/members/late", None, 204)
        .await;
    assert_eq!(
        c.store
            .get_job_execution(&job2, "late")
            .await
            .unwrap()
            .unwrap()
            .status,
        JobExecutionStatus::Queued
    );
    assert!(notified(c).contains(&"jobs:late".to_string()));
    c.expect("DELETE", "/v1/thing-groups/line/members/late", None, 204)
        .await;
    assert_eq!(
        c.store
            .get_job_execution(&job2, "late")
            .await
            .unwrap()
            .unwrap()
            .status,
        JobExecutionStatus::Canceled
    );

    // Cancel: job and pending executions.
    let canceled = c
        .expect("POST", &format!("/v1/deployments/{id2}/cancel"), None, 200)
        .await;
    assert_eq!(canceled["deploymentStatus"], "CANCELED");
    assert!(
        executions(c, &job2)
            .await
            .iter()
            .all(|(_, s)| *s == JobExecutionStatus::Canceled)
    );
    // A canceled group deployment gives joining things nothing.
    c.expect("PUT", "/v1/thing-groups/line/members/late", None, 204)
        .await;
    assert_eq!(
        c.store
            .get_job_execution(&job2, "late")
            .await
            .unwrap()
            .unwrap()
            .status,
        JobExecutionStatus::Canceled
    );
}
on_both_backends!(group_deployments);

async fn thing_deployments(c: &Cloud) {
    component(c, "com.example.B", "1.0.0").await;
    component(c, "com.example.C", "1.0.0").await;
    thing(c, "solo").await;
    let d = c
        .expect(
            "POST",
            "/v1/deployments",
            Some(json!({"target": "thing/solo", "components": {
                "com.example.B": {"componentVersion": "1.0.0"},
                "com.example.C": {"componentVersion": "1.0.0"}}})),
            201,
        )
        .await;
    assert_eq!(d["jobId"], Value::Null);
    let shadow = c
        .store
        .get_shadow("solo", "AWSManagedGreengrassV2Deployment")
        .await
        .unwrap()
        .unwrap();
    let desired = &shadow.document["state"]["desired"];
    assert_eq!(desired["desiredStatus"], "ACTIVE");
    let desired: lichen_model::fleet::ShadowDeploymentDesired =
        serde_json::from_value(desired.clone()).unwrap();
    assert_eq!(
        desired.fleet_config.configuration_arn,
        d["configurationArn"].as_str().unwrap()
    );
    assert_eq!(desired.fleet_config.group().unwrap(), "thing/solo");
    assert!(notified(c).contains(&"shadow:solo/AWSManagedGreengrassV2Deployment".to_string()));
    // The device reports it succeeded (as its agent does, in the shadow's reported).
    let mut reported = shadow.clone();
    reported.document["state"]["reported"] = json!({
        "fleetConfigurationArnForStatus": d["configurationArn"],
        "status": "SUCCEEDED",
        "statusDetails": {"detailedStatus": "SUCCESSFUL"}});
    reported.version += 1;
    reported.document["version"] = json!(reported.version);
    c.store
        .put_shadow(&reported, Some(shadow.version))
        .await
        .unwrap();
    let id1 = d["deploymentId"].as_str().unwrap();
    let st = c
        .expect("GET", &format!("/v1/deployments/{id1}/status"), None, 200)
        .await;
    assert_eq!(st["devices"][0]["status"], "SUCCEEDED", "{st}");
    let v1 = reported.version;

    // A replacement drops the components the new one does not name.
    let d2 = c
        .expect(
            "POST",
            "/v1/deployments",
            Some(json!({"target": "thing/solo", "components": {
                "com.example.B": {"componentVersion": "1.0.0"}}})),
            201,
        )
        .await;
    assert_eq!(d2["revision"], 2);
    let shadow = c
        .store
        .get_shadow("solo", "AWSManagedGreengrassV2Deployment")
        .await
        .unwrap()
        .unwrap();
    assert!(shadow.version > v1);
    let comps = &shadow.document["state"]["desired"]["fleetConfig"]["components"];
    assert_eq!(comps.as_object().unwrap().len(), 1, "{comps}");

    // Status: QUEUED until the device reports on this configuration.
    let id = d2["deploymentId"].as_str().unwrap();
    let st = c
        .expect("GET", &format!("/v1/deployments/{id}/status"), None, 200)
        .await;
    assert_eq!(st["devices"][0]["status"], "QUEUED");
    // The replaced one keeps what its device said of it, though the shadow moved on.
    let old = c
        .expect("GET", &format!("/v1/deployments/{id1}"), None, 200)
        .await;
    assert_eq!(old["deploymentStatus"], "INACTIVE");
    assert_eq!(old["supersededBy"], id);
    let st = c
        .expect("GET", &format!("/v1/deployments/{id1}/status"), None, 200)
        .await;
    assert_eq!(st["devices"][0]["status"], "SUCCEEDED", "{st}");
    assert_eq!(
        st["devices"][0]["statusDetails"]["detailed-deployment-status"],
        "SUCCESSFUL"
    );
    c.expect_error(
        "POST",
        &format!("/v1/deployments/{id1}/cancel"),
        None,
        409,
        "Superseded",
        id,
    )
    .await;
    let shadow = c
        .store
        .get_shadow("solo", "AWSManagedGreengrassV2Deployment")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        shadow.document["state"]["desired"]["desiredStatus"], "ACTIVE",
        "a replaced deployment's cancel leaves its successor alone"
    );

    let canceled = c
        .expect("POST", &format!("/v1/deployments/{id}/cancel"), None, 200)
        .await;
    assert_eq!(canceled["deploymentStatus"], "CANCELED");
    let shadow = c
        .store
        .get_shadow("solo", "AWSManagedGreengrassV2Deployment")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        shadow.document["state"]["desired"]["desiredStatus"],
        "CANCELED"
    );
    assert_eq!(
        shadow.document["state"]["desired"]["fleetConfig"]["components"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
}
on_both_backends!(thing_deployments);

async fn bad_deployments_store_nothing(c: &Cloud) {
    component(c, "com.example.D", "1.0.0").await;
    thing(c, "t-bad").await;
    let cases = [
        (json!({"components": {}}), "targetArn"),
        (json!({"target": "group/x", "components": {}}), "targetArn"),
        (
            json!({"target": "thing/nobody", "components": {}}),
            "targetArn",
        ),
        (
            json!({"target": "thing/t-bad", "components": {"com.example.D": {"componentVersion": "9.9.9"}}}),
            "components.com.example.D.componentVersion",
        ),
        (
            json!({"target": "thing/t-bad", "components": {"com.example.D": {"componentVersion": "1.0.0",
                "configurationUpdate": {"merge": "{not json"}}}}),
            "components.com.example.D.configurationUpdate.merge",
        ),
    ];
    for (body, field) in cases {
        c.expect_error(
            "POST",
            "/v1/deployments",
            Some(body),
            422,
            "InvalidField",
            field,
        )
        .await;
    }
    let many: serde_json::Map<String, Value> = (0..501)
        .map(|i| (format!("c{i}"), json!({"componentVersion": "1.0.0"})))
        .collect();
    c.expect_error(
        "POST",
        "/v1/deployments",
        Some(json!({"target": "thing/t-bad", "components": many})),
        422,
        "InvalidField",
        "components",
    )
    .await;
    // Unknown fields are refused by name.
    let v = c
        .expect(
            "POST",
            "/v1/deployments",
            Some(json!({"target": "thing/t-bad", "components": {}, "bogus": 1})),
            400,
        )
        .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("bogus"),
        "{v}"
    );
    assert!(
        c.store
            .list_deployments(&Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.store
            .list_jobs(&Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.store
            .get_shadow("t-bad", "AWSManagedGreengrassV2Deployment")
            .await
            .unwrap()
            .is_none()
    );
    c.expect_error("GET", "/v1/deployments/nope", None, 404, "NotFound", "nope")
        .await;
}
on_both_backends!(bad_deployments_store_nothing);

/// The transaction refuses a write whose view of the target is stale, and leaves nothing.
async fn stale_writes_leave_nothing(c: &Cloud) {
    use lichen_cloud_store::{
        DeploymentTarget, FleetDeployment, FleetDeploymentWrite, Job, JobStatus,
    };
    thing(c, "s-1").await;
    let write = FleetDeploymentWrite {
        deployment: FleetDeployment {
            id: "dep-stale".into(),
            target: DeploymentTarget::Thing("s-1".into()),
            components: Default::default(),
            document: json!({}),
            created_at: "2026-01-01T00:00:00.000Z".into(),
        },
        replaces: Some("someone-else".into()),
        cancel_job: None,
        job: Some(Job {
            id: "job-stale".into(),
            document: json!({}),
            status: JobStatus::InProgress,
            targets: vec!["s-1".into()],
            namespace: Some("aws-gg-deployment".into()),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        }),
        executions: vec![],
        shadow: None,
        now_secs: 0,
        superseded_status: None,
    };
    assert!(matches!(
        c.store.create_fleet_deployment(&write).await,
        Err(lichen_cloud_store::StoreError::VersionConflict { .. })
    ));
    assert!(c.store.get_job("job-stale").await.is_err());
    // A failure after the job was written (an execution for a thing that does not exist)
    // rolls the job back too.
    let mut write = write;
    write.replaces = None;
    write.executions = vec![lichen_cloud_store::JobExecution {
        job_id: "job-stale".into(),
        thing: "no-such-thing".into(),
        status: JobExecutionStatus::Queued,
        status_details: Default::default(),
        version_number: 1,
        execution_number: 1,
        queued_at: 0,
        started_at: None,
        last_updated_at: 0,
    }];
    assert!(matches!(
        c.store.create_fleet_deployment(&write).await,
        Err(lichen_cloud_store::StoreError::NotFound { .. })
    ));
    assert!(c.store.get_job("job-stale").await.is_err());
    assert!(
        c.store
            .list_deployments(&Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );
}
on_both_backends!(stale_writes_leave_nothing);
