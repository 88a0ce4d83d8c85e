//! Conformance checks: components and deployments, shadows, jobs, admin tokens.

use lichen_cloud_store::*;

use crate::assert_err;
use crate::fixtures::*;

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub(crate) async fn components_and_deployments<B: Backend + Clone + 'static>(store: &B) {
    for version in [
        "1.0.0",
        "1.10.0",
        "1.2.0",
        "2.0.0-beta.1",
        "2.0.0",
        "2.0.0-alpha",
    ] {
        store
            .create_component_version(&component("com.example.App", version, &[SHA_A]))
            .await
            .unwrap();
    }
    store
        .create_component_version(&component("com.example.Other", "0.1.0", &[SHA_B]))
        .await
        .unwrap();
    assert_err!(
        store
            .create_component_version(&component("com.example.App", "1.0.0", &[]))
            .await,
        StoreError::AlreadyExists {
            kind: "component version",
            ..
        }
    );
    assert_err!(
        store
            .create_component_version(&component("com.example.App", "not-semver", &[]))
            .await,
        StoreError::Invalid {
            field: "version",
            ..
        }
    );
    let got = store
        .get_component_version("com.example.App", "1.10.0")
        .await
        .unwrap();
    assert_eq!(got, component("com.example.App", "1.10.0", &[SHA_A]));
    assert_err!(
        store
            .get_component_version("com.example.App", "9.9.9")
            .await,
        StoreError::NotFound { .. }
    );

    let versions = |list: Vec<ComponentVersion>| {
        list.into_iter()
            .map(|c| format!("{}@{}", c.name, c.version))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        versions(
            store
                .list_component_versions(None, &Page::default())
                .await
                .unwrap()
        ),
        [
            "com.example.App@2.0.0",
            "com.example.App@2.0.0-beta.1",
            "com.example.App@2.0.0-alpha",
            "com.example.App@1.10.0",
            "com.example.App@1.2.0",
            "com.example.App@1.0.0",
            "com.example.Other@0.1.0",
        ]
    );
    let page = Page {
        after: Some("com.example.App@1.10.0".into()),
        limit: 2,
    };
    assert_eq!(
        versions(store.list_component_versions(None, &page).await.unwrap()),
        ["com.example.App@1.2.0", "com.example.App@1.0.0"]
    );
    let page = Page {
        after: Some("2.0.0-alpha".into()),
        limit: 0,
    };
    assert_eq!(
        versions(
            store
                .list_component_versions(Some("com.example.App"), &page)
                .await
                .unwrap()
        ),
        [
            "com.example.App@1.10.0",
            "com.example.App@1.2.0",
            "com.example.App@1.0.0"
        ]
    );
    assert_eq!(
        versions(
            store
                .list_component_versions(Some("com.example.Other"), &Page::default())
                .await
                .unwrap()
        ),
        ["com.example.Other@0.1.0"]
    );

    assert!(store.artifact_referenced(SHA_A).await.unwrap());
    assert!(!store.artifact_referenced(&"c".repeat(64)).await.unwrap());

    store.create_thing(&thing("core1")).await.unwrap();
    let first = deployment(
        "d1",
        DeploymentTarget::Thing("core1".into()),
        &[("com.example.App", "1.0.0")],
        "2026-12-01T00:00:00.000Z",
    );
    store.put_deployment(&first).await.unwrap();
    store
        .put_deployment(&deployment(
            "d2",
            DeploymentTarget::ThingGroup("fleet".into()),
            &[("com.example.App", "1.0.0"), ("com.example.Other", "0.1.0")],
            "2026-12-02T00:00:00.000Z",
        ))
        .await
        .unwrap();
    assert_eq!(store.get_deployment("d1").await.unwrap(), first);
    assert_eq!(
        store
            .deployments_using("com.example.App", "1.0.0")
            .await
            .unwrap(),
        ["d2", "d1"],
        "newest first"
    );
    assert_err!(
        store
            .delete_component_version("com.example.App", "1.0.0")
            .await,
        StoreError::InUse {
            kind: "component version",
            ..
        }
    );
    // A new deployment to core1 supersedes d1, so 1.0.0 is named only by d2 now.
    store
        .put_deployment(&deployment(
            "d3",
            DeploymentTarget::Thing("core1".into()),
            &[("com.example.App", "2.0.0")],
            "2026-12-03T00:00:00.000Z",
        ))
        .await
        .unwrap();
    // d1 is history now: readable, INACTIVE, naming its successor; it no longer pins 1.0.0.
    let d1 = store.get_deployment("d1").await.unwrap();
    assert_eq!(d1.document["deploymentStatus"], "INACTIVE");
    assert_eq!(d1.document["supersededBy"], "d3");
    assert_eq!(
        store
            .deployments_using("com.example.App", "1.0.0")
            .await
            .unwrap(),
        ["d2"]
    );
    let ids: Vec<_> = store
        .list_deployments(&Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["d2", "d3"]);

    store
        .delete_component_version("com.example.App", "1.2.0")
        .await
        .unwrap();
    assert_err!(
        store
            .delete_component_version("com.example.App", "1.2.0")
            .await,
        StoreError::NotFound { .. }
    );
    store
        .delete_component_version("com.example.Other", "0.1.0")
        .await
        .expect_err("d2 still names Other 0.1.0");
    store
        .put_deployment(&deployment(
            "d4",
            DeploymentTarget::ThingGroup("fleet".into()),
            &[],
            "2026-12-04T00:00:00.000Z",
        ))
        .await
        .unwrap();
    store
        .delete_component_version("com.example.Other", "0.1.0")
        .await
        .unwrap();
    assert!(!store.artifact_referenced(SHA_B).await.unwrap());
    assert!(store.artifact_referenced(SHA_A).await.unwrap());
}

