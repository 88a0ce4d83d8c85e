//! A cloud that misbehaves, played by a fake TLS server (certificate from the CA the core
//! trusts) on a real socket: after a valid CONNACK it sends an oversized packet, a malformed
//! packet, a second CONNACK, a SUBACK for a packet id never used. Each time the core says why
//! in an MQTT 5 DISCONNECT (Packet too large / Malformed Packet / Protocol Error), closes,
//! keeps the reason as the link's last error, reconnects after its backoff, and stays up: IPC
//! still answers. The last connection behaves, and the link stays connected on it.

mod cloud_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloud_support::*;
use lichen_mqtt::{ConnAck, Packet, Properties, Protocol, ReasonCode, SubAck, decode, to_vec};
use lichen_node::{CloudOptions, CloudService, LinkState, Service};
use lichen_pki::LocalCa;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

fn acceptor(ca: &LocalCa) -> TlsAcceptor {
    let server = ca
        .issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server.cert.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_pkcs8_der.clone())),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

async fn read_packet(s: &mut Tls, buf: &mut Vec<u8>, within: Duration) -> Option<Packet> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some((p, n))) = decode(buf, Protocol::V5, 1 << 20) {
            buf.drain(..n);
            return Some(p);
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn bytes(p: &Packet) -> Vec<u8> {
    to_vec(p, Protocol::V5).unwrap()
}

fn connack() -> Vec<u8> {
    bytes(&Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: Properties::default(),
    }))
}

/// What one connection of the fake server saw.
#[derive(Debug)]
struct Seen {
    accepted_at: Instant,
    /// The reason code of the core's DISCONNECT, if it sent one.
    disconnect: Option<ReasonCode>,
    closed: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_cloud_is_disconnected_logged_and_retried_while_the_core_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap();
    let tls = acceptor(&ca);

