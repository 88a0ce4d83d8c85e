//! Several control-plane nodes over one database, and writes that must be all or nothing,
//! through the real API on both backends: a thing whose group is missing is not created; two
//! nodes issuing claim certificates at once list every one; nodes starting together on one
//! empty database create exactly one first admin token.

mod common;

use std::sync::Arc;

use common::{Backend, Cloud, csr};
use lichen_cloud::CloudClient;
use lichen_cloud::server::{CloudConfig, CloudHandle};
use lichen_cloud_store::Store;
use serde_json::{Value, json};

async fn a_missing_group_creates_nothing(c: &Cloud) {
    c.expect(
        "POST",
        "/v1/thing-groups",
        Some(json!({"name": "lab"})),
        201,
    )
    .await;
    c.expect_error(
        "POST",
        "/v1/things",
        Some(json!({"name": "half", "groups": ["lab", "nowhere"]})),
        404,
        "NotFound",
        "nowhere",
    )
    .await;
    c.expect_error("GET", "/v1/things/half", None, 404, "NotFound", "half")
        .await;
    let members = c
        .expect("GET", "/v1/thing-groups/lab/members", None, 200)
        .await;
    assert_eq!(members["things"], json!([]), "{members}");
    // The same request with the group created goes through whole.
    c.expect(
        "POST",
        "/v1/thing-groups",
        Some(json!({"name": "nowhere"})),
        201,
    )
    .await;
    c.expect(
        "POST",
        "/v1/things",
        Some(json!({"name": "half", "groups": ["lab", "nowhere"]})),
        201,
    )
    .await;
    let d = c.expect("GET", "/v1/things/half", None, 200).await;
    assert_eq!(d["groups"], json!(["lab", "nowhere"]));
}
on_both_backends!(a_missing_group_creates_nothing);

/// A node started on `config` without reading the token file (only one node writes it).
async fn start_node(config: &CloudConfig) -> (CloudHandle, Arc<Store>) {
    let ca = lichen_cloud::server::prepare_data_dir(&config.data_dir).unwrap();
    let store = Arc::new(
        Store::open(&config.data_dir, config.database_url.as_deref())
            .await
            .unwrap(),
    );
    let handle =
        lichen_cloud::server::start(config, store.clone(), ca, Vec::new(), |_s, _ca| async {
            Ok(None)
        })
        .await
        .unwrap();
    (handle, store)
}

fn client(handle: &CloudHandle, token: &str) -> CloudClient {
    let ca_pem = std::fs::read_to_string(&handle.ca_path).unwrap();
    CloudClient::new(&handle.local_url, &ca_pem, Some(token.to_string())).unwrap()
}

/// Two nodes on one empty database: on PostgreSQL each has its own data directory (as
/// separate machines); on SQLite they share the data directory (two processes on one
/// machine). Returns both handles and the one token file written.
async fn two_nodes(backend: Backend) -> Option<(Vec<tempfile::TempDir>, [CloudHandle; 2], String)> {
    let url = common::database_url(backend).await.ok()?;
    let dirs: Vec<tempfile::TempDir> = match backend {
        Backend::Sqlite => vec![tempfile::tempdir().unwrap()],
        Backend::Postgres => vec![tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()],
    };
    let configs: Vec<CloudConfig> = (0..2)
        .map(|i| common::config(dirs[i % dirs.len()].path(), url.clone()))
        .collect();
    // The CA is prepared before the race: the race under test is the database's.
    for d in &dirs {
        lichen_cloud::server::prepare_data_dir(d.path()).unwrap();
    }
    let ((a, _), (b, _)) = tokio::join!(start_node(&configs[0]), start_node(&configs[1]));
    let created: Vec<_> = [&a, &b]
        .iter()
        .filter_map(|h| h.admin_token_created.clone())
        .collect();
    assert_eq!(
        created.len(),
        1,
        "exactly one node creates the first admin token"
    );
    let token = std::fs::read_to_string(&created[0])
        .unwrap()
        .trim()
        .to_string();
    if dirs.len() == 2 {
        let files = dirs
            .iter()
            .filter(|d| d.path().join("admin.token").exists())
            .count();
        assert_eq!(files, 1, "only the creating node writes a token file");
    }
    Some((dirs, [a, b], token))
}

async fn nodes_share_one_first_token(backend: Backend) {
    let Some((_dirs, [a, b], token)) = two_nodes(backend).await else {
        return;
    };
    // The one token works on both nodes, and there is only one.
    for h in [&a, &b] {
        let list = client(h, &token)
            .request("GET", "/v1/admin-tokens", None)
            .await
            .unwrap();
        assert_eq!(list.status, 200, "{}", String::from_utf8_lossy(&list.body));
        assert_eq!(list.json()["tokens"].as_array().unwrap().len(), 1);
    }
    a.shutdown().await;
    b.shutdown().await;
}

async fn claims_from_two_nodes_are_all_listed(backend: Backend) {
    let Some((_dirs, [a, b], token)) = two_nodes(backend).await else {
        return;
    };
    let (ca, cb) = (Arc::new(client(&a, &token)), Arc::new(client(&b, &token)));
    let body = json!({"name": "Fleet", "body": {
    "Parameters": {"SerialNumber": {"Type": "String"}},
    "Resources": {
        "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "SerialNumber"}}},
        "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
            "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}}
    }}});
    let r = ca
        .request("POST", "/v1/provisioning-templates", Some(&body))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let mut tasks = Vec::new();
    for i in 0..12 {
        let c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.push(tokio::spawn(async move {
            let body = json!({"csr": csr(&format!("claim-{i}"))});
            let r = c
                .request(
                    "POST",
                    "/v1/provisioning-templates/Fleet/claim-certificates",
                    Some(&body),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            r.json()["id"].as_str().unwrap().to_string()
        }));
    }
    let mut issued = Vec::new();
    for t in tasks {
        issued.push(t.await.unwrap());
    }
    let d = cb
        .request("GET", "/v1/provisioning-templates/Fleet", None)
        .await
        .unwrap()
        .json();
    let mut listed: Vec<String> = d["claimCertificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v: &Value| v.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    issued.sort();
    assert_eq!(
        listed, issued,
        "every claim issued on either node is listed"
    );
    a.shutdown().await;
    b.shutdown().await;
}

mod first_token {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::nodes_share_one_first_token(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::nodes_share_one_first_token(super::Backend::Postgres).await
    }
}

mod concurrent_claims {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::claims_from_two_nodes_are_all_listed(super::Backend::Sqlite).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::claims_from_two_nodes_are_all_listed(super::Backend::Postgres).await
    }
}
