//! The real awsiotsdk clients (`awsiot.iotshadow`, `awsiot.iotjobs`) against the endpoint over
//! mTLS, on SQLite and on PostgreSQL.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use lichen_cloud_store::{Backend, Job, JobExecution, JobExecutionStatus, JobStatus};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

async fn shadows(db: Db) {
    let py = need!(python(), "python venv with awsiotsdk");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let creds = cloud.device("lamp-1").await;
    let (ok, out, err) = run(
        Command::new(&py).arg(py_script("shadow_client.py")).args([
            cloud.port().to_string(),
            cloud.ca_path().display().to_string(),
            creds.cert.display().to_string(),
            creds.key.display().to_string(),
            "lamp-1".into(),
        ]),
        120,
    )
    .await;
    println!("{out}");
    assert!(ok && out.contains("all ok"), "shadow client:\n{out}\n{err}");
    // What the service answered is what the store holds: the classic shadow is a tombstone at
    // version 3, the named one too.
    let classic = cloud.store.get_shadow("lamp-1", "").await.unwrap().unwrap();
    assert_eq!(classic.version, 3);
    assert_eq!(classic.document["deleted"], true);
    cloud.endpoint.shutdown().await;
}
both!(shadow_get_update_delete_delta_conflict, shadows);

async fn jobs(db: Db) {
    let py = need!(python(), "python venv with awsiotsdk");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let creds = cloud.device("core-7").await;
    let mut child = Command::new(&py)
        .arg(py_script("jobs_client.py"))
        .args([
            cloud.port().to_string(),
            cloud.ca_path().display().to_string(),
            creds.cert.display().to_string(),
            creds.key.display().to_string(),
            "core-7".into(),
            "deploy-1".into(),
        ])
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
    assert!(ready, "jobs client did not get ready:\n{out}");
    // Queue a job for the thing, as the control plane would, and notify it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    cloud
        .store
        .create_job(&Job {
            id: "deploy-1".into(),
            document: serde_json::json!({"operation": "install", "component": "com.example.Hello"}),
            status: JobStatus::InProgress,
            targets: vec!["core-7".into()],
            namespace: None,
            created_at: "2026-12-02T00:00:00Z".into(),
            updated_at: "2026-12-02T00:00:00Z".into(),
        })
        .await
        .unwrap();
    cloud
        .store
        .put_job_execution(
            &JobExecution {
                job_id: "deploy-1".into(),
                thing: "core-7".into(),
                status: JobExecutionStatus::Queued,
                status_details: Default::default(),
                version_number: 1,
                execution_number: 1,
                queued_at: now,
                started_at: None,
                last_updated_at: now,
            },
            None,
        )
        .await
        .unwrap();
    cloud.endpoint.notify_jobs("core-7").await;
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
        "jobs client:\n{out}\n{err}"
    );
    let exec = cloud
        .store
        .get_job_execution("deploy-1", "core-7")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exec.status, JobExecutionStatus::Succeeded);
    assert_eq!(exec.status_details["result"], "installed");
    assert_eq!(exec.version_number, 3);
    cloud.endpoint.shutdown().await;
}
both!(job_notified_started_completed, jobs);
