//! Fleet deployments across real processes: a `lichen cloud run` ([`RunningCloud`]) and cores
//! started from the bundles `lichen cloud thing create --out` writes, with helpers to publish
//! components (with artifacts), deploy, and wait for what each device reports.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::TestCore;
use super::cloud::RunningCloud;

/// A core started from its thing's provisioning bundle.
pub struct FleetCore {
    pub thing: String,
    pub core: TestCore,
}

/// Registers `thing` (in `groups`), writes its bundle and starts a core from it. The bundle's
/// config is used as written, plus a short stability window (the harness adds `posixUser`).
pub fn start_core(cloud: &RunningCloud, thing: &str, groups: &[&str]) -> FleetCore {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "thing",
        "create",
        thing,
        "--out",
        dir.path().to_str().unwrap(),
    ];
    for g in groups {
        args.extend(["--group", g]);
    }
    cloud.json(&args);
    let config = format!(
        "{}deploymentStabilitySecs: 1\n",
        super::read(&dir.path().join("config.yaml"))
    );
    let core = TestCore::start_in(dir, "root", &config);
    let fleet = FleetCore {
        thing: thing.to_string(),
        core,
    };
    fleet.wait_connected();
    fleet
}

impl FleetCore {
    /// Polls until the core's cloud link is up.
    pub fn wait_connected(&self) {
        wait_for(
            &format!("{} to connect to the cloud", self.thing),
            Duration::from_secs(30),
            || {
                let status = self.core.json(&["core", "status"]);
                (status["cloud"]["state"] == "connected").then_some(())
            },
            || self.core.stderr(),
        );
    }

    /// `name`'s details on this core, or None when it is not installed.
    pub fn component(&self, name: &str) -> Option<Value> {
        let out = self.core.cli(&["component", "details", name, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Asserts `name` is installed at `version` and RUNNING.
    pub fn assert_running(&self, name: &str, version: &str) {
        let c = self
            .component(name)
            .unwrap_or_else(|| panic!("{name} is not on {}", self.thing));
        assert_eq!(c["version"], version, "{name} on {}: {c}", self.thing);
        assert_eq!(c["state"], "RUNNING", "{name} on {}: {c}", self.thing);
    }

    /// The names of the non-built-in components installed on this core.
    pub fn components(&self) -> Vec<String> {
        let list = self.core.json(&["component", "list"]);
        let mut names: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["builtin"] != true)
            .filter_map(|c| c["componentName"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Clean stop (SIGTERM), as a device going offline.
    pub fn stop(&mut self) {
        self.core.stop();
    }

    /// Starts the core again on its root and waits for its cloud link.
    pub fn restart(&mut self) {
        self.core.spawn();
        self.wait_connected();
    }
}

/// Polls `f` every 100 ms until it returns Some; on timeout panics naming `what` and showing
/// `context()` (a log).
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A component to publish: its lifecycle (a Greengrass `Lifecycle` object) and its artifacts
/// (file name, content), found by the CLI as `DIR/<name>/<version>/<file>`.
pub struct Component<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub lifecycle: Value,
    pub artifacts: &'a [(&'a str, &'a [u8])],
}

/// Publishes `component` with `lichen cloud component create`; returns the stored recipe.
pub fn publish(cloud: &RunningCloud, component: &Component) -> Value {
    publish_with_dependencies(cloud, component, &[])
}

/// [`publish`] with `ComponentDependencies` (name, version requirement).
pub fn publish_with_dependencies(
    cloud: &RunningCloud,
    component: &Component,
    dependencies: &[(&str, &str)],
) -> Value {
    let base = cloud
        .dir
        .path()
        .join("publish")
        .join(format!("{}-{}", component.name, component.version));
    let files = base.join(component.name).join(component.version);
    std::fs::create_dir_all(&files).unwrap();
    for (file, content) in component.artifacts {
        std::fs::write(files.join(file), content).unwrap();
    }
    let artifacts: Vec<Value> = component
        .artifacts
        .iter()
        .map(|(file, _)| json!({"URI": format!("s3://fleet-test/{}/{file}", component.name)}))
        .collect();
    let mut recipe = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": component.name,
        "ComponentVersion": component.version,
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": component.lifecycle,
            "Artifacts": artifacts,
        }]
    });
    if !dependencies.is_empty() {
        let deps: serde_json::Map<String, Value> = dependencies
            .iter()
            .map(|(n, r)| (n.to_string(), json!({"VersionRequirement": r})))
            .collect();
        recipe["ComponentDependencies"] = Value::Object(deps);
    }
    let recipe_file = base.join("recipe.json");
    std::fs::write(&recipe_file, recipe.to_string()).unwrap();
    let published = cloud.json(&[
        "component",
        "create",
        "--recipe",
        recipe_file.to_str().unwrap(),
        "--artifacts",
        base.to_str().unwrap(),
    ]);
    published["recipe"].clone()
}

