//! The embedding hooks with real clients (paho-mqtt, mosquitto_pub/sub) over mTLS: a connection
//! gate admitting certificates of a caller's CA with an identity and a handle, an authorizer
//! using that identity (publish, subscribe, receive), a reserved-topic handler with replies only
//! to the requester and a bounded queue, server-side publishing, disconnect by certificate, and
//! connect/disconnect events.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::agent::{Agent, TlsFiles};
use common::*;
use lichen_broker::hooks::BoxFuture;
use lichen_broker::*;
use tokio::process::Command;
use tokio::sync::{Notify, mpsc};

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

/// A client's certificate files, issued by the test CA from a CSR.
struct Device {
    cert: PathBuf,
    key: PathBuf,
    fingerprint: String,
}

fn issue(ca: &lichen_pki::LocalCa, dir: &Path, cn: &str) -> Device {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let csr = params.serialize_request(&key).unwrap();
    let issued = ca.issue_from_csr(&csr.pem().unwrap(), 30).unwrap();
    let cert = dir.join(format!("{cn}.pem"));
    let key_path = dir.join(format!("{cn}.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Device {
        cert,
        key: key_path,
        fingerprint: lichen_pki::fingerprint(&issued.cert_der),
    }
}

/// What the gate attaches: proves the handle reaches the authorizer.
struct Tag(String);

/// Admits certificates whose fingerprint is allowed, as thing `thing-<CN>`, after a delay
/// (an async store lookup stands in for it).
struct TestGate {
    allowed: Arc<Mutex<HashSet<String>>>,
    delay: Duration,
}

impl ConnectionGate for TestGate {
    fn admit(&self, info: ConnectInfo) -> BoxFuture<GateDecision> {
        let allowed = self.allowed.clone();
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let known = info
                .fingerprint
                .as_ref()
                .is_some_and(|f| allowed.lock().unwrap().contains(f));
            match (known, info.common_name) {
                (true, Some(cn)) => GateDecision::Admit(Admission {
                    thing: format!("thing-{cn}"),
                    handle: Some(Arc::new(Tag(cn))),
                }),
                _ => GateDecision::Refuse("certificate not allowed".into()),
            }
        })
    }
}

/// A thing may use `t/<thing>/…`, `$svc/…`, and subscribe to `open/#` and `secret/#`, but
/// never receive `secret/…`. A client without the gate's tag may do nothing.
struct TestAuthorizer;

impl Authorizer for TestAuthorizer {
    fn allows(&self, c: ClientRef<'_>, action: Action<'_>) -> bool {
        let Some(tag) = c.handle_as::<Tag>() else {
            return false;
        };
        assert_eq!(c.thing, format!("thing-{}", tag.0));
        let own = format!("t/{}/", c.thing);
        match action {
            Action::Connect { client_id } => client_id == tag.0,
            Action::Publish { topic } => topic.starts_with(&own) || topic.starts_with("$svc/"),
            Action::Subscribe { filter } => {
                filter.starts_with(&own)
                    || filter.starts_with("$svc/")
                    || filter == "open/#"
                    || filter == "secret/#"
            }
            Action::Receive { topic } => !topic.starts_with("secret/"),
        }
    }

    fn checks_receive(&self) -> bool {
        true
    }
}

/// Hands every routed message to the test.
struct ForwardHandler(mpsc::UnboundedSender<InboundPublish>);

impl TopicHandler for ForwardHandler {
    fn handle(&self, m: InboundPublish) -> BoxFuture<()> {
        let _ = self.0.send(m);
        Box::pin(async {})
    }
}

/// Holds every message until released: fills its queue.
struct StuckHandler(Arc<Notify>);

impl TopicHandler for StuckHandler {
    fn handle(&self, _m: InboundPublish) -> BoxFuture<()> {
        let release = self.0.clone();
        Box::pin(async move { release.notified().await })
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String, Option<DisconnectKind>)>>);

