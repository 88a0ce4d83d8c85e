//! Stream Manager frames and CBOR requests: any bytes are refused or parsed, never a panic
//! or an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, payload, _)) = lichen_streams::protocol::frame::split_frame(data) {
        let _ = lichen_streams::protocol::parse_request(header.operation, payload);
        let _ = lichen_streams::protocol::parse_connect(payload);
    }
    let _ = lichen_streams::protocol::parse_request(data.first().copied().unwrap_or(0), data);
    let _ = lichen_streams::protocol::cbor::request_id_in_prefix(data);
});
