//! Property tests: no input panics; every accepted update keeps the stored shadow within its
//! invariants (version +1, bounded size and depth, no nulls or empty objects stored,
//! metadata mirroring state, delta only of real differences).

mod common;

use common::{json_value, update_request};
use lichen_iot::shadow::{self, ShadowLimits, StoredShadow};
use lichen_iot::topic::ShadowAddress;
use proptest::prelude::*;
use serde_json::{Map, Value};

fn no_nulls_or_empty(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(m) => !m.is_empty() && m.values().all(no_nulls_or_empty),
        // Arrays replace wholesale and keep what the client sent.
        Value::Array(_) => true,
        _ => true,
    }
}

/// Every state leaf (non-object) has metadata at the same path, and vice versa for keys.
fn mirrors(state: &Map<String, Value>, meta: &Map<String, Value>) -> bool {
    state.len() == meta.len()
        && state.iter().all(|(k, v)| match (v, meta.get(k)) {
            (Value::Object(s), Some(Value::Object(m))) => mirrors(s, m),
            (Value::Object(_), _) => false,
            (_, Some(m)) => m.is_object() || m.is_array(),
            (_, None) => false,
        })
}

fn check_invariants(s: &StoredShadow, limits: &ShadowLimits) {
    for (state, meta) in [
        (&s.state.desired, &s.metadata.desired),
        (&s.state.reported, &s.metadata.reported),
    ] {
        assert_eq!(state.is_some(), meta.is_some());
        if let (Some(st), Some(me)) = (state, meta) {
            assert!(no_nulls_or_empty(&Value::Object(st.clone())), "{st:?}");
            assert!(mirrors(st, me), "state {st:?} metadata {me:?}");
        }
    }
    let size: usize = [&s.state.desired, &s.state.reported]
        .iter()
        .filter_map(|x| x.as_ref())
        .map(|m| serde_json::to_vec(m).unwrap().len())
        .sum();
    assert!(size <= limits.max_document_bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn updates_never_panic_and_keep_invariants(reqs in prop::collection::vec(update_request(), 1..8)) {
        let limits = ShadowLimits { max_document_bytes: 512, ..ShadowLimits::default() };
        let mut stored: Option<StoredShadow> = None;
        for (i, req) in reqs.iter().enumerate() {
            let bytes = serde_json::to_vec(req).unwrap();
            match shadow::apply_update(stored.as_ref(), &bytes, 1000 + i as u64, &limits) {
                Ok(out) => {
                    let before = stored.as_ref().map_or(0, |s| s.version);
                    prop_assert_eq!(out.stored.version, before + 1);
                    check_invariants(&out.stored, &limits);
                    prop_assert_eq!(&out.accepted["version"], &Value::from(out.stored.version));
                    if let Some(delta) = &out.delta {
                        // Every delta key is in desired and differs from reported.
                        let full = out.stored.delta().expect("a published delta implies a delta");
                        for k in delta["state"].as_object().unwrap().keys() {
                            prop_assert!(full.contains_key(k));
                        }
                    }
                    // The stored shape round-trips through serde (it is what callers persist).
                    let text = serde_json::to_string(&out.stored).unwrap();
                    let back: StoredShadow = serde_json::from_str(&text).unwrap();
                    prop_assert_eq!(&back, &out.stored);
                    stored = Some(out.stored);
                }
                Err(e) => {
                    let payload = e.payload(0);
                    prop_assert!([400, 409, 413].contains(&payload["code"].as_u64().unwrap()));
                }
            }
        }
        let addr = ShadowAddress::new("t", None).unwrap();
        if let Some(s) = &stored {
            let doc = shadow::get(Some(s), b"", &addr, 1, &limits).unwrap();
            prop_assert_eq!(&doc["version"], &Value::from(s.version));
            let del = shadow::delete(Some(s), b"", &addr, 1, &limits).unwrap();
            prop_assert!(del.tombstone.deleted);
        }
    }

    #[test]
    fn arbitrary_json_and_bytes_never_panic(v in json_value(), bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let limits = ShadowLimits::default();
        let addr = ShadowAddress::new("t", Some("s")).unwrap();
        let text = serde_json::to_vec(&v).unwrap();
        for input in [&text[..], &bytes[..]] {
            let _ = shadow::apply_update(None, input, 0, &limits);
            let _ = shadow::get(None, input, &addr, 0, &limits);
            let _ = shadow::delete(None, input, &addr, 0, &limits);
        }
        // A stored shadow built from anything a caller could deserialize must not panic either.
        if let Ok(stored) = serde_json::from_value::<StoredShadow>(v.clone()) {
            let _ = shadow::apply_update(Some(&stored), br#"{"state":{"desired":{"a":1}}}"#, 0, &limits);
            let _ = shadow::get(Some(&stored), b"", &addr, 0, &limits);
        }
    }
}
