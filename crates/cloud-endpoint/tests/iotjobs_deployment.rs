//! A thing-group deployment as a Greengrass core sees it, driven by awsiotsdk's `iotjobs`
//! (a Python device over mTLS): a thing in a group, a fleet deployment written through the
//! store operation the cloud's deployments API uses (`Backend::create_fleet_deployment`: a
//! job in the `aws-gg-deployment` namespace whose document is the `FleetConfiguration`, one
//! QUEUED execution per member), the devices notified as the control plane notifies them
//! (`EndpointHandle::notify_jobs`). The device hears the namespaced notify-next, describes
//! `$next` in the namespace, starts the job with StartNextPendingJobExecution, updates it
//! IN_PROGRESS then SUCCEEDED on the namespaced update topic; the store then holds what the
//! deployment's status is computed from. On SQLite and on PostgreSQL.
//!
//! The SDK's IotJobsClient has no namespace parameter (its topics are the plain ones), so
//! the script uses the SDK's model classes on the namespaced topics over the same awscrt
//! connection; see tests/py/gg_deployment_job.py.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use lichen_cloud_store::{
    Backend, DeploymentTarget, FleetDeployment, FleetDeploymentWrite, Job, JobExecution,
    JobExecutionStatus, JobStatus, NewThingGroup, Page,
};
use lichen_model::fleet::{
    DEPLOYMENT_JOBS_NAMESPACE, FleetComponent, FleetConfiguration, configuration_arn, status_keys,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const THING: &str = "gg-core-1";
const GROUP: &str = "line-a";
const JOB_ID: &str = "job-7f3a";
const DEPLOYMENT_ID: &str = "dep-51c2";
const COMPONENT: &str = "com.example.Hello";
const VERSION: &str = "1.0.0";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// What `POST /v1/deployments` writes for a group target (crates/cloud/src/api/deployments.rs
/// `try_create`), for a group of one.
fn group_deployment() -> FleetDeploymentWrite {
    let now = now_secs();
    let group = format!("thinggroup/{GROUP}");
    let config = FleetConfiguration {
        deployment_id: DEPLOYMENT_ID.into(),
        configuration_arn: configuration_arn(&group, 1),
        creation_timestamp: now as u64 * 1000,
        components: BTreeMap::from([(
            COMPONENT.to_string(),
            FleetComponent {
                version: VERSION.into(),
                configuration_update: None,
                run_with: None,
            },
        )]),
        failure_handling_policy: Default::default(),
        component_update_policy: None,
        configuration_validation_policy: None,
        required_capabilities: Vec::new(),
        on_behalf_of: Some(group.clone()),
    };
    let document = serde_json::to_value(&config).unwrap();
    let created = "2026-12-03T12:00:00Z".to_string();
    FleetDeploymentWrite {
        deployment: FleetDeployment {
            id: DEPLOYMENT_ID.into(),
            target: DeploymentTarget::ThingGroup(GROUP.into()),
            components: BTreeMap::from([(COMPONENT.to_string(), VERSION.to_string())]),
            document: json!({
                "deploymentId": DEPLOYMENT_ID,
                "targetArn": group,
                "revision": 1,
                "configurationArn": config.configuration_arn,
                "jobId": JOB_ID,
                "deploymentStatus": "ACTIVE",
                "creationTimestamp": created,
                "fleetConfig": document,
            }),
            created_at: created.clone(),
        },
        replaces: None,
        cancel_job: None,
        job: Some(Job {
            id: JOB_ID.into(),
            document,
            status: JobStatus::InProgress,
            targets: vec![THING.into()],
            namespace: Some(DEPLOYMENT_JOBS_NAMESPACE.into()),
            created_at: created.clone(),
            updated_at: created,
        }),
        executions: vec![JobExecution {
            job_id: JOB_ID.into(),
            thing: THING.into(),
            status: JobExecutionStatus::Queued,
            status_details: BTreeMap::new(),
            version_number: 1,
            execution_number: 1,
            queued_at: now,
            started_at: None,
            last_updated_at: now,
        }],
        shadow: None,
        now_secs: now,
        superseded_status: None,
    }
}

async fn deployment_job_through_awsiotsdk(db: Db) {
    let py = need!(python(), "python venv with awsiotsdk");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let creds = cloud.device(THING).await;
    cloud
        .store
        .create_group(&NewThingGroup {
            name: GROUP.into(),
            description: None,
        })
        .await
        .unwrap();
    cloud.store.add_to_group(GROUP, THING).await.unwrap();

    let mut child = Command::new(&py)
        .arg(py_script("gg_deployment_job.py"))
        .arg(cloud.port().to_string())
        .arg(cloud.ca_path())
        .arg(&creds.cert)
        .arg(&creds.key)
        .args([THING, JOB_ID, DEPLOYMENT_ID, COMPONENT, VERSION])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            out.push_str(&l);
            out.push('\n');
            if l == "ready" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(ready, "the device did not get ready:\n{out}");

    // The deployment, as the API creates it, and the notification the control plane sends.
    let notified = cloud
        .store
        .create_fleet_deployment(&group_deployment())
        .await
        .unwrap();
    assert_eq!(notified, vec![THING.to_string()]);
    for thing in &notified {
        cloud.endpoint.notify_jobs(thing).await;
    }

    let done = tokio::time::timeout(Duration::from_secs(90), async {
        while let Ok(Some(l)) = lines.next_line().await {
            out.push_str(&l);
            out.push('\n');
            if l == "all ok" || l.starts_with("FAIL") {
                break;
            }
        }
    })
    .await;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut err)).await;
    }
    println!("{out}");
    assert!(
        done.is_ok() && out.contains("all ok"),
        "the awsiotsdk device:\n{out}\n{err}"
    );

    // What the deployment's status is computed from: the group's current deployment names
    // this job, whose only execution the device completed with Greengrass's status details.
    let current = cloud
        .store
        .current_deployment(&DeploymentTarget::ThingGroup(GROUP.into()))
        .await
        .unwrap()
        .expect("the group has a deployment");
    assert_eq!(current.id, DEPLOYMENT_ID);
    assert_eq!(current.document["jobId"], JOB_ID);
    let executions = cloud
        .store
        .list_job_executions_for_job(JOB_ID, &Page::first(100))
        .await
        .unwrap();
    assert_eq!(executions.len(), 1, "{executions:?}");
    let exec = &executions[0];
    assert_eq!(exec.thing, THING);
    assert_eq!(exec.status, JobExecutionStatus::Succeeded);
    // start-next (v2), IN_PROGRESS (v3), SUCCEEDED (v4); the stale update changed nothing.
    assert_eq!(exec.version_number, 4, "{exec:?}");
    assert!(exec.started_at.is_some(), "{exec:?}");
    assert_eq!(
        exec.status_details
            .get(status_keys::DETAILED_STATUS)
            .map(String::as_str),
        Some("SUCCESSFUL"),
        "{exec:?}"
    );
    let job = cloud.store.get_job(JOB_ID).await.unwrap();
    assert_eq!(job.namespace.as_deref(), Some(DEPLOYMENT_JOBS_NAMESPACE));
    cloud.endpoint.shutdown().await;
}

both!(
    deployment_job_seen_started_completed,
    deployment_job_through_awsiotsdk
);
