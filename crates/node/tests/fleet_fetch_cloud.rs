//! The core's fleet fetcher (`lichen_node::services::fleet::fetch`) against a real
//! in-process cloud (`lichen_cloud::compose::start_cloud`, SQLite): the thing's certificate
//! from a CSR, a component published over the admin API and deployed to the thing, then the
//! recipe and artifact fetched over mTLS from `/device/v1`, a resumed download, a corrupt
//! partial file caught by the digest, and a component not deployed refused; an artifact held
//! with the same digest (fetch directory or the core's store) is not downloaded again; only
//! the manifest the platform selects is fetched, and a recipe with none for it fails naming
//! the component and the platform.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use lichen_cloud::CloudClient;
use lichen_cloud::server::CloudConfig;
use lichen_cloud_components::upload::{DeclaredArtifact, UPLOAD_CONTENT_TYPE, UploadHeader};
use lichen_mqtt_client::TlsFiles;
use lichen_node::services::fleet::fetch::{FetchError, Fetcher, MAX_ARTIFACT_BYTES, Staging};
use serde_json::{Value, json};

const NAME: &str = "com.example.Fetched";
const URI: &str = "s3://bucket/com.example.Fetched/1.0.0/payload.bin";

fn payload() -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

fn recipe(name: &str, version: &str, artifact: Option<&str>) -> String {
    let mut text = format!(
        "RecipeFormatVersion: \"2020-01-25\"\nComponentName: {name}\nComponentVersion: \"{version}\"\n\
         Manifests:\n  - Platform:\n      os: linux\n    Lifecycle:\n      Run: cat {{artifacts:path}}/payload.bin\n"
    );
    if let Some(uri) = artifact {
        text.push_str(&format!("    Artifacts:\n      - URI: {uri}\n"));
    }
    text
}

/// `recipe` with `ComponentDependencies` (name, requirement).
fn recipe_with_deps(name: &str, version: &str, deps: &[(&str, &str)]) -> String {
    let mut text = recipe(name, version, None);
    text.push_str("ComponentDependencies:\n");
    for (dep, requirement) in deps {
        text.push_str(&format!(
            "  {dep}:\n    VersionRequirement: \"{requirement}\"\n"
        ));
    }
    text
}

async fn publish(admin: &CloudClient, recipe_text: &str, content: Option<&[u8]>) {
    let files: Vec<(&str, &[u8])> = content.map(|c| (URI, c)).into_iter().collect();
    publish_files(admin, recipe_text, &files).await;
}

async fn publish_files(admin: &CloudClient, recipe_text: &str, files: &[(&str, &[u8])]) {
    let header = UploadHeader {
        recipe: recipe_text.to_string(),
        artifacts: files
            .iter()
            .map(|(uri, c)| DeclaredArtifact {
                uri: uri.to_string(),
                size: Some(c.len() as u64),
                sha256: None,
            })
            .collect(),
    };
    let mut body = header.encode_prefix();
    for (_, c) in files {
        body.extend_from_slice(c);
    }
    let a = admin
        .send(
            "POST",
            "/v1/components",
            &[("content-type", UPLOAD_CONTENT_TYPE)],
            body,
        )
        .await
        .unwrap();
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
}

async fn admin_call(admin: &CloudClient, method: &str, path: &str, body: Option<Value>) -> Value {
    admin.call(method, path, body.as_ref()).await.unwrap()
}

