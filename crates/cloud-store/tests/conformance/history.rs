//! Conformance checks: a replaced deployment stays in the history (INACTIVE or CANCELED,
//! naming its successor), cancelling it is refused naming the successor and touches nothing,
//! cancelling the current one is one transaction, and the history is bounded per target.

use lichen_cloud_store::*;
use serde_json::json;

use crate::assert_err;
use crate::fixtures::*;

fn group_write(id: &str, job_id: &str, replaces: Option<(&str, &str)>) -> FleetDeploymentWrite {
    let mut job = job(job_id, &["m1", "m2"]);
    job.namespace = Some("aws-gg-deployment".into());
    let mut deployment = deployment(
        id,
        DeploymentTarget::ThingGroup("fleet".into()),
        &[],
        "2026-12-01T00:00:00.000Z",
    );
    deployment.document =
        json!({"deploymentId": id, "jobId": job_id, "deploymentStatus": "ACTIVE"});
    FleetDeploymentWrite {
        deployment,
        replaces: replaces.map(|(d, _)| d.to_owned()),
        cancel_job: replaces.map(|(_, j)| j.to_owned()),
        job: Some(job),
        executions: vec![execution(job_id, "m1", 1), execution(job_id, "m2", 1)],
        shadow: None,
        now_secs: 10,
        superseded_status: None,
    }
}

fn thing_write(
    id: &str,
    replaces: Option<&str>,
    shadow_version: i64,
    status: Option<serde_json::Value>,
) -> FleetDeploymentWrite {
    let mut deployment = deployment(
        id,
        DeploymentTarget::Thing("core1".into()),
        &[],
        "2026-12-01T00:00:00.000Z",
    );
    deployment.document = json!({"deploymentId": id, "deploymentStatus": "ACTIVE"});
    let expected = (shadow_version > 1).then_some(shadow_version - 1);
    FleetDeploymentWrite {
        deployment,
        replaces: replaces.map(str::to_owned),
        cancel_job: None,
        job: None,
        executions: vec![],
        shadow: Some((
            shadow("core1", "AWSManagedGreengrassV2Deployment", shadow_version),
            expected,
        )),
        now_secs: 10,
        superseded_status: status,
    }
}

async fn statuses<B: Backend>(store: &B, job_id: &str) -> Vec<JobExecutionStatus> {
    store
        .list_job_executions_for_job(job_id, &Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.status)
        .collect()
}

