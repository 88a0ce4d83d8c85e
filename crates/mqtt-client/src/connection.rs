//! The task that owns one connection's socket: reads and answers the server's packets, writes
//! the application's commands, sends PINGREQ on keep alive, and ends with the reason the
//! connection broke.

use std::time::Duration;

use bytes::BytesMut;
use lichen_mqtt::topic::{validate_topic_filter, validate_topic_name};
use lichen_mqtt::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::options::{Message, Stream};
use crate::session::{CodesReply, PendingCodes, PendingPublish, PublishReply, Session, Stage};
use crate::{ClientError, ConnectionState};

/// A request from a [`crate::Client`] handle.
pub(crate) enum Command {
    Publish {
        message: Message,
        reply: PublishReply,
    },
    Subscribe {
        filters: Vec<(String, SubscriptionOptions)>,
        properties: Properties,
        reply: CodesReply,
    },
    Unsubscribe {
        filters: Vec<String>,
        reply: CodesReply,
    },
    Disconnect {
        reason: ReasonCode,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
}

/// What the server granted in CONNACK, and our own bounds.
pub(crate) struct Limits {
    /// Our QoS 1/2 publishes in flight: min(ours, server Receive Maximum).
    pub window: usize,
    /// Our Receive Maximum (advertised; a server going over it is only logged).
    pub receive_maximum: usize,
    /// Largest packet we accept.
    pub max_incoming: usize,
    /// Largest packet the server accepts.
    pub max_outgoing: usize,
    pub max_qos: QoS,
    pub keep_alive: Option<Duration>,
}

pub(crate) struct Connection {
    pub stream: Stream,
    pub protocol: Protocol,
    /// Bytes read and not yet decoded: at most one partial packet (≤ `max_incoming`, checked
    /// on its fixed header) plus one read.
    pub read_buf: BytesMut,
    pub limits: Limits,
    pub session: Session,
    pub incoming: mpsc::Sender<Publish>,
    pub commands: mpsc::Receiver<Command>,
    pub state: watch::Sender<ConnectionState>,
}

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

enum Flow {
    Continue,
    /// The client disconnected on request.
    Done,
}

impl Connection {
    /// Runs until the connection ends; every pending operation is then answered with the
    /// reason and the state watch says `Closed`.
    pub async fn run(mut self) {
        let error = match self.serve().await {
            Ok(()) => ClientError::Disconnected,
            Err(e) => e,
        };
        // MQTT 5 (4.13): a client that ends the connection over the server's bad packet says
        // why in its DISCONNECT before closing (best effort, bounded by write_disconnect).
        if self.protocol == Protocol::V5
            && let Some(reason) = disconnect_reason(&error)
        {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.write_disconnect(reason)).await;
        }
        if matches!(error, ClientError::Disconnected) {
            tracing::debug!("MQTT connection closed by the client");
        } else {
            tracing::warn!(error = %error, "MQTT connection ended");
        }
        self.session.fail_all(&error);
        let _ = self.state.send(ConnectionState::Closed(error));
    }

