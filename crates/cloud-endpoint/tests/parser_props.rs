//! The endpoint's own parsers never panic and keep their bounds, whatever they are given.

use lichen_cloud_endpoint::connectivity::{MAX_ENDPOINTS, parse};
use proptest::prelude::*;
use serde_json::{Value, json};

proptest! {
    #[test]
    fn connectivity_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse("t", &bytes);
    }

    #[test]
    fn connectivity_parse_keeps_bounds(entries in prop::collection::vec(("[a-z0-9.]{0,20}", any::<u16>()), 0..40)) {
        let list: Vec<Value> = entries.iter().map(|(h, p)| json!({"HostAddress": h, "PortNumber": p})).collect();
        let body = json!({"ConnectivityInfo": list}).to_string();
        match parse("t", body.as_bytes()) {
            Ok(info) => {
                prop_assert!(info.endpoints.len() <= MAX_ENDPOINTS);
                prop_assert!(info.endpoints.iter().all(|e| e.port != 0 && !e.host_address.is_empty()));
            }
            Err(e) => prop_assert!(e.contains("ConnectivityInfo"), "{}", e),
        }
    }
}
