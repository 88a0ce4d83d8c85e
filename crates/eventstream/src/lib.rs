//! AWS event-stream framing and the event-stream RPC message layer used by Greengrass IPC.
//!
//! Pure protocol code: bytes in, typed values out. It knows nothing of sockets, tokio or
//! Greengrass operations.
//!
//! Bounds (see [`frame`]): a frame is at most `max_frame_bytes` (default 16 MiB, the
//! aws-c-event-stream limit), its headers at most 128 KiB, a header name at most 127 bytes.
//! An oversized or corrupt prelude is rejected before anything is allocated for the frame.

pub mod decoder;
pub mod error;
pub mod frame;
pub mod rpc;

pub use decoder::Decoder;
pub use error::{DecodeError, EncodeError, RpcError};
pub use frame::{
    DEFAULT_MAX_FRAME_BYTES, Frame, Header, HeaderValue, MAX_HEADER_NAME_LEN, MAX_HEADERS_BYTES,
    MIN_FRAME_LEN,
};
pub use rpc::{MessageType, RpcMessage, encode_json, flags, headers};
