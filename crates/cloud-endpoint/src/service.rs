//! The reserved-topic handler: parses the topic, checks it belongs to the sender (or, for a
//! shadow, to a client device associated with the sending core), and hands it
//! to shadows, jobs, provisioning or connectivity. Replies that are not for the topic's
//! subscribers (provisioning) go to the requesting client only.

use std::sync::Arc;

use bytes::Bytes;
use lichen_broker::hooks::BoxFuture;
use lichen_broker::{InboundPublish, QoS, TopicHandler};
use lichen_cloud_store::Backend;
use lichen_iot::topic::{JobsTopic, ReservedTopic};
use serde_json::Value;

use crate::Inner;
use crate::authz::Principal;

pub struct Service<B: Backend> {
    pub inner: Arc<Inner<B>>,
}

/// Epoch seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<B: Backend + 'static> TopicHandler for Service<B> {
    fn handle(&self, m: InboundPublish) -> BoxFuture<()> {
        let inner = self.inner.clone();
        Box::pin(async move { handle(&inner, m).await })
    }
}

impl<B: Backend> Inner<B> {
    /// Publishes a reply to the topic's subscribers.
    pub fn reply(&self, topic: &str, payload: &Value) {
        let Some(broker) = self.broker() else { return };
        let bytes = Bytes::from(payload.to_string());
        if let Err(e) = broker.publish(topic, bytes, QoS::AtLeastOnce, false) {
            tracing::warn!(%topic, error = %e, "reply not published");
        }
    }

    /// Publishes a reply to one client only.
    pub fn reply_to(&self, client_id: &str, topic: &str, payload: &Value) {
        let Some(broker) = self.broker() else { return };
        let bytes = Bytes::from(payload.to_string());
        match broker.publish_to_client(client_id, topic, bytes, QoS::AtLeastOnce) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(client = %client_id, %topic, "requester is not subscribed to its reply topic; reply dropped")
            }
            Err(e) => tracing::warn!(%topic, error = %e, "reply not published"),
        }
    }
}

async fn handle<B: Backend>(inner: &Inner<B>, m: InboundPublish) {
    let Some(principal) = m
        .client
        .handle
        .as_ref()
        .and_then(|h| h.downcast_ref::<Principal>())
        .cloned()
    else {
        return;
    };
    let topic = &*m.topic;
    let thing = match &principal {
        Principal::Thing { name, .. } => Some(name.as_str()),
        Principal::Claim { .. } => None,
    };
    if let Some(rest) = topic.strip_prefix("$lichen/things/") {
        if let Some(thing) = thing
            && rest.strip_prefix(thing) == Some("/connectivity/update")
        {
            crate::connectivity::update(inner, thing, &m.payload).await;
        }
        return;
    }
    if let Some(thing) = thing
        && topic == lichen_model::fleet::fleet_status_topic(thing)
    {
        crate::fleet_status::ingest(inner, thing, &m.payload).await;
        return;
    }
    match ReservedTopic::parse(topic) {
        // Its own shadows, or a client device's for a core associated with it.
        Ok(ReservedTopic::Shadow(t))
            if t.reply.is_none() && principal.may_use_shadows_of(&t.thing) =>
        {
            let _ = crate::shadow::handle(inner, &t, &m.payload).await;
        }
        Ok(ReservedTopic::Jobs(t))
            if t.reply.is_none() && !t.is_notification() && Some(t.thing.as_str()) == thing =>
        {
            crate::jobs::handle(inner, &t, &m.payload).await;
        }
        Ok(ReservedTopic::Provisioning(t)) if t.reply.is_none() => {
            crate::provisioning::handle(inner, &principal, &m.client.client_id, &t, &m.payload)
                .await;
        }
        Ok(_) => {
            tracing::debug!(client = %m.client.client_id, %topic, "not a request topic; ignored");
        }
        Err(e) => {
            // A jobs topic that maps to no API is answered, as AWS does.
            if let Some(thing) = thing
                && topic
                    .strip_prefix("$aws/things/")
                    .and_then(|r| r.strip_prefix(thing))
                    .is_some_and(|r| r.starts_with("/jobs/"))
                && !topic.ends_with("/accepted")
                && !topic.ends_with("/rejected")
                && JobsTopic::parse(topic).is_err()
            {
                let err = lichen_iot::jobs::JobsError::invalid_topic(topic);
                inner.reply(&format!("{topic}/rejected"), &err.payload(now_secs()));
            } else {
                tracing::debug!(client = %m.client.client_id, %topic, error = %e, "unknown reserved topic; ignored");
            }
        }
    }
}
