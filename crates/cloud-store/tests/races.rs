//! Writes that must be atomic, and writes that several control-plane nodes race on, on both
//! backends. "Two nodes" are two `Store`s opened on one database (one SQLite file, one
//! PostgreSQL database), each with its own connections, racing from concurrent tasks.

use std::sync::Arc;

use lichen_cloud_store::testing::PgCluster;
use lichen_cloud_store::*;

/// Two stores over one empty database; None when PostgreSQL is not installed.
async fn two_stores(postgres: bool) -> Option<(tempfile::TempDir, Store, Store)> {
    let dir = tempfile::tempdir().unwrap();
    if !postgres {
        let a = Store::open(dir.path(), None).await.unwrap();
        let b = Store::open(dir.path(), None).await.unwrap();
        return Some((dir, a, b));
    }
    let Some(cluster) = PgCluster::shared().expect("starting the test PostgreSQL cluster") else {
        assert!(
            std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
            "PostgreSQL not available, and scripts/test requires every test to run"
        );
        eprintln!("SKIP: PostgreSQL (initdb, pg_ctl) is not installed");
        return None;
    };
    let url = cluster.create_database().await.unwrap();
    // Both migrate the empty database at once, as two nodes starting together do.
    let (a, b) = tokio::join!(
        Store::open(dir.path(), Some(&url)),
        Store::open(dir.path(), Some(&url))
    );
    Some((dir, a.unwrap(), b.unwrap()))
}

fn thing(name: &str) -> NewThing {
    NewThing {
        name: name.into(),
        attributes: Attributes::new(),
    }
}

fn group(name: &str) -> NewThingGroup {
    NewThingGroup {
        name: name.into(),
        description: None,
    }
}

fn claim(fingerprint: &str) -> CertificateRecord {
    CertificateRecord {
        fingerprint: fingerprint.into(),
        serial: format!("serial-{fingerprint}"),
        pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        kind: CertificateKind::Claim,
        status: CertificateStatus::Active,
        thing: None,
        created_at: "2026-12-01T00:00:00.000Z".into(),
        not_after: "2036-12-01T00:00:00.000Z".into(),
        revoked_at: None,
    }
}

fn token(id: &str) -> AdminToken {
    AdminToken {
        id: id.into(),
        token_hash: format!("hash-of-{id}"),
        description: "first".into(),
        created_at: "2026-12-01T00:00:00.000Z".into(),
    }
}

