//! One suite, every backend: each check (in `conformance/`) is generic over `Backend` and runs against
//! SQLite (a temporary directory) and PostgreSQL (a throwaway cluster, `testing::PgCluster`),
//! both through `Store::open`, so the enum's delegation is exercised too.

#[path = "conformance/associations.rs"]
mod associations;
#[path = "conformance/content.rs"]
mod content;
#[path = "conformance/executions.rs"]
mod executions;
#[path = "conformance/history.rs"]
mod history;
#[path = "conformance/registry.rs"]
mod registry;
#[path = "conformance/streams.rs"]
mod streams;

mod fixtures {
    use std::collections::BTreeMap;

    use lichen_cloud_store::*;
    use serde_json::json;

    pub(crate) fn thing(name: &str) -> NewThing {
        NewThing {
            name: name.into(),
            attributes: Attributes::new(),
        }
    }

    pub(crate) fn cert(
        fingerprint: &str,
        kind: CertificateKind,
        thing: Option<&str>,
    ) -> CertificateRecord {
        CertificateRecord {
            fingerprint: fingerprint.into(),
            serial: format!("serial-{fingerprint}"),
            pem: "-----BEGIN CERTIFICATE-----\n...".into(),
            kind,
            status: CertificateStatus::Active,
            thing: thing.map(str::to_owned),
            created_at: "2026-12-01T00:00:00.000Z".into(),
            not_after: "2036-12-01T00:00:00.000Z".into(),
            revoked_at: None,
        }
    }

    pub(crate) fn shadow(thing: &str, name: &str, version: i64) -> ShadowRecord {
        ShadowRecord {
            thing: thing.into(),
            name: name.into(),
            document: json!({"state": {"reported": {"v": version}}, "version": version}),
            version,
        }
    }

    pub(crate) fn component(name: &str, version: &str, artifacts: &[&str]) -> ComponentVersion {
        ComponentVersion {
            name: name.into(),
            version: version.into(),
            recipe: json!({"ComponentName": name, "ComponentVersion": version}),
            artifacts: artifacts
                .iter()
                .map(|sha| StoredArtifact {
                    uri: format!("s3://bucket/{sha}"),
                    sha256: (*sha).into(),
                    size: 10,
                })
                .collect(),
            created_at: "2026-12-01T00:00:00.000Z".into(),
        }
    }

    pub(crate) fn deployment(
        id: &str,
        target: DeploymentTarget,
        components: &[(&str, &str)],
        at: &str,
    ) -> FleetDeployment {
        FleetDeployment {
            id: id.into(),
            target,
            components: components
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            document: json!({"deploymentId": id}),
            created_at: at.into(),
        }
    }

    pub(crate) fn job(id: &str, targets: &[&str]) -> Job {
        Job {
            id: id.into(),
            document: json!({"operation": "install"}),
            status: JobStatus::InProgress,
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            namespace: None,
            created_at: "2026-12-01T00:00:00.000Z".into(),
            updated_at: "2026-12-01T00:00:00.000Z".into(),
        }
    }

    pub(crate) fn execution(job_id: &str, thing: &str, queued_at: i64) -> JobExecution {
        JobExecution {
            job_id: job_id.into(),
            thing: thing.into(),
            status: JobExecutionStatus::Queued,
            status_details: BTreeMap::new(),
            version_number: 1,
            execution_number: 1,
            queued_at,
            started_at: None,
            last_updated_at: queued_at,
        }
    }

    #[macro_export]
    macro_rules! assert_err {
        ($result:expr, $pattern:pat) => {
            match $result {
                Err($pattern) => {}
                other => panic!("expected {}, got {other:?}", stringify!($pattern)),
            }
        };
    }
}

use associations::*;
use content::*;
use executions::*;
use fixtures::*;
use history::*;
use lichen_cloud_store::testing::PgCluster;
use lichen_cloud_store::*;
use registry::*;
use streams::*;

async fn sqlite_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), None).await.unwrap();
    assert_eq!(store.backend_name(), "sqlite");
    (dir, store)
}

async fn postgres_store() -> Option<Store> {
    let cluster = PgCluster::shared().expect("starting the test PostgreSQL cluster")?;
    let url = cluster.create_database().await.unwrap();
    let store = Store::open(std::path::Path::new("/nonexistent"), Some(&url))
        .await
        .unwrap();
    assert_eq!(store.backend_name(), "postgres");
    Some(store)
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (_dir, store) = super::sqlite_store().await;
                    super::$check(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(store) = super::postgres_store().await else {
                        eprintln!("skipped: PostgreSQL (initdb, pg_ctl) is not installed");
                        return;
                    };
                    super::$check(&store).await;
                }
            )*
        }
    };
}

conformance!(
    things_crud,
    paging,
    groups_and_membership,
    connectivity_and_presence,
    device_status,
    certificates,
    templates_and_ownership_tokens,
    components_and_deployments,
    shadows,
    racing_shadow_writers,
    jobs_and_executions,
    admin_tokens,
    delete_thing_cascades,
    device_deployments_and_admission,
    stream_records,
    deployment_history_and_cancel,
    deployment_history_is_bounded,
    execution_batches,
    client_device_associations,
    client_devices_per_core_are_bounded,
);

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), None).await.unwrap();
        store.create_thing(&thing("kept")).await.unwrap();
        store
            .put_shadow(&shadow("kept", "", 7), None)
            .await
            .unwrap();
    }
    let db = dir.path().join(SQLITE_FILE);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&db).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the database file is private");
    let store = Store::open(dir.path(), None).await.unwrap();
    assert_eq!(store.get_thing("kept").await.unwrap().name, "kept");
    assert_eq!(
        store.get_shadow("kept", "").await.unwrap().unwrap().version,
        7
    );
    drop(store);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), None).await.unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(SQLITE_FILE)).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 'future')",
        [SCHEMA_VERSION + 1],
    )
    .unwrap();
    drop(conn);
    let err = Store::open(dir.path(), None).await.unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
}

#[tokio::test]
async fn a_non_postgres_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_err!(
        Store::open(dir.path(), Some("mysql://root:secret@db/x")).await,
        StoreError::Invalid {
            field: "database url",
            ..
        }
    );
    // The message must not echo the URL (it may hold a password).
    let err = Store::open(dir.path(), Some("mysql://root:secret@db/x"))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("secret"));
}
