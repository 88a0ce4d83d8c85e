//! One suite, every backend: each check below is generic over `Backend` and runs against
//! SQLite (a temporary directory) and PostgreSQL (a throwaway cluster, `testing::PgCluster`),
//! both through `Store::open`, so the enum's delegation is exercised too.

use std::collections::BTreeMap;

use lichen_cloud_store::testing::PgCluster;
use lichen_cloud_store::*;
use serde_json::json;

fn thing(name: &str) -> NewThing {
    NewThing {
        name: name.into(),
        attributes: Attributes::new(),
    }
}

fn cert(fingerprint: &str, kind: CertificateKind, thing: Option<&str>) -> CertificateRecord {
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

fn shadow(thing: &str, name: &str, version: i64) -> ShadowRecord {
    ShadowRecord {
        thing: thing.into(),
        name: name.into(),
        document: json!({"state": {"reported": {"v": version}}, "version": version}),
        version,
    }
}

fn component(name: &str, version: &str, artifacts: &[&str]) -> ComponentVersion {
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

fn deployment(
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

fn job(id: &str, targets: &[&str]) -> Job {
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

fn execution(job_id: &str, thing: &str, queued_at: i64) -> JobExecution {
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

macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern)),
        }
    };
}

// ---------------------------------------------------------------------------------------------

async fn things_crud(store: &Store) {
    let created = store
        .create_thing(&NewThing {
            name: "alpha".into(),
            attributes: [("model".to_owned(), "x1".to_owned())].into(),
        })
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(store.get_thing("alpha").await.unwrap(), created);
    assert_err!(
        store.create_thing(&thing("alpha")).await,
        StoreError::AlreadyExists { kind: "thing", .. }
    );
    assert_err!(
        store.get_thing("nope").await,
        StoreError::NotFound { kind: "thing", .. }
    );

    let attrs: Attributes = [("model".to_owned(), "x2".to_owned())].into();
    let updated = store
        .set_thing_attributes("alpha", &attrs, Some(1))
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.attributes, attrs);
    // A writer that read version 1 is refused now.
    assert_err!(
        store
            .set_thing_attributes("alpha", &Attributes::new(), Some(1))
            .await,
        StoreError::VersionConflict {
            expected: 1,
            found: 2,
            ..
        }
    );
    // No expected version: unconditional.
    let unconditional = store
        .set_thing_attributes("alpha", &Attributes::new(), None)
        .await
        .unwrap();
    assert_eq!(unconditional.version, 3);
    assert_eq!(store.get_thing("alpha").await.unwrap(), unconditional);
    assert_err!(
        store.set_thing_attributes("nope", &attrs, None).await,
        StoreError::NotFound { .. }
    );
    store.delete_thing("alpha").await.unwrap();
    assert_err!(
        store.delete_thing("alpha").await,
        StoreError::NotFound { .. }
    );
}

