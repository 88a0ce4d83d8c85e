//! Every real-world recipe in the shared fixtures directory, with its expected outcome.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use lichen_recipe::{
    Access, ComponentType, DependencyType, Platform, Recipe, RecipeError, SkipIf, Unarchive,
    parse_recipe_file,
};
use semver::Version;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/recipes")
}

/// The shared fixtures sit beside the checkout only on the developers' machines; a user's
/// clone has none (the project's own recipes in `examples/` and the parse tests cover the
/// same ground), so these tests skip with a message there.
fn fixtures_present() -> bool {
    let present = dir().is_dir();
    if !present {
        eprintln!(
            "skipping: the shared fixtures ({}) are not beside this checkout",
            dir().display()
        );
    }
    present
}

fn linux_amd64() -> Platform {
    Platform::default()
        .with("os", "linux")
        .with("architecture", "amd64")
}

fn linux(arch: &str) -> Platform {
    Platform::default()
        .with("os", "linux")
        .with("architecture", arch)
}

fn windows() -> Platform {
    Platform::default()
        .with("os", "windows")
        .with("architecture", "amd64")
}

fn v(s: &str) -> Version {
    Version::parse(s).expect("test version")
}

enum Expect {
    Parses(fn(&Recipe)),
    Placeholder(&'static str),
    Invalid(&'static str, &'static str),
}

fn expectations() -> Vec<(&'static str, Expect)> {
    vec![
        (
            "SubscribeAndPublish-1.0.0.yaml",
            Expect::Parses(subscribe_and_publish),
        ),
        (
            "aws.greengrass.Nucleus.recipe.yaml",
            Expect::Parses(nucleus),
        ),
        (
            "aws.greengrass.samples.lambda.DLR-1.6.0.json",
            Expect::Parses(dlr),
        ),
        // A Lambda function component definition, not a recipe, and its version is a
        // `$COMPONENT_VERSION$` placeholder.
        (
            "aws.greengrass.samples.lambda.DLRImageClassification-1.0.0.json",
            Expect::Placeholder("ComponentVersion"),
        ),
        (
            "aws.greengrass.samples.lambda.DLRImageClassification.Model-1.0.0.json",
            Expect::Parses(dlr_model),
        ),
        (
            "blog-config-node.BusinessLogic.recipe.json",
            Expect::Placeholder("ComponentName"),
        ),
        (
            "com.greengrass.SageMakerEdgeManager.ImageClassification-1.0.0.json",
            Expect::Parses(sagemaker),
        ),
        // An unbuilt GDK recipe: no ComponentVersion at all (GDK adds it), placeholder URIs.
        (
            "emqx-mqtt.recipe.json",
            Expect::Invalid("ComponentVersion", "gdk component build"),
        ),
        (
            "labs-certificate-rotator.recipe.yaml",
            Expect::Placeholder("ComponentName"),
        ),
        (
            "labs-home-assistant.recipe.yaml",
            Expect::Placeholder("ComponentName"),
        ),
        (
            "sample_recipe_with_all_fields.yaml",
            Expect::Parses(all_fields),
        ),
    ]
}

#[test]
fn every_fixture_has_the_expected_outcome() {
    if !fixtures_present() {
        return;
    }
    let expected = expectations();
    let listed: BTreeSet<&str> = expected.iter().map(|(f, _)| *f).collect();
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir()).expect("fixtures directory") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if !(name.ends_with(".json") || name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        assert!(
            listed.contains(name.as_str()),
            "new fixture {name} has no expectation"
        );
        found.insert(name);
    }
    assert_eq!(
        found.len(),
        listed.len(),
        "fixtures missing from the directory"
    );

