//! Servers that misbehave, played by a fake peer on a real socket: refusals, a socket closed
//! mid-flight, silence, and (property test) arbitrary bytes, which never panic the client.

use std::net::SocketAddr;
use std::time::Duration;

use lichen_mqtt::{ConnAck, Packet, Properties, Protocol, ReasonCode, decode, to_vec};
use lichen_mqtt_client::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Reads one whole packet (the peer's CONNECT, a PUBLISH, …).
async fn read_packet(s: &mut TcpStream, protocol: Protocol, buf: &mut Vec<u8>) -> Option<Packet> {
    loop {
        if let Ok(Some((p, n))) = decode(buf, protocol, 1 << 20) {
            buf.drain(..n);
            return Some(p);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn connack(protocol: Protocol, reason: ReasonCode, reason_string: Option<&str>) -> Vec<u8> {
    let properties = Properties {
        reason_string: reason_string.map(str::to_string),
        ..Default::default()
    };
    to_vec(
        &Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: reason,
            properties,
        }),
        protocol,
    )
    .unwrap()
}

fn opts(addr: SocketAddr, protocol: Protocol) -> ConnectOptions {
    let mut o = ConnectOptions::new(addr.to_string(), "victim");
    o.protocol = protocol;
    o.connect_timeout = Duration::from_secs(2);
    o
}

#[tokio::test]
async fn connack_refusals_carry_the_reason_code_and_string() {
    for (protocol, reason, text) in [
        (
            Protocol::V5,
            ReasonCode::NotAuthorized,
            Some("thing is not registered"),
        ),
        (Protocol::V311, ReasonCode::BadUserNameOrPassword, None),
    ] {
        let (l, addr) = listener().await;
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            read_packet(&mut s, protocol, &mut buf).await;
            s.write_all(&connack(protocol, reason, text)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let e = Client::connect(opts(addr, protocol)).await.err().unwrap();
        match &e {
            ClientError::ConnectRefused {
                reason: r,
                reason_string,
                ..
            } => {
                assert_eq!(*r, reason);
                assert_eq!(reason_string.as_deref(), text);
            }
            other => panic!("expected a refusal, got {other}"),
        }
        if let Some(t) = text {
            assert!(e.to_string().contains(t), "{e}");
        }
    }
}

#[tokio::test]
async fn a_server_closing_mid_flight_fails_the_pending_publish_and_says_so() {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        read_packet(&mut s, Protocol::V5, &mut buf).await;
        s.write_all(&connack(Protocol::V5, ReasonCode::Success, None))
            .await
            .unwrap();
        // Take the QoS 1 PUBLISH, never acknowledge it, and drop the socket.
        let p = read_packet(&mut s, Protocol::V5, &mut buf).await;
        assert!(matches!(p, Some(Packet::Publish(_))), "{p:?}");
    });
    let (c, _incoming) = Client::connect(opts(addr, Protocol::V5)).await.unwrap();
    let e = c
        .publish("t", "never acked", QoS::AtLeastOnce)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ClientError::ConnectionClosed { in_flight: 1 }),
        "{e}"
    );
    assert!(e.to_string().contains("awaiting an answer"), "{e}");
    assert!(matches!(
        c.closed().await,
        ClientError::ConnectionClosed { .. }
    ));
    // Later operations get the same reason.
    let e = c.subscribe_one("t", QoS::AtMostOnce).await.unwrap_err();
    assert!(matches!(e, ClientError::ConnectionClosed { .. }), "{e}");
}