pub(crate) async fn shadows<B: Backend + Clone + 'static>(store: &B) {
    store.create_thing(&thing("dev")).await.unwrap();
    assert_eq!(store.get_shadow("dev", "").await.unwrap(), None);
    store.put_shadow(&shadow("dev", "", 1), None).await.unwrap();
    assert_err!(
        store.put_shadow(&shadow("dev", "", 1), None).await,
        StoreError::VersionConflict {
            expected: 0,
            found: 1,
            ..
        }
    );
    store
        .put_shadow(&shadow("dev", "", 2), Some(1))
        .await
        .unwrap();
    assert_err!(
        store.put_shadow(&shadow("dev", "", 2), Some(1)).await,
        StoreError::VersionConflict {
            expected: 1,
            found: 2,
            ..
        }
    );
    assert_eq!(
        store.get_shadow("dev", "").await.unwrap(),
        Some(shadow("dev", "", 2))
    );
    assert_err!(
        store
            .put_shadow(&shadow("dev", "missing", 2), Some(1))
            .await,
        StoreError::VersionConflict { found: 0, .. }
    );
    assert_err!(
        store.put_shadow(&shadow("ghost", "", 1), None).await,
        StoreError::NotFound { kind: "thing", .. }
    );

    for name in ["zeta", "alpha", "mid"] {
        store
            .put_shadow(&shadow("dev", name, 1), None)
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .list_named_shadows("dev", &Page::default())
            .await
            .unwrap(),
        ["alpha", "mid", "zeta"],
        "the classic shadow is not a named one"
    );
    assert_eq!(
        store
            .list_named_shadows(
                "dev",
                &Page {
                    after: Some("alpha".into()),
                    limit: 1
                }
            )
            .await
            .unwrap(),
        ["mid"]
    );
    assert_eq!(
        store.get_shadow("dev", "mid").await.unwrap(),
        Some(shadow("dev", "mid", 1))
    );

    assert_err!(
        store.delete_shadow("dev", "", Some(1)).await,
        StoreError::VersionConflict {
            expected: 1,
            found: 2,
            ..
        }
    );
    store.delete_shadow("dev", "", Some(2)).await.unwrap();
    assert_eq!(store.get_shadow("dev", "").await.unwrap(), None);
    assert_err!(
        store.delete_shadow("dev", "", None).await,
        StoreError::NotFound { .. }
    );
    store.delete_shadow("dev", "zeta", None).await.unwrap();
    assert_eq!(
        store
            .list_named_shadows("dev", &Page::default())
            .await
            .unwrap(),
        ["alpha", "mid"]
    );
    // After a delete the shadow starts again from "must not exist".
    store.put_shadow(&shadow("dev", "", 3), None).await.unwrap();
}

pub(crate) async fn racing_shadow_writers<B: Backend + Clone + 'static>(store: &B) {
    store.create_thing(&thing("racer")).await.unwrap();
    store
        .put_shadow(&shadow("racer", "", 1), None)
        .await
        .unwrap();
    for round in 1..=5i64 {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.put_shadow(&shadow("racer", "", round + 1), Some(round))
                    .await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => wins += 1,
                Err(StoreError::VersionConflict { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer wins");
        assert_eq!(
            store
                .get_shadow("racer", "")
                .await
                .unwrap()
                .unwrap()
                .version,
            round + 1
        );
    }
    // And creation races the same way.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.put_shadow(&shadow("racer", "new", 1), None).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap().is_ok());
    }
    assert_eq!(wins, 1);
}

