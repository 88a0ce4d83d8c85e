//! Process groups outliving a crashed core.
//!
//! A clean shutdown ends every group the core started. A kill -9 or power cut cannot, so each
//! group is recorded as `run/groups/<pgid>` (holding the component name) while it lives, and
//! the next core ends the recorded groups that are still there before starting components.
//! A recorded pgid is only killed if its leader still carries the component's marker in its
//! environment, so a pid reused by an unrelated process is left alone.

use std::path::PathBuf;

use nix::sys::signal::Signal;

use super::process;

pub struct GroupRegistry {
    dir: PathBuf,
}

impl GroupRegistry {
    pub fn new(dir: PathBuf) -> Self {
        let _ = std::fs::create_dir_all(&dir);
        GroupRegistry { dir }
    }

    pub fn track(&self, pgid: i32, component: &str) {
        if pgid > 0
            && let Err(e) = std::fs::write(self.dir.join(pgid.to_string()), component)
        {
            tracing::warn!(pgid, error = %e, "cannot record process group");
        }
    }

    /// Ends the group (SIGTERM, then SIGKILL) and forgets it.
    pub async fn terminate(&self, pgid: i32) {
        process::terminate_group(pgid).await;
        let _ = std::fs::remove_file(self.dir.join(pgid.to_string()));
    }

    /// Kills the groups a previous core left behind. Returns how many were killed.
    pub fn reap_leftovers(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut killed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(pgid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let component = std::fs::read_to_string(&path).unwrap_or_default();
            let marker = format!("LICHEN_COMPONENT_NAME={component}");
            let owned = std::fs::read(format!("/proc/{pgid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
                .unwrap_or(false);
            if owned && process::group_alive(pgid) {
                tracing::warn!(pgid, %component, "ending a process group left by a previous core");
                process::signal_group(pgid, Signal::SIGKILL);
                killed += 1;
            }
            let _ = std::fs::remove_file(&path);
        }
        killed
    }
}
