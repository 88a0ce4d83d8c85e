use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine as _;
use lichen_recipe::{Access, Artifact, Lifecycle, Permission, SelectedComponent, Unarchive};
use sha2::{Digest as _, Sha256};

use super::*;

pub(crate) fn artifact(uri: &str) -> Artifact {
    Artifact {
        uri: uri.to_string(),
        digest: None,
        algorithm: None,
        unarchive: Unarchive::None,
        permission: Permission::default(),
    }
}

fn component(name: &str, version: &str, artifacts: Vec<Artifact>) -> SelectedComponent {
    SelectedComponent {
        name: name.to_string(),
        version: semver::Version::parse(version).unwrap(),
        lifecycle: Lifecycle::default(),
        artifacts,
        manifest_index: 0,
    }
}

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

struct Fixture {
    _tmp: tempfile::TempDir,
    store: ComponentStore,
    /// `--artifactDir`
    artifacts: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = ComponentStore::new(RootLayout::new(tmp.path().join("root")));
    let artifacts = tmp.path().join("artifacts");
    Fixture {
        _tmp: tmp,
        store,
        artifacts,
    }
}

impl Fixture {
    fn put(&self, name: &str, version: &str, file: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = self.artifacts.join(name).join(version);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(file);
        fs::write(&p, bytes).unwrap();
        p
    }
}

fn recipe_yaml(name: &str, version: &str) -> String {
    format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: {name}\nComponentVersion: '{version}'\n\
         Manifests:\n  - Platform:\n      os: '*'\n    Lifecycle:\n      Run: echo hi\n"
    )
}

fn parse(name: &str, version: &str) -> Recipe {
    lichen_recipe::parse_recipe(&recipe_yaml(name, version), "test.yaml").unwrap()
}

fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn recipes_round_trip_and_list_versions() {
    let f = fixture();
    for ver in ["1.0.0", "1.10.0", "1.2.0"] {
        f.store
            .save_recipe(&parse("com.example.Hello", ver))
            .unwrap();
    }
    f.store
        .save_recipe(&parse("com.example.Other", "0.1.0"))
        .unwrap();
    assert_eq!(
        f.store.versions("com.example.Hello"),
        vec![v("1.0.0"), v("1.2.0"), v("1.10.0")]
    );
    let r = f
        .store
        .load_recipe("com.example.Hello", &v("1.2.0"))
        .unwrap();
    assert_eq!(r.name, "com.example.Hello");
    assert_eq!(r.version, v("1.2.0"));
    let path = f.store.recipe_path("com.example.Hello", &v("1.2.0"));
    assert!(path.ends_with("store/recipes/com.example.Hello@1.2.0.json"));
    let stored: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(stored, r.document);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(f.store.recipes("com.example.Hello").len(), 3);
    assert_eq!(
        f.store.component_names(),
        vec![
            "com.example.Hello".to_string(),
            "com.example.Other".to_string()
        ]
    );
    assert!(f.store.contains("com.example.Other", &v("0.1.0")));
    assert!(f.store.versions("com.example").is_empty());
    let err = f
        .store
        .load_recipe("com.example.Hello", &v("9.9.9"))
        .unwrap_err();
    assert!(matches!(err, StoreError::RecipeNotFound { .. }), "{err}");
    assert!(f.store.load_recipe("../etc", &v("1.0.0")).is_err());
}

