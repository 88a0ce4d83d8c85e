//! End to end: the real `lichen` binary runs a core; a Python component written with
//! awsiotsdk's GreengrassCoreIPCClientV2 is deployed through a recipe with accessControl and
//! exercises every IPC operation of issue 3, including configuration validation (a REJECTED
//! report fails a deployment) and a deferred component update. Each check is asserted here.
//!
//! Needs the `lichen` binary next to the test executable (built by
//! `cargo test --workspace`, as `scripts/test` runs it; or set LICHEN_BIN) and the Python test
//! venv (LICHEN_TEST_PYTHON). Without them the test says so and passes vacuously.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CLIENT: &str = "com.lichen.test.IpcClient";
const PEER: &str = "com.lichen.test.IpcPeer";
/// Deployed by the component itself to see update notices and its defer honoured.
const EXTRA: &str = "com.lichen.test.IpcExtra";
/// The same protocol from the JavaScript SDK (deployed only when it is installed).
const JS_CLIENT: &str = "com.lichen.test.JsClient";
/// A Startup step that never exits and reports RUNNING over IPC.
const STARTUP: &str = "com.lichen.test.IpcStartup";

fn lichen_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LICHEN_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("lichen");
    bin.exists().then_some(bin)
}

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LICHEN_TEST_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.exists().then_some(venv)
}

/// A node_modules holding aws-iot-device-sdk-v2 (LICHEN_TEST_JS_SDK, default
/// `.venv/js/node_modules`), and node; when both exist a JavaScript component is deployed too.
fn js_sdk() -> Option<PathBuf> {
    let dir = std::env::var_os("LICHEN_TEST_JS_SDK")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/js/node_modules")
        });
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (node && dir.join("aws-iot-device-sdk-v2").exists()).then_some(dir)
}

fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

struct Core {
    child: Child,
    bin: PathBuf,
    root: PathBuf,
    dir: PathBuf,
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Core {
    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .expect("run lichen")
    }

    fn logs(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- component log:\n{}\n--- core stderr (tail):\n{}",
            read(self.root.join("logs").join(format!("{CLIENT}.log"))),
            read(self.dir.join("core.stderr"))
                .lines()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

fn write_js_recipe(recipes: &Path, artifacts: &Path, sdk: &Path, results: &Path, acl: &Value) {
    let art = artifacts.join(JS_CLIENT).join("1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/ipc_check.js"),
        art.join("ipc_check.js"),
    )
    .unwrap();
    let acl = serde_json::from_str::<Value>(&acl.to_string().replace(CLIENT, JS_CLIENT)).unwrap();
    let recipe = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": JS_CLIENT,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": acl, "testKey": "hello"}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {
                "Setenv": {"NODE_PATH": sdk.display().to_string(), "LICHEN_IPC_TEST_RESULTS": results.display().to_string()},
                "Run": "exec node {artifacts:path}/ipc_check.js",
            },
            "Artifacts": [{"URI": format!("s3://unused/{JS_CLIENT}/ipc_check.js")}],
        }],
    });
    std::fs::write(
        recipes.join(format!("{JS_CLIENT}-1.0.0.json")),
        recipe.to_string(),
    )
    .unwrap();
}

