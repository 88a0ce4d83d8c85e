//! Strategies shared by the property tests.
#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Keys drawn from a small set so that random requests collide with stored fields.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("c".to_string()),
        Just("timestamp".to_string()),
        "[a-z]{1,3}",
    ]
}

/// Arbitrary JSON up to a few levels deep.
pub fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z0-9 ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A shadow-update-like request: mostly well formed, sometimes not.
pub fn update_request() -> impl Strategy<Value = Value> {
    let section = prop_oneof![
        3 => json_value().prop_filter_map("object", |v| v.is_object().then_some(v)),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    (
        prop::option::of(section.clone()),
        prop::option::of(section),
        prop::option::of(prop_oneof![any::<u8>().prop_map(Value::from), json_value()]),
        prop::option::of(prop_oneof![
            "[a-z]{1,8}".prop_map(Value::String),
            json_value()
        ]),
        any::<bool>(),
    )
        .prop_map(|(desired, reported, version, token, null_state)| {
            let mut state = Map::new();
            if let Some(d) = desired {
                state.insert("desired".into(), d);
            }
            if let Some(r) = reported {
                state.insert("reported".into(), r);
            }
            let mut req = Map::new();
            req.insert(
                "state".into(),
                if null_state && state.is_empty() {
                    Value::Null
                } else {
                    Value::Object(state)
                },
            );
            if let Some(v) = version {
                req.insert("version".into(), v);
            }
            if let Some(t) = token {
                req.insert("clientToken".into(), t);
            }
            Value::Object(req)
        })
}
