//! The cloud service against a stand-in cloud: the lichen broker with a TLS listener (devices
//! registered by certificate) plays the cloud's mTLS MQTT endpoint, and — for fleet
//! provisioning — a test-local responder written with lichen-mqtt-client answers the AWS IoT
//! provisioning topics. Both are stand-ins until the cloud's own endpoint exists; the
//! end-to-end test against it comes with that crate.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_broker::{BrokerConfig, BrokerHandle, ListenerConfig, ListenerKind};
use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::settings::Settings;
use lichen_model::control::{CloudConnectionState, CloudStatus};
use lichen_mqtt_client::{Client, ConnectOptions, Incoming, QoS};
use lichen_node::{BrokerService, CloudOptions, CloudService, Node, NodeOptions, Service};
use lichen_pki::LocalCa;
use serde_json::{Value, json};

fn allow_all() -> lichen_broker::DeviceGroups {
    serde_json::from_value(json!({
        "formatVersion": "2021-03-05",
        "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
        "policies": {"all": {"s": {"operations": ["*"], "resources": ["*"]}}}
    }))
    .unwrap()
}

/// The stand-in cloud endpoint: a lichen broker with TLS (for the core) and plain TCP (for
/// the test's observer and responder) on loopback.
struct StandInCloud {
    broker: Arc<BrokerHandle>,
    dir: PathBuf,
}

impl StandInCloud {
    async fn start(dir: &Path) -> StandInCloud {
        let config = BrokerConfig {
            state_dir: dir.to_path_buf(),
            listeners: vec![
                ListenerConfig {
                    kind: ListenerKind::Tls,
                    bind: "127.0.0.1:0".parse().unwrap(),
                },
                ListenerConfig {
                    kind: ListenerKind::Tcp,
                    bind: "127.0.0.1:0".parse().unwrap(),
                },
            ],
            device_groups: allow_all(),
            ..Default::default()
        };
        let broker = lichen_broker::start(config, lichen_bus::Bus::new())
            .await
            .unwrap();
        StandInCloud {
            broker: Arc::new(broker),
            dir: dir.to_path_buf(),
        }
    }

    fn endpoint(&self) -> String {
        self.broker.addr(ListenerKind::Tls).unwrap().to_string()
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.broker.ca_cert_path().unwrap()).unwrap()
    }

    /// Issues a certificate for a key made here, registers it as device `name`, and writes
    /// `<prefix>.cert.pem` / `<prefix>.private.key` into `out`.
    fn issue(&self, name: &str, out: &Path, prefix: &str) {
        let ca = LocalCa::load_or_create(&self.dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let cert = ca.issue_from_csr(&csr, 30).unwrap();
        self.broker.add_device(name, &cert.cert_pem).unwrap();
        std::fs::write(out.join(format!("{prefix}.cert.pem")), cert.cert_pem).unwrap();
        std::fs::write(
            out.join(format!("{prefix}.private.key")),
            key.serialize_pem(),
        )
        .unwrap();
    }

    async fn client(&self, id: &str) -> (Client, Incoming) {
        let addr = self.broker.addr(ListenerKind::Tcp).unwrap();
        Client::connect(ConnectOptions::new(addr.to_string(), id))
            .await
            .unwrap()
    }
}

fn fast() -> CloudOptions {
    CloudOptions {
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(500),
        connectivity_interval: Duration::from_millis(200),
        keep_alive_secs: 30,
    }
}

async fn start_node(root: &Path, settings: Settings) -> (Node, Arc<CloudService>) {
    let broker = Arc::new(BrokerService::new());
    let cloud = Arc::new(CloudService::with_options(Some(broker.clone()), fast()));
    let services: Vec<Arc<dyn Service>> = vec![broker, cloud.clone()];
    let node = Node::start(
        NodeOptions {
            root: root.to_path_buf(),
            settings,
        },
        services,
    )
    .await
    .unwrap();
    (node, cloud)
}

