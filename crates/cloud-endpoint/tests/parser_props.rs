//! The endpoint's own parsers never panic and keep their bounds, whatever they are given.

use lichen_cloud_endpoint::connectivity::{MAX_ENDPOINTS, parse};
use lichen_cloud_endpoint::template::evaluate;
use proptest::prelude::*;
use serde_json::{Value, json};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9:_ -]{0,12}".prop_map(Value::String),
        Just(json!("AWS::IoT::Thing")),
        Just(json!({"Ref": "P"})),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-zA-Z]{1,8}".prop_map(|s| s),
                    Just("Resources".to_string()),
                    Just("Type".to_string()),
                    Just("Properties".to_string()),
                    Just("ThingName".to_string()),
                    Just("Fn::Join".to_string()),
                    Just("Parameters".to_string()),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

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

    #[test]
    fn template_evaluation_never_panics(body in json_value(), params in json_value()) {
        let map = match params { Value::Object(m) => m, _ => Default::default() };
        if let Ok(plan) = evaluate(&body, &map) {
            prop_assert!(lichen_iot::topic::validate_thing_name(&plan.thing_name).is_ok());
        }
    }
}
