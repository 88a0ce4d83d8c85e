//! The cloud link against Debian's mosquitto over mutual TLS (certificates from a lichen-pki
//! CA made here), reached through a TCP proxy the test controls: a proxy that stops
//! forwarding (a half-open link) is noticed within the keep-alive bound, the link comes back
//! when it forwards again, and the subscriptions are restored. mosquitto's Maximum Packet
//! Size is respected. Skips with a message when mosquitto is not installed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lichen_core::settings::Settings;
use lichen_mqtt_client::{Client, ConnectOptions, QoS};
use lichen_node::{CloudOptions, CloudService, LinkError, LinkState, Node, NodeOptions, Service};
use lichen_pki::LocalCa;
use tokio::sync::watch;

mod cloud_support;
use cloud_support::{Mosquitto, proxy, wait_link};

/// Advertised by mosquitto in CONNACK (`max_packet_size`).
const SERVER_MAX_PACKET: usize = 4096;

/// mosquitto with a plain listener (the test's observer) and an mTLS listener (the core),
/// advertising [`SERVER_MAX_PACKET`].
fn mosquitto(dir: &Path, ca: &LocalCa) -> Option<Mosquitto> {
    Mosquitto::start_with(dir, ca, &format!("max_packet_size {SERVER_MAX_PACKET}\n"))
}

/// A core (the cloud service alone) whose bundle is a key made here and a certificate from
/// the CA mosquitto trusts, connecting to `endpoint`.
async fn core_on(
    dir: &Path,
    ca: &LocalCa,
    endpoint: SocketAddr,
    keep_alive: Duration,
) -> (Node, Arc<CloudService>) {
    // The device's bundle: a key made here, a certificate from the CA mosquitto trusts.
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gw-m");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let cert = ca.issue_from_csr(&csr, 30).unwrap();
    std::fs::write(bundle.join("thing.cert.pem"), cert.cert_pem).unwrap();
    std::fs::write(bundle.join("thing.private.key"), key.serialize_pem()).unwrap();
    std::fs::copy(&ca.cert_path, bundle.join("ca.pem")).unwrap();
    let config = bundle.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "thingName: gw-m\nrootCaPath: ca.pem\ncloud:\n  iotDataEndpoint: {endpoint}\n  \
             certificateFilePath: thing.cert.pem\n  privateKeyPath: thing.private.key\n"
        ),
    )
    .unwrap();

    let cloud = Arc::new(CloudService::with_options(
        None,
        CloudOptions {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(400),
            connectivity_interval: Duration::from_secs(10),
            keep_alive_secs: keep_alive.as_secs() as u16,
        },
    ));
    let services: Vec<Arc<dyn Service>> = vec![cloud.clone()];
    let node = Node::start(
        NodeOptions {
            root: dir.join("root"),
            settings: Settings::load(&config).unwrap(),
        },
        services,
    )
    .await
    .unwrap();
    (node, cloud)
}

