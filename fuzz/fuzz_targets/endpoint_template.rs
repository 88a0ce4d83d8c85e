//! Evaluates arbitrary JSON as a provisioning template with arbitrary parameters: nothing may
//! panic, and an accepted plan names a valid thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lichen_cloud_endpoint::template::evaluate;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let (Ok(body), Ok(serde_json::Value::Object(params))) = (
        serde_json::from_slice::<serde_json::Value>(&data[..split]),
        serde_json::from_slice::<serde_json::Value>(&data[split + 1..]),
    ) else {
        return;
    };
    if let Ok(plan) = evaluate(&body, &params) {
        assert!(lichen_iot::topic::validate_thing_name(&plan.thing_name).is_ok());
    }
});