#[test]
fn import_parses_recipe_files_and_names_bad_ones() {
    let f = fixture();
    let dir = f._tmp.path().join("recipes");
    let err = f.store.import_recipe_dir(&dir).unwrap_err();
    assert!(matches!(err, StoreError::RecipeDirectory { .. }));
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "{err}"
    );

    fs::create_dir_all(dir.join("nested")).unwrap();
    fs::write(dir.join("a.yaml"), recipe_yaml("com.a", "1.0.0")).unwrap();
    fs::write(dir.join("b.YML"), recipe_yaml("com.b", "2.0.0")).unwrap();
    let json = serde_json::to_string(&parse("com.c", "3.0.0").document).unwrap();
    fs::write(dir.join("c.json"), json).unwrap();
    fs::write(dir.join("README.md"), "not a recipe").unwrap();
    fs::write(dir.join("nested/d.yaml"), "garbage: [").unwrap();
    let names: Vec<String> = f
        .store
        .import_recipe_dir(&dir)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["com.a", "com.b", "com.c"]);
    // Import does not store.
    assert!(f.store.component_names().is_empty());

    fs::write(
        dir.join("broken.yaml"),
        "RecipeFormatVersion: '2020-01-25'\nComponentName: com.x\nComponentVersion: 'not-a-version'\n",
    )
    .unwrap();
    let err = f.store.import_recipe_dir(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Recipe(_)), "{msg}");
    assert!(
        msg.contains("broken.yaml") && msg.contains("ComponentVersion"),
        "{msg}"
    );
}

#[test]
fn stages_copies_with_permissions_and_digest() {
    let f = fixture();
    let data = b"#!/bin/sh\necho hi\n";
    f.put("com.ex", "1.0.0", "run.sh", data);
    f.put("com.ex", "1.0.0", "data.txt", b"data");
    let sum: [u8; 32] = Sha256::digest(data).into();
    let mut run = artifact("s3://bucket/path/run.sh");
    run.digest = Some(base64::engine::general_purpose::STANDARD.encode(sum));
    run.algorithm = Some("SHA-256".into());
    run.permission = Permission {
        read: Access::All,
        execute: Access::All,
    };
    let mut txt = artifact("greengrass:data.txt");
    txt.digest = Some(hex::encode(Sha256::digest(b"data")));
    let c = component("com.ex", "1.0.0", vec![run, txt]);
    f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap();

    let dir = f.store.artifacts_path("com.ex", &v("1.0.0"));
    assert!(dir.ends_with("store/artifacts/com.ex/1.0.0"));
    assert_eq!(fs::read(dir.join("run.sh")).unwrap(), data);
    assert_eq!(mode(&dir.join("run.sh")), 0o555);
    assert_eq!(mode(&dir.join("data.txt")), 0o400);
    assert_eq!(mode(&dir), 0o555);
    let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 2, "no temporary files");

    // A later deployment without an artifact directory reuses the stored copies, and
    // staging again with the directory replaces them (idempotent).
    f.store.stage_artifacts(&c, None).unwrap();
    f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap();
    assert_eq!(fs::read(dir.join("run.sh")).unwrap(), data);
}

#[test]
fn digest_mismatch_is_refused_and_leaves_no_copy() {
    let f = fixture();
    let src = f.put("com.ex", "1.0.0", "app.bin", b"tampered");
    let mut a = artifact("s3://bucket/app.bin");
    a.digest = Some(base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"original")));
    let c = component("com.ex", "1.0.0", vec![a]);
    let err = f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap_err();
    match &err {
        StoreError::DigestMismatch {
            component,
            file,
            expected,
            actual,
        } => {
            assert_eq!(component, "com.ex");
            assert_eq!(file, &src);
            assert_ne!(expected, actual);
            assert_eq!(
                actual,
                &base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"tampered"))
            );
        }
        other => panic!("unexpected {other}"),
    }
    let dir = f.store.artifacts_path("com.ex", &v("1.0.0"));
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "staged copy removed"
    );

    // A corrupt copy already in the store is detected and removed too.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("app.bin"), b"corrupt").unwrap();
    let err = f.store.stage_artifacts(&c, None).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(!dir.join("app.bin").exists());
}

#[test]
fn missing_artifact_names_component_uri_and_directory() {
    let f = fixture();
    let c = component("com.ex", "2.1.0", vec![artifact("s3://bucket/missing.py")]);
    let err = f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap_err();
    let msg = err.to_string();
    match &err {
        StoreError::MissingArtifact {
            component,
            uri,
            looked_in,
        } => {
            assert_eq!(component, "com.ex");
            assert_eq!(uri, "s3://bucket/missing.py");
            assert_eq!(
                looked_in.as_deref(),
                Some(f.artifacts.join("com.ex/2.1.0").as_path())
            );
        }
        other => panic!("unexpected {other}"),
    }
    assert!(
        msg.contains("com.ex") && msg.contains("s3://bucket/missing.py"),
        "{msg}"
    );
    assert!(msg.contains("com.ex/2.1.0"), "{msg}");
    let err = f.store.stage_artifacts(&c, None).unwrap_err();
    assert!(matches!(
        err,
        StoreError::MissingArtifact {
            looked_in: None,
            ..
        }
    ));
}

