//! Checks of the host: the config file, the state root, the clock, cgroups and the component
//! user. None of them needs the core to be running.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lichen_core::paths::RootLayout;
use lichen_core::reserve::{LOW_SPACE_BYTES, LOW_SPACE_FRACTION};
use lichen_core::settings::Settings;

use super::Check;

/// Below this the core cannot stage a deployment or keep its space reserve: an error.
pub const CRITICAL_FREE_BYTES: u64 = 16 * 1024 * 1024;
/// Below this many free inodes new files (logs, records, artifacts) soon fail: an error.
pub const CRITICAL_FREE_INODES: u64 = 1_000;
/// A clock before this year is unset (no RTC, no NTP yet): certificates will not verify.
pub const EARLIEST_SANE_YEAR: i64 = 2025;
pub const LATEST_SANE_YEAR: i64 = 2100;

/// `config`: the file parses, every key is known (the broker's section too), the paths it
/// names exist. Returns the settings for the checks that need them.
pub fn config(path: Option<&Path>) -> (Check, Option<Settings>) {
    const ID: &str = "config";
    let Some(path) = path else {
        return (
            Check::ok(ID, "no config file: the defaults apply"),
            Some(Settings::default()),
        );
    };
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(e) => {
            return (
                Check::error(
                    ID,
                    e.to_string(),
                    format!(
                        "fix {} (keys are camelCase, as in Greengrass; the message names the one at fault)",
                        path.display()
                    ),
                ),
                None,
            );
        }
    };
    if let Some(section) = settings.broker.clone()
        && let Err(e) = serde_json::from_value::<lichen_broker::config::BrokerConfig>(section)
    {
        return (
            Check::error(
                ID,
                format!("{}: broker: {e}", path.display()),
                "fix the broker section (listeners, tls, limits …)",
            ),
            None,
        );
    }
    if !matches!(settings.logging.format.as_str(), "" | "text" | "json") {
        return (
            Check::error(
                ID,
                format!(
                    "{}: logging.format: {:?} is not \"text\" or \"json\"",
                    path.display(),
                    settings.logging.format
                ),
                "set logging.format to text or json",
            ),
            None,
        );
    }
    (
        Check::ok(
            ID,
            format!(
                "{} parses, no unknown keys (thing {})",
                path.display(),
                settings.thing_name
            ),
        ),
        Some(settings),
    )
}

/// `state-root.permissions`, `state-root.disk`, `state-root.inodes`.
// statvfs counts are 32-bit on some 32-bit targets: `u64::from` is not useless there.
#[allow(clippy::useless_conversion)]
pub fn state_root(root: &Path) -> Vec<Check> {
    let mut checks = vec![root_permissions(root)];
    // Space is measured where the root is, or would be created.
    let mut at: PathBuf = root.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
            _ => {
                at = PathBuf::from("/");
                break;
            }
        }
    }
    match nix::sys::statvfs::statvfs(&at) {
        Ok(s) => {
            checks.push(disk(
                &at,
                // u64::from: these are 32-bit on some 32-bit targets (armhf gateways).
                u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())),
                u64::from(s.blocks()).saturating_mul(u64::from(s.fragment_size())),
            ));
            checks.push(inodes(
                &at,
                u64::from(s.files_available()),
                u64::from(s.files()),
            ));
        }
        Err(e) => {
            let message = format!("statvfs {}: {e}", at.display());
            checks.push(Check::error(
                "state-root.disk",
                message.clone(),
                "is the filesystem mounted?",
            ));
            checks.push(Check::error(
                "state-root.inodes",
                message,
                "is the filesystem mounted?",
            ));
        }
    }
    checks
}

fn root_permissions(root: &Path) -> Check {
    const ID: &str = "state-root.permissions";
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::warning(
                ID,
                format!("{} does not exist yet", root.display()),
                "the core creates it at its first start; `lichen core install` creates it too",
            );
        }
        Err(e) => {
            return Check::error(
                ID,
                format!("{}: {e}", root.display()),
                "run lichen check as root or a member of the admin group",
            );
        }
    };
    if !meta.is_dir() {
        return Check::error(
            ID,
            format!("{} is not a directory", root.display()),
            "move it away; the state root is a directory",
        );
    }
    let mut problems = Vec::new();
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o002 != 0 {
        problems.push(format!(
            "{} is writable by every user (mode {mode:04o})",
            root.display()
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        problems.push(format!(
            "{} is owned by uid {}, neither root nor the user running this check ({me})",
            root.display(),
            meta.uid()
        ));
    }
    // Keys must stay private: the identity fleet provisioning stored.
    let layout = RootLayout::new(root);
    let key = layout.root().join("cloud/identity/thing.private.key");
    if let Some(p) = private_file_problem(&key) {
        problems.push(p);
    }
    if problems.is_empty() {
        Check::ok(
            ID,
            format!(
                "{} (mode {mode:04o}, owner uid {})",
                root.display(),
                meta.uid()
            ),
        )
    } else {
        Check::error(
            ID,
            problems.join("; "),
            format!(
                "chmod 0755 {root} && chown root {root} (keys: chmod 0600)",
                root = root.display()
            ),
        )
    }
}

/// A key file readable by others than its owner, described; `None` when fine or absent.
pub fn private_file_problem(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is readable by others than its owner (mode {mode:04o}, want 0600)",
            path.display()
        )
    })
}

