//! The MQTT bridge's `IotCore` leg: the `mqttTopicMapping` entries of
//! `aws.greengrass.clientdevices.mqtt.Bridge` whose `source` or `target` is `IotCore`
//! (greengrass-dg/mqtt-bridge-component.md). The broker serves `LocalMqtt ↔ Pubsub` itself
//! and knows no cloud; this service joins it, the bus and the [`CloudLink`]:
//!
//! - `LocalMqtt → IotCore`: the broker hands matching device messages to [`CloudLeg`]
//!   (`BrokerHandle::set_cloud_bridge`), renamed with `targetTopicPrefix`; they are published
//!   to the cloud at QoS 1 with their MQTT 5 properties (the reference: the bridge always uses
//!   QoS 1 towards IoT Core).
//! - `Pubsub → IotCore`: a bus subscription (subscriber [`IOTCORE_ORIGIN`], no local) on
//!   `topic`, published as `targetTopicPrefix + topic`, QoS 1.
//! - `IotCore → LocalMqtt`: a link subscription on `topic` (restored after every reconnect);
//!   each message is published into the broker as `targetTopicPrefix + topic` through
//!   `BrokerHandle::publish_bridged`, so it is never bridged again (no loop back to the cloud
//!   or the bus).
//! - `IotCore → Pubsub`: the same subscription, published on the bus with origin
//!   [`IOTCORE_ORIGIN`], which the `Pubsub → IotCore` legs skip (no loop).
//!
//! Messages to the cloud go through the link's spool (`CloudLink::publish_spooled`), one at a
//! time per leg, in order: each QoS 1 message is durably spooled (also while the link is down)
//! and the spool's drain delivers it, removed after the cloud's PUBACK. A message the spool
//! or the link refuses (spool full with `reject`, invalid topic, over the server's limits) is
//! dropped, counted ([`BridgeStats`]) and logged (the first, then every [`DROP_LOG_EVERY`]th).
//!
//! Bounds: device messages waiting for the cloud ≤ [`FORWARD_QUEUE`] (full → dropped,
//! counted); bus messages waiting: the bus subscription's own bound (1,024 messages, 8 MiB,
//! drop-oldest); cloud messages waiting: the link's receiver ([`super::SUBSCRIPTION_CAPACITY`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lichen_broker::{BridgeMapping, BrokerHandle, CloudBridge, Endpoint};
use lichen_bus::{Bus, Message as BusMessage, Payload, SubscribeOptions};
use lichen_core::handle::BoxFuture;
use lichen_mqtt_client::{Bytes, Message, Properties, Publish, QoS};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use super::{CloudLink, CloudService};
use crate::service::{Service, ServiceContext, ServiceError};
use crate::services::broker::BrokerService;

/// The Greengrass component whose `mqttTopicMapping` this service reads.
pub const BRIDGE_COMPONENT: &str = "aws.greengrass.clientdevices.mqtt.Bridge";
/// Origin of the bus messages from the cloud, and the bus subscriber name of the legs to it.
pub const IOTCORE_ORIGIN: &str = "bridge:iotcore";
/// Device messages queued for the cloud (all `LocalMqtt → IotCore` mappings together).
pub const FORWARD_QUEUE: usize = 1024;
/// A drop is logged once per this many (the first one always).
pub const DROP_LOG_EVERY: u64 = 100;

/// What the IotCore legs did since the core started.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// Messages handed to the cloud (QoS 1: durably spooled).
    pub to_cloud: AtomicU64,
    /// Messages from the cloud delivered to the broker or the bus.
    pub from_cloud: AtomicU64,
    /// Messages not relayed: queue full, spool full, refused by the link or the broker.
    pub dropped: AtomicU64,
    /// Why the last one was not (mapping, topic, reason), for status and tests.
    pub last_drop: std::sync::Mutex<Option<String>>,
}

