#![no_main]
//! The component store's publish upload prefix (magic, length, header JSON): any bytes
//! decode to a header or an error, never a panic, and a decoded header encodes back to a
//! prefix that decodes to itself.

use libfuzzer_sys::fuzz_target;
use lichen_cloud_components::upload::decode_prefix;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, _)) = decode_prefix(data) {
        let again = decode_prefix(&header.encode_prefix()).expect("re-encoded header decodes");
        assert_eq!(again.0, header);
    }
});
