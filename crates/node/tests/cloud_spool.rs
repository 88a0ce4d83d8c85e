//! The cloud spool through PublishToIoTCore (the IPC client a component uses), with the cloud
//! (Debian's mosquitto over mutual TLS) down and then up: each full-spool strategy behaves as
//! documented, QoS 0 offline is dropped or kept as `keepQos0WhenOffline` says, a restarted
//! core finds what it spooled, and once mosquitto runs everything kept goes out in order.
//! Skips with a message when mosquitto is not installed.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lichen_core::settings::Settings;
use lichen_ipc::IpcClient;
use lichen_mqtt_client::{Client, ConnectOptions, Incoming, QoS};
use lichen_node::{CloudOptions, CloudService, LinkState, Node, NodeOptions, Service};
use lichen_pki::LocalCa;
use serde_json::json;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const COMPONENT: &str = "com.example.Spooler";
const PAYLOAD: usize = 1000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Mosquitto {
    child: Child,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cloud's ports and certificates, made before it starts (the core is configured with
/// the TLS port while nothing listens there).
struct Cloud {
    dir: std::path::PathBuf,
    ca: LocalCa,
    tcp: SocketAddr,
    tls: SocketAddr,
}

impl Cloud {
    fn new(dir: &Path) -> Option<Cloud> {
        if !Path::new(MOSQUITTO).exists() {
            eprintln!("skipping: {MOSQUITTO} is not installed (scripts/setup-test-deps)");
            return None;
        }
        let ca = LocalCa::load_or_create(&dir.join("ca")).unwrap();
        Some(Cloud {
            dir: dir.to_path_buf(),
            ca,
            tcp: SocketAddr::from(([127, 0, 0, 1], free_port())),
            tls: SocketAddr::from(([127, 0, 0, 1], free_port())),
        })
    }

    fn start(&self) -> Mosquitto {
        let d = &self.dir;
        let server = self
            .ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
            .unwrap();
        let key = rcgen::KeyPair::try_from(server.key_pkcs8_der.as_slice()).unwrap();
        std::fs::write(d.join("server.pem"), &server.cert.cert_pem).unwrap();
        std::fs::write(d.join("server.key"), key.serialize_pem()).unwrap();
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\nlog_dest stderr\n\
             listener {} 127.0.0.1\n\
             listener {} 127.0.0.1\ncafile {}\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n",
            self.tcp.port(),
            self.tls.port(),
            self.ca.cert_path.display(),
            d = d.display()
        );
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0 {
            conf.push_str("user root\n");
        }
        let path = d.join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for addr in [self.tcp, self.tls] {
            let up = (0..100).any(|_| {
                std::net::TcpStream::connect(addr).is_ok() || {
                    std::thread::sleep(Duration::from_millis(50));
                    false
                }
            });
            assert!(up, "mosquitto listens on {addr}");
        }
        Mosquitto { child }
    }

    /// A core (the cloud service alone) configured with `spooler` (`mqtt.spooler`).
    async fn core(&self, spooler: serde_json::Value) -> (Node, Arc<CloudService>) {
        let bundle = self.dir.join("bundle");
        if !bundle.exists() {
            std::fs::create_dir_all(&bundle).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "gw-s");
            let csr = params.serialize_request(&key).unwrap().pem().unwrap();
            let cert = self.ca.issue_from_csr(&csr, 30).unwrap();
            std::fs::write(bundle.join("thing.cert.pem"), cert.cert_pem).unwrap();
            std::fs::write(bundle.join("thing.private.key"), key.serialize_pem()).unwrap();
            std::fs::copy(&self.ca.cert_path, bundle.join("ca.pem")).unwrap();
        }
        let config = bundle.join("config.json");
        std::fs::write(
            &config,
            json!({
                "thingName": "gw-s", "rootCaPath": "ca.pem",
                "cloud": {"iotDataEndpoint": self.tls.to_string(),
                          "certificateFilePath": "thing.cert.pem", "privateKeyPath": "thing.private.key"},
                "services": {"aws.greengrass.Nucleus": {"configuration": {"mqtt": {"spooler": spooler}}}}
            })
            .to_string(),
        )
        .unwrap();
        let cloud = Arc::new(CloudService::with_options(
            None,
            CloudOptions {
                backoff_base: Duration::from_millis(100),
                backoff_cap: Duration::from_millis(300),
                connectivity_interval: Duration::from_secs(10),
                keep_alive_secs: 30,
            },
        ));
        let services: Vec<Arc<dyn Service>> = vec![cloud.clone()];
        let node = Node::start(
            NodeOptions {
                root: self.dir.join("root"),
                settings: Settings::load(&config).unwrap(),
            },
            services,
        )
        .await
        .unwrap();
        (node, cloud)
    }

    async fn observer(&self) -> (Client, Incoming) {
        let (c, rx) = Client::connect(ConnectOptions::new(self.tcp.to_string(), "observer"))
            .await
            .unwrap();
        c.subscribe_one("up/#", QoS::AtLeastOnce).await.unwrap();
        (c, rx)
    }
}

