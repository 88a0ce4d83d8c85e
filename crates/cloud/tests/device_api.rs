//! The device HTTPS API (`/device/v1`) on a real listener over SQLite and PostgreSQL: a thing
//! with a certificate from a CSR fetches the recipe and the artifact of what is deployed to
//! it (resuming with Range), and everything else is refused with the reason.

mod common;

use std::collections::BTreeMap;

use base64::Engine;

use common::Cloud;
use lichen_cloud::CloudClient;
use lichen_cloud::tls::ClientIdentity;
use serde_json::{Value, json};

macro_rules! with_components {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let cloud = crate::common::start_with_components(crate::common::Backend::Sqlite)
                    .await
                    .unwrap();
                super::$name(&cloud).await;
                cloud.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(cloud) =
                    crate::common::start_with_components(crate::common::Backend::Postgres).await
                else {
                    return;
                };
                super::$name(&cloud).await;
                cloud.stop().await;
            }
        }
    };
}

const A_URI: &str = "s3://bucket/com.example.A/1.0.0/payload.bin";

fn recipe(name: &str, version: &str, deps: &[(&str, &str)], artifacts: &[&str]) -> String {
    let mut text = format!(
        "RecipeFormatVersion: \"2020-01-25\"\nComponentName: {name}\nComponentVersion: \"{version}\"\n"
    );
    if !deps.is_empty() {
        text.push_str("ComponentDependencies:\n");
        for (d, req) in deps {
            text.push_str(&format!("  {d}:\n    VersionRequirement: \"{req}\"\n"));
        }
    }
    text.push_str(
        "Manifests:\n  - Platform:\n      os: linux\n    Lifecycle:\n      Run: echo hi\n",
    );
    if !artifacts.is_empty() {
        text.push_str("    Artifacts:\n");
        for a in artifacts {
            text.push_str(&format!("      - URI: {a}\n"));
        }
    }
    text
}

