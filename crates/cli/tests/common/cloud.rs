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
        let mut child = Command::new(BIN)
            .args([
                "cloud",
                "run",
                "--json",
                "--api-listen",
                "127.0.0.1:0",
                "--mqtt-listen",
                "127.0.0.1:0",
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
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        assert_eq!(ready["ready"], true);
        RunningCloud { dir, child, ready }
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
