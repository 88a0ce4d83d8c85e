//! Running one lifecycle step as a process: its environment, user, working directory,
//! process group and output capture.
//!
//! Every step runs `sh -c <script>` in a new process group whose id is the child's pid, so
//! that stopping a component signals everything the script started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::logs::RotatingLog;

/// Longest line copied from a component's output into its log; longer lines are split.
pub const MAX_OUTPUT_LINE: usize = 64 * 1024;

/// Read buffer of each output stream of a step (tokio's default is 8 KiB).
const OUTPUT_READ_BUFFER: usize = 1024;

/// How long a process group gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Who a step runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<PathBuf>,
    pub name: String,
}

/// Greengrass's default component user and group, used when they exist.
pub const GREENGRASS_DEFAULT_USER: &str = "ggc_user";
pub const GREENGRASS_DEFAULT_GROUP: &str = "ggc_group";

/// The `user[:group]` components run as when the core is root and no `posixUser` is
/// configured: `ggc_user:ggc_group` when that user exists (as Greengrass does), else
/// `nobody:nogroup` — never root. A missing group falls back to the user's primary group.
/// `None` when neither user exists: the core then refuses to start components rather than
/// run them as root.
pub fn default_component_user() -> Option<String> {
    let group_exists = |g: &str| nix::unistd::Group::from_name(g).ok().flatten().is_some();
    for (user, group) in [
        (GREENGRASS_DEFAULT_USER, GREENGRASS_DEFAULT_GROUP),
        ("nobody", "nogroup"),
    ] {
        if User::from_name(user).ok().flatten().is_some() {
            return Some(if group_exists(group) {
                format!("{user}:{group}")
            } else {
                user.to_string()
            });
        }
    }
    None
}

/// Resolutions remembered by [`RunAs::resolve`] (spec → result), valid while `/etc/passwd`
/// and `/etc/group` keep the modification times they had. A 400-component deployment used
/// to read and parse both files (and nsswitch.conf) twice per component. At most
/// [`RUN_AS_CACHE`] specs are kept; beyond that the cache starts again.
static RESOLVED: std::sync::Mutex<Option<ResolvedUsers>> = std::sync::Mutex::new(None);
const RUN_AS_CACHE: usize = 64;

struct ResolvedUsers {
    stamp: (Option<std::time::SystemTime>, Option<std::time::SystemTime>),
    by_spec: std::collections::HashMap<String, RunAs>,
}

fn user_db_stamp() -> (Option<std::time::SystemTime>, Option<std::time::SystemTime>) {
    let mtime = |p: &str| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime("/etc/passwd"), mtime("/etc/group"))
}

impl RunAs {
    /// Resolves `user[:group]` (names or numeric ids). Successful resolutions are remembered
    /// until the user or group database changes.
    pub fn resolve(spec: &str) -> Result<RunAs, String> {
        let stamp = user_db_stamp();
        {
            let cache = RESOLVED.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.as_ref()
                && c.stamp == stamp
                && let Some(found) = c.by_spec.get(spec)
            {
                return Ok(found.clone());
            }
        }
        let resolved = Self::resolve_uncached(spec)?;
        let mut cache = RESOLVED.lock().unwrap_or_else(|p| p.into_inner());
        let c = cache.get_or_insert_with(|| ResolvedUsers {
            stamp,
            by_spec: Default::default(),
        });
        if c.stamp != stamp || c.by_spec.len() >= RUN_AS_CACHE {
            c.stamp = stamp;
            c.by_spec.clear();
        }
        c.by_spec.insert(spec.to_string(), resolved.clone());
        Ok(resolved)
    }

    fn resolve_uncached(spec: &str) -> Result<RunAs, String> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let found = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(nix::unistd::Uid::from_raw(uid)),
            Err(_) => User::from_name(user),
        }
        .map_err(|e| format!("looking up user {user:?}: {e}"))?;
        let (uid, default_gid, home, name) = match (found, user.parse::<u32>()) {
            (Some(u), _) => (u.uid.as_raw(), u.gid.as_raw(), Some(u.dir), u.name),
            (None, Ok(uid)) => (uid, uid, None, user.to_string()),
            (None, Err(_)) => return Err(format!("user {user:?} does not exist")),
        };
        let gid = match group {
            None => default_gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => nix::unistd::Group::from_name(g)
                    .map_err(|e| format!("looking up group {g:?}: {e}"))?
                    .ok_or_else(|| format!("group {g:?} does not exist"))?
                    .gid
                    .as_raw(),
            },
        };
        Ok(RunAs {
            uid,
            gid,
            home,
            name,
        })
    }
}

/// Everything needed to start one step.
pub struct StepCommand<'a> {
    pub component: &'a str,
    pub step: &'a str,
    pub script: &'a str,
    pub cwd: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    /// `None`: run as the core's own user.
    pub run_as: Option<&'a RunAs>,
    pub log: &'a RotatingLog,
}

