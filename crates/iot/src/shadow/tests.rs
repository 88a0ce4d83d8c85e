use serde_json::{Value, json};

use super::*;

const T0: u64 = 1_700_000_000;

fn limits() -> ShadowLimits {
    ShadowLimits::default()
}

fn addr() -> ShadowAddress {
    ShadowAddress::new("thing-1", None).unwrap()
}

fn update(
    stored: Option<&StoredShadow>,
    req: Value,
    now: u64,
) -> Result<UpdateOutcome, ShadowError> {
    apply_update(stored, req.to_string().as_bytes(), now, &limits())
}

#[test]
fn first_update_creates_version_1_with_metadata_and_echo() {
    let out = update(
        None,
        json!({"state": {"desired": {"color": "red", "pos": {"x": 1}}}, "clientToken": "tok"}),
        T0,
    )
    .unwrap();
    assert_eq!(out.stored.version, 1);
    assert_eq!(
        out.accepted,
        json!({
            "state": {"desired": {"color": "red", "pos": {"x": 1}}},
            "metadata": {"desired": {"color": {"timestamp": T0}, "pos": {"x": {"timestamp": T0}}}},
            "version": 1, "timestamp": T0, "clientToken": "tok"
        })
    );
    // Field order matters to nobody's parser but we keep AWS's.
    let keys: Vec<_> = out.accepted.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["state", "metadata", "version", "timestamp", "clientToken"]
    );
    // A new shadow has no previous document.
    assert!(out.documents.get("previous").is_none());
    assert_eq!(out.documents["current"]["version"], 1);
    // Desired with no reported: the whole desired is the delta.
    let delta = out.delta.unwrap();
    assert_eq!(delta["state"], json!({"color": "red", "pos": {"x": 1}}));
    assert_eq!(delta["metadata"]["pos"]["x"]["timestamp"], T0);
    assert_eq!(delta["clientToken"], "tok");
}

#[test]
fn merge_null_removes_arrays_replace_objects_merge() {
    let s1 = update(
        None,
        json!({"state": {"reported": {"a": 1, "b": {"c": 2, "d": 3}, "list": [1, 2, 3]}}}),
        T0,
    )
    .unwrap()
    .stored;
    let s2 = update(
        Some(&s1),
        json!({"state": {"reported": {"a": null, "b": {"c": 5}, "list": [9]}}}),
        T0 + 10,
    )
    .unwrap();
    let st = s2.stored;
    assert_eq!(
        Value::Object(st.state.reported.clone().unwrap()),
        json!({"b": {"c": 5, "d": 3}, "list": [9]})
    );
    let meta = Value::Object(st.metadata.reported.clone().unwrap());
    assert_eq!(meta["b"]["c"]["timestamp"], T0 + 10);
    assert_eq!(meta["b"]["d"]["timestamp"], T0);
    assert_eq!(meta["list"], json!([{"timestamp": T0 + 10}]));
    assert!(
        meta.get("a").is_none(),
        "a removed field loses its metadata"
    );
    assert_eq!(st.version, 2);
    // The accepted metadata names the removed leaf too.
    assert_eq!(
        s2.accepted["metadata"]["reported"]["a"]["timestamp"],
        T0 + 10
    );
    assert_eq!(s2.documents["previous"]["version"], 1);
    assert_eq!(s2.documents["current"]["version"], 2);
    // Only reported: no delta.
    assert!(s2.delta.is_none());
}

#[test]
fn section_null_removes_section_and_empty_objects_vanish() {
    let s1 = update(
        None,
        json!({"state": {"desired": {"a": {"b": 1}}, "reported": {"x": 1}}}),
        T0,
    )
    .unwrap()
    .stored;
    let s2 = update(
        Some(&s1),
        json!({"state": {"desired": {"a": {"b": null}}}}),
        T0,
    )
    .unwrap()
    .stored;
    assert_eq!(
        s2.state.desired, None,
        "an object left empty disappears, then the section"
    );
    assert_eq!(s2.metadata.desired, None);
    let s3 = update(Some(&s2), json!({"state": {"reported": null}}), T0)
        .unwrap()
        .stored;
    assert_eq!(s3.state, Sections::default());
    let s4 = update(Some(&s1), json!({"state": null}), T0).unwrap();
    assert_eq!(s4.stored.state, Sections::default());
    assert_eq!(s4.accepted["state"], Value::Null);
    // A new object made only of nulls is not created.
    let s5 = update(
        Some(&s1),
        json!({"state": {"reported": {"n": {"m": null}}}}),
        T0,
    )
    .unwrap()
    .stored;
    assert!(!s5.state.reported.unwrap().contains_key("n"));
}

