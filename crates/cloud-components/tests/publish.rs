//! The component store end to end: HTTP on a loopback socket, a real backend, a real
//! artifact directory.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;

use common::*;
use lichen_cloud_components::upload::{DeclaredArtifact, UPLOAD_CONTENT_TYPE, UploadHeader};
use lichen_cloud_components::{Limits, ROUTES, openapi_paths};
use lichen_cloud_store::{Backend, DeploymentTarget, FleetDeployment};
use tokio::io::AsyncWriteExt as _;

const HELLO_URI: &str = "s3://lichen-examples/com.example.HelloWorld/1.0.0/hello.sh";

fn small() -> Limits {
    Limits {
        max_artifact_bytes: 64 * 1024,
        max_version_bytes: 96 * 1024,
    }
}

fn zip_bytes() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("model/weights.txt", options).unwrap();
        zip.write_all(&b"0.25 0.5 0.75\n".repeat(200)).unwrap();
        zip.start_file("model/run.sh", options).unwrap();
        zip.write_all(b"#!/bin/sh\necho model\n").unwrap();
        zip.finish().unwrap();
    }
    out.into_inner()
}

/// Every example recipe publishes, with its artifacts from `examples/artifacts`; the stored
/// recipe's digest is the file's and the download is the file.
pub async fn examples_publish_with_digests(env: &Env) {
    let root = workspace().join("examples");
    let hello =
        std::fs::read(root.join("artifacts/com.example.HelloWorld/1.0.0/hello.sh")).unwrap();
    for entry in std::fs::read_dir(root.join("recipes")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let artifacts: Vec<(&str, &[u8])> = if text.contains(HELLO_URI) {
            vec![(HELLO_URI, &hello)]
        } else {
            vec![]
        };
        let (status, body) = env.publish(&text, &artifacts).await;
        assert_eq!(status, 201, "{}: {body}", path.display());
    }
    let (status, described) = env
        .get_json("/components/com.example.HelloWorld/versions/1.0.0")
        .await;
    assert_eq!(status, 200, "{described}");
    let artifact = &described["recipe"]["Manifests"][0]["Artifacts"][0];
    assert_eq!(artifact["Digest"], sha256_b64(&hello));
    assert_eq!(artifact["Algorithm"], "SHA-256");
    assert_eq!(described["artifacts"][0]["sha256"], sha256_hex(&hello));
    assert_eq!(described["artifacts"][0]["size"], hello.len());

    let path = format!(
        "/components/com.example.HelloWorld/versions/1.0.0/artifacts/{}",
        encode_segment(HELLO_URI)
    );
    let (status, headers, content) = env.request("GET", &path, None, vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(content, hello);
    assert_eq!(
        headers["repr-digest"].to_str().unwrap(),
        format!("sha-256=:{}:", sha256_b64(&hello))
    );
    // By file name, too.
    let (status, _, content) = env
        .request(
            "GET",
            "/components/com.example.HelloWorld/versions/1.0.0/artifacts/hello.sh",
            None,
            vec![],
        )
        .await;
    assert_eq!((status, content), (200, hello.clone()));

    let (status, listed) = env.get_json("/components").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{listed}");
    assert!(names.contains(&"com.example.Dashboard"));
    assert!(listed["components"][0].get("recipe").is_none());
    assert_eq!(listed["next"], serde_json::Value::Null);
    let (_, first) = env.get_json("/components?limit=2").await;
    assert_eq!(first["components"].as_array().unwrap().len(), 2, "{first}");
    let next = first["next"].as_str().expect("a full page names the next");
    let (_, rest) = env
        .get_json(&format!(
            "/components?limit=2&after={}",
            encode_segment(next)
        ))
        .await;
    assert_eq!(rest["components"].as_array().unwrap().len(), 1, "{rest}");
    assert_ne!(
        rest["components"][0]["name"],
        first["components"][1]["name"]
    );
    let (_, one) = env.get_json("/components?name=com.example.Heartbeat").await;
    assert_eq!(one["components"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(env.artifact_files().len(), 1);
}

/// A ZIP artifact keeps its Unarchive and gets its digest; the download is byte-identical.
pub async fn zip_artifact(env: &Env) {
    let zip = zip_bytes();
    let text = "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.Model\n\
        ComponentVersion: '2.0.0'\nManifests:\n  - Lifecycle:\n      Run: sh {artifacts:decompressedPath}/model/model/run.sh\n\
        \x20   Artifacts:\n      - URI: s3://models/model.zip\n        Unarchive: ZIP\n        Permission: { Read: ALL }\n";
    let (status, body) = env.publish(text, &[("s3://models/model.zip", &zip)]).await;
    assert_eq!(status, 201, "{body}");
    let artifact = &body["recipe"]["Manifests"][0]["Artifacts"][0];
    assert_eq!(artifact["Digest"], sha256_b64(&zip));
    assert_eq!(artifact["Unarchive"], "ZIP");
    let stored = lichen_recipe::recipe_from_value(body["recipe"].clone(), "stored").unwrap();
    assert_eq!(
        stored.manifests[0].artifacts[0].unarchive,
        lichen_recipe::Unarchive::Zip
    );
    let (status, _, content) = env
        .request(
            "GET",
            "/components/com.example.Model/versions/2.0.0/artifacts/s3://models/model.zip",
            None,
            vec![],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(content, zip);
}

/// A version is immutable: publishing it again is 409 and changes nothing.
pub async fn versions_are_immutable(env: &Env) {
    let text = recipe("com.example.Fixed", "1.0.0", &["s3://b/a.txt"]);
    let (status, first) = env.publish(&text, &[("s3://b/a.txt", b"first")]).await;
    assert_eq!(status, 201, "{first}");
    let (status, body) = env.publish(&text, &[("s3://b/a.txt", b"second")]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(code(&body), "AlreadyExists");
    assert!(message(&body).contains("com.example.Fixed@1.0.0"), "{body}");
    let (_, now) = env
        .get_json("/components/com.example.Fixed/versions/1.0.0")
        .await;
    assert_eq!(now["artifacts"], first["artifacts"]);
    assert_eq!(
        env.artifact_files().len(),
        1,
        "the refused upload left content behind"
    );
}

/// Delete is refused while a deployment names the version, and then removes the artifact.
pub async fn delete_refused_in_use(env: &Env) {
    let text = recipe("com.example.Used", "1.0.0", &["s3://b/used.bin"]);
    let (status, _) = env
        .publish(&text, &[("s3://b/used.bin", b"used content")])
        .await;
    assert_eq!(status, 201);
    let store = env.components.store();
    store
        .put_deployment(&FleetDeployment {
            id: "dep-1".into(),
            target: DeploymentTarget::ThingGroup("fleet".into()),
            components: BTreeMap::from([("com.example.Used".into(), "1.0.0".into())]),
            document: serde_json::json!({}),
            created_at: "2026-12-02T17:00:00.000Z".into(),
        })
        .await
        .unwrap();
    let path = "/components/com.example.Used/versions/1.0.0";
    let (status, _, body) = env.request("DELETE", path, None, vec![]).await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(code(&body), "InUse");
    assert!(message(&body).contains("dep-1"), "{body}");
    assert_eq!(env.artifact_files().len(), 1);

    // A new deployment to the same target supersedes the old one.
    store
        .put_deployment(&FleetDeployment {
            id: "dep-2".into(),
            target: DeploymentTarget::ThingGroup("fleet".into()),
            components: BTreeMap::new(),
            document: serde_json::json!({}),
            created_at: "2026-12-02T17:01:00.000Z".into(),
        })
        .await
        .unwrap();
    let (status, _, _) = env.request("DELETE", path, None, vec![]).await;
    assert_eq!(status, 204);
    assert_eq!(env.get_json(path).await.0, 404);
    assert!(
        env.artifact_files().is_empty(),
        "{:?}",
        env.artifact_files()
    );
    let (status, _, _) = env.request("DELETE", path, None, vec![]).await;
    assert_eq!(status, 404);
}

/// Content shared by digest survives deleting one of the versions that use it.
pub async fn shared_content_is_collected_last(env: &Env) {
    let content = b"shared bytes";
    let (status, _) = env
        .publish(
            &recipe("com.example.A", "1.0.0", &["s3://b/s.bin"]),
            &[("s3://b/s.bin", content)],
        )
        .await;
    assert_eq!(status, 201);
    // The second version names the stored content by digest (an application/json body).
    let header = UploadHeader {
        recipe: recipe("com.example.B", "1.0.0", &["s3://other/s.bin"]),
        artifacts: vec![DeclaredArtifact {
            uri: "s3://other/s.bin".into(),
            size: None,
            sha256: Some(sha256_hex(content)),
        }],
    };
    let (status, _, body) = env
        .request(
            "POST",
            "/components",
            Some("application/json"),
            serde_json::to_vec(&header).unwrap(),
        )
        .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // A third names a digest that is not stored.
    let header = UploadHeader {
        recipe: recipe("com.example.C", "1.0.0", &["s3://b/x"]),
        artifacts: vec![DeclaredArtifact {
            uri: "s3://b/x".into(),
            size: None,
            sha256: Some("ab".repeat(32)),
        }],
    };
    let (status, _, body) = env
        .request(
            "POST",
            "/components",
            Some("application/json"),
            serde_json::to_vec(&header).unwrap(),
        )
        .await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, code(&body).as_str()),
        (422, "UnknownDigest"),
        "{body}"
    );

    assert_eq!(env.artifact_files().len(), 1);
    let (status, _, _) = env
        .request(
            "DELETE",
            "/components/com.example.A/versions/1.0.0",
            None,
            vec![],
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        env.artifact_files().len(),
        1,
        "B still refers to the content"
    );
    let (status, _, content_back) = env
        .request(
            "GET",
            "/components/com.example.B/versions/1.0.0/artifacts/s.bin",
            None,
            vec![],
        )
        .await;
    assert_eq!((status, content_back.as_slice()), (200, &content[..]));
    let (status, _, _) = env
        .request(
            "DELETE",
            "/components/com.example.B/versions/1.0.0",
            None,
            vec![],
        )
        .await;
    assert_eq!(status, 204);
    assert!(env.artifact_files().is_empty());
}

async fn assert_nothing_stored(env: &Env) {
    let (_, listed) = env.get_json("/components").await;
    assert_eq!(listed["components"], serde_json::json!([]), "{listed}");
    assert!(
        env.artifact_files().is_empty(),
        "{:?}",
        env.artifact_files()
    );
}

/// Bad recipes, missing and unexpected artifacts, oversized and short uploads: 4xx naming
/// the problem, and nothing in the store or the artifact directory.
pub async fn bad_input_stores_nothing(env: &Env) {
    let a = "s3://b/a.bin";
    let good = recipe("com.example.Bad", "1.0.0", &[a]);
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "bad version",
            upload_body(&good.replace("\"1.0.0\"", "\"one\""), &[(a, b"x")]),
            422,
            "InvalidRecipe",
            "ComponentVersion",
        ),
        (
            "bad yaml",
            upload_body("ComponentName: [unclosed", &[]),
            422,
            "InvalidRecipe",
            "invalid YAML",
        ),
        (
            "missing artifact",
            upload_body(&good, &[]),
            422,
            "MissingArtifact",
            a,
        ),
        (
            "unexpected artifact",
            upload_body(&good, &[(a, b"x"), ("s3://b/extra.bin", b"y")]),
            422,
            "UnexpectedArtifact",
            "s3://b/extra.bin",
        ),
        (
            "declared too large",
            upload_body(&good, &[(a, &vec![7u8; 64 * 1024 + 1])]),
            413,
            "PayloadTooLarge",
            "65536",
        ),
        (
            "short body",
            {
                let mut b = upload_body(&good, &[(a, &[1u8; 1000])]);
                b.truncate(b.len() - 10);
                b
            },
            400,
            "ContentMismatch",
            "990 of 1000",
        ),
        (
            "trailing bytes",
            {
                let mut b = upload_body(&good, &[(a, b"x")]);
                b.extend_from_slice(b"more");
                b
            },
            400,
            "MalformedRequest",
            "continues after the last declared artifact",
        ),
        (
            "wrong magic",
            b"PK\x03\x04 not an upload".to_vec(),
            400,
            "MalformedRequest",
            "magic",
        ),
        (
            "header too large",
            b"LCU1\x7f\xff\xff\xff".to_vec(),
            413,
            "PayloadTooLarge",
            "upload header",
        ),
        (
            "declared sha mismatch",
            {
                let header = UploadHeader {
                    recipe: good.clone(),
                    artifacts: vec![DeclaredArtifact {
                        uri: a.into(),
                        size: Some(1),
                        sha256: Some(sha256_hex(b"y")),
                    }],
                };
                let mut b = header.encode_prefix();
                b.push(b'x');
                b
            },
            400,
            "ContentMismatch",
            "declared",
        ),
    ];
    for (what, body, status, expected_code, needle) in cases {
        let (got, _, reply) = env
            .request("POST", "/components", Some(UPLOAD_CONTENT_TYPE), body)
            .await;
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        assert_eq!(got, status, "{what}: {reply}");
        assert_eq!(code(&reply), expected_code, "{what}: {reply}");
        assert!(message(&reply).contains(needle), "{what}: {reply}");
        assert_nothing_stored(env).await;
    }
    // Content over the whole version's bound.
    let two = recipe("com.example.Big", "1.0.0", &["s3://b/1", "s3://b/2"]);
    let half = vec![1u8; 60 * 1024];
    let (status, reply) = env
        .publish(&two, &[("s3://b/1", &half), ("s3://b/2", &half)])
        .await;
    assert_eq!(status, 413, "{reply}");
    assert!(message(&reply).contains("together"), "{reply}");
    // Wrong content type.
    let (status, _, reply) = env
        .request("POST", "/components", Some("text/plain"), good.into_bytes())
        .await;
    assert_eq!(status, 415, "{}", String::from_utf8_lossy(&reply));
    // Content declared in a JSON body.
    let header = UploadHeader {
        recipe: recipe("com.example.Json", "1.0.0", &[a]),
        artifacts: vec![DeclaredArtifact {
            uri: a.into(),
            size: Some(3),
            sha256: None,
        }],
    };
    let (status, _, reply) = env
        .request(
            "POST",
            "/components",
            Some("application/json"),
            serde_json::to_vec(&header).unwrap(),
        )
        .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&reply));
    // Unknown ids.
    assert_eq!(env.get_json("/components/nope/versions/1.0.0").await.0, 404);
    assert_eq!(
        env.get_json("/components?bogus=1").await.0,
        400,
        "unknown query fields are refused"
    );
    assert_nothing_stored(env).await;
}

