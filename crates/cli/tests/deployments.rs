//! Deployment failures, rollback, bad input and crash recovery on the real core binary.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::Value;
use sha2::Digest;

/// A component whose Startup launches a daemon recording its version, or fails when
/// `fail` is set.
fn app(version: &str, fail: bool) -> String {
    let startup = if fail {
        "echo \"v$VERSION refusing to start\"; exit 1".to_string()
    } else {
        "echo \"started v$VERSION mode={configuration:/mode}\" >> starts.log; (exec sleep 300) & echo $! > daemon.pid".to_string()
    };
    format!(
        r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.App
ComponentVersion: "{version}"
ComponentConfiguration:
  DefaultConfiguration:
    mode: one
Manifests:
  - Platform: {{ os: linux }}
    Lifecycle:
      Setenv: {{ VERSION: "{version}" }}
      Startup: '{startup}'
      Shutdown: 'kill $(cat daemon.pid) 2>/dev/null; true'
"#
    )
}

fn daemon_pid(core: &TestCore) -> i32 {
    read(&core.work("com.test.App").join("daemon.pid"))
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn failed_deployment_rolls_back_versions_and_configuration() {
    let core = TestCore::start();
    let v1 = recipe_dir(core.dir.path(), "v1", &[("app.yaml", &app("1.0.0", false))]);
    let d = core.deploy(
        &v1,
        None,
        &[
            "-m",
            "com.test.App=1.0.0",
            "-c",
            r#"{"com.test.App":{"MERGE":{"mode":"custom"}}}"#,
        ],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let first = daemon_pid(&core);
    assert!(pid_alive(first));

    let v2 = recipe_dir(core.dir.path(), "v2", &[("app.yaml", &app("2.0.0", true))]);
    let d = core.deploy(
        &v2,
        None,
        &[
            "-m",
            "com.test.App=2.0.0",
            "-c",
            r#"{"com.test.App":{"MERGE":{"mode":"broken"}}}"#,
        ],
    );
    assert_eq!(d["status"], "FAILED", "{d}");
    assert_eq!(d["detailedStatus"], "FAILED_ROLLBACK_COMPLETE", "{d}");
    assert!(
        d["failureCause"].as_str().unwrap().contains("com.test.App"),
        "{d}"
    );

    let info = core.wait_state("com.test.App", "RUNNING", Duration::from_secs(20));
    assert_eq!(info["version"], "1.0.0");
    assert_eq!(info["configuration"], serde_json::json!({"mode": "custom"}));
    // The running process is v1 again, restarted with the restored configuration.
    let starts = read(&core.work("com.test.App").join("starts.log"));
    assert_eq!(
        starts.lines().last(),
        Some("started v1.0.0 mode=custom"),
        "{starts}"
    );
    let now = daemon_pid(&core);
    assert!(pid_alive(now), "v1 daemon runs after rollback");
    assert!(!pid_alive(first) || now == first);
    let log = read(&core.root.join("logs/com.test.App.log"));
    assert!(
        log.contains("v2.0.0 refusing to start"),
        "v2 really ran: {log}"
    );
}

/// What two deaths of the core during one deployment leave behind: its record IN_PROGRESS
/// and the attempt marker at 2. The next start fails it instead of running it a third time;
/// with the marker at 1 it is run again.
#[test]
fn deployment_that_killed_the_core_twice_is_failed_not_rerun() {
    let mut core = TestCore::start();
    let v1 = recipe_dir(core.dir.path(), "v1", &[("app.yaml", &app("1.0.0", false))]);
    let d = core.deploy(&v1, None, &["-m", "com.test.App=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let v2 = recipe_dir(core.dir.path(), "v2", &[("app.yaml", &app("2.0.0", false))]);
    for (id, attempts) in [("crash-loop-twice", 2), ("crash-loop-once", 1)] {
        core.kill9();
        let record = serde_json::json!({
            "deploymentId": id,
            "status": "IN_PROGRESS",
            "createdOn": 1,
            "request": {
                "rootComponentsToAdd": {"com.test.App": "2.0.0"},
                "recipeDir": v2,
            },
        });
        std::fs::write(
            core.root.join(format!("deployments/records/{id}.json")),
            record.to_string(),
        )
        .unwrap();
        std::fs::write(
            core.root.join("deployments/attempt.json"),
            serde_json::json!({"deploymentId": id, "attempts": attempts}).to_string(),
        )
        .unwrap();
        core.spawn();
        let mut last = Value::Null;
        eventually("deployment final", Duration::from_secs(30), || {
            last = core.json(&["deployment", "status", id]);
            last["status"] == "FAILED" || last["status"] == "SUCCEEDED"
        });
        if attempts == 2 {
            assert_eq!(last["status"], "FAILED", "{last}");
            assert_eq!(last["errorStack"][1], "CORE_CRASH_LOOP", "{last}");
            assert_eq!(last["errorTypes"][0], "NUCLEUS_ERROR", "{last}");
            let cause = last["failureCause"].as_str().unwrap();
            assert!(cause.contains("2 times in a row"), "{cause}");
            let info = core.wait_state("com.test.App", "RUNNING", Duration::from_secs(20));
            assert_eq!(info["version"], "1.0.0", "the previous state stays");
            let starts = read(&core.work("com.test.App").join("starts.log"));
            assert!(!starts.contains("v2.0.0"), "v2 never ran: {starts}");
        } else {
            assert_eq!(last["status"], "SUCCEEDED", "one death is retried: {last}");
            assert_eq!(core.component("com.test.App")["version"], "2.0.0");
        }
        assert!(!core.root.join("deployments/attempt.json").exists());
    }
}

#[test]
fn dependency_on_a_builtin_lichen_lacks_is_named_in_the_record_and_log() {
    let core = TestCore::start();
    let dep = r#""ComponentDependencies": {
        "aws.greengrass.SecretManager": {"VersionRequirement": ">=2.0.0"},
        "aws.greengrass.Nucleus": {"VersionRequirement": ">=2.0.0", "DependencyType": "SOFT"}
    },"#;
    let dir = recipe_dir(
        core.dir.path(),
        "r",
        &[("s.json", &simple("com.test.Secretive", dep))],
    );
    let d = core.deploy(&dir, None, &["-m", "com.test.Secretive=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let details = d["statusDetails"].as_array().expect("statusDetails");
    assert_eq!(details.len(), 1, "only the missing one: {d}");
    assert!(
        details[0]
            .as_str()
            .unwrap()
            .contains("aws.greengrass.SecretManager"),
        "{d}"
    );
    let id = d["deploymentId"].as_str().unwrap();
    let out = core.cli(&["deployment", "status", id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("aws.greengrass.SecretManager"),
        "deployment status shows it"
    );
    eventually(
        "log names the missing service",
        Duration::from_secs(10),
        || {
            read(&core.root.join("logs/lichen.log"))
                .contains("aws.greengrass.SecretManager is not provided")
        },
    );
}

/// Every path under `store/recipes` and `store/artifacts*`, sorted.
fn store_listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("store")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A Run component: `sleep` for v1, or a script that exits 3 at once.
fn run_app(version: &str, exit_at_once: bool) -> String {
    let run = if exit_at_once {
        "echo v$VERSION; exit 3"
    } else {
        "echo v$VERSION >> runs.log; exec sleep 300"
    };
    format!(
        r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Runner
ComponentVersion: "{version}"
Manifests:
  - Platform: {{ os: linux }}
    Lifecycle:
      Setenv: {{ VERSION: "{version}" }}
      Run: '{run}'
"#
    )
}

/// A Run component is RUNNING the moment it launches, so without a stability window a
/// deployment whose new version exits at once reported SUCCEEDED and left it BROKEN.
#[test]
fn component_failing_within_stability_window_fails_and_rolls_back() {
    let core = TestCore::start();
    let v1 = recipe_dir(
        core.dir.path(),
        "v1",
        &[("runner.yaml", &run_app("1.0.0", false))],
    );
    let d = core.deploy(&v1, None, &["-m", "com.test.Runner=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let first_pid = core.component("com.test.Runner")["pid"].as_i64().unwrap();
    let store_before = store_listing(&core.root);

    let v2 = recipe_dir(
        core.dir.path(),
        "v2",
        &[("runner.yaml", &run_app("2.0.0", true))],
    );
    let d = core.deploy(
        &v2,
        None,
        &[
            "-m",
            "com.test.Runner=2.0.0",
            "--failure-policy",
            "rollback",
        ],
    );
    assert_eq!(d["status"], "FAILED", "{d}");
    assert_eq!(d["detailedStatus"], "FAILED_ROLLBACK_COMPLETE", "{d}");
    let cause = d["failureCause"].as_str().unwrap();
    assert!(
        cause.contains("com.test.Runner") && cause.contains("exit status: 3"),
        "{cause}"
    );
    let info = core.wait_state("com.test.Runner", "RUNNING", Duration::from_secs(20));
    assert_eq!(info["version"], "1.0.0", "{info}");
    let pid = info["pid"].as_i64().unwrap();
    assert_ne!(pid, first_pid, "v1 was started again");
    assert!(pid_alive(pid as i32));
    assert_eq!(
        store_listing(&core.root),
        store_before,
        "the rolled-back version left nothing in the store"
    );
    let runs = read(&core.work("com.test.Runner").join("runs.log"));
    assert_eq!(
        runs.lines().collect::<Vec<_>>(),
        ["v1.0.0", "v1.0.0"],
        "{runs}"
    );
}

/// (what, recipe files, root component, words the failure cause must contain)
type BadCase = (
    &'static str,
    Vec<(&'static str, String)>,
    &'static str,
    &'static [&'static str],
);

fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

fn simple(name: &str, extra: &str) -> String {
    format!(
        r#"{{
  "RecipeFormatVersion": "2020-01-25",
  "ComponentName": "{name}",
  "ComponentVersion": "1.0.0",
  {extra}
  "Manifests": [{{ "Platform": {{ "os": "linux" }}, "Lifecycle": {{ "Run": "exec sleep 300" }} }}]
}}"#
    )
}

fn with_artifact(name: &str, uri: &str, more: &str) -> String {
    format!(
        r#"{{
  "RecipeFormatVersion": "2020-01-25",
  "ComponentName": "{name}",
  "ComponentVersion": "1.0.0",
  "Manifests": [{{
    "Platform": {{ "os": "linux" }},
    "Lifecycle": {{ "Run": "exec sleep 300" }},
    "Artifacts": [{{ "URI": "{uri}" {more} }}]
  }}]
}}"#
    )
}

fn put_artifact(base: &Path, component: &str, file: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = base.join(component).join("1.0.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), data).unwrap();
    base.to_path_buf()
}

#[test]
fn bad_input_fails_with_reason_and_leaves_state_intact() {
    let core = TestCore::start();
    let ok = recipe_dir(core.dir.path(), "ok", &[("app.yaml", &app("1.0.0", false))]);
    assert_eq!(
        core.deploy(&ok, None, &["-m", "com.test.App=1.0.0"])["status"],
        "SUCCEEDED"
    );
    let pid = daemon_pid(&core);
    let base = core.dir.path();
    let store_before = store_listing(&core.root);

    let good_zip = zip_bytes(&[("inner/data.txt", b"fine")]);
    let evil_zip = zip_bytes(&[("../../escaped.txt", b"evil")]);
    let right = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b"payload"));
    let arts = base.join("artifacts");
    put_artifact(&arts, "com.test.Digest", "blob.bin", b"tampered");
    put_artifact(&arts, "com.test.Zip", "evil.zip", &evil_zip);
    put_artifact(&arts, "com.test.GoodZip", "good.zip", &good_zip);
    put_artifact(&arts, "com.test.AGood", "good.zip", &good_zip);

    let cases: Vec<BadCase> = vec![
        ("malformed", vec![("bad.yaml", "RecipeFormatVersion: 2020-01-25\nComponentName: [unclosed\n".into())], "com.test.Bad", &["bad.yaml"]),
        (
            "platform",
            vec![("win.json", r#"{"RecipeFormatVersion":"2020-01-25","ComponentName":"com.test.Win","ComponentVersion":"1.0.0","Manifests":[{"Platform":{"os":"windows"},"Lifecycle":{"Run":"x"}}]}"#.into())],
            "com.test.Win",
            &["platform", "windows"],
        ),
        ("missing artifact", vec![("m.json", with_artifact("com.test.Missing", "s3://bucket/missing.bin", ""))], "com.test.Missing", &["missing.bin", "not found"]),
        (
            "digest",
            vec![
                ("d.json", with_artifact("com.test.Digest", "s3://bucket/blob.bin", &format!(r#", "Digest": "{right}", "Algorithm": "SHA-256""#)).replace(r#""Manifests""#, r#""ComponentDependencies": {"com.test.AGood": {"VersionRequirement": "1.0.0"}}, "Manifests""#)),
                // Staged before the digest fails; it must go again.
                ("g.json", with_artifact("com.test.AGood", "s3://bucket/good.zip", r#", "Unarchive": "ZIP""#)),
            ],
            "com.test.Digest",
            &["blob.bin", "digest"],
        ),
        (
            "cycle",
            vec![
                ("a.json", simple("com.test.A", r#""ComponentDependencies": {"com.test.B": {"VersionRequirement": "^1.0.0"}},"#)),
                ("b.json", simple("com.test.B", r#""ComponentDependencies": {"com.test.A": {"VersionRequirement": "^1.0.0"}},"#)),
            ],
            "com.test.A",
            &["cycle", "com.test.A", "com.test.B"],
        ),
        (
            "unsatisfiable",
            vec![
                ("c.json", simple("com.test.C", r#""ComponentDependencies": {"com.test.D": {"VersionRequirement": ">=2.0.0"}},"#)),
                ("d.json", simple("com.test.D", "")),
            ],
            "com.test.C",
            &["com.test.D", ">=2.0.0"],
        ),
        ("zip slip", vec![("z.json", with_artifact("com.test.Zip", "s3://bucket/evil.zip", r#", "Unarchive": "ZIP""#))], "com.test.Zip", &["evil.zip", "../../escaped.txt"]),
        ("docker", vec![("k.json", with_artifact("com.test.Docker", "docker:nginx:latest", ""))], "com.test.Docker", &["docker"]),
    ];
    for (what, files, root, needles) in cases {
        let refs: Vec<(&str, &str)> = files.iter().map(|(f, t)| (*f, t.as_str())).collect();
        let dir = recipe_dir(base, &format!("case-{}", what.replace(' ', "-")), &refs);
        let merge = format!("{root}=1.0.0");
        let d = core.deploy(&dir, Some(&arts), &["-m", &merge]);
        assert_eq!(d["status"], "FAILED", "{what}: {d}");
        assert_eq!(d["detailedStatus"], "FAILED_NO_STATE_CHANGE", "{what}: {d}");
        let cause = d["failureCause"].as_str().unwrap_or_default();
        for n in needles {
            assert!(
                cause.contains(n),
                "{what}: cause should mention {n:?}: {cause}"
            );
        }
        // The previous state is intact.
        let app = core.component("com.test.App");
        assert_eq!(app["state"], "RUNNING", "{what}");
        assert_eq!(daemon_pid(&core), pid, "{what}: App was not restarted");
        let list = core.json(&["component", "list"]);
        assert_eq!(list.as_array().unwrap().len(), 1, "{what}: {list}");
        assert_eq!(
            store_listing(&core.root),
            store_before,
            "{what}: the failed deployment left nothing in the store"
        );
    }
    assert!(!base.join("escaped.txt").exists() && !core.root.join("store/escaped.txt").exists());

    // A version conflict names both requirements.
    let conflict = recipe_dir(
        base,
        "conflict",
        &[
            (
                "e.json",
                &simple(
                    "com.test.E",
                    r#""ComponentDependencies": {"com.test.D": {"VersionRequirement": "<1.0.0"}},"#,
                ),
            ),
            ("d.json", &simple("com.test.D", "")),
        ],
    );
    let d = core.deploy(
        &conflict,
        None,
        &["-m", "com.test.E=1.0.0", "-m", "com.test.D=1.0.0"],
    );
    let cause = d["failureCause"].as_str().unwrap_or_default().to_string();
    assert!(
        cause.contains("com.test.E")
            && cause.contains("<1.0.0")
            && cause.contains("LOCAL_DEPLOYMENT"),
        "{cause}"
    );

    // Missing directories.
    let d = core.deploy(
        Path::new("/nonexistent/recipes"),
        None,
        &["-m", "com.test.X=1.0.0"],
    );
    assert_eq!(d["status"], "FAILED");
    assert!(
        d["failureCause"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/recipes"),
        "{d}"
    );
    let d = core.deploy(
        &ok,
        Some(Path::new("/nonexistent/artifacts")),
        &["-m", "com.test.App=1.0.0"],
    );
    assert!(
        d["failureCause"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/artifacts"),
        "{d}"
    );

    // A good archive is extracted where {artifacts:decompressedPath} points.
    let gz = recipe_dir(
        base,
        "goodzip",
        &[(
            "g.json",
            &with_artifact(
                "com.test.GoodZip",
                "s3://bucket/good.zip",
                r#", "Unarchive": "ZIP""#,
            )
            .replace(
                "exec sleep 300",
                "cat {artifacts:decompressedPath}/good/inner/data.txt > out.txt; exec sleep 300",
            ),
        )],
    );
    let d = core.deploy(&gz, Some(&arts), &["-m", "com.test.GoodZip=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    eventually("zip content read", Duration::from_secs(10), || {
        read(&core.work("com.test.GoodZip").join("out.txt")) == "fine"
    });
}

#[test]
fn kill_9_during_deployment_is_rolled_back_on_restart() {
    let mut core = TestCore::start();
    let v1 = recipe_dir(core.dir.path(), "v1", &[("app.yaml", &app("1.0.0", false))]);
    assert_eq!(
        core.deploy(&v1, None, &["-m", "com.test.App=1.0.0"])["status"],
        "SUCCEEDED"
    );

    // v2 never finishes starting: the deployment sits in its apply phase.
    let slow = app("2.0.0", false).replace("Startup: '", "Startup: 'sleep 600; ");
    let v2 = recipe_dir(core.dir.path(), "v2", &[("app.yaml", &slow)]);
    let out = core.cli(&[
        "deployment",
        "create",
        "--recipe-dir",
        v2.to_str().unwrap(),
        "-m",
        "com.test.App=2.0.0",
        "-c",
        r#"{"com.test.App":{"MERGE":{"mode":"two"}}}"#,
        "--no-wait",
        "--json",
    ]);
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["deploymentId"].as_str().unwrap().to_string();
    let marker = core.root.join("deployments/ongoing.json");
    eventually("deployment applying", Duration::from_secs(20), || {
        marker.exists() && core.component("com.test.App")["version"] == "2.0.0"
    });
    std::thread::sleep(Duration::from_millis(300));
    core.kill9();

    core.spawn();
    let d = core.json(&["deployment", "status", &id]);
    assert_eq!(d["status"], "FAILED", "{d}");
    assert_eq!(d["errorStack"][1], "CORE_RESTARTED", "{d}");
    let info = core.wait_state("com.test.App", "RUNNING", Duration::from_secs(20));
    assert_eq!(info["version"], "1.0.0");
    assert_eq!(info["configuration"]["mode"], "one");
    assert!(!marker.exists());
    // The v2 startup script left behind by the killed core was ended.
    let leftovers = std::process::Command::new("pgrep")
        .args(["-f", "sleep 600"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&leftovers.stdout).to_string();
    for pid in pids.split_whitespace() {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let root = core.root.display().to_string();
        assert!(
            !String::from_utf8_lossy(&env).contains(&root),
            "process {pid} from the killed core's deployment is still running"
        );
    }
    // And a new deployment works.
    let v3 = recipe_dir(core.dir.path(), "v3", &[("app.yaml", &app("3.0.0", false))]);
    assert_eq!(
        core.deploy(&v3, None, &["-m", "com.test.App=3.0.0"])["status"],
        "SUCCEEDED"
    );
    assert_eq!(core.component("com.test.App")["version"], "3.0.0");
}

#[test]
fn configuration_and_queue_survive_repeated_kill_9() {
    let mut core = TestCore::start();
    let recipe = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Conf
ComponentVersion: "1.0.0"
ComponentConfiguration:
  DefaultConfiguration: { a: 0, b: 0 }
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Run: exec sleep 300
"#;
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("c.yaml", recipe)]);
    assert_eq!(
        core.deploy(&recipes, None, &["-m", "com.test.Conf=1.0.0"])["status"],
        "SUCCEEDED"
    );
    let padding = "x".repeat(64 * 1024);
    let mut ids = Vec::new();
    let mut n = 0;
    for round in 0..3u64 {
        for _ in 0..10 {
            n += 1;
            let update =
                format!(r#"{{"com.test.Conf":{{"MERGE":{{"a":{n},"b":{n},"pad":"{padding}"}}}}}}"#);
            let out = core.cli(&["deployment", "create", "-c", &update, "--no-wait", "--json"]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            ids.push(v["deploymentId"].as_str().unwrap().to_string());
        }
        // Kill at a different point of the queue each round.
        std::thread::sleep(Duration::from_millis(40 + 70 * round));
        core.kill9();
        let stored: Value = serde_json::from_slice(
            &std::fs::read(core.root.join("config/effective.json")).unwrap(),
        )
        .expect("the configuration file is never torn");
        let conf = &stored["components"]["com.test.Conf"]["value"];
        assert_eq!(
            conf["a"], conf["b"],
            "a and b change together: {}",
            conf["a"]
        );
        core.spawn();
    }
    // Every queued deployment ends: interrupted ones are rolled back, the rest run.
    eventually("all deployments final", Duration::from_secs(60), || {
        ids.iter().all(|id| {
            let s = core.json(&["deployment", "status", id])["status"].clone();
            s == "SUCCEEDED" || s == "FAILED"
        })
    });
    let last = core.json(&["deployment", "status", ids.last().unwrap()]);
    assert_eq!(last["status"], "SUCCEEDED", "{last}");
    let conf = core.component("com.test.Conf")["configuration"].clone();
    assert_eq!(conf["a"], n);
    assert_eq!(conf["b"], n);
    for id in &ids {
        let d = core.json(&["deployment", "status", id]);
        if d["status"] == "FAILED" {
            assert_eq!(d["errorStack"][1], "CORE_RESTARTED", "{d}");
        }
    }
}

#[test]
fn removing_a_root_component_stops_it_and_cleans_up() {
    let core = TestCore::start();
    let keep = simple("com.test.Keep", "");
    let gone = simple("com.test.Gone", "");
    let recipes = recipe_dir(
        core.dir.path(),
        "recipes",
        &[("k.json", &keep), ("g.json", &gone)],
    );
    let d = core.deploy(
        &recipes,
        None,
        &["-m", "com.test.Keep=1.0.0", "-m", "com.test.Gone=1.0.0"],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let gone_pid = core.component("com.test.Gone")["pid"].as_i64().unwrap() as i32;
    let keep_pid = core.component("com.test.Keep")["pid"].as_i64().unwrap();
    assert!(
        core.root
            .join("store/recipes/com.test.Gone@1.0.0.json")
            .exists()
    );

    let out = core.cli(&[
        "deployment",
        "create",
        "--remove",
        "com.test.Gone",
        "--json",
    ]);
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let list = core.json(&["component", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["componentName"].as_str())
        .collect();
    assert_eq!(names, vec!["com.test.Keep"]);
    eventually(
        "removed component's process ended",
        Duration::from_secs(10),
        || !pid_alive(gone_pid),
    );
    assert_eq!(
        core.component("com.test.Keep")["pid"].as_i64().unwrap(),
        keep_pid,
        "others untouched"
    );
    assert!(
        !core
            .root
            .join("store/recipes/com.test.Gone@1.0.0.json")
            .exists(),
        "store cleaned"
    );
    let stored: Value =
        serde_json::from_slice(&std::fs::read(core.root.join("config/effective.json")).unwrap())
            .unwrap();
    assert!(
        stored["components"].get("com.test.Gone").is_none(),
        "configuration removed"
    );
}
