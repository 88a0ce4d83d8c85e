//! Fuzzes the MQTT packet decoder: arbitrary bytes must decode or fail cleanly under both
//! protocol versions, and whatever decodes must re-encode and decode to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_mqtt::{Protocol, decode, to_vec};

fuzz_target!(|data: &[u8]| {
    for proto in [Protocol::V311, Protocol::V5] {
        let mut rest = data;
        while let Ok(Some((packet, used))) = decode(rest, proto, 1 << 20) {
            // CONNECT carries its own protocol version.
            let proto_out = match &packet {
                lichen_mqtt::Packet::Connect(c) => c.protocol,
                _ => proto,
            };
            if let Ok(bytes) = to_vec(&packet, proto_out) {
                let again = decode(&bytes, proto_out, 1 << 20);
                assert_eq!(again, Ok(Some((packet, bytes.len()))));
            }
            rest = &rest[used..];
        }
    }
});