/// Starts the step. Output goes to the component log, tagged with the step name.
pub fn spawn(cmd: StepCommand<'_>) -> std::io::Result<Child> {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(cmd.script)
        .current_dir(cmd.cwd)
        .envs(cmd.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(user) = cmd.run_as {
        command.uid(user.uid).gid(user.gid);
        command.env("USER", &user.name).env("LOGNAME", &user.name);
        if let Some(home) = &user.home {
            command.env("HOME", home);
        }
        // std drops the core's supplementary groups (setgroups(0)) before setuid.
    }
    let mut child = command.spawn()?;
    let tag_out = format!("{}:stdout", cmd.step);
    let tag_err = format!("{}:stderr", cmd.step);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(copy_lines(out, cmd.log.clone(), tag_out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(copy_lines(err, cmd.log.clone(), tag_err));
    }
    Ok(child)
}

async fn copy_lines(stream: impl AsyncRead + Unpin, log: RotatingLog, tag: String) {
    // Small: two of these live per running process; longer lines take more reads.
    let mut reader = BufReader::with_capacity(OUTPUT_READ_BUFFER, stream);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        // Lines are bounded by MAX_OUTPUT_LINE so a component printing without newlines
        // cannot grow this buffer without bound.
        match read_line_bounded(&mut reader, &mut buf).await {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                log.write_line(&tag, text.trim_end_matches(['\n', '\r']));
            }
            Err(_) => return,
        }
    }
}

async fn read_line_bounded<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(buf.len());
        }
        let room = MAX_OUTPUT_LINE.saturating_sub(buf.len());
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) if i < room => (i + 1, true),
            _ if available.len() >= room => (room, true),
            _ => (available.len(), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(buf.len());
        }
    }
}

/// Sends `signal` to a whole process group; a group that is already gone is not an error.
pub fn signal_group(pgid: i32, signal: Signal) {
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Whether any live (non-zombie) process is still in the group.
///
/// `kill(-pgid, 0)` alone is not enough: it succeeds while zombies remain, and in containers
/// whose init does not reap, reparented zombies remain forever. So `/proc` is consulted.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 0 || killpg(Pid::from_raw(pgid), None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the command name (which may contain spaces and parentheses).
                let rest = &stat[stat.rfind(')')? + 2..];
                let mut fields = rest.split_whitespace();
                let state = fields.next()?;
                let pgrp: i32 = fields.nth(1)?.parse().ok()?;
                Some(pgrp == pgid && state != "Z" && state != "X")
            })
            .unwrap_or(false)
    })
}

/// SIGTERM, then SIGKILL after [`TERM_GRACE`] if anything of the group is left.
pub async fn terminate_group(pgid: i32) {
    if !group_alive(pgid) {
        return;
    }
    signal_group(pgid, Signal::SIGCONT);
    signal_group(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + TERM_GRACE;
    while tokio::time::Instant::now() < deadline {
        if !group_alive(pgid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pgid, Signal::SIGKILL);
}

/// Greengrass `Skipif`: `onpath <exe>` or `exists <file>`.
pub fn should_skip(skip: &lichen_recipe::SkipIf, env_path: Option<&str>) -> bool {
    match skip {
        lichen_recipe::SkipIf::OnPath(exe) => {
            let path = env_path
                .map(str::to_string)
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_default();
            std::env::split_paths(&path).any(|dir| is_executable(&dir.join(exe)))
        }
        lichen_recipe::SkipIf::Exists(file) => Path::new(file).exists(),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipif_checks_path_and_files() {
        assert!(should_skip(
            &lichen_recipe::SkipIf::OnPath("sh".into()),
            Some("/bin:/usr/bin")
        ));
        assert!(!should_skip(
            &lichen_recipe::SkipIf::OnPath("definitely-not-a-command-xyz".into()),
            Some("/bin:/usr/bin")
        ));
        assert!(should_skip(
            &lichen_recipe::SkipIf::Exists("/".into()),
            None
        ));
        assert!(!should_skip(
            &lichen_recipe::SkipIf::Exists("/nonexistent/xyz".into()),
            None
        ));
    }

    #[test]
    fn resolves_users_by_name_and_id() {
        let root = RunAs::resolve("root").unwrap();
        assert_eq!(root.uid, 0);
        assert_eq!(RunAs::resolve("0:0").unwrap().gid, 0);
        assert!(RunAs::resolve("no-such-user-lichen").is_err());
    }

    #[tokio::test]
    async fn spawned_step_logs_output_and_runs_in_own_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = RotatingLog::open(&dir.path().join("c.log"), 1 << 20, 2).unwrap();
        let env = BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
        let mut child = spawn(StepCommand {
            component: "c",
            step: "run",
            script: "echo $GREETING; echo oops >&2; sleep 0.1",
            cwd: dir.path(),
            env: &env,
            run_as: None,
            log: &log,
        })
        .unwrap();
        let pid = child.id().unwrap() as i32;
        assert_eq!(
            nix::unistd::getpgid(Some(Pid::from_raw(pid)))
                .unwrap()
                .as_raw(),
            pid
        );
        assert!(child.wait().await.unwrap().success());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read_to_string(dir.path().join("c.log")).unwrap();
        assert!(text.contains("[run:stdout] hello"), "{text}");
        assert!(text.contains("[run:stderr] oops"), "{text}");
    }

    #[tokio::test]
    async fn terminate_group_kills_grandchildren() {
        let dir = tempfile::tempdir().unwrap();
        let log = RotatingLog::open(&dir.path().join("c.log"), 1 << 20, 2).unwrap();
        let env = BTreeMap::new();
        let mut child = spawn(StepCommand {
            component: "c",
            step: "run",
            script: "sleep 30 & sleep 30",
            cwd: dir.path(),
            env: &env,
            run_as: None,
            log: &log,
        })
        .unwrap();
        let pgid = child.id().unwrap() as i32;
        tokio::time::sleep(Duration::from_millis(100)).await;
        terminate_group(pgid).await;
        let _ = child.wait().await;
        assert!(!group_alive(pgid));
    }
}
