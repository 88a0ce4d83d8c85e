//! Decode and encode errors.

use crate::ReasonCode;

/// Why bytes could not be decoded into a packet. Every variant maps to the MQTT 5 reason code a
/// server sends in its DISCONNECT (or CONNACK) with [`DecodeError::reason_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed variable byte integer")]
    MalformedVarInt,
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },
    #[error("invalid packet type {0}")]
    InvalidPacketType(u8),
    #[error("invalid fixed header flags {flags:#06b} for {packet}")]
    InvalidFlags { packet: &'static str, flags: u8 },
    #[error("{0}: packet ends before its fields do")]
    Truncated(&'static str),
    #[error("{0}: bytes left over after the last field")]
    TrailingBytes(&'static str),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("string contains the null character U+0000")]
    NullCharacter,
    #[error("unsupported protocol name {name:?} level {level}")]
    UnsupportedProtocol { name: String, level: u8 },
    #[error("invalid QoS 3")]
    InvalidQos,
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    #[error("property {id:#04x} is not allowed in {packet}")]
    PropertyNotAllowed { id: u8, packet: &'static str },
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    #[error("property {0:#04x} has an invalid value")]
    InvalidPropertyValue(u8),
    #[error("reason code {code:#04x} is not valid in {packet}")]
    InvalidReasonCode { packet: &'static str, code: u8 },
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl DecodeError {
    /// The reason code to send to the peer when closing the connection because of this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocol { .. } => ReasonCode::UnsupportedProtocolVersion,
            DecodeError::Protocol(_)
            | DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_) => ReasonCode::ProtocolError,
            _ => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{field} is {len} bytes, more than the 65535 an MQTT string or binary field can hold")]
    FieldTooLong { field: &'static str, len: usize },
    #[error("packet body of {0} bytes is larger than MQTT's 268435455 byte limit")]
    PacketTooLarge(usize),
    #[error("value {0} does not fit a variable byte integer")]
    VarIntTooLarge(u64),
    #[error("{0}")]
    Invalid(&'static str),
}
