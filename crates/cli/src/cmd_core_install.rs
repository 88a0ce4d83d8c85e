//! `lichen core install` / `lichen core uninstall`: what the Debian package does, on a machine
//! without it — the systemd unit, the component user and group (`ggc_user:ggc_group`), the
//! admin group (`lichen`), `/etc/lichen` (with a default `config.yaml`) and the state root.
//!
//! `--prefix DIR` puts everything under DIR, users and groups included (`useradd --prefix`
//! edits DIR/etc/passwd): tests and image builders use it. What install created is recorded in
//! `<prefix>/etc/lichen/install.json`, so uninstall removes only that (a `ggc_user` that was
//! there before stays). Uninstall keeps the configuration and the state root unless `--purge`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The unit and the default config the package ships (one source for both ways).
pub const UNIT: &str = include_str!("../../../packaging/lichen.service");
pub const DEFAULT_CONFIG: &str = include_str!("../../../packaging/config.yaml");
const COMPONENT_USER: &str = "ggc_user";
const COMPONENT_GROUP: &str = "ggc_group";
const ADMIN_GROUP: &str = "lichen";

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Install under DIR instead of / (users and groups in DIR/etc/passwd and DIR/etc/group).
    #[arg(long, value_name = "DIR", default_value = "/")]
    prefix: PathBuf,
    /// Where the unit goes (default: <prefix>/etc/systemd/system).
    #[arg(long, value_name = "DIR")]
    unit_dir: Option<PathBuf>,
    /// The binary the unit starts (default: this one).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Do not run `systemctl daemon-reload` and `enable` (they never run with --prefix).
    #[arg(long)]
    no_enable: bool,
}

#[derive(clap::Args)]
pub struct UninstallArgs {
    #[arg(long, value_name = "DIR", default_value = "/")]
    prefix: PathBuf,
    #[arg(long, value_name = "DIR")]
    unit_dir: Option<PathBuf>,
    /// Also remove /etc/lichen and the state root /var/lib/lichen (every component's state).
    #[arg(long)]
    purge: bool,
}

/// What install created (so uninstall leaves what was there before).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    unit: PathBuf,
    users: Vec<String>,
    groups: Vec<String>,
}

struct Paths {
    prefix: PathBuf,
    unit_dir: PathBuf,
    etc: PathBuf,
    state: PathBuf,
}

impl Paths {
    fn new(prefix: &Path, unit_dir: Option<&Path>) -> anyhow::Result<Paths> {
        let prefix = std::path::absolute(prefix)
            .with_context(|| format!("resolving {}", prefix.display()))?;
        Ok(Paths {
            unit_dir: unit_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| prefix.join("etc/systemd/system")),
            etc: prefix.join("etc/lichen"),
            state: prefix.join("var/lib/lichen"),
            prefix,
        })
    }

    fn is_system(&self) -> bool {
        self.prefix == Path::new("/")
    }

    fn manifest(&self) -> PathBuf {
        self.etc.join("install.json")
    }

    /// `useradd`/`groupadd` arguments that point them at the prefix's /etc.
    fn prefix_args(&self) -> Vec<String> {
        if self.is_system() {
            Vec::new()
        } else {
            vec!["--prefix".into(), self.prefix.display().to_string()]
        }
    }

    /// Whether NAME is in the prefix's `etc/passwd` (`file` = passwd) or `etc/group`.
    fn has_entry(&self, file: &str, name: &str) -> anyhow::Result<bool> {
        let path = self.prefix.join("etc").join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(text.lines().any(|l| l.split(':').next() == Some(name)))
    }
}

