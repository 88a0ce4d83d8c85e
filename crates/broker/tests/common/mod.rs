//! Shared helpers for the broker integration tests: an in-process broker on ephemeral ports,
//! a raw MQTT test client built on lichen-mqtt, and lookup of the external tools.
#![allow(dead_code)]

pub mod agent;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use lichen_broker::{BrokerConfig, BrokerHandle, ListenerConfig, ListenerKind};
use lichen_mqtt::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn allow_all() -> lichen_broker::DeviceGroups {
    serde_json::from_value(serde_json::json!({
        "formatVersion": "2021-03-05",
        "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
        "policies": {"all": {"s": {"operations": ["*"], "resources": ["*"]}}}
    }))
    .unwrap()
}

pub fn config(dir: &Path, tls: bool) -> BrokerConfig {
    let mut c = BrokerConfig {
        state_dir: dir.to_path_buf(),
        listeners: vec![ListenerConfig {
            kind: ListenerKind::Tcp,
            bind: "127.0.0.1:0".parse().unwrap(),
        }],
        device_groups: allow_all(),
        ..Default::default()
    };
    if tls {
        c.listeners.push(ListenerConfig {
            kind: ListenerKind::Tls,
            bind: "127.0.0.1:0".parse().unwrap(),
        });
    }
    c
}

pub async fn start(c: BrokerConfig) -> (BrokerHandle, lichen_bus::Bus) {
    let bus = lichen_bus::Bus::new();
    let h = lichen_broker::start(c, bus.clone())
        .await
        .expect("broker starts");
    (h, bus)
}

pub fn tcp_addr(h: &BrokerHandle) -> SocketAddr {
    h.addr(ListenerKind::Tcp).expect("tcp listener")
}

/// A minimal MQTT client speaking through the lichen codec, for exact protocol checks.
pub struct Client {
    pub stream: TcpStream,
    pub protocol: Protocol,
    buf: BytesMut,
}

pub fn connect_packet(protocol: Protocol, id: &str) -> Connect {
    Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

impl Client {
    pub async fn raw(addr: SocketAddr, protocol: Protocol) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connects");
        Client {
            stream,
            protocol,
            buf: BytesMut::new(),
        }
    }

    pub fn from_stream(stream: TcpStream, protocol: Protocol) -> Client {
        Client {
            stream,
            protocol,
            buf: BytesMut::new(),
        }
    }

    pub async fn connect_with(addr: SocketAddr, c: Connect) -> (Client, ConnAck) {
        let mut cl = Client::raw(addr, c.protocol).await;
        cl.send(&Packet::Connect(Box::new(c))).await;
        match cl.recv().await {
            Some(Packet::ConnAck(a)) => (cl, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn connect(addr: SocketAddr, protocol: Protocol, id: &str) -> Client {
        let (c, ack) = Client::connect_with(addr, connect_packet(protocol, id)).await;
        assert_eq!(ack.reason_code, ReasonCode::Success);
        c
    }

    pub async fn send(&mut self, p: &Packet) {
        let bytes = to_vec(p, self.protocol).expect("encodes");
        self.stream.write_all(&bytes).await.expect("writes");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Next packet, or None on close / 5 s timeout.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(Duration::from_secs(5)).await
    }

    pub async fn recv_within(&mut self, d: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Ok(Some((p, n))) = decode(&self.buf, self.protocol, MAX_PACKET_SIZE) {
                let _ = self.buf.split_to(n);
                return Some(p);
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Waits for the server to close; returns the DISCONNECT reason if one was sent.
    pub async fn closed_with(&mut self) -> Option<ReasonCode> {
        let mut reason = None;
        loop {
            match self.recv().await {
                Some(Packet::Disconnect(d)) => reason = Some(d.reason_code),
                Some(_) => {}
                None => return reason,
            }
        }
    }

    pub async fn subscribe(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> Vec<ReasonCode> {
        let mut properties = Properties::default();
        properties.subscription_identifiers.extend(id);
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(filter.into(), options)],
            properties,
        }))
        .await;
        match self.recv().await {
            Some(Packet::SubAck(s)) => s.reason_codes,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        packet_id: u16,
    ) {
        self.send(&Packet::Publish(publish(
            topic, payload, qos, retain, packet_id,
        )))
        .await;
    }

    /// Next PUBLISH, skipping acks.
    pub async fn next_publish(&mut self) -> Option<Publish> {
        loop {
            match self.recv().await? {
                Packet::Publish(p) => return Some(p),
                _ => continue,
            }
        }
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool, packet_id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        properties: Properties::default(),
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..Default::default()
    }
}

/// Path of an external tool, or None (the caller prints why it skips).
pub fn tool(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// The test venv's Python with paho-mqtt, or None.
pub fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var("LICHEN_TEST_PYTHON").ok().map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.exists() {
            let ok = std::process::Command::new(&c)
                .args(["-c", "import paho.mqtt"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Some(c);
            }
        }
    }
    None
}

pub fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// Certificates for TLS tests: a device key/cert pair (self-signed) written to `dir`.
pub fn device_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.pem())
}

/// Runs a command with a timeout; returns (success, stdout, stderr).
pub async fn run(cmd: &mut tokio::process::Command, secs: u64) -> (bool, String, String) {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(secs), cmd.output()).await;
    match out {
        Ok(Ok(o)) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Ok(Err(e)) => (false, String::new(), e.to_string()),
        Err(_) => (false, String::new(), "timed out".into()),
    }
}
