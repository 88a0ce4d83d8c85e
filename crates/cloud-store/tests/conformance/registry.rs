//! Conformance checks: things, groups, connectivity, presence, certificates, provisioning.

use lichen_cloud_store::*;
use serde_json::json;

use crate::assert_err;
use crate::fixtures::*;

pub(crate) async fn things_crud<B: Backend + Clone + 'static>(store: &B) {
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

pub(crate) async fn paging<B: Backend + Clone + 'static>(store: &B) {
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

pub(crate) async fn groups_and_membership<B: Backend + Clone + 'static>(store: &B) {
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

pub(crate) async fn connectivity_and_presence<B: Backend + Clone + 'static>(store: &B) {
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

pub(crate) async fn certificates<B: Backend + Clone + 'static>(store: &B) {
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

pub(crate) async fn templates_and_ownership_tokens<B: Backend + Clone + 'static>(store: &B) {
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

pub(crate) async fn delete_thing_cascades<B: Backend + Clone + 'static>(store: &B) {
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

pub(crate) async fn device_status<B: Backend + Clone + 'static>(store: &B) {
    store.create_thing(&thing("gg1")).await.unwrap();
    store.create_thing(&thing("gg2")).await.unwrap();
    assert_eq!(store.get_device_status("gg1").await.unwrap(), None);
    store
        .touch_device("gg1", "2026-12-01T00:00:00.000Z")
        .await
        .unwrap();
    let s = store.get_device_status("gg1").await.unwrap().unwrap();
    assert_eq!((s.sequence, s.message, s.received_at), (0, None, None));
    let m1 = json!({"thing": "gg1", "overallDeviceStatus": "HEALTHY"});
    let m2 = json!({"thing": "gg1", "overallDeviceStatus": "UNHEALTHY"});
    store
        .record_fleet_status("gg1", &m1, "2026-12-01T00:00:01.000Z")
        .await
        .unwrap();
    let s = store
        .record_fleet_status("gg1", &m2, "2026-12-01T00:00:02.000Z")
        .await
        .unwrap();
    assert_eq!(s.sequence, 2);
    assert_eq!(s.message, Some(m2.clone()));
    assert_eq!(s.received_at.as_deref(), Some("2026-12-01T00:00:02.000Z"));
    // A later connect moves last_seen only.
    store
        .touch_device("gg1", "2026-12-01T00:00:09.000Z")
        .await
        .unwrap();
    let s = store.get_device_status("gg1").await.unwrap().unwrap();
    assert_eq!(s.last_seen, "2026-12-01T00:00:09.000Z");
    assert_eq!((s.sequence, s.message), (2, Some(m2)));
    assert_eq!(s.received_at.as_deref(), Some("2026-12-01T00:00:02.000Z"));
    // Bounded, and only for things that exist.
    let big = json!({"pad": "x".repeat(MAX_FLEET_STATUS_BYTES)});
    assert_err!(
        store.record_fleet_status("gg2", &big, "t").await,
        StoreError::Invalid { .. }
    );
    assert_err!(
        store.touch_device("ghost", "t").await,
        StoreError::NotFound { .. }
    );
    store
        .touch_device("gg2", "2026-12-01T00:00:00.000Z")
        .await
        .unwrap();
    let all = store.list_device_statuses(&Page::first(10)).await.unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.thing.as_str()).collect();
    assert_eq!(names, ["gg1", "gg2"]);
    // A batch in one transaction: each counted in order; an unknown thing or an oversized
    // message is skipped without undoing the rest.
    let m3 = json!({"thing": "gg2", "overallDeviceStatus": "HEALTHY", "n": 3});
    let m4 = json!({"thing": "gg2", "overallDeviceStatus": "HEALTHY", "n": 4});
    let stored = store
        .record_fleet_statuses(
            vec![
                ("gg2".into(), m3),
                ("ghost".into(), json!({"thing": "ghost"})),
                ("gg1".into(), big.clone()),
                ("gg2".into(), m4.clone()),
            ],
            "2026-12-01T00:00:05.000Z",
        )
        .await
        .unwrap();
    assert_eq!(stored, 2);
    let s = store.get_device_status("gg2").await.unwrap().unwrap();
    assert_eq!((s.sequence, s.message), (2, Some(m4)));
    assert_eq!(s.last_seen, "2026-12-01T00:00:05.000Z");
    assert_eq!(store.get_device_status("ghost").await.unwrap(), None);
    let s = store.get_device_status("gg1").await.unwrap().unwrap();
    assert_eq!(s.sequence, 2, "the oversized one was not counted");
    store.delete_thing("gg1").await.unwrap();
    assert_eq!(store.get_device_status("gg1").await.unwrap(), None);
}
