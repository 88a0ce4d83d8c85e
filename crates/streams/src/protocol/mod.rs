//! The Stream Manager wire protocol (see `stream-manager-protocol.md` §1): framing, the
//! connect handshake, the CBOR messages and the status codes. Pure: no I/O.

pub mod cbor;
pub mod frame;
pub mod messages;

pub use frame::{CONNECT_VERSION, FrameError, FrameHeader, MAX_FRAME_BYTES, encode_frame};
pub use messages::*;

/// The `Operation` enum of the SDKs (one byte in every frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Operation {
    Unknown = 0,
    Connect = 1,
    CreateMessageStream = 2,
    DeleteMessageStream = 3,
    AppendMessage = 4,
    ReadMessages = 5,
    ConnectResponse = 6,
    CreateMessageStreamResponse = 7,
    DeleteMessageStreamResponse = 8,
    AppendMessageResponse = 9,
    ReadMessagesResponse = 10,
    ListStreams = 11,
    ListStreamsResponse = 12,
    DescribeMessageStream = 13,
    DescribeMessageStreamResponse = 14,
    UpdateMessageStream = 15,
    UpdateMessageStreamResponse = 16,
    UnknownOperationError = 17,
}

impl Operation {
    pub fn from_u8(op: u8) -> Option<Operation> {
        use Operation::*;
        Some(match op {
            0 => Unknown,
            1 => Connect,
            2 => CreateMessageStream,
            3 => DeleteMessageStream,
            4 => AppendMessage,
            5 => ReadMessages,
            6 => ConnectResponse,
            7 => CreateMessageStreamResponse,
            8 => DeleteMessageStreamResponse,
            9 => AppendMessageResponse,
            10 => ReadMessagesResponse,
            11 => ListStreams,
            12 => ListStreamsResponse,
            13 => DescribeMessageStream,
            14 => DescribeMessageStreamResponse,
            15 => UpdateMessageStream,
            16 => UpdateMessageStreamResponse,
            17 => UnknownOperationError,
            _ => return None,
        })
    }

    /// The operation a server answers a client request with (`None` for what a client
    /// never sends).
    pub fn response(self) -> Option<Operation> {
        use Operation::*;
        Some(match self {
            Connect => ConnectResponse,
            CreateMessageStream => CreateMessageStreamResponse,
            DeleteMessageStream => DeleteMessageStreamResponse,
            AppendMessage => AppendMessageResponse,
            ReadMessages => ReadMessagesResponse,
            ListStreams => ListStreamsResponse,
            DescribeMessageStream => DescribeMessageStreamResponse,
            UpdateMessageStream => UpdateMessageStreamResponse,
            _ => return None,
        })
    }
}

/// `ResponseStatusCode`. Only these values are ever sent: the Python client's read loop
/// dies on any other (hazard 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Success = 0,
    UnknownFailure = 1,
    Unauthorized = 2,
    InvalidRequest = 3,
    RequestPayloadTooLarge = 4,
    ResourceNotFound = 5,
    ServerTimeout = 6,
    ResponsePayloadTooLarge = 7,
    UnsupportedConnectVersion = 8,
    UnexpectedOperation = 9,
    UnsupportedProtocolVersion = 10,
    InvalidProtocolVersion = 11,
    FailedToConnect = 12,
    NotEnoughMessages = 13,
    MessageStoreReadError = 14,
    OutOfMemoryError = 15,
    UpdateFailed = 16,
    UpdateNotAllowed = 17,
    UnknownOperation = 18,
}

/// The protocol version this server speaks (the SDKs' `__PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: &str = "1.1.0";
/// Versions also accepted from clients.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[&str] = &["1.1.0", "1.0.0"];
