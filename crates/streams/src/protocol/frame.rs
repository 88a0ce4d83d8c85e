//! Frames: `[i32 big-endian length][u8 operation][payload]`, where `length` counts the
//! operation byte plus the payload. Before the first frame each side sends one raw byte,
//! the connect version ([`CONNECT_VERSION`]).

use thiserror::Error;

/// The raw byte both sides send before the first frame.
pub const CONNECT_VERSION: u8 = 1;

/// Largest frame this server reads (operation byte + payload): 16 MiB. The SDKs allow
/// 1 GiB; a larger append is answered `4` RequestPayloadTooLarge when its `requestId`
/// can be found in the first bytes, and otherwise closes that connection.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The largest length the SDKs ever send (`_MAX_PACKET_SIZE`, 1 GiB): above it a frame
/// cannot be from a real client and the connection is closed without reading on.
pub const SDK_MAX_FRAME_BYTES: usize = 1 << 30;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} is not positive")]
    BadLength(i32),
    #[error("frame of {len} bytes exceeds the SDKs' 1 GiB limit")]
    Impossible { len: usize },
    #[error("incomplete frame")]
    Incomplete,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub operation: u8,
    /// Bytes of CBOR payload that follow the header.
    pub payload_len: usize,
}

impl FrameHeader {
    pub const LEN: usize = 5;

    /// Parses the 5 header bytes. A payload above [`MAX_FRAME_BYTES`] is not an error here
    /// (the caller decides how to refuse it); one no SDK could send is.
    pub fn parse(bytes: [u8; 5]) -> Result<FrameHeader, FrameError> {
        let len = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if len < 1 {
            return Err(FrameError::BadLength(len));
        }
        let len = len as usize;
        if len > SDK_MAX_FRAME_BYTES {
            return Err(FrameError::Impossible { len });
        }
        Ok(FrameHeader {
            operation: bytes[4],
            payload_len: len - 1,
        })
    }

    /// Whether this server reads the payload (see [`MAX_FRAME_BYTES`]).
    pub fn within_bound(&self) -> bool {
        self.payload_len < MAX_FRAME_BYTES
    }
}

/// One frame, header and payload in one buffer, so it goes out in a single write (the
/// Python client reads the header with non-exact reads).
pub fn encode_frame(operation: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FrameHeader::LEN + payload.len());
    // Payloads built by this crate stay far below i32::MAX (see MAX_FRAME_BYTES and the
    // read response bound).
    let len = (payload.len() + 1) as i32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(operation);
    out.extend_from_slice(payload);
    out
}

/// Splits one complete frame off the front of `bytes`: (header, payload, bytes consumed).
/// For tests and fuzzing; the server reads header and payload from its socket.
pub fn split_frame(bytes: &[u8]) -> Result<(FrameHeader, &[u8], usize), FrameError> {
    let head: [u8; 5] = bytes
        .get(..FrameHeader::LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Incomplete)?;
    let header = FrameHeader::parse(head)?;
    let end = FrameHeader::LEN + header.payload_len;
    let payload = bytes
        .get(FrameHeader::LEN..end)
        .ok_or(FrameError::Incomplete)?;
    Ok((header, payload, end))
}
