//! The application's side: [`Client`] (cloneable handle) and [`Incoming`] (publishes from the
//! server). [`Client::connect`] does TCP, TLS and CONNECT/CONNACK before returning, so a
//! returned client is connected; the connection then runs in its own task.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lichen_mqtt::*;
use tokio::sync::{mpsc, oneshot, watch};

use crate::ClientError;
use crate::connection::{Command, Connection, Limits, validate_filters, write_all};
use crate::options::{ConnectOptions, Message, Stream, open};
use crate::session::Session;

/// Commands queued from handles to the connection task.
pub const COMMAND_QUEUE: usize = 64;

/// Whether the connection is up, or why it ended.
#[derive(Debug, Clone)]
pub enum ConnectionState {
    Connected,
    Closed(ClientError),
}

/// What the server said in CONNACK, as it applies to this connection.
#[derive(Debug, Clone)]
pub struct ConnectInfo {
    pub protocol: Protocol,
    pub session_present: bool,
    /// The client id the server assigned when we sent an empty one (MQTT 5).
    pub assigned_client_id: Option<String>,
    /// Keep alive in force: the server's when it set one.
    pub keep_alive: u16,
    /// Our QoS 1/2 publishes allowed in flight.
    pub inflight_window: usize,
    pub max_qos: QoS,
    /// Largest packet the server accepts.
    pub server_max_packet_size: usize,
    /// All CONNACK properties (MQTT 5).
    pub properties: Properties,
}

/// A handle on one connection. Clones share it; when the last is dropped the connection
/// sends DISCONNECT and closes.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<ConnectionState>,
    info: std::sync::Arc<ConnectInfo>,
}

/// Publishes from the server, in order. Bounded by `ConnectOptions::incoming_capacity`; while
/// it is full the connection stops reading (the server sees TCP backpressure, and a consumer
/// that stalls past the keep alive may be disconnected). Ends (`None`) with the connection.
pub struct Incoming {
    rx: mpsc::Receiver<Publish>,
}

impl Incoming {
    pub async fn recv(&mut self) -> Option<Publish> {
        self.rx.recv().await
    }