/// A client that goes away mid-upload leaves no content behind: not the artifact it was
/// sending, nor the one it had sent completely before.
pub async fn abandoned_upload_is_cleaned_up(env: &Env) {
    let (a, b) = ("s3://b/first.bin", "s3://b/second.bin");
    let first = vec![8u8; 20 * 1024];
    let second = vec![9u8; 40 * 1024];
    let body = upload_body(
        &recipe("com.example.Gone", "1.0.0", &[a, b]),
        &[(a, &first), (b, &second)],
    );
    let mut stream = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let head = format!(
        "POST /components HTTP/1.1\r\nhost: localhost\r\ncontent-type: {UPLOAD_CONTENT_TYPE}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body[..body.len() - second.len() / 2])
        .await
        .unwrap();
    stream.flush().await.unwrap();
    // The first artifact arrives whole and is stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while env
        .artifact_files()
        .iter()
        .all(|p| p.ends_with("tmp") || p.parent().is_some_and(|d| d.ends_with("tmp")))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first artifact was never stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(stream);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !env.artifact_files().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_nothing_stored(env).await;
}

/// The library call with local files, as the CLI's local mode and tests use it.
pub async fn publish_from_files(env: &Env) {
    let root = workspace().join("examples");
    let text =
        std::fs::read_to_string(root.join("recipes/com.example.HelloWorld-1.0.0.yaml")).unwrap();
    let file = root.join("artifacts/com.example.HelloWorld/1.0.0/hello.sh");
    let published = env
        .components
        .publish_files(
            &text,
            "HelloWorld.yaml",
            &BTreeMap::from([(HELLO_URI.to_owned(), file.clone())]),
        )
        .await
        .unwrap();
    assert_eq!(
        published.artifacts[0].sha256,
        sha256_hex(&std::fs::read(&file).unwrap())
    );
    let err = env
        .components
        .publish_files(&text, "HelloWorld.yaml", &BTreeMap::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

/// Every route of the table answers on the router, and the OpenAPI fragment documents each.
pub async fn routes_match_the_openapi_fragment(env: &Env) {
    let paths = openapi_paths("/v1");
    for route in ROUTES {
        let doc = &paths[format!("/v1{}", route.path)][route.method.to_ascii_lowercase()];
        assert_eq!(doc["operationId"], route.operation_id, "{}", route.path);
        let concrete = route
            .path
            .replace("{name}", "x")
            .replace("{version}", "1.0.0")
            .replace("{uri}", "f");
        let (status, _, _) = env.request(route.method, &concrete, None, vec![]).await;
        assert!(
            status != 405 && (status != 404 || concrete.contains("/versions/")),
            "{} {concrete}: {status}",
            route.method
        );
    }
    assert_eq!(
        paths
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        ROUTES.len()
    );
}

/// The device fragment serves downloads and nothing else.
pub async fn device_router_serves_downloads_only(env: &Env) {
    let content = b"device bytes";
    let (status, _) = env
        .publish(
            &recipe("com.example.Dev", "1.0.0", &["s3://b/d.bin"]),
            &[("s3://b/d.bin", content)],
        )
        .await;
    assert_eq!(status, 201);
    let app: axum::Router = lichen_cloud_components::device_router(env.components.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let device = Env::client_for(addr);
    let (status, _, body) = device
        .request(
            "GET",
            "/components/com.example.Dev/versions/1.0.0/artifacts/d.bin",
            None,
            vec![],
        )
        .await;
    assert_eq!((status, body.as_slice()), (200, &content[..]));
    for (method, path) in [
        ("GET", "/components"),
        ("POST", "/components"),
        ("GET", "/components/com.example.Dev/versions/1.0.0"),
        ("DELETE", "/components/com.example.Dev/versions/1.0.0"),
    ] {
        let (status, _, _) = device.request(method, path, None, vec![]).await;
        assert!(status == 404 || status == 405, "{method} {path}: {status}");
    }
    server.abort();
    assert_eq!(
        env.get_json("/components/com.example.Dev/versions/1.0.0")
            .await
            .0,
        200
    );
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident, $limits:expr) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some(env) = $make($limits).await else {
                            return;
                        };
                        super::$name(&env).await;
                    }
                };
            }

            case!(examples_publish_with_digests, Limits::default());
            case!(zip_artifact, Limits::default());
            case!(versions_are_immutable, Limits::default());
            case!(delete_refused_in_use, Limits::default());
            case!(shared_content_is_collected_last, Limits::default());
            case!(bad_input_stores_nothing, small());
            case!(abandoned_upload_is_cleaned_up, small());
            case!(publish_from_files, Limits::default());
            case!(routes_match_the_openapi_fragment, Limits::default());
            case!(device_router_serves_downloads_only, Limits::default());
        }
    };
}

async fn sqlite_env(limits: Limits) -> Option<Env> {
    Some(Env::sqlite(limits).await)
}

suite!(sqlite, sqlite_env);

/// On a database of its own in the shared throwaway cluster; None (skipped, with a message)
/// when PostgreSQL is not installed, unless `LICHEN_TEST_REQUIRE_ALL=1` makes that a failure.
async fn postgres_env(limits: Limits) -> Option<Env> {
    let Some(cluster) = lichen_cloud_store::testing::PgCluster::shared()
        .expect("starting the test PostgreSQL cluster")
    else {
        eprintln!("PostgreSQL is not installed: skipping the PostgreSQL component-store tests");
        return None;
    };
    let url = cluster.create_database().await.expect("test database");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = lichen_cloud_store::Store::open(dir.path(), Some(&url))
        .await
        .expect("open postgres store");
    assert_eq!(store.backend_name(), "postgres");
    Some(Env::serve(dir, store, limits).await)
}

suite!(postgres, postgres_env);
