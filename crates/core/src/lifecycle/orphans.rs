//! Process groups outliving a crashed core.
//!
//! A clean shutdown ends every group the core started. A kill -9 or power cut cannot, so each
//! group is recorded while it lives, and the next core ends the recorded groups that are still
//! there before starting components. A recorded pgid is only killed if its leader still
//! carries the component's marker in its environment, so a pid reused by an unrelated process
//! is left alone.
//!
//! The record is one append-only journal (`run/groups.journal`): a line `+<pgid> <component>`
//! when a group starts and `-<pgid>` when it ends. One append per launch costs no new inode;
//! a file per group (the earlier layout, `run/groups/<pgid>`, still read at start) cost a file
//! creation and a removal per launch, a visible part of a 400-component deployment. The
//! journal is rewritten with only the live groups once it exceeds [`COMPACT_AT_BYTES`], so its
//! size stays bounded by the number of running groups. It is not fsynced: it only matters
//! after a crash of the core with the machine still up, when the page cache has it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::signal::Signal;

use super::process;

/// Journal size beyond which it is rewritten with only the live groups.
pub const COMPACT_AT_BYTES: u64 = 64 * 1024;
/// Longest journal line read back (a component name is at most a few hundred bytes).
const MAX_LINE: usize = 1024;

pub struct GroupRegistry {
    journal_path: PathBuf,
    /// The directory of the earlier one-file-per-group layout, read (and emptied) at start.
    legacy_dir: PathBuf,
    state: Mutex<Journal>,
}

#[derive(Default)]
struct Journal {
    file: Option<File>,
    written: u64,
    live: BTreeMap<i32, String>,
}