pub(crate) async fn jobs_and_executions<B: Backend + Clone + 'static>(store: &B) {
    store.create_thing(&thing("d1")).await.unwrap();
    store.create_thing(&thing("d2")).await.unwrap();
    let j1 = job("job1", &["d1", "d2"]);
    store.create_job(&j1).await.unwrap();
    assert_err!(
        store.create_job(&j1).await,
        StoreError::AlreadyExists { kind: "job", .. }
    );
    assert_eq!(store.get_job("job1").await.unwrap(), j1);
    let j1_done = Job {
        status: JobStatus::Completed,
        updated_at: "2026-12-05T00:00:00.000Z".into(),
        ..j1.clone()
    };
    store.update_job(&j1_done).await.unwrap();
    assert_eq!(store.get_job("job1").await.unwrap(), j1_done);
    assert_err!(
        store.update_job(&job("ghost", &[])).await,
        StoreError::NotFound { .. }
    );
    store
        .create_job(&Job {
            namespace: Some("aws-gg-deployment".into()),
            ..job("job0", &["d1"])
        })
        .await
        .unwrap();
    store.create_job(&job("job2", &["d1"])).await.unwrap();
    let ids: Vec<_> = store
        .list_jobs(&Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(ids, ["job0", "job1", "job2"]);
    assert_eq!(
        store.get_job("job0").await.unwrap().namespace.as_deref(),
        Some("aws-gg-deployment")
    );

    // Queued out of key order: job2 first, then job0, then job1.
    store
        .put_job_execution(&execution("job2", "d1", 100), None)
        .await
        .unwrap();
    store
        .put_job_execution(&execution("job0", "d1", 200), None)
        .await
        .unwrap();
    store
        .put_job_execution(&execution("job1", "d1", 200), None)
        .await
        .unwrap();
    store
        .put_job_execution(&execution("job1", "d2", 150), None)
        .await
        .unwrap();
    assert_err!(
        store
            .put_job_execution(&execution("job1", "d1", 200), None)
            .await,
        StoreError::VersionConflict {
            kind: "job execution",
            expected: 0,
            found: 1,
            ..
        }
    );
    assert_err!(
        store
            .put_job_execution(&execution("ghost", "d1", 1), None)
            .await,
        StoreError::NotFound { kind: "job", .. }
    );
    assert_err!(
        store
            .put_job_execution(&execution("job1", "ghost", 1), None)
            .await,
        StoreError::NotFound { kind: "thing", .. }
    );

    let started = JobExecution {
        status: JobExecutionStatus::InProgress,
        status_details: [("step".to_owned(), "download".to_owned())].into(),
        version_number: 2,
        started_at: Some(300),
        last_updated_at: 300,
        ..execution("job0", "d1", 200)
    };
    store.put_job_execution(&started, Some(1)).await.unwrap();
    assert_eq!(
        store.get_job_execution("job0", "d1").await.unwrap(),
        Some(started.clone())
    );
    assert_err!(
        store.put_job_execution(&started, Some(1)).await,
        StoreError::VersionConflict {
            expected: 1,
            found: 2,
            ..
        }
    );
    assert_eq!(store.get_job_execution("job0", "d2").await.unwrap(), None);

    let order = |list: Vec<JobExecution>| list.into_iter().map(|e| e.job_id).collect::<Vec<_>>();
    assert_eq!(
        order(
            store
                .list_job_executions_for_thing("d1", &[], &Page::default())
                .await
                .unwrap()
        ),
        ["job2", "job0", "job1"],
        "oldest queued first, job id breaking ties"
    );
    assert_eq!(
        order(
            store
                .list_job_executions_for_thing(
                    "d1",
                    &[JobExecutionStatus::Queued],
                    &Page::default()
                )
                .await
                .unwrap()
        ),
        ["job2", "job1"]
    );
    assert_eq!(
        order(
            store
                .list_job_executions_for_thing(
                    "d1",
                    &[
                        JobExecutionStatus::InProgress,
                        JobExecutionStatus::Succeeded
                    ],
                    &Page::default()
                )
                .await
                .unwrap()
        ),
        ["job0"]
    );
    assert_eq!(
        order(
            store
                .list_job_executions_for_thing(
                    "d1",
                    &[],
                    &Page {
                        after: Some("job2".into()),
                        limit: 1
                    }
                )
                .await
                .unwrap()
        ),
        ["job0"]
    );
    assert_eq!(
        order(
            store
                .list_job_executions_for_thing(
                    "d1",
                    &[],
                    &Page {
                        after: Some("job0".into()),
                        limit: 0
                    }
                )
                .await
                .unwrap()
        ),
        ["job1"]
    );
    let things: Vec<_> = store
        .list_job_executions_for_job("job1", &Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.thing)
        .collect();
    assert_eq!(things, ["d1", "d2"]);
    assert_err!(
        store
            .list_job_executions_for_job("ghost", &Page::default())
            .await,
        StoreError::NotFound { .. }
    );
}