/// `cloud.status` over the real control socket.
async fn control_status(root: &Path) -> CloudStatus {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut c = ControlClient::connect(&root).unwrap();
        match c.request(&ControlRequest::CloudStatus {}).unwrap() {
            ControlReply::Cloud(s) => s,
            other => panic!("unexpected reply {other:?}"),
        }
    })
    .await
    .unwrap()
}

async fn wait_state(cloud: &CloudService, want: CloudConnectionState) -> CloudStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = cloud.status().expect("cloud configured");
        if s.state == want {
            return s;
        }
        assert!(Instant::now() < deadline, "never {want:?}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_json(incoming: &mut Incoming) -> Value {
    let p = incoming
        .recv_timeout(Duration::from_secs(10))
        .await
        .expect("a message in time");
    serde_json::from_slice(&p.payload).unwrap()
}

#[tokio::test]
async fn a_bundle_identity_connects_reports_connectivity_and_status_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = StandInCloud::start(&dir.path().join("cloud")).await;
    // The bundle `lichen cloud thing create gw-1 --out DIR` writes, with relative paths.
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    cloud.issue("gw-1", &bundle, "thing");
    std::fs::write(bundle.join("ca.pem"), cloud.ca_pem()).unwrap();
    let config = bundle.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "thingName: gw-1\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: {}\n  \
             certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n  \
             apiEndpoint: https://127.0.0.1:1\n\
             broker:\n  listeners:\n    - {{kind: tls, bind: \"127.0.0.1:0\"}}\n    - {{kind: tls, bind: \"0.0.0.0:0\"}}\n",
            cloud.endpoint()
        ),
    )
    .unwrap();
    let settings = Settings::load(&config).unwrap();

    let (observer, mut reports) = cloud.client("observer").await;
    observer
        .subscribe_one("$lichen/things/gw-1/connectivity/update", QoS::AtLeastOnce)
        .await
        .unwrap();

    let root = dir.path().join("root");
    let (node, service) = start_node(&root, settings).await;
    let status = wait_state(&service, CloudConnectionState::Connected).await;
    assert_eq!(status.thing_name, "gw-1");
    assert_eq!(status.endpoint, cloud.endpoint());
    assert!(!status.provisioned);

    let report = next_json(&mut reports).await;
    let entries = report["ConnectivityInfo"].as_array().unwrap().clone();
    let broker_dir = root.join("broker");
    assert!(broker_dir.is_dir());
    // The 127.0.0.1 listener is reported as is; the 0.0.0.0 one as non-loopback addresses.
    let loopback: Vec<&Value> = entries
        .iter()
        .filter(|e| e["HostAddress"] == "127.0.0.1")
        .collect();
    assert_eq!(loopback.len(), 1, "{report}");
    let loopback_port = loopback[0]["PortNumber"].as_u64().unwrap();
    assert!(loopback_port > 0);
    for e in &entries {
        assert_eq!(e["Metadata"], "");
        assert!(e["Id"].as_str().is_some_and(|id| !id.is_empty()));
        if e["PortNumber"].as_u64() != Some(loopback_port) {
            let ip: std::net::IpAddr = e["HostAddress"].as_str().unwrap().parse().unwrap();
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{report}");
        }
    }

    // The status reaches the control channel.
    let over_control = control_status(&root).await;
    assert_eq!(over_control.state, CloudConnectionState::Connected);
    assert_eq!(over_control.thing_name, "gw-1");

    // Drop the connection: another client takes the session over. The service reports the
    // error, reconnects after its backoff, and reports connectivity again on the new link.
    let (intruder, _) = cloud.client("gw-1").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw_error = None;
    while Instant::now() < deadline {
        let s = service.status().unwrap();
        if let Some(e) = &s.last_error {
            saw_error = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = saw_error.expect("the drop is reported");
    assert!(error.contains("SessionTakenOver"), "{error}");
    intruder.disconnect().await.unwrap();
    wait_state(&service, CloudConnectionState::Connected).await;
    let again = next_json(&mut reports).await;
    assert_eq!(again["ConnectivityInfo"], report["ConnectivityInfo"]);

    // Shutdown sends DISCONNECT: only the observer stays connected to the cloud.
    let started = Instant::now();
    node.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cloud.broker.stats().connections > 1 {
        assert!(Instant::now() < deadline, "the core's connection is gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    observer.disconnect().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_cloud_is_an_error_state_and_the_node_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = StandInCloud::start(&dir.path().join("cloud")).await;
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    cloud.issue("gw-2", &bundle, "thing");
    // A CA the endpoint does not chain to: every attempt fails the handshake.
    let other = LocalCa::load_or_create(&dir.path().join("other")).unwrap();
    std::fs::write(bundle.join("ca.pem"), &other.cert_pem).unwrap();
    let config = bundle.join("config.json");
    std::fs::write(
        &config,
        json!({
            "thingName": "gw-2",
            "rootCaPath": "ca.pem",
            "cloud": {
                "iotDataEndpoint": cloud.endpoint(),
                "certificateFilePath": "thing.cert.pem",
                "privateKeyPath": "thing.private.key"
            }
        })
        .to_string(),
    )
    .unwrap();
    let root = dir.path().join("root");
    let (node, service) = start_node(&root, Settings::load(&config).unwrap()).await;
    let s = wait_state(&service, CloudConnectionState::Error).await;
    let e = s.last_error.unwrap();
    assert!(e.contains("TLS handshake"), "{e}");
    let over_control = control_status(&root).await;
    assert!(over_control.last_error.is_some());
    node.shutdown().await;
}

/// Stand-in for the cloud's provisioning endpoint: answers CreateCertificateFromCsr and
/// RegisterThing like AWS IoT does, issuing from the stand-in broker's CA and registering the
/// new thing as a device. Only `GoodTemplate` exists.
async fn provisioning_responder(cloud: &StandInCloud) -> tokio::task::JoinHandle<()> {
    let (client, mut incoming) = cloud.client("provisioning-responder").await;
    client
        .subscribe_one("$aws/certificates/create-from-csr/json", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe_one(
            "$aws/provisioning-templates/+/provision/json",
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    let broker = cloud.broker.clone();
    let ca_dir = cloud.dir.clone();
    tokio::spawn(async move {
        let ca = LocalCa::load_or_create(&ca_dir).unwrap();
        let mut issued: std::collections::HashMap<String, String> = Default::default();
        while let Some(p) = incoming.recv().await {
            let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
            let topic = p.topic.to_string();
            let (answer_topic, answer) = if topic == "$aws/certificates/create-from-csr/json" {
                let csr = body["certificateSigningRequest"].as_str().unwrap_or("");
                match ca.issue_from_csr(csr, 30) {
                    Ok(cert) => {
                        let token = format!("token-{}", issued.len());
                        issued.insert(token.clone(), cert.cert_pem.clone());
                        (
                            format!("{topic}/accepted"),
                            json!({"certificateId": cert.serial, "certificatePem": cert.cert_pem,
                                   "certificateOwnershipToken": token}),
                        )
                    }
                    Err(e) => (
                        format!("{topic}/rejected"),
                        json!({"statusCode": 400, "errorCode": "InvalidCSR", "errorMessage": e.to_string()}),
                    ),
                }
            } else if topic == "$aws/provisioning-templates/GoodTemplate/provision/json" {
                let token = body["certificateOwnershipToken"].as_str().unwrap_or("");
                let serial = body["parameters"]["SerialNumber"].as_str().unwrap_or("");
                match issued.get(token) {
                    Some(pem) if !serial.is_empty() => {
                        let thing = format!("gw-{serial}");
                        broker.add_device(&thing, pem).unwrap();
                        (
                            format!("{topic}/accepted"),
                            json!({"thingName": thing, "deviceConfiguration": {}}),
                        )
                    }
                    _ => (
                        format!("{topic}/rejected"),
                        json!({"statusCode": 400, "errorCode": "InvalidCertificateOwnershipToken"}),
                    ),
                }
            } else {
                (
                    format!("{topic}/rejected"),
                    json!({"statusCode": 404, "errorCode": "ResourceNotFoundException",
                           "errorMessage": "no such provisioning template"}),
                )
            };
            client
                .publish(answer_topic, answer.to_string(), QoS::AtLeastOnce)
                .await
                .unwrap();
        }
    })
}

fn fleet_config(cloud: &StandInCloud, dir: &Path, template: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    cloud.issue("claim", dir, "claim");
    std::fs::write(dir.join("ca.pem"), cloud.ca_pem()).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "rootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: {}\n  fleetProvisioning:\n    \
             provisioningTemplate: {template}\n    claimCertificatePath: claim.cert.pem\n    \
             claimCertificatePrivateKeyPath: claim.private.key\n    \
             templateParameters: {{ SerialNumber: \"abc123\" }}\n",
            cloud.endpoint()
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn fleet_provisioning_by_claim_against_a_stand_in_responder_then_the_claim_is_never_used_again()
 {
    let dir = tempfile::tempdir().unwrap();
    let cloud = StandInCloud::start(&dir.path().join("cloud")).await;
    let responder = provisioning_responder(&cloud).await;
    let config = fleet_config(&cloud, &dir.path().join("bundle"), "GoodTemplate");
    let root = dir.path().join("root");

    let (node, service) = start_node(&root, Settings::load(&config).unwrap()).await;
    // The provisioned name is the core's before any component runs.
    assert_eq!(node.handle().thing_name(), "gw-abc123");
    let s = wait_state(&service, CloudConnectionState::Connected).await;
    assert_eq!(s.thing_name, "gw-abc123");
    assert!(s.provisioned);
    let identity = root.join("cloud/identity");
    let key_mode = std::fs::metadata(identity.join("thing.private.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let stored: Value =
        serde_json::from_slice(&std::fs::read(identity.join("identity.json")).unwrap()).unwrap();
    assert_eq!(stored["thingName"], "gw-abc123");
    node.shutdown().await;

    // Without the responder and with the claim certificate revoked, a restart still connects:
    // only the stored identity is used.
    responder.abort();
    assert!(cloud.broker.remove_device("claim"));
    let (node, service) = start_node(&root, Settings::load(&config).unwrap()).await;
    assert_eq!(node.handle().thing_name(), "gw-abc123");
    wait_state(&service, CloudConnectionState::Connected).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_rejected_provisioning_names_the_topic_and_the_aws_error_code() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = StandInCloud::start(&dir.path().join("cloud")).await;
    let _responder = provisioning_responder(&cloud).await;
    let config = fleet_config(&cloud, &dir.path().join("bundle"), "NoSuchTemplate");
    let root = dir.path().join("root");
    let e = Node::start(
        NodeOptions {
            root: root.clone(),
            settings: Settings::load(&config).unwrap(),
        },
        lichen_node::default_services(),
    )
    .await
    .err()
    .expect("the node does not start without an identity");
    let text = e.to_string();
    assert!(
        text.contains("$aws/provisioning-templates/NoSuchTemplate/provision/json/rejected")
            && text.contains("ResourceNotFoundException"),
        "{text}"
    );
    assert!(!root.join("cloud/identity/identity.json").exists());
}

#[tokio::test]
async fn provisioning_gives_up_after_its_timeout_when_nobody_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = StandInCloud::start(&dir.path().join("cloud")).await;
    let config = fleet_config(&cloud, &dir.path().join("bundle"), "GoodTemplate");
    let settings = Settings::load(&config).unwrap();
    let root = dir.path().join("root");
    let started = Instant::now();
    let e = lichen_node::services::provisioning::ensure_identity(
        &root,
        &settings,
        Duration::from_millis(700),
    )
    .await
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = e.to_string();
    assert!(
        text.contains("$aws/certificates/create-from-csr/json") && text.contains("within"),
        "{text}"
    );
}