fn read_results(path: &Path, what: &str, core: &Core) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no {what} results in time\n{}",
            core.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_recipes(dir: &Path, python: &Path, results: &Path) -> (PathBuf, PathBuf) {
    let recipes = dir.join("recipes");
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&recipes).unwrap();
    let art = artifacts.join(CLIENT).join("1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(
        py_dir().join("ipc_component.py"),
        art.join("ipc_component.py"),
    )
    .unwrap();
    let acl: Value = serde_json::from_str(
        &std::fs::read_to_string(py_dir().join("access_control.json")).unwrap(),
    )
    .unwrap();
    let client = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": CLIENT,
        "ComponentVersion": "1.0.0",
        "ComponentDescription": "Exercises lichen IPC with awsiotsdk GreengrassCoreIPCClientV2.",
        "ComponentPublisher": "lichen tests",
        "ComponentDependencies": {PEER: {"VersionRequirement": ">=1.0.0", "DependencyType": "HARD"}},
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": acl, "testKey": "hello"}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {
                "Setenv": {
                    "LICHEN_IPC_TEST_MODE": "deployed",
                    "LICHEN_IPC_TEST_PEER": PEER,
                    "LICHEN_IPC_TEST_RESULTS": results.display().to_string(),
                    "LICHEN_IPC_TEST_RECIPES": recipes.display().to_string(),
                    "LICHEN_IPC_TEST_EXTRA": EXTRA,
                },
                "Run": format!("exec {} -u {{artifacts:path}}/ipc_component.py", python.display()),
            },
            "Artifacts": [{"URI": format!("s3://unused/{CLIENT}/ipc_component.py")}],
        }],
    });
    let peer = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": PEER,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"peerKey": "peer-value"}},
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "exec sleep 100000"}}],
    });
    std::fs::write(
        recipes.join(format!("{CLIENT}-1.0.0.json")),
        client.to_string(),
    )
    .unwrap();
    std::fs::write(recipes.join(format!("{PEER}-1.0.0.json")), peer.to_string()).unwrap();
    let art = artifacts.join(STARTUP).join("1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(
        py_dir().join("startup_component.py"),
        art.join("startup_component.py"),
    )
    .unwrap();
    let startup = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": STARTUP,
        "ComponentVersion": "1.0.0",
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Startup": format!("exec {} -u {{artifacts:path}}/startup_component.py", python.display())},
            "Artifacts": [{"URI": format!("s3://unused/{STARTUP}/startup_component.py")}],
        }],
    });
    std::fs::write(
        recipes.join(format!("{STARTUP}-1.0.0.json")),
        startup.to_string(),
    )
    .unwrap();
    let mut extra = peer;
    extra["ComponentName"] = json!(EXTRA);
    std::fs::write(
        recipes.join(format!("{EXTRA}-1.0.0.json")),
        extra.to_string(),
    )
    .unwrap();
    (recipes, artifacts)
}

#[test]
fn deployed_python_component_exercises_every_operation() {
    run(false);
}

/// The socket path does not fit in `sun_path`: components get `../../ipc.socket`.
#[test]
fn deployed_python_component_with_a_long_root() {
    run(true);
}