pub(crate) async fn admin_tokens<B: Backend + Clone + 'static>(store: &B) {
    let token = AdminToken {
        id: "tok1".into(),
        token_hash: "h1".into(),
        description: "ops laptop".into(),
        created_at: "2026-12-01T00:00:00.000Z".into(),
    };
    store.put_admin_token(&token).await.unwrap();
    assert_err!(
        store.put_admin_token(&token).await,
        StoreError::AlreadyExists { .. }
    );
    assert_err!(
        store
            .put_admin_token(&AdminToken {
                id: "tok2".into(),
                ..token.clone()
            })
            .await,
        StoreError::AlreadyExists { .. }
    );
    store
        .put_admin_token(&AdminToken {
            id: "tok0".into(),
            token_hash: "h0".into(),
            ..token.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        store.find_admin_token("h1").await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.find_admin_token("nope").await.unwrap(), None);
    let ids: Vec<_> = store
        .list_admin_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["tok0", "tok1"]);
    store.delete_admin_token("tok1").await.unwrap();
    assert_eq!(store.find_admin_token("h1").await.unwrap(), None);
    assert_err!(
        store.delete_admin_token("tok1").await,
        StoreError::NotFound { .. }
    );
}

/// What the device HTTPS API decides on: a thing's deployments (its own, then its groups'),
/// and which certificates may act as a device.
pub(crate) async fn device_deployments_and_admission<B: Backend + Clone + 'static>(store: &B) {
    store.create_thing(&thing("dev")).await.unwrap();
    for g in ["g1", "g2", "g3"] {
        store
            .create_group(&NewThingGroup {
                name: g.into(),
                description: None,
            })
            .await
            .unwrap();
    }
    store.add_to_group("g2", "dev").await.unwrap();
    store.add_to_group("g1", "dev").await.unwrap();
    assert!(store.deployments_for_thing("dev").await.unwrap().is_empty());
    let at = "2026-12-01T00:00:00.000Z";
    for (id, target) in [
        ("d-g1", DeploymentTarget::ThingGroup("g1".into())),
        ("d-g3", DeploymentTarget::ThingGroup("g3".into())),
        ("d-dev", DeploymentTarget::Thing("dev".into())),
    ] {
        store
            .put_deployment(&deployment(id, target, &[("c.A", "1.0.0")], at))
            .await
            .unwrap();
    }
    let ids: Vec<String> = store
        .deployments_for_thing("dev")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["d-dev", "d-g1"], "own first, then member groups only");
    assert_err!(
        store.deployments_for_thing("nobody").await,
        StoreError::NotFound { .. }
    );

    store
        .put_certificate(&cert("f-dev", CertificateKind::Device, Some("dev")))
        .await
        .unwrap();
    store
        .put_certificate(&cert("f-loose", CertificateKind::Device, None))
        .await
        .unwrap();
    store
        .put_certificate(&cert("f-claim", CertificateKind::Claim, None))
        .await
        .unwrap();
    assert_eq!(device_thing(store, "f-dev").await.unwrap(), "dev");
    assert!(matches!(
        device_thing(store, "f-loose").await,
        Err(CertificateRefusal::NotAttached(f)) if f == "f-loose"
    ));
    assert!(matches!(
        device_thing(store, "f-claim").await,
        Err(CertificateRefusal::NotDevice(_))
    ));
    assert!(matches!(
        device_thing(store, "f-none").await,
        Err(CertificateRefusal::NotRegistered(_))
    ));
    store.revoke_certificate("f-dev", at).await.unwrap();
    let refused = device_thing(store, "f-dev").await.unwrap_err();
    assert!(matches!(refused, CertificateRefusal::Revoked(_)));
    assert_eq!(refused.to_string(), "certificate f-dev is revoked");
}
