//! The AWS event-stream binary frame: prelude, headers, payload and CRCs.
//!
//! ```text
//! [u32 total_len][u32 headers_len][u32 prelude_crc = CRC32(bytes 0..8)]
//! [headers: headers_len bytes][payload][u32 message_crc = CRC32(bytes 0..total_len-4)]
//! ```
//! All integers are big-endian. CRCs are the IEEE CRC-32 (zlib/gzip).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};

/// Bytes of the prelude: total length, headers length and the prelude CRC.
pub const PRELUDE_LEN: usize = 12;
/// Prelude plus the trailing message CRC: the smallest possible frame.
pub const MIN_FRAME_LEN: usize = PRELUDE_LEN + 4;
/// Default bound on a whole frame, as in aws-c-event-stream.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Bound on the encoded headers of one frame, as in aws-c-event-stream.
pub const MAX_HEADERS_BYTES: usize = 128 * 1024;
/// Longest header name.
pub const MAX_HEADER_NAME_LEN: usize = 127;

/// A header value; the type codes 0–9 of the wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Codes 0 (true) and 1 (false); no value bytes.
    Bool(bool),
    /// Code 2.
    Byte(i8),
    /// Code 3.
    Int16(i16),
    /// Code 4.
    Int32(i32),
    /// Code 5.
    Int64(i64),
    /// Code 6: u16 length + bytes.
    ByteBuf(Bytes),
    /// Code 7: u16 length + UTF-8.
    String(String),
    /// Code 8: milliseconds since the epoch.
    Timestamp(i64),
    /// Code 9: 16 bytes.
    Uuid([u8; 16]),
}

impl HeaderValue {
    fn type_code(&self) -> u8 {
        match self {
            HeaderValue::Bool(true) => 0,
            HeaderValue::Bool(false) => 1,
            HeaderValue::Byte(_) => 2,
            HeaderValue::Int16(_) => 3,
            HeaderValue::Int32(_) => 4,
            HeaderValue::Int64(_) => 5,
            HeaderValue::ByteBuf(_) => 6,
            HeaderValue::String(_) => 7,
            HeaderValue::Timestamp(_) => 8,
            HeaderValue::Uuid(_) => 9,
        }
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            HeaderValue::Bool(_) => 0,
            HeaderValue::Byte(_) => 1,
            HeaderValue::Int16(_) => 2,
            HeaderValue::Int32(_) => 4,
            HeaderValue::Int64(_) | HeaderValue::Timestamp(_) => 8,
            HeaderValue::ByteBuf(b) => 2 + b.len(),
            HeaderValue::String(s) => 2 + s.len(),
            HeaderValue::Uuid(_) => 16,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i32(&self) -> Option<i32> {
        match self {
            HeaderValue::Int32(v) => Some(*v),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: HeaderValue,
}

impl Header {
    pub fn new(name: impl Into<String>, value: HeaderValue) -> Self {
        Header {
            name: name.into(),
            value,
        }
    }

    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header::new(name, HeaderValue::String(value.into()))
    }

    pub fn int32(name: impl Into<String>, value: i32) -> Self {
        Header::new(name, HeaderValue::Int32(value))
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frame {
    pub headers: Vec<Header>,
    pub payload: Bytes,
}

impl Frame {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    fn headers_len(&self) -> usize {
        self.headers
            .iter()
            .map(|h| 1 + h.name.len() + h.value.encoded_len())
            .sum()
    }

    /// Size of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        MIN_FRAME_LEN + self.headers_len() + self.payload.len()
    }

    /// Appends the encoded frame to `out`. Fails, writing nothing, when the frame would break
    /// a bound (`max_frame_bytes`, the headers bound, a header name or value length).
    pub fn encode(&self, out: &mut BytesMut, max_frame_bytes: usize) -> Result<(), EncodeError> {
        for h in &self.headers {
            if h.name.is_empty() || h.name.len() > MAX_HEADER_NAME_LEN {
                return Err(EncodeError::HeaderName(h.name.len()));
            }
            let value_len = match &h.value {
                HeaderValue::ByteBuf(b) => b.len(),
                HeaderValue::String(s) => s.len(),
                _ => 0,
            };
            if value_len > u16::MAX as usize {
                return Err(EncodeError::HeaderValue {
                    name: h.name.clone(),
                    len: value_len,
                });
            }
        }
        let headers_len = self.headers_len();
        if headers_len > MAX_HEADERS_BYTES {
            return Err(EncodeError::HeadersTooLarge(headers_len));
        }
        let start = put_prelude(out, headers_len, self.payload.len(), max_frame_bytes)?;
        for h in &self.headers {
            out.put_u8(h.name.len() as u8);
            out.put_slice(h.name.as_bytes());
            out.put_u8(h.value.type_code());
            match &h.value {
                HeaderValue::Bool(_) => {}
                HeaderValue::Byte(v) => out.put_i8(*v),
                HeaderValue::Int16(v) => out.put_i16(*v),
                HeaderValue::Int32(v) => out.put_i32(*v),
                HeaderValue::Int64(v) | HeaderValue::Timestamp(v) => out.put_i64(*v),
                HeaderValue::ByteBuf(b) => {
                    out.put_u16(b.len() as u16);
                    out.put_slice(b);
                }
                HeaderValue::String(s) => {
                    out.put_u16(s.len() as u16);
                    out.put_slice(s.as_bytes());
                }
                HeaderValue::Uuid(u) => out.put_slice(u),
            }
        }
        out.put_slice(&self.payload);
        let crc = crc32fast::hash(&out[start..]);
        out.put_u32(crc);
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, max_frame_bytes: usize) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out, max_frame_bytes)?;
        Ok(out.freeze())
    }
}

/// What the prelude says about the frame that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prelude {
    pub total_len: usize,
    pub headers_len: usize,
}