/// MQTT 5: a client ending the connection over the server's bad packet says why in its
/// DISCONNECT — Malformed Packet, Protocol Error (an unexpected packet), Packet too large —
/// and MQTT 3.1.1 (which has no reason codes) just closes.
#[tokio::test]
async fn the_client_tells_an_mqtt5_server_why_it_leaves() {
    let suback_unknown = to_vec(
        &Packet::SubAck(lichen_mqtt::SubAck {
            packet_id: 77,
            reason_codes: vec![ReasonCode::Success],
            properties: Properties::default(),
        }),
        Protocol::V5,
    )
    .unwrap();
    let cases: Vec<(Protocol, Vec<u8>, Option<ReasonCode>)> = vec![
        (
            Protocol::V5,
            vec![0x00, 0x00],
            Some(ReasonCode::MalformedPacket),
        ),
        (
            Protocol::V5,
            connack(Protocol::V5, ReasonCode::Success, None),
            Some(ReasonCode::ProtocolError),
        ),
        (
            Protocol::V5,
            suback_unknown,
            Some(ReasonCode::ProtocolError),
        ),
        (
            Protocol::V5,
            vec![0x30, 0x80, 0x80, 0x80, 0x60],
            Some(ReasonCode::PacketTooLarge),
        ),
        (Protocol::V311, vec![0x00, 0x00], None),
    ];
    for (protocol, bad, expected) in cases {
        let (l, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            read_packet(&mut s, protocol, &mut buf).await;
            s.write_all(&connack(protocol, ReasonCode::Success, None))
                .await
                .unwrap();
            s.write_all(&bad).await.unwrap();
            match read_packet(&mut s, protocol, &mut buf).await {
                Some(Packet::Disconnect(d)) => Some(d.reason_code),
                _ => None,
            }
        });
        let (c, _in) = Client::connect(opts(addr, protocol)).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(3), c.closed())
            .await
            .expect("the client ends the connection");
        assert!(
            matches!(e, ClientError::Malformed(_) | ClientError::Protocol(_)),
            "{e}"
        );
        let said = tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(said, expected, "{protocol:?} after {e}");
    }
}

#[tokio::test]
async fn a_silent_server_times_out_at_connect_and_at_keep_alive() {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (_s, _) = l.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    });
    let e = Client::connect(opts(addr, Protocol::V5))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(e, ClientError::ConnectTimeout { secs: 2, .. }),
        "{e}"
    );

    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        read_packet(&mut s, Protocol::V311, &mut buf).await;
        s.write_all(&connack(Protocol::V311, ReasonCode::Success, None))
            .await
            .unwrap();
        // Read PINGREQs, never answer.
        while read_packet(&mut s, Protocol::V311, &mut buf)
            .await
            .is_some()
        {}
    });
    let mut o = opts(addr, Protocol::V311);
    o.keep_alive = 1;
    let (c, _in) = Client::connect(o).await.unwrap();
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(5), c.closed())
        .await
        .expect("keep alive gives up");
    assert!(matches!(e, ClientError::KeepAliveTimeout(1)), "{e}");
    // Half a keep alive to the PINGREQ, dead at 1.25 × keep alive without an answer.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_millis(1600),
        "{took:?}"
    );
}

#[tokio::test]
async fn an_oversized_packet_from_the_server_is_refused_on_its_header() {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        read_packet(&mut s, Protocol::V5, &mut buf).await;
        s.write_all(&connack(Protocol::V5, ReasonCode::Success, None))
            .await
            .unwrap();
        // A PUBLISH header announcing 200 MB, and nothing after it.
        s.write_all(&[0x30, 0x80, 0x80, 0x80, 0x60]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let (c, _in) = Client::connect(opts(addr, Protocol::V5)).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(3), c.closed())
        .await
        .expect("refused without waiting for the body");
    assert!(matches!(e, ClientError::Malformed(_)), "{e}");
    assert!(e.to_string().contains("maximum packet size"), "{e}");
}

