//! The stream manager benchmark (issue 14), on real processes: a `lichen cloud run` and a core
//! started from its thing's bundle (the `lichen` binary next to this example: build both with
//! `cargo build --release -p lichen --examples`), then
//! - the core's extra memory with `aws.greengrass.StreamManager` deployed (VmRSS before and
//!   after, idle, and after the load below; VmHWM);
//! - append throughput of 1 KiB messages to a File stream, through the Rust client
//!   (`lichen_streams::client`, one request at a time) and the real Python SDK
//!   (`stream-manager` 1.1.2, `LICHEN_TEST_PYTHON` or `.venv/bin/python`);
//! - read throughput (batches of up to 1,000 messages), both clients;
//! - export throughput to the cloud: a stream filled with its `lichen-cloud:` export
//!   disabled, then the export enabled and timed until the cloud has stored the last message.
//!
//! `cargo run --release -p lichen --example bench_streams -- [--messages 20000]
//! [--py-messages 5000] [--json]`. Prints a table, or one JSON object.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ciborium::value::Value as Cbor;
use lichen_streams::client::Client;
use lichen_streams::protocol::cbor;
use serde_json::{Value, json};

const PY_BENCH: &str = r#"
import sys, time, json
from stream_manager import MessageStreamDefinition, Persistence, ReadMessagesOptions, StrategyOnFull, StreamManagerClient
port, n = int(sys.argv[1]), int(sys.argv[2])
c = StreamManagerClient(port=port)
c.create_message_stream(MessageStreamDefinition(name="bench-py", max_size=1 << 30,
    strategy_on_full=StrategyOnFull.RejectNewData, persistence=Persistence.File))
payload = b"p" * 1024
t = time.perf_counter()
for _ in range(n):
    c.append_message("bench-py", payload)
append = time.perf_counter() - t
t = time.perf_counter()
got, start = 0, 0
while got < n:
    batch = c.read_messages("bench-py", ReadMessagesOptions(desired_start_sequence_number=start,
        min_message_count=1, max_message_count=1000, read_timeout_millis=0))
    got += len(batch)
    start = batch[-1].sequence_number + 1
read = time.perf_counter() - t
c.close()
print(json.dumps({"append_s": append, "read_s": read}))
"#;

struct Args {
    messages: usize,
    py_messages: usize,
    json: bool,
}

fn args() -> Args {
    let mut a = Args {
        messages: 20_000,
        py_messages: 5_000,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--messages" => a.messages = num(),
            "--py-messages" => a.py_messages = num(),
            "--json" => a.json = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LICHEN_BIN") {
        return p.into();
    }
    // target/<profile>/examples/bench_streams -> target/<profile>/lichen
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("lichen")
}

