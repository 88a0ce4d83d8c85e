//! End to end through the real IPC server: a Greengrass IPC component (PublishToTopic /
//! SubscribeToTopic over the event-stream socket) and an MQTT device exchange messages through
//! the broker's bridge, both ways.

mod common;

use std::time::Duration;

use common::*;
use lichen_mqtt::*;
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
    let core = lichen_core::Core::start(lichen_core::CoreOptions {
        root: dir.path().join("root"),
        settings: Default::default(),
    })
    .await
    .unwrap();
    let handle = core.handle();
    let ipc = lichen_ipc::serve(handle.clone()).await.unwrap();
    let mut cfg = config(&dir.path().join("broker"), false);
    cfg.mqtt_topic_mapping = serde_json::from_value(json!({
        "up": {"topic": "clients/+/detections", "targetTopicPrefix": "events/input/", "source": "LocalMqtt", "target": "Pubsub"},
        "down": {"topic": "commands/#", "source": "Pubsub", "target": "LocalMqtt"}
    }))
    .unwrap();
    let broker = lichen_broker::start(cfg, handle.bus().clone())
        .await
        .unwrap();

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
    let client = lichen_ipc::IpcClient::connect(ipc.socket_path(), &token)
        .await
        .unwrap();
    let mut events = client
        .subscribe("SubscribeToTopic", &json!({"topic": "events/input/#"}))
        .await
        .unwrap();

    let addr = tcp_addr(&broker);
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
    broker.shutdown().await;
    ipc.shutdown().await;
    core.shutdown().await;
}