fn write(dir: &Path, file: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetcher_downloads_from_a_real_cloud() {
    let data = tempfile::tempdir().unwrap();
    let config = CloudConfig {
        data_dir: data.path().to_path_buf(),
        database_url: None,
        api_listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        mqtt_listen: "127.0.0.1:0".parse::<SocketAddr>().unwrap(),
        hostnames: vec![],
    };
    let cloud = lichen_cloud::compose::start_cloud(&config).await.unwrap();
    let ca_pem = std::fs::read_to_string(&cloud.ca_path).unwrap();
    let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let admin =
        CloudClient::new(&cloud.local_url, &ca_pem, Some(token.trim().to_string())).unwrap();

    let content = payload();
    publish(&admin, &recipe(NAME, "1.0.0", Some(URI)), Some(&content)).await;
    publish(&admin, &recipe("com.example.Other", "1.0.0", None), None).await;

    admin_call(
        &admin,
        "POST",
        "/v1/things",
        Some(json!({"name": "core-1"})),
    )
    .await;
    let key = lichen_cloud::bundle::new_key_and_csr("core-1").unwrap();
    let cert = admin_call(
        &admin,
        "POST",
        "/v1/certificates",
        Some(json!({"csr": key.csr_pem, "thing": "core-1"})),
    )
    .await;
    admin_call(
        &admin,
        "POST",
        "/v1/deployments",
        Some(
            json!({"target": "thing/core-1", "components": {NAME: {"componentVersion": "1.0.0"}}}),
        ),
    )
    .await;

    // The files a provisioned core holds.
    let ids = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        ca: write(ids.path(), "ca.pem", &ca_pem),
        client_cert: Some(write(
            ids.path(),
            "thing.cert.pem",
            cert["pem"].as_str().unwrap(),
        )),
        client_key: Some(write(ids.path(), "thing.private.key", &key.key_pem)),
        server_name: None,
    };
    // What the bundle names as cloud.apiEndpoint.
    let api_endpoint = cloud.endpoints.api_endpoint.clone();
    let fetch_dir = tempfile::tempdir().unwrap();
    let mut staging = Staging::new(
        Fetcher::new(&api_endpoint, &files).unwrap(),
        fetch_dir.path().to_path_buf(),
    );
    let core_root = tempfile::tempdir().unwrap();
    let store = lichen_core::store::ComponentStore::new(lichen_core::paths::RootLayout::new(
        core_root.path(),
    ));
    staging.store = Some(store.clone());
    let roots = [(NAME.to_string(), "1.0.0".to_string())].into();
    let recipes = staging.fetch("d-1", &roots, |_, _| false).await.unwrap();
    assert_eq!(recipes, staging.recipe_dir("d-1"));
    let artifact = fetch_dir
        .path()
        .join(NAME)
        .join("1.0.0")
        .join("payload.bin");
    assert_eq!(std::fs::read(&artifact).unwrap(), content);
    let stored_recipe =
        std::fs::read_to_string(recipes.join(format!("{NAME}-1.0.0.json"))).unwrap();
    let stored: Value = serde_json::from_str(&stored_recipe).unwrap();
    let digest = stored["Manifests"][0]["Artifacts"][0]["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let downloaded = |s: &Staging| s.stats.downloaded_bytes.load(Ordering::Relaxed);
    assert_eq!(downloaded(&staging), content.len() as u64);

    // The same version again (a new deployment, another configuration): held in the fetch
    // directory with the recipe's digest, so nothing is downloaded.
    staging.fetch("d-1b", &roots, |_, _| false).await.unwrap();
    assert_eq!(
        downloaded(&staging),
        content.len() as u64,
        "0 bytes the second time"
    );
    assert_eq!(staging.stats.artifacts_skipped.load(Ordering::Relaxed), 1);
    // Gone from the fetch directory but in the core's store: still nothing downloaded.
    let in_store = store
        .artifacts_path(NAME, &semver::Version::new(1, 0, 0))
        .join("payload.bin");
    std::fs::create_dir_all(in_store.parent().unwrap()).unwrap();
    std::fs::rename(&artifact, &in_store).unwrap();
    staging.fetch("d-1c", &roots, |_, _| false).await.unwrap();
    assert_eq!(downloaded(&staging), content.len() as u64);
    assert_eq!(staging.stats.artifacts_skipped.load(Ordering::Relaxed), 2);
    assert!(
        !artifact.exists(),
        "the store's copy is what the core stages"
    );
    // A held copy that does not match the digest is downloaded again.
    std::fs::write(&in_store, b"tampered").unwrap();
    staging.fetch("d-1d", &roots, |_, _| false).await.unwrap();
    assert_eq!(downloaded(&staging), 2 * content.len() as u64);
    assert_eq!(std::fs::read(&artifact).unwrap(), content);

    // Resumed from a partial file: only the rest is fetched (Range), the whole verifies.
    let path = format!("/device/v1/components/{NAME}/versions/1.0.0/artifacts/payload.bin");
    let resumed = fetch_dir.path().join("resumed/payload.bin");
    std::fs::create_dir_all(resumed.parent().unwrap()).unwrap();
    std::fs::write(
        fetch_dir.path().join("resumed/payload.bin.part"),
        &content[..70_001],
    )
    .unwrap();
    staging
        .fetcher
        .artifact(
            &path,
            &resumed,
            MAX_ARTIFACT_BYTES,
            Some(&digest),
            "resumed",
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(&resumed).unwrap(), content);

    // A partial file that is not a prefix of the content: the appended whole fails the
    // digest (which shows the cloud sent only the rest) and the part is discarded.
    let corrupt = fetch_dir.path().join("corrupt/payload.bin");
    std::fs::create_dir_all(corrupt.parent().unwrap()).unwrap();
    let part = fetch_dir.path().join("corrupt/payload.bin.part");
    std::fs::write(&part, vec![0u8; 5_000]).unwrap();
    let err = staging
        .fetcher
        .artifact(
            &path,
            &corrupt,
            MAX_ARTIFACT_BYTES,
            Some(&digest),
            "corrupt",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::DigestMismatch { .. }), "{err}");
    assert!(!part.exists() && !corrupt.exists());

    // Not deployed to this thing: refused.
    match staging.fetcher.recipe("com.example.Other", "1.0.0").await {
        Err(FetchError::Status { status, .. }) => assert_eq!(status, 403),
        other => panic!("expected 403, got {other:?}"),
    }

    // Dependencies: the cloud resolves the closure from its stored recipes (highest version
    // every requirement accepts); what the core's store lacks is fetched, what it has is not,
    // and a built-in the cloud holds no version of is left to the core.
    let app = "com.example.App";
    publish(
        &admin,
        &recipe_with_deps(
            app,
            "1.0.0",
            &[
                ("com.example.Lib", "^1.0.0"),
                ("aws.greengrass.Nucleus", ">=2.0.0"),
            ],
        ),
        None,
    )
    .await;
    for v in ["1.0.0", "1.2.0", "2.0.0"] {
        let deps: &[(&str, &str)] = if v == "1.2.0" {
            &[("com.example.Util", "*")]
        } else {
            &[]
        };
        publish(&admin, &recipe_with_deps("com.example.Lib", v, deps), None).await;
    }
    publish(&admin, &recipe("com.example.Util", "0.1.0", None), None).await;
    // A higher Lib this platform cannot run: the core sends its platform, so the cloud
    // passes it over.
    publish(
        &admin,
        "RecipeFormatVersion: \"2020-01-25\"\nComponentName: com.example.Lib\nComponentVersion: \"1.3.0\"\n\
         Manifests:\n  - Platform:\n      os: plan9\n    Lifecycle:\n      Run: echo no\n",
        None,
    )
    .await;
    let app_roots = [(app.to_string(), "1.0.0".to_string())].into();
    // Not deployed to the thing yet: refused, naming the component.
    match staging.fetcher.resolve(&app_roots, &staging.platform).await {
        Err(FetchError::Cloud {
            status, message, ..
        }) => {
            assert_eq!(status, 403);
            assert!(message.contains("com.example.App@1.0.0"), "{message}");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    admin_call(
        &admin,
        "POST",
        "/v1/deployments",
        Some(json!({"target": "thing/core-1", "components": {
            NAME: {"componentVersion": "1.0.0"}, app: {"componentVersion": "1.0.0"}}})),
    )
    .await;
    let resolved = staging
        .fetcher
        .resolve(&app_roots, &staging.platform)
        .await
        .unwrap()
        .unwrap();
    let versions: Vec<String> = resolved
        .resolved_component_versions
        .iter()
        .map(|c| format!("{}@{}", c.component_name, c.component_version))
        .collect();
    assert_eq!(
        versions,
        vec![
            "com.example.App@1.0.0",
            "com.example.Lib@1.2.0",
            "com.example.Util@0.1.0"
        ]
    );
    assert_eq!(resolved.external.len(), 1, "{:?}", resolved.external);
    assert_eq!(
        resolved.external[0]["componentName"],
        "aws.greengrass.Nucleus"
    );
    let dir = staging
        .fetch("d-2", &app_roots, |name, _| name == "com.example.Util")
        .await
        .unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec!["com.example.App-1.0.0.json", "com.example.Lib-1.2.0.json"],
        "Util is in the core's store already"
    );
    // Once no pending core deployment plans from them, the fetched recipes go.
    staging.sweep(std::slice::from_ref(&dir));
    assert!(dir.exists() && !staging.recipe_dir("d-1").exists());
    staging.sweep(&[]);
    assert_eq!(
        std::fs::read_dir(fetch_dir.path().join("recipes"))
            .unwrap()
            .count(),
        0
    );

    // Platforms: only the artifacts of the manifest this platform selects are fetched, and a
    // recipe with no manifest for it fails naming the component and the platform.
    let multi = "com.example.Multi";
    let linux_uri = format!("s3://bucket/{multi}/1.0.0/linux.bin");
    let other_uri = format!("s3://bucket/{multi}/1.0.0/other.bin");
    let multi_recipe = format!(
        "RecipeFormatVersion: \"2020-01-25\"\nComponentName: {multi}\nComponentVersion: \"1.0.0\"\n\
         Manifests:\n  - Platform:\n      os: plan9\n    Lifecycle:\n      Run: echo other\n\
         \x20   Artifacts:\n      - URI: {other_uri}\n\
         \x20 - Platform:\n      os: linux\n    Lifecycle:\n      Run: echo linux\n\
         \x20   Artifacts:\n      - URI: {linux_uri}\n"
    );
    publish_files(
        &admin,
        &multi_recipe,
        &[
            (&other_uri, b"other platform"),
            (&linux_uri, b"this platform"),
        ],
    )
    .await;
    let only_other = "com.example.Plan9Only";
    publish(
        &admin,
        &format!(
            "RecipeFormatVersion: \"2020-01-25\"\nComponentName: {only_other}\nComponentVersion: \"1.0.0\"\n\
             Manifests:\n  - Platform:\n      os: plan9\n      architecture: mips\n    Lifecycle:\n      Run: echo no\n"
        ),
        None,
    )
    .await;
    admin_call(
        &admin,
        "POST",
        "/v1/deployments",
        Some(json!({"target": "thing/core-1", "components": {
            multi: {"componentVersion": "1.0.0"}, only_other: {"componentVersion": "1.0.0"}}})),
    )
    .await;
    staging.platform = lichen_recipe::Platform::default()
        .with("os", "linux")
        .with("architecture", "amd64");
    let multi_roots = [(multi.to_string(), "1.0.0".to_string())].into();
    staging
        .fetch("d-3", &multi_roots, |_, _| false)
        .await
        .unwrap();
    let multi_dir = fetch_dir.path().join(multi).join("1.0.0");
    assert_eq!(
        std::fs::read(multi_dir.join("linux.bin")).unwrap(),
        b"this platform"
    );
    assert!(
        !multi_dir.join("other.bin").exists(),
        "another platform's artifact fetched"
    );
    let only_roots = [(only_other.to_string(), "1.0.0".to_string())].into();
    let err = staging
        .fetch("d-4", &only_roots, |_, _| false)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, FetchError::NoMatchingPlatform(_)),
        "{message}"
    );
    assert!(
        message.contains(only_other)
            && message.contains("os=linux")
            && message.contains("architecture=amd64"),
        "{message}"
    );

    // Revoked: the next fetch is refused.
    let id = cert["id"].as_str().unwrap();
    admin_call(
        &admin,
        "POST",
        &format!("/v1/certificates/{id}/revoke"),
        None,
    )
    .await;
    match staging.fetcher.recipe(NAME, "1.0.0").await {
        Err(FetchError::Status { status, .. }) => assert_eq!(status, 401),
        other => panic!("expected 401, got {other:?}"),
    }
    cloud.shutdown().await;
}
