//! Round trips through real brokers: the lichen broker and Debian's mosquitto, plain TCP and
//! mutual TLS, MQTT 3.1.1 and 5, QoS 0/1/2 both ways.

mod common;

use std::time::Duration;

use common::*;
use lichen_broker::ListenerKind;
use lichen_mqtt_client::*;

/// Subscribes at QoS 2, publishes at each QoS, checks what arrives (QoS = min(published,
/// granted)), unsubscribes and checks nothing more arrives.
async fn round_trip(sub: ConnectOptions, publisher: ConnectOptions, prefix: &str) {
    let (s, mut incoming) = Client::connect(sub).await.expect("subscriber connects");
    let (p, _) = Client::connect(publisher)
        .await
        .expect("publisher connects");
    let filter = format!("{prefix}/#");
    let granted = s.subscribe_one(&filter, QoS::ExactlyOnce).await.unwrap();
    assert_eq!(granted, QoS::ExactlyOnce);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("{prefix}/q{}", qos as u8);
        let reason = p
            .publish(topic.clone(), format!("payload {}", qos as u8), qos)
            .await;
        assert!(reason.is_ok(), "publish at {qos:?}: {reason:?}");
        let got = incoming
            .recv_timeout(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("the {qos:?} message arrives"));
        assert_eq!(&*got.topic, topic);
        assert_eq!(
            &got.payload[..],
            format!("payload {}", qos as u8).as_bytes()
        );
        assert_eq!(got.qos, qos);
    }
    let codes = s.unsubscribe(vec![filter.clone()]).await.unwrap();
    assert_eq!(codes, vec![ReasonCode::Success]);
    p.publish(format!("{prefix}/after"), "late", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(
        incoming
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_none(),
        "nothing arrives after UNSUBSCRIBE"
    );
    p.disconnect().await.unwrap();
    s.disconnect().await.unwrap();
    assert!(matches!(s.closed().await, ClientError::Disconnected));
}

#[tokio::test]
async fn lichen_broker_plain_tcp_v311_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = lichen_broker(dir.path()).await;
    let addr = h.addr(ListenerKind::Tcp).unwrap();
    for protocol in [Protocol::V311, Protocol::V5] {
        round_trip(
            options(addr, &format!("sub-{protocol:?}"), protocol),
            options(addr, &format!("pub-{protocol:?}"), protocol),
            &format!("plain/{protocol:?}"),
        )
        .await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn lichen_broker_mutual_tls_v311_and_v5_with_registered_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = lichen_broker(&dir.path().join("broker")).await;
    let ca = lichen_pki::LocalCa::load_or_create(&dir.path().join("broker")).unwrap();
    let ca_path = h.ca_cert_path().unwrap();
    let addr = h.addr(ListenerKind::Tls).unwrap();
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut opts = Vec::new();
        for role in ["sub", "pub"] {
            let name = format!("{role}-{protocol:?}");
            let (cert, key, pem) = client_cert(&ca, dir.path(), &name);
            h.add_device(&name, &pem).unwrap();
            let mut o = options(addr, &name, protocol);
            // The broker's certificate names localhost and 127.0.0.1; verify by name.
            o.addr = format!("localhost:{}", addr.port());
            o.transport = tls(ca_path, &cert, &key);
            opts.push(o);
        }
        let publisher = opts.pop().unwrap();
        let sub = opts.pop().unwrap();
        round_trip(sub, publisher, &format!("tls/{protocol:?}")).await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn tls_refuses_a_server_that_does_not_chain_to_the_ca_or_carries_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = lichen_broker(&dir.path().join("broker")).await;
    let ca = lichen_pki::LocalCa::load_or_create(&dir.path().join("broker")).unwrap();
    let (cert, key, pem) = client_cert(&ca, dir.path(), "dev");
    h.add_device("dev", &pem).unwrap();
    let addr = h.addr(ListenerKind::Tls).unwrap();

    let other = lichen_pki::LocalCa::load_or_create(&dir.path().join("other")).unwrap();
    let mut o = options(addr, "dev", Protocol::V5);
    o.transport = tls(&other.cert_path, &cert, &key);
    let e = Client::connect(o)
        .await
        .err()
        .expect("unknown CA is refused");
    assert!(
        matches!(&e, ClientError::Connect { reason, .. } if reason.contains("TLS handshake")),
        "{e}"
    );

    let mut o = options(addr, "dev", Protocol::V5);
    o.transport = Transport::Tls(TlsFiles {
        ca: h.ca_cert_path().unwrap().to_path_buf(),
        client_cert: Some(cert.clone()),
        client_key: Some(key.clone()),
        server_name: Some("not-the-broker.example".into()),
    });
    let e = Client::connect(o)
        .await
        .err()
        .expect("a wrong name is refused");
    assert!(e.to_string().contains("TLS handshake"), "{e}");

    // A missing key file is named in the error.
    let mut o = options(addr, "dev", Protocol::V5);
    o.transport = tls(
        h.ca_cert_path().unwrap(),
        &cert,
        &dir.path().join("nope.key"),
    );
    let e = Client::connect(o).await.err().unwrap();
    assert!(e.to_string().contains("nope.key"), "{e}");
    h.shutdown().await;
}

