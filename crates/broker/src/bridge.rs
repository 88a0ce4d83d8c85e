//! MQTT bridge with Greengrass `mqttTopicMapping` semantics between the local MQTT broker
//! (`LocalMqtt`), the local bus (`Pubsub`) and, later, AWS IoT Core (`IotCore`).
//!
//! - `LocalMqtt → Pubsub`: every PUBLISH from a device on a topic matching `topic` is published
//!   on the bus as `targetTopicPrefix + topic` with origin [`BRIDGE_ORIGIN`].
//! - `Pubsub → LocalMqtt`: a bus subscription on `topic` (subscriber [`BRIDGE_ORIGIN`],
//!   `no_local`) republishes to devices as `targetTopicPrefix + topic`, QoS 1.
//! - `LocalMqtt → IotCore`: a device message matching `topic` is handed, renamed, to the
//!   embedder's [`CloudBridge`] (`BrokerHandle::set_cloud_bridge`); the other `IotCore` legs
//!   are the embedder's entirely (`lichen-node`'s cloud bridge). Without a cloud bridge
//!   `IotCore` legs are only logged.
//!
//! Loops are impossible: bus messages from the bridge carry its origin and its own bus
//! subscriptions skip them; messages the bridge injects into the broker are flagged and never
//! bridged back to the bus.

use std::collections::BTreeMap;
use std::sync::Arc;

use lichen_bus::{Bus, Message, Payload, SubscribeOptions};
use lichen_mqtt::{Properties, QoS};
use serde::{Deserialize, Serialize};

use crate::BrokerError;
use crate::broker::Shared;
use crate::session::Msg;

/// Origin of every message the bridge puts on the bus, and its bus subscriber name.
pub const BRIDGE_ORIGIN: &str = "bridge:mqtt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Endpoint {
    LocalMqtt,
    Pubsub,
    IotCore,
}

/// One `mqttTopicMapping` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeMapping {
    pub topic: String,
    pub source: Endpoint,
    pub target: Endpoint,
    #[serde(default)]
    pub target_topic_prefix: String,
}

pub fn validate_mappings(m: &BTreeMap<String, BridgeMapping>) -> Result<(), BrokerError> {
    for (name, map) in m {
        if map.source == map.target {
            return Err(BrokerError::Config(format!(
                "mqttTopicMapping.{name}: source and target must differ"
            )));
        }
        lichen_mqtt::topic::validate_topic_filter(&map.topic)
            .map_err(|e| BrokerError::Config(format!("mqttTopicMapping.{name}: topic: {e}")))?;
        if map.target_topic_prefix.contains(['+', '#']) {
            return Err(BrokerError::Config(format!(
                "mqttTopicMapping.{name}: targetTopicPrefix must not contain wildcards"
            )));
        }
    }
    Ok(())
}

/// Forwards a device message to the bus for every matching `LocalMqtt → Pubsub` mapping.
pub fn to_bus(bus: &Bus, mappings: &[(String, BridgeMapping)], msg: &Msg) {
    for (name, m) in mappings {
        if m.source != Endpoint::LocalMqtt || m.target != Endpoint::Pubsub {
            continue;
        }
        if !lichen_mqtt::topic::topic_matches(&m.topic, &msg.topic) {
            continue;
        }
        let topic = format!("{}{}", m.target_topic_prefix, msg.topic);
        let message = Message::new(topic, Payload::Binary(msg.payload.clone()), BRIDGE_ORIGIN);
        if let Err(e) = bus.publish(message) {
            tracing::warn!(mapping = %name, error = %e, "bridge could not publish to the bus");
        }
    }
}

/// The embedder's side of `LocalMqtt → IotCore` mappings: the broker knows no cloud.
pub trait CloudBridge: Send + Sync + 'static {
    /// A device message matched `mapping`; `topic` already has its `targetTopicPrefix`.
    /// Called on the routing path: must not block (queue, bounded, and return).
    fn forward(&self, mapping: &str, topic: String, payload: bytes::Bytes, properties: &Properties);
}

/// Hands a device message to the cloud bridge for every matching `LocalMqtt → IotCore` mapping.
pub fn to_cloud(cloud: &dyn CloudBridge, mappings: &[(String, BridgeMapping)], msg: &Msg) {
    for (name, m) in mappings {
        if m.source != Endpoint::LocalMqtt || m.target != Endpoint::IotCore {
            continue;
        }
        if lichen_mqtt::topic::topic_matches(&m.topic, &msg.topic) {
            let topic = format!("{}{}", m.target_topic_prefix, msg.topic);
            cloud.forward(name, topic, msg.payload.clone(), &msg.properties);
        }
    }
}

/// Starts the bus-side legs; returns their tasks (aborted when mappings change).
pub fn start(
    shared: &Arc<Shared>,
    mappings: &[(String, BridgeMapping)],
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let has_cloud = crate::broker::read(&shared.cloud_bridge).is_some();
    for (name, m) in mappings {
        if crate::config::is_cloud(m.source) || crate::config::is_cloud(m.target) {
            if has_cloud {
                continue;
            }
            tracing::info!(mapping = %name, source = ?m.source, target = ?m.target,
                "bridge leg to IotCore: relayed by the embedder's cloud bridge, when it has one");
            continue;
        }
        if m.source != Endpoint::Pubsub || m.target != Endpoint::LocalMqtt {
            continue;
        }
        let mut opts = SubscribeOptions::new(m.topic.clone(), BRIDGE_ORIGIN);
        opts.no_local = true;
        let sub = match shared.bus.subscribe(opts) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(mapping = %name, error = %e, "bridge could not subscribe to the bus");
                continue;
            }
        };
        let shared = shared.clone();
        let prefix = m.target_topic_prefix.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(message) = sub.recv().await {
                let topic = format!("{prefix}{}", message.topic);
                if lichen_mqtt::topic::validate_topic_name(&topic).is_err() {
                    continue;
                }
                let msg = Arc::new(Msg {
                    topic: Arc::from(topic),
                    payload: message.payload.to_bytes(),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties::default(),
                    expires_at: None,
                    origin: None,
                    from_bridge: true,
                });
                shared.route(msg);
            }
        }));
    }
    tasks
}
