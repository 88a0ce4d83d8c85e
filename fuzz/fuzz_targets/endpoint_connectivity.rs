//! Feeds arbitrary bytes to the connectivity-update parser: nothing may panic, and what parses
//! stays within the documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_cloud_endpoint::connectivity::{MAX_ENDPOINTS, MAX_HOST_BYTES, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = parse("thing", data) {
        assert!(info.endpoints.len() <= MAX_ENDPOINTS);
        assert!(info.endpoints.iter().all(|e| e.port != 0 && e.host_address.len() <= MAX_HOST_BYTES));
    }
});
