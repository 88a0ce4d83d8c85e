//! Message flow on a connection: incoming PUBLISH and SUBSCRIBE, outgoing deliveries with
//! flow control, topic aliases and size limits, backpressure, and the end of a connection
//! (will messages, session detach).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lichen_mqtt::{
    Disconnect, Packet, Properties, PubResp, Publish, QoS, ReasonCode, SubAck, Subscribe,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{Close, Conn, WRITE_HIGH_WATER};
use crate::policy::Action;
use crate::session::{Delivery, Inflight, Msg, Session, Stage};
use crate::store::StoreOp;

/// Most deliveries moved from the queue per pump, so reads are not starved.
const PUMP_BATCH: usize = 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(super) fn on_publish(&mut self, mut p: Publish) -> Result<Vec<Arc<Session>>, Close> {
        let v5 = self.v5();
        // Topic aliases (client → broker).
        if let Some(alias) = p.properties.topic_alias.take() {
            if !v5 || alias == 0 || alias > self.shared.limits.topic_alias_maximum {
                return Err(Close::Server(ReasonCode::TopicAliasInvalid));
            }
            if p.topic.is_empty() {
                let aliases = self.aliases.get_or_insert_with(Default::default);
                match aliases.inbound.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(Close::Server(ReasonCode::ProtocolError)),
                }
            } else {
                let aliases = self.aliases.get_or_insert_with(Default::default);
                aliases.inbound.insert(alias, p.topic.clone());
            }
        }
        if lichen_bus::validate_topic_name(&p.topic).is_err() {
            return Err(Close::Server(ReasonCode::TopicNameInvalid));
        }
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(Close::Server(ReasonCode::ProtocolError));
        }
        let qos2_dup =
            p.qos == QoS::ExactlyOnce && self.session.lock().incoming_qos2.contains(&p.packet_id);
        if qos2_dup {
            self.send(&Packet::PubRec(PubResp::new(
                p.packet_id,
                ReasonCode::Success,
            )));
            return Ok(Vec::new());
        }
        if p.qos == QoS::ExactlyOnce
            && self.session.lock().incoming_qos2.len()
                >= usize::from(self.shared.limits.receive_maximum)
        {
            return Err(Close::Server(ReasonCode::ReceiveMaximumExceeded));
        }
        let mut code = ReasonCode::Success;
        if !self.allows(Action::Publish { topic: &p.topic }) {
            tracing::info!(client = %self.client_id, topic = %p.topic, "publish not authorized");
            if !v5 {
                return Err(Close::Server(ReasonCode::NotAuthorized));
            }
            code = ReasonCode::NotAuthorized;
        } else if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            code = ReasonCode::PayloadFormatInvalid;
        }
        let mut congested = Vec::new();
        if code == ReasonCode::Success {
            let mut properties = p.properties;
            let expires_at = properties
                .message_expiry_interval
                .and_then(|s| Instant::now().checked_add(Duration::from_secs(u64::from(s))));
            properties.topic_alias = None;
            let msg = Arc::new(Msg {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties,
                expires_at,
                origin: Some(self.client_id.clone()),
                from_bridge: false,
            });
            let routed = self.shared.route(msg);
            let matched = routed.matched;
            congested = routed.congested;
            congested.retain(|s| !Arc::ptr_eq(s, &self.session));
            if p.qos != QoS::AtMostOnce {
                // The ack goes out once what was stored for this message is on disk.
                self.durable = self.durable.max(routed.durable);
            }
            if matched == 0 && v5 {
                code = ReasonCode::NoMatchingSubscribers;
            }
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubResp::new(p.packet_id, code))),
            QoS::ExactlyOnce => {
                if !code.is_error() {
                    self.session.lock().incoming_qos2.push(p.packet_id);
                }
                self.send(&Packet::PubRec(PubResp::new(p.packet_id, code)));
            }
        }
        Ok(congested)
    }

    pub(super) fn on_subscribe(&mut self, s: Subscribe) {
        let v5 = self.v5();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained: Vec<Delivery> = Vec::new();
        for (filter, options) in &s.filters {
            let (share, plain) = match crate::topic::split_shared(filter) {
                Ok(x) => x,
                Err(()) => {
                    codes.push(ReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            let code = if lichen_bus::validate_topic_filter(plain).is_err() {
                ReasonCode::TopicFilterInvalid
            } else if share.is_some() && options.no_local {
                // MQTT 5 §3.8.3.1: No Local on a shared subscription is a protocol error; refuse it.
                ReasonCode::TopicFilterInvalid
            } else if !self.allows(Action::Subscribe { filter }) {
                tracing::info!(client = %self.client_id, %filter, "subscribe not authorized");
                ReasonCode::NotAuthorized
            } else {
                let out = self
                    .shared
                    .subscribe(&self.session, filter, *options, sub_id);
                retained.extend(out.retained);
                self.durable = self.durable.max(out.durable);
                out.code
            };
            codes.push(if !v5 && code.is_error() {
                ReasonCode::UnspecifiedError
            } else {
                code
            });
        }
        self.send(&Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reason_codes: codes,
            properties: Properties::default(),
        }));
        if !retained.is_empty() {
            let mut st = self.session.lock();
            for d in retained {
                st.queue.push_back(d);
            }
        }
    }

    /// Moves queued deliveries into the write buffer while the in-flight window allows.
    /// Returns true if it stopped for a batch bound while more could be sent now.
    pub(super) fn pump(&mut self) -> Result<bool, ReasonCode> {
        let now = Instant::now();
        let window = usize::from(self.shared.limits.max_inflight.min(self.client_receive_max));
        let session = self.session.clone();
        let mut st = session.lock();
        if st.conn != self.conn_id {
            return Err(ReasonCode::SessionTakenOver);
        }
        if let Some(k) = st.kick.take() {
            return Err(k);
        }
        let mut moved = 0;
        loop {
            match st.queue.front() {
                None => return Ok(false),
                Some(d) if d.qos != QoS::AtMostOnce && st.inflight.len() >= window => {
                    return Ok(false);
                }
                Some(_) => {}
            }
            if moved >= PUMP_BATCH || self.wbuf.len() >= WRITE_HIGH_WATER {
                return Ok(true);
            }
            let Some(d) = st.queue.pop_front() else {
                return Ok(false);
            };
            moved += 1;
            if d.msg.expired(now) {
                self.forget(&d);
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                self.encode_delivery(&d, 0, false, now);
                continue;
            }
            let pid = st.alloc_packet_id();
            if self.encode_delivery(&d, pid, false, now) {
                let stage = if d.qos == QoS::AtLeastOnce {
                    Stage::Ack
                } else {
                    Stage::Rec
                };
                st.inflight.push_back(Inflight {
                    packet_id: pid,
                    stage,
                    delivery: d,
                });
            } else {
                self.forget(&d);
            }
        }
    }

    fn forget(&self, d: &Delivery) {
        if d.store_id != 0 {
            self.shared.persist(StoreOp::DelQueued { id: d.store_id });
        }
    }

    /// Appends a PUBLISH for `d`; false if it exceeds the client's Maximum Packet Size (the
    /// message is then dropped for this client, as MQTT 5 §3.1.2.11.4 requires).
    fn encode_delivery(&mut self, d: &Delivery, packet_id: u16, dup: bool, now: Instant) -> bool {
        let v5 = self.v5();
        let mut topic = d.msg.topic.clone();
        let mut properties = if v5 {
            d.msg.properties.clone()
        } else {
            Properties::default()
        };
        let mut new_alias = false;
        if v5 {
            properties
                .subscription_identifiers
                .clone_from(&d.subscription_ids);
            if let Some(t) = d.msg.expires_at {
                properties.message_expiry_interval = Some(
                    t.saturating_duration_since(now)
                        .as_secs()
                        .min(u64::from(u32::MAX)) as u32,
                );
            }
            if self.out_alias_max > 0 {
                let aliases = self.aliases.get_or_insert_with(Default::default);
                if let Some(a) = aliases.outbound.get(&topic) {
                    properties.topic_alias = Some(*a);
                    topic = Arc::from("");
                } else if aliases.outbound.len() < usize::from(self.out_alias_max) {
                    let a = aliases.outbound.len() as u16 + 1;
                    aliases.outbound.insert(topic.clone(), a);
                    properties.topic_alias = Some(a);
                    new_alias = true;
                }
            }
        }
        let p = Packet::Publish(Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic,
            packet_id,
            properties,
            payload: d.msg.payload.clone(),
        });
        let start = self.wbuf.len();
        if lichen_mqtt::encode(&p, self.protocol, &mut self.wbuf).is_err()
            || self.wbuf.len() - start > self.client_max_packet
        {
            self.wbuf.truncate(start);
            if new_alias && let Some(a) = self.aliases.as_mut() {
                a.outbound.remove(&d.msg.topic);
            }
            tracing::debug!(client = %self.client_id, topic = %d.msg.topic, "message larger than the client accepts; dropped");
            return false;
        }
        true
    }

    /// After a reconnect: resend unacknowledged messages (DUP) and PUBRELs, in order.
    pub(super) fn resend_inflight(&mut self) {
        let now = Instant::now();
        let session = self.session.clone();
        let st = session.lock();
        for inf in st.inflight.iter() {
            match inf.stage {
                Stage::Ack | Stage::Rec => {
                    self.encode_delivery(&inf.delivery, inf.packet_id, true, now);
                }
                Stage::Comp => {
                    self.send(&Packet::PubRel(PubResp::new(
                        inf.packet_id,
                        ReasonCode::Success,
                    )));
                }
            }
        }
    }

    /// Slows this publisher while subscribers it feeds are over their queue bound.
    pub(super) async fn backpressure(&mut self, congested: Vec<Arc<Session>>) -> Result<(), Close> {
        let limit = self.shared.limits.max_queued_per_session;
        let deadline = Instant::now()
            + Duration::from_secs(self.shared.limits.backpressure_timeout_secs.min(3600));
        for s in congested {
            while s.is_online() && s.queue_len() >= limit && Instant::now() < deadline {
                if let Err(code) = self.pump() {
                    return Err(Close::Server(code));
                }
                self.flush().await?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(())
    }

    /// Ends the connection: DISCONNECT for v5 on server-side closes, the will, session detach.
    pub(super) async fn finish(mut self, close: Close) {
        let send_will = match &close {
            Close::Normal { with_will } => *with_will,
            Close::Lost => true,
            Close::Server(_) => true,
        };
        if let Close::Server(code) = close {
            tracing::debug!(client = %self.client_id, ?code, "closing connection");
            if self.v5() {
                self.send(&Packet::Disconnect(Disconnect {
                    reason_code: code,
                    properties: Properties::default(),
                }));
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
        let will = if send_will { self.will.take() } else { None };
        self.shared.detach(&self.session, self.conn_id);
        if let Some(w) = will {
            let delay = w
                .properties
                .will_delay_interval
                .unwrap_or(0)
                .min(self.expiry);
            let w = *w;
            let mut properties = w.properties;
            properties.will_delay_interval = None;
            let expires_at = properties
                .message_expiry_interval
                .and_then(|s| Instant::now().checked_add(Duration::from_secs(u64::from(s))));
            let msg = Arc::new(Msg {
                topic: Arc::from(w.topic),
                payload: w.payload,
                qos: w.qos,
                retain: w.retain,
                properties,
                expires_at,
                origin: Some(self.client_id.clone()),
                from_bridge: false,
            });
            if delay == 0 {
                self.shared.route(msg);
            } else {
                let shared = self.shared.clone();
                let client_id = self.client_id.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
                    // A reconnect within the delay cancels the will.
                    let back = crate::broker::lock(&shared.sessions)
                        .get(&client_id)
                        .is_some_and(|s| s.is_online());
                    if !back {
                        shared.route(msg);
                    }
                });
            }
        }
    }
}