async fn paging(store: &Store) {
    // MAX_PAGE + 1 things, so the cap itself is observable.
    let total = MAX_PAGE as usize + 1;
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (chunk..total).step_by(8) {
                store
                    .create_thing(&thing(&format!("thing-{i:05}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let capped = store.list_things(&Page::first(0)).await.unwrap();
    assert_eq!(capped.len(), MAX_PAGE as usize, "limit 0 means MAX_PAGE");
    let capped = store
        .list_things(&Page::first(MAX_PAGE + 500))
        .await
        .unwrap();
    assert_eq!(capped.len(), MAX_PAGE as usize, "a larger limit is capped");

    let mut seen = Vec::new();
    let mut page = Page::first(300);
    loop {
        let batch = store.list_things(&page).await.unwrap();
        assert!(batch.len() <= 300);
        if batch.is_empty() {
            break;
        }
        page.after = Some(batch.last().unwrap().name.clone());
        seen.extend(batch.into_iter().map(|t| t.name));
    }
    let expected: Vec<String> = (0..total).map(|i| format!("thing-{i:05}")).collect();
    assert_eq!(seen, expected, "pages cover every thing once, in key order");
}

async fn groups_and_membership(store: &Store) {
    for name in ["a", "b", "c"] {
        store.create_thing(&thing(name)).await.unwrap();
    }
    let group = store
        .create_group(&NewThingGroup {
            name: "fleet".into(),
            description: Some("all of them".into()),
        })
        .await
        .unwrap();
    assert_eq!(store.get_group("fleet").await.unwrap(), group);
    store
        .create_group(&NewThingGroup {
            name: "edge".into(),
            description: None,
        })
        .await
        .unwrap();
    assert_err!(
        store
            .create_group(&NewThingGroup {
                name: "fleet".into(),
                description: None
            })
            .await,
        StoreError::AlreadyExists {
            kind: "thing group",
            ..
        }
    );
    let names: Vec<_> = store
        .list_groups(&Page::default())
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["edge", "fleet"]);

    for t in ["c", "a", "b"] {
        store.add_to_group("fleet", t).await.unwrap();
    }
    store.add_to_group("fleet", "a").await.unwrap(); // idempotent
    store.add_to_group("edge", "a").await.unwrap();
    assert_eq!(
        store
            .group_members("fleet", &Page::default())
            .await
            .unwrap(),
        ["a", "b", "c"]
    );
    let second_page = Page {
        after: Some("a".into()),
        limit: 1,
    };
    assert_eq!(
        store.group_members("fleet", &second_page).await.unwrap(),
        ["b"]
    );
    assert_eq!(store.groups_of("a").await.unwrap(), ["edge", "fleet"]);
    assert_err!(
        store.add_to_group("fleet", "ghost").await,
        StoreError::NotFound { kind: "thing", .. }
    );
    assert_err!(
        store.add_to_group("ghosts", "a").await,
        StoreError::NotFound {
            kind: "thing group",
            ..
        }
    );
    assert_err!(
        store.group_members("ghosts", &Page::default()).await,
        StoreError::NotFound { .. }
    );

    store.remove_from_group("fleet", "b").await.unwrap();
    store.remove_from_group("fleet", "b").await.unwrap(); // not a member any more: fine
    assert_eq!(
        store
            .group_members("fleet", &Page::default())
            .await
            .unwrap(),
        ["a", "c"]
    );

    store.delete_group("edge").await.unwrap();
    assert_err!(store.get_group("edge").await, StoreError::NotFound { .. });
    assert_err!(
        store.delete_group("edge").await,
        StoreError::NotFound { .. }
    );
    assert_eq!(store.groups_of("a").await.unwrap(), ["fleet"]);
}

async fn connectivity_and_presence(store: &Store) {
    store.create_thing(&thing("core1")).await.unwrap();
    assert_eq!(store.get_connectivity("core1").await.unwrap(), None);
    let info = Connectivity {
        thing: "core1".into(),
        endpoints: vec![ConnectivityEndpoint {
            host_address: "10.0.0.5".into(),
            port: 8883,
            metadata: String::new(),
        }],
        reported_at: "2026-12-01T00:00:00.000Z".into(),
    };
    store.put_connectivity(&info).await.unwrap();
    assert_eq!(
        store.get_connectivity("core1").await.unwrap(),
        Some(info.clone())
    );
    let moved = Connectivity {
        endpoints: vec![],
        reported_at: "2026-12-02T00:00:00.000Z".into(),
        ..info
    };
    store.put_connectivity(&moved).await.unwrap();
    assert_eq!(store.get_connectivity("core1").await.unwrap(), Some(moved));
    assert_err!(
        store
            .put_connectivity(&Connectivity {
                thing: "ghost".into(),
                endpoints: vec![],
                reported_at: String::new()
            })
            .await,
        StoreError::NotFound { .. }
    );

    let online = Presence {
        thing: "core1".into(),
        online: true,
        client_id: "core1".into(),
        at: "2026-12-01T00:00:00.000Z".into(),
    };
    store.set_presence(&online).await.unwrap();
    assert_eq!(
        store.get_presence("core1").await.unwrap(),
        Some(online.clone())
    );
    let offline = Presence {
        online: false,
        ..online
    };
    store.set_presence(&offline).await.unwrap();
    assert_eq!(store.get_presence("core1").await.unwrap(), Some(offline));
    assert_eq!(store.get_presence("ghost").await.unwrap(), None);
}

async fn certificates(store: &Store) {
    store.create_thing(&thing("dev1")).await.unwrap();
    store.create_thing(&thing("dev2")).await.unwrap();
    let device = cert("aa01", CertificateKind::Device, None);
    store.put_certificate(&device).await.unwrap();
    assert_err!(
        store.put_certificate(&device).await,
        StoreError::AlreadyExists {
            kind: "certificate",
            ..
        }
    );
    store
        .put_certificate(&cert("bb02", CertificateKind::Claim, None))
        .await
        .unwrap();
    store
        .put_certificate(&cert("cc03", CertificateKind::Device, Some("dev2")))
        .await
        .unwrap();
    assert_err!(
        store
            .put_certificate(&cert("dd04", CertificateKind::Device, Some("ghost")))
            .await,
        StoreError::NotFound { .. }
    );
    assert_err!(
        store
            .put_certificate(&cert("dd04", CertificateKind::Claim, Some("dev1")))
            .await,
        StoreError::Invalid { .. }
    );

    store.attach_certificate("aa01", "dev1").await.unwrap();
    store.attach_certificate("aa01", "dev1").await.unwrap(); // same thing: fine
    assert_err!(
        store.attach_certificate("aa01", "dev2").await,
        StoreError::InUse { .. }
    );
    assert_err!(
        store.attach_certificate("bb02", "dev1").await,
        StoreError::Invalid { .. }
    );
    assert_err!(
        store.attach_certificate("zz", "dev1").await,
        StoreError::NotFound { .. }
    );
    assert_eq!(
        store
            .get_certificate("aa01")
            .await
            .unwrap()
            .thing
            .as_deref(),
        Some("dev1")
    );

    let of_dev1 = store
        .list_certificates(
            &CertificateFilter {
                thing: Some("dev1".into()),
                ..Default::default()
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(of_dev1.len(), 1);
    assert_eq!(of_dev1[0].fingerprint, "aa01");
    let claims = store
        .list_certificates(
            &CertificateFilter {
                kind: Some(CertificateKind::Claim),
                ..Default::default()
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        claims
            .iter()
            .map(|c| c.fingerprint.as_str())
            .collect::<Vec<_>>(),
        ["bb02"]
    );
    let all = store
        .list_certificates(&CertificateFilter::default(), &Page::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let after = store
        .list_certificates(
            &CertificateFilter::default(),
            &Page {
                after: Some("aa01".into()),
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(after[0].fingerprint, "bb02");

    // Revocation is final.
    let revoked = store
        .revoke_certificate("aa01", "2026-12-02T00:00:00.000Z")
        .await
        .unwrap();
    assert_eq!(revoked.status, CertificateStatus::Revoked);
    assert_eq!(
        revoked.revoked_at.as_deref(),
        Some("2026-12-02T00:00:00.000Z")
    );
    let again = store
        .revoke_certificate("aa01", "2026-12-03T00:00:00.000Z")
        .await
        .unwrap();
    assert_eq!(
        again.revoked_at.as_deref(),
        Some("2026-12-02T00:00:00.000Z")
    );
    assert_err!(
        store.put_certificate(&device).await,
        StoreError::AlreadyExists { .. }
    );
    assert_eq!(
        store.get_certificate("aa01").await.unwrap().status,
        CertificateStatus::Revoked
    );
    assert_err!(
        store.revoke_certificate("zz", "now").await,
        StoreError::NotFound { .. }
    );
    let active = store
        .list_certificates(
            &CertificateFilter {
                status: Some(CertificateStatus::Active),
                ..Default::default()
            },
            &Page::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        active
            .iter()
            .map(|c| c.fingerprint.as_str())
            .collect::<Vec<_>>(),
        ["bb02", "cc03"]
    );
}

async fn templates_and_ownership_tokens(store: &Store) {
    let template = ProvisioningTemplate {
        name: "fleet-template".into(),
        enabled: true,
        body: json!({"Parameters": {"SerialNumber": {"Type": "String"}}, "Resources": {}}),
        claim_certificates: vec!["bb02".into()],
        created_at: "2026-12-01T00:00:00.000Z".into(),
    };
    store.put_template(&template).await.unwrap();
    assert_eq!(
        store.get_template("fleet-template").await.unwrap(),
        template
    );
    let disabled = ProvisioningTemplate {
        enabled: false,
        ..template.clone()
    };
    store.put_template(&disabled).await.unwrap();
    assert_eq!(
        store.get_template("fleet-template").await.unwrap(),
        disabled
    );
    assert_eq!(
        store.list_templates(&Page::default()).await.unwrap(),
        [disabled]
    );
    store.delete_template("fleet-template").await.unwrap();
    assert_err!(
        store.get_template("fleet-template").await,
        StoreError::NotFound { .. }
    );
    assert_err!(
        store.delete_template("fleet-template").await,
        StoreError::NotFound { .. }
    );

    let token = OwnershipToken {
        token_hash: "hash1".into(),
        certificate: "cert1".into(),
        expires_at: 1_900_000_000,
    };
    store.put_ownership_token(&token).await.unwrap();
    assert_err!(
        store.put_ownership_token(&token).await,
        StoreError::AlreadyExists { .. }
    );
    assert_eq!(store.take_ownership_token("hash1").await.unwrap(), token);
    assert_err!(
        store.take_ownership_token("hash1").await,
        StoreError::NotFound { .. }
    );

    // Two racing spenders: exactly one gets it.
    store
        .put_ownership_token(&OwnershipToken {
            token_hash: "hash2".into(),
            ..token
        })
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        tokio::spawn({
            let s = store.clone();
            async move { s.take_ownership_token("hash2").await }
        }),
        tokio::spawn({
            let s = store.clone();
            async move { s.take_ownership_token("hash2").await }
        })
    );
    let wins = [a.unwrap(), b.unwrap()]
        .iter()
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(wins, 1);
}

const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

async fn components_and_deployments(store: &Store) {
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
    assert_err!(
        store.get_deployment("d1").await,
        StoreError::NotFound { .. }
    );
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

async fn shadows(store: &Store) {
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

async fn racing_shadow_writers(store: &Store) {
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

async fn jobs_and_executions(store: &Store) {
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

async fn admin_tokens(store: &Store) {
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

async fn delete_thing_cascades(store: &Store) {
    store.create_thing(&thing("doomed")).await.unwrap();
    store.create_thing(&thing("survivor")).await.unwrap();
    store
        .create_group(&NewThingGroup {
            name: "g".into(),
            description: None,
        })
        .await
        .unwrap();
    store.add_to_group("g", "doomed").await.unwrap();
    store.add_to_group("g", "survivor").await.unwrap();
    store
        .put_shadow(&shadow("doomed", "", 1), None)
        .await
        .unwrap();
    store
        .put_shadow(&shadow("doomed", "named", 1), None)
        .await
        .unwrap();
    store
        .put_shadow(&shadow("survivor", "", 1), None)
        .await
        .unwrap();
    store
        .create_job(&job("j", &["doomed", "survivor"]))
        .await
        .unwrap();
    store
        .put_job_execution(&execution("j", "doomed", 1), None)
        .await
        .unwrap();
    store
        .put_job_execution(&execution("j", "survivor", 1), None)
        .await
        .unwrap();
    store
        .put_connectivity(&Connectivity {
            thing: "doomed".into(),
            endpoints: vec![],
            reported_at: "x".into(),
        })
        .await
        .unwrap();
    store
        .set_presence(&Presence {
            thing: "doomed".into(),
            online: true,
            client_id: "doomed".into(),
            at: "x".into(),
        })
        .await
        .unwrap();
    store
        .put_certificate(&cert("f1", CertificateKind::Device, Some("doomed")))
        .await
        .unwrap();

    store.delete_thing("doomed").await.unwrap();

    assert_err!(store.get_thing("doomed").await, StoreError::NotFound { .. });
    assert_eq!(
        store.group_members("g", &Page::default()).await.unwrap(),
        ["survivor"]
    );
    assert_eq!(store.get_shadow("doomed", "").await.unwrap(), None);
    assert_eq!(store.get_shadow("doomed", "named").await.unwrap(), None);
    assert!(store.get_shadow("survivor", "").await.unwrap().is_some());
    assert_eq!(store.get_job_execution("j", "doomed").await.unwrap(), None);
    assert!(
        store
            .get_job_execution("j", "survivor")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.get_connectivity("doomed").await.unwrap(), None);
    assert_eq!(store.get_presence("doomed").await.unwrap(), None);
    let detached = store.get_certificate("f1").await.unwrap();
    assert_eq!(detached.thing, None);
    assert_eq!(detached.status, CertificateStatus::Revoked);
    assert!(detached.revoked_at.is_some());

    // A new thing of the same name starts empty and cannot reuse the old certificate.
    store.create_thing(&thing("doomed")).await.unwrap();
    assert_eq!(store.get_shadow("doomed", "").await.unwrap(), None);
    assert_eq!(
        store.groups_of("doomed").await.unwrap(),
        Vec::<String>::new()
    );
    assert_err!(
        store.attach_certificate("f1", "doomed").await,
        StoreError::Invalid { .. }
    );
}

// ---------------------------------------------------------------------------------------------

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
    certificates,
    templates_and_ownership_tokens,
    components_and_deployments,
    shadows,
    racing_shadow_writers,
    jobs_and_executions,
    admin_tokens,
    delete_thing_cascades,
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