    /// Keep alive (`ka`): a PINGREQ goes out when nothing was received for ka/2 or nothing
    /// was sent for ka (the MQTT rule), and the connection is declared dead when, with a
    /// PINGREQ outstanding, nothing at all arrived for 1.25 × ka. A half-open connection (the
    /// peer silent, the socket open) is so detected within 1.25 × ka of the last packet
    /// received, inside the 1.5 × ka the server itself allows.
    async fn serve(&mut self) -> Result<(), ClientError> {
        let mut last_sent = Instant::now();
        let mut last_received = Instant::now();
        let mut ping_sent = false;
        // Bytes that arrived with the CONNACK.
        if self.process_input(&mut ping_sent).await? {
            last_sent = Instant::now();
        }
        loop {
            let keep_alive = self.limits.keep_alive;
            let deadline = keep_alive.map(|ka| {
                if ping_sent {
                    last_received + ka + ka / 4
                } else {
                    (last_received + ka / 2).min(last_sent + ka)
                }
            });
            let accept_commands = self.session.inflight() < self.limits.window;
            self.read_buf.reserve(READ_CHUNK);
            tokio::select! {
                read = self.stream.read_buf(&mut self.read_buf) => {
                    match read {
                        Ok(0) => {
                            return Err(ClientError::ConnectionClosed {
                                in_flight: self.session.pending(),
                            });
                        }
                        Ok(_) => {
                            last_received = Instant::now();
                            if self.process_input(&mut ping_sent).await? {
                                last_sent = Instant::now();
                            }
                        }
                        Err(e) => return Err(ClientError::Io(e.to_string())),
                    }
                }
                command = self.commands.recv(), if accept_commands => {
                    let flow = match command {
                        Some(c) => self.command(c).await?,
                        // Every handle is gone: leave politely.
                        None => {
                            self.write_disconnect(ReasonCode::Success).await;
                            Flow::Done
                        }
                    };
                    last_sent = Instant::now();
                    if let Flow::Done = flow {
                        return Ok(());
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    let secs = keep_alive.map_or(0, |d| d.as_secs());
                    if ping_sent {
                        return Err(ClientError::KeepAliveTimeout(secs));
                    }
                    self.send(&Packet::PingReq).await?;
                    last_sent = Instant::now();
                    ping_sent = true;
                }
            }
        }
    }

    /// Decodes and handles every whole packet in the buffer. Returns whether anything was
    /// written (which resets the keep alive timer).
    async fn process_input(&mut self, ping_sent: &mut bool) -> Result<bool, ClientError> {
        let mut wrote = false;
        loop {
            let Some((packet, used)) =
                decode(&self.read_buf, self.protocol, self.limits.max_incoming)?
            else {
                // A partial packet: its announced size was already checked by `decode`.
                return Ok(wrote);
            };
            let _ = self.read_buf.split_to(used);
            // Any packet shows the server alive; PINGRESP only answers the ping.
            *ping_sent = false;
            if matches!(packet, Packet::PingResp) {
                continue;
            }
            wrote |= self.packet(packet).await?;
        }
    }

    /// Handles one packet from the server; returns whether it wrote an answer.
    async fn packet(&mut self, packet: Packet) -> Result<bool, ClientError> {
        match packet {
            Packet::Publish(p) => self.incoming_publish(p).await,
            Packet::PubAck(ack) => {
                let pending = self.take_publish(ack.packet_id, Stage::Acked, "PUBACK")?;
                let _ = pending.reply.send(publish_result(&pending.topic, &ack));
                Ok(false)
            }
            Packet::PubRec(rec) => {
                let pending = self.take_publish(rec.packet_id, Stage::Received, "PUBREC")?;
                if rec.reason_code.is_error() {
                    let _ = pending.reply.send(publish_result(&pending.topic, &rec));
                    return Ok(false);
                }
                self.session.publishes.insert(
                    rec.packet_id,
                    PendingPublish {
                        stage: Stage::Completed,
                        ..pending
                    },
                );
                let rel = PubResp::new(rec.packet_id, ReasonCode::Success);
                self.send(&Packet::PubRel(rel)).await?;
                Ok(true)
            }
            Packet::PubComp(comp) => {
                let pending = self.take_publish(comp.packet_id, Stage::Completed, "PUBCOMP")?;
                let _ = pending.reply.send(publish_result(&pending.topic, &comp));
                Ok(false)
            }
            Packet::PubRel(rel) => {
                let code = if self.session.incoming_qos2.remove(&rel.packet_id) {
                    ReasonCode::Success
                } else {
                    ReasonCode::PacketIdentifierNotFound
                };
                self.send(&Packet::PubComp(PubResp::new(rel.packet_id, code)))
                    .await?;
                Ok(true)
            }
            Packet::SubAck(ack) => {
                let pending = self
                    .session
                    .subscribes
                    .remove(&ack.packet_id)
                    .ok_or_else(|| {
                        ClientError::Protocol(format!(
                            "SUBACK for unknown packet id {}",
                            ack.packet_id
                        ))
                    })?;
                check_count("SUBACK", pending.filters, ack.reason_codes.len())?;
                let _ = pending.reply.send(Ok(ack.reason_codes));
                Ok(false)
            }
            Packet::UnsubAck(ack) => {
                let pending = self
                    .session
                    .unsubscribes
                    .remove(&ack.packet_id)
                    .ok_or_else(|| {
                        ClientError::Protocol(format!(
                            "UNSUBACK for unknown packet id {}",
                            ack.packet_id
                        ))
                    })?;
                // MQTT 3.1.1 UNSUBACK carries no reason codes: success for every filter.
                let codes = if self.protocol.is_v5() {
                    check_count("UNSUBACK", pending.filters, ack.reason_codes.len())?;
                    ack.reason_codes
                } else {
                    vec![ReasonCode::Success; pending.filters]
                };
                let _ = pending.reply.send(Ok(codes));
                Ok(false)
            }
            Packet::Disconnect(d) => Err(ClientError::ServerDisconnected {
                reason: d.reason_code,
                code: d.reason_code as u8,
                reason_string: d.properties.reason_string,
            }),
            Packet::Auth(_) => Err(ClientError::Protocol(
                "AUTH received, but enhanced authentication was not requested".into(),
            )),
            other => Err(ClientError::Protocol(format!(
                "{} is not sent by a server on an established connection",
                other.name()
            ))),
        }
    }

    async fn incoming_publish(&mut self, p: Publish) -> Result<bool, ClientError> {
        if p.topic.is_empty() {
            // We advertise no Topic Alias Maximum, so the server may not use aliases.
            return Err(ClientError::Protocol(
                "PUBLISH without a topic name (topic aliases were not offered)".into(),
            ));
        }
        match p.qos {
            QoS::AtMostOnce => {
                self.deliver(p).await;
                Ok(false)
            }
            QoS::AtLeastOnce => {
                let id = p.packet_id;
                self.deliver(p).await;
                self.send(&Packet::PubAck(PubResp::new(id, ReasonCode::Success)))
                    .await?;
                Ok(true)
            }
            QoS::ExactlyOnce => {
                let id = p.packet_id;
                // A resend (DUP) of an id awaiting PUBREL was delivered already.
                if !self.session.incoming_qos2.contains(&id) {
                    // Not enforced: mosquitto 2.0 frees a slot at PUBREC rather than PUBCOMP
                    // and so exceeds our Receive Maximum under load (seen with the bench
                    // example). The set is bounded by the 65,535 packet ids anyway.
                    if self.session.incoming_qos2.len() == self.limits.receive_maximum {
                        tracing::debug!(
                            receive_maximum = self.limits.receive_maximum,
                            "the server exceeds our Receive Maximum for QoS 2"
                        );
                    }
                    self.session.incoming_qos2.insert(id);
                    self.deliver(p).await;
                }
                self.send(&Packet::PubRec(PubResp::new(id, ReasonCode::Success)))
                    .await?;
                Ok(true)
            }
        }
    }

    /// Hands a publish to the application. When [`crate::Incoming`] is full this waits, and
    /// so does the socket (TCP backpressure towards the server). A dropped `Incoming` discards.
    async fn deliver(&mut self, p: Publish) {
        if self.incoming.send(p).await.is_err() {
            tracing::trace!("incoming publish discarded: the receiver is gone");
        }
    }

    fn take_publish(
        &mut self,
        id: u16,
        stage: Stage,
        what: &str,
    ) -> Result<PendingPublish, ClientError> {
        match self.session.publishes.remove(&id) {
            Some(p) if p.stage == stage => Ok(p),
            Some(p) => {
                let found = p.stage;
                self.session.publishes.insert(id, p);
                Err(ClientError::Protocol(format!(
                    "{what} for packet id {id}, which awaits {found:?}"
                )))
            }
            None => Err(ClientError::Protocol(format!(
                "{what} for unknown packet id {id}"
            ))),
        }
    }

    async fn command(&mut self, command: Command) -> Result<Flow, ClientError> {
        match command {
            Command::Publish { message, reply } => {
                if let Err(e) = self.publish(message, reply).await
                    && e.is_connection_error()
                {
                    return Err(e);
                }
            }
            Command::Subscribe {
                filters,
                properties,
                reply,
            } => {
                let n = filters.len();
                let result = self
                    .with_id(|packet_id| {
                        Packet::Subscribe(Subscribe {
                            packet_id,
                            filters,
                            properties,
                        })
                    })
                    .await;
                match result {
                    Ok(id) => {
                        self.session
                            .subscribes
                            .insert(id, PendingCodes { filters: n, reply });
                    }
                    Err(e) => return self.refuse(e, reply),
                }
            }
            Command::Unsubscribe { filters, reply } => {
                let n = filters.len();
                let result = self
                    .with_id(|packet_id| {
                        Packet::Unsubscribe(Unsubscribe {
                            packet_id,
                            filters,
                            properties: Properties::default(),
                        })
                    })
                    .await;
                match result {
                    Ok(id) => {
                        self.session
                            .unsubscribes
                            .insert(id, PendingCodes { filters: n, reply });
                    }
                    Err(e) => return self.refuse(e, reply),
                }
            }
            Command::Disconnect { reason, reply } => {
                self.write_disconnect(reason).await;
                let _ = reply.send(Ok(()));
                return Ok(Flow::Done);
            }
        }
        Ok(Flow::Continue)
    }

    /// Answers an operation that could not be sent; a broken connection still ends the loop.
    fn refuse<T>(
        &mut self,
        e: ClientError,
        reply: oneshot::Sender<Result<T, ClientError>>,
    ) -> Result<Flow, ClientError> {
        let fatal = e.is_connection_error();
        let _ = reply.send(Err(e.clone()));
        if fatal { Err(e) } else { Ok(Flow::Continue) }
    }

    async fn publish(&mut self, message: Message, reply: PublishReply) -> Result<(), ClientError> {
        let refused = |e: ClientError, reply: PublishReply| {
            let _ = reply.send(Err(e.clone()));
            Err(e)
        };
        if let Err(e) = validate_topic_name(&message.topic) {
            let e = ClientError::InvalidArgument {
                field: "topic",
                reason: format!("{:?}: {e}", message.topic),
            };
            return refused(e, reply);
        }
        if message.qos > self.limits.max_qos {
            let e = ClientError::QosNotSupported {
                asked: message.qos as u8,
                max: self.limits.max_qos as u8,
            };
            return refused(e, reply);
        }
        let qos = message.qos;
        let topic = message.topic.clone();
        let build = |packet_id| {
            Packet::Publish(Publish {
                dup: false,
                qos: message.qos,
                retain: message.retain,
                topic: message.topic.as_str().into(),
                packet_id,
                properties: message.properties.clone(),
                payload: message.payload.clone(),
            })
        };
        if qos == QoS::AtMostOnce {
            return match self.send(&build(0)).await {
                Ok(()) => {
                    let _ = reply.send(Ok(ReasonCode::Success));
                    Ok(())
                }
                Err(e) => refused(e, reply),
            };
        }
        match self.with_id(build).await {
            Ok(id) => {
                let stage = if qos == QoS::AtLeastOnce {
                    Stage::Acked
                } else {
                    Stage::Received
                };
                self.session.publishes.insert(
                    id,
                    PendingPublish {
                        topic,
                        stage,
                        reply,
                    },
                );
                Ok(())
            }
            Err(e) => refused(e, reply),
        }
    }

    /// Allocates a packet id, builds the packet with it and writes it; returns the id.
    async fn with_id(&mut self, build: impl FnOnce(u16) -> Packet) -> Result<u16, ClientError> {
        let id = self.session.allocate_id().ok_or_else(|| {
            ClientError::Protocol("all 65535 packet identifiers are in use".into())
        })?;
        self.send(&build(id)).await?;
        Ok(id)
    }

    /// Encodes, checks against the server's maximum packet size, writes and flushes.
    async fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        let bytes = to_vec(packet, self.protocol).map_err(|source| ClientError::Encode {
            packet: packet.name(),
            source,
        })?;
        if bytes.len() > self.limits.max_outgoing {
            return Err(ClientError::PacketTooLarge {
                packet: packet.name(),
                size: bytes.len(),
                max: self.limits.max_outgoing,
            });
        }
        write_all(&mut self.stream, &bytes).await
    }