    for (file, expect) in expected {
        let path = dir().join(file);
        let result = parse_recipe_file(&path);
        match (expect, result) {
            (Expect::Parses(check), Ok(recipe)) => {
                check(&recipe);
                // The stored JSON form parses back to the same recipe.
                let again = lichen_recipe::parse_recipe(&recipe.document.to_string(), "store.json")
                    .expect("document re-parses");
                assert_eq!(again, recipe, "{file}: document round trip");
            }
            (Expect::Parses(_), Err(e)) => panic!("{file} should parse: {e}"),
            (Expect::Placeholder(field), Err(e)) => {
                let msg = e.to_string();
                match e {
                    RecipeError::Placeholder {
                        field: f,
                        file: src,
                        ..
                    } => {
                        assert_eq!(f, field, "{file}: {msg}");
                        assert!(src.ends_with(file), "{msg}");
                        assert!(msg.contains(field) && msg.contains(file), "{msg}");
                        assert!(msg.contains("placeholder"), "{msg}");
                    }
                    other => panic!("{file}: expected a placeholder error, got {other}"),
                }
            }
            (Expect::Invalid(field, words), Err(e)) => {
                let msg = e.to_string();
                match e {
                    RecipeError::Invalid {
                        field: f, message, ..
                    } => {
                        assert_eq!(f, field, "{file}: {msg}");
                        assert!(message.contains(words), "{msg}");
                        assert!(msg.contains(file), "{msg}");
                    }
                    other => panic!("{file}: expected an invalid-field error, got {other}"),
                }
            }
            (Expect::Placeholder(_) | Expect::Invalid(..), Ok(r)) => {
                panic!("{file} should be rejected, parsed {}", r.name)
            }
        }
    }
}

fn subscribe_and_publish(r: &Recipe) {
    assert_eq!(r.name, "SubscribeAndPublish");
    assert_eq!(r.version, v("1.0.0"));
    assert_eq!(r.manifests.len(), 2);
    // `os: all` is the legacy spelling of `*`.
    let sel = r.select(&linux_amd64()).expect("linux");
    assert_eq!(sel.manifest_index, 1);
    assert_eq!(sel.lifecycle.run.expect("run").script, "sleep 1");
    assert_eq!(r.select(&windows()).expect("windows").manifest_index, 0);
    let policy = r
        .default_configuration
        .pointer("/accessControl/aws.greengrass.ipc.pubsub/policyId1/operations/0");
    assert_eq!(policy.and_then(|v| v.as_str()), Some("*"));
}

fn nucleus(r: &Recipe) {
    assert_eq!(r.name, "aws.greengrass.Nucleus");
    assert_eq!(r.version, v("2.18.0"));
    assert_eq!(r.component_type, ComponentType::Nucleus);
    assert_eq!(r.manifests.len(), 3);
    assert_eq!(
        r.default_configuration
            .get("greengrassDataPlanePort")
            .and_then(|v| v.as_u64()),
        Some(8443)
    );
    let sel = r.select(&linux_amd64()).expect("linux");
    assert_eq!(sel.manifest_index, 1);
    let boot = sel.lifecycle.bootstrap.expect("bootstrap");
    assert!(boot.requires_privilege);
    assert!(boot.script.contains("exit 100"));
    assert!(boot.script.contains("{kernel:rootPath}"));
    assert!(sel.lifecycle.run.is_none() && sel.lifecycle.install.is_none());
}

fn dlr(r: &Recipe) {
    assert_eq!(r.name, "aws.greengrass.samples.lambda.DLR");
    assert_eq!(r.version, v("1.6.0"));
    assert_eq!(r.manifests.len(), 1);
    // `architecture: all` is a wildcard too.
    for arch in ["amd64", "aarch64", "arm"] {
        let sel = r.select(&linux(arch)).expect("linux");
        let install = sel.lifecycle.install.expect("install");
        assert_eq!(
            install.timeout,
            Some(Duration::from_secs(900)),
            "string timeout"
        );
        assert!(install.script.contains("{configuration:/UseInstaller}"));
        assert_eq!(sel.artifacts[0].unarchive, Unarchive::Zip);
        assert_eq!(sel.artifacts[0].file_name(), Some("installer.zip"));
    }
    assert!(r.select(&windows()).is_err());
}

