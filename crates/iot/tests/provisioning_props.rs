//! Property tests: template evaluation never panics on arbitrary template bodies or
//! parameters, and a plan it returns always has a valid thing name.

mod common;

use std::collections::BTreeMap;

use common::json_value;
use lichen_iot::provisioning::{self, CertificateInputs};
use lichen_iot::topic::validate_thing_name;
use proptest::prelude::*;
use serde_json::{Value, json};

fn expr() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        "[a-z0-9,-]{0,6}".prop_map(Value::String),
        Just(json!({"Ref": "P"})),
        Just(json!({"Ref": "AWS::IoT::Certificate::Id"})),
        Just(json!({"Ref": "Missing"})),
        any::<u8>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| json!({"Fn::Join": ["-", [a, b]]})),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| json!({"Fn::If": ["C", a, b]})),
            inner.clone().prop_map(|a| json!({"Fn::Split": [",", a]})),
            (any::<u8>(), inner.clone()).prop_map(|(i, a)| json!({"Fn::Select": [i % 3, a]})),
            inner
                .clone()
                .prop_map(|a| json!({"Fn::Sub": ["x${P}y${V}", {"V": a}]})),
            prop::collection::vec(inner, 0..3).prop_map(Value::Array),
        ]
    })
}

fn template() -> impl Strategy<Value = Value> {
    (expr(), expr(), expr(), json_value(), expr()).prop_map(|(name, groups, attr, junk, cond)| {
        json!({
            "Parameters": {"P": {"Type": "String", "Default": "p1"}},
            "Conditions": {"C": {"Fn::Equals": [cond, "p1"]}},
            "Resources": {
                "t": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": name, "ThingGroups": groups, "AttributePayload": {"a": attr}}},
                "c": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}},
                "p": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": junk}}
            },
            "DeviceConfiguration": {"k": attr}
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn evaluation_never_panics(t in template(), junk in json_value(), p in "[a-zA-Z0-9 _-]{0,10}") {
        let cert = CertificateInputs { certificate_id: "id".into(), subject: BTreeMap::new() };
        let params = BTreeMap::from([("P".to_string(), p)]);
        for body in [t.to_string(), junk.to_string()] {
            let _ = provisioning::validate_template(&body);
            if let Ok(plan) = provisioning::evaluate_template(&body, &params, &cert) {
                prop_assert!(validate_thing_name(&plan.thing_name).is_ok());
            }
        }
        let bytes = junk.to_string();
        let _ = provisioning::parse_register_thing_request(bytes.as_bytes());
        let _ = provisioning::parse_create_from_csr_request(bytes.as_bytes());
    }
}
