//! The MQTT bridge: Greengrass `mqttTopicMapping` between devices on the broker and the local
//! bus (where IPC components publish and subscribe), in both directions, without loops.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lichen_broker::{BRIDGE_ORIGIN, BUILTIN_COMPONENTS, config_from_components};
use lichen_bus::{Message, Payload, SubscribeOptions};
use lichen_mqtt::*;

fn bridge_config() -> serde_json::Value {
    serde_json::json!({
        "mqttTopicMapping": {
            "DevicesToComponents": {"topic": "clients/+/detections", "targetTopicPrefix": "events/input/", "source": "LocalMqtt", "target": "Pubsub"},
            "ComponentsToDevices": {"topic": "commands/#", "source": "Pubsub", "target": "LocalMqtt"},
            "Echo": {"topic": "echo/#", "source": "LocalMqtt", "target": "Pubsub"},
            "EchoBack": {"topic": "echo/#", "source": "Pubsub", "target": "LocalMqtt"},
            "ToCloud": {"topic": "clients/+/hello", "source": "LocalMqtt", "target": "IotCore"}
        }
    })
}

#[tokio::test]
async fn round_trips_both_directions_without_loops() {
    let dir = tempfile::tempdir().unwrap();
    let auth = serde_json::json!({"deviceGroups": serde_json::to_value(allow_all()).unwrap()});
    let bridge = bridge_config();
    let cfg = config_from_components(
        config(dir.path(), false),
        [
            ("aws.greengrass.clientdevices.Auth", &auth),
            ("aws.greengrass.clientdevices.mqtt.Bridge", &bridge),
        ],
    )
    .unwrap();
    assert_eq!(cfg.mqtt_topic_mapping.len(), 5);
    let (h, bus) = start(cfg).await;
    let addr = tcp_addr(&h);

    // Device → component: an IPC-style bus subscriber receives the device's message with prefix.
    let component = bus
        .subscribe(SubscribeOptions::new(
            "events/input/#",
            "component:com.example.Listener",
        ))
        .unwrap();
    let mut device = Client::connect(addr, Protocol::V5, "camera-1").await;
    device
        .subscribe("commands/#", opts(QoS::AtLeastOnce), None)
        .await;
    device
        .publish(
            "clients/camera-1/detections",
            b"{\"cat\":1}",
            QoS::AtLeastOnce,
            false,
            1,
        )
        .await;
    let m = tokio::time::timeout(Duration::from_secs(5), component.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*m.topic, "events/input/clients/camera-1/detections");
    assert_eq!(
        m.payload,
        Payload::Binary(bytes::Bytes::from_static(b"{\"cat\":1}"))
    );
    assert_eq!(&*m.origin, BRIDGE_ORIGIN);

    // Component → device: a bus publish (JSON, as IPC sends it) reaches the MQTT subscriber.
    bus.publish(Message::new(
        "commands/camera-1/reboot",
        Payload::Json(serde_json::json!({"now": true})),
        "component:com.example.Controller",
    ))
    .unwrap();
    let p = device.next_publish().await.unwrap();
    assert_eq!(&*p.topic, "commands/camera-1/reboot");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&p.payload).unwrap(),
        serde_json::json!({"now": true})
    );

    // Both directions on the same topic: exactly one copy each way, no loop.
    let echo_bus = bus
        .subscribe(SubscribeOptions::new("echo/#", "component:echo"))
        .unwrap();
    let mut echo_dev = Client::connect(addr, Protocol::V311, "echo-dev").await;
    echo_dev
        .subscribe("echo/#", opts(QoS::AtMostOnce), None)
        .await;
    device
        .publish("echo/1", b"from-device", QoS::AtMostOnce, false, 0)
        .await;
    let m = tokio::time::timeout(Duration::from_secs(5), echo_bus.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*m.topic, "echo/1");
    assert_eq!(
        &echo_dev.next_publish().await.unwrap().payload[..],
        b"from-device"
    );
    bus.publish(Message::new(
        "echo/2",
        Payload::Binary("from-bus".into()),
        "component:echo",
    ))
    .unwrap();
    assert_eq!(
        &echo_dev.next_publish().await.unwrap().payload[..],
        b"from-bus"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        echo_dev
            .recv_within(Duration::from_millis(200))
            .await
            .is_none(),
        "no loop back to devices"
    );
    let extra: Vec<Arc<str>> = std::iter::from_fn(|| echo_bus.try_recv())
        .map(|m| m.topic)
        .collect();
    assert_eq!(
        extra,
        vec![Arc::from("echo/2")],
        "bus sees the component's own message once, no echo"
    );

    // Mappings can be replaced at run time.
    h.set_bridge_mappings(Default::default()).unwrap();
    device
        .publish(
            "clients/camera-1/detections",
            b"x",
            QoS::AtMostOnce,
            false,
            0,
        )
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(400), component.recv())
            .await
            .is_err()
    );
    h.shutdown().await;
}

#[test]
fn builtin_components_and_config_errors() {
    assert!(BUILTIN_COMPONENTS.contains(&"aws.greengrass.clientdevices.mqtt.Moquette"));
    assert!(BUILTIN_COMPONENTS.contains(&"aws.greengrass.clientdevices.Auth"));
    let bad = serde_json::json!({"mqttTopicMapping": {"x": {"topic": "a", "source": "Pubsub", "target": "Pubsub"}}});
    assert!(
        config_from_components(
            Default::default(),
            [("aws.greengrass.clientdevices.mqtt.Bridge", &bad)]
        )
        .is_err()
    );
    let bad_group = serde_json::json!({"deviceGroups": {"definitions": {"g": {"selectionRule": "thingName: a", "policyName": "missing"}}, "policies": {}}});
    let cfg = config_from_components(
        Default::default(),
        [("aws.greengrass.clientdevices.Auth", &bad_group)],
    )
    .unwrap();
    assert!(lichen_broker::policy::PolicySet::compile(&cfg.device_groups).is_err());
    // Plain TCP on a non-loopback address needs the explicit opt-in.
    let mut c = lichen_broker::BrokerConfig {
        listeners: vec![lichen_broker::ListenerConfig {
            kind: lichen_broker::ListenerKind::Tcp,
            bind: "0.0.0.0:1883".parse().unwrap(),
        }],
        ..Default::default()
    };
    assert!(c.validate().is_err());
    c.allow_remote_plaintext = true;
    assert!(c.validate().is_ok());
    // Moquette's ssl_port/host move the TLS listener, as a deployment would configure it.
    let moq = serde_json::json!({"moquette": {"ssl_port": "8443", "host": "127.0.0.1"}});
    let cfg = config_from_components(
        Default::default(),
        [("aws.greengrass.clientdevices.mqtt.Moquette", &moq)],
    )
    .unwrap();
    assert_eq!(cfg.listeners[0].bind, "127.0.0.1:8443".parse().unwrap());
    let bad = serde_json::json!({"moquette": {"ssl_port": "none"}});
    assert!(
        config_from_components(
            Default::default(),
            [("aws.greengrass.clientdevices.mqtt.Moquette", &bad)]
        )
        .is_err()
    );
    // Defaults: TLS on 8883.
    let d: lichen_broker::BrokerConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(d.listeners[0].bind.port(), 8883);
    assert_eq!(d.listeners[0].kind, lichen_broker::ListenerKind::Tls);
}
