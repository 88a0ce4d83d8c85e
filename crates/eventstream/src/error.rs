//! Why a frame could not be decoded or encoded. Each variant names the offending field.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("prelude CRC mismatch (frame says {expected:#010x}, computed {actual:#010x})")]
    PreludeCrc { expected: u32, actual: u32 },
    #[error("message CRC mismatch (frame says {expected:#010x}, computed {actual:#010x})")]
    MessageCrc { expected: u32, actual: u32 },
    #[error("frame length {0} is below the 16-byte minimum")]
    FrameTooShort(usize),
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("headers length {0} exceeds the 128 KiB limit")]
    HeadersTooLarge(usize),
    #[error("headers length {headers_len} does not fit in a frame of {total_len} bytes")]
    HeadersOverrun {
        headers_len: usize,
        total_len: usize,
    },
    #[error("frame declares {declared} bytes but {actual} were given")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("header name length {0} is not within 1..=127")]
    HeaderName(usize),
    #[error("header truncated in its {0}")]
    TruncatedHeader(&'static str),
    #[error("unknown header value type {0}")]
    HeaderType(u8),
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("headers of {0} bytes exceed the 128 KiB limit")]
    HeadersTooLarge(usize),
    #[error("header name length {0} is not within 1..=127")]
    HeaderName(usize),
    #[error("value of header {name} is {len} bytes, the limit is 65535")]
    HeaderValue { name: String, len: usize },
}

/// Why a frame is not a valid RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("missing or mistyped header {0}")]
    MissingHeader(&'static str),
    #[error("unknown :message-type {0}")]
    MessageType(i32),
}