    /// Like [`Incoming::recv`], giving up after `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<Publish> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Client {
    /// Connects (TCP, TLS, CONNECT, CONNACK) within `options.connect_timeout`.
    pub async fn connect(options: ConnectOptions) -> Result<(Client, Incoming), ClientError> {
        validate(&options)?;
        let secs = options.connect_timeout.as_secs();
        let handshake = async {
            let mut stream = open(&options).await?;
            let connack = handshake(&mut stream, &options).await?;
            Ok::<_, ClientError>((stream, connack))
        };
        let (stream, (connack, leftover)) =
            tokio::time::timeout(options.connect_timeout, handshake)
                .await
                .map_err(|_| ClientError::ConnectTimeout {
                    addr: options.addr.clone(),
                    secs,
                })??;
        if connack.reason_code.is_error() {
            return Err(ClientError::ConnectRefused {
                addr: options.addr.clone(),
                reason: connack.reason_code,
                code: connack.reason_code as u8,
                reason_string: connack.properties.reason_string,
            });
        }
        let props = &connack.properties;
        let keep_alive = props.server_keep_alive.unwrap_or(options.keep_alive);
        let window = usize::from(options.max_inflight.max(1)).min(usize::from(
            props.receive_maximum.unwrap_or(u16::MAX).max(1),
        ));
        let max_qos = props
            .maximum_qos
            .and_then(QoS::from_u8)
            .unwrap_or(QoS::ExactlyOnce);
        let server_max = props
            .maximum_packet_size
            .map_or(MAX_PACKET_SIZE, |m| m as usize);
        let info = ConnectInfo {
            protocol: options.protocol,
            session_present: connack.session_present,
            assigned_client_id: props.assigned_client_identifier.clone(),
            keep_alive,
            inflight_window: window,
            max_qos,
            server_max_packet_size: server_max,
            properties: connack.properties.clone(),
        };
        tracing::debug!(addr = %options.addr, client_id = %options.client_id, "MQTT connected");
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(options.incoming_capacity.max(1));
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connected);
        let connection = Connection {
            stream,
            protocol: options.protocol,
            read_buf: leftover,
            limits: Limits {
                window,
                receive_maximum: usize::from(options.max_inflight.max(1)),
                max_incoming: options.max_packet_size as usize,
                max_outgoing: server_max,
                max_qos,
                keep_alive: (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive))),
            },
            session: Session::default(),
            incoming: in_tx,
            commands: cmd_rx,
            state: state_tx,
        };
        tokio::spawn(connection.run());
        Ok((
            Client {
                commands: cmd_tx,
                state: state_rx,
                info: std::sync::Arc::new(info),
            },
            Incoming { rx: in_rx },
        ))
    }

    pub fn info(&self) -> &ConnectInfo {
        &self.info
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// Waits until the connection ends and returns why.
    pub async fn closed(&self) -> ClientError {
        let mut state = self.state.clone();
        loop {
            if let ConnectionState::Closed(e) = &*state.borrow_and_update() {
                return e.clone();
            }
            if state.changed().await.is_err() {
                // The task always publishes `Closed` before it ends; only a panic skips it.
                return ClientError::TaskEnded;
            }
        }
    }

    /// Publishes and waits: QoS 0 until written, QoS 1 until PUBACK, QoS 2 until PUBCOMP.
    /// Returns the server's (non-error) reason code, e.g. No matching subscribers; an error
    /// reason code is [`ClientError::PublishRejected`]. Waits for room in the in-flight window.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<ReasonCode, ClientError> {
        self.publish_message(Message::new(topic, payload, qos))
            .await
    }

    pub async fn publish_message(&self, message: Message) -> Result<ReasonCode, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.request(Command::Publish { message, reply }, rx)
            .await?
    }

    /// Queues a publish and returns (once it is queued) a future for its outcome, as
    /// [`Client::publish_message`] answers it. The connection task takes commands in order,
    /// so publishes queued one after the other go on the wire in that order: a caller can
    /// keep several in flight (up to the window) without losing their order, as the cloud
    /// spool's drain does.
    pub async fn publish_queued(
        &self,
        message: Message,
    ) -> Result<
        impl std::future::Future<Output = Result<ReasonCode, ClientError>> + Send + 'static,
        ClientError,
    > {
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Publish { message, reply })
            .await
            .is_err()
        {
            return Err(self.closed().await);
        }
        let this = self.clone();
        Ok(async move {
            match rx.await {
                Ok(v) => v,
                Err(_) => Err(this.closed().await),
            }
        })
    }

    /// Subscribes; returns one reason code per filter (granted QoS, or the failure).
    pub async fn subscribe(
        &self,
        filters: Vec<(String, SubscriptionOptions)>,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        self.subscribe_with(filters, Properties::default()).await
    }

    /// Like [`Client::subscribe`] with MQTT 5 SUBSCRIBE properties (subscription identifier).
    pub async fn subscribe_with(
        &self,
        filters: Vec<(String, SubscriptionOptions)>,
        properties: Properties,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        validate_filters(filters.iter().map(|(f, _)| f.as_str()))?;
        let (reply, rx) = oneshot::channel();
        let command = Command::Subscribe {
            filters,
            properties,
            reply,
        };
        self.request(command, rx).await?
    }

    /// Subscribes to one filter and fails with the server's reason when it is refused.
    pub async fn subscribe_one(&self, filter: &str, qos: QoS) -> Result<QoS, ClientError> {
        let options = SubscriptionOptions {
            qos,
            ..Default::default()
        };
        let codes = self.subscribe(vec![(filter.to_string(), options)]).await?;
        match codes.first() {
            Some(ReasonCode::Success) => Ok(QoS::AtMostOnce),
            Some(ReasonCode::GrantedQos1) => Ok(QoS::AtLeastOnce),
            Some(ReasonCode::GrantedQos2) => Ok(QoS::ExactlyOnce),
            Some(code) => Err(ClientError::InvalidArgument {
                field: "topic filter",
                reason: format!(
                    "{filter:?} refused by the server: {code:?} ({:#04x})",
                    *code as u8
                ),
            }),
            None => Err(ClientError::Protocol("SUBACK without a reason code".into())),
        }
    }

    /// Unsubscribes; one reason code per filter (all Success under MQTT 3.1.1).
    pub async fn unsubscribe(&self, filters: Vec<String>) -> Result<Vec<ReasonCode>, ClientError> {
        validate_filters(filters.iter().map(String::as_str))?;
        let (reply, rx) = oneshot::channel();
        self.request(Command::Unsubscribe { filters, reply }, rx)
            .await?
    }

    /// Sends DISCONNECT (normal disconnection) and closes the socket. Operations still pending
    /// fail with [`ClientError::Disconnected`].
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.disconnect_with(ReasonCode::Success).await
    }

    /// DISCONNECT with a reason (MQTT 5; e.g. Disconnect with Will Message).
    pub async fn disconnect_with(&self, reason: ReasonCode) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        match self
            .request(Command::Disconnect { reason, reply }, rx)
            .await
        {
            Ok(r) => r,
            // Already closed: nothing left to disconnect.
            Err(ClientError::Disconnected) => Ok(()),
            Err(e) if e.is_connection_error() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn request<T>(
        &self,
        command: Command,
        rx: oneshot::Receiver<T>,
    ) -> Result<T, ClientError> {
        if self.commands.send(command).await.is_err() {
            return Err(self.closed().await);
        }
        match rx.await {
            Ok(v) => Ok(v),
            Err(_) => Err(self.closed().await),
        }
    }
}

