//! Offline boot through the real binaries: a core whose cloud (`lichen cloud run`) is down
//! starts, serves IPC (an awsiotsdk component subscribes) and its local MQTT broker, runs its
//! components, completes local deployments without waiting for the cloud, and `core status`
//! shows the link disconnected with the last error. Then the cloud comes back on the same
//! address: the core connects by itself, and a fleet deployment made while it was away
//! arrives and succeeds.
//!
//! The fleet deployment names a component the core has never seen: its recipe comes from the
//! cloud's device HTTPS API (the bundle's `apiEndpoint`) once the core is back online.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} missing (scripts/setup-test-deps)",
            p.display()
        );
        None
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `lichen cloud run` on fixed ports over `data`, so that it comes back where the bundle
/// points.
struct Cloud {
    child: Child,
    data: PathBuf,
}

impl Cloud {
    fn start(data: &Path, api: u16, mqtt: u16) -> Cloud {
        let mut child = Command::new(BIN)
            .args(["cloud", "run", "--json", "--hostname", "localhost"])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt}")])
            .arg("--data")
            .arg(data)
            .env("LICHEN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        assert_eq!(ready["ready"], true);
        Cloud {
            child,
            data: data.to_path_buf(),
        }
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = Command::new(BIN)
            .arg("cloud")
            .arg("--data")
            .arg(&self.data)
            .args(args)
            .arg("--json")
            .env_remove("LICHEN_CLOUD_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lichen cloud {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cloud run exited with {status}");
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_core_boots_and_works_with_its_cloud_down_then_catches_up_when_it_returns() {
    let Some(python) = python() else { return };
    let cloud_dir = tempfile::tempdir().unwrap();
    let data = cloud_dir.path().join("cloud");
    let (api, mqtt) = (free_port(), free_port());

    // The cloud, once: the thing and its bundle, the component the fleet will deploy.
    let cloud = Cloud::start(&data, api, mqtt);
    let core_dir = tempfile::tempdir().unwrap();
    cloud.json(&[
        "thing",
        "create",
        "gw-offline",
        "--out",
        core_dir.path().to_str().unwrap(),
    ]);
    let late = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.example.Late",
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"mode": "local"}},
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"run": "sleep 600"}}]
    });
    let late_file = cloud_dir.path().join("late.json");
    std::fs::write(&late_file, late.to_string()).unwrap();
    cloud.json(&[
        "component",
        "create",
        "--recipe",
        late_file.to_str().unwrap(),
    ]);
    // Made before the core ever connected: it can only arrive by the core catching up.
    let fleet = cloud.json(&[
        "deployment",
        "create",
        "--target",
        "thing:gw-offline",
        "--file",
        &{
            let f = cloud_dir.path().join("deployment.json");
            std::fs::write(
                &f,
                json!({"components": {"com.example.Late": {"componentVersion": "1.0.0",
                    "configurationUpdate": {"merge": "{\"mode\":\"fleet\"}"}}}})
                .to_string(),
            )
            .unwrap();
            f.display().to_string()
        },
    ]);
    let fleet_id = fleet["deploymentId"].as_str().unwrap().to_string();
    cloud.stop();

    // The core, with its cloud down.
    let config = read(&core_dir.path().join("config.yaml"));
    assert!(config.contains("apiEndpoint:"), "{config}");
    let config =
        format!("{config}broker:\n  listeners:\n    - {{ kind: tcp, bind: \"127.0.0.1:0\" }}\n");
    let started = Instant::now();
    let core = TestCore::start_in(core_dir, "root", &config);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the core waited for its cloud: {:?}",
        started.elapsed()
    );
    let status = wait_for(
        "a failed connection attempt",
        Duration::from_secs(20),
        || {
            let c = core.json(&["core", "status"])["cloud"].clone();
            (!c["lastError"].is_null()).then_some(c)
        },
    );
    assert_ne!(status["state"], "connected", "{status}");
    assert_eq!(status["thingName"], "gw-offline", "{status}");
    let human = core.cli(&["core", "status"]);
    let text = String::from_utf8_lossy(&human.stdout).to_string();
    assert!(
        text.contains(status["lastError"].as_str().unwrap()),
        "the human status names the last error: {text}"
    );

    // A local deployment completes without the cloud: an awsiotsdk component (IPC).
    let base = core.dir.path();
    let artifacts = base.join("artifacts");
    let art = artifacts.join("com.test.Offline/1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/bridge_echo.py"),
        art.join("bridge_echo.py"),
    )
    .unwrap();
    let offline = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.test.Offline",
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {"aws.greengrass.ipc.pubsub": {
            "com.test.Offline:pubsub:1": {
                "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
                "resources": ["devices/*"]}}}}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!("exec {} -u {{artifacts:path}}/bridge_echo.py", python.display())},
            "Artifacts": [{"URI": "s3://test/com.test.Offline/bridge_echo.py"}]
        }]
    });
    let recipes = recipe_dir(base, "recipes", &[("offline.json", &offline.to_string())]);
    let deploy_started = Instant::now();
    let d = core.deploy(
        &recipes,
        Some(&artifacts),
        &["-m", "com.test.Offline=1.0.0"],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    assert!(
        deploy_started.elapsed() < Duration::from_secs(60),
        "{:?}",
        deploy_started.elapsed()
    );
    // IPC is served: the component subscribed over it.
    let work = core.work("com.test.Offline");
    eventually(
        "the component subscribed over IPC",
        Duration::from_secs(30),
        || work.join("ready").exists(),
    );
    // The local broker answers (a device outside any policy is refused by it, not by a
    // missing listener).
    let broker = core.json(&["device", "broker"]);
    let addr = broker["listeners"][0]["addr"].as_str().unwrap().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out = Command::new("mosquitto_pub")
        .args([
            "-h", host, "-p", port, "-V", "mqttv5", "-i", "stranger", "-t", "x", "-m", "x",
        ])
        .output()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success() && said.contains("authori"),
        "the broker answers CONNECT: {said}"
    );
    let c = core.json(&["core", "status"])["cloud"].clone();
    assert_ne!(c["state"], "connected", "{c}");

    // The cloud comes back, holding the fleet deployment made while the core was away.
    let cloud = Cloud::start(&data, api, mqtt);
    // The core reconnects on its own (its backoff is capped at 60 s).
    let status = wait_for("the core to connect", Duration::from_secs(90), || {
        let c = core.json(&["core", "status"])["cloud"].clone();
        (c["state"] == "connected").then_some(c)
    });
    assert_eq!(status["thingName"], "gw-offline");
    // The deployment arrives and succeeds; the cloud hears it.
    let record = wait_for(
        "the fleet deployment on the core",
        Duration::from_secs(60),
        || {
            let list = core.json(&["deployment", "list"]);
            list.as_array()?
                .iter()
                .find(|r| {
                    r["deploymentId"] == fleet_id.as_str()
                        || r["request"]["deploymentId"] == fleet_id.as_str()
                })
                .filter(|r| r["status"] == "SUCCEEDED" || r["status"] == "FAILED")
                .cloned()
        },
    );
    assert_eq!(record["status"], "SUCCEEDED", "{record}\n{}", core.stderr());
    // Fetched from the cloud, installed and running, with the fleet's configuration.
    core.wait_state("com.example.Late", "RUNNING", Duration::from_secs(30));
    let details = core.json(&["component", "details", "com.example.Late"]);
    assert_eq!(details["configuration"]["mode"], "fleet", "{details}");
    wait_for(
        "the cloud to see it succeeded",
        Duration::from_secs(30),
        || {
            let st = cloud.json(&["deployment", "status", &fleet_id]);
            (st["counts"]["SUCCEEDED"] == 1).then_some(st)
        },
    );
    drop(core);
    cloud.stop();
}