fn dlr_model(r: &Recipe) {
    assert_eq!(
        r.name,
        "aws.greengrass.samples.lambda.DLRImageClassification.Model"
    );
    assert_eq!(r.manifests.len(), 3);
    let x86 = r.select(&linux("x86")).expect("x86 via regex");
    assert_eq!(x86.manifest_index, 0);
    let amd = r.select(&linux_amd64()).expect("amd64 via regex");
    assert_eq!(amd.manifest_index, 0);
    assert!(
        amd.lifecycle
            .install
            .expect("install")
            .script
            .contains("x86_64")
    );
    assert_eq!(
        r.select(&linux("aarch64")).expect("aarch64").manifest_index,
        1
    );
    assert_eq!(r.select(&linux("arm")).expect("arm").manifest_index, 2);
    let e = r
        .select(&linux("riscv64"))
        .expect_err("no riscv")
        .to_string();
    assert!(
        e.contains("architecture=riscv64") && e.contains(&r.name),
        "{e}"
    );
    let perms: Vec<Access> = amd.artifacts.iter().map(|a| a.permission.read).collect();
    assert_eq!(perms, [Access::Owner, Access::All]);
    assert!(
        amd.artifacts
            .iter()
            .all(|a| a.permission.execute == Access::None)
    );
    assert_eq!(amd.artifacts[1].file_name(), Some("labels.txt"));
}

fn sagemaker(r: &Recipe) {
    assert_eq!(
        r.name,
        "com.greengrass.SageMakerEdgeManager.ImageClassification"
    );
    assert_eq!(r.manifests.len(), 2);
    let model = &r.dependencies["com.greengrass.SageMakerEdgeManager.ImageClassification.Model"];
    assert_eq!(model.kind, DependencyType::Hard);
    assert_eq!(model.requirement.as_str(), ">=1.0.0 <1.1.0");
    assert!(model.requirement.matches(&v("1.0.5")));
    assert!(!model.requirement.matches(&v("1.1.0")));
    assert!(
        r.dependencies["aws.greengrass.SageMakerEdgeManager"]
            .requirement
            .matches(&v("1.3.0"))
    );
    let sel = r.select(&linux_amd64()).expect("amd64");
    let run = sel.lifecycle.run.expect("run");
    // Lifecycle-level `setEnv` reaches the step.
    assert!(run.setenv["SMEM_IC_MODEL_DIR"].contains(":configuration:/ModelPath}"));
    assert_eq!(sel.lifecycle.setenv.len(), 3);
    assert_eq!(
        r.select(&linux("aarch64")).expect("aarch64").manifest_index,
        1
    );
    assert_eq!(
        r.dependency_names(),
        [
            "aws.greengrass.SageMakerEdgeManager",
            "com.greengrass.SageMakerEdgeManager.ImageClassification.Model"
        ]
    );
}

fn emqx(r: &Recipe) {
    assert_eq!(r.name, "aws.greengrass.clientdevices.mqtt.EMQX");
    assert_eq!(r.component_type, ComponentType::Generic);
    let auth = &r.dependencies["aws.greengrass.clientdevices.Auth"];
    assert_eq!(auth.kind, DependencyType::Soft);
    assert!(auth.requirement.matches(&v("2.4.9")));
    assert!(!auth.requirement.matches(&v("2.5.0")));
    let sel = r.select(&linux_amd64()).expect("linux");
    assert_eq!(sel.manifest_index, 1);
    let startup = sel.lifecycle.startup.clone().expect("startup");
    // Variable-valued Timeout/RequiresPrivilege are deferred without an interpolator...
    assert_eq!(startup.timeout, None);
    assert!(!startup.requires_privilege);
    assert_eq!(
        startup.setenv["DOCKER_EXTRA"],
        "{configuration:/dockerOptions}"
    );
    assert!(sel.lifecycle.shutdown.is_some() && sel.lifecycle.install.is_some());
    // ...and typed once interpolated.
    let cfg = r.default_configuration.clone();
    let interp = |s: &str| {
        let mut out = s.to_owned();
        for key in ["startupTimeoutSeconds", "requiresPrivilege"] {
            if let Some(val) = cfg.get(key).and_then(|v| v.as_str()) {
                out = out.replace(&format!("{{configuration:/{key}}}"), val);
            }
        }
        out
    };
    let typed = r
        .select_with(&linux_amd64(), &interp)
        .expect("interpolated");
    let startup = typed.lifecycle.startup.expect("startup");
    assert_eq!(startup.timeout, Some(Duration::from_secs(90)));
    assert!(startup.requires_privilege);
    let win = r.select(&windows()).expect("windows");
    assert_eq!(win.manifest_index, 0);
    assert_eq!(win.artifacts[0].permission.execute, Access::Owner);
    assert_eq!(win.lifecycle.shutdown.expect("shutdown").setenv.len(), 13);
}