fn run_tool(program: &str, args: &[String]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is the passwd package installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("lichen core install needs root (it creates users, groups and a systemd unit)");
    }
    let paths = Paths::new(&args.prefix, args.unit_dir.as_deref())?;
    let mut manifest = Manifest::default();
    let extra = paths.prefix_args();
    for group in [COMPONENT_GROUP, ADMIN_GROUP] {
        if !paths.has_entry("group", group)? {
            run_tool(
                "groupadd",
                &[extra.clone(), vec!["--system".into(), group.into()]].concat(),
            )?;
            manifest.groups.push(group.into());
            println!("created group {group}");
        }
    }
    if !paths.has_entry("passwd", COMPONENT_USER)? {
        let user_args: Vec<String> = [
            "--system",
            "--gid",
            COMPONENT_GROUP,
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            COMPONENT_USER,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run_tool("useradd", &[extra.clone(), user_args].concat())?;
        manifest.users.push(COMPONENT_USER.into());
        println!("created user {COMPONENT_USER}:{COMPONENT_GROUP}");
    }
    for dir in [&paths.etc, &paths.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        set_mode(dir, 0o755)?;
    }
    let config = paths.etc.join("config.yaml");
    if !config.exists() {
        lichen_sys::atomic::write_atomic(&config, DEFAULT_CONFIG.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", config.display()))?;
        set_mode(&config, 0o644)?;
        println!("wrote {}", config.display());
    }
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe().context("finding this binary's path")?,
    };
    let unit_text = UNIT.replace(
        "ExecStart=/usr/bin/lichen ",
        &format!("ExecStart={} ", binary.display()),
    );
    std::fs::create_dir_all(&paths.unit_dir)
        .with_context(|| format!("creating {}", paths.unit_dir.display()))?;
    let unit = paths.unit_dir.join("lichen.service");
    lichen_sys::atomic::write_atomic(&unit, unit_text.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", unit.display()))?;
    set_mode(&unit, 0o644)?;
    println!("wrote {}", unit.display());
    manifest.unit = unit;
    // Merge with an earlier install's record: a rerun creates nothing new but must not forget.
    if let Ok(text) = std::fs::read_to_string(paths.manifest())
        && let Ok(old) = serde_json::from_str::<Manifest>(&text)
    {
        manifest.users.extend(old.users);
        manifest.groups.extend(old.groups);
    }
    let text = serde_json::to_vec_pretty(&manifest)?;
    lichen_sys::atomic::write_atomic(&paths.manifest(), &text, 0o644)
        .with_context(|| format!("writing {}", paths.manifest().display()))?;
    if paths.is_system() && !args.no_enable && systemd_running() {
        run_tool("systemctl", &["daemon-reload".into()])?;
        run_tool("systemctl", &["enable".into(), "lichen.service".into()])?;
        println!("enabled lichen.service; start it with: systemctl start lichen");
    } else {
        println!("start it with: systemctl daemon-reload && systemctl enable --now lichen");
    }
    println!("then: lichen check");
    Ok(ExitCode::SUCCESS)
}

pub fn uninstall(args: UninstallArgs) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("lichen core uninstall needs root");
    }
    let paths = Paths::new(&args.prefix, args.unit_dir.as_deref())?;
    let manifest: Manifest = match std::fs::read_to_string(paths.manifest()) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("{}: not an install record", paths.manifest().display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
            unit: paths.unit_dir.join("lichen.service"),
            ..Manifest::default()
        },
        Err(e) => return Err(e).with_context(|| format!("reading {}", paths.manifest().display())),
    };
    if paths.is_system() && systemd_running() {
        // Stops the core first (its components get their Shutdown steps).
        let _ = run_tool(
            "systemctl",
            &["disable".into(), "--now".into(), "lichen.service".into()],
        );
    }
    match std::fs::remove_file(&manifest.unit) {
        Ok(()) => println!("removed {}", manifest.unit.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", manifest.unit.display())),
    }
    if paths.is_system() && systemd_running() {
        let _ = run_tool("systemctl", &["daemon-reload".into()]);
    }
    let extra = paths.prefix_args();
    for user in &manifest.users {
        if paths.has_entry("passwd", user)? {
            run_tool("userdel", &[extra.clone(), vec![user.clone()]].concat())?;
            println!("removed user {user}");
        }
    }
    for group in &manifest.groups {
        if paths.has_entry("group", group)? {
            run_tool("groupdel", &[extra.clone(), vec![group.clone()]].concat())?;
            println!("removed group {group}");
        }
    }
    let _ = std::fs::remove_file(paths.manifest());
    if args.purge {
        for dir in [&paths.etc, &paths.state] {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => println!("removed {}", dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
            }
        }
    } else {
        println!(
            "kept {} and the state root {} (--purge removes them)",
            paths.etc.display(),
            paths.state.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}