fn run(long_root: bool) {
    let (Some(bin), Some(python)) = (lichen_bin(), python()) else {
        assert!(
            std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
            "the lichen binary or the Python venv is missing, and scripts/test requires every test to run"
        );
        eprintln!("SKIPPED: needs the lichen binary (cargo test --workspace) and the Python venv");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let root = if long_root {
        dir.join("r".repeat(70)).join("o".repeat(40))
    } else {
        dir.join("root")
    };
    assert_eq!(root.join("ipc.socket").as_os_str().len() > 108, long_root);
    let results = dir.join("results.json");
    let (recipes, artifacts) = write_recipes(&dir, &python, &results);
    // Components run as root explicitly: as root, the default user (ggc_user/nobody) could
    // reach neither this 0700 temporary root nor the pinned Python under /root.
    std::fs::write(
        dir.join("config.yaml"),
        "thingName: ipc-e2e\nposixUser: root\n",
    )
    .unwrap();
    let stderr = std::fs::File::create(dir.join("core.stderr")).unwrap();
    let child = Command::new(&bin)
        .args(["core", "run", "--root"])
        .arg(&root)
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start lichen core run");
    let core = Core {
        child,
        bin,
        root,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !core.cli(&["component", "list", "--json"]).status.success() {
        assert!(Instant::now() < deadline, "core not ready\n{}", core.logs());
        std::thread::sleep(Duration::from_millis(50));
    }

    // `deployment create` returns when the deployment has ended.
    let started = Instant::now();
    let out = core.cli(&[
        "deployment",
        "create",
        "--recipe-dir",
        &recipes.display().to_string(),
        "--artifact-dir",
        &artifacts.display().to_string(),
        "--merge",
        &format!("{CLIENT}=1.0.0"),
        "--merge",
        &format!("{PEER}=1.0.0"),
        "--merge",
        &format!("{STARTUP}=1.0.0"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "deployment failed: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        core.logs()
    );

    // The deployment waited for the Startup component, whose process never exits, to report
    // RUNNING through UpdateState.
    let startup: Value = serde_json::from_slice(
        &core
            .cli(&["component", "details", STARTUP, "--json"])
            .stdout,
    )
    .unwrap_or(Value::Null);
    assert_eq!(startup["state"], "RUNNING", "{startup}\n{}", core.logs());
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "deployment finished before the Startup component reported RUNNING"
    );

    let report = read_results(&results, "Python", &core);
    let js_report = js_sdk().filter(|_| !long_root).map(|sdk| {
        let js_results = core.dir.join("js-results.json");
        let acl: Value = serde_json::from_str(
            &std::fs::read_to_string(py_dir().join("access_control.json")).unwrap(),
        )
        .unwrap();
        write_js_recipe(&recipes, &artifacts, &sdk, &js_results, &acl);
        let out = core.cli(&[
            "deployment",
            "create",
            "--recipe-dir",
            &recipes.display().to_string(),
            "--artifact-dir",
            &artifacts.display().to_string(),
            "--merge",
            &format!("{JS_CLIENT}=1.0.0"),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "JS deployment failed\n{}",
            core.logs()
        );
        read_results(&js_results, "JavaScript", &core)
    });
    if js_report.is_none() {
        eprintln!("JavaScript SDK check SKIPPED: node or aws-iot-device-sdk-v2 not installed");
    }
    let checks = report["checks"].as_array().unwrap();
    let expected = [
        "connect",
        "pubsub_json_roundtrip",
        "pubsub_binary_roundtrip",
        "pubsub_large_message",
        "v1_client_publish_subscribe",
        "pubsub_wildcard_receive_modes",
        "pubsub_unauthorized_publish",
        "pubsub_unauthorized_subscribe",
        "pubsub_invalid_topic",
        "pubsub_invalid_filter",
        "stream_opened_received_closed",
        "get_configuration_own",
        "get_configuration_other_component",
        "get_configuration_unknown_component",
        "get_configuration_unknown_key",
        "update_configuration_and_subscribe",
        "update_configuration_stale_timestamp",
        "update_configuration_access_control_refused",
        "update_state_running",
        "update_state_invalid",
        "list_components",
        "get_component_details",
        "get_component_details_unknown",
        "restart_component_unknown",
        "stop_component_unknown",
        "pause_component_unauthorized",
        "pause_resume_component",
        "create_local_deployment_bad_recipe_dir",
        "get_local_deployment_status_unknown",
        "cancel_local_deployment_unknown",
        "list_local_deployments",
        "deployment_rejected_by_validation",
        "deployment_deferred_then_succeeded",
        "validate_authorization_token",
        "validate_authorization_token_invalid",
        "put_component_metric",
        "put_component_metric_invalid",
        "unsupported_operation",
    ];
    let logs = core.logs();
    for name in expected {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("check {name} did not run\n{logs}"));
        assert_eq!(
            c["ok"], true,
            "check {name} failed: {}\n{logs}",
            c["detail"]
        );
    }
    assert!(checks.iter().all(|c| c["ok"] == true), "{report}\n{logs}");
    if let Some(js) = js_report {
        let checks = js["checks"].as_array().unwrap();
        for name in [
            "connect",
            "pubsub_json_roundtrip",
            "pubsub_binary_roundtrip",
            "get_configuration",
            "update_configuration_and_subscribe",
            "list_components",
            "unauthorized",
            "resource_not_found",
            "undeclared_error_as_service_error",
            "invalid_arguments",
            "unsupported",
        ] {
            let c = checks
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("JS check {name} did not run: {js}"));
            assert_eq!(c["ok"], true, "JS check {name} failed: {}", c["detail"]);
        }
        assert!(checks.iter().all(|c| c["ok"] == true), "{js}");
    }

    // What the component did is visible from the CLI too.
    let details = core.cli(&["component", "details", CLIENT, "--json"]);
    let details: Value = serde_json::from_slice(&details.stdout).unwrap_or(Value::Null);
    assert!(
        details.to_string().contains("requests"),
        "PutComponentMetric not visible in component details: {details}"
    );
    let list = core.cli(&["deployment", "list", "--json"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("rejected"),
        "no rejected deployment listed: {list}"
    );
}