#[test]
fn docker_artifacts_are_refused() {
    let f = fixture();
    let c = component(
        "com.ex.Container",
        "1.0.0",
        vec![artifact("docker:public.ecr.aws/nginx:latest")],
    );
    let err = f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedArtifact { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("docker artifacts need a container runtime, which lichen does not provide")
            && msg.contains("docker:public.ecr.aws/nginx:latest")
            && msg.contains("com.ex.Container"),
        "{msg}"
    );
    // Nothing was created in the store.
    assert!(
        !f.store
            .artifacts_path("com.ex.Container", &v("1.0.0"))
            .exists()
    );
}

#[test]
fn zip_artifacts_are_extracted_with_permissions() {
    let f = fixture();
    let zip = zip_bytes(&[
        ("bin/", b""),
        ("bin/tool", b"#!/bin/sh\n"),
        ("README", b"hello"),
        ("deep/er/file.txt", b"x"),
    ]);
    f.put("com.ex", "1.0.0", "bundle.zip", &zip);
    let mut a = artifact("s3://bucket/bundle.zip");
    a.unarchive = Unarchive::Zip;
    a.permission = Permission {
        read: Access::All,
        execute: Access::Owner,
    };
    let c = component("com.ex", "1.0.0", vec![a]);
    f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap();
    let root = f.store.unarchived_path("com.ex", &v("1.0.0"));
    assert!(root.ends_with("store/artifacts-unarchived/com.ex/1.0.0"));
    let out = root.join("bundle");
    assert_eq!(fs::read(out.join("README")).unwrap(), b"hello");
    assert_eq!(fs::read(out.join("deep/er/file.txt")).unwrap(), b"x");
    assert_eq!(mode(&out.join("bin/tool")), 0o544);
    assert_eq!(mode(&out.join("bin")), 0o555);
    assert_eq!(mode(&out), 0o555);
    assert_eq!(mode(&root), 0o555);
    // The archive itself stays in {artifacts:path}.
    assert!(
        f.store
            .artifacts_path("com.ex", &v("1.0.0"))
            .join("bundle.zip")
            .is_file()
    );

    // A new archive for the same version replaces the extraction completely.
    f.put(
        "com.ex",
        "1.0.0",
        "bundle.zip",
        &zip_bytes(&[("only.txt", b"new")]),
    );
    f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap();
    assert!(!out.join("README").exists());
    assert_eq!(fs::read(out.join("only.txt")).unwrap(), b"new");
    let names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("bundle")],
        "no temporaries"
    );
}

#[test]
fn zip_slip_entries_are_refused_and_nothing_is_left() {
    for (evil, data) in [
        ("../escape.txt", &b"pwned"[..]),
        ("ok/../../escape.txt", b"pwned"),
        ("/tmp/abs.txt", b"pwned"),
    ] {
        let f = fixture();
        let zip = zip_bytes(&[("good.txt", b"fine"), (evil, data)]);
        f.put("com.ex", "1.0.0", "evil.zip", &zip);
        let mut a = artifact("s3://bucket/evil.zip");
        a.unarchive = Unarchive::Zip;
        let c = component("com.ex", "1.0.0", vec![a]);
        let err = f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap_err();
        match &err {
            StoreError::UnsafeArchive {
                component, entry, ..
            } => {
                assert_eq!(component, "com.ex");
                assert_eq!(entry, evil);
            }
            other => panic!("{evil}: unexpected {other}"),
        }
        let root = f.store.unarchived_path("com.ex", &v("1.0.0"));
        assert_eq!(
            fs::read_dir(&root).unwrap().count(),
            0,
            "{evil}: nothing half-extracted"
        );
        assert!(!root.join("../escape.txt").exists());
        assert!(!root.parent().unwrap().join("escape.txt").exists());
    }
}

