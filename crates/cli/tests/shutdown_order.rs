//! The shutdown order of the real binary: a core that is stopping keeps the root (its lock)
//! until its services, IPC and components have stopped, so a core started on the same root
//! at once never has its sockets removed by the first one's shutdown.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const TOKEN_WRITER: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.TokenWriter
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: "*" }
    Lifecycle:
      Run:
        Script: echo "$SVCUID" > token.txt.tmp && mv token.txt.tmp token.txt && exec sleep 300
"#;

fn read_token(core: &TestCore) -> String {
    std::fs::read_to_string(core.work("com.test.TokenWriter").join("token.txt"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// SIGTERMs the running core and at once starts another on the same root, retrying while
/// the first still holds it. Returns when the first has exited and the second answers; the
/// number of starts refused for the lock.
fn restart_at_once(core: &mut TestCore) -> usize {
    let mut first = core.child.take().expect("a running core");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "no second core: {}",
            core.stderr()
        );
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(core.dir.path().join("core.stderr"))
            .unwrap();
        let mut child = Command::new(BIN)
            .args(["core", "run", "--root"])
            .arg(&core.root)
            .arg("--config")
            .arg(core.dir.path().join("config.yaml"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // Either it exits (the root is still locked) or it answers once the first is gone.
        let answers = loop {
            assert!(
                Instant::now() < deadline,
                "no second core: {}",
                core.stderr()
            );
            if let Some(status) = child.try_wait().unwrap() {
                assert!(!status.success(), "second core exited cleanly at once");
                break false;
            }
            if first.try_wait().unwrap().is_some()
                && core.cli(&["component", "list", "--json"]).status.success()
            {
                break true;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if answers {
            core.child = Some(child);
            break;
        }
        refused += 1;
    }
    let status = first.wait().unwrap();
    assert!(status.success(), "first core: {status}");
    refused
}

#[test]
fn a_core_started_while_another_stops_keeps_its_sockets() {
    // A broker too, so that a service with open state (broker.db) is part of the shutdown.
    let mut core = TestCore::start_with(
        "thingName: order\nbroker:\n  listeners:\n    - { kind: tcp, bind: \"127.0.0.1:0\" }\n",
    );
    let recipes = recipe_dir(
        core.dir.path(),
        "recipes",
        &[("TokenWriter-1.0.0.yaml", TOKEN_WRITER)],
    );
    let record = core.deploy(&recipes, None, &["--merge", "com.test.TokenWriter=1.0.0"]);
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    eventually("the first token", Duration::from_secs(20), || {
        !read_token(&core).is_empty()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The race is a matter of milliseconds: run it at least five times, and on until the
    // second core has found the root still locked at least once (a fast shutdown on an idle
    // machine can free it before the second core looks, five times running).
    let mut refused = 0;
    for round in 0..30 {
        if round >= 5 && refused > 0 {
            break;
        }
        let old_token = read_token(&core);
        refused += restart_at_once(&mut core);
        // The first core is gone; it must not have taken the second's sockets with it.
        for socket in ["ipc.socket", "control.socket"] {
            assert!(
                core.root.join(socket).exists(),
                "round {round}: {socket} removed by the first core's shutdown"
            );
        }
        // The second core serves the CLI …
        let list = core.json(&["component", "list"]);
        assert!(list.to_string().contains("com.test.TokenWriter"), "{list}");
        // … and IPC, to a client with the token it gave its component.
        eventually("the new core's token", Duration::from_secs(20), || {
            let t = read_token(&core);
            !t.is_empty() && t != old_token
        });
        let token = read_token(&core);
        let socket = core.root.join("ipc.socket");
        let config = rt.block_on(async {
            let client = lichen_ipc::IpcClient::connect(&socket, &token)
                .await
                .expect("IPC connects to the second core");
            client
                .call(
                    "GetConfiguration",
                    &serde_json::json!({"componentName": "com.test.TokenWriter", "keyPath": []}),
                )
                .await
                .expect("GetConfiguration")
        });
        assert_eq!(config["componentName"], "com.test.TokenWriter", "{config}");
    }
    assert!(
        refused > 0 && core.stderr().contains("is held"),
        "the second core never found the root locked: the test did not race"
    );
}
