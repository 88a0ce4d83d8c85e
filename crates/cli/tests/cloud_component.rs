//! `lichen cloud component …` against a real `lichen cloud run` (SQLite), through the real
//! binary: publish from the project's examples and a ZIP, immutability, delete refused while a
//! deployment uses the version, bad input refused before anything is stored.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use base64::Engine as _;
use lichen_cloud_store::{Backend, DeploymentTarget, FleetDeployment, Store};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

fn lichen() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lichen"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

struct Cloud {
    dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cloud {
    fn start() -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(lichen())
            .args(["cloud", "run", "--json", "--api-listen", "127.0.0.1:0"])
            .args(["--mqtt-listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .env("LICHEN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start lichen cloud run");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(ready["ready"], true, "{line}");
        Cloud { dir, child }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(lichen())
            .arg("cloud")
            .arg("--data")
            .arg(self.data())
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn artifact_files(&self) -> usize {
        let mut n = 0;
        let mut todo = vec![self.data().join("artifacts")];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    todo.push(e.path());
                } else {
                    n += 1;
                }
            }
        }
        n
    }
}

fn b64_sha256(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut out);
        for (name, content) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(content).unwrap();
        }
        zip.finish().unwrap();
    }
    out.into_inner()
}

#[test]
fn publish_list_describe_delete_through_the_cli() {
    let cloud = Cloud::start();
    let examples = examples();
    let artifacts = examples.join("artifacts");
    let hello = std::fs::read(artifacts.join("com.example.HelloWorld/1.0.0/hello.sh")).unwrap();

    // Every example recipe publishes; HelloWorld's artifact comes from DIR/<name>/<version>/.
    for entry in std::fs::read_dir(examples.join("recipes")).unwrap() {
        let recipe = entry.unwrap().path();
        let published = cloud.json(&[
            "component",
            "create",
            "--recipe",
            recipe.to_str().unwrap(),
            "--artifacts",
            artifacts.to_str().unwrap(),
        ]);
        assert!(published["version"] == "1.0.0", "{published}");
    }
    let described = cloud.json(&["component", "describe", "com.example.HelloWorld", "1.0.0"]);
    let stored = &described["recipe"]["Manifests"][0]["Artifacts"][0];
    assert_eq!(stored["Digest"], b64_sha256(&hello), "{described}");
    assert_eq!(stored["Algorithm"], "SHA-256");
    assert_eq!(cloud.artifact_files(), 1);

    // Immutable: the same version again is refused, naming it.
    let err = cloud.fails(&[
        "component",
        "create",
        "--recipe",
        examples
            .join("recipes/com.example.HelloWorld-1.0.0.yaml")
            .to_str()
            .unwrap(),
        "--artifacts",
        artifacts.to_str().unwrap(),
    ]);
    assert!(
        err.contains("409") && err.contains("com.example.HelloWorld@1.0.0"),
        "{err}"
    );

    // A ZIP artifact found as DIR/<file>.
    let work = cloud.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let zip = zip_of(&[
        ("model/run.sh", b"echo model\n"),
        ("model/w.bin", &[7u8; 5000]),
    ]);
    std::fs::write(work.join("model.zip"), &zip).unwrap();
    let recipe = work.join("model.yaml");
    std::fs::write(
        &recipe,
        "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.Model\nComponentVersion: '1.1.0'\n\
         ComponentDescription: a zipped model\nManifests:\n  - Lifecycle:\n      Run: sh {artifacts:decompressedPath}/model/model/run.sh\n\
         \x20   Artifacts:\n      - URI: s3://models/model.zip\n        Unarchive: ZIP\n",
    )
    .unwrap();
    let published = cloud.json(&[
        "component",
        "create",
        "--recipe",
        recipe.to_str().unwrap(),
        "--artifacts",
        work.to_str().unwrap(),
    ]);
    assert_eq!(
        published["recipe"]["Manifests"][0]["Artifacts"][0]["Digest"],
        b64_sha256(&zip)
    );
    let listed = cloud.json(&["component", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    let human = cloud.cli(&["component", "list"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("com.example.Model") && human.contains("1.1.0"),
        "{human}"
    );
    let only = cloud.json(&["component", "list", "--name", "com.example.Model"]);
    assert_eq!(only.as_array().unwrap().len(), 1, "{only}");

    // Delete is refused while a deployment names the version. The test writes the
    // deployment record through the store, as the fleet-deployment API will.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(&cloud.data(), None).await.unwrap();
        store
            .put_deployment(&FleetDeployment {
                id: "rollout-42".into(),
                target: DeploymentTarget::Thing("camera-7".into()),
                components: BTreeMap::from([("com.example.Model".into(), "1.1.0".into())]),
                document: serde_json::json!({}),
                created_at: "2026-12-02T17:00:00.000Z".into(),
            })
            .await
            .unwrap();
    });
    let err = cloud.fails(&["component", "delete", "com.example.Model", "1.1.0"]);
    assert!(err.contains("409") && err.contains("rollout-42"), "{err}");
    assert_eq!(cloud.artifact_files(), 2);
    let deleted = cloud.json(&["component", "delete", "com.example.HelloWorld", "1.0.0"]);
    assert_eq!(deleted["deleted"]["name"], "com.example.HelloWorld");
    assert_eq!(cloud.artifact_files(), 1, "the unused artifact is removed");
    let err = cloud.fails(&["component", "describe", "com.example.HelloWorld", "1.0.0"]);
    assert!(err.contains("404"), "{err}");
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    let cloud = Cloud::start();
    let work = cloud.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let recipe = work.join("r.yaml");

    // A recipe whose version is not semver: named, locally, before anything is sent.
    std::fs::write(
        &recipe,
        "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.Bad\nComponentVersion: 'one'\n",
    )
    .unwrap();
    let err = cloud.fails(&["component", "create", "--recipe", recipe.to_str().unwrap()]);
    assert!(err.contains("ComponentVersion"), "{err}");

    // An artifact that is not in the directory: both paths tried are named.
    std::fs::write(
        &recipe,
        "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.Bad\nComponentVersion: '1.0.0'\n\
         Manifests:\n  - Artifacts:\n      - URI: s3://b/missing.bin\n",
    )
    .unwrap();
    let err = cloud.fails(&[
        "component",
        "create",
        "--recipe",
        recipe.to_str().unwrap(),
        "--artifacts",
        work.to_str().unwrap(),
    ]);
    assert!(
        err.contains("s3://b/missing.bin") && err.contains("com.example.Bad/1.0.0/missing.bin"),
        "{err}"
    );
    let err = cloud.fails(&["component", "create", "--recipe", recipe.to_str().unwrap()]);
    assert!(err.contains("--artifacts"), "{err}");

    // The server refuses what the CLI cannot check: a recipe the server rejects arrives
    // through the API (an unknown token is a 401 first).
    let out = Command::new(lichen())
        .args(["cloud", "--data"])
        .arg(cloud.data())
        .args(["--token", "not-a-token", "component", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    assert_eq!(cloud.json(&["component", "list"]), serde_json::json!([]));
    assert_eq!(cloud.artifact_files(), 0);
}
