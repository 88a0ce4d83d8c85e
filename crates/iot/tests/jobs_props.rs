//! Property tests: no request payload panics a Jobs operation, and accepted updates move
//! versions forward by one and never leave a terminal status.

mod common;

use common::json_value;
use lichen_iot::jobs::{self, Execution, ExecutionStatus};
use proptest::prelude::*;
use serde_json::{Value, json};

fn status() -> impl Strategy<Value = ExecutionStatus> {
    prop::sample::select(ExecutionStatus::ALL.to_vec())
}

fn update_request() -> impl Strategy<Value = Value> {
    (
        prop::option::of(status().prop_map(|s| s.as_str().to_string())),
        prop::option::of(0u64..4),
        prop::option::of(json_value()),
        any::<bool>(),
    )
        .prop_map(|(status, expected, details, include)| {
            let mut m = serde_json::Map::new();
            if let Some(s) = status {
                m.insert("status".into(), json!(s));
            }
            if let Some(v) = expected {
                m.insert("expectedVersion".into(), json!(v));
            }
            if let Some(d) = details {
                m.insert("statusDetails".into(), d);
            }
            m.insert("includeJobExecutionState".into(), json!(include));
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn updates_keep_invariants(reqs in prop::collection::vec(update_request(), 1..10)) {
        let doc = json!({"x": 1});
        let mut exec = Execution::queued("j", "t", 1, 0);
        for (i, req) in reqs.iter().enumerate() {
            let bytes = serde_json::to_vec(req).unwrap();
            match jobs::update(Some((&exec, &doc)), "j", &bytes, i as u64) {
                Ok(out) => {
                    prop_assert!(!exec.status.is_terminal());
                    prop_assert_eq!(out.execution.version_number, exec.version_number + 1);
                    prop_assert!(out.execution.status.device_settable());
                    prop_assert!(out.execution.status_details.len() <= jobs::MAX_STATUS_DETAILS);
                    exec = out.execution;
                }
                Err(e) => {
                    let p = e.payload(0);
                    prop_assert!(p["code"].is_string());
                }
            }
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(v in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let doc = json!({});
        let exec = Execution::queued("j", "t", 1, 0);
        let text = serde_json::to_vec(&v).unwrap();
        for input in [&text[..], &bytes[..]] {
            let _ = jobs::update(Some((&exec, &doc)), "j", input, 0);
            let _ = jobs::describe(Some((&exec, &doc)), false, "j", input, 0);
            let _ = jobs::start_next(Some((&exec, &doc)), input, 0);
            let _ = jobs::get_pending(std::slice::from_ref(&exec), input, 0);
        }
    }
}