fn python() -> PathBuf {
    std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

fn run(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// VmRSS and VmHWM of a process, KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn last_exported(c: &mut Client, stream: &str) -> i64 {
    let info = c.describe(stream).unwrap();
    info.maps("exportStatuses").unwrap()[0]
        .int("lastExportedSequenceNumber", -1, i64::MAX)
        .unwrap()
        .unwrap_or(-1)
}

fn definition(name: &str, export: Option<bool>) -> Cbor {
    let mut fields = vec![
        ("name", Some(cbor::text(name))),
        ("maxSize", Some(cbor::int(1 << 30))),
        ("strategyOnFull", Some(cbor::int(0))),
        ("persistence", Some(cbor::int(0))),
    ];
    if let Some(disabled) = export {
        fields.push((
            "exportDefinition",
            Some(cbor::map(vec![(
                "http",
                Some(Cbor::Array(vec![cbor::map(vec![
                    ("identifier", Some(cbor::text("cloud"))),
                    ("uri", Some(cbor::text("lichen-cloud:"))),
                    ("batchSize", Some(cbor::int(500))),
                    ("disabled", Some(Cbor::Bool(disabled))),
                ])])),
            )])),
        ));
    }
    cbor::map(fields)
}

fn main() {
    let a = args();
    let bin = bin();
    assert!(
        bin.exists(),
        "{} missing: cargo build --release -p lichen",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();

    let mut cloud = Command::new(&bin)
        .args(["cloud", "run", "--json", "--api-listen", "127.0.0.1:0"])
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--hostname",
            "localhost",
            "--data",
        ])
        .arg(base.join("cloud"))
        .env("LICHEN_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(cloud.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let cloud_cli = || {
        let mut c = Command::new(&bin);
        c.arg("cloud").arg("--data").arg(base.join("cloud"));
        c
    };
    let dev = base.join("dev");
    run(cloud_cli()
        .args(["thing", "create", "bench-core", "--out"])
        .arg(&dev)
        .arg("--json"));
    let root = dev.join("root");
    let core = Command::new(&bin)
        .args(["core", "run", "--root"])
        .arg(&root)
        .arg("--config")
        .arg(dev.join("config.yaml"))
        .env("LICHEN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let core_cli = || {
        let mut c = Command::new(&bin);
        c.arg("--root").arg(&root);
        c
    };
    wait_until("the core's cloud link", Duration::from_secs(60), || {
        let out = core_cli()
            .args(["core", "status", "--json"])
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["cloud"]["state"] == "connected").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let (rss_before, _) = memory(core.id());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let recipes = base.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    let config = json!({"aws.greengrass.StreamManager": {"MERGE": {
        "STREAM_MANAGER_SERVER_PORT": port.to_string(),
        "STREAM_MANAGER_AUTHENTICATE_CLIENT": "false"}}});
    let d = run(core_cli()
        .args(["deployment", "create", "--recipe-dir"])
        .arg(&recipes)
        .args(["-m", "aws.greengrass.StreamManager=2.1.0", "-c"])
        .arg(config.to_string())
        .arg("--json"));
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let mut c = wait_until("the stream manager", Duration::from_secs(30), || {
        Client::connect(("127.0.0.1", port), None).ok()
    });
    std::thread::sleep(Duration::from_secs(2));
    let (rss_idle, _) = memory(core.id());

    let payload = vec![b'r'; 1024];
    c.create(definition("bench-rust", None)).unwrap();
    let t = Instant::now();
    for _ in 0..a.messages {
        c.append("bench-rust", &payload).unwrap();
    }
    let rust_append = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut got = 0usize;
    while got < a.messages {
        let batch = c.read("bench-rust", got as u64, 1, 1000, 0).unwrap();
        got += batch.len();
    }
    let rust_read = t.elapsed().as_secs_f64();

    let script = base.join("bench.py");
    std::fs::write(&script, PY_BENCH).unwrap();
    let py = Command::new(python())
        .arg(&script)
        .arg(port.to_string())
        .arg(a.py_messages.to_string())
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let py: Value = serde_json::from_slice(&py.stdout).unwrap();
    let py_append = py["append_s"].as_f64().unwrap();
    let py_read = py["read_s"].as_f64().unwrap();

    c.create(definition("bench-export", Some(true))).unwrap();
    for _ in 0..a.messages {
        c.append("bench-export", &payload).unwrap();
    }
    let t = Instant::now();
    c.update(definition("bench-export", Some(false))).unwrap();
    let last = a.messages as i64 - 1;
    wait_until("the export to finish", Duration::from_secs(600), || {
        (last_exported(&mut c, "bench-export") == last).then_some(())
    });
    let export = t.elapsed().as_secs_f64();
    let stored = run(cloud_cli()
        .args(["stream", "read", "bench-export", "--from"])
        .arg(last.to_string())
        .args(["--limit", "1", "--json"]));
    assert_eq!(stored["records"][0]["sequenceNumber"], last, "{stored}");
    let (rss_loaded, hwm) = memory(core.id());
    drop(c);
    stop(core);
    stop(cloud);

    let rate = |n: usize, s: f64| n as f64 / s;
    let mib = |n: usize, s: f64| n as f64 * 1024.0 / s / (1024.0 * 1024.0);
    let result = json!({
        "messages": a.messages, "pyMessages": a.py_messages, "payloadBytes": 1024,
        "rustAppendPerSec": rate(a.messages, rust_append),
        "pythonAppendPerSec": rate(a.py_messages, py_append),
        "rustReadPerSec": rate(a.messages, rust_read),
        "pythonReadPerSec": rate(a.py_messages, py_read),
        "exportPerSec": rate(a.messages, export),
        "exportMiBPerSec": mib(a.messages, export),
        "coreRssBeforeKiB": rss_before, "coreRssIdleKiB": rss_idle,
        "coreRssLoadedKiB": rss_loaded, "coreHwmKiB": hwm,
    });
    if a.json {
        println!("{result}");
        return;
    }
    println!("stream manager, 1 KiB messages, File persistence");
    println!(
        "append  Rust client   {:>9.0} msg/s ({:.1} MiB/s, {} messages)",
        rate(a.messages, rust_append),
        mib(a.messages, rust_append),
        a.messages
    );
    println!(
        "append  Python SDK    {:>9.0} msg/s ({} messages)",
        rate(a.py_messages, py_append),
        a.py_messages
    );
    println!(
        "read    Rust client   {:>9.0} msg/s",
        rate(a.messages, rust_read)
    );
    println!(
        "read    Python SDK    {:>9.0} msg/s",
        rate(a.py_messages, py_read)
    );
    println!(
        "export  to the cloud  {:>9.0} msg/s ({:.1} MiB/s; {} messages stored, SQLite)",
        rate(a.messages, export),
        mib(a.messages, export),
        a.messages
    );
    println!(
        "core RSS: {:.1} MiB before the stream manager, {:.1} MiB with it idle (+{:.1}), {:.1} MiB after the load (peak {:.1})",
        rss_before as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        (rss_idle as f64 - rss_before as f64) / 1024.0,
        rss_loaded as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
