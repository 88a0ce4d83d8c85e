//! Fleet deployments end to end (issue 10, "Tests (real processes)"): a real `lichen cloud
//! run` and three real `lichen core run` processes started from the bundles `lichen cloud thing
//! create --out` writes. Components are published with `lichen cloud component create` (with
//! artifacts, which the cores download over HTTPS with their device certificates), deployed
//! with `lichen cloud deployment create`, and followed with `lichen cloud deployment status`.
//!
//! One suite, run on SQLite and on PostgreSQL (skipped with a message when PostgreSQL is not
//! installed, unless `LICHEN_TEST_REQUIRE_ALL=1`). The scenarios share the cloud and the cores,
//! in this order:
//! 1. a group deployment, then a thing deployment to one core: that core runs the union; the
//!    same version deployed again with another configuration downloads nothing (its artifact
//!    is in the core's store with the recipe's digest);
//! 2. a failing component (install exits 1) in a thing deployment with ROLLBACK: FAILED on
//!    that device only, with the cause, its previous components still running;
//! 3. a cancellation of a deployment to a device that is offline: CANCELED, never applied;
//! 4. a replacement group deployment: every member updated, the old job CANCELED; one member
//!    is stopped (SIGTERM) in the middle of it and catches up when restarted;
//! 5. a device added to the group later gets the group's deployment;
//! 6. a tampered artifact (the cloud's stored file corrupted after publishing) fails the
//!    deployment on the device with a digest mismatch;
//! 7. a deployed component depends on another the core never had: the cloud resolves the
//!    dependency (the highest published version its requirement accepts), the core fetches
//!    its recipe and artifact and runs both; the fetched recipes are removed afterwards.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cloud::RunningCloud;
use common::fleet::*;
use serde_json::{Value, json};

/// The two backends' suites share the machine's two cores: one at a time keeps the timing
/// windows (stability, SIGTERM mid-deployment) meaningful.
static ONE_SUITE_AT_A_TIME: Mutex<()> = Mutex::new(());

const WAIT: Duration = Duration::from_secs(90);

const BASE: &str = "com.example.fleet.Base";
const EXTRA: &str = "com.example.fleet.Extra";
const BROKEN: &str = "com.example.fleet.Broken";
const TAMPERED: &str = "com.example.fleet.Tampered";
const APP: &str = "com.example.fleet.App";
const LIB: &str = "com.example.fleet.Lib";
const GROUP: &str = "line";

/// The run script of Base and Extra: records the version it was started as in its work
/// directory (proof that the downloaded artifact ran), then stays up.
const RUN_SCRIPT: &[u8] = b"echo \"$1\" > started\nexec sleep 600\n";

#[test]
fn fleet_deployments_on_sqlite() {
    let _one = ONE_SUITE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    suite(None);
}

