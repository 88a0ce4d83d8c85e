//! `lichen quickstart`, the real binary: it starts a cloud (a `lichen cloud run` child) and a
//! core, provisions the core, publishes the examples, deploys them to a thing group and
//! waits until the device reports SUCCEEDED; the examples then run on the core, the cloud's
//! CLI sees the deployment, and SIGTERM / SIGINT stop the core and the cloud cleanly. A
//! second run on the same directory keeps the identity and deploys again.

mod common;

use std::io::{BufRead, BufReader, Lines};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const EXAMPLES: [&str; 3] = [
    "com.example.HelloWorld",
    "com.example.Heartbeat",
    "com.example.Dashboard",
];

struct Quickstart {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Everything printed up to the "Stop:" line.
    summary: String,
}

impl Quickstart {
    /// Starts `lichen quickstart DIR` on ephemeral ports and reads its output up to the
    /// "Stop:" line that ends the summary.
    fn start(dir: &Path) -> Quickstart {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("stderr"))
            .unwrap();
        let mut child = Command::new(BIN)
            .arg("quickstart")
            .arg(dir)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
            ])
            .args(["--timeout", "240"])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut summary = String::new();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            summary.push_str(&line);
            summary.push('\n');
            if line.starts_with("Stop:") {
                break;
            }
        }
        assert!(
            summary.contains("Stop:"),
            "the quickstart ended before its summary:\n{summary}\nstderr:\n{}",
            std::fs::read_to_string(dir.with_extension("stderr")).unwrap_or_default()
        );
        Quickstart {
            child,
            lines,
            summary,
        }
    }

    /// The word after `prefix` on the line that starts with it.
    fn field(&self, prefix: &str) -> String {
        self.summary
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {prefix:?} line:\n{}", self.summary))
            .to_string()
    }

    fn cloud_pid(&self) -> i32 {
        let line = self
            .summary
            .lines()
            .find(|l| l.starts_with("Cloud API:"))
            .unwrap_or_else(|| panic!("no Cloud API line:\n{}", self.summary));
        line.rsplit("pid ")
            .next()
            .and_then(|p| p.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"))
    }

    /// Sends `signal` and waits for a successful exit; returns what it printed meanwhile.
    fn stop(mut self, signal: Signal) -> String {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "quickstart exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "quickstart did not stop on {signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.lines
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn cloud_json(data: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("cloud")
        .arg("--data")
        .arg(data)
        .args(args)
        .arg("--json")
        .env_remove("LICHEN_CLOUD_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lichen cloud {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn quickstart_deploys_the_examples_from_its_cloud_and_stops_both_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let qs = Quickstart::start(&dir);
    let summary = qs.summary.clone();
    assert!(
        summary.contains("SUCCEEDED on lichen-demo-core (thing group lichen-demo)"),
        "{summary}"
    );
    for c in EXAMPLES {
        assert!(
            summary
                .lines()
                .any(|l| l.contains(c) && l.contains("RUNNING")),
            "{c}: {summary}"
        );
    }
    let id = qs.field("deployment ");
    let data = dir.join("cloud");

    // The cloud's own view, through its CLI as the summary suggests.
    let status = cloud_json(&data, &["deployment", "status", &id]);
    let devices = status["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{status}");
    assert_eq!(devices[0]["thing"], "lichen-demo-core", "{status}");
    assert_eq!(devices[0]["status"], "SUCCEEDED", "{status}");
    let published = cloud_json(&data, &["component", "list"]);
    for c in EXAMPLES {
        assert!(
            published.to_string().contains(c),
            "{c} not published: {published}"
        );
    }
    assert_eq!(
        cloud_json(&data, &["thing", "describe", "lichen-demo-core"])["online"],
        true
    );
    // The core's fleet status reaches the cloud, as `cloud device list|status` show it.
    let listed = cloud_json(&data, &["device", "list"]);
    assert_eq!(listed[0]["thing"], "lichen-demo-core", "{listed}");
    eventually(
        "the examples in the device's fleet status",
        Duration::from_secs(30),
        || {
            let d = cloud_json(&data, &["device", "status", "lichen-demo-core"]);
            EXAMPLES.iter().all(|c| {
                d["components"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|x| x["componentName"] == *c))
            })
        },
    );

    // The examples run on the core, from what the core fetched from the cloud.
    let core = dir.join("core");
    eventually("HelloWorld greets", Duration::from_secs(30), || {
        std::fs::read_to_string(core.join("logs/com.example.HelloWorld.log"))
            .is_ok_and(|l| l.contains("Hello from lichen"))
    });
    let daemon: i32 = read(&core.join("work/com.example.Heartbeat/state/daemon.pid"))
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(daemon));
    let cloud_pid = qs.cloud_pid();
    assert!(pid_alive(cloud_pid));
    // Secrets are 0600.
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    assert_eq!(mode(&dir.join("device/thing.private.key")), 0o600);
    let fingerprint = cloud_json(&data, &["thing", "describe", "lichen-demo-core"])["certificates"]
        [0]["id"]
        .clone();

    let rest = qs.stop(Signal::SIGTERM);
    assert!(rest.contains("stopped the core and the cloud"), "{rest}");
    eventually("the cloud stopped", Duration::from_secs(5), || {
        !pid_alive(cloud_pid)
    });
    eventually(
        "the heartbeat daemon stopped",
        Duration::from_secs(5),
        || !pid_alive(daemon),
    );
    let cloud_log = read(&dir.join("cloud.log"));
    assert!(cloud_log.contains("stopping the cloud"), "{cloud_log}");

    // A second run keeps the identity and the published versions, and deploys again.
    let qs = Quickstart::start(&dir);
    assert!(qs.summary.contains("SUCCEEDED"), "{}", qs.summary);
    let second = qs.field("deployment ");
    assert_ne!(second, id, "a new deployment replaces the first");
    let things = cloud_json(&data, &["thing", "list"]);
    assert_eq!(things.as_array().unwrap().len(), 1, "{things}");
    assert_eq!(
        cloud_json(&data, &["thing", "describe", "lichen-demo-core"])["certificates"][0]["id"],
        fingerprint,
        "the first run's certificate is kept"
    );
    let cloud_pid = qs.cloud_pid();
    let rest = qs.stop(Signal::SIGINT);
    assert!(rest.contains("stopped the core and the cloud"), "{rest}");
    assert!(!pid_alive(cloud_pid));
}