impl BridgeStats {
    fn drop_one(&self, mapping: &str, topic: &str, why: &str) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut last) = self.last_drop.lock() {
            *last = Some(format!("{mapping}: {topic}: {why}"));
        }
        if n == 1 || n.is_multiple_of(DROP_LOG_EVERY) {
            tracing::warn!(
                mapping,
                topic,
                dropped_total = n,
                "bridge message to or from IotCore dropped: {why}"
            );
        }
    }
}

/// A device message for the cloud, as the broker handed it over.
struct Outbound {
    mapping: Arc<str>,
    topic: String,
    payload: Bytes,
    properties: Properties,
}

/// The broker's `LocalMqtt → IotCore` seam: queues without blocking the routing path.
pub struct CloudLeg {
    tx: mpsc::Sender<Outbound>,
    stats: Arc<BridgeStats>,
}

impl CloudBridge for CloudLeg {
    fn forward(&self, mapping: &str, topic: String, payload: Bytes, properties: &Properties) {
        let mut properties = properties.clone();
        properties.subscription_identifiers.clear();
        properties.topic_alias = None;
        let out = Outbound {
            mapping: Arc::from(mapping),
            topic,
            payload,
            properties,
        };
        if let Err(e) = self.tx.try_send(out) {
            let (why, out) = match e {
                mpsc::error::TrySendError::Full(o) => ("the queue to the cloud is full", o),
                mpsc::error::TrySendError::Closed(o) => ("the bridge is stopping", o),
            };
            self.stats.drop_one(&out.mapping, &out.topic, why);
        }
    }
}

