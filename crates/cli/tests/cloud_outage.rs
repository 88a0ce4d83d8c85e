//! Issue 11's outage test, through the real binary: the cloud is Debian's mosquitto over
//! mutual TLS (certificates from a lichen-pki CA made here), stopped. A deployed component
//! (awsiotsdk) publishes 10,000 QoS 1 messages to IoT Core over IPC on 8 topics; the test
//! kill -9s the core midway and restarts it (the component is restarted with it and
//! continues after its last acknowledged message), then starts mosquitto. A subscriber
//! (a persistent session made before the outage, kept in mosquitto's persistence) counts:
//! every acknowledged message arrives, at least once, in order per topic. Skips with a
//! message when mosquitto is not installed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use lichen_mqtt_client::{Client, ConnectOptions, QoS};
use lichen_pki::LocalCa;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const TOTAL: u64 = 10_000;
const TOPICS: u64 = 8;
const COUNTER_ID: &str = "outage-counter";

fn python() -> PathBuf {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run scripts/setup-test-deps (scripts/test does)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// mosquitto with a plain listener (the counter) and an mTLS one (the core), persisting its
/// sessions and their queued messages across a stop.
struct Mosquitto {
    conf: PathBuf,
    tcp: SocketAddr,
    tls: SocketAddr,
    child: Option<Child>,
}

impl Mosquitto {
    fn configure(dir: &Path, ca: &LocalCa) -> Mosquitto {
        let server = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
            .unwrap();
        let key = rcgen::KeyPair::try_from(server.key_pkcs8_der.as_slice()).unwrap();
        std::fs::write(dir.join("server.pem"), &server.cert.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        let db = dir.join("mosquitto-db");
        std::fs::create_dir_all(&db).unwrap();
        let (tcp, tls) = (free_port(), free_port());
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous true\n\
             persistence true\npersistence_location {db}/\nautosave_interval 1\n\
             max_queued_messages 0\nlog_dest stderr\n\
             listener {tcp} 127.0.0.1\n\
             listener {tls} 127.0.0.1\ncafile {ca}\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\n",
            db = db.display(),
            ca = ca.cert_path.display(),
            d = dir.display()
        );
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
        if root {
            conf.push_str("user root\n");
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        Mosquitto {
            conf: path,
            tcp: SocketAddr::from(([127, 0, 0, 1], tcp)),
            tls: SocketAddr::from(([127, 0, 0, 1], tls)),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.conf.with_extension("log"))
            .unwrap();
        self.child = Some(
            Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        for addr in [self.tcp, self.tls] {
            eventually("mosquitto listening", Duration::from_secs(10), || {
                std::net::TcpStream::connect(addr).is_ok()
            });
        }
    }

    /// SIGTERM: mosquitto saves its persistence database and exits.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn counter_options(addr: SocketAddr) -> ConnectOptions {
    let mut o = ConnectOptions::new(addr.to_string(), COUNTER_ID);
    o.clean_start = false;
    o.session_expiry = Some(86_400);
    o
}

/// The messages mosquitto sent the counter (topic index, number), in arrival order.
type Arrivals = Arc<Mutex<Vec<(u64, u64)>>>;

fn parse_arrival(topic: &str, payload: &[u8]) -> Option<(u64, u64)> {
    let t = topic.strip_prefix("outage/")?.parse().ok()?;
    let text = std::str::from_utf8(payload).ok()?;
    let n = text.split(':').next()?.parse().ok()?;
    Some((t, n))
}

fn acked(work: &Path) -> BTreeMap<u64, Vec<u64>> {
    (0..TOPICS)
        .map(|t| {
            let text = read(&work.join(format!("acked-{t}")));
            let ns = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            (t, ns)
        })
        .collect()
}

fn acked_count(work: &Path) -> u64 {
    acked(work).values().map(|v| v.len() as u64).sum()
}

#[test]
fn every_acknowledged_message_arrives_in_order_per_topic_after_a_kill_9_during_an_outage() {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("skipping: {MOSQUITTO} is not installed (scripts/setup-test-deps)");
        return;
    }
    let python = python();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let ca = LocalCa::load_or_create(&base.join("ca")).unwrap();
    let mut cloud = Mosquitto::configure(&base, &ca);

    // The counter's persistent session exists before the outage; then the cloud stops.
    cloud.start();
    rt.block_on(async {
        let (c, _in) = Client::connect(counter_options(cloud.tcp)).await.unwrap();
        c.subscribe_one("outage/#", QoS::AtLeastOnce).await.unwrap();
        c.disconnect().await.unwrap();
    });
    cloud.stop();

    // The core's bundle: a key made here, a certificate from the CA mosquitto trusts.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "outage-gw");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.issue_from_csr(&csr, 30).unwrap();
    std::fs::write(base.join("thing.cert.pem"), cert.cert_pem).unwrap();
    std::fs::write(base.join("thing.private.key"), key.serialize_pem()).unwrap();
    std::fs::copy(&ca.cert_path, base.join("ca.pem")).unwrap();
    let config = format!(
        "thingName: outage-gw\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: {}\n  \
         certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n",
        cloud.tls
    );
    let mut core = TestCore::start_in(dir, "root", &config);

    // The publishing component.
    let artifacts = base.join("artifacts");
    let art = artifacts.join("com.test.IotPublisher/1.0.0");
    std::fs::create_dir_all(&art).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/iot_publisher.py"),
        art.join("iot_publisher.py"),
    )
    .unwrap();
    let recipe = serde_json::json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": "com.test.IotPublisher",
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": {
            "aws.greengrass.ipc.mqttproxy": {"com.test.IotPublisher:mqttproxy:1": {
                "operations": ["aws.greengrass#PublishToIoTCore"],
                "resources": ["outage/#"]
            }}
        }}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {
                "Run": format!("exec env TOTAL={TOTAL} TOPICS={TOPICS} {} -u {{artifacts:path}}/iot_publisher.py", python.display())
            },
            "Artifacts": [{"URI": "s3://test/com.test.IotPublisher/iot_publisher.py"}]
        }]
    });
    let recipes = recipe_dir(&base, "recipes", &[("pub.json", &recipe.to_string())]);
    let d = core.deploy(
        &recipes,
        Some(&artifacts),
        &["-m", "com.test.IotPublisher=1.0.0"],
    );
    assert_eq!(d["status"], "SUCCEEDED", "{d}\n{}", core.stderr());
    let work = core.work("com.test.IotPublisher");

    // Midway, kill -9; the restarted core restarts the component, which continues.
    eventually(
        "half the messages acknowledged",
        Duration::from_secs(120),
        || acked_count(&work) >= TOTAL / 2,
    );
    core.kill9();
    let at_kill = acked_count(&work);
    assert!(at_kill < TOTAL, "the kill came too late to test anything");
    core.spawn();
    eventually(
        "every message acknowledged",
        Duration::from_secs(240),
        || work.join("done").exists(),
    );
    let instances = read(&work.join("instances"));
    assert!(
        instances.lines().count() >= 2 && !instances.lines().nth(1).unwrap().contains("-1"),
        "the restarted component continued after its last acknowledged message: {instances}"
    );
    let acks = acked(&work);
    for (t, ns) in &acks {
        let want: Vec<u64> = (0..TOTAL).filter(|n| n % TOPICS == *t).collect();
        let got: BTreeSet<u64> = ns.iter().copied().collect();
        assert!(
            got.into_iter().eq(want.iter().copied()),
            "topic {t}: not every message acknowledged ({} of {}): {}",
            ns.len(),
            want.len(),
            read(&work.join("instances"))
        );
    }

    // Still offline: everything waits in the spool, which the status shows.
    let status = core.json(&["core", "status"])["cloud"].clone();
    assert_ne!(status["state"], "connected", "{status}");
    let spool = &status["spool"];
    assert!(spool["depth"].as_u64().unwrap() >= TOTAL, "{status}");
    assert!(spool["bytes"].as_u64().unwrap() > TOTAL * 64, "{status}");
    assert_eq!(spool["dropped"], 0, "{status}");
    assert!(spool["oldestUnsentSecs"].is_u64(), "{status}");
    let text = core.cli(&["core", "status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Cloud spool:"), "{text}");

    // The cloud comes back; the counter takes its queued messages.
    cloud.start();
    let arrivals: Arrivals = Arc::new(Mutex::new(Vec::new()));
    let counter = {
        let arrivals = arrivals.clone();
        let addr = cloud.tcp;
        rt.spawn(async move {
            let (c, mut incoming) = Client::connect(counter_options(addr)).await.unwrap();
            while let Some(p) = incoming.recv().await {
                if let Some(a) = parse_arrival(&p.topic, &p.payload) {
                    arrivals.lock().unwrap().push(a);
                }
            }
            drop(c);
        })
    };
    let started = Instant::now();
    // The core retries with a backoff capped at 60 s, then drains.
    eventually("every message delivered", Duration::from_secs(240), || {
        let got: BTreeSet<(u64, u64)> = arrivals.lock().unwrap().iter().copied().collect();
        got.len() as u64 >= TOTAL
    });
    eprintln!(
        "delivered {} messages ({} arrivals) {:?} after the cloud came back",
        TOTAL,
        arrivals.lock().unwrap().len(),
        started.elapsed()
    );
    counter.abort();

    // At least once, in order per topic: a message never arrives for the first time after
    // a later message of its topic did (a redelivery repeats, it never reorders).
    let arrivals = arrivals.lock().unwrap().clone();
    let mut first_seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (t, n) in &arrivals {
        if seen.insert((*t, *n)) {
            first_seen.entry(*t).or_default().push(*n);
        }
    }
    for (t, ns) in &acks {
        let order = first_seen.get(t).cloned().unwrap_or_default();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "topic {t}: first arrivals out of order"
        );
        for n in ns {
            assert!(
                seen.contains(&(*t, *n)),
                "acknowledged {t}/{n} never arrived"
            );
        }
    }
    eventually("the spool empties", Duration::from_secs(30), || {
        core.json(&["core", "status"])["cloud"]["spool"]["depth"] == 0
    });
    let log = core.stderr() + &read(&core.root.join("logs/lichen.log"));
    assert!(
        log.contains("cloud spool recovered"),
        "the restart found the spool"
    );
    assert!(
        log.contains("draining the cloud spool"),
        "the drain is logged"
    );
    core.stop();
}
