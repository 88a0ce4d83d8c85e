//! The core's log formats: `--log-format json` gives JSON lines in the log file and on stderr,
//! and under systemd (JOURNAL_STREAM naming our stderr) stderr lines carry syslog priorities
//! and no timestamp; `logging.format` in the config does the same as the flag.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{BIN, eventually};

fn start(dir: &Path, config: &str, extra: &[&str], journal: bool) -> Child {
    std::fs::write(
        dir.join("config.yaml"),
        format!("posixUser: root\n{config}"),
    )
    .unwrap();
    let stderr_path = dir.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(extra)
        .args(["core", "run", "--root"])
        .arg(dir.join("root"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .env_remove("LICHEN_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(stderr);
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    cmd.spawn().unwrap()
}

fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

fn ready(dir: &Path) -> String {
    let log = dir.join("root/logs/lichen.log");
    eventually("the core is ready", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("lichen core ready"))
    });
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn json_lines_from_the_flag_and_from_the_config() {
    for (config, flag) in [
        ("", &["--log-format", "json"][..]),
        ("logging:\n  format: json\n", &[][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let child = start(dir.path(), config, flag, false);
        let log = ready(dir.path());
        stop(child);
        let mut saw_ready = false;
        for line in log.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string(),
                "{line}"
            );
            saw_ready |= v["fields"]["message"] == "lichen core ready";
        }
        assert!(saw_ready, "{log}");
        let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
        assert!(
            stderr.lines().next().is_some_and(|l| l.starts_with('{')),
            "{stderr}"
        );
    }
}

#[test]
fn under_systemd_stderr_lines_carry_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let child = start(dir.path(), "", &[], true);
    let log = ready(dir.path());
    stop(child);
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let ready_line = stderr
        .lines()
        .find(|l| l.contains("lichen core ready"))
        .unwrap_or_else(|| panic!("{stderr}"));
    // INFO is priority 6; the journal stamps the time, so the line has none of its own.
    assert!(
        ready_line.starts_with("<6> INFO") || ready_line.starts_with("<6>INFO"),
        "{ready_line}"
    );
    assert!(stderr.lines().all(|l| l.starts_with('<')), "{stderr}");
    // The file keeps its timestamps.
    let file_line = log
        .lines()
        .find(|l| l.contains("lichen core ready"))
        .unwrap();
    assert!(file_line.starts_with("20"), "{file_line}");
}

#[test]
fn an_unknown_log_format_is_refused() {
    let out = Command::new(BIN)
        .args(["--log-format", "xml", "core", "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("xml"));
}