/// Publishes straight into the cloud's component store (the API's upload path has its own
/// tests); returns nothing, the store holds it.
async fn publish(c: &Cloud, recipe_text: &str, files: &[(&str, &[u8])]) {
    let artifacts = lichen_cloud_store::FsArtifactStore::new(&c.config.data_dir).unwrap();
    let components = lichen_cloud_components::Components::new(
        lichen_cloud_store::Store::clone(&c.store),
        artifacts,
        lichen_cloud_components::Limits::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut map = BTreeMap::new();
    for (i, (uri, bytes)) in files.iter().enumerate() {
        let path = dir.path().join(format!("f{i}"));
        std::fs::write(&path, bytes).unwrap();
        map.insert(uri.to_string(), path);
    }
    components
        .publish_files(recipe_text, "recipe", &map)
        .await
        .unwrap();
}

fn ca_pem(c: &Cloud) -> String {
    std::fs::read_to_string(c.config.data_dir.join("ca/ca.pem")).unwrap()
}

fn admin_token(c: &Cloud) -> String {
    std::fs::read_to_string(c.config.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_string()
}

/// A thing with a certificate issued from a CSR, and a client presenting it (no token).
async fn device(c: &Cloud, thing: &str) -> (CloudClient, String) {
    c.expect("POST", "/v1/things", Some(json!({"name": thing})), 201)
        .await;
    let key = lichen_cloud::bundle::new_key_and_csr(thing).unwrap();
    let cert = c
        .expect(
            "POST",
            "/v1/certificates",
            Some(json!({"csr": key.csr_pem, "thing": thing})),
            201,
        )
        .await;
    let identity = ClientIdentity {
        cert_pem: cert["pem"].as_str().unwrap().to_string(),
        key_pem: key.key_pem,
    };
    let client =
        CloudClient::new_with_identity(c.client.url(), &ca_pem(c), None, Some(&identity)).unwrap();
    (client, cert["id"].as_str().unwrap().to_string())
}

fn path(name: &str, version: &str, rest: &str) -> String {
    format!("/device/v1/components/{name}/versions/{version}/{rest}")
}

async fn get(
    client: &CloudClient,
    p: &str,
    headers: &[(&str, &str)],
) -> lichen_cloud::client::Answer {
    client.send("GET", p, headers, Vec::new()).await.unwrap()
}

fn error_of(a: &lichen_cloud::client::Answer) -> (String, String) {
    let v: Value = a.json();
    (
        v["error"]["code"].as_str().unwrap_or_default().to_string(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn payload() -> Vec<u8> {
    // Not a repeating pattern, so an offset error shows in the bytes.
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn device_fetches_what_is_deployed(c: &Cloud) {
    let payload = payload();
    publish(
        c,
        &recipe(
            "com.example.A",
            "1.0.0",
            &[("com.example.B", "^1.0.0")],
            &[A_URI],
        ),
        &[(A_URI, &payload)],
    )
    .await;
    publish(c, &recipe("com.example.A", "2.0.0", &[], &[]), &[]).await;
    publish(
        c,
        &recipe(
            "com.example.B",
            "1.2.0",
            &[("com.example.D", ">=3.0.0")],
            &[],
        ),
        &[],
    )
    .await;
    publish(c, &recipe("com.example.B", "2.0.0", &[], &[]), &[]).await;
    publish(c, &recipe("com.example.C", "1.0.0", &[], &[]), &[]).await;
    publish(c, &recipe("com.example.D", "3.1.0", &[], &[]), &[]).await;

    let (dev, cert_id) = device(c, "dev-1").await;
    c.expect(
        "POST",
        "/v1/thing-groups",
        Some(json!({"name": "line"})),
        201,
    )
    .await;
    c.expect("PUT", "/v1/thing-groups/line/members/dev-1", None, 204)
        .await;

    // Nothing deployed yet.
    let a = get(&dev, &path("com.example.A", "1.0.0", "recipe"), &[]).await;
    assert_eq!(a.status, 403, "{}", String::from_utf8_lossy(&a.body));
    let (code, msg) = error_of(&a);
    assert_eq!(code, "NotDeployed");
    assert!(
        msg.contains("dev-1") && msg.contains("com.example.A@1.0.0"),
        "{msg}"
    );

    let group = c
        .expect(
            "POST",
            "/v1/deployments",
            Some(json!({"target": "thinggroup/line",
                "components": {"com.example.A": {"componentVersion": "1.0.0"}}})),
            201,
        )
        .await;

    // The recipe, as stored (digest injected at publish).
    let a = get(&dev, &path("com.example.A", "1.0.0", "recipe"), &[]).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let r = a.json();
    assert_eq!(r["ComponentName"], "com.example.A");
    let art = &r["Manifests"][0]["Artifacts"][0];
    assert_eq!(art["Algorithm"], "SHA-256");
    assert!(art["Digest"].as_str().is_some_and(|d| !d.is_empty()), "{r}");

    // The artifact, whole and by file name (as the fleet agent asks for it).
    let a = get(
        &dev,
        &path("com.example.A", "1.0.0", "artifacts/payload.bin"),
        &[],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, payload);
    assert_eq!(a.header("accept-ranges"), Some("bytes"));

    // Resumed: 206 with the rest from the offset.
    let a = get(
        &dev,
        &path("com.example.A", "1.0.0", "artifacts/payload.bin"),
        &[("range", "bytes=123457-")],
    )
    .await;
    assert_eq!(a.status, 206);
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes 123457-{}/{}", payload.len() - 1, payload.len()).as_str())
    );
    assert_eq!(a.body, &payload[123_457..]);
    // A bounded range, and one past the end.
    let a = get(
        &dev,
        &path("com.example.A", "1.0.0", "artifacts/payload.bin"),
        &[("range", "bytes=10-19")],
    )
    .await;
    assert_eq!(a.status, 206);
    assert_eq!(a.body, &payload[10..20]);
    let a = get(
        &dev,
        &path("com.example.A", "1.0.0", "artifacts/payload.bin"),
        &[("range", &format!("bytes={}-", payload.len()))],
    )
    .await;
    assert_eq!(a.status, 416);
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes */{}", payload.len()).as_str())
    );

    // A dependency of a deployed version, per the stored recipes, and its own dependency.
    let a = get(&dev, &path("com.example.B", "1.2.0", "recipe"), &[]).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let a = get(&dev, &path("com.example.D", "3.1.0", "recipe"), &[]).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    // A version the requirement does not accept, another version, a component not deployed.
    for (n, v) in [
        ("com.example.B", "2.0.0"),
        ("com.example.A", "2.0.0"),
        ("com.example.C", "1.0.0"),
    ] {
        let a = get(&dev, &path(n, v, "recipe"), &[]).await;
        assert_eq!(a.status, 403, "{n}@{v}");
        let (code, msg) = error_of(&a);
        assert_eq!(code, "NotDeployed");
        assert!(
            msg.contains("dev-1") && msg.contains(&format!("{n}@{v}")),
            "{msg}"
        );
    }

    // A thing deployment adds to the group's: the union is fetchable.
    c.expect(
        "POST",
        "/v1/deployments",
        Some(json!({"target": "thing/dev-1",
            "components": {"com.example.C": {"componentVersion": "1.0.0"}}})),
        201,
    )
    .await;
    assert_eq!(
        get(&dev, &path("com.example.C", "1.0.0", "recipe"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&dev, &path("com.example.A", "1.0.0", "recipe"), &[])
            .await
            .status,
        200
    );

    // Canceling the group's deployment withdraws what only it allowed.
    let id = group["deploymentId"].as_str().unwrap();
    c.expect("POST", &format!("/v1/deployments/{id}/cancel"), None, 200)
        .await;
    assert_eq!(
        get(&dev, &path("com.example.A", "1.0.0", "recipe"), &[])
            .await
            .status,
        403
    );
    assert_eq!(
        get(&dev, &path("com.example.C", "1.0.0", "recipe"), &[])
            .await
            .status,
        200
    );

    // A thing with no deployment at all, whose group has none either.
    let (other, _) = device(c, "dev-2").await;
    let a = get(&other, &path("com.example.C", "1.0.0", "recipe"), &[]).await;
    assert_eq!(a.status, 403);
    assert!(error_of(&a).1.contains("dev-2"), "{}", error_of(&a).1);

    // Unknown routes under /device/v1 answer 404 once authenticated too (no admin fallback).
    let a = get(&dev, "/device/v1/things", &[]).await;
    assert_eq!(a.status, 404);

    // Revoked: refused at the next request, saying so.
    c.expect(
        "POST",
        &format!("/v1/certificates/{cert_id}/revoke"),
        None,
        200,
    )
    .await;
    let a = get(&dev, &path("com.example.C", "1.0.0", "recipe"), &[]).await;
    assert_eq!(a.status, 401);
    let (code, msg) = error_of(&a);
    assert_eq!(code, "CertificateRevoked");
    assert!(msg.contains(&cert_id) && msg.contains("revoked"), "{msg}");
}
with_components!(device_fetches_what_is_deployed);

async fn tokens_and_certificates_stay_apart(c: &Cloud) {
    publish(c, &recipe("com.example.C", "1.0.0", &[], &[]), &[]).await;
    let (dev, _) = device(c, "dev-3").await;
    c.expect(
        "POST",
        "/v1/deployments",
        Some(json!({"target": "thing/dev-3",
            "components": {"com.example.C": {"componentVersion": "1.0.0"}}})),
        201,
    )
    .await;
    let recipe_path = path("com.example.C", "1.0.0", "recipe");
    assert_eq!(get(&dev, &recipe_path, &[]).await.status, 200);

    // No client certificate and no token.
    let bare = c.client.with_token(None);
    let a = get(&bare, &recipe_path, &[]).await;
    assert_eq!(a.status, 401);
    let (code, msg) = error_of(&a);
    assert_eq!(code, "ClientCertificateRequired");
    assert!(msg.contains("no client certificate"), "{msg}");

    // A valid admin token does not open /device/v1.
    let a = get(&c.client, &recipe_path, &[]).await;
    assert_eq!(a.status, 401);
    let (code, msg) = error_of(&a);
    assert_eq!(code, "ClientCertificateRequired");
    assert!(msg.contains("admin tokens are not accepted"), "{msg}");
    // … while it still opens the admin API on the same listener (no certificate sent).
    c.expect("GET", "/v1/things", None, 200).await;

    // A device certificate does not open the admin API, not even with a valid token.
    for client in [dev.clone(), dev.with_token(Some(admin_token(c)))] {
        let a = get(&client, "/v1/things", &[]).await;
        assert_eq!(a.status, 401, "{}", String::from_utf8_lossy(&a.body));
        assert!(
            error_of(&a).1.contains("/device/v1 only"),
            "{}",
            error_of(&a).1
        );
        let a = get(&client, "/v1/components", &[]).await;
        assert_eq!(a.status, 401, "extension routes too");
    }
    // Public routes stay public.
    assert_eq!(get(&dev, "/healthz", &[]).await.status, 200);

    // The document names the device routes and how they authenticate.
    let doc = c.expect("GET", "/openapi.json", None, 200).await;
    for p in [
        "/device/v1/components/{name}/versions/{version}/recipe",
        "/device/v1/components/{name}/versions/{version}/artifacts/{uri}",
    ] {
        assert_eq!(
            doc["paths"][p]["get"]["security"],
            json!([{"deviceCertificate": []}]),
            "{p}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["deviceCertificate"]["type"],
        "mutualTLS"
    );

    // A certificate the CA issued but the store does not know (never registered).
    let ca =
        lichen_pki::LocalCa::load_or_create_named(&c.config.data_dir.join("ca"), "lichen cloud CA")
            .unwrap();
    let key = lichen_cloud::bundle::new_key_and_csr("stranger").unwrap();
    let issued = ca.issue_from_csr(&key.csr_pem, 1).unwrap();
    let stranger = CloudClient::new_with_identity(
        c.client.url(),
        &ca_pem(c),
        None,
        Some(&ClientIdentity {
            cert_pem: issued.cert_pem.clone(),
            key_pem: key.key_pem,
        }),
    )
    .unwrap();
    let a = get(&stranger, &recipe_path, &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(error_of(&a).0, "CertificateNotRegistered");

    // A certificate from another CA fails the handshake.
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign =
        lichen_pki::LocalCa::load_or_create_named(foreign_dir.path(), "other CA").unwrap();
    let key = lichen_cloud::bundle::new_key_and_csr("dev-3").unwrap();
    let issued = foreign.issue_from_csr(&key.csr_pem, 1).unwrap();
    let outsider = CloudClient::new_with_identity(
        c.client.url(),
        &ca_pem(c),
        None,
        Some(&ClientIdentity {
            cert_pem: issued.cert_pem.clone(),
            key_pem: key.key_pem,
        }),
    )
    .unwrap();
    assert!(
        outsider
            .send("GET", &recipe_path, &[], Vec::new())
            .await
            .is_err()
    );
}
with_components!(tokens_and_certificates_stay_apart);

/// Stream exports: a core posts batches as its thing (stored once per sequence number, under
/// the thing its certificate names), the admin API reads them; neither side opens the other's.
async fn device_stream_records(c: &Cloud) {
    let (dev, _) = device(c, "dev-s").await;
    let json_header = [("content-type", "application/json")];
    let batch = |from: i64, to: i64| {
        let records: Vec<Value> = (from..to)
            .map(|i| {
                json!({"sequenceNumber": i, "ingestTime": 1_700_000_000_000i64 + i,
                    "payload": base64::engine::general_purpose::STANDARD.encode(format!("r{i}"))})
            })
            .collect();
        serde_json::to_vec(&json!({ "records": records })).unwrap()
    };
    let post = |client: &CloudClient, body: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .send(
                    "POST",
                    "/device/v1/streams/line%201/records",
                    &json_header,
                    body,
                )
                .await
                .unwrap()
        }
    };
    let a = post(&dev, batch(0, 3)).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(
        a.json(),
        json!({"stored": 3, "duplicates": 0, "lastSequenceNumber": 2})
    );
    let a = post(&dev, batch(2, 5)).await;
    assert_eq!(
        a.json(),
        json!({"stored": 2, "duplicates": 1, "lastSequenceNumber": 4})
    );
    let v = c
        .expect("GET", "/v1/streams/line%201/records?limit=4", None, 200)
        .await;
    assert_eq!(v["stream"], "line 1");
    let seqs: Vec<i64> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sequenceNumber"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    assert_eq!(v["records"][1]["thing"], "dev-s");
    assert_eq!(v["records"][1]["payload"], "cjE=");
    assert_eq!(v["next"], "dev-s:3");
    let v = c
        .expect(
            "GET",
            "/v1/streams/line%201/records?after=dev-s:3",
            None,
            200,
        )
        .await;
    assert_eq!(v["records"].as_array().unwrap().len(), 1);
    assert_eq!(v["next"], Value::Null);
    c.expect(
        "GET",
        "/v1/streams/line%201/records?after=nonsense",
        None,
        422,
    )
    .await;

    // Bad input names the field; a body over the bound is 413.
    let bad = serde_json::to_vec(
        &json!({"records": [{"sequenceNumber": 9, "ingestTime": 0, "payload": "%%%"}]}),
    )
    .unwrap();
    let a = post(&dev, bad).await;
    assert_eq!(a.status, 422);
    assert!(
        error_of(&a).1.contains("records[0].payload"),
        "{:?}",
        error_of(&a)
    );
    let a = post(&dev, br#"{"records": [], "extra": 1}"#.to_vec()).await;
    assert_eq!(a.status, 400);
    let a = post(
        &dev,
        vec![b' '; lichen_cloud::device_streams::MAX_BATCH_BODY + 1],
    )
    .await;
    assert_eq!(a.status, 413);

    // No certificate, or an admin token: refused; a device cannot read the admin route.
    let a = post(&c.client.with_token(None), batch(5, 6)).await;
    assert_eq!(a.status, 401);
    let a = post(&c.client, batch(5, 6)).await;
    assert_eq!(a.status, 401);
    let a = get(&dev, "/v1/streams/line%201/records", &[]).await;
    assert_eq!(a.status, 401);
    let v = c
        .expect("GET", "/v1/streams/line%201/records", None, 200)
        .await;
    assert_eq!(
        v["records"].as_array().unwrap().len(),
        5,
        "nothing refused was stored"
    );
}
with_components!(device_stream_records);