    // Each connection gets the next misbehaviour; the last one behaves.
    let misdeeds: Vec<(&str, Vec<u8>)> = vec![
        // A PUBLISH header announcing 200 MB, nothing after it.
        ("oversized", vec![0x30, 0x80, 0x80, 0x80, 0x60]),
        // Packet type 0 is reserved.
        ("malformed", vec![0x00, 0x00]),
        ("second CONNACK", connack()),
        (
            "SUBACK for an unknown id",
            bytes(&Packet::SubAck(SubAck {
                packet_id: 0xBEEF,
                reason_codes: vec![ReasonCode::Success],
                properties: Properties::default(),
            })),
        ),
    ];
    let rounds = misdeeds.len();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(String, Seen)>();
    tokio::spawn(async move {
        let mut misdeeds = misdeeds.into_iter();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let accepted_at = Instant::now();
            let Ok(mut s) = tls.accept(tcp).await else {
                continue;
            };
            let mut buf = Vec::new();
            match read_packet(&mut s, &mut buf, Duration::from_secs(5)).await {
                Some(Packet::Connect(_)) => {}
                _ => continue,
            }
            s.write_all(&connack()).await.unwrap();
            let Some((name, bad)) = misdeeds.next() else {
                // Behave: answer SUBSCRIBEs and PINGREQs until the core leaves.
                while let Some(p) = read_packet(&mut s, &mut buf, Duration::from_secs(60)).await {
                    let reply = match p {
                        Packet::Subscribe(sub) => Packet::SubAck(SubAck {
                            packet_id: sub.packet_id,
                            reason_codes: vec![ReasonCode::GrantedQos1; sub.filters.len()],
                            properties: Properties::default(),
                        }),
                        Packet::PingReq => Packet::PingResp,
                        Packet::Disconnect(_) => break,
                        _ => continue,
                    };
                    if s.write_all(&bytes(&reply)).await.is_err() {
                        break;
                    }
                }
                continue;
            };
            // Let the core settle on the connection (it subscribes its one filter) first.
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.write_all(&bad).await.unwrap();
            let mut disconnect = None;
            let closed;
            loop {
                match read_packet(&mut s, &mut buf, Duration::from_secs(5)).await {
                    Some(Packet::Disconnect(d)) => disconnect = Some(d.reason_code),
                    Some(Packet::Subscribe(sub)) => {
                        // Answered, so the SUBACK the misdeed sends is the only odd one.
                        let ack = Packet::SubAck(SubAck {
                            packet_id: sub.packet_id,
                            reason_codes: vec![ReasonCode::GrantedQos1; sub.filters.len()],
                            properties: Properties::default(),
                        });
                        let _ = s.write_all(&bytes(&ack)).await;
                    }
                    Some(_) => {}
                    None => {
                        closed = true;
                        break;
                    }
                }
            }
            let _ = seen_tx.send((
                name.to_string(),
                Seen {
                    accepted_at,
                    disconnect,
                    closed,
                },
            ));
        }
    });

    let config = bundle(dir.path(), &ca, "gw-bad", endpoint, "");
    let options = CloudOptions {
        backoff_base: Duration::from_millis(400),
        backoff_cap: Duration::from_millis(800),
        connectivity_interval: Duration::from_secs(10),
        keep_alive_secs: 30,
    };
    let cloud = Arc::new(CloudService::with_options(None, options));
    let services: Vec<Arc<dyn Service>> = vec![cloud.clone()];
    let node = start_node(&dir.path().join("root"), &config, services).await;
    let link = cloud.link().unwrap();
    let _sub = link
        .subscribe("down/#", lichen_mqtt_client::QoS::AtLeastOnce)
        .await
        .unwrap();

    let component = "com.example.Probe";
    node.handle()
        .update_configuration(component, &["setting".into()], 1, json!("still here"))
        .unwrap();
    let token = node.handle().component_token(component);
    let ipc = lichen_ipc::IpcClient::connect(node.ipc().socket_path(), &token)
        .await
        .unwrap();

    let expected = [
        (
            "oversized",
            ReasonCode::PacketTooLarge,
            "maximum packet size",
        ),
        ("malformed", ReasonCode::MalformedPacket, "malformed"),
        (
            "second CONNACK",
            ReasonCode::ProtocolError,
            "protocol violation",
        ),
        (
            "SUBACK for an unknown id",
            ReasonCode::ProtocolError,
            "unknown packet id",
        ),
    ];
    let mut previous_end: Option<Instant> = None;
    for (i, (name, code, error)) in expected.iter().enumerate() {
        let (seen_name, seen) = tokio::time::timeout(Duration::from_secs(20), seen_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("round {i} ({name}) never ended"))
            .unwrap();
        let ended = Instant::now();
        assert_eq!(&seen_name, name);
        assert_eq!(seen.disconnect, Some(*code), "{name}: {seen:?}");
        assert!(seen.closed, "{name}: the core closed the connection");
        if let Some(prev) = previous_end {
            // Each connection was lost right after it was made: the next attempt waits at
            // least half the base backoff (full jitter).
            let gap = seen.accepted_at.saturating_duration_since(prev);
            assert!(
                gap >= Duration::from_millis(150),
                "{name}: reconnected after {gap:?}"
            );
        }
        previous_end = Some(ended);
        // The reason is the link's last error (what `core status` and the log show).
        let last_error = || cloud.status().unwrap().last_error.unwrap_or_default();
        eventually(
            &format!("{name}: the reason as the last error"),
            Duration::from_secs(5),
            || last_error().contains(error),
        )
        .await;
        // The core is up: IPC answers.
        let reply = ipc
            .call(
                "GetConfiguration",
                &json!({"componentName": component, "keyPath": ["setting"]}),
            )
            .await
            .unwrap();
        assert_eq!(reply["value"]["setting"], "still here", "{reply}");
    }
    assert_eq!(rounds, expected.len());

    // The well-behaved server: connected, and it stays so.
    wait_link(&link, true, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*link.state().borrow(), LinkState::Connected);
    node.shutdown().await;
}
