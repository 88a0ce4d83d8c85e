//! Client errors. Each says what failed and, for a broken connection, why it broke.

use std::path::PathBuf;

use lichen_mqtt::{DecodeError, EncodeError, ReasonCode};

/// Why an operation or the connection failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// A PEM file named in the TLS options could not be read or holds nothing usable.
    #[error("TLS {what} file {path}: {reason}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The TLS configuration was refused (for example a key that does not match the cert).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// The TCP connection or the TLS handshake to `addr` failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// Nothing (or no whole CONNACK) arrived within the connect timeout.
    #[error("no CONNACK from {addr} within {secs} s")]
    ConnectTimeout { addr: String, secs: u64 },
    /// The server answered CONNECT with a failure reason code.
    #[error(
        "{addr} refused the connection: {reason:?} ({code:#04x}){}",
        detail(reason_string)
    )]
    ConnectRefused {
        addr: String,
        reason: ReasonCode,
        code: u8,
        reason_string: Option<String>,
    },
    /// An option is not valid MQTT (empty topic, bad filter, …).
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// A packet could not be encoded (a field over 65,535 bytes, …).
    #[error("cannot encode {packet}: {source}")]
    Encode {
        packet: &'static str,
        source: EncodeError,
    },
    /// The packet is larger than the server's Maximum Packet Size.
    #[error("{packet} of {size} bytes exceeds the server's maximum packet size of {max}")]
    PacketTooLarge {
        packet: &'static str,
        size: usize,
        max: usize,
    },
    /// The server accepts at most this QoS (CONNACK Maximum QoS).
    #[error("the server accepts at most QoS {max}; refused a QoS {asked} publish")]
    QosNotSupported { asked: u8, max: u8 },
    /// The server answered a QoS 1/2 publish with a failure reason code.
    #[error(
        "publish to {topic:?} rejected: {reason:?} ({code:#04x}){}",
        detail(reason_string)
    )]
    PublishRejected {
        topic: String,
        reason: ReasonCode,
        code: u8,
        reason_string: Option<String>,
    },
    /// Bytes from the server were not valid MQTT.
    #[error("malformed packet from the server: {0}")]
    Malformed(#[from] DecodeError),
    /// The server broke the protocol (an ack for an unknown packet id, …).
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// The server sent DISCONNECT (MQTT 5).
    #[error(
        "the server disconnected: {reason:?} ({code:#04x}){}",
        detail(reason_string)
    )]
    ServerDisconnected {
        reason: ReasonCode,
        code: u8,
        reason_string: Option<String>,
    },
    /// Nothing arrived from the server for 1.25 × the keep alive (seconds), a PINGREQ
    /// outstanding: the connection is half-open or the server is stuck.
    #[error(
        "keep alive timeout: nothing from the server for 1.25 × the {0} s keep alive, a PINGREQ unanswered"
    )]
    KeepAliveTimeout(u64),
    /// The server closed the socket.
    #[error("the server closed the connection{}", awaiting(*in_flight))]
    ConnectionClosed { in_flight: usize },
    /// Reading or writing the socket failed.
    #[error("connection I/O error: {0}")]
    Io(String),
    /// The connection task stopped without saying why (a bug: it should never happen).
    #[error("the MQTT connection task stopped unexpectedly")]
    TaskEnded,
    /// The client disconnected (the operation was issued after, or was pending at, DISCONNECT).
    #[error("the client has disconnected")]
    Disconnected,
}

fn detail(reason_string: &Option<String>) -> String {
    match reason_string {
        Some(s) => format!(": {s}"),
        None => String::new(),
    }
}

fn awaiting(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" with {n} operation(s) awaiting an answer")
    }
}

impl ClientError {
    /// Whether the error ended the connection (as opposed to failing one operation).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            ClientError::Malformed(_)
                | ClientError::Protocol(_)
                | ClientError::ServerDisconnected { .. }
                | ClientError::KeepAliveTimeout(_)
                | ClientError::ConnectionClosed { .. }
                | ClientError::Io(_)
                | ClientError::Disconnected
                | ClientError::TaskEnded
        )
    }
}
