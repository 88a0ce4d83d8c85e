//! Presence over a real store (SQLite in a temp dir, or the test PostgreSQL cluster), with
//! the connection events raised faster than the writer can store them.

use std::time::Duration;

use lichen_cloud_store::{NewThing, Store};

use super::*;

async fn inner(postgres: bool) -> Option<(tempfile::TempDir, Arc<Inner<Store>>)> {
    let dir = tempfile::tempdir().unwrap();
    let store = if postgres {
        let cluster = lichen_cloud_store::testing::PgCluster::shared()
            .expect("starting the test PostgreSQL cluster")?;
        let url = cluster.create_database().await.expect("database created");
        Store::open(dir.path(), Some(&url)).await.unwrap()
    } else {
        Store::open(dir.path(), None).await.unwrap()
    };
    let ca = Arc::new(lichen_pki::LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
    let config =
        crate::EndpointConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("endpoint"));
    let inner = Arc::new(Inner {
        store,
        ca,
        config,
        broker: std::sync::OnceLock::new(),
        jobs: crate::jobs::JobCache::default(),
        fleet_status: crate::fleet_status::channel().0,
        executions: crate::execution_writer::ExecutionWriter::channel().0,
        client_devices: Default::default(),
    });
    Some((dir, inner))
}

fn client(thing: &str, client_id: &str, connection: u64) -> ClientIdentity {
    ClientIdentity {
        client_id: client_id.into(),
        thing: thing.into(),
        fingerprint: None,
        handle: Some(Arc::new(Principal::Thing {
            name: thing.to_string(),
            client_devices: Arc::default(),
        })),
        connection,
    }
}

fn new_thing(name: &str) -> NewThing {
    NewThing {
        name: name.to_string(),
        attributes: Default::default(),
    }
}

fn peer() -> std::net::SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

async fn counts(store: &Store, things: &[String]) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for t in things {
        let p = store.get_presence(t).await.unwrap();
        out.push(p.map(|p| (p.online, p.client_id)).unwrap_or_default());
    }
    out
}

/// 24,000 events for 40 things, raised in one burst (far beyond the 4,096 changes the old
/// queue held, which dropped the rest): every thing ends with the right count.
async fn a_burst_beyond_the_old_queue_loses_no_change(postgres: bool) {
    let Some((_dir, inner)) = inner(postgres).await else {
        assert!(
            std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
            "PostgreSQL required"
        );
        eprintln!("SKIP: PostgreSQL (initdb) not available");
        return;
    };
    let things: Vec<String> = (0..40).map(|i| format!("dev-{i}")).collect();
    for t in &things {
        inner.store.create_thing(&new_thing(t)).await.unwrap();
    }
    let presence = Presence::start(inner.clone(), "node-a".into());
    let mut connection = 0;
    // Each thing: 300 connect/disconnect pairs; then the even things connect once more
    // (under a second client id) and stay.
    for round in 0..300 {
        for t in &things {
            connection += 1;
            let c = client(t, &format!("{t}#{round}"), connection);
            presence.connected(&c, peer());
            presence.disconnected(&c, DisconnectKind::Client);
        }
    }
    for (i, t) in things.iter().enumerate() {
        if i % 2 == 0 {
            connection += 1;
            presence.connected(&client(t, &format!("{t}#last"), connection), peer());
        }
    }
    assert!(
        presence.coalesced() > 4096,
        "the writer should have been behind: {} coalesced",
        presence.coalesced()
    );
    assert!(presence.pending() <= things.len(), "one entry per thing");
    let expected: Vec<(bool, String)> = things
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i % 2 == 0 {
                (true, format!("{t}#last"))
            } else {
                (false, format!("{t}#299"))
            }
        })
        .collect();
    let mut got = Vec::new();
    for _ in 0..600 {
        got = counts(&inner.store, &things).await;
        if got == expected && presence.pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, expected);
    // The counts themselves, not just the flag: one disconnect takes each even thing offline.
    for (i, t) in things.iter().enumerate() {
        if i % 2 == 0 {
            presence.disconnected(&client(t, &format!("{t}#last"), 0), DisconnectKind::Client);
        }
    }
    for _ in 0..600 {
        got = counts(&inner.store, &things).await;
        if got.iter().all(|(online, _)| !online) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(got.iter().all(|(online, _)| !online), "{got:?}");
    presence.stop();
}

/// Two endpoint nodes share a store: a thing connected through both stays online when one of
/// them restarts (its reset forgets only its own counts), and goes offline when the other's
/// connection leaves.
async fn a_node_start_resets_only_its_own_counts(postgres: bool) {
    let Some((_dir, inner)) = inner(postgres).await else {
        assert!(
            std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
            "PostgreSQL required"
        );
        eprintln!("SKIP: PostgreSQL (initdb) not available");
        return;
    };
    for t in ["both", "only-a"] {
        inner.store.create_thing(&new_thing(t)).await.unwrap();
    }
    let a = Presence::start(inner.clone(), "node-a".into());
    let b = Presence::start(inner.clone(), "node-b".into());
    a.connected(&client("both", "both", 1), peer());
    a.connected(&client("only-a", "only-a", 2), peer());
    b.connected(&client("both", "both#2", 3), peer());
    let online = |thing: &'static str| {
        let store = inner.store.clone();
        async move { store.get_presence(thing).await.unwrap().map(|p| p.online) }
    };
    for _ in 0..600 {
        let p = inner.store.get_presence("both").await.unwrap();
        if online("only-a").await == Some(true)
            && p.is_some_and(|p| p.online && p.client_id == "both#2")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(online("only-a").await, Some(true));
    // node-a crashes (its disconnects never come) and starts again.
    a.stop();
    reset_at_start(&inner.store, "node-a").await;
    assert_eq!(
        online("only-a").await,
        Some(false),
        "node-a's own count reset"
    );
    assert_eq!(online("both").await, Some(true), "node-b still holds it");
    assert_eq!(
        inner.store.reset_presence("node-a", "t").await.unwrap(),
        0,
        "nothing left of node-a"
    );
    b.disconnected(&client("both", "both#2", 3), DisconnectKind::Client);
    for _ in 0..600 {
        if online("both").await == Some(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(online("both").await, Some(false));
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_sqlite() {
    a_burst_beyond_the_old_queue_loses_no_change(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_postgres() {
    a_burst_beyond_the_old_queue_loses_no_change(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sqlite() {
    a_node_start_resets_only_its_own_counts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_postgres() {
    a_node_start_resets_only_its_own_counts(true).await;
}