impl ConnectionEvents for Recorder {
    fn connected(&self, c: &ClientIdentity, _peer: std::net::SocketAddr) {
        self.0
            .lock()
            .unwrap()
            .push((c.client_id.to_string(), c.thing.to_string(), None));
    }
    fn disconnected(&self, c: &ClientIdentity, kind: DisconnectKind) {
        self.0
            .lock()
            .unwrap()
            .push((c.client_id.to_string(), c.thing.to_string(), Some(kind)));
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    files: PathBuf,
    ca_pem: PathBuf,
    ca: Arc<lichen_pki::LocalCa>,
    allowed: Arc<Mutex<HashSet<String>>>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let ca = Arc::new(lichen_pki::LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
    Setup {
        ca_pem: ca.cert_path.clone(),
        files,
        ca,
        allowed: Arc::default(),
        _dir: dir,
    }
}

fn tls_config(state: &Path) -> BrokerConfig {
    BrokerConfig {
        state_dir: state.to_path_buf(),
        listeners: vec![ListenerConfig {
            kind: ListenerKind::Tls,
            bind: "127.0.0.1:0".parse().unwrap(),
        }],
        ..Default::default()
    }
}

impl Setup {
    fn device(&self, cn: &str, allowed: bool) -> Device {
        let d = issue(&self.ca, &self.files, cn);
        if allowed {
            self.allowed.lock().unwrap().insert(d.fingerprint.clone());
        }
        d
    }

    fn agent(&self, py: &Path, port: u16, version: &str, id: &str, d: &Device) -> Agent {
        Agent::spawn(
            py,
            port,
            version,
            id,
            Some(TlsFiles {
                ca: &self.ca_pem,
                cert: &d.cert,
                key: &d.key,
            }),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_authorizer_routes_replies_and_revocation_with_paho() {
    let py = need!(python(), "python venv with paho-mqtt");
    let s = setup();
    let a = s.device("a", true);
    let b = s.device("b", true);
    let stranger = s.device("stranger", false);
    let (tx, mut routed) = mpsc::unbounded_channel();
    let events = Arc::new(Recorder::default());
    let hooks = Hooks {
        gate: Some(Arc::new(TestGate {
            allowed: s.allowed.clone(),
            delay: Duration::from_millis(50),
        })),
        authorizer: Some(Arc::new(TestAuthorizer)),
        routes: vec![TopicRoute::new(
            "$svc/req",
            RouteMode::HandlerOnly,
            Arc::new(ForwardHandler(tx)),
        )],
        events: Some(events.clone()),
        ca: Some(s.ca.clone()),
    };
    let state = s.files.join("state");
    let h = start_with_hooks(tls_config(&state), lichen_bus::Bus::new(), hooks)
        .await
        .unwrap();
    assert_eq!(
        h.ca_cert_pem(),
        Some(s.ca.cert_pem.as_str()),
        "the given CA serves"
    );
    assert!(!state.join("ca.key").exists(), "no CA of the broker's own");
    let port = h.addr(ListenerKind::Tls).unwrap().port();

    let mut ca = s.agent(&py, port, "5", "a", &a);
    assert_eq!(ca.expect("connack", |_| true).await["rc"], 0);
    let mut cb = s.agent(&py, port, "311", "b", &b);
    assert_eq!(cb.expect("connack", |_| true).await["rc"], 0);
    // Unknown to the gate: CONNACK Not authorized (v5 0x87, v3.1.1 return code 5).
    let mut cs = s.agent(&py, port, "5", "stranger", &stranger);
    assert_eq!(cs.expect("connack", |_| true).await["rc"], 135);
    cs.quit().await;
    let mut cs3 = s.agent(&py, port, "311", "stranger", &stranger);
    let rc = cs3.expect("connack", |_| true).await["rc"].clone();
    assert_ne!(rc, 0, "v3.1.1 refused too");
    cs3.quit().await;
    // A client id other than the one the authorizer allows for this certificate.
    let mut wrong = s.agent(&py, port, "5", "not-b", &b);
    assert_eq!(wrong.expect("connack", |_| true).await["rc"], 135);
    wrong.quit().await;

    // Subscribe: own topics yes, the other thing's no.
    assert_eq!(ca.subscribe("t/thing-a/#", 1).await, vec![1]);
    assert_eq!(ca.subscribe("t/thing-b/#", 1).await, vec![135]);
    assert_eq!(cb.subscribe("t/thing-b/x", 1).await, vec![1]);
    assert_eq!(cb.subscribe("t/thing-a/#", 1).await, vec![128]);
    // Publish on the other thing's topic: refused, nobody gets it.
    ca.publish("t/thing-b/x", "intrusion", 1).await;
    assert_eq!(ca.expect("puback", |_| true).await["rc"], 135);

    // The reserved topic goes to the handler alone, with the sender's identity.
    assert_eq!(cb.subscribe("$svc/req", 1).await, vec![1]);
    assert_eq!(ca.subscribe("$svc/reply", 1).await, vec![1]);
    assert_eq!(cb.subscribe("$svc/reply", 1).await, vec![1]);
    ca.publish("$svc/req", "hello", 1).await;
    assert_eq!(ca.expect("puback", |_| true).await["rc"], 0);
    let m = tokio::time::timeout(Duration::from_secs(10), routed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*m.client.client_id, "a");
    assert_eq!(&*m.client.thing, "thing-a");
    assert_eq!(
        m.client.fingerprint.as_deref(),
        Some(a.fingerprint.as_str())
    );
    assert_eq!(&m.payload[..], b"hello");
    // The reply reaches the requester only.
    assert!(
        h.publish_to_client(
            "a",
            "$svc/reply",
            Bytes::from_static(b"for-a"),
            QoS::AtLeastOnce
        )
        .unwrap()
    );
    let got = ca.expect("message", |_| true).await;
    assert_eq!(got["topic"], "$svc/reply");
    assert_eq!(got["payload"], "for-a");
    assert!(
        !h.publish_to_client("b", "$other/topic", Bytes::new(), QoS::AtLeastOnce)
            .unwrap(),
        "no subscription matches: not delivered"
    );

    // Server-side publish to subscribers.
    assert_eq!(
        h.publish(
            "t/thing-b/x",
            Bytes::from_static(b"srv"),
            QoS::AtLeastOnce,
            false
        )
        .unwrap(),
        1
    );
    let got = cb.expect("message", |_| true).await;
    assert_eq!(
        got["topic"], "t/thing-b/x",
        "b got neither $svc/req, the reply to a, nor a's intrusion: {:?}",
        cb.seen
    );
    assert_eq!(got["payload"], "srv");

    // Receive checks: the subscription to secret/# is allowed, its deliveries are not.
    assert_eq!(ca.subscribe("secret/#", 1).await, vec![1]);
    assert_eq!(ca.subscribe("open/#", 1).await, vec![1]);
    h.publish(
        "secret/1",
        Bytes::from_static(b"s"),
        QoS::AtLeastOnce,
        false,
    )
    .unwrap();
    h.publish("open/1", Bytes::from_static(b"o"), QoS::AtLeastOnce, false)
        .unwrap();
    let got = ca.expect("message", |_| true).await;
    assert_eq!(
        got["topic"], "open/1",
        "secret/1 (queued first) was dropped"
    );

    // Revoking a's certificate kicks its live connection, and its reconnect is refused.
    s.allowed.lock().unwrap().remove(&a.fingerprint);
    assert_eq!(h.disconnect_certificate(&a.fingerprint), 1);
    assert_eq!(ca.expect("disconnect", |_| true).await["rc"], 135);
    // paho reconnects by itself after about a second.
    assert_eq!(ca.expect("connack", |_| true).await["rc"], 135);
    ca.quit().await;
    let clients: Vec<String> = h
        .connected_clients()
        .iter()
        .map(|c| c.client_id.to_string())
        .collect();
    assert_eq!(clients, vec!["b".to_string()]);
    assert!(!h.disconnect_client("a"), "a is not connected");
    cb.quit().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ev = events.0.lock().unwrap().clone();
    let of = |id: &str| -> Vec<Option<DisconnectKind>> {
        ev.iter().filter(|e| e.0 == id).map(|e| e.2).collect()
    };
    assert_eq!(of("a"), vec![None, Some(DisconnectKind::Server)], "{ev:?}");
    assert_eq!(of("b"), vec![None, Some(DisconnectKind::Client)], "{ev:?}");
    assert!(ev.iter().all(|e| e.1 == format!("thing-{}", e.0)), "{ev:?}");
    assert!(of("stranger").is_empty(), "refused clients never connected");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_handler_queue_answers_quota_exceeded_and_counts() {
    let py = need!(python(), "python venv with paho-mqtt");
    let s = setup();
    let a = s.device("a", true);
    let release = Arc::new(Notify::new());
    let mut route = TopicRoute::new(
        "$svc/",
        RouteMode::HandlerOnly,
        Arc::new(StuckHandler(release.clone())),
    );
    route.queue_capacity = 2;
    let hooks = Hooks {
        gate: Some(Arc::new(TestGate {
            allowed: s.allowed.clone(),
            delay: Duration::ZERO,
        })),
        authorizer: Some(Arc::new(TestAuthorizer)),
        routes: vec![route],
        ca: Some(s.ca.clone()),
        ..Default::default()
    };
    let h = start_with_hooks(
        tls_config(&s.files.join("state")),
        lichen_bus::Bus::new(),
        hooks,
    )
    .await
    .unwrap();
    let port = h.addr(ListenerKind::Tls).unwrap().port();
    let mut ca = s.agent(&py, port, "5", "a", &a);
    assert_eq!(ca.expect("connack", |_| true).await["rc"], 0);
    // One held by the worker, two queued, the rest dropped.
    for i in 0..6 {
        ca.publish("$svc/x", &i.to_string(), 1).await;
    }
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(ca.expect("puback", |_| true).await["rc"].as_i64().unwrap());
    }
    let quota = codes.iter().filter(|c| **c == 151).count();
    assert!(quota >= 3, "at most 3 accepted: {codes:?}");
    assert_eq!(
        codes.iter().filter(|c| **c == 0).count() + quota,
        6,
        "{codes:?}"
    );
    assert_eq!(h.route_drops(), vec![("$svc/".to_string(), quota as u64)]);
    // The connection itself never waited: it still answers.
    assert_eq!(ca.subscribe("t/thing-a/x", 1).await, vec![1]);
    release.notify_waiters();
    ca.quit().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_does_not_answer_in_time_gets_server_unavailable() {
    let py = need!(python(), "python venv with paho-mqtt");
    let s = setup();
    let a = s.device("a", true);
    let hooks = Hooks {
        gate: Some(Arc::new(TestGate {
            allowed: s.allowed.clone(),
            delay: Duration::from_secs(30),
        })),
        ca: Some(s.ca.clone()),
        ..Default::default()
    };
    let mut cfg = tls_config(&s.files.join("state"));
    cfg.limits.connect_timeout_secs = 1;
    let h = start_with_hooks(cfg, lichen_bus::Bus::new(), hooks)
        .await
        .unwrap();
    let port = h.addr(ListenerKind::Tls).unwrap().port();
    let started = std::time::Instant::now();
    let mut ca = s.agent(&py, port, "5", "a", &a);
    assert_eq!(ca.expect("connack", |_| true).await["rc"], 136);
    assert!(started.elapsed() < Duration::from_secs(8));
    ca.quit().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_through_the_gate_and_the_handler() {
    let sub_bin = need!(tool("mosquitto_sub"), "mosquitto-clients");
    let pub_bin = need!(tool("mosquitto_pub"), "mosquitto-clients");
    let s = setup();
    let a = s.device("a", true);
    let stranger = s.device("stranger", false);
    let (tx, mut routed) = mpsc::unbounded_channel();
    let hooks = Hooks {
        gate: Some(Arc::new(TestGate {
            allowed: s.allowed.clone(),
            delay: Duration::ZERO,
        })),
        authorizer: Some(Arc::new(TestAuthorizer)),
        routes: vec![TopicRoute::new(
            "$svc/req",
            RouteMode::HandlerAndSubscribers,
            Arc::new(ForwardHandler(tx)),
        )],
        ca: Some(s.ca.clone()),
        ..Default::default()
    };
    let h = start_with_hooks(
        tls_config(&s.files.join("state")),
        lichen_bus::Bus::new(),
        hooks,
    )
    .await
    .unwrap();
    let port = h.addr(ListenerKind::Tls).unwrap().port().to_string();
    let tls_args = |d: &Device| -> Vec<String> {
        vec![
            "-h".into(),
            "localhost".into(),
            "-p".into(),
            port.clone(),
            "--cafile".into(),
            s.ca_pem.display().to_string(),
            "--cert".into(),
            d.cert.display().to_string(),
            "--key".into(),
            d.key.display().to_string(),
        ]
    };
    // Refused by the gate, both protocol versions.
    for v in ["mqttv5", "mqttv311"] {
        let (ok, out, err) = run(
            Command::new(&sub_bin)
                .args(tls_args(&stranger))
                .args(["-V", v, "-i", "stranger", "-t", "t/x", "-C", "1", "-W", "5"]),
            20,
        )
        .await;
        assert!(!ok, "{v}: {out}");
        assert!(err.to_lowercase().contains("not authori"), "{v}: {err}");
    }
    // In HandlerAndSubscribers mode a subscriber gets the message too, and so does the handler.
    let mut sub_cmd = Command::new(&sub_bin);
    sub_cmd.args(tls_args(&a)).args([
        "-V", "mqttv5", "-i", "a", "-t", "$svc/req", "-C", "1", "-W", "15",
    ]);
    let sub = tokio::spawn(async move { run(&mut sub_cmd, 30).await });
    // The publisher is a second thing (the test authorizer ties the client id to the
    // certificate, and reusing `a` would take the subscriber's session over).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let b = s.device("b", true);
    let (ok, _out, err) = run(
        Command::new(&pub_bin).args(tls_args(&b)).args([
            "-V",
            "mqttv5",
            "-i",
            "b",
            "-t",
            "$svc/req",
            "-m",
            "via-mosquitto",
            "-q",
            "1",
        ]),
        20,
    )
    .await;
    assert!(ok, "mosquitto_pub: {err}");
    let (ok, out, err) = sub.await.unwrap();
    assert!(ok, "mosquitto_sub: {err}");
    assert_eq!(out.trim(), "via-mosquitto");
    let m = tokio::time::timeout(Duration::from_secs(5), routed.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*m.client.thing, "thing-b");
    assert_eq!(&m.payload[..], b"via-mosquitto");
    h.shutdown().await;
}
