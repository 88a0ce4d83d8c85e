//! The real core refuses hostile deployment requests and names at creation, so nothing it
//! stores fails to load later.

mod common;

use common::TestCore;
use serde_json::{Value, json};

fn nested(levels: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..levels {
        v = json!({ "k": v });
    }
    v
}

#[test]
fn deep_update_config_is_refused_at_creation_and_listing_keeps_working() {
    let core = TestCore::start();
    // 122 levels used to be accepted and then broke `deployment list`; 640 is 10x the bound.
    for levels in [65, 122, 640] {
        let update = json!({"com.example.Deep": {"MERGE": nested(levels)}}).to_string();
        let out = core.cli(&["deployment", "create", "--update-config", &update]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{levels} levels accepted");
        // Beyond serde_json's limit of 128 the CLI refuses the text itself.
        let refused_by_core =
            stderr.contains("configurationUpdates") && stderr.contains("64 levels");
        assert!(
            refused_by_core || levels > 128 && stderr.contains("recursion limit"),
            "{levels}: {stderr}"
        );
    }
    let update = json!({"com.example.Deep": {"RESET": ["/a".repeat(640)]}}).to_string();
    let out = core.cli(&["deployment", "create", "--update-config", &update]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RESET"));

    let list = core.json(&["deployment", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

#[test]
fn bidirectional_controls_in_deployment_names_are_refused() {
    let core = TestCore::start();
    let merge = "com.example.\u{202E}gpj.exe=1.0.0";
    let out = core.cli(&["deployment", "create", "--merge", merge]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rootComponentsToAdd") && stderr.contains("\\u{202e}"),
        "{stderr}"
    );
}

const TOKEN_COMPONENT: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Token
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: "*" }
    Lifecycle:
      Run:
        Script: |
          echo "$SVCUID" > svcuid.txt
          exec sleep 300
"#;

/// Holds `count` connections to `socket` open without ever sending CONNECT, reopening each
/// one the core closes, for `seconds`. Run as `nobody` when the test runs as root (the
/// attack of issue 8), else as this user.
const ATTACKER: &str = r#"
import resource, select, socket, sys, time
path, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
def dial():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(path)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        s.close()
        return None
    return s
socks = {}
poller = select.poll()
def add():
    s = dial()
    if s is None:
        return False
    socks[s.fileno()] = s
    poller.register(s, select.POLLIN | select.POLLHUP)
    return True
opened = sum(1 for _ in range(count) if add())
end = time.time() + seconds
while time.time() < end:
    for fd, _ in poller.poll(50):
        s = socks.pop(fd, None)
        if s is None:
            continue
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if data:
            socks[fd] = s
            continue
        poller.unregister(fd)
        s.close()
    while len(socks) < count and time.time() < end:
        if not add():
            break
        opened += 1
print(opened)
"#;

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn idle_unauthenticated_connections_cannot_lock_components_out() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    let core = TestCore::start();
    let recipes = common::recipe_dir(
        core.dir.path(),
        "recipes",
        &[("token.yaml", TOKEN_COMPONENT)],
    );
    let record = core.deploy(&recipes, None, &["--merge", "com.test.Token=1.0.0"]);
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    let token_file = core.work("com.test.Token").join("svcuid.txt");
    common::eventually(
        "the component wrote its token",
        Duration::from_secs(20),
        || common::read(&token_file).trim().len() >= 16,
    );
    let token = common::read(&token_file).trim().to_string();
    let socket = core.root.join("ipc.socket");
    let pid = core.child.as_ref().map(|c| c.id()).unwrap_or_default();

    // Let `nobody` reach the socket (it is 0666; the temporary directories are 0700).
    for dir in [core.dir.path(), core.root.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connect_once = |socket: &std::path::Path| -> Option<Duration> {
        let started = Instant::now();
        rt.block_on(async {
            let c = tokio::time::timeout(
                Duration::from_secs(1),
                lichen_ipc::IpcClient::connect(socket, &token),
            )
            .await;
            matches!(c, Ok(Ok(_)))
        })
        .then(|| started.elapsed())
    };
    assert!(
        connect_once(&socket).is_some(),
        "connects before the attack"
    );
    let rss_before = vm_rss_kib(pid);

    let attack_seconds = 8.0;
    let mut attacker = std::process::Command::new("python3");
    attacker
        .arg("-c")
        .arg(ATTACKER)
        .arg(&socket)
        .arg("1100")
        .arg(attack_seconds.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let as_nobody = nix::unistd::geteuid().is_root();
    if as_nobody {
        attacker.uid(65534).gid(65534);
    }
    let attacker = attacker.spawn().expect("python3 for the attacker");
    std::thread::sleep(Duration::from_secs(2));

    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut rss_peak = 0;
    for _ in 0..20 {
        match connect_once(&socket) {
            Some(l) => latencies.push(l),
            None => failures += 1,
        }
        rss_peak = rss_peak.max(vm_rss_kib(pid));
        std::thread::sleep(Duration::from_millis(150));
    }
    let out = attacker.wait_with_output().unwrap();
    let opened = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::thread::sleep(Duration::from_secs(3));
    let rss_after = vm_rss_kib(pid);
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    let refusal_lines = core
        .stderr()
        .lines()
        .filter(|l| l.contains("IPC connections refused") || l.contains("IPC connection"))
        .count();
    eprintln!(
        "attack as {}: {opened} connections opened; legitimate: {} of 20 connected, slowest \
         {slowest:?}; core VmRSS {rss_before} kB before, {rss_peak} kB peak, {rss_after} kB \
         after; {refusal_lines} refusal log lines",
        if as_nobody { "nobody" } else { "this user" },
        latencies.len()
    );
    assert_eq!(
        failures, 0,
        "every legitimate connection succeeds within 1 s"
    );
    assert!(
        opened.parse::<u64>().unwrap_or(0) >= 1100,
        "the attack ran: {opened} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(refusal_lines < 20, "refusals are logged in aggregate");
    assert!(
        rss_peak < rss_before + 30 * 1024 && rss_after < rss_before + 10 * 1024,
        "memory stays bounded and returns: {rss_before} / {rss_peak} / {rss_after} kB"
    );
}

const PUBSUB_COMPONENT: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Token
ComponentVersion: "1.0.0"
ComponentConfiguration:
  DefaultConfiguration:
    accessControl:
      aws.greengrass.ipc.pubsub:
        com.test.Token:pubsub:1:
          operations: ["*"]
          resources: ["*"]
Manifests:
  - Platform: { os: "*" }
    Lifecycle:
      Run:
        Script: |
          echo "$SVCUID" > svcuid.txt
          exec sleep 300
"#;

#[test]
fn a_subscriber_that_never_reads_holds_bounded_memory_released_on_close() {
    use lichen_eventstream::{Header, MessageType, RpcMessage, headers};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    let core = TestCore::start();
    let recipes = common::recipe_dir(
        core.dir.path(),
        "recipes",
        &[("token.yaml", PUBSUB_COMPONENT)],
    );
    let record = core.deploy(&recipes, None, &["--merge", "com.test.Token=1.0.0"]);
    assert_eq!(record["status"], "SUCCEEDED", "{record}");
    let token_file = core.work("com.test.Token").join("svcuid.txt");
    common::eventually(
        "the component wrote its token",
        Duration::from_secs(20),
        || common::read(&token_file).trim().len() >= 16,
    );
    let token = common::read(&token_file).trim().to_string();
    let socket = core.root.join("ipc.socket");
    let pid = core.child.as_ref().map(|c| c.id()).unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rss_before = vm_rss_kib(pid);
    // 120 MiB: far beyond the bounds (8 MiB bus queue, 8 MiB write queue, 1 MiB batch).
    const MESSAGES: usize = 120;
    let (rss_peak, publish_time) = rt.block_on(async {
        // A subscriber that never reads its socket, not even the CONNECT ack.
        let mut stuck = lichen_ipc::client::connect_socket(&socket).await.unwrap();
        let connect = RpcMessage::new(MessageType::Connect, 0, 0)
            .with_header(Header::string(headers::VERSION, headers::PROTOCOL_VERSION))
            .with_payload(json!({ "authToken": token }).to_string());
        let subscribe = RpcMessage::json(
            MessageType::ApplicationMessage,
            0,
            1,
            "aws.greengrass#SubscribeToTopicRequest",
            json!({"topic": "big"}).to_string(),
        )
        .with_header(Header::string(
            headers::OPERATION,
            "aws.greengrass#SubscribeToTopic",
        ));
        stuck
            .write_all(&lichen_ipc::client::encode(connect))
            .await
            .unwrap();
        stuck
            .write_all(&lichen_ipc::client::encode(subscribe))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;

        let publisher = lichen_ipc::IpcClient::connect(&socket, &token)
            .await
            .unwrap();
        let message = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            vec![7u8; 1024 * 1024],
        );
        let request =
            json!({"topic": "big", "publishMessage": {"binaryMessage": {"message": message}}});
        let started = std::time::Instant::now();
        let mut peak = 0;
        for i in 0..MESSAGES {
            tokio::time::timeout(
                Duration::from_secs(10),
                publisher.call("PublishToTopic", &request),
            )
            .await
            .unwrap_or_else(|_| panic!("publish {i} waited on the stuck subscriber"))
            .unwrap();
            if i % 20 == 0 {
                peak = vm_rss_kib(pid).max(peak);
            }
        }
        let elapsed = started.elapsed();
        peak = vm_rss_kib(pid).max(peak);
        drop(publisher);
        drop(stuck);
        (peak, elapsed)
    });
    // Memory comes back once both clients are gone.
    let mut rss_after = vm_rss_kib(pid);
    for _ in 0..50 {
        if rss_after < rss_before + 20 * 1024 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        rss_after = vm_rss_kib(pid);
    }
    eprintln!(
        "{MESSAGES} publishes of 1 MiB to a subscriber that never reads took {publish_time:?}; \
         core VmRSS {rss_before} kB before, {rss_peak} kB peak, {rss_after} kB after close"
    );
    assert!(
        rss_peak < rss_before + 60 * 1024,
        "buffered bytes are bounded: {rss_before} -> {rss_peak} kB"
    );
    assert!(
        rss_after < rss_before + 20 * 1024,
        "memory is released after the clients close: {rss_before} -> {rss_after} kB"
    );
}

#[test]
fn rejected_names_cannot_forge_log_lines() {
    let core = TestCore::start();
    let recipe = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.test.A\n2026-01-01T00:00:00Z ERROR FORGED\u{0}",
        "ComponentVersion": "1.0.0",
    })
    .to_string();
    let recipes = common::recipe_dir(core.dir.path(), "recipes", &[("a.json", &recipe)]);
    let out = core.cli(&[
        "deployment",
        "create",
        "--recipe-dir",
        &recipes.display().to_string(),
        "--merge",
        "com.test.A=1.0.0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.stdout.contains(&0), "no NUL reaches the CLI output");
    assert!(
        !stderr.lines().any(|l| l.starts_with("2026-01-01")),
        "{stderr}"
    );
    let log = common::read(&core.root.join("logs/lichen.log"));
    assert!(log.contains("FORGED"), "the refusal is logged: {log}");
    assert!(!log.contains('\0'), "NUL escaped");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "a forged line reached the log:\n{log}"
    );
}

#[test]
fn temp_files_of_interrupted_writes_are_removed_at_start() {
    let mut core = TestCore::start();
    core.kill9();
    let stale = [
        core.root.join("config/.effective.json.tmp4242"),
        core.root.join("deployments/records/.abc.json.tmp4242"),
    ];
    for path in &stale {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    let kept = core.root.join("config/.notes");
    std::fs::write(&kept, b"mine").unwrap();
    core.spawn();
    for path in &stale {
        assert!(!path.exists(), "{} is still there", path.display());
    }
    assert!(
        kept.exists(),
        "only temp files of the atomic writer are removed"
    );
}
