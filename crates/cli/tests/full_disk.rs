//! A component that fills the root's filesystem can still be removed through lichen, and
//! `lichen core status` reports the disk state. Runs on a small tmpfs (needs root to mount).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{TestCore, eventually, recipe_dir};
use serde_json::Value;

/// Unmounts the test filesystem when dropped (after the core, declared later, has stopped).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

const FILLER: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.test.Filler
ComponentVersion: "1.0.0"
Manifests:
  - Platform: { os: linux }
    Lifecycle:
      Run: "dd if=/dev/zero of=fill bs=64k 2>/dev/null; touch filled; exec sleep 300"
"#;

fn disk(core: &TestCore) -> Value {
    let status = core.json(&["core", "status"]);
    status["disk"].clone()
}

#[test]
fn a_component_that_filled_the_disk_can_be_removed_and_status_shows_the_disk() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mountpoint = dir.path().join("disk");
    std::fs::create_dir_all(&mountpoint).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=12m"])
        .arg("tmpfs")
        .arg(&mountpoint)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let _unmount = Mounted(mountpoint.clone());
    // Recipes live outside the small filesystem.
    let recipes = recipe_dir(dir.path(), "recipes", &[("filler.yaml", FILLER)]);
    let core = TestCore::start_in(dir, "disk/root", "thingName: full-disk\n");

    let before = disk(&core);
    assert!(before["freeBytes"].as_u64().unwrap() > 0, "{before}");
    assert_eq!(before["reserveHeld"], true, "{before}");
    assert!(before["warning"].is_null(), "{before}");

    let d = core.deploy(&recipes, None, &["-m", "com.test.Filler=1.0.0"]);
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    let work = core.work("com.test.Filler");
    eventually(
        "the component filled the disk",
        Duration::from_secs(20),
        || work.join("filled").exists(),
    );
    let full = disk(&core);
    assert!(full["freeBytes"].as_u64().unwrap() < 128 * 1024, "{full}");
    let warning = full["warning"].as_str().unwrap_or_default().to_string();
    assert!(
        warning.contains("full") || warning.contains("low"),
        "{full}"
    );
    let human = String::from_utf8_lossy(&core.cli(&["core", "status"]).stdout).to_string();
    assert!(
        human.contains("Disk:") && human.contains("Warning:"),
        "{human}"
    );

    // The removal writes a record, markers, the configuration and the installed set.
    let out = core.cli(&[
        "deployment",
        "create",
        "--remove",
        "com.test.Filler",
        "--json",
    ]);
    let removed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "removal on a full disk failed: {e}\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            core.stderr()
        )
    });
    assert_eq!(
        removed["status"],
        "SUCCEEDED",
        "{removed}\n{}",
        core.stderr()
    );
    assert!(
        !work.exists(),
        "the removed component's work directory is gone"
    );
    let after = disk(&core);
    assert!(
        after["freeBytes"].as_u64().unwrap() > 4 * 1024 * 1024,
        "the space came back: {after}"
    );
    assert_eq!(
        after["reserveHeld"], true,
        "the reserve is written again: {after}"
    );
    assert!(after["warning"].is_null(), "{after}");
}