#[test]
fn zip_symlink_entries_are_refused() {
    let f = fixture();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    w.add_symlink("link", "/etc/passwd", opts).unwrap();
    let zip = w.finish().unwrap().into_inner();
    f.put("com.ex", "1.0.0", "links.zip", &zip);
    let mut a = artifact("s3://bucket/links.zip");
    a.unarchive = Unarchive::Zip;
    let c = component("com.ex", "1.0.0", vec![a]);
    let err = f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap_err();
    assert!(
        matches!(&err, StoreError::UnsafeArchive { entry, .. } if entry == "link"),
        "{err}"
    );
}

#[test]
fn corrupt_zip_is_a_named_error() {
    let f = fixture();
    f.put("com.ex", "1.0.0", "bad.zip", b"this is not a zip");
    let mut a = artifact("s3://bucket/bad.zip");
    a.unarchive = Unarchive::Zip;
    let c = component("com.ex", "1.0.0", vec![a]);
    let err = f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap_err();
    assert!(matches!(err, StoreError::BadArchive { .. }), "{err}");
    assert!(err.to_string().contains("bad.zip") && err.to_string().contains("com.ex"));
}

#[test]
fn remove_version_deletes_read_only_artifacts() {
    let f = fixture();
    f.store.save_recipe(&parse("com.ex", "1.0.0")).unwrap();
    f.store.save_recipe(&parse("com.ex", "2.0.0")).unwrap();
    f.put("com.ex", "1.0.0", "b.zip", &zip_bytes(&[("d/f", b"1")]));
    let mut a = artifact("s3://bucket/b.zip");
    a.unarchive = Unarchive::Zip;
    let c = component("com.ex", "1.0.0", vec![a]);
    f.store.stage_artifacts(&c, Some(&f.artifacts)).unwrap();
    let arts = f.store.artifacts_path("com.ex", &v("1.0.0"));
    let unarch = f.store.unarchived_path("com.ex", &v("1.0.0"));
    assert_eq!(mode(&arts.join("b.zip")), 0o400);

    f.store.remove_version("com.ex", &v("1.0.0")).unwrap();
    assert!(!arts.exists() && !unarch.exists());
    assert!(!arts.parent().unwrap().exists(), "empty <name>/ removed");
    assert_eq!(f.store.versions("com.ex"), vec![v("2.0.0")]);
    // Removing again (or something never stored) is fine.
    f.store.remove_version("com.ex", &v("1.0.0")).unwrap();
    assert!(f.store.remove_version("..", &v("1.0.0")).is_err());
}

#[test]
fn artifacts_can_be_given_to_the_run_as_user() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: changing owners needs root");
        return;
    }
    let f = fixture();
    f.put("com.ex", "1.0.0", "run.sh", b"echo");
    f.put("com.ex", "1.0.0", "b.zip", &zip_bytes(&[("d/f", b"1")]));
    let mut z = artifact("s3://bucket/b.zip");
    z.unarchive = Unarchive::Zip;
    let c = component("com.ex", "1.0.0", vec![artifact("s3://bucket/run.sh"), z]);
    let owner = (65534, 65533);
    f.store
        .stage_artifacts_as(&c, Some(&f.artifacts), Some(owner), false)
        .unwrap();
    let arts = f.store.artifacts_path("com.ex", &v("1.0.0"));
    let extracted = f.store.unarchived_path("com.ex", &v("1.0.0")).join("b");
    for p in [
        arts.join("run.sh"),
        arts.join("b.zip"),
        extracted.join("d/f"),
    ] {
        let m = fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), owner, "{}", p.display());
        assert_eq!(m.mode() & 0o777, 0o400, "{}", p.display());
    }
    // Directories stay the core's.
    assert_eq!(fs::metadata(&arts).unwrap().uid(), 0);
    assert_eq!(fs::metadata(extracted.join("d")).unwrap().uid(), 0);
    // Reusing the stored copies under another user re-applies the owner everywhere.
    f.store
        .stage_artifacts_as(&c, None, Some((65532, 65532)), false)
        .unwrap();
    assert_eq!(fs::metadata(arts.join("run.sh")).unwrap().uid(), 65532);
    assert_eq!(fs::metadata(extracted.join("d/f")).unwrap().uid(), 65532);
}