struct Active {
    mappings: Vec<(String, BridgeMapping)>,
    broker: Option<Arc<BrokerHandle>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Active {
    fn stop(self) {
        if let Some(b) = &self.broker {
            b.set_cloud_bridge(None);
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// The IotCore leg as a node service; idle without a `cloud` section or IotCore mappings.
pub struct BridgeService {
    broker: Arc<BrokerService>,
    cloud: Arc<CloudService>,
    stats: Arc<BridgeStats>,
    active: Mutex<Option<Active>>,
}

impl BridgeService {
    pub fn new(broker: Arc<BrokerService>, cloud: Arc<CloudService>) -> Self {
        BridgeService {
            broker,
            cloud,
            stats: Arc::new(BridgeStats::default()),
            active: Mutex::new(None),
        }
    }

    pub fn stats(&self) -> &BridgeStats {
        &self.stats
    }

    async fn reconcile(&self, ctx: &ServiceContext) {
        let mappings = match cloud_mappings(ctx.core.get_configuration(BRIDGE_COMPONENT, &[]).ok())
        {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(component = BRIDGE_COMPONENT, error = %e, "IotCore bridge mappings not applied");
                return;
            }
        };
        let broker = self.broker.handle().await;
        let mut active = self.active.lock().await;
        if let Some(a) = active.as_ref() {
            let same_broker = match (&a.broker, &broker) {
                (Some(x), Some(y)) => Arc::ptr_eq(x, y),
                (None, None) => true,
                _ => false,
            };
            if a.mappings == mappings && same_broker {
                return;
            }
        }
        if let Some(a) = active.take() {
            a.stop();
        }
        if mappings.is_empty() {
            return;
        }
        let Some(link) = self.cloud.link() else {
            tracing::warn!(
                component = BRIDGE_COMPONENT,
                mappings = mappings.len(),
                "IotCore bridge mappings are inactive: the core config has no cloud section"
            );
            return;
        };
        let tasks = self.start_legs(&mappings, &link, &ctx.bus, broker.as_ref());
        tracing::info!(
            mappings = mappings.len(),
            local_broker = broker.is_some(),
            "IotCore bridge legs started"
        );
        *active = Some(Active {
            mappings,
            broker,
            tasks,
        });
    }

    fn start_legs(
        &self,
        mappings: &[(String, BridgeMapping)],
        link: &CloudLink,
        bus: &Bus,
        broker: Option<&Arc<BrokerHandle>>,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        let mut from_devices = false;
        for (name, m) in mappings {
            match (m.source, m.target) {
                (Endpoint::LocalMqtt, Endpoint::IotCore) => from_devices = true,
                (Endpoint::Pubsub, Endpoint::IotCore) => {
                    let mut opts = SubscribeOptions::new(m.topic.clone(), IOTCORE_ORIGIN);
                    opts.no_local = true;
                    match bus.subscribe(opts) {
                        Ok(sub) => tasks.push(tokio::spawn(pubsub_to_cloud(
                            Arc::from(name.as_str()),
                            m.target_topic_prefix.clone(),
                            sub,
                            link.clone(),
                            self.stats.clone(),
                        ))),
                        Err(e) => {
                            tracing::error!(mapping = %name, error = %e, "bridge cannot subscribe to the bus")
                        }
                    }
                }
                (Endpoint::IotCore, target) => {
                    let to = match target {
                        Endpoint::LocalMqtt => match broker {
                            Some(b) => Target::Broker(b.clone()),
                            None => {
                                tracing::warn!(mapping = %name, "IotCore → LocalMqtt is inactive: the MQTT broker is not running");
                                continue;
                            }
                        },
                        Endpoint::Pubsub => Target::Bus(bus.clone()),
                        Endpoint::IotCore => continue, // refused by validation
                    };
                    tasks.push(tokio::spawn(cloud_to_local(
                        Arc::from(name.as_str()),
                        m.clone(),
                        link.clone(),
                        to,
                        self.stats.clone(),
                    )));
                }
                _ => {}
            }
        }
        if from_devices {
            match broker {
                Some(b) => {
                    let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
                    b.set_cloud_bridge(Some(Arc::new(CloudLeg {
                        tx,
                        stats: self.stats.clone(),
                    })));
                    tasks.push(tokio::spawn(devices_to_cloud(
                        rx,
                        link.clone(),
                        self.stats.clone(),
                    )));
                }
                None => tracing::warn!(
                    "LocalMqtt → IotCore is inactive: the MQTT broker is not running"
                ),
            }
        }
        tasks
    }
}

/// The IotCore mappings of the Bridge component's configuration (none without one).
fn cloud_mappings(config: Option<Value>) -> Result<Vec<(String, BridgeMapping)>, String> {
    // Absent, or cleared (null), means no mappings.
    let Some(m) = config
        .and_then(|c| c.get("mqttTopicMapping").cloned())
        .filter(|m| !m.is_null())
    else {
        return Ok(Vec::new());
    };
    let all: BTreeMap<String, BridgeMapping> =
        serde_json::from_value(m).map_err(|e| format!("mqttTopicMapping: {e}"))?;
    lichen_broker::bridge::validate_mappings(&all).map_err(|e| e.to_string())?;
    Ok(all
        .into_iter()
        .filter(|(_, m)| m.source == Endpoint::IotCore || m.target == Endpoint::IotCore)
        .collect())
}

async fn publish_to_cloud(link: &CloudLink, stats: &BridgeStats, mapping: &str, message: Message) {
    let topic = message.topic.clone();
    // Through the spool, as PublishToIoTCore: QoS 1 is durable once this returns, delivered
    // after the link is back (and removed after the cloud's PUBACK).
    match link.publish_spooled(message).await {
        Ok(()) => {
            stats.to_cloud.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => stats.drop_one(mapping, &topic, &e.to_string()),
    }
}

async fn devices_to_cloud(
    mut rx: mpsc::Receiver<Outbound>,
    link: CloudLink,
    stats: Arc<BridgeStats>,
) {
    while let Some(out) = rx.recv().await {
        let mut message = Message::new(out.topic, out.payload, QoS::AtLeastOnce);
        message.properties = out.properties;
        publish_to_cloud(&link, &stats, &out.mapping, message).await;
    }
}

async fn pubsub_to_cloud(
    mapping: Arc<str>,
    prefix: String,
    sub: lichen_bus::Subscription,
    link: CloudLink,
    stats: Arc<BridgeStats>,
) {
    while let Some(m) = sub.recv().await {
        let topic = format!("{prefix}{}", m.topic);
        let message = Message::new(topic, m.payload.to_bytes(), QoS::AtLeastOnce);
        publish_to_cloud(&link, &stats, &mapping, message).await;
    }
}

enum Target {
    Broker(Arc<BrokerHandle>),
    Bus(Bus),
}

async fn cloud_to_local(
    mapping: Arc<str>,
    m: BridgeMapping,
    link: CloudLink,
    to: Target,
    stats: Arc<BridgeStats>,
) {
    let mut rx = match link.subscribe(&m.topic, QoS::AtLeastOnce).await {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(mapping = %mapping, filter = %m.topic, error = %e, "bridge cannot subscribe to IotCore");
            return;
        }
    };
    while let Some(p) = rx.recv().await {
        deliver(&mapping, &m.target_topic_prefix, p, &to, &stats);
    }
}

fn deliver(mapping: &str, prefix: &str, p: Publish, to: &Target, stats: &BridgeStats) {
    let topic = format!("{prefix}{}", p.topic);
    let result = match to {
        Target::Broker(b) => {
            let mut props = p.properties;
            props.subscription_identifiers.clear();
            props.topic_alias = None;
            b.publish_bridged(&topic, p.payload, p.qos, props)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Target::Bus(bus) => bus
            .publish(BusMessage::new(
                topic.clone(),
                Payload::Binary(p.payload),
                IOTCORE_ORIGIN,
            ))
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => {
            stats.from_cloud.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => stats.drop_one(mapping, &topic, &e),
    }
}

impl Service for BridgeService {
    fn name(&self) -> &str {
        "bridge-iotcore"
    }

    fn start<'a>(&'a self, ctx: &'a ServiceContext) -> BoxFuture<'a, Result<(), ServiceError>> {
        Box::pin(async move {
            self.reconcile(ctx).await;
            Ok(())
        })
    }

    /// Every client-device component (Bridge among them): deploying any of them may start
    /// the broker, whose handle the LocalMqtt legs need.
    fn follows(&self) -> &[&str] {
        lichen_broker::BUILTIN_COMPONENTS
    }

    fn apply_configuration<'a>(
        &'a self,
        ctx: &'a ServiceContext,
        _component: Option<&'a str>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.reconcile(ctx))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(a) = self.active.lock().await.take() {
                a.stop();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_iotcore_mappings_are_taken_and_bad_ones_name_the_field() {
        let cfg = json!({"mqttTopicMapping": {
            "a": {"topic": "clients/+/status", "source": "LocalMqtt", "target": "IotCore",
                  "targetTopicPrefix": "$aws/rules/R/"},
            "b": {"topic": "x/#", "source": "LocalMqtt", "target": "Pubsub"},
            "c": {"topic": "cmd/#", "source": "IotCore", "target": "Pubsub"}}});
        let m = cloud_mappings(Some(cfg)).unwrap();
        let names: Vec<&str> = m.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(m[0].1.target_topic_prefix, "$aws/rules/R/");
        assert!(cloud_mappings(None).unwrap().is_empty());
        let e = cloud_mappings(Some(json!({"mqttTopicMapping": {
            "a": {"topic": "t", "source": "Cloud", "target": "IotCore"}}})))
        .unwrap_err();
        assert!(e.contains("mqttTopicMapping"), "{e}");
        let e = cloud_mappings(Some(json!({"mqttTopicMapping": {
            "a": {"topic": "t/#/x", "source": "IotCore", "target": "Pubsub"}}})))
        .unwrap_err();
        assert!(e.contains("mqttTopicMapping.a"), "{e}");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(1);
        let stats = Arc::new(BridgeStats::default());
        let leg = CloudLeg {
            tx,
            stats: stats.clone(),
        };
        let p = Properties::default();
        leg.forward("m", "t/1".into(), Bytes::from_static(b"1"), &p);
        leg.forward("m", "t/2".into(), Bytes::from_static(b"2"), &p);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);
    }
}
