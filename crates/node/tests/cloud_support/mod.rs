//! Shared by the `cloud_*` tests: Debian's mosquitto as the cloud (an mTLS listener for the
//! core, a plain one for the test's observer, restartable on the same ports), a device bundle
//! from a lichen-pki CA, a TCP proxy the test controls, and waits on the link.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_core::settings::Settings;
use lichen_node::{CloudLink, CloudOptions, LinkState, Node, NodeOptions, Service};
use lichen_pki::LocalCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub struct Mosquitto {
    child: Option<Child>,
    conf: PathBuf,
    /// Plain TCP, for the test's observer.
    pub tcp: SocketAddr,
    /// Mutual TLS, for the core.
    pub tls: SocketAddr,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|u| u.parse::<u32>().ok())
        == Some(0)
}

impl Mosquitto {
    /// mosquitto with TLS + required client certificates signed by `ca`; `None` (after a
    /// message) when it is not installed.
    pub fn start(dir: &Path, ca: &LocalCa) -> Option<Mosquitto> {
        Self::start_with(dir, ca, "")
    }

    /// As [`Mosquitto::start`], with `extra` (global mosquitto.conf lines, each ending in a
    /// newline) before the listeners.
    pub fn start_with(dir: &Path, ca: &LocalCa, extra: &str) -> Option<Mosquitto> {
        if !Path::new(MOSQUITTO).exists() {
            eprintln!("skipping: {MOSQUITTO} is not installed (scripts/setup-test-deps)");
            return None;
        }
        let server = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
            .unwrap();
        let key = rcgen::KeyPair::try_from(server.key_pkcs8_der.as_slice()).unwrap();
        std::fs::write(dir.join("server.pem"), &server.cert.cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        let (tcp_port, tls_port) = (free_port(), free_port());
        let mut conf = format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\nlog_dest stderr\n{extra}\
             listener {tcp_port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\n",
            ca = ca.cert_path.display(),
            d = dir.display()
        );
        if is_root() {
            conf.push_str("user root\n");
        }
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut m = Mosquitto {
            child: None,
            conf: conf_path,
            tcp: SocketAddr::from(([127, 0, 0, 1], tcp_port)),
            tls: SocketAddr::from(([127, 0, 0, 1], tls_port)),
        };
        m.restart();
        Some(m)
    }

    /// Kills it (the core sees the connection drop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports (no persistence: every session is gone).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let child = Command::new(MOSQUITTO)
                .arg("-c")
                .arg(&self.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            self.child = Some(child);
            let up = (0..60).any(|_| {
                std::net::TcpStream::connect(self.tcp).is_ok()
                    && std::net::TcpStream::connect(self.tls).is_ok()
                    || {
                        std::thread::sleep(Duration::from_millis(50));
                        false
                    }
            });
            if up {
                return;
            }
            // The old ports may linger a moment after a kill: try again.
            self.stop();
            assert!(Instant::now() < deadline, "mosquitto never listened again");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A device bundle under `dir/bundle`: a key made here, a certificate for `thing` from `ca`,
/// and `config.yaml` pointing at `endpoint`, followed by `extra` (YAML, top level).
pub fn bundle(dir: &Path, ca: &LocalCa, thing: &str, endpoint: SocketAddr, extra: &str) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, thing);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.issue_from_csr(&csr, 30).unwrap();
    std::fs::write(bundle.join("thing.cert.pem"), cert.cert_pem).unwrap();
    std::fs::write(bundle.join("thing.private.key"), key.serialize_pem()).unwrap();
    std::fs::copy(&ca.cert_path, bundle.join("ca.pem")).unwrap();
    let config = bundle.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "thingName: {thing}\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: {endpoint}\n  \
             certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n{extra}"
        ),
    )
    .unwrap();
    config
}

/// Short backoff and the given keep alive, for tests.
pub fn fast(keep_alive_secs: u16) -> CloudOptions {
    CloudOptions {
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(400),
        connectivity_interval: Duration::from_secs(10),
        keep_alive_secs,
    }
}

pub async fn start_node(root: &Path, config: &Path, services: Vec<Arc<dyn Service>>) -> Node {
    Node::start(
        NodeOptions {
            root: root.to_path_buf(),
            settings: Settings::load(config).unwrap(),
        },
        services,
    )
    .await
    .unwrap()
}

/// Waits until the link is (or is not) connected; returns how long it took.
pub async fn wait_link(link: &CloudLink, connected: bool, within: Duration) -> Duration {
    let started = Instant::now();
    let mut state = link.state();
    let ok = tokio::time::timeout(
        within,
        state.wait_for(|s| matches!(s, LinkState::Connected) == connected),
    )
    .await;
    assert!(
        matches!(ok, Ok(Ok(_))),
        "link never {}: {:?}",
        if connected {
            "connected"
        } else {
            "disconnected"
        },
        *link.state().borrow()
    );
    started.elapsed()
}

/// A TCP proxy to `target`; while `forward` is false it passes no byte either way but keeps
/// every socket open (a half-open link as the core sees it).
pub async fn proxy(target: SocketAddr, forward: watch::Receiver<bool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::spawn(pipe(ri, wo, forward.clone()));
            tokio::spawn(pipe(ro, wi, forward.clone()));
        }
    });
    addr
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut forward: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if forward.wait_for(|f| *f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Polls `f` every 50 ms until it holds, or panics naming `what`.
pub async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The python of the repo's .venv (awsiotsdk, paho-mqtt), or `None` after a message.
pub fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LICHEN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} missing (scripts/setup-test-deps)",
            p.display()
        );
        None
    }
}

/// `mosquitto_sub` on `addr` for `count` messages on `topic` (`-v`: "topic payload" lines),
/// started now; collect with [`Sub::lines`].
pub struct Sub(Option<std::process::Child>);

impl Sub {
    pub fn start(addr: SocketAddr, topic: &str, count: usize, extra: &[&str]) -> Sub {
        let child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &addr.port().to_string(),
                "-V",
                "mqttv5",
                "-q",
                "1",
            ])
            .args(["-t", topic, "-C", &count.to_string(), "-W", "20"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients)");
        Sub(Some(child))
    }

    pub fn lines(mut self) -> Vec<String> {
        let out = self.0.take().unwrap().wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `mosquitto_pub` of one message (QoS 1, MQTT 5) with extra arguments; asserts success.
pub fn publish(addr: SocketAddr, client_id: &str, topic: &str, payload: &str, extra: &[&str]) {
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &addr.port().to_string(),
            "-V",
            "mqttv5",
            "-q",
            "1",
        ])
        .args(["-i", client_id, "-t", topic, "-m", payload])
        .args(extra)
        .output()
        .expect("mosquitto_pub (Debian package mosquitto-clients)");
    assert!(
        out.status.success(),
        "mosquitto_pub {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