#[tokio::test]
async fn half_open_link_is_replaced_within_the_keep_alive_bound_and_subscriptions_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let Some(m) = mosquitto(dir.path(), &ca) else {
        return;
    };
    let (forward_tx, forward_rx) = watch::channel(true);
    let endpoint = proxy(m.tls, forward_rx).await;

    let keep_alive = Duration::from_secs(2);
    let (node, cloud) = core_on(dir.path(), &ca, endpoint, keep_alive).await;
    let link = cloud.link().expect("a cloud section gives a link");
    assert_eq!(link.thing_name(), "gw-m");
    wait_link(&link, true, Duration::from_secs(10)).await;

    let (observer, mut up) = Client::connect(ConnectOptions::new(m.tcp.to_string(), "observer"))
        .await
        .unwrap();
    observer
        .subscribe_one("up/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut down = link.subscribe("down/#", QoS::AtLeastOnce).await.unwrap();

    // Both ways over mTLS.
    observer
        .publish("down/1", "to the core", QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), down.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*got.topic, "down/1");
    assert_eq!(&got.payload[..], b"to the core");
    link.publish("up/1", "from the core", QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = up.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert_eq!(&got.payload[..], b"from the core");

    // mosquitto's Maximum Packet Size: refused to the caller, the link stays up.
    let big = vec![b'x'; SERVER_MAX_PACKET + 1];
    let e = link
        .publish("up/big", big, QoS::AtLeastOnce)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, LinkError::Refused(_)) && e.to_string().contains("maximum packet size"),
        "{e}"
    );
    assert_eq!(*link.state().borrow(), LinkState::Connected);

    // The status the control channel serves counts the registration.
    let status = cloud.status().unwrap();
    assert_eq!(status.subscriptions, 1);
    assert_eq!(status.messages_dropped, 0);
    let spool = status.spool.expect("the link has a spool");
    assert_eq!((spool.depth, spool.dropped), (0, 0), "{spool:?}");

    // Half-open: the proxy stops forwarding, sockets stay open.
    forward_tx.send_replace(false);
    let took = wait_link(&link, false, Duration::from_secs(10)).await;
    assert!(
        took <= keep_alive.mul_f64(1.5) + Duration::from_millis(300),
        "half-open noticed after {took:?}"
    );
    match &*link.state().borrow() {
        LinkState::Disconnected { last_error } => {
            let e = last_error.as_deref().unwrap_or("");
            assert!(e.contains("keep alive"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let status = cloud.status().unwrap();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("keep alive")),
        "{status:?}"
    );
    let e = link
        .publish("up/2", "while down", QoS::AtLeastOnce)
        .await
        .unwrap_err();
    assert!(matches!(e, LinkError::NotConnected { .. }), "{e}");

    // Forwarding again: the link comes back (an attempt stuck in the pause times out after
    // its connect timeout) and the subscription is restored on the new session.
    forward_tx.send_replace(true);
    wait_link(&link, true, Duration::from_secs(25)).await;
    observer
        .publish("down/2", "after the reconnect", QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), down.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*got.topic, "down/2");
    link.publish("up/3", "again", QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = up.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert_eq!(&*got.topic, "up/3");

    node.shutdown().await;
    observer.disconnect().await.unwrap();
}

/// PublishToIoTCore / SubscribeToIoTCore over the IPC socket (the event-stream client a
/// component uses), in the reference's shapes with the MQTT 5 properties, against mosquitto
/// over mTLS; `aws.greengrass.ipc.mqttproxy` decides (deny unless allowed).
#[tokio::test]
async fn iot_core_ipc_operations_carry_mqtt5_properties_and_are_authorized() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(&dir.path().join("ca")).unwrap();
    let Some(m) = mosquitto(dir.path(), &ca) else {
        return;
    };
    let (node, cloud) = core_on(dir.path(), &ca, m.tls, Duration::from_secs(30)).await;
    let link = cloud.link().unwrap();
    wait_link(&link, true, Duration::from_secs(10)).await;

    let component = "com.example.Telemetry";
    let handle = node.handle().clone();
    handle
        .update_configuration(
            component,
            &["accessControl".into()],
            1,
            json!({"aws.greengrass.ipc.mqttproxy": {"t:1": {
                "operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["up/#"]},
                "t:2": {"operations": ["aws.greengrass#SubscribeToIoTCore"], "resources": ["down/+"]}}}),
        )
        .unwrap();
    let token = handle.component_token(component);
    let ipc = lichen_ipc::IpcClient::connect(node.ipc().socket_path(), &token)
        .await
        .unwrap();

    let (observer, mut up) = Client::connect(ConnectOptions::new(m.tcp.to_string(), "observer"))
        .await
        .unwrap();
    observer
        .subscribe_one("up/#", QoS::AtLeastOnce)
        .await
        .unwrap();

    // Component → cloud, every property of the request.
    ipc.call(
        "PublishToIoTCore",
        &json!({"topicName": "up/telemetry", "qos": "1", "payload": B64.encode(b"21.5"),
                "retain": false, "userProperties": [{"key": "unit", "value": "C"}],
                "messageExpiryIntervalSeconds": 60, "correlationData": B64.encode(b"req-1"),
                "responseTopic": "down/answers", "payloadFormat": "1", "contentType": "text/plain"}),
    )
    .await
    .unwrap();
    let got = up.recv_timeout(Duration::from_secs(5)).await.unwrap();
    assert_eq!(&*got.topic, "up/telemetry");
    assert_eq!(&got.payload[..], b"21.5");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    let p = &got.properties;
    assert_eq!(
        p.user_properties,
        vec![("unit".to_string(), "C".to_string())]
    );
    assert!(p.message_expiry_interval.is_some_and(|e| e <= 60 && e > 0));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"req-1"[..]));
    assert_eq!(p.response_topic.as_deref(), Some("down/answers"));
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));

    // Cloud → component as IoTCoreMessage events.
    let mut events = ipc
        .subscribe(
            "SubscribeToIoTCore",
            &json!({"topicName": "down/+", "qos": "1"}),
        )
        .await
        .unwrap();
    let mut msg = lichen_mqtt_client::Message::new("down/answers", "ok", QoS::AtLeastOnce);
    msg.properties.user_properties = vec![("k".into(), "v".into())];
    msg.properties.correlation_data = Some(lichen_mqtt_client::Bytes::from_static(b"req-1"));
    msg.properties.content_type = Some("text/plain".into());
    observer.publish_message(msg).await.unwrap();
    let (shape, ev) = tokio::time::timeout(Duration::from_secs(5), events.next_event())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("an event");
    assert_eq!(shape, "aws.greengrass#IoTCoreMessage");
    let m2 = &ev["message"];
    assert_eq!(m2["topicName"], "down/answers");
    assert_eq!(B64.decode(m2["payload"].as_str().unwrap()).unwrap(), b"ok");
    assert_eq!(m2["userProperties"], json!([{"key": "k", "value": "v"}]));
    assert_eq!(
        B64.decode(m2["correlationData"].as_str().unwrap()).unwrap(),
        b"req-1"
    );
    assert_eq!(m2["contentType"], "text/plain");

    // Deny unless allowed: another topic, another operation's resource.
    for (op, body) in [
        (
            "PublishToIoTCore",
            json!({"topicName": "elsewhere", "qos": "0", "payload": ""}),
        ),
        (
            "SubscribeToIoTCore",
            json!({"topicName": "up/#", "qos": "0"}),
        ),
    ] {
        let e = ipc.call(op, &body).await.unwrap_err();
        assert_eq!(e.shape(), Some("UnauthorizedError"), "{op}: {e}");
    }
    // Bad input names the field.
    let e = ipc
        .call(
            "PublishToIoTCore",
            &json!({"topicName": "up/x", "qos": "2"}),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("qos"), "{e}");

    node.shutdown().await;
    observer.disconnect().await.unwrap();
}
