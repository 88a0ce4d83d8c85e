//! Rough cost of the shadow operations on a realistic document, for sizing the device
//! endpoint: `cargo run --release -p lichen-iot --example bench_shadow [iterations]`.
//! Prints microseconds per update / get and the stored document's size.

use std::time::Instant;

use lichen_iot::shadow::{self, ShadowLimits};
use lichen_iot::topic::ShadowAddress;
use serde_json::json;

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let limits = ShadowLimits::default();
    let address = ShadowAddress::new("bench-thing", Some("config")).expect("valid names");
    // ~40 leaves over three levels, desired and reported: about 3 KiB of state.
    let section = |v: u64| {
        let mut groups = serde_json::Map::new();
        for g in 0..8 {
            groups.insert(
                format!("group{g}"),
                json!({"a": v, "b": format!("value-{v}"), "c": [1, 2, 3], "d": {"x": g, "y": true}}),
            );
        }
        serde_json::Value::Object(groups)
    };
    let seed = json!({"state": {"desired": section(0), "reported": section(0)}}).to_string();
    let mut stored = shadow::apply_update(None, seed.as_bytes(), 1, &limits)
        .expect("seed update accepted")
        .stored;
    let doc_bytes = serde_json::to_vec(&stored).map(|v| v.len()).unwrap_or(0);

    let requests: Vec<Vec<u8>> = (0..16)
        .map(|i| json!({"state": {"desired": {format!("group{}", i % 8): {"a": i, "d": {"y": i % 2 == 0}}}}, "clientToken": "bench"}).to_string().into_bytes())
        .collect();
    let start = Instant::now();
    for i in 0..iterations {
        let request = &requests[(i % 16) as usize];
        stored = shadow::apply_update(Some(&stored), request, i, &limits)
            .expect("update accepted")
            .stored;
    }
    let update_us = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;

    let start = Instant::now();
    for i in 0..iterations {
        let doc = shadow::get(Some(&stored), b"", &address, i, &limits).expect("get accepted");
        std::hint::black_box(doc);
    }
    let get_us = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    println!(
        "stored document {doc_bytes} B; update {update_us:.1} us/op (accepted + delta + documents built); get {get_us:.1} us/op; {iterations} iterations, final version {}",
        stored.version
    );
}