/// Validates the first 12 bytes of a frame against the bounds. Nothing is allocated.
pub fn parse_prelude(
    bytes: &[u8; PRELUDE_LEN],
    max_frame_bytes: usize,
) -> Result<Prelude, DecodeError> {
    let total_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let headers_len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let crc = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let actual = crc32fast::hash(&bytes[..8]);
    if crc != actual {
        return Err(DecodeError::PreludeCrc {
            expected: crc,
            actual,
        });
    }
    if total_len < MIN_FRAME_LEN {
        return Err(DecodeError::FrameTooShort(total_len));
    }
    if total_len > max_frame_bytes {
        return Err(DecodeError::FrameTooLarge {
            len: total_len,
            max: max_frame_bytes,
        });
    }
    if headers_len > MAX_HEADERS_BYTES {
        return Err(DecodeError::HeadersTooLarge(headers_len));
    }
    if headers_len > total_len - MIN_FRAME_LEN {
        return Err(DecodeError::HeadersOverrun {
            headers_len,
            total_len,
        });
    }
    Ok(Prelude {
        total_len,
        headers_len,
    })
}

/// Decodes one complete frame from exactly `bytes` (whose length must equal the prelude's
/// total length), checking both CRCs and every header.
pub fn decode_frame(bytes: Bytes, max_frame_bytes: usize) -> Result<Frame, DecodeError> {
    let Some(prelude_bytes) = bytes.first_chunk::<PRELUDE_LEN>() else {
        return Err(DecodeError::FrameTooShort(bytes.len()));
    };
    let prelude = parse_prelude(prelude_bytes, max_frame_bytes)?;
    if bytes.len() != prelude.total_len {
        return Err(DecodeError::LengthMismatch {
            declared: prelude.total_len,
            actual: bytes.len(),
        });
    }
    let body_end = prelude.total_len - 4;
    let declared_crc = u32::from_be_bytes([
        bytes[body_end],
        bytes[body_end + 1],
        bytes[body_end + 2],
        bytes[body_end + 3],
    ]);
    let actual = crc32fast::hash(&bytes[..body_end]);
    if declared_crc != actual {
        return Err(DecodeError::MessageCrc {
            expected: declared_crc,
            actual,
        });
    }
    let headers_end = PRELUDE_LEN + prelude.headers_len;
    let headers = decode_headers(bytes.slice(PRELUDE_LEN..headers_end))?;
    let payload = bytes.slice(headers_end..body_end);
    Ok(Frame { headers, payload })
}

fn take(buf: &mut Bytes, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
    if buf.remaining() < n {
        return Err(DecodeError::TruncatedHeader(what));
    }
    Ok(buf.split_to(n))
}

fn decode_headers(mut buf: Bytes) -> Result<Vec<Header>, DecodeError> {
    let mut headers = Vec::new();
    while buf.has_remaining() {
        let name_len = buf.get_u8() as usize;
        if name_len == 0 || name_len > MAX_HEADER_NAME_LEN {
            return Err(DecodeError::HeaderName(name_len));
        }
        let name_bytes = take(&mut buf, name_len, "name")?;
        let name = std::str::from_utf8(&name_bytes)
            .map_err(|_| DecodeError::Utf8("header name"))?
            .to_string();
        if !buf.has_remaining() {
            return Err(DecodeError::TruncatedHeader("type"));
        }
        let code = buf.get_u8();
        let fixed = |buf: &mut Bytes, n: usize| take(buf, n, "value");
        let value = match code {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(fixed(&mut buf, 1)?.get_i8()),
            3 => HeaderValue::Int16(fixed(&mut buf, 2)?.get_i16()),
            4 => HeaderValue::Int32(fixed(&mut buf, 4)?.get_i32()),
            5 => HeaderValue::Int64(fixed(&mut buf, 8)?.get_i64()),
            6 | 7 => {
                let len = fixed(&mut buf, 2)?.get_u16() as usize;
                let data = take(&mut buf, len, "value")?;
                if code == 6 {
                    HeaderValue::ByteBuf(data)
                } else {
                    let s = std::str::from_utf8(&data)
                        .map_err(|_| DecodeError::Utf8("string header"))?;
                    HeaderValue::String(s.to_string())
                }
            }
            8 => HeaderValue::Timestamp(fixed(&mut buf, 8)?.get_i64()),
            9 => {
                let data = fixed(&mut buf, 16)?;
                let mut u = [0u8; 16];
                u.copy_from_slice(&data);
                HeaderValue::Uuid(u)
            }
            other => return Err(DecodeError::HeaderType(other)),
        };
        headers.push(Header { name, value });
    }
    Ok(headers)
}

/// Checks the frame size, reserves room and writes the prelude (lengths and prelude CRC).
/// Returns where the frame starts in `out`, for the message CRC.
pub(crate) fn put_prelude(
    out: &mut BytesMut,
    headers_len: usize,
    payload_len: usize,
    max_frame_bytes: usize,
) -> Result<usize, EncodeError> {
    let total = MIN_FRAME_LEN + headers_len + payload_len;
    if total > max_frame_bytes || total > u32::MAX as usize {
        return Err(EncodeError::FrameTooLarge {
            len: total,
            max: max_frame_bytes,
        });
    }
    out.reserve(total);
    let start = out.len();
    out.put_u32(total as u32);
    out.put_u32(headers_len as u32);
    let prelude_crc = crc32fast::hash(&out[start..start + 8]);
    out.put_u32(prelude_crc);
    Ok(start)
}