/// Where the cloud stores the artifact with `sha256` (lowercase hex).
pub fn stored_artifact(cloud: &RunningCloud, sha256_hex: &str) -> PathBuf {
    cloud
        .data()
        .join("artifacts")
        .join(&sha256_hex[..2])
        .join(sha256_hex)
}

/// `lichen cloud deployment create --target TARGET --component N=V…`; returns the deployment.
pub fn deploy(cloud: &RunningCloud, target: &str, components: &[(&str, &str)]) -> Value {
    let specs: Vec<String> = components.iter().map(|(n, v)| format!("{n}={v}")).collect();
    let mut args = vec!["deployment", "create", "--target", target];
    for s in &specs {
        args.extend(["--component", s.as_str()]);
    }
    cloud.json(&args)
}

/// A deployment from a Greengrass CreateDeployment document (for policies).
pub fn deploy_file(cloud: &RunningCloud, target: &str, document: &Value) -> Value {
    let file = cloud
        .dir
        .path()
        .join(format!("deployment-{:016x}.json", rand_suffix()));
    std::fs::write(&file, document.to_string()).unwrap();
    cloud.json(&[
        "deployment",
        "create",
        "--target",
        target,
        "--file",
        file.to_str().unwrap(),
    ])
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The deployment's id.
pub fn id_of(deployment: &Value) -> String {
    deployment["deploymentId"]
        .as_str()
        .unwrap_or_else(|| panic!("no deploymentId in {deployment}"))
        .to_string()
}

/// `lichen cloud deployment status ID --json` (which exits 1 when a device FAILED).
pub fn status(cloud: &RunningCloud, id: &str) -> Value {
    let out = cloud.cli(&["deployment", "status", id, "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "deployment status {id}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One device's entry of the deployment's status (Null when it has none).
pub fn device_status(cloud: &RunningCloud, id: &str, thing: &str) -> Value {
    status(cloud, id)["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["thing"] == thing)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `thing` reports `want` for deployment `id`; a different final status fails at
/// once, naming what was reported. `log` is shown on failure (the core's stderr).
pub fn wait_device(
    cloud: &RunningCloud,
    id: &str,
    core: &FleetCore,
    want: &str,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let d = device_status(cloud, id, &core.thing);
        let st = d["status"].as_str().unwrap_or("").to_string();
        if st == want {
            return d;
        }
        let final_status = matches!(
            st.as_str(),
            "SUCCEEDED" | "FAILED" | "CANCELED" | "REJECTED"
        );
        assert!(
            !final_status,
            "{} reported {st} for {id}, expected {want}: {d}\n{}",
            core.thing,
            tail(&core.core.stderr(), 60)
        );
        assert!(
            Instant::now() < deadline,
            "{} did not report {want} for {id} in time; last {d}\n{}",
            core.thing,
            tail(&core.core.stderr(), 60)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The file a component's run script writes into its work directory.
pub fn marker(core: &FleetCore, component: &str, file: &str) -> String {
    super::read(&core.core.work(component).join(file))
}