    /// Best effort: the connection is ending either way.
    async fn write_disconnect(&mut self, reason: ReasonCode) {
        let packet = Packet::Disconnect(Disconnect {
            reason_code: reason,
            properties: Properties::default(),
        });
        let _ = self.send(&packet).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.stream.shutdown()).await;
    }
}

pub(crate) async fn write_all(stream: &mut Stream, bytes: &[u8]) -> Result<(), ClientError> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    stream
        .flush()
        .await
        .map_err(|e| ClientError::Io(e.to_string()))
}

fn publish_result(topic: &str, ack: &PubResp) -> Result<ReasonCode, ClientError> {
    if ack.reason_code.is_error() {
        Err(ClientError::PublishRejected {
            topic: topic.to_string(),
            reason: ack.reason_code,
            code: ack.reason_code as u8,
            reason_string: ack.properties.reason_string.clone(),
        })
    } else {
        Ok(ack.reason_code)
    }
}

fn check_count(what: &str, asked: usize, got: usize) -> Result<(), ClientError> {
    if asked == got {
        Ok(())
    } else {
        Err(ClientError::Protocol(format!(
            "{what} carries {got} reason codes for {asked} filters"
        )))
    }
}

/// The DISCONNECT reason for a connection the client ends because of the server's packet.
fn disconnect_reason(error: &ClientError) -> Option<ReasonCode> {
    match error {
        ClientError::Malformed(DecodeError::PacketTooLarge { .. }) => {
            Some(ReasonCode::PacketTooLarge)
        }
        ClientError::Malformed(_) => Some(ReasonCode::MalformedPacket),
        ClientError::Protocol(_) => Some(ReasonCode::ProtocolError),
        _ => None,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Checks filters before they go on the wire, so a bad one fails only its own request.
pub(crate) fn validate_filters<'a>(
    filters: impl IntoIterator<Item = &'a str>,
) -> Result<usize, ClientError> {
    let mut n = 0;
    for f in filters {
        validate_topic_filter(f).map_err(|e| ClientError::InvalidArgument {
            field: "topic filter",
            reason: format!("{f:?}: {e}"),
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(ClientError::InvalidArgument {
            field: "topic filters",
            reason: "at least one filter is needed".into(),
        });
    }
    Ok(n)
}