impl GroupRegistry {
    /// `dir` is the run directory's `groups` path; the journal sits beside it.
    pub fn new(dir: PathBuf) -> Self {
        let journal_path = dir.with_extension("journal");
        if let Some(parent) = journal_path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        GroupRegistry {
            journal_path,
            legacy_dir: dir,
            state: Mutex::new(Journal::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn track(&self, pgid: i32, component: &str) {
        if pgid <= 0 {
            return;
        }
        // A name with a newline would break the line format; such names are refused by the
        // recipe parser, but never trust it here.
        let name: String = component.chars().filter(|c| !c.is_control()).collect();
        let mut j = self.lock();
        j.live.insert(pgid, name.clone());
        self.append(&mut j, &format!("+{pgid} {name}\n"));
    }

    /// Ends the group (SIGTERM, then SIGKILL) and forgets it.
    pub async fn terminate(&self, pgid: i32) {
        process::terminate_group(pgid).await;
        let mut j = self.lock();
        if j.live.remove(&pgid).is_some() {
            self.append(&mut j, &format!("-{pgid}\n"));
        }
    }

    fn append(&self, j: &mut Journal, line: &str) {
        if j.written >= COMPACT_AT_BYTES {
            self.compact(j);
        }
        if j.file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_path)
            {
                Ok(f) => {
                    j.written = f.metadata().map(|m| m.len()).unwrap_or(0);
                    j.file = Some(f);
                }
                Err(e) => {
                    tracing::warn!(path = %self.journal_path.display(), error = %e, "cannot record process group");
                    return;
                }
            }
        }
        if let Some(f) = j.file.as_mut() {
            match f.write_all(line.as_bytes()) {
                Ok(()) => j.written += line.len() as u64,
                Err(e) => tracing::warn!(error = %e, "cannot record process group"),
            }
        }
    }

    /// Rewrites the journal with the live groups only (atomically, so a crash keeps either).
    fn compact(&self, j: &mut Journal) {
        let body: String = j
            .live
            .iter()
            .map(|(pgid, name)| format!("+{pgid} {name}\n"))
            .collect();
        match lichen_sys::atomic::write_atomic(&self.journal_path, body.as_bytes(), 0o600) {
            Ok(()) => {
                j.file = None;
                j.written = body.len() as u64;
            }
            Err(e) => tracing::warn!(error = %e, "cannot compact the process-group journal"),
        }
    }

    /// Kills the groups a previous core left behind. Returns how many were killed.
    pub fn reap_leftovers(&self) -> usize {
        let mut recorded = read_journal(&self.journal_path);
        recorded.extend(read_legacy_dir(&self.legacy_dir));
        let mut killed = 0;
        for (pgid, component) in recorded {
            let marker = format!("LICHEN_COMPONENT_NAME={component}");
            let owned = std::fs::read(format!("/proc/{pgid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
                .unwrap_or(false);
            if owned && process::group_alive(pgid) {
                tracing::warn!(pgid, %component, "ending a process group left by a previous core");
                process::signal_group(pgid, Signal::SIGKILL);
                killed += 1;
            }
        }
        let _ = std::fs::remove_file(&self.journal_path);
        let _ = std::fs::remove_dir_all(&self.legacy_dir);
        *self.lock() = Journal::default();
        killed
    }
}

/// Replays the journal: the groups started and not ended. Malformed lines are skipped.
fn read_journal(path: &Path) -> BTreeMap<i32, String> {
    let mut live = BTreeMap::new();
    let Ok(bytes) = std::fs::read(path) else {
        return live;
    };
    for line in bytes.split(|b| *b == b'\n') {
        if line.len() > MAX_LINE {
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if let Some(rest) = line.strip_prefix('+') {
            if let Some((pgid, name)) = rest.split_once(' ')
                && let Ok(pgid) = pgid.parse::<i32>()
                && pgid > 0
            {
                live.insert(pgid, name.to_string());
            }
        } else if let Some(pgid) = line.strip_prefix('-').and_then(|p| p.parse::<i32>().ok()) {
            live.remove(&pgid);
        }
    }
    live
}

fn read_legacy_dir(dir: &Path) -> BTreeMap<i32, String> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        if let Some(pgid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        {
            found.insert(
                pgid,
                std::fs::read_to_string(entry.path()).unwrap_or_default(),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_replays_started_minus_ended_and_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("groups.journal");
        std::fs::write(
            &path,
            b"+10 a\n+11 b\n-10\nnonsense\n+x y\n+-3 z\n+12 c d\n",
        )
        .unwrap();
        let live = read_journal(&path);
        assert_eq!(
            live.into_iter().collect::<Vec<_>>(),
            vec![(11, "b".to_string()), (12, "c d".to_string())]
        );
    }

    #[test]
    fn tracking_appends_and_compaction_keeps_only_live_groups() {
        let dir = tempfile::tempdir().unwrap();
        let reg = GroupRegistry::new(dir.path().join("groups"));
        // pids that surely have no live group: terminate only signals them (ESRCH).
        let many = (COMPACT_AT_BYTES / 8) as i32;
        for pgid in 4_000_000..4_000_000 + many {
            reg.track(pgid, "com.example.A");
            reg.lock().live.remove(&pgid);
            let mut j = reg.lock();
            reg.append(&mut j, &format!("-{pgid}\n"));
        }
        reg.track(4_100_000, "com.example.Live");
        let size = std::fs::metadata(dir.path().join("groups.journal"))
            .unwrap()
            .len();
        assert!(size <= COMPACT_AT_BYTES + 64, "journal grew to {size}");
        let live = read_journal(&dir.path().join("groups.journal"));
        assert_eq!(
            live.get(&4_100_000).map(String::as_str),
            Some("com.example.Live")
        );
        assert_eq!(live.len(), 1);
    }

    #[test]
    fn legacy_files_are_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("groups");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(legacy.join("4200000"), "com.example.Old").unwrap();
        let reg = GroupRegistry::new(legacy.clone());
        assert_eq!(reg.reap_leftovers(), 0, "no live group has that pgid");
        assert!(!legacy.exists());
    }
}
