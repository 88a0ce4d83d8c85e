//! Feeds arbitrary bytes to the event-stream decoder in arbitrary chunk sizes, and checks
//! that whatever decodes re-encodes to a frame that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_eventstream::{Decoder, RpcMessage};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = Decoder::new(64 * 1024);
    for piece in rest.chunks(chunk) {
        decoder.extend(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let bytes = frame.to_bytes(64 * 1024).expect("a decoded frame re-encodes");
                    let again = lichen_eventstream::frame::decode_frame(bytes, 64 * 1024)
                        .expect("a re-encoded frame decodes");
                    assert_eq!(again, frame);
                    let _ = RpcMessage::from_frame(frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
