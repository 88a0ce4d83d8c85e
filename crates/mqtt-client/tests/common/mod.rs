//! Shared test helpers: certificates from `lichen_pki::LocalCa`, the lichen broker on
//! ephemeral ports, and Debian's mosquitto started on a free port.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lichen_broker::{BrokerConfig, BrokerHandle, ListenerConfig, ListenerKind};
use lichen_mqtt_client::{ConnectOptions, Protocol, TlsFiles, Transport};
use lichen_pki::LocalCa;

/// A client key + certificate issued by `ca` from a CSR, written as PEM files in `dir`.
pub fn client_cert(ca: &LocalCa, dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params.serialize_request(&key).unwrap();
    let issued = ca.issue_from_csr(&csr.pem().unwrap(), 30).unwrap();
    let cert_path = dir.join(format!("{name}.cert.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, &issued.cert_pem).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path, issued.cert_pem)
}

pub fn tls(ca: &Path, cert: &Path, key: &Path) -> Transport {
    Transport::Tls(TlsFiles {
        ca: ca.to_path_buf(),
        client_cert: Some(cert.to_path_buf()),
        client_key: Some(key.to_path_buf()),
        server_name: None,
    })
}

pub fn options(addr: SocketAddr, id: &str, protocol: Protocol) -> ConnectOptions {
    let mut o = ConnectOptions::new(addr.to_string(), id);
    o.protocol = protocol;
    o
}

fn allow_all() -> lichen_broker::DeviceGroups {
    serde_json::from_value(serde_json::json!({
        "formatVersion": "2021-03-05",
        "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
        "policies": {"all": {"s": {"operations": ["*"], "resources": ["*"]}}}
    }))
    .unwrap()
}

/// The lichen broker with a plain and a TLS listener on loopback, allowing everything.
pub async fn lichen_broker(dir: &Path) -> (BrokerHandle, lichen_bus::Bus) {
    let config = BrokerConfig {
        state_dir: dir.to_path_buf(),
        listeners: vec![
            ListenerConfig {
                kind: ListenerKind::Tcp,
                bind: "127.0.0.1:0".parse().unwrap(),
            },
            ListenerConfig {
                kind: ListenerKind::Tls,
                bind: "127.0.0.1:0".parse().unwrap(),
            },
        ],
        device_groups: allow_all(),
        ..Default::default()
    };
    let bus = lichen_bus::Bus::new();
    let h = lichen_broker::start(config, bus.clone()).await.unwrap();
    (h, bus)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// mosquitto on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub tcp: SocketAddr,
    pub tls: SocketAddr,
    pub ca: PathBuf,
    pub ca_handle: LocalCa,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Starts mosquitto with a plain listener and an mTLS listener (certificates from a LocalCa
/// in `dir`). `None` when mosquitto is not installed (scripts/setup-test-deps installs it).
pub fn mosquitto(dir: &Path) -> Option<Mosquitto> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("skipping: {MOSQUITTO} is not installed (scripts/setup-test-deps)");
        return None;
    }
    let ca = LocalCa::load_or_create(&dir.join("ca")).unwrap();
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
        .unwrap();
    let key = rcgen::KeyPair::try_from(server.key_pkcs8_der.as_slice()).unwrap();
    std::fs::write(dir.join("server.pem"), &server.cert.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let (tcp_port, tls_port) = (free_port(), free_port());
    let mut conf = format!(
        "per_listener_settings false\nallow_anonymous true\npersistence false\nlog_dest stderr\n\
         listener {tcp_port} 127.0.0.1\n\
         listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n",
        ca = ca.cert_path.display(),
        d = dir.display()
    );
    // Running as root, mosquitto drops to user `mosquitto`, which cannot read our temp dir.
    if nix_is_root() {
        conf.push_str("user root\n");
    }
    let conf_path = dir.join("mosquitto.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Mosquitto {
        child,
        tcp: SocketAddr::from(([127, 0, 0, 1], tcp_port)),
        tls: SocketAddr::from(([127, 0, 0, 1], tls_port)),
        ca: ca.cert_path.clone(),
        ca_handle: ca,
    };
    for addr in [m.tcp, m.tls] {
        let mut up = false;
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(up, "mosquitto listens on {addr}");
    }
    Some(m)
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
