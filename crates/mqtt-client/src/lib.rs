//! An async MQTT 3.1.1 / 5.0 client over the [`lichen_mqtt`] codec, on plain TCP or TLS
//! (rustls with aws-lc-rs; client certificate, key and CA from PEM files; the server's name is
//! verified).
//!
//! ```no_run
//! # async fn demo() -> Result<(), lichen_mqtt_client::ClientError> {
//! use lichen_mqtt_client::{Client, ConnectOptions, QoS};
//! let (client, mut incoming) = Client::connect(ConnectOptions::new("127.0.0.1:1883", "me")).await?;
//! client.subscribe_one("a/#", QoS::AtLeastOnce).await?;
//! client.publish("a/b", "hello", QoS::AtLeastOnce).await?;
//! let message = incoming.recv().await;
//! client.disconnect().await?;
//! # Ok(()) }
//! ```
//!
//! [`Client::connect`] returns once CONNACK accepted the connection (a refusal is
//! [`ClientError::ConnectRefused`] with the reason code). The connection then runs in a task
//! that answers the server (PUBACK, PUBREC/PUBREL/PUBCOMP both ways), sends PINGREQ when
//! nothing was sent for a keep alive, and on any failure ends with a [`ClientError`] saying
//! why ([`Client::closed`]); every operation pending then fails with that error. There is no
//! automatic reconnect: the per-connection packet-id state (`session.rs`) is kept apart from the
//! socket loop so a reconnecting layer can carry it over.
//!
//! # Bounds
//! | what | bound |
//! |---|---|
//! | incoming publishes not yet taken by the application | `incoming_capacity` (default [`DEFAULT_INCOMING_CAPACITY`] = 256); when full, the connection stops reading |
//! | our QoS 1/2 publishes awaiting an ack | min(`max_inflight` (default [`DEFAULT_MAX_INFLIGHT`] = 64), server Receive Maximum); further commands wait |
//! | incoming QoS 2 awaiting PUBREL | `max_inflight` is advertised as our Receive Maximum; not enforced (mosquitto 2.0 goes over it), the set is bounded by the 65,535 packet ids (a few bytes each) |
//! | commands queued from handles | [`COMMAND_QUEUE`] = 64 |
//! | packet from the server | `max_packet_size` (default [`DEFAULT_MAX_PACKET_SIZE`] = 1 MiB), checked on the fixed header before buffering; sent as Maximum Packet Size in v5 |
//! | packet to the server | the server's Maximum Packet Size ([`ClientError::PacketTooLarge`], the connection stays up) |
//! | read buffer | one partial packet (≤ `max_packet_size`) + 8 KiB |
//! | TCP + TLS + CONNACK | `connect_timeout` (default 10 s) |
//! | silence from the server | PINGREQ after ½ keep alive without a packet received (or a keep alive without one sent); [`ClientError::KeepAliveTimeout`] at 1.25 × keep alive without any packet: a half-open connection is detected within 1.25 × keep alive |
//!
//! Topic aliases are not offered to the server (no Topic Alias Maximum in CONNECT) and not
//! used towards it. Enhanced authentication (AUTH) is not supported.

mod client;
mod connection;
mod error;
mod options;
mod session;

pub use bytes::Bytes;
pub use client::{COMMAND_QUEUE, Client, ConnectInfo, ConnectionState, Incoming};
pub use error::ClientError;
pub use lichen_mqtt::topic;
pub use lichen_mqtt::{
    Properties, Protocol, Publish, QoS, ReasonCode, RetainHandling, SubscriptionOptions,
};
pub use options::{
    ConnectOptions, DEFAULT_CONNECT_TIMEOUT, DEFAULT_INCOMING_CAPACITY, DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_PACKET_SIZE, Message, TlsFiles, Transport, tls_config,
};