#[test]
fn type_change_replaces() {
    let s1 = update(None, json!({"state": {"reported": {"a": {"b": 1}}}}), T0)
        .unwrap()
        .stored;
    let s2 = update(Some(&s1), json!({"state": {"reported": {"a": 7}}}), T0 + 1)
        .unwrap()
        .stored;
    assert_eq!(s2.state.reported.as_ref().unwrap()["a"], 7);
    assert_eq!(
        s2.metadata.reported.as_ref().unwrap()["a"],
        json!({"timestamp": T0 + 1})
    );
    let s3 = update(
        Some(&s2),
        json!({"state": {"reported": {"a": {"c": 2}}}}),
        T0 + 2,
    )
    .unwrap()
    .stored;
    assert_eq!(s3.state.reported.unwrap()["a"], json!({"c": 2}));
}

#[test]
fn version_rules() {
    let e = update(
        None,
        json!({"state": {"reported": {"a": 1}}, "version": 3}),
        T0,
    )
    .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::BadRequest, "Invalid version")
    );
    let s1 = update(
        None,
        json!({"state": {"reported": {"a": 1}}, "version": 1}),
        T0,
    )
    .unwrap()
    .stored;
    assert_eq!(s1.version, 1);
    let e = update(
        Some(&s1),
        json!({"state": {"reported": {"a": 2}}, "version": 5, "clientToken": "c"}),
        T0,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(
        e.payload(T0),
        json!({"code": 409, "message": "Version conflict", "timestamp": T0, "clientToken": "c"})
    );
    let s2 = update(
        Some(&s1),
        json!({"state": {"reported": {"a": 2}}, "version": 1}),
        T0,
    )
    .unwrap()
    .stored;
    assert_eq!(s2.version, 2);
    for bad in [json!(-1), json!(1.5), json!("1"), Value::Null] {
        let e = update(Some(&s2), json!({"state": {}, "version": bad}), T0).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::BadRequest, "Invalid version")
        );
    }
}

#[test]
fn request_shape_errors() {
    let cases: Vec<(&[u8], ErrorCode, &str)> = vec![
        (b"{not json", ErrorCode::BadRequest, "Invalid JSON"),
        (b"[1]", ErrorCode::BadRequest, "Invalid JSON"),
        (b"{}", ErrorCode::BadRequest, "Missing required node: state"),
        (
            br#"{"state": 3}"#,
            ErrorCode::BadRequest,
            "State node must be an object",
        ),
        (
            br#"{"state": {"desired": []}}"#,
            ErrorCode::BadRequest,
            "Desired node must be an object",
        ),
        (
            br#"{"state": {"reported": "x"}}"#,
            ErrorCode::BadRequest,
            "Reported node must be an object",
        ),
        (
            br#"{"state": {"other": {}}}"#,
            ErrorCode::BadRequest,
            "State contains an invalid node: 'other'",
        ),
        (
            br#"{"state": {}, "clientToken": 5}"#,
            ErrorCode::BadRequest,
            "Invalid clientToken",
        ),
    ];
    for (req, code, message) in cases {
        let e = apply_update(None, req, T0, &limits()).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (code, message),
            "{}",
            String::from_utf8_lossy(req)
        );
    }
    let long = "x".repeat(65);
    let e = update(None, json!({"state": {}, "clientToken": long}), T0).unwrap_err();
    assert_eq!(e.message, "Invalid clientToken");
    assert!(e.client_token.is_none());
    let ok64 = "x".repeat(64);
    assert!(
        update(
            None,
            json!({"state": {"reported": {"a": 1}}, "clientToken": ok64}),
            T0
        )
        .is_ok()
    );
}

