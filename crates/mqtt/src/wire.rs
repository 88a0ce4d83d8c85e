//! Primitive data representations (MQTT 5 §1.5): integers, variable byte integers, UTF-8
//! strings, binary data and string pairs.

use bytes::Bytes;

use crate::{DecodeError, EncodeError};

/// Largest value a variable byte integer can carry (4 bytes).
pub const MAX_VAR_INT: u32 = 268_435_455;

/// Decodes a variable byte integer at the start of `buf`. `Ok(None)` means more bytes are
/// needed. Non-minimal encodings and encodings longer than 4 bytes are malformed.
pub fn read_var_int(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            // A trailing zero continuation byte means the encoding was not minimal.
            if i > 0 && b == 0 {
                return Err(DecodeError::MalformedVarInt);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::MalformedVarInt)
}

/// Number of bytes `v` takes as a variable byte integer.
pub fn var_int_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub fn write_var_int(out: &mut Vec<u8>, v: u32) -> Result<(), EncodeError> {
    if v > MAX_VAR_INT {
        return Err(EncodeError::VarIntTooLarge(u64::from(v)));
    }
    let mut v = v;
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            return Ok(());
        }
    }
}

/// Checks a decoded UTF-8 string field against the MQTT rules: valid UTF-8 (no surrogates, which
/// Rust's validation already refuses) and no U+0000.
pub fn check_utf8(bytes: &[u8]) -> Result<&str, DecodeError> {
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if s.as_bytes().contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

/// Cursor over one packet's body. Every read is bounds-checked against the body, so a lying
/// length field yields [`DecodeError::Truncated`], never a panic or a large allocation.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    packet: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], packet: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            packet,
        }
    }

    pub fn packet(&self) -> &'static str {
        self.packet
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(self.packet));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn var_int(&mut self) -> Result<u32, DecodeError> {
        match read_var_int(&self.buf[self.pos..])? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(DecodeError::Truncated(self.packet)),
        }
    }

    pub fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    pub fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        Ok(Bytes::copy_from_slice(self.binary()?))
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        check_utf8(self.binary()?)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        Ok(self.str()?.to_owned())
    }

    /// Everything left in the body.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.packet))
        }
    }
}

pub fn write_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn write_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn write_binary(out: &mut Vec<u8>, field: &'static str, b: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: b.len(),
    })?;
    write_u16(out, len);
    out.extend_from_slice(b);
    Ok(())
}

pub fn write_str(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), EncodeError> {
    write_binary(out, field, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_boundaries() {
        for (v, enc) in [
            (0u32, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xFF, 0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
            (MAX_VAR_INT, vec![0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            write_var_int(&mut out, v).unwrap();
            assert_eq!(out, enc, "{v}");
            assert_eq!(var_int_len(v), enc.len());
            assert_eq!(read_var_int(&enc).unwrap(), Some((v, enc.len())));
        }
        assert!(write_var_int(&mut Vec::new(), MAX_VAR_INT + 1).is_err());
    }

    #[test]
    fn var_int_malformed_and_partial() {
        assert_eq!(read_var_int(&[0x80]).unwrap(), None);
        assert_eq!(
            read_var_int(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedVarInt)
        );
        assert_eq!(
            read_var_int(&[0x80, 0x00]),
            Err(DecodeError::MalformedVarInt)
        );
    }

    #[test]
    fn utf8_rules() {
        assert!(check_utf8(b"a/b").is_ok());
        assert_eq!(check_utf8(b"a\0b"), Err(DecodeError::NullCharacter));
        // An encoded surrogate (U+D800) is not UTF-8.
        assert_eq!(
            check_utf8(&[0xED, 0xA0, 0x80]),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(check_utf8(&[0xC0, 0x80]), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn reader_never_overreads() {
        let mut r = Reader::new(&[0x00, 0x05, b'a'], "test");
        assert_eq!(r.str(), Err(DecodeError::Truncated("test")));
    }
}