#[tokio::test]
async fn mosquitto_plain_and_tls_v311_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = mosquitto(dir.path()) else {
        return;
    };
    for protocol in [Protocol::V311, Protocol::V5] {
        round_trip(
            options(m.tcp, &format!("msub-{protocol:?}"), protocol),
            options(m.tcp, &format!("mpub-{protocol:?}"), protocol),
            &format!("mplain/{protocol:?}"),
        )
        .await;
        let mut tls_opts = Vec::new();
        for role in ["sub", "pub"] {
            let name = format!("mtls-{role}-{protocol:?}");
            let (cert, key, _) = client_cert(&m.ca_handle, dir.path(), &name);
            let mut o = options(m.tls, &name, protocol);
            o.transport = tls(&m.ca, &cert, &key);
            tls_opts.push(o);
        }
        let publisher = tls_opts.pop().unwrap();
        let sub = tls_opts.pop().unwrap();
        round_trip(sub, publisher, &format!("mtls/{protocol:?}")).await;
    }
}

#[tokio::test]
async fn subscribe_answers_one_reason_code_per_filter_and_keep_alive_pings() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = mosquitto(dir.path()) else {
        return;
    };
    let mut o = options(m.tcp, "multi", Protocol::V5);
    o.keep_alive = 1;
    let (c, mut incoming) = Client::connect(o).await.unwrap();
    let opts = |qos| SubscriptionOptions {
        qos,
        ..Default::default()
    };
    let codes = c
        .subscribe(vec![
            ("a/0".into(), opts(QoS::AtMostOnce)),
            ("a/1".into(), opts(QoS::AtLeastOnce)),
            ("a/2".into(), opts(QoS::ExactlyOnce)),
        ])
        .await
        .unwrap();
    assert_eq!(
        codes,
        vec![
            ReasonCode::Success,
            ReasonCode::GrantedQos1,
            ReasonCode::GrantedQos2
        ]
    );
    // Idle for more than 1.5x the keep alive: only our PINGREQs keep the broker from closing.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(matches!(c.state(), ConnectionState::Connected));
    c.publish("a/1", "still here", QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = incoming.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert_eq!(&got.payload[..], b"still here");
    // Invalid filters fail before they reach the wire; the connection stays up.
    let e = c.subscribe_one("a/#/b", QoS::AtMostOnce).await.unwrap_err();
    assert!(matches!(e, ClientError::InvalidArgument { .. }), "{e}");
    assert!(matches!(c.state(), ConnectionState::Connected));
    c.disconnect().await.unwrap();
}

#[tokio::test]
async fn a_session_taken_over_ends_with_the_servers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _bus) = lichen_broker(dir.path()).await;
    let addr = h.addr(ListenerKind::Tcp).unwrap();
    let (first, _in1) = Client::connect(options(addr, "same-id", Protocol::V5))
        .await
        .unwrap();
    let (_second, _in2) = Client::connect(options(addr, "same-id", Protocol::V5))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), first.closed())
        .await
        .expect("the first connection ends");
    assert!(
        matches!(
            e,
            ClientError::ServerDisconnected {
                reason: ReasonCode::SessionTakenOver,
                ..
            }
        ),
        "{e}"
    );
    let e = first.publish("x", "y", QoS::AtLeastOnce).await.unwrap_err();
    assert!(matches!(e, ClientError::ServerDisconnected { .. }), "{e}");
    h.shutdown().await;
}

#[tokio::test]
async fn will_session_expiry_and_credentials_against_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = mosquitto(dir.path()) else {
        return;
    };
    let (watcher, mut wills) = Client::connect(options(m.tcp, "watcher", Protocol::V5))
        .await
        .unwrap();
    watcher
        .subscribe_one("wills/#", QoS::AtLeastOnce)
        .await
        .unwrap();

    // A persistent session with a will, user name and password.
    let mut o = options(m.tcp, "persistent", Protocol::V5);
    o.clean_start = false;
    o.session_expiry = Some(300);
    o.username = Some("user".into());
    o.password = Some("secret".into());
    o.will = Some(Message::new("wills/persistent", "gone", QoS::AtLeastOnce));
    let (c, _in) = Client::connect(o.clone()).await.unwrap();
    assert!(!c.info().session_present);
    c.subscribe_one("kept/#", QoS::AtLeastOnce).await.unwrap();
    // Disconnect with Will Message: mosquitto publishes the will.
    c.disconnect_with(ReasonCode::DisconnectWithWill)
        .await
        .unwrap();
    let will = wills
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("the will");
    assert_eq!(&*will.topic, "wills/persistent");
    assert_eq!(&will.payload[..], b"gone");

    // The session (and its subscription) survived: messages published meanwhile arrive.
    watcher
        .publish("kept/1", "while away", QoS::AtLeastOnce)
        .await
        .unwrap();
    o.will = None;
    let (c, mut incoming) = Client::connect(o).await.unwrap();
    assert!(c.info().session_present);
    let got = incoming
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("queued message");
    assert_eq!(&got.payload[..], b"while away");
    // A normal DISCONNECT does not publish the will (none set now) and ends cleanly.
    c.disconnect().await.unwrap();
    assert!(
        wills
            .recv_timeout(Duration::from_millis(300))
            .await
            .is_none()
    );
    watcher.disconnect().await.unwrap();
}
