//! End to end through a node composed in-process: a Greengrass IPC component (PublishToTopic /
//! SubscribeToTopic over the event-stream socket) and an MQTT device exchange messages through
//! the broker service's bridge, both ways. The broker's device policy and bridge mapping come
//! from the client-device components' configuration, applied by the node when it changes.

// The broker tests' raw MQTT client.
#[path = "../../broker/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lichen_mqtt::*;
use lichen_node::{BrokerService, Node, NodeOptions};
use serde_json::json;

async fn next_event(stream: &mut lichen_ipc::IpcStream) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(5), stream.next_event())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event, not error")
        .1
}

#[tokio::test]
async fn ipc_component_and_mqtt_device_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let settings = lichen_core::settings::Settings {
        broker: Some(json!({"listeners": [{"kind": "tcp", "bind": "127.0.0.1:0"}]})),
        // As root, the default user could reach neither the 0700 temporary root nor the
        // pinned Python under /root.
        posix_user: "root".into(),
        ..Default::default()
    };
    let broker = Arc::new(BrokerService::new());
    let node = Node::start(
        NodeOptions {
            root: dir.path().join("root"),
            settings,
        },
        vec![broker.clone()],
    )
    .await
    .unwrap();
    let handle = node.handle().clone();
    // As a deployment would: the bridge's mapping, then the device policy.
    handle
        .update_configuration(
            "aws.greengrass.clientdevices.mqtt.Bridge",
            &["mqttTopicMapping".into()],
            1,
            json!({
                "up": {"topic": "clients/+/detections", "targetTopicPrefix": "events/input/", "source": "LocalMqtt", "target": "Pubsub"},
                "down": {"topic": "commands/#", "source": "Pubsub", "target": "LocalMqtt"}
            }),
        )
        .unwrap();
    handle
        .update_configuration(
            "aws.greengrass.clientdevices.Auth",
            &["deviceGroups".into()],
            1,
            allow_all_json(),
        )
        .unwrap();
    let addr = broker
        .local_addrs()
        .await
        .iter()
        .find(|l| l.kind == lichen_broker::ListenerKind::Tcp)
        .expect("tcp listener")
        .addr;
    // The node applies the configuration asynchronously: wait until a device may connect
    // (the Auth change, applied after the Bridge one).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_c, ack) = Client::connect_with(addr, connect_packet(Protocol::V5, "probe")).await;
        if ack.reason_code == ReasonCode::Success {
            break;
        }
        assert!(Instant::now() < deadline, "device policy never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let component = "com.example.Vision";
    handle
        .update_configuration(
            component,
            &["accessControl".into()],
            1,
            json!({"aws.greengrass.ipc.pubsub": {"v:1": {"operations": ["*"], "resources": ["*"]}}}),
        )
        .unwrap();
    let token = handle.component_token(component);
    let client = lichen_ipc::IpcClient::connect(node.ipc().socket_path(), &token)
        .await
        .unwrap();
    let mut events = client
        .subscribe("SubscribeToTopic", &json!({"topic": "events/input/#"}))
        .await
        .unwrap();

    for proto in [Protocol::V311, Protocol::V5] {
        let mut device = Client::connect(addr, proto, "camera-7").await;
        device
            .subscribe("commands/camera-7", opts(QoS::AtLeastOnce), None)
            .await;
        // Device → component.
        device
            .publish(
                "clients/camera-7/detections",
                b"cat",
                QoS::AtLeastOnce,
                false,
                1,
            )
            .await;
        let ev = next_event(&mut events).await;
        assert_eq!(
            ev,
            json!({"binaryMessage": {"message": "Y2F0", "context": {"topic": "events/input/clients/camera-7/detections"}}})
        );
        // Component → device (JSON over IPC arrives as JSON bytes).
        client
            .call(
                "PublishToTopic",
                &json!({"topic": "commands/camera-7", "publishMessage": {"jsonMessage": {"message": {"zoom": 2}}}}),
            )
            .await
            .unwrap();
        let m = device.next_publish().await.unwrap();
        assert_eq!(&*m.topic, "commands/camera-7");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap(),
            json!({"zoom": 2})
        );
        device
            .send(&Packet::PubAck(PubResp::new(
                m.packet_id,
                ReasonCode::Success,
            )))
            .await;
        device
            .send(&Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::Success,
                properties: Properties::default(),
            }))
            .await;
        let _ = device.closed_with().await;
    }
    node.shutdown().await;
    // The root is free again once the node has stopped.
    lichen_core::Core::prepare(lichen_core::CoreOptions {
        root: dir.path().join("root"),
        settings: Default::default(),
    })
    .await
    .expect("root released");
}

fn allow_all_json() -> serde_json::Value {
    json!({
        "formatVersion": "2021-03-05",
        "definitions": {"all": {"selectionRule": "thingName: *", "policyName": "all"}},
        "policies": {"all": {"s": {"operations": ["*"], "resources": ["*"]}}}
    })
}