fn all_fields(r: &Recipe) {
    assert_eq!(r.name, "FooService");
    assert_eq!(r.component_type, ComponentType::Plugin);
    assert_eq!(r.format_version, "2020-01-25");
    let bar = &r.dependencies["BarService"];
    assert_eq!(bar.kind, DependencyType::Soft);
    assert!(bar.requirement.matches(&v("1.1.0")) && bar.requirement.matches(&v("1.9.0")));
    assert!(!bar.requirement.matches(&v("1.0.9")) && !bar.requirement.matches(&v("2.0.0")));
    let baz_dep = &r.dependencies["BazService"];
    assert_eq!(baz_dep.kind, DependencyType::Hard);
    assert!(baz_dep.requirement.matches(&v("2.3.0")) && !baz_dep.requirement.matches(&v("3.0.0")));
    let sel = r.select(&linux("aarch64")).expect("all/all");
    assert_eq!(
        sel.lifecycle.install.expect("install").script,
        "echo install"
    );
    assert_eq!(sel.lifecycle.run.expect("run").script, "echo run");
    assert_eq!(sel.artifacts.len(), 2);
    assert_eq!(sel.artifacts[0].algorithm.as_deref(), Some("SHA-256"));
    assert_eq!(
        sel.artifacts[1].digest.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    // `s3//some-bucket/...` has no scheme but is not rejected at parse time.
    assert_eq!(sel.artifacts[1].scheme(), "");
    let _ = SkipIf::OnPath(String::new());
}

/// The EMQX recipe as GDK would build it (version filled in) parses and selects.
#[test]
fn emqx_once_built() {
    if !fixtures_present() {
        return;
    }
    let text = std::fs::read_to_string(dir().join("emqx-mqtt.recipe.json")).expect("fixture");
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    doc["ComponentVersion"] = serde_json::json!("2.0.0");
    let recipe = lichen_recipe::parse_recipe(&doc.to_string(), "emqx-built.json").expect("parses");
    assert_eq!(recipe.version, v("2.0.0"));
    emqx(&recipe);
}

/// The home-assistant recipe as GDK would build it keeps its `docker:` artifact.
#[test]
fn home_assistant_once_built() {
    if !fixtures_present() {
        return;
    }
    let text =
        std::fs::read_to_string(dir().join("labs-home-assistant.recipe.yaml")).expect("fixture");
    let built = text
        .replace(
            "ComponentName: COMPONENT_NAME",
            "ComponentName: aws.greengrass.labs.HomeAssistant",
        )
        .replace(
            "ComponentVersion: COMPONENT_VERSION",
            "ComponentVersion: '1.0.0'",
        );
    let r = lichen_recipe::parse_recipe(&built, "ha-built.yaml").expect("parses");
    assert_eq!(r.dependencies.len(), 2);
    let sel = r.select(&linux_amd64()).expect("linux");
    assert_eq!(sel.artifacts[0].scheme(), "docker");
    assert_eq!(sel.artifacts[0].file_name(), None);
    assert_eq!(sel.artifacts[1].file_name(), Some("home-assistant.zip"));
    let lc = sel.lifecycle;
    assert!(lc.startup.is_some() && lc.run.is_none());
    assert!(lc.shutdown.expect("shutdown").requires_privilege);
    assert_eq!(lc.recover.expect("recover").script, "docker-compose down");
    assert!(r.select(&windows()).is_err());
}

/// The certificate rotator as GDK would build it: Install timeout, privileged Run.
#[test]
fn certificate_rotator_once_built() {
    if !fixtures_present() {
        return;
    }
    let text = std::fs::read_to_string(dir().join("labs-certificate-rotator.recipe.yaml"))
        .expect("fixture");
    let built = text
        .replace(
            "ComponentName: COMPONENT_NAME",
            "ComponentName: aws.greengrass.labs.CertificateRotator",
        )
        .replace(
            "ComponentVersion: COMPONENT_VERSION",
            "ComponentVersion: '1.0.0'",
        );
    let r = lichen_recipe::parse_recipe(&built, "rotator-built.yaml").expect("parses");
    let nucleus = &r.dependencies["aws.greengrass.Nucleus"];
    assert_eq!(nucleus.kind, DependencyType::Soft);
    assert!(nucleus.requirement.matches(&v("2.6.0")) && !nucleus.requirement.matches(&v("2.5.9")));
    let sel = r.select(&linux_amd64()).expect("linux");
    assert_eq!(sel.manifest_index, 0);
    let install = sel.lifecycle.install.expect("install");
    assert_eq!(install.timeout, Some(Duration::from_secs(900)));
    assert!(sel.lifecycle.run.expect("run").requires_privilege);
    assert_eq!(sel.artifacts[0].permission.read, Access::All);
    assert_eq!(r.select(&windows()).expect("windows").manifest_index, 1);
    let resources = r
        .default_configuration
        .pointer("/accessControl/aws.greengrass.ipc.mqttproxy/aws.greengrass.labs.CertificateRotator:mqttproxy:1/resources/0")
        .and_then(|v| v.as_str());
    assert_eq!(resources, Some("$aws/things/{iot:thingName}/jobs/+/get"));
}

/// The blog-config-node recipe as GDK would build it: regex os, caret dependency, ZIP.
#[test]
fn business_logic_once_built() {
    if !fixtures_present() {
        return;
    }
    let text = std::fs::read_to_string(dir().join("blog-config-node.BusinessLogic.recipe.json"))
        .expect("fixture");
    let built = text
        .replace(
            "\"ComponentName\": \"COMPONENT_NAME\"",
            "\"ComponentName\": \"com.example.BusinessLogic\"",
        )
        .replace("\"NEXT_PATCH\"", "\"1.0.1\"");
    let r = lichen_recipe::parse_recipe(&built, "logic-built.json").expect("parses");
    let holder = &r.dependencies["ConfigHolder"];
    assert_eq!(holder.requirement.as_str(), "^1.0.0");
    assert!(holder.requirement.matches(&v("1.4.0")) && !holder.requirement.matches(&v("2.0.0")));
    assert_eq!(r.description.as_deref(), Some(""));
    let sel = r.select(&linux("aarch64")).expect("linux via regex");
    assert_eq!(sel.artifacts[0].unarchive, Unarchive::Zip);
    assert_eq!(sel.artifacts[0].file_name(), Some("BusinessLogic.zip"));
    assert!(
        sel.lifecycle
            .run
            .expect("run")
            .script
            .contains("{artifacts:decompressedPath}/BusinessLogic")
    );
    assert!(r.select(&Platform::default().with("os", "darwin")).is_ok());
    assert!(r.select(&windows()).is_err());
}

mod mutations {
    use super::*;
    use proptest::prelude::*;

    fn fixtures() -> Vec<String> {
        let mut names: Vec<String> = expectations().iter().map(|(f, _)| f.to_string()).collect();
        names.sort();
        names
            .iter()
            .filter_map(|n| std::fs::read_to_string(dir().join(n)).ok())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Near-valid recipes (real ones with a few characters changed) never panic, and
        /// whatever parses selects and re-parses from its stored form.
        #[test]
        fn mutated_fixtures_never_panic(
            which in 0usize..11,
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, "[ -~\n]{0,3}"), 1..6),
        ) {
            let all = fixtures();
            if all.is_empty() {
                return Ok(());
            }
            let mut text: Vec<char> = all[which % all.len()].chars().collect();
            for (at, op, insert) in edits {
                if text.is_empty() {
                    break;
                }
                let i = at.index(text.len());
                match op {
                    0 => { text.remove(i); }
                    1 => { for (k, c) in insert.chars().enumerate() { text.insert(i + k, c); } }
                    _ => { text[i] = insert.chars().next().unwrap_or('x'); }
                }
            }
            let text: String = text.into_iter().collect();
            if let Ok(recipe) = lichen_recipe::parse_recipe(&text, "mutant") {
                let _ = recipe.select(&linux_amd64());
                let _ = recipe.select(&windows());
                prop_assert!(lichen_recipe::parse_recipe(&recipe.document.to_string(), "again").is_ok());
            }
        }
    }
}
