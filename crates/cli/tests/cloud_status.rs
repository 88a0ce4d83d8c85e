//! `lichen core status` with and without a cloud section, against a stand-in cloud endpoint
//! (the lichen broker over mutual TLS, in this test process; the real cloud endpoint's
//! end-to-end test comes with that crate), and `cloud` config errors from `lichen core run`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use lichen_broker::{BrokerConfig, ListenerConfig, ListenerKind};

fn allow_all() -> lichen_broker::DeviceGroups {
    serde_json::from_value(serde_json::json!({
        "formatVersion": "2021-03-05",
        "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
        "policies": {"all": {"s": {"operations": ["*"], "resources": ["*"]}}}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_status_shows_the_cloud_connection_human_and_json() {
    let cloud_dir = tempfile::tempdir().unwrap();
    let broker = lichen_broker::start(
        BrokerConfig {
            state_dir: cloud_dir.path().to_path_buf(),
            listeners: vec![ListenerConfig {
                kind: ListenerKind::Tls,
                bind: "127.0.0.1:0".parse().unwrap(),
            }],
            device_groups: allow_all(),
            ..Default::default()
        },
        lichen_bus::Bus::new(),
    )
    .await
    .unwrap();
    let endpoint = broker.addr(ListenerKind::Tls).unwrap().to_string();
    // The bundle: thing certificate from the stand-in's CA, registered as device gw-cli.
    let bundle = tempfile::tempdir().unwrap();
    let ca = lichen_pki::LocalCa::load_or_create(cloud_dir.path()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gw-cli");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.issue_from_csr(&csr, 30).unwrap();
    broker.add_device("gw-cli", &cert.cert_pem).unwrap();
    let b = bundle.path();
    std::fs::write(b.join("thing.cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(b.join("thing.private.key"), key.serialize_pem()).unwrap();
    std::fs::write(b.join("ca.pem"), &ca.cert_pem).unwrap();
    let config = format!(
        "thingName: gw-cli\nrootCaPath: {b}/ca.pem\ncloud:\n  iotDataEndpoint: {endpoint}\n  \
         certificateFilePath: {b}/thing.cert.pem\n  privateKeyPath: {b}/thing.private.key\n",
        b = b.display()
    );
    let core = tokio::task::spawn_blocking(move || TestCore::start_with(&config))
        .await
        .unwrap();
    let core = std::sync::Arc::new(core);
    let c = core.clone();
    let status = tokio::task::spawn_blocking(move || {
        let mut last = serde_json::Value::Null;
        for _ in 0..200 {
            last = c.json(&["core", "status"]);
            if last["cloud"]["state"] == "connected" {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        last
    })
    .await
    .unwrap();
    assert_eq!(status["cloud"]["state"], "connected", "{status}");
    assert_eq!(status["cloud"]["endpoint"], endpoint);
    assert_eq!(status["cloud"]["thingName"], "gw-cli");
    assert_eq!(status["thingName"], "gw-cli");
    let c = core.clone();
    let human = tokio::task::spawn_blocking(move || c.cli(&["core", "status"]))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout).to_string();
    assert!(
        text.contains(&format!("Cloud:         connected ({endpoint} as gw-cli)")),
        "{text}"
    );
    // The key never reaches the core's log.
    let key_body = key.serialize_pem();
    let secret_line = key_body.lines().nth(1).unwrap().to_string();
    let log = std::fs::read_to_string(core.root.join("logs/lichen.log")).unwrap_or_default();
    assert!(!log.contains(&secret_line) && !core.stderr().contains(&secret_line));
    let mut core = std::sync::Arc::into_inner(core).unwrap();
    tokio::task::spawn_blocking(move || core.stop())
        .await
        .unwrap();
    broker.shutdown().await;
}

#[test]
fn core_status_without_a_cloud_section_says_not_configured() {
    let core = TestCore::start();
    let status = core.json(&["core", "status"]);
    assert_eq!(status["thingName"], "test-thing");
    assert!(status.get("cloud").is_none(), "{status}");
    let out = core.cli(&["core", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Cloud:         not configured"), "{text}");
}

#[test]
fn cloud_config_errors_stop_the_core_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(dir.path().join("thing.cert.pem"), "x").unwrap();
    for (text, want) in [
        (
            "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:8883\n  certificateFile: thing.cert.pem\n",
            "certificateFile",
        ),
        (
            "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: h:8883\n  certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n",
            "cloud.privateKeyPath",
        ),
    ] {
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, text).unwrap();
        let out = Command::new(BIN)
            .args(["core", "run", "--root"])
            .arg(dir.path().join("root"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(want) && err.contains("config.yaml"),
            "{want}: {err}"
        );
    }
}
