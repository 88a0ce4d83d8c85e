//! PublishToIoTCore and SubscribeToIoTCore over the [`CloudLink`], in the reference's shapes
//! (`topicName`, `qos` "0"/"1", `payload` base64, `retain`, `userProperties`,
//! `messageExpiryIntervalSeconds`, `correlationData` base64, `responseTopic`, `payloadFormat`
//! "0"/"1", `contentType`), authorized by `aws.greengrass.ipc.mqttproxy` on the topic (MQTT
//! wildcards in policies match, deny unless allowed).
//!
//! PublishToIoTCore goes through the spool ([`CloudLink::publish_spooled`]): QoS 1 answers
//! once the message is durably spooled, connected or not (a full spool is a ServiceError
//! naming `maxSizeInBytes`); QoS 0 answers once written when connected, and while
//! disconnected is spooled (`keepQos0WhenOffline`) or dropped with ServiceError "not
//! connected". SubscribeToIoTCore streams `IoTCoreMessage` events from the
//! link's bounded receiver ([`super::SUBSCRIPTION_CAPACITY`]; full → dropped and logged);
//! the subscription is restored after every reconnect.

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lichen_ipc::{Handler, OpError, Operation, Reply, Resource};
use lichen_mqtt_client::{Message, Properties, Publish, QoS};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CloudLink, LinkError};

const MQTTPROXY: &str = "aws.greengrass.ipc.mqttproxy";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserProperty {
    key: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishRequest {
    topic_name: String,
    qos: Option<String>,
    payload: Option<String>,
    retain: Option<bool>,
    user_properties: Option<Vec<UserProperty>>,
    message_expiry_interval_seconds: Option<u32>,
    correlation_data: Option<String>,
    response_topic: Option<String>,
    payload_format: Option<String>,
    content_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeRequest {
    topic_name: String,
    qos: Option<String>,
}

fn qos(field: Option<&str>) -> Result<QoS, OpError> {
    match field {
        None | Some("0") | Some("AT_MOST_ONCE") => Ok(QoS::AtMostOnce),
        Some("1") | Some("AT_LEAST_ONCE") => Ok(QoS::AtLeastOnce),
        Some(other) => Err(OpError::invalid(format!(
            "qos must be \"0\" or \"1\", not {other:?}"
        ))),
    }
}

fn base64_field(name: &str, value: Option<String>) -> Result<Vec<u8>, OpError> {
    B64.decode(value.unwrap_or_default())
        .map_err(|e| OpError::invalid(format!("{name} is not base64: {e}")))
}

type LinkSlot = Arc<Mutex<Option<CloudLink>>>;

fn current(slot: &LinkSlot) -> Result<CloudLink, OpError> {
    slot.lock()
        .ok()
        .and_then(|l| l.clone())
        .ok_or_else(|| OpError::service("the core has no cloud connection configured"))
}

fn link_error(e: LinkError) -> OpError {
    match e {
        LinkError::Refused(_) => OpError::invalid(e.to_string()),
        _ => OpError::service(e.to_string()),
    }
}

fn message_from(req: PublishRequest) -> Result<Message, OpError> {
    let payload = base64_field("payload", req.payload)?;
    let mut m = Message::new(req.topic_name, payload, qos(req.qos.as_deref())?);
    m.retain = req.retain.unwrap_or(false);
    let mut p = Properties {
        user_properties: req
            .user_properties
            .unwrap_or_default()
            .into_iter()
            .map(|u| (u.key, u.value))
            .collect(),
        message_expiry_interval: req.message_expiry_interval_seconds,
        ..Default::default()
    };
    if req.correlation_data.is_some() {
        p.correlation_data = Some(base64_field("correlationData", req.correlation_data)?.into());
    }
    p.response_topic = req.response_topic;
    p.payload_format_indicator = match req.payload_format.as_deref() {
        None => None,
        Some("0") | Some("BYTES") => Some(0),
        Some("1") | Some("UTF8") => Some(1),
        Some(other) => {
            return Err(OpError::invalid(format!(
                "payloadFormat must be \"0\" or \"1\", not {other:?}"
            )));
        }
    };
    p.content_type = req.content_type;
    m.properties = p;
    Ok(m)
}

/// The event for one message from the cloud (`IoTCoreMessage`).
pub fn event(p: &Publish) -> Value {
    let props = &p.properties;
    let mut msg = json!({
        "topicName": &*p.topic,
        "payload": B64.encode(&p.payload),
        "retain": p.retain,
    });
    if !props.user_properties.is_empty() {
        msg["userProperties"] = props
            .user_properties
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
    }
    if let Some(e) = props.message_expiry_interval {
        msg["messageExpiryIntervalSeconds"] = json!(e);
    }
    if let Some(c) = &props.correlation_data {
        msg["correlationData"] = json!(B64.encode(c));
    }
    if let Some(t) = &props.response_topic {
        msg["responseTopic"] = json!(t);
    }
    if let Some(f) = props.payload_format_indicator {
        msg["payloadFormat"] = json!(f.to_string());
    }
    if let Some(c) = &props.content_type {
        msg["contentType"] = json!(c);
    }
    json!({ "message": msg })
}

/// The two operations, reading the link from `slot` (filled when the service starts).
pub(super) fn operations(slot: LinkSlot) -> Vec<Operation> {
    let publish_slot = slot.clone();
    let publish = Operation::new(
        "PublishToIoTCore",
        Handler::asynchronous(move |call| {
            let slot = publish_slot.clone();
            Box::pin(async move {
                let req: PublishRequest = call.parse()?;
                let message = message_from(req)?;
                let link = current(&slot)?;
                link.publish_spooled(message).await.map_err(link_error)?;
                Ok(Reply::empty())
            })
        }),
    )
    .authorize(MQTTPROXY, Resource::Field("topicName"))
    .slow();
    let subscribe = Operation::new(
        "SubscribeToIoTCore",
        Handler::asynchronous(move |call| {
            let slot = slot.clone();
            Box::pin(async move {
                let req: SubscribeRequest = call.parse()?;
                let q = qos(req.qos.as_deref())?;
                let link = current(&slot)?;
                let mut rx = link
                    .subscribe(&req.topic_name, q)
                    .await
                    .map_err(link_error)?;
                let who = call.component().to_string();
                Ok(Reply::Stream {
                    initial: json!({}),
                    run: Box::new(move |sink| {
                        Box::pin(async move {
                            while let Some(p) = rx.recv().await {
                                if !sink.send_json(&event(&p)).await {
                                    break;
                                }
                            }
                            tracing::debug!(component = %who, "SubscribeToIoTCore stream ended");
                        })
                    }),
                })
            })
        }),
    )
    .authorize(MQTTPROXY, Resource::Field("topicName"))
    .streaming("aws.greengrass#IoTCoreMessage")
    .slow();
    vec![publish, subscribe]
}
