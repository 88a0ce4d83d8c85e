//! The event-stream RPC layer (aws-c-event-stream RPC): message types, flags, stream ids and
//! the reserved headers, on top of [`crate::frame`].

use bytes::{Bytes, BytesMut};

use crate::error::{EncodeError, RpcError};
use crate::frame::{Frame, Header, HeaderValue};

/// Reserved header names.
pub mod headers {
    pub const MESSAGE_TYPE: &str = ":message-type";
    pub const MESSAGE_FLAGS: &str = ":message-flags";
    pub const STREAM_ID: &str = ":stream-id";
    /// On CONNECT.
    pub const VERSION: &str = ":version";
    pub const CONTENT_TYPE: &str = ":content-type";
    /// On the first message of a stream. No leading colon.
    pub const OPERATION: &str = "operation";
    pub const SERVICE_MODEL_TYPE: &str = "service-model-type";
    pub const CONTENT_TYPE_JSON: &str = "application/json";
    /// The RPC protocol version clients send on CONNECT.
    pub const PROTOCOL_VERSION: &str = "0.1.0";
}

/// `:message-flags` bits.
pub mod flags {
    /// On CONNECT_ACK: the connection is accepted.
    pub const CONNECTION_ACCEPTED: i32 = 1;
    /// The stream ends with this message.
    pub const TERMINATE_STREAM: i32 = 2;
}

/// `:message-type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    ApplicationMessage = 0,
    ApplicationError = 1,
    Ping = 2,
    PingResponse = 3,
    Connect = 4,
    ConnectAck = 5,
    ProtocolError = 6,
    /// Also called INTERNAL_ERROR.
    ServerError = 7,
}

impl MessageType {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => MessageType::ApplicationMessage,
            1 => MessageType::ApplicationError,
            2 => MessageType::Ping,
            3 => MessageType::PingResponse,
            4 => MessageType::Connect,
            5 => MessageType::ConnectAck,
            6 => MessageType::ProtocolError,
            7 => MessageType::ServerError,
            _ => return None,
        })
    }
}

/// An RPC message: the reserved headers pulled out, the rest kept in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcMessage {
    pub message_type: MessageType,
    pub flags: i32,
    /// 0 for connection-level messages, ≥ 1 for streams.
    pub stream_id: i32,
    /// Every header but `:message-type`, `:message-flags` and `:stream-id`.
    pub headers: Vec<Header>,
    pub payload: Bytes,
}

impl RpcMessage {
    pub fn new(message_type: MessageType, flags: i32, stream_id: i32) -> Self {
        RpcMessage {
            message_type,
            flags,
            stream_id,
            headers: Vec::new(),
            payload: Bytes::new(),
        }
    }

    pub fn with_header(mut self, header: Header) -> Self {
        self.headers.push(header);
        self
    }

    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
        self
    }

    /// A JSON application message or error with `:content-type` and `service-model-type`.
    pub fn json(
        message_type: MessageType,
        flags: i32,
        stream_id: i32,
        model_type: &str,
        payload: impl Into<Bytes>,
    ) -> Self {
        RpcMessage::new(message_type, flags, stream_id)
            .with_header(Header::string(
                headers::CONTENT_TYPE,
                headers::CONTENT_TYPE_JSON,
            ))
            .with_header(Header::string(headers::SERVICE_MODEL_TYPE, model_type))
            .with_payload(payload)
    }

    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// A string header's value; `None` when absent or of another type.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }

    pub fn terminates(&self) -> bool {
        self.flags & flags::TERMINATE_STREAM != 0
    }

    /// Interprets a frame. `:message-type` is required; missing flags or stream id mean 0.
    pub fn from_frame(frame: Frame) -> Result<Self, RpcError> {
        let mut message_type = None;
        let mut msg_flags = 0;
        let mut stream_id = 0;
        let mut rest = Vec::with_capacity(frame.headers.len());
        for h in frame.headers {
            match h.name.as_str() {
                headers::MESSAGE_TYPE => {
                    let v = h
                        .value
                        .as_i32()
                        .ok_or(RpcError::MissingHeader(headers::MESSAGE_TYPE))?;
                    message_type = Some(MessageType::from_i32(v).ok_or(RpcError::MessageType(v))?);
                }
                headers::MESSAGE_FLAGS => {
                    msg_flags = h
                        .value
                        .as_i32()
                        .ok_or(RpcError::MissingHeader(headers::MESSAGE_FLAGS))?;
                }
                headers::STREAM_ID => {
                    stream_id = h
                        .value
                        .as_i32()
                        .ok_or(RpcError::MissingHeader(headers::STREAM_ID))?;
                }
                _ => rest.push(h),
            }
        }
        Ok(RpcMessage {
            message_type: message_type.ok_or(RpcError::MissingHeader(headers::MESSAGE_TYPE))?,
            flags: msg_flags,
            stream_id,
            headers: rest,
            payload: frame.payload,
        })
    }

    pub fn into_frame(self) -> Frame {
        let mut hs = Vec::with_capacity(self.headers.len() + 3);
        hs.push(Header::int32(
            headers::MESSAGE_TYPE,
            self.message_type as i32,
        ));
        hs.push(Header::int32(headers::MESSAGE_FLAGS, self.flags));
        hs.push(Header::int32(headers::STREAM_ID, self.stream_id));
        hs.extend(self.headers);
        Frame {
            headers: hs,
            payload: self.payload,
        }
    }

    /// Appends the encoded message to `out`.
    pub fn encode(self, out: &mut BytesMut, max_frame_bytes: usize) -> Result<(), EncodeError> {
        self.into_frame().encode(out, max_frame_bytes)
    }
}

/// Appends a JSON application message or error straight to `out`, without building headers:
/// the same bytes as [`RpcMessage::json`] + [`RpcMessage::encode`], for hot paths.
pub fn encode_json(
    out: &mut BytesMut,
    message_type: MessageType,
    flags: i32,
    stream_id: i32,
    model_type: &str,
    payload: &[u8],
    max_frame_bytes: usize,
) -> Result<(), EncodeError> {
    use bytes::BufMut;
    const INT_HEADERS: [&str; 3] = [
        headers::MESSAGE_TYPE,
        headers::MESSAGE_FLAGS,
        headers::STREAM_ID,
    ];
    if model_type.len() > u16::MAX as usize {
        return Err(EncodeError::HeaderValue {
            name: headers::SERVICE_MODEL_TYPE.to_string(),
            len: model_type.len(),
        });
    }
    let int_len: usize = INT_HEADERS.iter().map(|n| 1 + n.len() + 1 + 4).sum();
    let headers_len = int_len
        + (1 + headers::CONTENT_TYPE.len() + 3 + headers::CONTENT_TYPE_JSON.len())
        + (1 + headers::SERVICE_MODEL_TYPE.len() + 3 + model_type.len());
    let start = crate::frame::put_prelude(out, headers_len, payload.len(), max_frame_bytes)?;
    for (name, value) in INT_HEADERS
        .iter()
        .zip([message_type as i32, flags, stream_id])
    {
        out.put_u8(name.len() as u8);
        out.put_slice(name.as_bytes());
        out.put_u8(4);
        out.put_i32(value);
    }
    for (name, value) in [
        (headers::CONTENT_TYPE, headers::CONTENT_TYPE_JSON),
        (headers::SERVICE_MODEL_TYPE, model_type),
    ] {
        out.put_u8(name.len() as u8);
        out.put_slice(name.as_bytes());
        out.put_u8(7);
        out.put_u16(value.len() as u16);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32(crc);
    Ok(())
}