#[tokio::test]
async fn no_more_than_the_in_flight_window_is_sent_before_acks() {
    let (l, addr) = listener().await;
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        read_packet(&mut s, Protocol::V5, &mut buf).await;
        // The server's Receive Maximum (3) is below the client's window (64).
        let properties = Properties {
            receive_maximum: Some(3),
            ..Default::default()
        };
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties,
        });
        s.write_all(&to_vec(&ack, Protocol::V5).unwrap())
            .await
            .unwrap();
        let mut ids = Vec::new();
        let quiet = tokio::time::timeout(Duration::from_millis(700), async {
            while let Some(p) = read_packet(&mut s, Protocol::V5, &mut buf).await {
                if let Packet::Publish(p) = p {
                    ids.push(p.packet_id);
                }
            }
        })
        .await;
        assert!(quiet.is_err(), "the client kept the connection open");
        let _ = seen_tx.send(ids.len());
        // Acknowledge everything from here on.
        for id in ids {
            let ack = Packet::PubAck(lichen_mqtt::PubResp::new(id, ReasonCode::Success));
            s.write_all(&to_vec(&ack, Protocol::V5).unwrap())
                .await
                .unwrap();
        }
        while let Some(p) = read_packet(&mut s, Protocol::V5, &mut buf).await {
            if let Packet::Publish(p) = p {
                let ack =
                    Packet::PubAck(lichen_mqtt::PubResp::new(p.packet_id, ReasonCode::Success));
                s.write_all(&to_vec(&ack, Protocol::V5).unwrap())
                    .await
                    .unwrap();
            }
        }
    });
    let (c, _in) = Client::connect(opts(addr, Protocol::V5)).await.unwrap();
    assert_eq!(c.info().inflight_window, 3);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.publish(format!("t/{i}"), "x", QoS::AtLeastOnce).await
        }));
    }
    assert_eq!(seen_rx.await.unwrap(), 3, "only the window is in flight");
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), ReasonCode::Success);
    }
}

/// Serves `bytes` (after a valid CONNACK when `handshake`) and closes; returns the client's
/// outcome. The client must end with an error of its own, never a panic.
async fn feed(bytes: Vec<u8>, handshake: bool, protocol: Protocol) -> Result<(), String> {
    let (l, addr) = listener().await;
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        read_packet(&mut s, protocol, &mut buf).await;
        if handshake {
            let _ = s
                .write_all(&connack(protocol, ReasonCode::Success, None))
                .await;
        }
        let _ = s.write_all(&bytes).await;
        // Keep reading what the client sends until it closes, then close.
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            while read_packet(&mut s, protocol, &mut buf).await.is_some() {}
        })
        .await;
    });
    match Client::connect(opts(addr, protocol)).await {
        Err(ClientError::TaskEnded) => Err("task ended".into()),
        Err(_) => Ok(()),
        Ok((c, mut incoming)) => {
            // Exercise the reply paths too.
            let c2 = c.clone();
            tokio::spawn(async move {
                let _ = c2.subscribe_one("x/#", QoS::ExactlyOnce).await;
                let _ = c2.publish("x/y", "z", QoS::ExactlyOnce).await;
            });
            tokio::spawn(async move { while incoming.recv().await.is_some() {} });
            match tokio::time::timeout(Duration::from_secs(3), c.closed()).await {
                Ok(ClientError::TaskEnded) => Err("the connection task panicked".into()),
                Ok(_) => Ok(()),
                Err(_) => Err("the connection did not end after the server closed".into()),
            }
        }
    }
}

/// Bytes shaped like MQTT often enough to reach past the fixed header: a valid packet type
/// nibble and a small length, then anything.
fn mqtt_ish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (
            1u8..16,
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, flags, body)| {
                let mut v = vec![(t << 4) | (flags & 0x0F), body.len() as u8];
                v.extend(body);
                v
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_server_bytes_never_panic_the_client(
        bytes in mqtt_ish(),
        handshake in any::<bool>(),
        v5 in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let protocol = if v5 { Protocol::V5 } else { Protocol::V311 };
        let outcome = rt.block_on(feed(bytes, handshake, protocol));
        prop_assert!(outcome.is_ok(), "{:?}", outcome);
    }
}
