//! Installing lichen as a service: `lichen core install|uninstall` on a scratch prefix (root
//! only: useradd --prefix), and the Debian package scripts/build-deb makes (its contents
//! always; `dpkg -i` / `--purge` on the real system only where that is allowed: as root with
//! LICHEN_TEST_DPKG=1, which scripts/test sets on CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::BIN;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn entry(prefix: &Path, file: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(prefix.join("etc").join(file))
        .unwrap_or_default()
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

/// `systemd-analyze verify` on a unit, where the tool exists.
fn verify_unit(unit: &Path) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: unit not verified");
        return;
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Only lines about our unit count (verify also lints unrelated system units it loads).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("lichen.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

#[test]
fn core_install_and_uninstall_on_a_scratch_prefix() {
    if !is_root() {
        eprintln!("skipped: lichen core install needs root (useradd --prefix)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().to_path_buf();
    let etc = prefix.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nlichen:x:990:\n").unwrap();
    std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(etc.join("gshadow"), "root:*::\nlichen:!::\n").unwrap();
    let install = |extra: &[&str]| {
        run(Command::new(BIN)
            .args(["core", "install", "--no-enable", "--prefix"])
            .arg(&prefix)
            .args(extra))
    };
    let out = install(&[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("created user ggc_user"), "{said}");
    // The admin group existed: left as it was, and not claimed as created.
    assert!(!said.contains("created group lichen"), "{said}");
    let user = entry(&prefix, "passwd", "ggc_user").expect("ggc_user created");
    let group = entry(&prefix, "group", "ggc_group").expect("ggc_group created");
    let gid = group.split(':').nth(2).unwrap();
    assert_eq!(user.split(':').nth(3), Some(gid), "{user} / {group}");
    assert!(user.ends_with("/usr/sbin/nologin"), "{user}");
    assert!(prefix.join("var/lib/lichen").is_dir());
    let unit = prefix.join("etc/systemd/system/lichen.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains(&format!("ExecStart={BIN} core run --root /var/lib/lichen")),
        "{text}"
    );
    for line in [
        "Restart=on-failure",
        "ProtectSystem=full",
        "PrivateTmp=yes",
        "KillMode=mixed",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing: {text}");
    }
    // Longer than a component's default Shutdown timeout (15 s) plus the kill grace (5 s).
    let stop: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stop > 20, "{stop}");
    verify_unit(&unit);
    // The default config is one `lichen check` accepts.
    let config = prefix.join("etc/lichen/config.yaml");
    let out = Command::new(BIN)
        .arg("--root")
        .arg(prefix.join("var/lib/lichen"))
        .args(["check", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"][0]["id"], "config");
    assert_eq!(report["checks"][0]["status"], "ok", "{report:#}");
    // A rerun changes nothing and keeps the record of what was created.
    std::fs::write(&config, "thingName: kept\n").unwrap();
    install(&[]);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "thingName: kept\n"
    );

    std::fs::write(prefix.join("var/lib/lichen/state"), "x").unwrap();
    run(Command::new(BIN)
        .args(["core", "uninstall", "--prefix"])
        .arg(&prefix));
    assert!(!unit.exists());
    assert!(entry(&prefix, "passwd", "ggc_user").is_none());
    assert!(entry(&prefix, "group", "ggc_group").is_none());
    assert!(
        entry(&prefix, "group", "lichen").is_some(),
        "a group it did not create stays"
    );
    assert!(
        prefix.join("var/lib/lichen/state").exists(),
        "state root kept"
    );
    assert!(config.exists(), "config kept");

    install(&[]);
    run(Command::new(BIN)
        .args(["core", "uninstall", "--purge", "--prefix"])
        .arg(&prefix));
    assert!(!prefix.join("var/lib/lichen").exists());
    assert!(!prefix.join("etc/lichen").exists());
    assert!(entry(&prefix, "passwd", "ggc_user").is_none());
}

#[test]
fn core_install_refuses_without_root() {
    if is_root() {
        // As root the refusal cannot be shown; the scratch-prefix test covers install.
        return;
    }
    let out = Command::new(BIN)
        .args(["core", "install", "--prefix", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs root"));
}

fn deb() -> Option<PathBuf> {
    match std::env::var_os("LICHEN_TEST_DEB") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "skipped: LICHEN_TEST_DEB is not set (scripts/test builds the package with scripts/build-deb --debug; cargo-deb may be missing)"
            );
            None
        }
    }
}

#[test]
fn the_debian_package_holds_the_service() {
    let Some(deb) = deb() else { return };
    let list = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let list = String::from_utf8_lossy(&list.stdout);
    for path in [
        "./usr/bin/lichen",
        "./usr/lib/systemd/system/lichen.service",
        "./etc/lichen/config.yaml",
        "./usr/share/bash-completion/completions/lichen",
        "./usr/share/zsh/vendor-completions/_lichen",
        "./usr/share/fish/vendor_completions.d/lichen.fish",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(path)),
            "{path} not in:\n{list}"
        );
    }
    let ctl = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctl.path()));
    let conffiles = std::fs::read_to_string(ctl.path().join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/lichen/config.yaml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(ctl.path().join("postinst")).unwrap();
    assert!(
        postinst.contains("useradd --system --gid ggc_group"),
        "{postinst}"
    );

    let allowed = is_root() && std::env::var("LICHEN_TEST_DPKG").as_deref() == Ok("1");
    if !allowed {
        eprintln!("skipped dpkg -i: needs root and LICHEN_TEST_DPKG=1 (it changes the system)");
        return;
    }
    let getent = |db: &str, name: &str| {
        Command::new("getent")
            .args([db, name])
            .output()
            .unwrap()
            .status
            .success()
    };
    if getent("passwd", "ggc_user") || Path::new("/var/lib/dpkg/info/lichen.list").exists() {
        eprintln!("skipped dpkg -i: ggc_user or the lichen package is already on this system");
        return;
    }
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let installed = || {
        assert!(getent("passwd", "ggc_user"));
        assert!(getent("group", "ggc_group"));
        assert!(getent("group", "lichen"));
        assert!(Path::new("/var/lib/lichen").is_dir());
        assert!(Path::new("/etc/lichen/config.yaml").is_file());
        verify_unit(Path::new("/usr/lib/systemd/system/lichen.service"));
        let out = Command::new("/usr/bin/lichen")
            .args([
                "--root",
                "/var/lib/lichen",
                "check",
                "--json",
                "--config",
                "/etc/lichen/config.yaml",
            ])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let user = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "component-user")
            .unwrap();
        assert_eq!(
            user["message"], "components run as ggc_user:ggc_group",
            "{user}"
        );
        // Removing keeps the state root.
        std::fs::write("/var/lib/lichen/kept", "x").unwrap();
        run(Command::new("dpkg").args(["--remove", "lichen"]));
        assert!(Path::new("/var/lib/lichen/kept").exists());
        assert!(!Path::new("/usr/bin/lichen").exists());
    };
    let result = std::panic::catch_unwind(installed);
    // Purge whatever happened, so the system is left as it was.
    run(Command::new("dpkg").args(["--purge", "lichen"]));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(!getent("passwd", "ggc_user"));
    assert!(!getent("group", "ggc_group"));
    assert!(!getent("group", "lichen"));
    assert!(!Path::new("/var/lib/lichen").exists());
    assert!(!Path::new("/etc/lichen").exists());
    assert!(!Path::new("/usr/lib/systemd/system/lichen.service").exists());
}
