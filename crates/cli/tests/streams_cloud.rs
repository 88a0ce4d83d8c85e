//! Stream export to the lichen cloud, through real processes: `lichen cloud run` (SQLite, and
//! PostgreSQL when installed) and a core started from its thing's bundle with the stream
//! manager deployed. A Rust stream manager client creates a stream whose `http` export's uri
//! is `lichen-cloud:` and appends; `lichen cloud stream read` shows the records. Then an
//! outage: the cloud is killed (-9) while the core appends, the core itself is restarted
//! meanwhile, and the cloud comes back: every record arrives once, in order, with no gap.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::cloud::RunningCloud;
use common::fleet::{FleetCore, start_core, wait_for};
use common::*;
use lichen_streams::client::Client;
use lichen_streams::protocol::cbor;
use serde_json::{Value, json};

/// The PostgreSQL and SQLite runs each start a cloud and a core: one at a time on 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const STREAM: &str = "telemetry";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connect(port: u16, core: &FleetCore) -> Client {
    wait_for(
        "the stream manager to accept",
        Duration::from_secs(30),
        || Client::connect(("127.0.0.1", port), None).ok(),
        || core.core.stderr(),
    )
}

fn records(cloud: &RunningCloud, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["stream", "read", STREAM];
    all.extend(args);
    cloud.json(&all)["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn payload(r: &Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["payload"].as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn wait_records(cloud: &RunningCloud, core: &FleetCore, n: usize) -> Vec<Value> {
    wait_for(
        &format!("{n} records in the cloud"),
        Duration::from_secs(90),
        || {
            let r = records(cloud, &[]);
            (r.len() >= n).then_some(r)
        },
        || core.core.stderr(),
    )
}

fn append(client: &mut Client, range: std::ops::Range<usize>) {
    for i in range {
        let seq = client
            .append(STREAM, format!("m{i}").as_bytes())
            .expect("append");
        assert_eq!(seq, i as i64);
    }
}

fn export_status(client: &mut Client) -> cbor::Map {
    let info = client.describe(STREAM).unwrap();
    info.maps("exportStatuses").unwrap().remove(0)
}

fn suite(database: Option<String>) {
    let extra: Vec<String> = database
        .iter()
        .flat_map(|url| ["--database".to_string(), url.clone()])
        .collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let mut cloud = RunningCloud::start_with(&extra);
    let mut core = start_core(&cloud, "stream-core", &[]);
    let sm_port = free_port();
    let config = json!({"aws.greengrass.StreamManager": {"MERGE": {
        "STREAM_MANAGER_SERVER_PORT": sm_port.to_string(),
        "STREAM_MANAGER_AUTHENTICATE_CLIENT": "false"}}});
    let recipes = recipe_dir(core.core.dir.path(), "recipes", &[]);
    let d = core.core.deploy(
        &recipes,
        None,
        &[
            "-m",
            "aws.greengrass.StreamManager=2.1.0",
            "-c",
            &config.to_string(),
        ],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.core.stderr());

    let mut client = connect(sm_port, &core);
    let export = cbor::map(vec![(
        "http",
        Some(ciborium::value::Value::Array(vec![cbor::map(vec![
            ("identifier", Some(cbor::text("cloud"))),
            ("uri", Some(cbor::text("lichen-cloud:"))),
            ("batchSize", Some(cbor::int(25))),
        ])])),
    )]);
    client
        .create(cbor::map(vec![
            ("name", Some(cbor::text(STREAM))),
            ("strategyOnFull", Some(cbor::int(0))),
            ("exportDefinition", Some(export)),
        ]))
        .unwrap();
    append(&mut client, 0..100);
    let got = wait_records(&cloud, &core, 100);
    assert_eq!(got[7]["thing"], "stream-core");
    assert_eq!(got[7]["sequenceNumber"], 7);
    assert_eq!(payload(&got[7]), "m7");
    assert!(got[7]["ingestTime"].as_i64().unwrap() > 1_700_000_000_000);
    let status = export_status(&mut client);
    assert_eq!(
        status
            .int("lastExportedSequenceNumber", -1, i64::MAX)
            .unwrap(),
        Some(99)
    );
    assert_eq!(status.text("errorMessage").unwrap(), None);

    // The outage: the cloud dies while the core appends; the core is restarted meanwhile.
    cloud.kill9();
    append(&mut client, 100..250);
    wait_for(
        "the export to report the outage",
        Duration::from_secs(30),
        || {
            export_status(&mut client)
                .text("errorMessage")
                .unwrap()
                .map(drop)
        },
        || core.core.stderr(),
    );
    let during = export_status(&mut client);
    assert!(
        during
            .int("lastExportedSequenceNumber", -1, i64::MAX)
            .unwrap()
            .is_some_and(|s| s < 249),
        "nothing can be exported while the cloud is down"
    );
    drop(client);
    core.stop();
    core.core.spawn();
    let mut client = connect(sm_port, &core);
    append(&mut client, 250..300);
    cloud.restart(&extra);
    let got = wait_records(&cloud, &core, 300);
    assert_eq!(got.len(), 300, "no record stored twice");
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r["sequenceNumber"], i as i64, "no gap, no reordering");
        assert_eq!(payload(r), format!("m{i}"));
        assert_eq!(r["thing"], "stream-core");
    }
    wait_for(
        "the export status to recover",
        Duration::from_secs(30),
        || {
            let s = export_status(&mut client);
            (s.int("lastExportedSequenceNumber", -1, i64::MAX).unwrap() == Some(299)
                && s.text("errorMessage").unwrap().is_none())
            .then_some(())
        },
        || core.core.stderr(),
    );

    // Filters and the human output.
    let page = records(
        &cloud,
        &["--thing", "stream-core", "--from", "290", "--limit", "5"],
    );
    let seqs: Vec<i64> = page
        .iter()
        .map(|r| r["sequenceNumber"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![290, 291, 292, 293, 294]);
    assert!(records(&cloud, &["--thing", "someone-else"]).is_empty());
    let out = cloud.cli(&["stream", "read", STREAM, "--from", "298"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stream-core") && text.contains("298") && text.contains("m299"),
        "{text}"
    );
    drop(client);
    core.stop();
    cloud.stop();
}

#[test]
fn stream_export_to_the_cloud_on_sqlite() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    suite(None);
}

#[test]
fn stream_export_to_the_cloud_on_postgresql() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cluster) = lichen_cloud_store::testing::PgCluster::shared()
        .expect("starting the test PostgreSQL cluster")
    else {
        eprintln!("skipped: PostgreSQL (initdb, pg_ctl) is not installed");
        return;
    };
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cluster.create_database())
        .expect("creating a database");
    suite(Some(url));
}
