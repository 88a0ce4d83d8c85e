//! Harness for integration tests: runs the real `lichen` binary on a temporary root.
#![allow(dead_code)]

pub mod cloud;
pub mod fleet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_lichen");

pub struct TestCore {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub child: Option<Child>,
}

impl TestCore {
    /// A core on a fresh root, running, with `config` (YAML) as its settings.
    pub fn start_with(config: &str) -> TestCore {
        Self::start_at("root", config)
    }

    /// Like [`TestCore::start_with`], with the root at `<tempdir>/<relative_root>`.
    pub fn start_at(relative_root: &str, config: &str) -> TestCore {
        Self::start_in(tempfile::tempdir().expect("tempdir"), relative_root, config)
    }

    /// Like [`TestCore::start_at`], in a temporary directory the test prepared (for example
    /// with a small filesystem mounted inside).
    pub fn start_in(dir: tempfile::TempDir, relative_root: &str, config: &str) -> TestCore {
        let root = dir.path().join(relative_root);
        std::fs::create_dir_all(&root).unwrap();
        // Components run as root explicitly unless the test names a user: as root, the
        // default user (ggc_user, else nobody) could reach neither this 0700 temporary root
        // nor the pinned Python under /root.
        let config = if config.contains("posixUser") {
            config.to_string()
        } else {
            format!("posixUser: root\n{config}")
        };
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let mut core = TestCore {
            dir,
            root,
            child: None,
        };
        core.spawn();
        core
    }

    pub fn start() -> TestCore {
        Self::start_with("thingName: test-thing\n")
    }

    /// (Re)starts the core process on the same root and waits until it answers.
    pub fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("core.stderr"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["core", "run", "--root"])
            .arg(&self.root)
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .env("LICHEN_LOG", "info,lichen_core=debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn lichen core run");
        self.child = Some(child);
        // Generous: under a loaded CI machine a debug core has taken over 20 s to answer.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.cli(&["component", "list", "--json"]);
            if out.status.success() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("core exited early with {status}: {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "core did not become ready: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("core.stderr")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .expect("run lichen")
    }

    /// Runs the CLI with `--json` and parses stdout; panics with the output on failure.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "lichen {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad JSON from {args:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Creates a deployment and waits for its end; returns the final record.
    pub fn deploy(&self, recipes: &Path, artifacts: Option<&Path>, extra: &[&str]) -> Value {
        let mut args: Vec<String> = vec![
            "deployment".into(),
            "create".into(),
            "--recipe-dir".into(),
            recipes.display().to_string(),
        ];
        if let Some(a) = artifacts {
            args.push("--artifact-dir".into());
            args.push(a.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("--json".into());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.cli(&argv);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad JSON from deployment create: {e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    pub fn component(&self, name: &str) -> Value {
        self.json(&["component", "details", name])
    }

    pub fn state(&self, name: &str) -> String {
        self.component(name)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Polls until `name` is in `state`.
    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.cli(&["component", "details", name, "--json"]);
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                if v["state"] == state {
                    return v;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} not {state} in time: {v}\n{}",
                    self.stderr()
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "{name} not found in time\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn work(&self, component: &str) -> PathBuf {
        self.root.join("work").join(component)
    }

    /// SIGTERM and wait (clean shutdown).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("core did not stop within 60s of SIGTERM");
        }
    }

    /// kill -9: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestCore {
    fn drop(&mut self) {
        if self.child.is_some() && !std::thread::panicking() {
            self.stop();
        } else if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            std::thread::sleep(Duration::from_millis(500));
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes `recipes` (file name, text) into a new directory under `base`.
pub fn recipe_dir(base: &Path, name: &str, recipes: &[(&str, &str)]) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in recipes {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

/// Polls `f` until true.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