async fn thing_with_groups_is_one_transaction(store: &Store) {
    store.create_group(&group("lab")).await.unwrap();
    store.create_group(&group("edge")).await.unwrap();
    // The last group is missing: nothing is written, not even the thing or its first
    // membership.
    let groups = vec!["lab".to_string(), "edge".to_string(), "nowhere".to_string()];
    match store.create_thing_in_groups(&thing("t1"), &groups).await {
        Err(StoreError::NotFound { kind, key }) => {
            assert_eq!((kind, key.as_str()), ("thing group", "nowhere"));
        }
        other => panic!("expected NotFound for the missing group, got {other:?}"),
    }
    assert!(matches!(
        store.get_thing("t1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store
            .group_members("lab", &Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );
    // An existing thing is AlreadyExists, and its groups are not touched.
    store.create_thing(&thing("t2")).await.unwrap();
    assert!(matches!(
        store
            .create_thing_in_groups(&thing("t2"), &["lab".to_string()])
            .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(store.groups_of("t2").await.unwrap().is_empty());
    // All groups present: the thing and every membership.
    let created = store
        .create_thing_in_groups(&thing("t1"), &groups[..2])
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(store.groups_of("t1").await.unwrap(), vec!["edge", "lab"]);
}

async fn claim_lists_lose_nothing_across_nodes(a: &Store, b: &Store) {
    let template = ProvisioningTemplate {
        name: "fleet".into(),
        enabled: true,
        body: serde_json::json!({"Resources": {}}),
        claim_certificates: Vec::new(),
        created_at: "2026-12-01T00:00:00.000Z".into(),
    };
    a.put_template(&template).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            store
                .add_claim_certificate("fleet", &claim(&format!("c{i:02}")), 100)
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stored = b.get_template("fleet").await.unwrap();
    let mut listed = stored.claim_certificates.clone();
    listed.sort();
    let expected: Vec<String> = (0..24).map(|i| format!("c{i:02}")).collect();
    assert_eq!(listed, expected, "every concurrent claim is listed once");
    for fp in &expected {
        assert_eq!(
            a.get_certificate(fp).await.unwrap().kind,
            CertificateKind::Claim
        );
    }
    // At the limit: refused, and the certificate is not stored either.
    match a.add_claim_certificate("fleet", &claim("over"), 24).await {
        Err(StoreError::InUse { key, .. }) => assert_eq!(key, "fleet"),
        other => panic!("expected InUse at the limit, got {other:?}"),
    }
    assert!(matches!(
        a.get_certificate("over").await,
        Err(StoreError::NotFound { .. })
    ));
    // A certificate that exists already rolls the list back too.
    assert!(matches!(
        a.add_claim_certificate("fleet", &claim("c00"), 100).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(
        a.get_template("fleet")
            .await
            .unwrap()
            .claim_certificates
            .len(),
        24
    );
    assert!(matches!(
        a.add_claim_certificate("ghost", &claim("g"), 100).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn one_first_admin_token(a: &Store, b: &Store) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::new(if i % 2 == 0 { a.clone() } else { b.clone() });
        tasks.push(tokio::spawn(async move {
            store
                .create_first_admin_token(&token(&format!("tok-{i}")))
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() {
            created += 1;
        }
    }
    assert_eq!(created, 1, "exactly one start creates the first token");
    assert_eq!(a.list_admin_tokens().await.unwrap().len(), 1);
    // Once one exists, no later start creates another.
    assert!(
        !b.create_first_admin_token(&token("tok-late"))
            .await
            .unwrap()
    );
    assert_eq!(b.list_admin_tokens().await.unwrap().len(), 1);
}

async fn change(store: &Store, node: &str, client_id: &str, delta: i64, at: &str) {
    store
        .presence_changed(&PresenceChange {
            node: node.into(),
            thing: "core".into(),
            client_id: client_id.into(),
            last_connect: (delta > 0).then(|| client_id.into()),
            delta,
            at: at.into(),
        })
        .await
        .unwrap();
}

async fn presence_counts_connections(store: &Store) {
    store.create_thing(&thing("core")).await.unwrap();
    let online = |store: Store| async move {
        store
            .get_presence("core")
            .await
            .unwrap()
            .map(|p| (p.online, p.client_id))
    };
    const A: &str = DEFAULT_PRESENCE_NODE;
    change(store, A, "core", 1, "t1").await;
    change(store, A, "core#2", 1, "t2").await;
    change(store, A, "core", -1, "t3").await;
    assert_eq!(
        online(store.clone()).await,
        Some((true, "core#2".into())),
        "one still live"
    );
    change(store, A, "core#2", -1, "t4").await;
    assert_eq!(online(store.clone()).await, Some((false, "core#2".into())));
    // A disconnect never seen connecting stays at zero: the next connect is online again,
    // and its disconnect offline.
    change(store, A, "core", -1, "t5").await;
    change(store, A, "core", 1, "t6").await;
    assert_eq!(online(store.clone()).await, Some((true, "core".into())));
    change(store, A, "core", -1, "t7").await;
    assert_eq!(online(store.clone()).await, Some((false, "core".into())));
    // A coalesced change: two connects and a disconnect in one write.
    change(store, A, "core#3", 1, "t7b").await;
    assert_eq!(online(store.clone()).await, Some((true, "core#3".into())));
    change(store, A, "core#3", -1, "t7c").await;
    // Coalesced events that net to zero but end with a new client connected (core#4 left,
    // core#5 came, while core#6 stays): the shown client is the last to connect.
    change(store, A, "core#6", 1, "t7d").await;
    store
        .presence_changed(&PresenceChange {
            node: A.into(),
            thing: "core".into(),
            client_id: "core#5".into(),
            last_connect: Some("core#5".into()),
            delta: 0,
            at: "t7e".into(),
        })
        .await
        .unwrap();
    assert_eq!(online(store.clone()).await, Some((true, "core#5".into())));
    // Net zero with no connect among them: the shown client stays.
    store
        .presence_changed(&PresenceChange {
            node: A.into(),
            thing: "core".into(),
            client_id: "core#7".into(),
            last_connect: None,
            delta: 0,
            at: "t7f".into(),
        })
        .await
        .unwrap();
    assert_eq!(online(store.clone()).await, Some((true, "core#5".into())));
    change(store, A, "core#6", -1, "t7g").await;
    assert_eq!(online(store.clone()).await, Some((false, "core#6".into())));
    // An endpoint start resets the counts its predecessor left.
    change(store, A, "core", 2, "t8").await;
    assert_eq!(store.reset_presence(A, "t10").await.unwrap(), 1);
    let p = store.get_presence("core").await.unwrap().unwrap();
    assert!(!p.online);
    assert_eq!(p.at, "t10");
    assert_eq!(
        store.reset_presence(A, "t11").await.unwrap(),
        0,
        "nothing left to reset"
    );
    change(store, A, "core", 1, "t12").await;
    change(store, A, "core", -1, "t13").await;
    assert_eq!(online(store.clone()).await, Some((false, "core".into())));

    // Two nodes: each node's start resets only its own count.
    change(store, "a", "core", 1, "t20").await;
    change(store, "b", "core#2", 1, "t21").await;
    // The count goes 2 → 1 (one thing changed), and b's connection keeps it online.
    assert_eq!(store.reset_presence("a", "t22").await.unwrap(), 1);
    assert_eq!(online(store.clone()).await, Some((true, "core#2".into())));
    // A disconnect counted on node a (whose count is gone) does not take b's connection.
    change(store, "a", "core", -1, "t23").await;
    assert_eq!(online(store.clone()).await, Some((true, "core#2".into())));
    change(store, "a", "core", 1, "t24").await;
    assert_eq!(store.reset_presence("b", "t25").await.unwrap(), 1, "2 → 1");
    assert_eq!(online(store.clone()).await.map(|p| p.0), Some(true));
    assert_eq!(store.reset_presence("a", "t26").await.unwrap(), 1);
    assert_eq!(online(store.clone()).await.map(|p| p.0), Some(false));
    // set_presence belongs to no node: no node's reset clears it.
    store
        .set_presence(&Presence {
            thing: "core".into(),
            online: true,
            client_id: "admin".into(),
            at: "t27".into(),
        })
        .await
        .unwrap();
    assert_eq!(store.reset_presence("a", "t28").await.unwrap(), 0);
    assert_eq!(online(store.clone()).await, Some((true, "admin".into())));
    assert!(matches!(
        store
            .presence_changed(&PresenceChange {
                node: A.into(),
                thing: "ghost".into(),
                client_id: "ghost".into(),
                last_connect: Some("ghost".into()),
                delta: 1,
                at: "t".into(),
            })
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

macro_rules! both {
    ($($name:ident: |$a:ident, $b:ident| $body:expr;)*) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_dir, $a, $b) = two_stores(false).await.unwrap();
                    let _ = &$b;
                    $body.await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((_dir, $a, $b)) = two_stores(true).await else { return };
                    let _ = &$b;
                    $body.await;
                }
            )*
        }
    };
}

both! {
    creating_a_thing_with_groups_is_atomic: |a, b| thing_with_groups_is_one_transaction(&a);
    concurrent_claims_from_two_nodes_are_all_listed: |a, b| claim_lists_lose_nothing_across_nodes(&a, &b);
    two_nodes_create_exactly_one_first_admin_token: |a, b| one_first_admin_token(&a, &b);
    presence_counts_live_connections: |a, b| presence_counts_connections(&a);
}
