//! Incremental decoding of a byte stream into frames.

use bytes::BytesMut;

use crate::error::DecodeError;
use crate::frame::{
    DEFAULT_MAX_FRAME_BYTES, Frame, PRELUDE_LEN, Prelude, decode_frame, parse_prelude,
};

/// Splits a byte stream into frames. Feed bytes into [`Decoder::buffer_mut`] (or with
/// [`Decoder::extend`]) and call [`Decoder::next_frame`] until it returns `Ok(None)`.
///
/// Bounds: the prelude is validated (CRC, `max_frame_bytes`, headers bound) as soon as its
/// 12 bytes are in, before any room is reserved for the rest of the frame, so a hostile
/// length never causes an allocation. After an error the stream is unusable: the caller
/// must drop the connection.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_frame_bytes: usize,
    pending: Option<Prelude>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Decoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        Decoder {
            buf: BytesMut::with_capacity(8 * 1024),
            max_frame_bytes,
            pending: None,
        }
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The internal buffer, for reading from a socket directly into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let prelude = match self.pending {
            Some(p) => p,
            None => {
                let Some(head) = self.buf.first_chunk::<PRELUDE_LEN>() else {
                    return Ok(None);
                };
                let p = parse_prelude(head, self.max_frame_bytes)?;
                self.pending = Some(p);
                p
            }
        };
        if self.buf.len() < prelude.total_len {
            // The prelude is valid, so reserving up to the bounded frame size is safe.
            self.buf.reserve(prelude.total_len - self.buf.len());
            return Ok(None);
        }
        self.pending = None;
        let bytes = self.buf.split_to(prelude.total_len).freeze();
        decode_frame(bytes, self.max_frame_bytes).map(Some)
    }
}