#[test]
fn fleet_deployments_on_postgresql() {
    let _one = ONE_SUITE_AT_A_TIME
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let Some(cluster) = lichen_cloud_store::testing::PgCluster::shared()
        .expect("starting the test PostgreSQL cluster")
    else {
        eprintln!("skipped: PostgreSQL (initdb, pg_ctl) is not installed");
        return;
    };
    let url = runtime()
        .block_on(cluster.create_database())
        .expect("creating a database");
    suite(Some(url));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn publish_components(cloud: &RunningCloud) -> Value {
    let run = |version: &str| json!({"Run": format!("sh {{artifacts:path}}/run.sh {version}")});
    publish(
        cloud,
        &Component {
            name: BASE,
            version: "1.0.0",
            lifecycle: run("1.0.0"),
            artifacts: &[("run.sh", RUN_SCRIPT)],
        },
    );
    // 2.0.0 takes a few seconds to install: long enough to stop a core in the middle of it.
    let mut slow = run("2.0.0");
    slow["Install"] = json!("sleep 3");
    publish(
        cloud,
        &Component {
            name: BASE,
            version: "2.0.0",
            lifecycle: slow,
            artifacts: &[("run.sh", RUN_SCRIPT)],
        },
    );
    publish(
        cloud,
        &Component {
            name: EXTRA,
            version: "1.0.0",
            lifecycle: run("extra"),
            artifacts: &[("run.sh", RUN_SCRIPT)],
        },
    );
    publish(
        cloud,
        &Component {
            name: BROKEN,
            version: "1.0.0",
            lifecycle: json!({"Install": "exit 1", "Run": "sleep 600"}),
            artifacts: &[],
        },
    );
    // App needs Lib ^1.0.0; the cloud has 1.0.0, 1.1.0 and 2.0.0 of it, the cores none.
    for lib in ["1.0.0", "1.1.0", "2.0.0"] {
        publish(
            cloud,
            &Component {
                name: LIB,
                version: lib,
                lifecycle: run(lib),
                artifacts: &[("run.sh", RUN_SCRIPT)],
            },
        );
    }
    publish_with_dependencies(
        cloud,
        &Component {
            name: APP,
            version: "1.0.0",
            lifecycle: run("app"),
            artifacts: &[("run.sh", RUN_SCRIPT)],
        },
        &[(LIB, "^1.0.0")],
    );
    publish(
        cloud,
        &Component {
            name: TAMPERED,
            version: "1.0.0",
            lifecycle: json!({"Run": "sh {artifacts:path}/payload.sh"}),
            artifacts: &[("payload.sh", b"echo genuine > started\nexec sleep 600\n")],
        },
    )
}

fn suite(database: Option<String>) {
    let started = Instant::now();
    let backend = if database.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let cloud = match &database {
        Some(url) => RunningCloud::start_with(&["--database", url]),
        None => RunningCloud::start(),
    };
    let tampered_recipe = publish_components(&cloud);
    cloud.json(&["group", "create", GROUP]);
    let (gw1, mut gw2, mut gw3) = std::thread::scope(|s| {
        let a = s.spawn(|| start_core(&cloud, "gw-1", &[GROUP]));
        let b = s.spawn(|| start_core(&cloud, "gw-2", &[GROUP]));
        let c = s.spawn(|| start_core(&cloud, "gw-3", &[]));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    eprintln!(
        "{backend}: cloud and 3 cores up after {:?}",
        started.elapsed()
    );

    // 1. A group deployment reaches both members; a thing deployment to gw-1 adds to it.
    let d1 = deploy(&cloud, &format!("group:{GROUP}"), &[(BASE, "1.0.0")]);
    let d1_id = id_of(&d1);
    for core in [&gw1, &gw2] {
        let st = wait_device(&cloud, &d1_id, core, "SUCCEEDED", WAIT);
        assert_eq!(
            st["statusDetails"]["detailed-deployment-status"], "SUCCESSFUL",
            "{st}"
        );
        core.assert_running(BASE, "1.0.0");
        assert_eq!(marker(core, BASE, "started").trim(), "1.0.0");
    }
    assert_eq!(status(&cloud, &d1_id)["counts"], json!({"SUCCEEDED": 2}));
    assert!(gw3.components().is_empty(), "gw-3 is in no group yet");

    let t1 = deploy(&cloud, "thing:gw-1", &[(EXTRA, "1.0.0")]);
    let t1_id = id_of(&t1);
    wait_device(&cloud, &t1_id, &gw1, "SUCCEEDED", WAIT);
    assert_eq!(gw1.components(), vec![BASE.to_string(), EXTRA.to_string()]);
    gw1.assert_running(BASE, "1.0.0");
    gw1.assert_running(EXTRA, "1.0.0");
    assert_eq!(
        gw2.components(),
        vec![BASE.to_string()],
        "the union is gw-1's"
    );
    eprintln!("{backend}: union after {:?}", started.elapsed());

    // 1b. Extra 1.0.0 again with another configuration: its artifact is held with the
    // recipe's digest, so not one byte is downloaded (the agent logs each download).
    let extra_downloads = |core: &FleetCore| {
        core.core
            .stderr()
            .lines()
            .filter(|l| {
                l.contains(EXTRA) && l.contains("downloaded") && !l.contains("not downloaded")
            })
            .count()
    };
    assert_eq!(extra_downloads(&gw1), 1, "{}", tail(&gw1.core.stderr(), 40));
    let t1b = deploy_file(
        &cloud,
        "thing:gw-1",
        &json!({"components": {EXTRA: {"componentVersion": "1.0.0",
            "configurationUpdate": {"merge": "{\"round\":2}"}}}}),
    );
    wait_device(&cloud, &id_of(&t1b), &gw1, "SUCCEEDED", WAIT);
    gw1.assert_running(EXTRA, "1.0.0");
    assert_eq!(
        extra_downloads(&gw1),
        1,
        "downloaded again: {}",
        tail(&gw1.core.stderr(), 40)
    );
    assert!(
        gw1.core
            .stderr()
            .lines()
            .any(|l| l.contains(EXTRA) && l.contains("already held with the same digest")),
        "{}",
        tail(&gw1.core.stderr(), 40)
    );
    let t1_old = cloud.json(&["deployment", "describe", &t1_id]);
    assert_eq!(t1_old["deploymentStatus"], "INACTIVE", "{t1_old}");

    // 2. A failing component rolls back on gw-1 only, with the cause reported.
    let base_pid = gw1.component(BASE).unwrap()["pid"].clone();
    let t2 = deploy_file(
        &cloud,
        "thing:gw-1",
        &json!({
            "components": {
                EXTRA: {"componentVersion": "1.0.0"},
                BROKEN: {"componentVersion": "1.0.0"},
            },
            "deploymentPolicies": {"failureHandlingPolicy": "ROLLBACK"},
        }),
    );
    let t2_id = id_of(&t2);
    let failed = wait_device(&cloud, &t2_id, &gw1, "FAILED", WAIT);
    let details = &failed["statusDetails"];
    assert_eq!(
        details["detailed-deployment-status"], "FAILED_ROLLBACK_COMPLETE",
        "{failed}"
    );
    let cause = details["deployment-failure-cause"].as_str().unwrap_or("");
    assert!(
        cause.contains(BROKEN),
        "the cause names the component: {failed}"
    );
    assert_eq!(gw1.components(), vec![BASE.to_string(), EXTRA.to_string()]);
    gw1.assert_running(BASE, "1.0.0");
    gw1.assert_running(EXTRA, "1.0.0");
    assert_eq!(
        gw1.component(BASE).unwrap()["pid"],
        base_pid,
        "Base was not touched"
    );
    assert_eq!(
        device_status(&cloud, &d1_id, "gw-2")["status"],
        "SUCCEEDED",
        "gw-2 is not affected"
    );
    gw2.assert_running(BASE, "1.0.0");
    eprintln!("{backend}: rollback after {:?}", started.elapsed());

    // 3. A deployment to an offline device, canceled before it connects: CANCELED, and never
    // applied (checked once gw-3 has taken a later deployment, in 5).
    gw3.stop();
    let t3 = deploy(&cloud, "thing:gw-3", &[(EXTRA, "1.0.0")]);
    let t3_id = id_of(&t3);
    assert_eq!(device_status(&cloud, &t3_id, "gw-3")["status"], "QUEUED");
    let canceled = cloud.json(&["deployment", "cancel", &t3_id]);
    assert_eq!(canceled["deploymentStatus"], "CANCELED", "{canceled}");
    assert_eq!(device_status(&cloud, &t3_id, "gw-3")["status"], "CANCELED");
    gw3.restart();

    // 4. A replacement: both members move to Base 2.0.0 and the old job is canceled. gw-2 is
    // stopped while it applies it, and catches up when it comes back.
    let d2 = deploy(&cloud, &format!("group:{GROUP}"), &[(BASE, "2.0.0")]);
    let d2_id = id_of(&d2);
    wait_device(&cloud, &d2_id, &gw2, "IN_PROGRESS", WAIT);
    // Stopped while the core applies it (in the 3 s install of 2.0.0, after the ongoing
    // marker): the next start rolls it back, and the agent must run it again.
    wait_for(
        "gw-2 to start applying the replacement",
        WAIT,
        || {
            let out = gw2.core.cli(&["deployment", "status", &d2_id, "--json"]);
            let record: Value = serde_json::from_slice(&out.stdout).ok()?;
            let progress = record["progress"].as_str().unwrap_or("");
            progress.starts_with("starting components").then_some(())
        },
        || tail(&gw2.core.stderr(), 40),
    );
    gw2.stop();
    wait_device(&cloud, &d2_id, &gw1, "SUCCEEDED", WAIT);
    gw1.assert_running(BASE, "2.0.0");
    gw1.assert_running(EXTRA, "1.0.0");
    assert_eq!(marker(&gw1, BASE, "started").trim(), "2.0.0");
    let old_job = d1["jobId"].as_str().expect("a group deployment has a job");
    // The jobs view keeps the replaced deployment's job, CANCELED, with its executions.
    let job = cloud.json(&["job", "describe", old_job]);
    assert_eq!(job["status"], "CANCELED", "the replaced job: {job}");
    assert_eq!(job["document"]["deploymentId"], d1_id.as_str(), "{job}");
    let results: Vec<(String, String)> = job["executions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (text(e, "thingName"), text(e, "status")))
        .collect();
    assert_eq!(
        results,
        vec![
            ("gw-1".to_string(), "SUCCEEDED".to_string()),
            ("gw-2".to_string(), "SUCCEEDED".to_string())
        ],
        "{job}"
    );
    assert_eq!(job["executionCounts"], json!({"SUCCEEDED": 2}), "{job}");
    let jobs = cloud.json(&["job", "list"]);
    let ids: Vec<&str> = jobs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["jobId"].as_str())
        .collect();
    assert!(ids.contains(&old_job), "{jobs}");
    assert!(ids.contains(&d2["jobId"].as_str().unwrap_or("")), "{jobs}");
    assert_eq!(
        device_status(&cloud, &d2_id, "gw-2")["status"],
        "IN_PROGRESS",
        "gw-2 was stopped before it finished"
    );
    gw2.restart();
    wait_device(&cloud, &d2_id, &gw2, "SUCCEEDED", WAIT);
    gw2.assert_running(BASE, "2.0.0");
    assert_eq!(marker(&gw2, BASE, "started").trim(), "2.0.0");
    assert_eq!(gw2.components(), vec![BASE.to_string()]);
    let interrupted = gw2.core.json(&["deployment", "status", &d2_id]);
    assert_eq!(interrupted["status"], "FAILED", "{interrupted}");
    assert_eq!(
        interrupted["errorStack"][1], "CORE_RESTARTED",
        "{interrupted}"
    );
    let retried = gw2
        .core
        .json(&["deployment", "status", &format!("{d2_id}:retry1")]);
    assert_eq!(retried["status"], "SUCCEEDED", "{retried}");
    eprintln!(
        "{backend}: replacement and catch-up after {:?}",
        started.elapsed()
    );

    // 5. gw-3 joins the group and gets its deployment; the canceled one never ran.
    cloud.json(&["group", "add", GROUP, "gw-3"]);
    wait_device(&cloud, &d2_id, &gw3, "SUCCEEDED", WAIT);
    gw3.assert_running(BASE, "2.0.0");
    assert_eq!(gw3.components(), vec![BASE.to_string()], "T3 was canceled");
    assert_eq!(status(&cloud, &d2_id)["counts"], json!({"SUCCEEDED": 3}));
    assert_eq!(device_status(&cloud, &t3_id, "gw-3")["status"], "CANCELED");

    // 6. The cloud's copy of an artifact is corrupted after publishing: the device refuses it.
    let digest = tampered_recipe["Manifests"][0]["Artifacts"][0]["Digest"]
        .as_str()
        .expect("the stored recipe carries the digest")
        .to_string();
    let sha_hex = hex_of_b64(&digest);
    let stored = stored_artifact(&cloud, &sha_hex);
    let mut bytes = std::fs::read(&stored)
        .unwrap_or_else(|e| panic!("the stored artifact {}: {e}", stored.display()));
    // Same length, different content: only the digest can tell.
    bytes[0] ^= 0x20;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&stored, &bytes).unwrap();
    let t4 = deploy(&cloud, "thing:gw-3", &[(TAMPERED, "1.0.0")]);
    let t4_id = id_of(&t4);
    let failed = wait_device(&cloud, &t4_id, &gw3, "FAILED", WAIT);
    let cause = failed["statusDetails"]["deployment-failure-cause"]
        .as_str()
        .unwrap_or("");
    assert!(
        cause.contains("digest mismatch") && cause.contains(TAMPERED),
        "{failed}"
    );
    assert!(gw3.component(TAMPERED).is_none(), "nothing of it installed");
    gw3.assert_running(BASE, "2.0.0");

    // 7. A dependency the core never had, resolved by the cloud and fetched with the root.
    assert!(gw3.component(LIB).is_none());
    let t5 = deploy(&cloud, "thing:gw-3", &[(APP, "1.0.0")]);
    let t5_id = id_of(&t5);
    wait_device(&cloud, &t5_id, &gw3, "SUCCEEDED", WAIT);
    gw3.assert_running(APP, "1.0.0");
    gw3.assert_running(LIB, "1.1.0");
    assert_eq!(
        marker(&gw3, LIB, "started").trim(),
        "1.1.0",
        "Lib's artifact ran"
    );
    assert_eq!(marker(&gw3, APP, "started").trim(), "app");
    let fetched = gw3.core.root.join("cloud/fetch/recipes");
    let left: Vec<_> = std::fs::read_dir(&fetched)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "fetched recipes left behind: {left:?}");
    eprintln!("{backend}: suite done after {:?}", started.elapsed());

    drop((gw1, gw2, gw3));
    cloud.stop();
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// Lowercase hex of a base64 SHA-256 digest.
fn hex_of_b64(digest: &str) -> String {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(digest)
        .unwrap_or_else(|e| panic!("digest {digest:?}: {e}"));
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
