//! Who may connect and what they may do, with paho-mqtt over mTLS, on SQLite and PostgreSQL:
//! unknown, foreign and revoked certificates are refused (a revoked one also loses its live
//! connection); device A can neither publish nor subscribe on B's topics nor read B's shadow;
//! client ids follow the thing; presence and connectivity reach the store.

mod common;

use std::time::Duration;

use common::*;
use lichen_cloud_store::{Backend, CertificateKind};

async fn refusals(db: Db) {
    let py = need!(python(), "python venv with paho-mqtt");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let a = cloud.device("dev-a").await;
    // Issued by the cloud CA but never registered.
    let (unknown, _) = cloud.issue_with(&cloud.ca, "dev-x");
    for v in ["5", "311"] {
        let mut c = cloud.agent(&py, v, "dev-x", &unknown);
        let rc = c.expect("connack", |_| true).await["rc"].clone();
        assert_eq!(rc, 135, "unknown certificate, MQTT {v}");
        c.quit().await;
    }
    // Registered but issued by another CA: the TLS handshake fails.
    let other_dir = cloud.dir.path().join("other-ca");
    let other = lichen_pki::LocalCa::load_or_create(&other_dir).unwrap();
    let (foreign, issued) = cloud.issue_with(&other, "dev-f");
    cloud
        .store
        .create_thing(&lichen_cloud_store::NewThing {
            name: "dev-f".into(),
            attributes: Default::default(),
        })
        .await
        .unwrap();
    cloud
        .register(&issued, CertificateKind::Device, Some("dev-f"))
        .await;
    let mut f = cloud.agent(&py, "5", "dev-f", &foreign);
    let first = f.wait("connack", &|_| true, Duration::from_secs(5)).await;
    assert!(
        first.is_none() || first.as_ref().is_some_and(|v| v["rc"] != 0),
        "foreign CA admitted: {:?}",
        f.seen
    );
    f.quit().await;
    // Client id rules: the thing name or `<thing>#…`; not another thing's name.
    let mut wrong = cloud.agent(&py, "5", "dev-b", &a);
    assert_eq!(wrong.expect("connack", |_| true).await["rc"], 135);
    wrong.quit().await;
    let mut second = cloud.agent(&py, "5", "dev-a#2", &a);
    assert_eq!(second.expect("connack", |_| true).await["rc"], 0);
    second.quit().await;

    // Revocation: the live connection is closed and the next attempt refused.
    let mut live = cloud.agent(&py, "5", "dev-a", &a);
    assert_eq!(live.expect("connack", |_| true).await["rc"], 0);
    cloud
        .store
        .revoke_certificate(&a.fingerprint, "2026-12-02T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(cloud.endpoint.certificate_revoked(&a.fingerprint).await, 1);
    assert_eq!(live.expect("disconnect", |_| true).await["rc"], 135);
    assert_eq!(
        live.expect("connack", |_| true).await["rc"],
        135,
        "reconnect refused"
    );
    live.quit().await;
    cloud.endpoint.shutdown().await;
}
both!(
    unknown_foreign_and_revoked_certificates_are_refused,
    refusals
);

async fn isolation(db: Db) {
    let py = need!(python(), "python venv with paho-mqtt");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let a = cloud.device("dev-a").await;
    let b = cloud.device("dev-b").await;
    let mut ca = cloud.agent(&py, "5", "dev-a", &a);
    assert_eq!(ca.expect("connack", |_| true).await["rc"], 0);
    let mut cb = cloud.agent(&py, "5", "dev-b", &b);
    assert_eq!(cb.expect("connack", |_| true).await["rc"], 0);

    // B keeps a shadow.
    assert_eq!(cb.subscribe("$aws/things/dev-b/shadow/#", 1).await, vec![1]);
    cb.publish(
        "$aws/things/dev-b/shadow/update",
        r#"{"state":{"reported":{"secret":"b-only"}}}"#,
        1,
    )
    .await;
    cb.expect("message", |m| {
        m["topic"] == "$aws/things/dev-b/shadow/update/accepted"
    })
    .await;

    // A may not subscribe to B's topics, by name or wildcard.
    for f in [
        "$aws/things/dev-b/shadow/get/accepted",
        "$aws/things/dev-b/shadow/#",
        "$aws/things/+/shadow/#",
        "$aws/things/#",
        "$lichen/things/dev-b/#",
        "#",
    ] {
        assert_eq!(ca.subscribe(f, 1).await, vec![135], "A subscribing to {f}");
    }
    // A may not publish there either: B's get, update and delete are refused (PUBACK 0x87).
    for t in [
        "$aws/things/dev-b/shadow/get",
        "$aws/things/dev-b/shadow/update",
        "$aws/things/dev-b/shadow/delete",
        "$aws/things/dev-b/jobs/start-next",
    ] {
        ca.publish(t, "{}", 1).await;
        assert_eq!(
            ca.expect("puback", |_| true).await["rc"],
            135,
            "A publishing {t}"
        );
    }
    // Nor fake a service reply on its own topics: the service swallows it.
    assert_eq!(ca.subscribe("$aws/things/dev-a/shadow/#", 1).await, vec![1]);
    ca.publish(
        "$aws/things/dev-a/shadow/get/accepted",
        r#"{"state":{"reported":{"fake":1}}}"#,
        1,
    )
    .await;
    ca.expect("puback", |_| true).await;
    // A's own get works and says its shadow does not exist.
    ca.publish("$aws/things/dev-a/shadow/get", "{}", 1).await;
    let m = ca
        .expect("message", |m| {
            m["topic"]
                .as_str()
                .is_some_and(|t| t.starts_with("$aws/things/dev-a/shadow/get/"))
        })
        .await;
    assert_eq!(
        m["topic"], "$aws/things/dev-a/shadow/get/rejected",
        "{:?}",
        ca.seen
    );
    assert!(m["payload"].as_str().unwrap().contains("404"));
    // B's shadow is untouched and A saw nothing of it.
    let stored = cloud.store.get_shadow("dev-b", "").await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert!(
        !ca.seen.iter().any(|e| e.to_string().contains("b-only")
            || e["topic"] == "$aws/things/dev-a/shadow/get/accepted"),
        "{:?}",
        ca.seen
    );
    ca.quit().await;
    cb.quit().await;
    cloud.endpoint.shutdown().await;
}
both!(a_device_cannot_touch_another_things_topics, isolation);

async fn presence_and_connectivity(db: Db) {
    let py = need!(python(), "python venv with paho-mqtt");
    let cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let core = cloud.device("core-1").await;
    let mut c = cloud.agent(&py, "5", "core-1", &core);
    assert_eq!(c.expect("connack", |_| true).await["rc"], 0);
    let online = wait_presence(&cloud, "core-1", true).await;
    assert_eq!(online.client_id, "core-1");
    assert_eq!(
        c.subscribe("$lichen/things/core-1/connectivity/update/+", 1)
            .await,
        vec![1]
    );
    c.publish(
        "$lichen/things/core-1/connectivity/update",
        r#"{"ConnectivityInfo":[{"Id":"lan","HostAddress":"192.168.1.20","PortNumber":8883,"Metadata":"lan"}]}"#,
        1,
    )
    .await;
    let m = c.expect("message", |_| true).await;
    assert_eq!(
        m["topic"],
        "$lichen/things/core-1/connectivity/update/accepted"
    );
    let info = cloud
        .store
        .get_connectivity("core-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.endpoints.len(), 1);
    assert_eq!(info.endpoints[0].host_address, "192.168.1.20");
    assert_eq!(info.endpoints[0].port, 8883);
    // A bad body is rejected with the field named, and the stored info stays.
    c.publish(
        "$lichen/things/core-1/connectivity/update",
        r#"{"ConnectivityInfo":[{"HostAddress":"h","PortNumber":0}]}"#,
        1,
    )
    .await;
    let m = c.expect("message", |_| true).await;
    assert_eq!(
        m["topic"],
        "$lichen/things/core-1/connectivity/update/rejected"
    );
    assert!(m["payload"].as_str().unwrap().contains("PortNumber"));
    assert_eq!(
        cloud
            .store
            .get_connectivity("core-1")
            .await
            .unwrap()
            .unwrap(),
        info
    );
    c.quit().await;
    wait_presence(&cloud, "core-1", false).await;
    cloud.endpoint.shutdown().await;
}
both!(
    presence_and_connectivity_reach_the_store,
    presence_and_connectivity
);

/// A thing connected as `core-2` and `core-2#2` stays online until both are gone; an endpoint
/// that starts resets what the last run counted.
async fn presence_counts_connections(db: Db) {
    let py = need!(python(), "python venv with paho-mqtt");
    let mut cloud = need!(Cloud::start(db).await, "PostgreSQL (initdb)");
    let core = cloud.device("core-2").await;
    let mut first = cloud.agent(&py, "5", "core-2", &core);
    assert_eq!(first.expect("connack", |_| true).await["rc"], 0);
    let mut second = cloud.agent(&py, "311", "core-2#2", &core);
    assert_eq!(second.expect("connack", |_| true).await["rc"], 0);
    wait_presence(&cloud, "core-2", true).await;
    first.quit().await;
    // Give the disconnect time to reach the store: the thing must still be online.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = cloud.store.get_presence("core-2").await.unwrap().unwrap();
    assert!(p.online, "one connection is still live: {p:?}");
    second.quit().await;
    let p = wait_presence(&cloud, "core-2", false).await;
    assert_eq!(p.client_id, "core-2#2", "the last to leave");

    // A run that ended with connections counted (a crash loses their disconnects): the next
    // endpoint starts with the thing offline, and counts from zero.
    cloud
        .store
        .presence_changed(&lichen_cloud_store::PresenceChange {
            node: lichen_cloud_store::DEFAULT_PRESENCE_NODE.into(),
            thing: "core-2".into(),
            client_id: "core-2#9".into(),
            last_connect: Some("core-2#9".into()),
            delta: 2,
            at: "2026-12-01T00:00:00.000Z".into(),
        })
        .await
        .unwrap();
    let config = lichen_cloud_endpoint::EndpointConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        cloud.dir.path().join("endpoint-2"),
    );
    let restarted = lichen_cloud_endpoint::start(config, cloud.store.clone(), cloud.ca.clone())
        .await
        .expect("endpoint restarts");
    let old = std::mem::replace(&mut cloud.endpoint, restarted);
    old.shutdown().await;
    let p = cloud.store.get_presence("core-2").await.unwrap().unwrap();
    assert!(!p.online, "reset at start: {p:?}");
    let mut again = cloud.agent(&py, "5", "core-2", &core);
    assert_eq!(again.expect("connack", |_| true).await["rc"], 0);
    wait_presence(&cloud, "core-2", true).await;
    again.quit().await;
    wait_presence(&cloud, "core-2", false).await;
    cloud.endpoint.shutdown().await;
}
both!(
    a_thing_under_two_client_ids_stays_online_until_both_leave,
    presence_counts_connections
);

async fn wait_presence(cloud: &Cloud, thing: &str, online: bool) -> lichen_cloud_store::Presence {
    for _ in 0..100 {
        if let Some(p) = cloud.store.get_presence(thing).await.unwrap()
            && p.online == online
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{thing} never became online={online}");
}
