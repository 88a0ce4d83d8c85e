//! Message flow on a connection: incoming PUBLISH and SUBSCRIBE, outgoing deliveries with
//! flow control, topic aliases and size limits, backpressure, and the end of a connection
//! (will messages, session detach).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lichen_mqtt::{
    Disconnect, Packet, Properties, PubResp, Publish, QoS, ReasonCode, SubAck, Subscribe,
};
use tokio::io::AsyncWriteExt;

use super::{Close, Conn, WRITE_HIGH_WATER};
use crate::hooks::{DisconnectKind, InboundPublish, RouteMode};
use crate::policy::Action;
use crate::session::{Delivery, Inflight, Msg, Stage};
use crate::store::StoreOp;

/// Most deliveries moved from the queue per pump, so reads are not starved.
const PUMP_BATCH: usize = 1024;

/// Topics in the broker's own `$SYS` namespace, which clients may not publish to.
pub(super) fn is_sys_topic(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

impl<S: super::Transport> Conn<S> {
    pub(super) fn on_publish(&mut self, mut p: Publish) -> Result<(), Close> {
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
        let qos2_dup = p.qos == QoS::ExactlyOnce
            && self
                .session
                .lock()
                .flow()
                .incoming_qos2
                .contains(&p.packet_id);
        if qos2_dup {
            self.send(&Packet::PubRec(PubResp::new(
                p.packet_id,
                ReasonCode::Success,
            )));
            return Ok(());
        }
        // Receive Maximum (MQTT 5 §4.9): QoS 1 PUBLISHes whose PUBACK is not sent yet plus QoS 2
        // ones not completed count against it. v3.1.1 has no such quota for QoS 1; its QoS 2
        // state is bounded the same way.
        if p.qos == QoS::ExactlyOnce || (v5 && p.qos == QoS::AtLeastOnce) {
            let pending =
                usize::from(self.unacked_qos1) + self.session.lock().flow().incoming_qos2.len();
            if pending >= usize::from(self.shared.limits.receive_maximum) {
                tracing::info!(client = %self.client_id, "Receive Maximum exceeded");
                return Err(Close::Server(ReasonCode::ReceiveMaximumExceeded));
            }
            if p.qos == QoS::AtLeastOnce {
                self.unacked_qos1 += 1;
            }
        }
        let mut code = ReasonCode::Success;
        // `$SYS/` is the broker's own namespace: clients may not publish there. As mosquitto
        // does, MQTT 5 gets Not authorized in the PUBACK/PUBREC, and v3.1.1 (which cannot be
        // told) gets the normal acknowledgement while the message is dropped
        // (MQTT 3.1.1 §3.3.5: acknowledge or close).
        let mut drop_silently = false;
        if is_sys_topic(&p.topic) {
            tracing::info!(client = %self.client_id, topic = %p.topic, "publish to $SYS refused");
            if v5 {
                code = ReasonCode::NotAuthorized;
            } else {
                drop_silently = true;
            }
        } else if !self.allows(Action::Publish { topic: &p.topic }) {
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
        if code == ReasonCode::Success && !drop_silently {
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
            // A reserved topic of the embedder goes to its handler (hooks only).
            let mut to_subscribers = true;
            if let Some(route) = self.shared.hooks.route_for(&msg.topic) {
                to_subscribers = route.mode == RouteMode::HandlerAndSubscribers;
                let offered = route.offer(InboundPublish {
                    client: self.identity(),
                    topic: msg.topic.clone(),
                    payload: msg.payload.clone(),
                    qos: msg.qos,
                });
                if !offered && v5 {
                    code = ReasonCode::QuotaExceeded;
                }
            }
            // A handler-only message is acknowledged below and goes nowhere else.
            if to_subscribers {
                // A persistent session's QoS 2 message: its deliveries and its packet id commit
                // together, so after a crash either the client's resend is recognized or nothing
                // of the first attempt exists (no duplicate, no loss).
                let group = p.qos == QoS::ExactlyOnce && self.persistent_qos2();
                if group {
                    self.shared.persist(StoreOp::GroupStart);
                }
                let routed = self.shared.route(msg);
                if group {
                    self.shared.persist(StoreOp::PutIncoming {
                        client_id: self.client_id.clone(),
                        packet_id: p.packet_id,
                    });
                    self.durable = self.durable.max(self.shared.persist(StoreOp::GroupEnd));
                }
                let matched = routed.matched;
                if p.qos != QoS::AtMostOnce {
                    // The ack goes out once what was stored for this message is on disk.
                    self.durable = self.durable.max(routed.durable);
                }
                if matched == 0 && v5 && code == ReasonCode::Success {
                    code = ReasonCode::NoMatchingSubscribers;
                }
            }
        }
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubResp::new(p.packet_id, code))),
            QoS::ExactlyOnce => {
                if !code.is_error() {
                    self.session
                        .lock()
                        .flow_mut()
                        .incoming_qos2
                        .push(p.packet_id);
                }
                self.send(&Packet::PubRec(PubResp::new(p.packet_id, code)));
            }
        }
        Ok(())
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
            self.queue_retained(retained);
        }
    }

    /// Queues the retained messages a SUBSCRIBE matched, within
    /// `limits.max_retained_bytes_per_subscribe` and the session's and the broker's memory
    /// bounds; those that do not fit are not sent, and counted and logged as drops.
    fn queue_retained(&mut self, retained: Vec<Delivery>) {
        let limits = &self.shared.limits;
        let mut budget = limits.max_retained_bytes_per_subscribe;
        let mut skipped = 0u64;
        let mut st = self.session.lock();
        for d in retained {
            let size = d.mem_size();
            let fits = size <= budget
                && st.flow().queue.len() < limits.max_queued_per_session
                && st.mem_bytes + size <= limits.max_queued_bytes_per_session
                && self.shared.queued_bytes.load(Ordering::Relaxed) + size
                    <= limits.max_queued_bytes_total;
            if fits {
                budget -= size;
                st.push_queued(d, &self.shared.queued_bytes);
            } else {
                skipped += 1;
            }
        }
        self.shared.count_drops(
            &self.client_id,
            &mut st,
            skipped,
            "retained messages over the SUBSCRIBE bound not sent",
        );
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
            match st.flow().queue.front() {
                None => return Ok(false),
                Some(d) if d.qos != QoS::AtMostOnce && st.flow().inflight.len() >= window => {
                    return Ok(false);
                }
                Some(_) => {}
            }
            if moved >= PUMP_BATCH || self.wbuf.len() >= WRITE_HIGH_WATER {
                return Ok(true);
            }
            let Some(d) = st.flow_mut().queue.pop_front() else {
                return Ok(false);
            };
            moved += 1;
            if d.msg.expired(now) {
                st.release(&d, &self.shared.queued_bytes);
                self.forget(&d);
                continue;
            }
            if self.receive_refused(&d.msg.topic) {
                st.release(&d, &self.shared.queued_bytes);
                self.forget(&d);
                continue;
            }
            if d.qos == QoS::AtMostOnce {
                st.release(&d, &self.shared.queued_bytes);
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
                if stage == Stage::Rec && d.store_id != 0 {
                    // Exactly once across a crash: the PUBLISH goes out only once its packet id
                    // is stored, so a restart resends it with the same id.
                    let seq = self.shared.persist(StoreOp::SetInflight {
                        id: d.store_id,
                        packet_id: pid,
                        stage,
                    });
                    self.durable = self.durable.max(seq);
                }
                st.flow_mut().inflight.push_back(Inflight {
                    packet_id: pid,
                    stage,
                    delivery: d,
                });
            } else {
                st.release(&d, &self.shared.queued_bytes);
                self.forget(&d);
            }
        }
    }

    /// Whether an authorizer that checks receives refuses this delivery (it is then dropped).
    fn receive_refused(&self, topic: &str) -> bool {
        match &self.shared.hooks.authorizer {
            Some(a) if a.checks_receive() => {
                let refused = !self.allows(Action::Receive { topic });
                if refused {
                    tracing::debug!(client = %self.client_id, %topic, "delivery not authorized; dropped");
                }
                refused
            }
            _ => false,
        }
    }

    /// True when this connection's QoS 2 state must survive a crash (persistent session).
    /// (A v3.1.1 QoS 2 `$SYS` publish that was dropped keeps only an in-memory packet id.)
    pub(super) fn persistent_qos2(&self) -> bool {
        self.shared.store.is_some() && self.expiry > 0
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
        for inf in st.flow().inflight.iter() {
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
        // Bounded: a client that does not read cannot hold the connection open.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            // Not cut short by a wake: the connection is ending anyway (a takeover's wake
            // would otherwise drop the DISCONNECT that says so).
            let _ = self.flush_with(false).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
        let will = if send_will { self.will.take() } else { None };
        let taken_over = self.session.lock().conn != self.conn_id;
        self.shared.detach(&self.session, self.conn_id);
        if self.shared.hooks.track {
            let kind = if taken_over {
                DisconnectKind::TakenOver
            } else {
                match &close {
                    Close::Normal { .. } => DisconnectKind::Client,
                    Close::Lost => DisconnectKind::Lost,
                    Close::Server(ReasonCode::KeepAliveTimeout) => DisconnectKind::Lost,
                    Close::Server(_) => DisconnectKind::Server,
                }
            };
            let id = self.identity();
            {
                let mut connected = crate::broker::lock(&self.shared.connected);
                if connected
                    .get(&self.client_id)
                    .is_some_and(|c| c.connection == self.conn_id)
                {
                    connected.remove(&self.client_id);
                }
            }
            if let Some(events) = &self.shared.hooks.events {
                events.disconnected(&id, kind);
            }
        }
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

impl<S: super::Transport> Conn<S> {
    /// True when messages wait in the store only and the memory queue has room for them again
    /// (half of the session's bounds free, and room in the broker-wide total).
    pub(super) fn should_refill(&self) -> bool {
        let limits = &self.shared.limits;
        let st = self.session.lock();
        st.overflow
            .as_ref()
            .is_some_and(|o| o.spilled > 0 && !o.loading)
            && st.flow().queue.len() < limits.max_queued_per_session / 2
            && st.mem_bytes < limits.max_queued_bytes_per_session / 2
            && self.shared.queued_bytes.load(Ordering::Relaxed) < limits.max_queued_bytes_total
    }

    /// Reads spilled messages back from the store into the memory queue, in order.
    pub(super) async fn refill(&mut self) {
        let Some(store) = self.shared.store.as_ref() else {
            return;
        };
        let limits = &self.shared.limits;
        let (after, seq, count, bytes) = {
            let mut st = self.session.lock();
            let count = limits
                .max_queued_per_session
                .saturating_sub(st.flow().queue.len());
            let bytes = limits
                .max_queued_bytes_per_session
                .saturating_sub(st.mem_bytes);
            let o = st.overflow_mut();
            o.loading = true;
            (o.spill_after, o.spill_seq, count, bytes)
        };
        if store.committed() < seq {
            store.wait_committed(seq).await;
        }
        let shared = self.shared.clone();
        let client_id = self.client_id.clone();
        let rows = tokio::task::spawn_blocking(move || {
            shared
                .store
                .as_ref()
                .map(|s| s.read_queued(&client_id, after, count.max(1), bytes))
        })
        .await;
        let rows = match rows {
            Ok(Some(Ok(rows))) => rows,
            Ok(Some(Err(e))) => {
                tracing::error!(client = %self.client_id, error = %e, "reading the stored queue failed");
                Vec::new()
            }
            _ => Vec::new(),
        };
        let mut st = self.session.lock();
        st.overflow_mut().loading = false;
        if st.conn != self.conn_id {
            return; // taken over: the next pump closes this connection
        }
        if rows.is_empty() {
            let o = st.overflow_mut();
            if o.spilled > 0 {
                tracing::warn!(client = %self.client_id, missing = o.spilled, "stored queue holds fewer messages than counted");
            }
            o.spilled = 0;
            o.spilled_bytes = 0;
            return;
        }
        for (id, d) in rows {
            let o = st.overflow_mut();
            if id <= o.spill_after {
                continue;
            }
            o.spill_after = id;
            o.spilled = o.spilled.saturating_sub(1);
            o.spilled_bytes = o.spilled_bytes.saturating_sub(d.mem_size() as u64);
            st.push_queued(d, &self.shared.queued_bytes);
        }
    }
}