#[test]
fn client_delta_is_dropped_from_state_and_echo() {
    let out = update(
        None,
        json!({"state": {"reported": {"a": 1}, "delta": {"z": 1}}}),
        T0,
    )
    .unwrap();
    assert_eq!(out.accepted["state"], json!({"reported": {"a": 1}}));
    assert!(out.stored.state.desired.is_none());
}

fn nested(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({ "k": v });
    }
    v
}

#[test]
fn depth_limit_is_six() {
    assert!(update(None, json!({"state": {"desired": nested(6)}}), T0).is_ok());
    let e = update(
        None,
        json!({"state": {"desired": nested(7)}, "clientToken": "d"}),
        T0,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(
        e.message,
        "JSON contains too many levels of nesting; maximum is 6"
    );
    assert_eq!(e.client_token.as_deref(), Some("d"));
}

#[test]
fn size_limits() {
    let small = ShadowLimits {
        max_document_bytes: 64,
        ..ShadowLimits::default()
    };
    let big = json!({"state": {"reported": {"a": "x".repeat(60)}}}).to_string();
    let e = apply_update(None, big.as_bytes(), T0, &small).unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    assert_eq!(e.message, "The payload exceeds the maximum size allowed");
    // The limit counts the resulting document: a removal shrinks it back under.
    let s1 = apply_update(
        None,
        br#"{"state":{"reported":{"a":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}"#,
        T0,
        &small,
    )
    .unwrap()
    .stored;
    let e = apply_update(
        Some(&s1),
        br#"{"state":{"desired":{"b":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}}}"#,
        T0,
        &small,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
    let ok = apply_update(
        Some(&s1),
        br#"{"state":{"reported":null,"desired":{"b":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"}}}"#,
        T0,
        &small,
    );
    assert!(ok.is_ok());
    let tiny_request = ShadowLimits {
        max_request_bytes: 10,
        ..ShadowLimits::default()
    };
    let e = apply_update(None, br#"{"state":{"reported":{}}}"#, T0, &tiny_request).unwrap_err();
    assert_eq!(e.code, ErrorCode::PayloadTooLarge);
}

#[test]
fn delta_compares_numbers_by_value_and_is_restricted_to_touched_paths() {
    let s1 = update(None, json!({"state": {"reported": {"t": 1, "u": 2}}}), T0)
        .unwrap()
        .stored;
    let out = update(Some(&s1), json!({"state": {"desired": {"t": 1.0}}}), T0).unwrap();
    assert!(out.delta.is_none(), "1.0 == 1");
    let s2 = update(
        Some(&out.stored),
        json!({"state": {"desired": {"u": 3, "v": 4}}}),
        T0,
    )
    .unwrap();
    assert_eq!(s2.delta.unwrap()["state"], json!({"u": 3, "v": 4}));
    // Touching only v reports only v, though u still differs.
    let s3 = update(
        Some(&s2.stored),
        json!({"state": {"desired": {"v": 5}}}),
        T0 + 3,
    )
    .unwrap();
    let d = s3.delta.unwrap();
    assert_eq!(d["state"], json!({"v": 5}));
    assert_eq!(d["metadata"], json!({"v": {"timestamp": T0 + 3}}));
    assert_eq!(d["version"], 4);
    // A report that disagrees with desired produces a delta for that key.
    let s4 = update(
        Some(&s3.stored),
        json!({"state": {"reported": {"v": 6}}}),
        T0,
    )
    .unwrap();
    assert_eq!(s4.delta.unwrap()["state"], json!({"v": 5}));
    // Nested: only the differing inner field.
    let n1 = update(
        None,
        json!({"state": {"reported": {"o": {"a": 1, "b": 2}}}}),
        T0,
    )
    .unwrap()
    .stored;
    let n2 = update(
        Some(&n1),
        json!({"state": {"desired": {"o": {"a": 1, "b": 3}}}}),
        T0,
    )
    .unwrap();
    assert_eq!(n2.delta.unwrap()["state"], json!({"o": {"b": 3}}));
    // get shows the whole delta.
    let doc = get(Some(&s4.stored), b"", &addr(), T0, &limits()).unwrap();
    assert_eq!(doc["state"]["delta"], json!({"u": 3, "v": 5}));
}

#[test]
fn get_document_and_not_found() {
    let s1 = update(
        None,
        json!({"state": {"desired": {"a": 1}, "reported": {"a": 1}}}),
        T0,
    )
    .unwrap()
    .stored;
    let doc = get(
        Some(&s1),
        br#"{"clientToken":"g"}"#,
        &addr(),
        T0 + 5,
        &limits(),
    )
    .unwrap();
    assert_eq!(
        doc,
        json!({
            "state": {"desired": {"a": 1}, "reported": {"a": 1}},
            "metadata": {"desired": {"a": {"timestamp": T0}}, "reported": {"a": {"timestamp": T0}}},
            "version": 1, "timestamp": T0 + 5, "clientToken": "g"
        })
    );
    let e = get(None, br#"{"clientToken":"g"}"#, &addr(), T0, &limits()).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(e.message, "No shadow exists with name: 'thing-1'");
    assert_eq!(e.payload(T0)["clientToken"], "g");
    let named = ShadowAddress::new("thing-1", Some("cfg")).unwrap();
    assert_eq!(
        get(None, b"", &named, T0, &limits()).unwrap_err().message,
        "No shadow exists with name: 'cfg'"
    );
    assert_eq!(
        get(None, b"nope", &addr(), T0, &limits())
            .unwrap_err()
            .message,
        "Invalid JSON"
    );
}

#[test]
fn delete_keeps_version_for_aws_and_restarts_for_greengrass() {
    let s1 = update(None, json!({"state": {"reported": {"a": 1}}}), T0)
        .unwrap()
        .stored;
    let s2 = update(Some(&s1), json!({"state": {"reported": {"a": 2}}}), T0)
        .unwrap()
        .stored;
    let e = delete(Some(&s2), br#"{"version": 1}"#, &addr(), T0, &limits()).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    let out = delete(
        Some(&s2),
        br#"{"clientToken":"del"}"#,
        &addr(),
        T0 + 1,
        &limits(),
    )
    .unwrap();
    assert_eq!(
        out.accepted,
        json!({"version": 2, "timestamp": T0 + 1, "clientToken": "del"})
    );
    let tomb = out.tombstone;
    assert!(tomb.deleted);
    assert_eq!(
        get(Some(&tomb), b"", &addr(), T0, &limits())
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    assert_eq!(
        delete(Some(&tomb), b"", &addr(), T0, &limits())
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    // AWS IoT: the next shadow continues the version, and starts empty.
    let again = update(Some(&tomb), json!({"state": {"desired": {"b": 1}}}), T0).unwrap();
    assert_eq!(again.stored.version, 3);
    assert!(again.stored.state.reported.is_none());
    assert!(again.documents.get("previous").is_none());
    // A version check against the tombstone: the deleted version.
    assert_eq!(
        update(Some(&tomb), json!({"state": {}, "version": 1}), T0)
            .unwrap_err()
            .code,
        ErrorCode::Conflict
    );
    assert!(update(Some(&tomb), json!({"state": {}, "version": 2}), T0).is_ok());
    // Greengrass local shadows restart at 1.
    let restart = ShadowLimits {
        version_after_delete: VersionAfterDelete::Restart,
        ..ShadowLimits::default()
    };
    let fresh = apply_update(
        Some(&tomb),
        br#"{"state":{"reported":{"a":1}}}"#,
        T0,
        &restart,
    )
    .unwrap();
    assert_eq!(fresh.stored.version, 1);
}

#[test]
fn stored_shadow_serializes_in_aws_document_shape() {
    let s1 = update(None, json!({"state": {"reported": {"a": 1}}}), T0)
        .unwrap()
        .stored;
    let v = serde_json::to_value(&s1).unwrap();
    assert_eq!(
        v,
        json!({"state": {"reported": {"a": 1}}, "metadata": {"reported": {"a": {"timestamp": T0}}}, "version": 1, "timestamp": T0})
    );
    let back: StoredShadow = serde_json::from_value(v).unwrap();
    assert_eq!(back, s1);
}
