//! Two ways in, chosen by the first byte:
//! - even: arbitrary bytes fed to the stream decoder in chunks of arbitrary size;
//! - odd: arbitrary header and payload bytes wrapped in a prelude with valid lengths and CRCs,
//!   so that the fuzzer explores header parsing rather than CRC checks.
//!
//! Whatever decodes must re-encode to a frame that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_eventstream::frame::decode_frame;
use lichen_eventstream::{Decoder, Frame, RpcMessage};

const MAX: usize = 64 * 1024;

fn roundtrip(frame: Frame) {
    let bytes = frame.to_bytes(MAX).expect("a decoded frame re-encodes");
    let again = decode_frame(bytes, MAX).expect("a re-encoded frame decodes");
    assert_eq!(again, frame);
    let _ = RpcMessage::from_frame(frame);
}

fn with_valid_crcs(data: &[u8]) -> Vec<u8> {
    let (headers_len, body) = match data.split_first() {
        Some((&h, rest)) => ((h as usize).min(rest.len()), rest),
        None => (0, data),
    };
    let total = 16 + body.len();
    let mut v = Vec::with_capacity(total);
    v.extend_from_slice(&(total as u32).to_be_bytes());
    v.extend_from_slice(&(headers_len as u32).to_be_bytes());
    let pc = crc32(&v);
    v.extend_from_slice(&pc.to_be_bytes());
    v.extend_from_slice(body);
    let mc = crc32(&v);
    v.extend_from_slice(&mc.to_be_bytes());
    v
}

fn crc32(b: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        if let Ok(frame) = decode_frame(with_valid_crcs(rest).into(), MAX) {
            roundtrip(frame);
        }
        return;
    }
    let chunk = usize::from(mode >> 1).max(1);
    let mut decoder = Decoder::new(MAX);
    for piece in rest.chunks(chunk) {
        decoder.extend(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => roundtrip(frame),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
