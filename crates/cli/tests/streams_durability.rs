//! kill -9 of the core while a deployed component (the real Stream Manager SDK, its port
//! from IPC GetConfiguration) appends: after the restart every append the component saw
//! acknowledged is still there with its payload, and sequence numbers go on after them.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    let ok = std::process::Command::new(&p)
        .args(["-c", "import stream_manager, awsiot"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipping: {} with stream-manager and awsiotsdk missing (scripts/setup-test-deps)",
            p.display()
        );
    }
    ok.then_some(p)
}

fn acked(work: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(work.join("acked.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (seq, payload) = l.split_once(' ')?;
            Some((seq.parse().ok()?, payload.to_string()))
        })
        .collect()
}

fn readbacks(work: &Path) -> Vec<(PathBuf, Vec<(u64, String)>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(work).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("readback-") && name.ends_with(".json") {
            let v: Vec<(u64, String)> =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            out.push((p, v));
        }
    }
    out
}

#[test]
fn kill9_during_appends_loses_nothing_acknowledged() {
    let Some(python) = python() else { return };
    let mut core = TestCore::start();
    let base = core.dir.path().to_path_buf();
    let art_dir = base.join("artifacts/com.test.StreamWriter/1.0.0");
    std::fs::create_dir_all(&art_dir).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/stream_writer.py"),
        art_dir.join("stream_writer.py"),
    )
    .unwrap();
    let recipe = serde_json::json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.test.StreamWriter",
        "ComponentVersion": "1.0.0",
        "ComponentDependencies": {"aws.greengrass.StreamManager": {"VersionRequirement": "^2.0.0"}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Run": format!("exec {} -u {{artifacts:path}}/stream_writer.py", python.display())},
            "Artifacts": [{"URI": "s3://test/com.test.StreamWriter/stream_writer.py"}]
        }]
    });
    let recipes = recipe_dir(&base, "recipes", &[("w.json", &recipe.to_string())]);
    let config = serde_json::json!({"aws.greengrass.StreamManager": {"MERGE": {"STREAM_MANAGER_SERVER_PORT": "0"}}});
    let d = core.deploy(
        &recipes,
        Some(&base.join("artifacts")),
        &[
            "-m",
            "com.test.StreamWriter=1.0.0",
            "-m",
            "aws.greengrass.StreamManager=2.1.0",
            "-c",
            &config.to_string(),
        ],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    let work = core.work("com.test.StreamWriter");
    eventually("300 acknowledged appends", Duration::from_secs(60), || {
        acked(&work).len() >= 300
    });
    core.kill9();
    let before = acked(&work);
    core.spawn();
    // The second run reads the stream back, then appends on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let readback = loop {
        if let Some((_, v)) = readbacks(&work).into_iter().max_by_key(|(_, v)| v.len())
            && v.len() >= before.len()
            && readbacks(&work).len() >= 2
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no readback after the restart\n{}",
            core.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for (seq, payload) in &before {
        assert_eq!(
            readback.get(*seq as usize),
            Some(&(*seq, payload.clone())),
            "acknowledged append {seq} lost or changed"
        );
    }
    eventually("appends after the restart", Duration::from_secs(30), || {
        acked(&work).len() > before.len() + 50
    });
    let after = acked(&work);
    let first_new = after[before.len()..]
        .iter()
        .find(|(_, p)| !readback.iter().any(|(_, r)| r == p))
        .unwrap()
        .0;
    assert_eq!(
        first_new as usize,
        readback.len(),
        "sequence numbers go on after the restart"
    );
    let seqs: Vec<u64> = after[before.len()..].iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers without gaps"
    );
    core.stop();
}