async fn component(node: &Node) -> IpcClient {
    let handle = node.handle().clone();
    handle
        .update_configuration(
            COMPONENT,
            &["accessControl".into()],
            1,
            json!({"aws.greengrass.ipc.mqttproxy": {"p:1": {
                "operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["up/#"]}}}),
        )
        .unwrap();
    let token = handle.component_token(COMPONENT);
    IpcClient::connect(node.ipc().socket_path(), &token)
        .await
        .unwrap()
}

fn body(topic: &str, qos: &str, n: u64) -> serde_json::Value {
    let mut payload = format!("{n}:").into_bytes();
    payload.resize(PAYLOAD, b'.');
    json!({"topicName": topic, "qos": qos, "payload": B64.encode(payload)})
}

fn number(payload: &[u8]) -> u64 {
    std::str::from_utf8(payload)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// (topic, number, qos) of everything that arrives within `quiet` of the previous one.
async fn collect(rx: &mut Incoming, want: usize, within: Duration) -> Vec<(String, u64, QoS)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match rx.recv_timeout(left).await {
            Some(p) => out.push((p.topic.to_string(), number(&p.payload), p.qos)),
            None => break,
        }
    }
    out
}

async fn wait_connected(cloud: &CloudService) {
    let mut state = cloud.link().unwrap().state();
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| *s == LinkState::Connected),
    )
    .await
    .expect("connected in time")
    .unwrap();
}

#[tokio::test]
async fn reject_when_full_names_the_bound_and_what_was_accepted_survives_a_restart_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cloud) = Cloud::new(dir.path()) else {
        return;
    };
    let spooler = json!({"maxSizeInBytes": 65536, "fullStrategy": "reject"});
    let (node, service) = cloud.core(spooler.clone()).await;
    let ipc = component(&node).await;

    // Offline, QoS 0 without keepQos0WhenOffline: dropped, counted, the caller told.
    let e = ipc
        .call("PublishToIoTCore", &body("up/a", "0", 0))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not connected"), "{e}");

    // QoS 1 is acknowledged once spooled, until the bound.
    let mut accepted = Vec::new();
    let error = loop {
        let n = accepted.len() as u64;
        let topic = if n.is_multiple_of(2) { "up/a" } else { "up/b" };
        match ipc.call("PublishToIoTCore", &body(topic, "1", n)).await {
            Ok(_) => accepted.push((topic.to_string(), n)),
            Err(e) => break e,
        }
        assert!(n < 1000, "64 KiB never filled");
    };
    assert!(
        error.to_string().contains("maxSizeInBytes = 65536")
            && error.to_string().contains("reject"),
        "{error}"
    );
    assert!(accepted.len() > 20, "{}", accepted.len());
    let status = service.status().unwrap().spool.unwrap();
    assert_eq!(status.depth, accepted.len() as u64, "{status:?}");
    assert!(
        status.bytes <= 65536 && status.bytes > 20 * PAYLOAD as u64,
        "{status:?}"
    );
    assert_eq!(status.rejected, 1, "{status:?}");
    assert_eq!(
        status.dropped, 2,
        "one QoS 0 offline, one refused full: {status:?}"
    );
    assert_eq!(status.storage, "disk");
    assert!(status.oldest_unsent_secs.is_some(), "{status:?}");
    drop(ipc);
    node.shutdown().await;
    drop(service); // the old spool handle closes before the new core opens the directory

    // A new core on the same root finds them; the cloud comes up and they all go out, in
    // order per topic (here: in the order accepted).
    let (node, service) = cloud.core(spooler).await;
    assert_eq!(
        service.status().unwrap().spool.unwrap().depth,
        accepted.len() as u64
    );
    let _m = cloud.start();
    let (observer, mut up) = cloud.observer().await;
    wait_connected(&service).await;
    let got = collect(&mut up, accepted.len(), Duration::from_secs(20)).await;
    let got: Vec<(String, u64)> = got.into_iter().map(|(t, n, _)| (t, n)).collect();
    assert_eq!(got, accepted, "every accepted message, in order");
    let mut drained = false;
    for _ in 0..100 {
        if service.status().unwrap().spool.unwrap().depth == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "acked after the PUBACKs");

    // Connected: QoS 1 still goes through the spool and out.
    let ipc = component(&node).await;
    ipc.call("PublishToIoTCore", &body("up/c", "1", 7777))
        .await
        .unwrap();
    let got = collect(&mut up, 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].0, "up/c");
    assert_eq!(got[0].1, 7777);
    node.shutdown().await;
    observer.disconnect().await.unwrap();
}