fn validate(options: &ConnectOptions) -> Result<(), ClientError> {
    if options.protocol == Protocol::V311 && options.client_id.is_empty() && !options.clean_start {
        return Err(ClientError::InvalidArgument {
            field: "client_id",
            reason: "MQTT 3.1.1 needs a client id for a persistent session".into(),
        });
    }
    if options.password.is_some() && options.username.is_none() && !options.protocol.is_v5() {
        return Err(ClientError::InvalidArgument {
            field: "password",
            reason: "MQTT 3.1.1 sends a password only with a user name".into(),
        });
    }
    if let Some(will) = &options.will {
        lichen_mqtt::topic::validate_topic_name(&will.topic).map_err(|e| {
            ClientError::InvalidArgument {
                field: "will topic",
                reason: format!("{:?}: {e}", will.topic),
            }
        })?;
    }
    if options.max_packet_size < 64 {
        return Err(ClientError::InvalidArgument {
            field: "max_packet_size",
            reason: "must be at least 64 bytes".into(),
        });
    }
    Ok(())
}

/// Writes CONNECT and reads the CONNACK. Returns it and any bytes read after it.
async fn handshake(
    stream: &mut Stream,
    options: &ConnectOptions,
) -> Result<(ConnAck, BytesMut), ClientError> {
    use tokio::io::AsyncReadExt;
    let mut properties = options.properties.clone();
    if options.protocol.is_v5() {
        properties.session_expiry_interval = options
            .session_expiry
            .or(properties.session_expiry_interval);
        properties.receive_maximum = Some(options.max_inflight.max(1));
        properties.maximum_packet_size = Some(options.max_packet_size);
    }
    let connect = Connect {
        protocol: options.protocol,
        clean_start: options.clean_start,
        keep_alive: options.keep_alive,
        client_id: options.client_id.clone(),
        will: options.will.as_ref().map(|w| Will {
            topic: w.topic.clone(),
            payload: w.payload.clone(),
            qos: w.qos,
            retain: w.retain,
            properties: w.properties.clone(),
        }),
        username: options.username.clone(),
        password: options.password.clone(),
        properties,
    };
    let bytes =
        to_vec(&Packet::Connect(Box::new(connect)), options.protocol).map_err(|source| {
            ClientError::Encode {
                packet: "CONNECT",
                source,
            }
        })?;
    write_all(stream, &bytes).await?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if let Some((packet, used)) =
            decode(&buf, options.protocol, options.max_packet_size as usize)?
        {
            let _ = buf.split_to(used);
            return match packet {
                Packet::ConnAck(ack) => Ok((ack, buf)),
                Packet::Disconnect(d) => Err(ClientError::ConnectRefused {
                    addr: options.addr.clone(),
                    reason: d.reason_code,
                    code: d.reason_code as u8,
                    reason_string: d.properties.reason_string,
                }),
                other => Err(ClientError::Protocol(format!(
                    "expected CONNACK, got {}",
                    other.name()
                ))),
            };
        }
        buf.reserve(1024);
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        if n == 0 {
            return Err(ClientError::ConnectionClosed { in_flight: 0 });
        }
    }
}
