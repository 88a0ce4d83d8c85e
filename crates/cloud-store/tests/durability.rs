//! kill -9 durability of the SQLite backend: a child process writes and prints each write the
//! store acknowledged; the parent SIGKILLs it mid-stream, reopens the file and must find every
//! acknowledged write.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use lichen_cloud_store::{Backend, NewThing, ShadowRecord, Store};
use serde_json::json;

const CHILD_ENV: &str = "LICHEN_STORE_DURABILITY_CHILD_DIR";
/// Acknowledgements the parent waits for before the kill.
const ACKS_BEFORE_KILL: usize = 150;

/// The writer half: only does something when the parent re-runs this binary with
/// `CHILD_ENV` set; in a normal run it returns at once.
#[tokio::test]
async fn durability_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&dir), None).await.unwrap();
    store
        .create_thing(&NewThing {
            name: "device".into(),
            attributes: Default::default(),
        })
        .await
        .unwrap();
    let mut version = None;
    for n in 1i64.. {
        store
            .create_thing(&NewThing {
                name: format!("thing-{n:06}"),
                attributes: Default::default(),
            })
            .await
            .unwrap();
        let shadow = ShadowRecord {
            thing: "device".into(),
            name: String::new(),
            document: json!({"state": {"reported": {"n": n}}}),
            version: n,
        };
        store.put_shadow(&shadow, version).await.unwrap();
        version = Some(n);
        // Printed only after both writes returned: an acknowledgement.
        println!("ack {n}");
    }
}

#[tokio::test]
async fn sqlite_keeps_every_acknowledged_write_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last_ack = 0i64;
    let mut acks = 0usize;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ack ") {
            last_ack = n.trim().parse().unwrap();
            acks += 1;
            if acks >= ACKS_BEFORE_KILL {
                break;
            }
        }
    }
    assert!(
        acks >= ACKS_BEFORE_KILL,
        "the child stopped early after {acks} acks"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();

    let store = Store::open(dir.path(), None).await.unwrap();
    let shadow = store
        .get_shadow("device", "")
        .await
        .unwrap()
        .expect("the shadow survived");
    assert!(
        shadow.version >= last_ack,
        "acknowledged version {last_ack} lost: found {}",
        shadow.version
    );
    for n in 1..=last_ack {
        store
            .get_thing(&format!("thing-{n:06}"))
            .await
            .unwrap_or_else(|e| panic!("acknowledged thing {n} lost: {e}"));
    }
}
