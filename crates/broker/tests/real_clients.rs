//! Real clients against the broker: paho-mqtt (Python, pinned in the test venv) and Debian's
//! mosquitto_pub / mosquitto_sub, for MQTT 3.1.1 and 5.0, over plain TCP and over TLS with
//! client certificates (registered, trusted CA, unregistered, denied by policy).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use lichen_broker::ListenerKind;
use tokio::process::Command;

macro_rules! need {
    ($e:expr, $what:literal) => {
        match $e {
            Some(x) => x,
            None => {
                assert!(
                    std::env::var_os("LICHEN_TEST_REQUIRE_ALL").is_none(),
                    "{} not installed, and scripts/test requires every test to run",
                    $what
                );
                eprintln!(
                    "SKIP: {} not installed (run scripts/setup-test-deps)",
                    $what
                );
                return;
            }
        }
    };
}

async fn paho(py: &Path, args: &[String]) {
    let (ok, out, err) = run(
        Command::new(py)
            .arg(py_script("mqtt_features.py"))
            .args(args),
        120,
    )
    .await;
    println!("{out}");
    assert!(
        ok && out.contains("all ok"),
        "paho checks failed:\n{out}\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_features_both_versions_plain_and_tls() {
    let py = need!(python(), "python venv with paho-mqtt");
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(&dir.path().join("state"), true)).await;
    let tcp = tcp_addr(&h);
    for v in ["311", "5"] {
        paho(&py, &["127.0.0.1".into(), tcp.port().to_string(), v.into()]).await;
    }
    // Over mTLS with a registered device certificate (thing name = device name).
    let (cert, key, pem) = device_cert(dir.path(), "paho-dev");
    h.add_device("paho-dev", &pem).unwrap();
    let tls = h.addr(ListenerKind::Tls).unwrap();
    let ca = h.ca_cert_path().unwrap().to_str().unwrap().to_string();
    for v in ["311", "5"] {
        paho(
            &py,
            &[
                "localhost".into(),
                tls.port().to_string(),
                v.into(),
                ca.clone(),
                cert.to_str().unwrap().into(),
                key.to_str().unwrap().into(),
            ],
        )
        .await;
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_plain_both_versions() {
    let sub_bin = need!(tool("mosquitto_sub"), "mosquitto-clients");
    let pub_bin = need!(tool("mosquitto_pub"), "mosquitto-clients");
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = start(config(dir.path(), false)).await;
    let port = tcp_addr(&h).port().to_string();
    for v in ["mqttv311", "mqttv5"] {
        for q in ["0", "1", "2"] {
            let topic = format!("mc/{v}/{q}");
            let mut sub = Command::new(&sub_bin);
            sub.args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                v,
                "-q",
                q,
                "-t",
                &topic,
                "-C",
                "3",
                "-W",
                "10",
                "-v",
            ]);
            let sub = tokio::spawn(async move { run(&mut sub, 15).await });
            tokio::time::sleep(Duration::from_millis(400)).await;
            for i in 0..3 {
                let (ok, _, err) = run(
                    Command::new(&pub_bin).args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port,
                        "-V",
                        v,
                        "-q",
                        q,
                        "-t",
                        &topic,
                        "-m",
                        &format!("msg{i}"),
                    ]),
                    10,
                )
                .await;
                assert!(ok, "mosquitto_pub {v} q{q}: {err}");
            }
            let (ok, out, err) = sub.await.unwrap();
            assert!(ok, "mosquitto_sub {v} q{q}: {err}");
            let want = format!("{topic} msg0\n{topic} msg1\n{topic} msg2\n");
            assert_eq!(out, want);
        }
        // Retained message read back by a later subscriber.
        let topic = format!("mc/{v}/retained");
        let (ok, _, _) = run(
            Command::new(&pub_bin).args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                v,
                "-q",
                "1",
                "-r",
                "-t",
                &topic,
                "-m",
                "kept",
            ]),
            10,
        )
        .await;
        assert!(ok);
        let (ok, out, _) = run(
            Command::new(&sub_bin).args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                v,
                "-t",
                &topic,
                "-C",
                "1",
                "-W",
                "5",
            ]),
            10,
        )
        .await;
        assert!(ok);
        assert_eq!(out, "kept\n");
    }
    // MQTT 5 user properties through mosquitto clients.
    let mut sub = Command::new(&sub_bin);
    sub.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-t",
        "mc/props",
        "-C",
        "1",
        "-W",
        "10",
        "-F",
        "%P %p",
    ]);
    let sub = tokio::spawn(async move { run(&mut sub, 15).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (ok, _, _) = run(
        Command::new(&pub_bin).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-t",
            "mc/props",
            "-m",
            "body",
            "-D",
            "publish",
            "user-property",
            "site",
            "plant-7",
        ]),
        10,
    )
    .await;
    assert!(ok);
    let (ok, out, _) = sub.await.unwrap();
    assert!(ok);
    assert_eq!(out.trim(), "site:plant-7 body");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_mtls_registration_and_policy() {
    let sub_bin = need!(tool("mosquitto_sub"), "mosquitto-clients");
    let pub_bin = need!(tool("mosquitto_pub"), "mosquitto-clients");
    let dir = tempfile::tempdir().unwrap();
    // A trusted CA whose certificates are accepted without registration.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fleet CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
    let fleet_key = rcgen::KeyPair::generate().unwrap();
    let mut fleet_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    fleet_params.distinguished_name = rcgen::DistinguishedName::new();
    fleet_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sensor-fleet-1");
    let fleet_cert = fleet_params.signed_by(&fleet_key, &issuer).unwrap();
    std::fs::write(dir.path().join("fleet.pem"), fleet_cert.pem()).unwrap();
    std::fs::write(dir.path().join("fleet.key"), fleet_key.serialize_pem()).unwrap();

    let mut cfg = config(&dir.path().join("state"), true);
    cfg.tls.trusted_ca_pems = vec![ca_cert.pem()];
    cfg.device_groups = serde_json::from_value(serde_json::json!({
        "formatVersion": "2021-03-05",
        "definitions": {"sensors": {"selectionRule": "thingName: sensor-*", "policyName": "p"}},
        "policies": {"p": {
            "connect": {"operations": ["mqtt:connect"], "resources": ["mqtt:clientId:${iot:Connection.Thing.ThingName}"]},
            "pub": {"operations": ["mqtt:publish"], "resources": ["mqtt:topic:sensors/${iot:Connection.Thing.ThingName}"]},
            "sub": {"operations": ["mqtt:subscribe"], "resources": ["mqtt:topicfilter:sensors/+"]}
        }}
    }))
    .unwrap();
    let (h, _bus) = start(cfg).await;
    let port = h.addr(ListenerKind::Tls).unwrap().port().to_string();
    let ca = h.ca_cert_path().unwrap().to_str().unwrap().to_string();
    let (c1, k1, pem1) = device_cert(dir.path(), "sensor-1");
    let (c2, k2, pem2) = device_cert(dir.path(), "sensor-2");
    h.add_device("sensor-1", &pem1).unwrap();
    h.add_device("sensor-2", &pem2).unwrap();
    let (cx, kx, _) = device_cert(dir.path(), "sensor-unregistered");
    let tls_args = |cert: &Path, key: &Path| -> Vec<String> {
        vec![
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            port.clone(),
            "--cafile".into(),
            ca.clone(),
            "--cert".into(),
            cert.to_str().unwrap().into(),
            "--key".into(),
            key.to_str().unwrap().into(),
        ]
    };
    for v in ["mqttv311", "mqttv5"] {
        // Registered devices: sensor-2 subscribes, sensor-1 publishes on its own topic.
        let mut sub = Command::new(&sub_bin);
        sub.args(tls_args(&c2, &k2)).args([
            "-V",
            v,
            "-i",
            "sensor-2",
            "-t",
            "sensors/+",
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
        ]);
        let sub = tokio::spawn(async move { run(&mut sub, 15).await });
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (ok, _, err) = run(
            Command::new(&pub_bin).args(tls_args(&c1, &k1)).args([
                "-V",
                v,
                "-i",
                "sensor-1",
                "-q",
                "1",
                "-t",
                "sensors/sensor-1",
                "-m",
                "21.5",
            ]),
            10,
        )
        .await;
        assert!(ok, "registered device publishes over mTLS ({v}): {err}");
        let (ok, out, err) = sub.await.unwrap();
        assert!(ok, "{err}");
        assert_eq!(out, "sensors/sensor-1 21.5\n");
        // Certificate from the trusted CA: thing name is its CN.
        let fleet = (dir.path().join("fleet.pem"), dir.path().join("fleet.key"));
        let (ok, _, err) = run(
            Command::new(&pub_bin)
                .args(tls_args(&fleet.0, &fleet.1))
                .args([
                    "-V",
                    v,
                    "-i",
                    "sensor-fleet-1",
                    "-q",
                    "1",
                    "-t",
                    "sensors/sensor-fleet-1",
                    "-m",
                    "x",
                ]),
            10,
        )
        .await;
        assert!(ok, "trusted-CA device ({v}): {err}");
        // Unregistered certificate: the TLS handshake fails.
        let (ok, _, _) = run(
            Command::new(&pub_bin).args(tls_args(&cx, &kx)).args([
                "-V",
                v,
                "-i",
                "sensor-unregistered",
                "-t",
                "sensors/x",
                "-m",
                "x",
            ]),
            10,
        )
        .await;
        assert!(!ok, "unregistered certificate refused ({v})");
        // No client certificate at all.
        let (ok, _, _) = run(
            Command::new(&pub_bin).args([
                "-h",
                "localhost",
                "-p",
                &port,
                "--cafile",
                &ca,
                "-V",
                v,
                "-t",
                "sensors/x",
                "-m",
                "x",
            ]),
            10,
        )
        .await;
        assert!(!ok, "client certificate required ({v})");
        // Policy: client id must equal the thing name → CONNACK not authorized.
        let (ok, _, err) = run(
            Command::new(&pub_bin).args(tls_args(&c1, &k1)).args([
                "-V",
                v,
                "-i",
                "impostor",
                "-t",
                "sensors/sensor-1",
                "-m",
                "x",
            ]),
            10,
        )
        .await;
        assert!(!ok);
        assert!(err.to_lowercase().contains("not authori"), "{v}: {err}");
    }
    // Publishing to another device's topic: MQTT 5 gets PUBACK 0x87 (mosquitto_pub reports it).
    let (_ok, _out, err) = run(
        Command::new(&pub_bin).args(tls_args(&c1, &k1)).args([
            "-V",
            "mqttv5",
            "-i",
            "sensor-1",
            "-q",
            "1",
            "-t",
            "sensors/sensor-2",
            "-m",
            "x",
            "-d",
        ]),
        10,
    )
    .await;
    assert!(
        err.contains("Not authorized")
            || _out.contains("Not authorized")
            || _out.contains("(135)")
            || err.contains("135"),
        "{_out}\n{err}"
    );
    // Removing a device refuses its next connection.
    assert!(h.remove_device("sensor-1"));
    let (ok, _, _) = run(
        Command::new(&pub_bin).args(tls_args(&c1, &k1)).args([
            "-i",
            "sensor-1",
            "-t",
            "sensors/sensor-1",
            "-m",
            "x",
        ]),
        10,
    )
    .await;
    assert!(!ok, "removed device refused");
    let devices: Vec<String> = h.list_devices().into_iter().map(|d| d.name).collect();
    assert_eq!(devices, vec!["sensor-2".to_string()]);
    h.shutdown().await;
    // The registry persists.
    let mut cfg = config(&dir.path().join("state"), true);
    cfg.tls.trusted_ca_pems = vec![ca_cert.pem()];
    let (h, _bus) = start(cfg).await;
    assert_eq!(h.list_devices().len(), 1);
    h.shutdown().await;
}
