//! The command line itself: recipe check, logs, stop, access control, quickstart.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/recipes")
}

#[test]
fn recipe_check_reports_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "RecipeFormatVersion: 2020-01-25\nComponentName: com.x\nComponentVersion: not-semver\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["recipe", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bad.yaml") && text.contains("ComponentVersion"),
        "{text}"
    );

    // A real-world recipe when the shared fixtures are beside the checkout, else the
    // project's own example.
    let shared = fixtures().join("SubscribeAndPublish-1.0.0.yaml");
    let (good, name) = if shared.is_file() {
        (shared, "SubscribeAndPublish")
    } else {
        let own = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/recipes/com.example.HelloWorld-1.0.0.yaml");
        (own, "com.example.HelloWorld")
    };
    let out = Command::new(BIN)
        .args(["recipe", "check", "--json"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["ok"], true);
    assert!(
        v[0]["componentName"].as_str().unwrap().contains(name),
        "{v}"
    );
}

#[test]
fn logs_stop_and_restart_commands() {
    let core = TestCore::start();
    let recipe = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Talker
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Run: "echo talking-$$; exec sleep 300"
"#;
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("t.yaml", recipe)]);
    assert_eq!(
        core.deploy(&recipes, None, &["-m", "com.test.Talker=1.0.0"])["status"],
        "SUCCEEDED"
    );
    eventually("log line", Duration::from_secs(10), || {
        let out = core.cli(&["logs", "com.test.Talker", "-n", "5"]);
        String::from_utf8_lossy(&out.stdout).contains("talking-")
    });
    let core_log = core.cli(&["logs"]);
    assert!(String::from_utf8_lossy(&core_log.stdout).contains("deployment succeeded"));

    let pid = core.component("com.test.Talker")["pid"].as_i64().unwrap() as i32;
    let out = core.cli(&["component", "stop", "com.test.Talker"]);
    assert!(out.status.success());
    assert_eq!(core.state("com.test.Talker"), "FINISHED");
    assert!(!pid_alive(pid), "stopped component's process is gone");
    let out = core.cli(&["component", "restart", "com.test.Talker"]);
    assert!(out.status.success());
    core.wait_state("com.test.Talker", "RUNNING", Duration::from_secs(10));

    let out = core.cli(&["component", "details", "com.test.Nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("com.test.Nope"));

    // Human-readable listing by default.
    let out = core.cli(&["deployment", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCEEDED"));
    let out = core.cli(&["component", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("com.test.Talker") && text.contains("RUNNING"),
        "{text}"
    );
}

#[test]
fn control_channel_refuses_other_users() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let core = TestCore::start();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(core.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(BIN)
        .arg("--root")
        .arg(&core.root)
        .args(["component", "list"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Permission denied") || err.contains("Unauthorized"),
        "{err}"
    );
}

#[test]
fn quickstart_local_runs_examples_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["quickstart", "--local"])
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) => {
                seen.push_str(&l);
                seen.push('\n');
                if l.starts_with("Stop:") {
                    break;
                }
            }
            _ => break,
        }
    }
    assert!(seen.contains("demo core is running"), "{seen}");
    for c in [
        "com.example.HelloWorld",
        "com.example.Heartbeat",
        "com.example.Dashboard",
    ] {
        assert!(
            seen.lines().any(|l| l.contains(c) && l.contains("RUNNING")),
            "{c}: {seen}"
        );
    }
    let daemon: i32 = read(
        &dir.path()
            .join("demo/work/com.example.Heartbeat/state/daemon.pid"),
    )
    .trim()
    .parse()
    .unwrap();
    assert!(pid_alive(daemon));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "quickstart did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually("daemon stopped", Duration::from_secs(5), || {
        !pid_alive(daemon)
    });
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("stopping the demo core")),
        "{rest:?}"
    );
}

#[test]
fn roots_longer_than_sun_path_work() {
    let long = format!("{}/{}", "l".repeat(80), "m".repeat(40));
    let core = TestCore::start_at(&long, "thingName: long\n");
    assert!(core.root.join("control.socket").as_os_str().len() > 107);
    let recipe = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Long
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Run: "echo $AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT > socket.txt; test -S $AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT && echo reachable >> socket.txt"
"#;
    let recipes = recipe_dir(core.dir.path(), "recipes", &[("l.yaml", recipe)]);
    assert_eq!(
        core.deploy(&recipes, None, &["-m", "com.test.Long=1.0.0"])["status"],
        "SUCCEEDED"
    );
    let work = core.work("com.test.Long");
    eventually("socket path written", Duration::from_secs(10), || {
        read(&work.join("socket.txt")).contains("reachable")
    });
    assert_eq!(
        read(&work.join("socket.txt")).lines().next(),
        Some("../../ipc.socket")
    );
}