fn human_bytes(b: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if b >= 1024 * MIB {
        format!("{:.1} GiB", b as f64 / (1024 * MIB) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    }
}

fn disk(at: &Path, free: u64, total: u64) -> Check {
    const ID: &str = "state-root.disk";
    let message = format!(
        "{} free of {} on the filesystem of {}",
        human_bytes(free),
        human_bytes(total),
        at.display()
    );
    let hint = "free space there (old logs in logs/, unused components: lichen deployment create --remove …) or grow the filesystem";
    if free < CRITICAL_FREE_BYTES {
        Check::error(
            ID,
            format!("{message}: below {}", human_bytes(CRITICAL_FREE_BYTES)),
            hint,
        )
    } else if free < LOW_SPACE_BYTES.min(total / LOW_SPACE_FRACTION) {
        // The core's own rule (`core status`): below 64 MiB or 10 %, whichever is smaller.
        Check::warning(ID, format!("{message}: running low"), hint)
    } else {
        Check::ok(ID, message)
    }
}

fn inodes(at: &Path, free: u64, total: u64) -> Check {
    const ID: &str = "state-root.inodes";
    if total == 0 {
        // btrfs and some FUSE filesystems allocate inodes dynamically and report none.
        return Check::ok(
            ID,
            format!("the filesystem of {} does not count inodes", at.display()),
        );
    }
    let message = format!(
        "{free} of {total} inodes free on the filesystem of {}",
        at.display()
    );
    let hint = "remove many small files there, or recreate the filesystem with more inodes";
    if free < CRITICAL_FREE_INODES {
        Check::error(ID, message, hint)
    } else if free < total / 20 {
        Check::warning(ID, format!("{message}: running low"), hint)
    } else {
        Check::ok(ID, message)
    }
}

/// `clock`: a sane year, and NTP synchronisation where `timedatectl` can tell.
pub fn clock() -> Check {
    const ID: &str = "clock";
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (year, _, _) = lichen_sys::time::civil_from_days(secs.div_euclid(86_400));
    let now = lichen_sys::time::format_rfc3339_millis(SystemTime::now());
    if !(EARLIEST_SANE_YEAR..=LATEST_SANE_YEAR).contains(&year) {
        return Check::error(
            ID,
            format!("the clock says {now}: certificates will not verify"),
            "set the time (timedatectl set-ntp true, or date -s) and give the device an RTC or NTP",
        );
    }
    match ntp_synchronized() {
        Some(true) => Check::ok(ID, format!("{now}, NTP-synchronised")),
        Some(false) => Check::warning(
            ID,
            format!("{now}, not NTP-synchronised"),
            "enable time synchronisation (timedatectl set-ntp true; systemd-timesyncd or chrony)",
        ),
        None => Check::ok(
            ID,
            format!("{now} (NTP state unknown: timedatectl cannot tell here)"),
        ),
    }
}

/// `timedatectl show -p NTPSynchronized --value`, within 3 s; `None` when it is missing or
/// cannot talk to timedated (containers).
fn ntp_synchronized() -> Option<bool> {
    let answer = super::probe::with_timeout(Duration::from_secs(3), || {
        std::process::Command::new("timedatectl")
            .args(["show", "-p", "NTPSynchronized", "--value"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
    })??;
    if !answer.status.success() {
        return None;
    }
    match String::from_utf8_lossy(&answer.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// `cgroup`: the version mounted at `root` and whether the core can apply resource limits.
pub fn cgroup(root: &Path) -> Check {
    const ID: &str = "cgroup";
    let controllers = match std::fs::read_to_string(root.join("cgroup.controllers")) {
        Ok(c) => c,
        Err(_) if root.join("memory").is_dir() || root.join("cpu").is_dir() => {
            return Check::warning(
                ID,
                format!(
                    "cgroup v1 at {}: resource limits (memory, cpus) do not apply",
                    root.display()
                ),
                "boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1) to get limits",
            );
        }
        Err(_) => {
            return Check::warning(
                ID,
                format!(
                    "no cgroup filesystem at {}: resource limits do not apply",
                    root.display()
                ),
                "mount cgroup2 at /sys/fs/cgroup to get limits",
            );
        }
    };
    let missing: Vec<&str> = ["memory", "cpu"]
        .into_iter()
        .filter(|c| !controllers.split_whitespace().any(|x| x == *c))
        .collect();
    if !missing.is_empty() {
        return Check::warning(
            ID,
            format!(
                "cgroup v2, but the {} controller(s) are not available: limits do not apply",
                missing.join(", ")
            ),
            "enable the controllers in the parent cgroup (Delegate= in the unit)",
        );
    }
    // The core creates <root>/lichen; it needs write access (root, a delegated subtree).
    let base = root.join("lichen");
    let target = if base.is_dir() { base.as_path() } else { root };
    match nix::unistd::access(target, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => Check::ok(
            ID,
            format!(
                "cgroup v2 with memory and cpu: limits apply ({})",
                target.display()
            ),
        ),
        Err(e) => Check::warning(
            ID,
            format!(
                "cgroup v2, but {} is not writable ({e}): limits do not apply",
                target.display()
            ),
            "run the core as root, or delegate a cgroup subtree to it (Delegate=yes)",
        ),
    }
}

/// `component-user`: the user components run as exists (`posixUser`, else `ggc_user`).
pub fn component_user(settings: Option<&Settings>, core_is_root: bool) -> Check {
    const ID: &str = "component-user";
    let Some(settings) = settings else {
        return Check::warning(
            ID,
            "not checked: the config does not parse",
            "fix the config first",
        );
    };
    let spec = settings.posix_user.trim();
    if spec.is_empty() {
        if !core_is_root {
            return Check::ok(
                ID,
                "components run as the core's own user (the core is not root)",
            );
        }
        let ggc = user_exists("ggc_user") && group_exists("ggc_group");
        if ggc {
            return Check::ok(ID, "components run as ggc_user:ggc_group");
        }
        if user_exists("nobody") {
            return Check::warning(
                ID,
                "ggc_user:ggc_group does not exist: components run as nobody",
                "lichen core install (or the Debian package) creates ggc_user:ggc_group; recipes expecting it need it",
            );
        }
        return Check::error(
            ID,
            "neither ggc_user:ggc_group nor nobody exists: components cannot start",
            "lichen core install creates ggc_user:ggc_group, or set posixUser",
        );
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if !user_exists(user) {
        return Check::error(
            ID,
            format!("posixUser {spec:?}: no user {user:?} on this system"),
            format!("create it (useradd --system {user}) or change posixUser in the config"),
        );
    }
    if let Some(g) = group.filter(|g| !g.is_empty())
        && !group_exists(g)
    {
        return Check::error(
            ID,
            format!("posixUser {spec:?}: no group {g:?} on this system"),
            format!("create it (groupadd --system {g}) or change posixUser in the config"),
        );
    }
    Check::ok(ID, format!("components run as {spec}"))
}

fn user_exists(name: &str) -> bool {
    if let Ok(uid) = name.parse::<u32>() {
        return matches!(
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
            Ok(Some(_))
        );
    }
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

fn group_exists(name: &str) -> bool {
    if let Ok(gid) = name.parse::<u32>() {
        return matches!(
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
            Ok(Some(_))
        );
    }
    matches!(nix::unistd::Group::from_name(name), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn disk_thresholds() {
        let at = Path::new("/x");
        assert_eq!(disk(at, 1024, 1 << 40).status, Status::Error);
        assert_eq!(disk(at, 50 << 20, 1 << 40).status, Status::Warning);
        // 10 % of a large disk is still plenty: the smaller bound applies.
        assert_eq!(disk(at, 100 << 20, 1 << 40).status, Status::Ok);
        assert_eq!(disk(at, 18 << 20, 200 << 20).status, Status::Warning);
        assert_eq!(disk(at, 200 << 30, 1 << 40).status, Status::Ok);
        assert_eq!(inodes(at, 10, 1_000_000).status, Status::Error);
        assert_eq!(inodes(at, 0, 0).status, Status::Ok);
    }

    #[test]
    fn a_missing_posix_user_is_an_error() {
        let s = Settings {
            posix_user: "no-such-user-lichen:nogroup".into(),
            ..Settings::default()
        };
        let c = component_user(Some(&s), true);
        assert_eq!(c.status, Status::Error, "{c:?}");
        assert!(c.message.contains("no-such-user-lichen"));
    }
}
