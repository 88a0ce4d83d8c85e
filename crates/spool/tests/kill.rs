//! kill -9 durability: a child process (this test binary re-executed) appends durably from
//! several threads and prints each seq once `append_durable` returned; the test kills it
//! with SIGKILL mid-stream and reopens: every printed seq must be there with its payload.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_spool::{FsyncPolicy, Record, Spool, SpoolConfig};

const CHILD_ENV: &str = "LICHEN_SPOOL_KILL_CHILD_DIR";

fn config(dir: std::path::PathBuf) -> SpoolConfig {
    let mut c = SpoolConfig::new(Some(dir), 256 << 20);
    c.segment_bytes = 64 * 1024; // many rotations while the child runs
    c.fsync = FsyncPolicy::GroupCommit {
        max_delay: Duration::from_millis(5),
    };
    c
}

fn payload(seq: u64) -> Vec<u8> {
    let mut p = seq.to_le_bytes().to_vec();
    p.resize(512, (seq % 241) as u8);
    p
}

/// The child's body; a no-op unless re-executed by `acked_appends_survive_kill_9`.
#[test]
fn kill_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spool = Arc::new(Spool::open(config(dir.into())).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let spool = spool.clone();
            std::thread::spawn(move || {
                loop {
                    // The seq is known only after the append, so every payload is the same
                    // 512 bytes and the parent checks each record's bytes against it.
                    let seq = spool
                        .append_durable(Record {
                            topic: "k".into(),
                            payload: payload(0),
                            qos: 1,
                            properties: vec![],
                        })
                        .unwrap();
                    println!("acked {seq}");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn acked_appends_survive_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_child_entry",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        let start = Instant::now();
        while acked.len() < 3000 && start.elapsed() < Duration::from_secs(20) {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(seq) = line.strip_prefix("acked ") {
                        acked.push(seq.parse::<u64>().unwrap());
                    }
                }
                _ => break,
            }
        }
        // SIGKILL while the threads are still appending.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Lines already in the pipe were acked too.
        for line in lines.map_while(Result::ok) {
            if let Some(seq) = line.strip_prefix("acked ") {
                acked.push(seq.parse::<u64>().unwrap());
            }
        }
        child.wait().unwrap();
        assert!(
            acked.len() >= 100,
            "round {round}: the child acked only {} appends",
            acked.len()
        );
        let spool = Spool::open(config(dir.path().to_path_buf())).unwrap();
        let mut present = std::collections::HashSet::new();
        let mut cursor = 0;
        loop {
            let batch = spool.read_from(cursor, 4096, 4 << 20).unwrap();
            let Some(last) = batch.last() else { break };
            cursor = last.seq + 1;
            for e in batch {
                assert_eq!(
                    e.record.payload,
                    payload(0),
                    "seq {} has a damaged payload",
                    e.seq
                );
                present.insert(e.seq);
            }
        }
        let missing: Vec<u64> = acked
            .iter()
            .copied()
            .filter(|s| !present.contains(s))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acked seqs lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        eprintln!(
            "round {round}: {} acked, {} present, stats {:?}",
            acked.len(),
            present.len(),
            spool.stats()
        );
    }
}
