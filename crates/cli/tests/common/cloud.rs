//! A `lichen cloud run` in a temporary directory, driven by the real binary's verbs.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::BIN;

pub struct RunningCloud {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub ready: Value,
}

impl RunningCloud {
    pub fn start() -> RunningCloud {
        RunningCloud::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RunningCloud {
        let dir = tempfile::tempdir().unwrap();
        let (child, ready) = Self::spawn(&dir, "127.0.0.1:0", "127.0.0.1:0", extra);
        RunningCloud { dir, child, ready }
    }

    fn spawn(dir: &tempfile::TempDir, api: &str, mqtt: &str, extra: &[&str]) -> (Child, Value) {
        let mut child = Command::new(BIN)
            .args([
                "cloud",
                "run",
                "--json",
                "--api-listen",
                api,
                "--mqtt-listen",
                mqtt,
                "--hostname",
                "localhost",
            ])
            // A relative --data: api.json must still name absolute paths.
            .arg("--data")
            .arg("cloud")
            .args(extra)
            .current_dir(dir.path())
            .env("LICHEN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_slice(line.as_bytes())
            .unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        assert_eq!(ready["ready"], true);
        (child, ready)
    }

    /// An outage: kill -9 of the cloud process (its data directory stays).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the cloud again on the same data directory and the same addresses (so cores
    /// configured for it reconnect), with `extra` flags (e.g. the same `--database`).
    pub fn restart(&mut self, extra: &[&str]) {
        let api = self.ready["api"].as_str().unwrap().to_string();
        let mqtt_port = self.ready["iotDataEndpoint"]
            .as_str()
            .and_then(|e| e.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .unwrap();
        let mqtt = format!("127.0.0.1:{mqtt_port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The old sockets may linger a moment after the kill.
            let free = std::net::TcpListener::bind(&api).is_ok()
                && std::net::TcpListener::bind(&mqtt).is_ok();
            if free || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (child, ready) = Self::spawn(&self.dir, &api, &mqtt, extra);
        self.child = child;
        self.ready = ready;
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("cloud")
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("cloud")
            .arg("--data")
            .arg(self.data())
            .args(args)
            .env_remove("LICHEN_CLOUD_TOKEN")
            .output()
            .unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "lichen cloud {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn fails(&self, args: &[&str], needle: &str) {
        let out = self.cli(args);
        assert!(!out.status.success(), "lichen cloud {args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(needle),
            "lichen cloud {args:?}: {err:?} should name {needle:?}"
        );
    }

    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "cloud run exited with {status}");
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "cloud run did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RunningCloud {
    /// A test that panics still ends its cloud (whose inherited stderr would otherwise keep
    /// the test runner's output open).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