#[test]
fn store_errors_convert_to_core_errors() {
    let e: crate::CoreError = StoreError::RecipeNotFound {
        name: "com.ex".into(),
        version: "1.0.0".into(),
    }
    .into();
    assert!(matches!(e, crate::CoreError::ComponentNotFound(_)));
    let e: crate::CoreError = StoreError::MissingArtifact {
        component: "com.ex".into(),
        uri: "s3://b/f".into(),
        looked_in: None,
    }
    .into();
    assert!(e.to_string().contains("s3://b/f"));
}

#[test]
fn components_without_artifacts_get_an_empty_artifacts_dir_and_no_unarchived_dir() {
    let f = fixture();
    let c = component("com.ex.Plain", "1.0.0", vec![]);
    f.store.stage_artifacts(&c, None).unwrap();
    let dir = f.store.artifacts_path("com.ex.Plain", &v("1.0.0"));
    assert!(dir.is_dir(), "{}", dir.display());
    assert_eq!(mode(&dir), 0o555);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    let unarchived = f.store.unarchived_path("com.ex.Plain", &v("1.0.0"));
    assert!(
        !unarchived.exists(),
        "made lazily: {}",
        unarchived.display()
    );
    assert!(
        !unarchived.parent().unwrap().exists(),
        "nor its component directory"
    );
    // A lifecycle that names {artifacts:decompressedPath} gets it, empty and read-only.
    f.store.stage_artifacts_as(&c, None, None, true).unwrap();
    assert!(unarchived.is_dir());
    assert_eq!(mode(&unarchived), 0o555);
    assert_eq!(fs::read_dir(&unarchived).unwrap().count(), 0);
}

#[test]
fn a_component_version_defined_twice_in_a_recipe_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = crate::paths::RootLayout::new(dir.path().join("root"));
    let store = ComponentStore::new(layout);
    let recipes = dir.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    let text =
        "RecipeFormatVersion: 2020-01-25\nComponentName: com.x.Dup\nComponentVersion: 1.0.0\n";
    std::fs::write(recipes.join("a.yaml"), text).unwrap();
    std::fs::write(recipes.join("b.yaml"), text).unwrap();
    let err = store.import_recipe_dir(&recipes).unwrap_err().to_string();
    assert!(
        err.contains("com.x.Dup 1.0.0 is defined twice")
            && err.contains("a.yaml")
            && err.contains("b.yaml"),
        "{err}"
    );
}

#[test]
fn save_recipes_stores_all_with_one_sync_and_indexes_them() {
    let f = fixture();
    let a = parse("com.example.A", "1.0.0");
    let b = parse("com.example.B", "2.0.0");
    let b3 = parse("com.example.B", "3.0.0");
    f.store.save_recipes(&[&a, &b, &b3]).unwrap();
    f.store.save_recipes(&[]).unwrap();
    assert_eq!(
        f.store
            .load_recipe("com.example.B", &v("2.0.0"))
            .unwrap()
            .name,
        "com.example.B"
    );
    assert_eq!(
        mode(&f.store.recipe_path("com.example.A", &v("1.0.0"))),
        0o600
    );
    let index = f.store.recipe_index();
    assert_eq!(index["com.example.B"], [v("2.0.0"), v("3.0.0")]);
    assert_eq!(index.len(), 2);
    // No temporaries are left behind, also when a name is refused.
    let mut bad = parse("com.example.C", "1.0.0");
    bad.name = "../escape".into();
    assert!(f.store.save_recipes(&[&bad]).is_err());
    let leftovers: Vec<_> = std::fs::read_dir(f.store.layout().recipes_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
