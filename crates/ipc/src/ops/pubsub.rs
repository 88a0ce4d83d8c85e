//! PublishToTopic and SubscribeToTopic over the local bus.
//!
//! JSON messages stay JSON documents and binary messages stay bytes end to end. Each IPC
//! subscription owns a bus queue of [`lichen_bus::DEFAULT_QUEUE_CAPACITY`] messages and
//! [`lichen_bus::DEFAULT_QUEUE_BYTES`] bytes with drop-oldest overflow, so a stuck
//! subscriber never slows a publisher; its forwarder holds at most one batch
//! ([`FORWARD_BATCH`] messages, about [`FORWARD_BATCH_BYTES`]) and then waits for the
//! connection's write queue (bounded in writes and bytes, see [`crate::conn`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{BufMut, Bytes, BytesMut};
use lichen_bus::{Message, Payload, SubscribeOptions};
use serde::Deserialize;
use serde_json::Value;

use super::{Caller, EventSink, Reply, Shared, parse};
use crate::error::OpError;

/// Messages a subscription forwards per batch (one socket write).
const FORWARD_BATCH: usize = 64;
/// Bytes (as counted by the bus) a subscription forwards per batch; one larger message is
/// forwarded alone.
const FORWARD_BATCH_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishRequest {
    topic: Option<String>,
    publish_message: Option<PublishMessage>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishMessage {
    json_message: Option<JsonMessage>,
    binary_message: Option<BinaryMessage>,
}

#[derive(Deserialize)]
struct JsonMessage {
    message: Option<Value>,
}

#[derive(Deserialize)]
struct BinaryMessage {
    message: Option<String>,
}

pub(super) fn publish(shared: &Shared, caller: &Caller, payload: &[u8]) -> Result<Reply, OpError> {
    let req: PublishRequest = parse("PublishToTopic", payload)?;
    let topic = req
        .topic
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OpError::invalid("topic is required"))?;
    lichen_bus::validate_topic_name(&topic)
        .map_err(|e| OpError::invalid(format!("invalid topic {topic:?}: {e}")))?;
    let msg = req
        .publish_message
        .ok_or_else(|| OpError::invalid("publishMessage is required"))?;
    let payload = match (msg.json_message, msg.binary_message) {
        (Some(j), None) => Payload::Json(j.message.unwrap_or(Value::Null)),
        (None, Some(b)) => {
            let data = B64.decode(b.message.unwrap_or_default()).map_err(|e| {
                OpError::invalid(format!("binaryMessage.message is not base64: {e}"))
            })?;
            Payload::Binary(Bytes::from(data))
        }
        _ => {
            return Err(OpError::invalid(
                "publishMessage must hold exactly one of jsonMessage and binaryMessage",
            ));
        }
    };
    shared
        .core
        .bus()
        .publish(Message::new(topic, payload, caller.origin.clone()))
        .map_err(|e| OpError::invalid(e.to_string()))?;
    Ok(Reply::empty())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeRequest {
    topic: Option<String>,
    receive_mode: Option<String>,
}

pub(super) fn subscribe(
    shared: &Shared,
    caller: &Caller,
    payload: &[u8],
) -> Result<Reply, OpError> {
    let req: SubscribeRequest = parse("SubscribeToTopic", payload)?;
    let topic = req
        .topic
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OpError::invalid("topic is required"))?;
    lichen_bus::validate_topic_filter(&topic)
        .map_err(|e| OpError::invalid(format!("invalid topic filter {topic:?}: {e}")))?;
    // Greengrass: without a receiveMode, wildcard subscriptions skip the caller's own messages.
    let no_local = match req.receive_mode.as_deref() {
        None => topic.contains(['+', '#']),
        Some("RECEIVE_ALL_MESSAGES") => false,
        Some("RECEIVE_MESSAGES_FROM_OTHERS") => true,
        Some(other) => return Err(OpError::invalid(format!("unknown receiveMode {other}"))),
    };
    let who = caller.component.clone();
    let filter = topic.clone();
    let mut options = SubscribeOptions::new(topic, caller.origin.clone());
    options.no_local = no_local;
    let sub = shared
        .core
        .bus()
        .subscribe(options)
        .map_err(|e| OpError::invalid(e.to_string()))?;
    Ok(Reply::Stream {
        initial: Value::Object(Default::default()),
        run: Box::new(move |sink| Box::pin(forward(sub, sink, who, filter))),
    })
}

/// Drops of a slow subscriber are logged at most this often.
const DROP_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

async fn forward(sub: lichen_bus::Subscription, sink: EventSink, who: String, filter: String) {
    let mut batch = Vec::with_capacity(FORWARD_BATCH);
    let mut scratch = Vec::with_capacity(256);
    let mut logged_drops = 0;
    let mut last_log: Option<std::time::Instant> = None;
    while let Some(first) = sub.recv().await {
        let dropped = sub.dropped();
        if dropped > logged_drops && last_log.is_none_or(|t| t.elapsed() >= DROP_LOG_INTERVAL) {
            tracing::warn!(component = %who, topic = %filter, dropped_total = dropped,
                "slow IPC subscriber: oldest queued messages dropped");
            logged_drops = dropped;
            last_log = Some(std::time::Instant::now());
        }
        let first_size = first.size();
        batch.push(first);
        if first_size < FORWARD_BATCH_BYTES {
            sub.drain_bytes_into(
                &mut batch,
                FORWARD_BATCH - 1,
                FORWARD_BATCH_BYTES - first_size,
            );
        }
        let mut out = BytesMut::new();
        for m in batch.drain(..) {
            scratch.clear();
            event_json(&m, &mut scratch);
            sink.encode(&scratch, &mut out);
        }
        if !out.is_empty() && !sink.send(out.freeze()).await {
            return;
        }
    }
}

/// `{"jsonMessage":{"message":…,"context":{"topic":…}}}` or the `binaryMessage` form.
fn event_json(m: &Message, out: &mut Vec<u8>) {
    match &m.payload {
        Payload::Json(v) => {
            out.put_slice(b"{\"jsonMessage\":{\"message\":");
            if serde_json::to_writer(&mut *out, v).is_err() {
                out.put_slice(b"null");
            }
        }
        Payload::Binary(b) => {
            out.put_slice(b"{\"binaryMessage\":{\"message\":\"");
            let start = out.len();
            out.resize(start + b.len().div_ceil(3) * 4, 0);
            let n = B64.encode_slice(b, &mut out[start..]).unwrap_or(0);
            out.truncate(start + n);
            out.put_u8(b'"');
        }
    }
    out.put_slice(b",\"context\":{\"topic\":");
    if serde_json::to_writer(&mut *out, m.topic.as_ref()).is_err() {
        out.put_slice(b"\"\"");
    }
    out.put_slice(b"}}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn event_shapes() {
        let mut out = Vec::new();
        let m = Message::new(
            "a/b",
            Payload::Json(serde_json::json!({"x": [1, "y"]})),
            "o",
        );
        event_json(&m, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonMessage": {"message": {"x": [1, "y"]}, "context": {"topic": "a/b"}}})
        );
        out.clear();
        let m = Message::new("t", Payload::Binary(Bytes::from_static(b"\x00\xffhi")), "o");
        event_json(&m, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["binaryMessage"]["message"], B64.encode(b"\x00\xffhi"));
        assert_eq!(v["binaryMessage"]["context"]["topic"], "t");
    }

    #[test]
    fn arc_origin_is_shared() {
        let c = Caller::new("x".into());
        let o: Arc<str> = c.origin.clone();
        assert_eq!(&*o, "component:x");
    }
}