pub(crate) async fn deployment_history_and_cancel<B: Backend + Clone + 'static>(store: &B) {
    for t in ["core1", "m1", "m2"] {
        store.create_thing(&thing(t)).await.unwrap();
    }
    store
        .create_group(&NewThingGroup {
            name: "fleet".into(),
            description: None,
        })
        .await
        .unwrap();

    // A group deployment replaced: d1 moves to the history, INACTIVE, naming d2.
    store
        .create_fleet_deployment(&group_write("d1", "j1", None))
        .await
        .unwrap();
    store
        .create_fleet_deployment(&group_write("d2", "j2", Some(("d1", "j1"))))
        .await
        .unwrap();
    let d1 = store.get_deployment("d1").await.unwrap();
    assert_eq!(d1.document["deploymentStatus"], "INACTIVE");
    assert_eq!(d1.document["supersededBy"], "d2");
    assert_eq!(d1.target, DeploymentTarget::ThingGroup("fleet".into()));
    let current: Vec<String> = store
        .list_deployments(&Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(current, ["d2"], "only the current one by default");
    let all: Vec<(String, String)> = store
        .list_deployments_with_history(&Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            (
                d.id,
                d.document["deploymentStatus"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        all,
        [
            ("d1".to_owned(), "INACTIVE".to_owned()),
            ("d2".to_owned(), "ACTIVE".to_owned())
        ]
    );
    // Paged through both tables by id.
    let page = store
        .list_deployments_with_history(&Page {
            after: Some("d1".into()),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "d2");

    // Cancelling the replaced one is refused naming d2, and leaves d2's job alone.
    let old = FleetCancel {
        id: "d1".into(),
        shadow: None,
        now_secs: 20,
    };
    match store.cancel_fleet_deployment(&old).await {
        Err(StoreError::Superseded { key, by, .. }) => {
            assert_eq!((key.as_str(), by.as_str()), ("d1", "d2"));
        }
        other => panic!("expected Superseded, got {other:?}"),
    }
    assert_eq!(
        store.get_job("j2").await.unwrap().status,
        JobStatus::InProgress
    );
    assert_eq!(
        statuses(store, "j2").await,
        [JobExecutionStatus::Queued, JobExecutionStatus::Queued]
    );
    assert_err!(
        store
            .cancel_fleet_deployment(&FleetCancel {
                id: "nope".into(),
                shadow: None,
                now_secs: 20,
            })
            .await,
        StoreError::NotFound { .. }
    );

    // Cancelling the current one: job, pending executions and the document, together.
    let (d2, things) = store
        .cancel_fleet_deployment(&FleetCancel {
            id: "d2".into(),
            shadow: None,
            now_secs: 20,
        })
        .await
        .unwrap();
    assert_eq!(d2.document["deploymentStatus"], "CANCELED");
    assert_eq!(things, ["m1", "m2"]);
    assert_eq!(
        store.get_job("j2").await.unwrap().status,
        JobStatus::Canceled
    );
    assert_eq!(
        statuses(store, "j2").await,
        [JobExecutionStatus::Canceled, JobExecutionStatus::Canceled]
    );
    assert_eq!(
        store.get_deployment("d2").await.unwrap().document["deploymentStatus"],
        "CANCELED"
    );
    // A canceled deployment replaced stays CANCELED in the history.
    store
        .create_fleet_deployment(&group_write("d3", "j3", Some(("d2", "j2"))))
        .await
        .unwrap();
    let d2 = store.get_deployment("d2").await.unwrap();
    assert_eq!(d2.document["deploymentStatus"], "CANCELED");
    assert_eq!(d2.document["supersededBy"], "d3");

    // A thing deployment replaced keeps the device's status it was given.
    store
        .create_fleet_deployment(&thing_write("t1", None, 1, None))
        .await
        .unwrap();
    let said = json!({"thing": "core1", "status": "SUCCEEDED", "statusDetails": {}});
    store
        .create_fleet_deployment(&thing_write("t2", Some("t1"), 2, Some(said.clone())))
        .await
        .unwrap();
    let t1 = store.get_deployment("t1").await.unwrap();
    assert_eq!(t1.document["supersededBy"], "t2");
    assert_eq!(t1.document["deviceStatus"], said);
    // Cancelling a thing deployment needs its shadow, at the version it was read at.
    assert_err!(
        store
            .cancel_fleet_deployment(&FleetCancel {
                id: "t2".into(),
                shadow: None,
                now_secs: 20,
            })
            .await,
        StoreError::Invalid { .. }
    );
    let stale = FleetCancel {
        id: "t2".into(),
        shadow: Some((
            shadow("core1", "AWSManagedGreengrassV2Deployment", 3),
            Some(1),
        )),
        now_secs: 20,
    };
    assert_err!(
        store.cancel_fleet_deployment(&stale).await,
        StoreError::VersionConflict { .. }
    );
    assert_eq!(
        store.get_deployment("t2").await.unwrap().document["deploymentStatus"],
        "ACTIVE",
        "a refused cancel changes nothing"
    );
    let fresh = FleetCancel {
        shadow: Some((
            shadow("core1", "AWSManagedGreengrassV2Deployment", 3),
            Some(2),
        )),
        ..stale
    };
    let (t2, things) = store.cancel_fleet_deployment(&fresh).await.unwrap();
    assert_eq!(t2.document["deploymentStatus"], "CANCELED");
    assert_eq!(things, ["core1"]);
    assert_eq!(
        store
            .get_shadow("core1", "AWSManagedGreengrassV2Deployment")
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
}

pub(crate) async fn deployment_history_is_bounded<B: Backend + Clone + 'static>(store: &B) {
    store.create_thing(&thing("core1")).await.unwrap();
    let total = HISTORY_PER_TARGET + 3;
    for i in 0..total {
        store
            .put_deployment(&deployment(
                &format!("d{i:04}"),
                DeploymentTarget::Thing("core1".into()),
                &[],
                "2026-12-01T00:00:00.000Z",
            ))
            .await
            .unwrap();
    }
    let all = store
        .list_deployments_with_history(&Page::default())
        .await
        .unwrap();
    assert_eq!(
        all.len() as i64,
        HISTORY_PER_TARGET + 1,
        "the bound + the current one"
    );
    // The oldest went first; the newest superseded ones are kept.
    assert_err!(
        store.get_deployment("d0000").await,
        StoreError::NotFound { .. }
    );
    assert_eq!(
        store.get_deployment("d0003").await.unwrap().document["supersededBy"],
        "d0004"
    );
    assert_eq!(all.last().unwrap().id, format!("d{:04}", total - 1));
}