#[tokio::test]
async fn drop_oldest_qos0_makes_room_from_the_oldest_qos0_and_keeps_every_qos1() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cloud) = Cloud::new(dir.path()) else {
        return;
    };
    let spooler = json!({"maxSizeInBytes": 65536, "fullStrategy": "dropOldestQos0",
                         "keepQos0WhenOffline": true, "storageType": "Disk"});
    let (node, service) = cloud.core(spooler).await;
    let ipc = component(&node).await;

    // QoS 0 offline is kept; past the bound the oldest QoS 0 make room.
    let mut n = 0u64;
    for _ in 0..200 {
        ipc.call("PublishToIoTCore", &body("up/zero", "0", n))
            .await
            .unwrap();
        n += 1;
    }
    let status = service.status().unwrap().spool.unwrap();
    assert!(status.dropped > 0, "{status:?}");
    assert_eq!(status.rejected, 0, "{status:?}");
    assert_eq!(status.depth + status.dropped, 200, "{status:?}");
    // QoS 1 takes the room of the remaining QoS 0 until only QoS 1 is left.
    let mut qos1 = Vec::new();
    let error = loop {
        match ipc.call("PublishToIoTCore", &body("up/one", "1", n)).await {
            Ok(_) => qos1.push(n),
            Err(e) => break e,
        }
        n += 1;
        assert!(qos1.len() < 1000, "64 KiB never filled");
    };
    assert!(
        error.to_string().contains("no QoS 0 message is left"),
        "{error}"
    );
    let status = service.status().unwrap().spool.unwrap();
    assert_eq!(status.rejected, 1, "{status:?}");

    let _m = cloud.start();
    let (observer, mut up) = cloud.observer().await;
    wait_connected(&service).await;
    let kept_qos0 = (status.depth as usize).saturating_sub(qos1.len());
    let got = collect(&mut up, qos1.len() + kept_qos0, Duration::from_secs(20)).await;
    let ones: Vec<u64> = got
        .iter()
        .filter(|(t, _, _)| t == "up/one")
        .map(|(_, n, _)| *n)
        .collect();
    assert_eq!(ones, qos1, "every QoS 1 message, in order");
    let zeros: Vec<u64> = got
        .iter()
        .filter(|(t, _, _)| t == "up/zero")
        .map(|(_, n, _)| *n)
        .collect();
    assert_eq!(zeros.len(), kept_qos0);
    assert!(
        zeros.windows(2).all(|w| w[0] < w[1]),
        "kept QoS 0 in order: {zeros:?}"
    );
    node.shutdown().await;
    observer.disconnect().await.unwrap();
}
