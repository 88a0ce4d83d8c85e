//! The manager's document semantics as the Greengrass shadow manager gives them (reference
//! §3.1–3.4): versions across a delete, the rejected codes and messages, the configured size
//! limit, the depth limit, throttling, list paging and the pending mark of synced shadows.

use std::collections::BTreeSet;

use lichen_iot::topic::{ShadowAddress, ShadowOp};
use serde_json::{Value, json};

use super::*;
use crate::config::ShadowManagerConfig;
use crate::store::ShadowStore;

fn manager(dir: &std::path::Path, config: Value) -> ShadowManager {
    let config = ShadowManagerConfig::parse(&config).unwrap();
    ShadowManager::new(ShadowStore::open(dir).unwrap(), &config)
}

fn classic() -> ShadowAddress {
    ShadowAddress::new("core-1", None).unwrap()
}

fn run(m: &ShadowManager, op: ShadowOp, a: &ShadowAddress, body: Value) -> Executed {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    m.execute(op, a, &bytes, Origin::Local)
}

/// The (code, message) of a rejected operation, checked against its `rejected` message.
fn rejected(e: &Executed) -> (u16, String) {
    let Err(Failure::Rejected(err)) = &e.result else {
        panic!("not rejected: {:?}", e.result);
    };
    let first = &e.publications[0];
    assert!(first.topic.ends_with("/rejected"), "{}", first.topic);
    let body: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(body["code"], err.code.as_u16());
    assert_eq!(body["message"], err.message.as_str());
    (err.code.as_u16(), err.message.clone())
}

#[test]
fn a_shadow_recreated_after_delete_starts_again_at_version_1() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), json!({}));
    let a = classic();
    for i in 0..3 {
        let e = run(
            &m,
            ShadowOp::Update,
            &a,
            json!({"state": {"reported": {"i": i}}}),
        );
        assert_eq!(e.result.unwrap()["version"], i + 1);
    }
    let deleted = run(&m, ShadowOp::Delete, &a, Value::Null).result.unwrap();
    assert_eq!(deleted["version"], 3, "delete answers the deleted version");
    // Greengrass's rule (not AWS IoT's, whose version continues): a fresh document, v1,
    // without the old fields, and no `previous` in update/documents.
    let e = run(
        &m,
        ShadowOp::Update,
        &a,
        json!({"state": {"desired": {"x": 1}}}),
    );
    let accepted = e.result.unwrap();
    assert_eq!(accepted["version"], 1);
    let docs = e
        .publications
        .iter()
        .find(|p| p.topic.ends_with("/update/documents"))
        .unwrap();
    let docs: Value = serde_json::from_slice(&docs.payload).unwrap();
    assert!(docs.get("previous").is_none(), "{docs}");
    assert_eq!(docs["current"]["state"], json!({"desired": {"x": 1}}));
    // A versioned update on a deleted shadow: it is new, so only version 1 is valid.
    run(&m, ShadowOp::Delete, &a, Value::Null).result.unwrap();
    let e = run(&m, ShadowOp::Update, &a, json!({"state": {}, "version": 4}));
    assert_eq!(rejected(&e), (400, "Invalid version".into()));
    let e = run(
        &m,
        ShadowOp::Update,
        &a,
        json!({"state": {"reported": {"y": 1}}, "version": 1}),
    );
    assert_eq!(e.result.unwrap()["version"], 1);
}

#[test]
fn rejections_carry_the_shadow_managers_codes_and_messages() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), json!({"shadowDocumentSizeLimitBytes": 100}));
    let a = classic();
    let named = ShadowAddress::new("core-1", Some("cfg")).unwrap();
    // Not found: the classic shadow is "Unnamed Shadow", a named one by its name, unquoted.
    let e = run(&m, ShadowOp::Get, &a, Value::Null);
    assert_eq!(
        rejected(&e),
        (404, "No shadow exists with name: Unnamed Shadow".into())
    );
    let e = run(&m, ShadowOp::Delete, &named, Value::Null);
    assert_eq!(
        rejected(&e),
        (404, "No shadow exists with name: cfg".into())
    );
    // Size: desired + reported over the configured limit (not the whole request).
    let big = "x".repeat(95);
    let e = run(
        &m,
        ShadowOp::Update,
        &a,
        json!({"state": {"reported": {"b": big}}}),
    );
    assert_eq!(
        rejected(&e),
        (413, "The payload exceeds the maximum size allowed".into())
    );
    let e = run(
        &m,
        ShadowOp::Update,
        &a,
        json!({"state": {"reported": {"b": "x".repeat(40)}}}),
    );
    assert!(e.result.is_ok(), "{:?}", e.result);
    let e = run(
        &m,
        ShadowOp::Update,
        &a,
        json!({"state": {"desired": {"b": "x".repeat(60)}}}),
    );
    assert_eq!(rejected(&e).0, 413, "desired and reported count together");
    // Depth: 6 levels pass, 7 do not.
    let six = json!({"state": {"desired": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}});
    let m2 = manager(&dir.path().join("deep"), json!({}));
    assert!(run(&m2, ShadowOp::Update, &a, six).result.is_ok());
    let seven = json!({"state": {"desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}});
    let e = run(&m2, ShadowOp::Update, &a, seven);
    assert_eq!(
        rejected(&e),
        (
            400,
            "JSON contains too many levels of nesting; maximum is 6".into()
        )
    );
    // Conflict, with the request's clientToken echoed.
    let e = run(
        &m2,
        ShadowOp::Update,
        &a,
        json!({"state": {}, "version": 9, "clientToken": "ct-1"}),
    );
    assert_eq!(rejected(&e), (409, "Version conflict".into()));
    let body: Value = serde_json::from_slice(&e.publications[0].payload).unwrap();
    assert_eq!(body["clientToken"], "ct-1");
}

#[test]
fn throttled_requests_get_429_and_other_things_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(
        dir.path(),
        json!({"rateLimits": {"maxLocalRequestsPerSecondPerThing": 2, "maxTotalLocalRequestsRate": 50}}),
    );
    let a = classic();
    let mut throttled = 0;
    for _ in 0..6 {
        let e = run(&m, ShadowOp::Get, &a, Value::Null);
        if matches!(e.result, Err(Failure::Throttled)) {
            let body: Value = serde_json::from_slice(&e.publications[0].payload).unwrap();
            assert_eq!(body["code"], 429);
            assert_eq!(body["message"], THROTTLED_MESSAGE);
            throttled += 1;
        }
    }
    assert!(throttled >= 3, "{throttled} of 6 throttled");
    let other = ShadowAddress::new("sensor-9", None).unwrap();
    let e = run(
        &m,
        ShadowOp::Update,
        &other,
        json!({"state": {"reported": {"on": true}}}),
    );
    assert!(
        e.result.is_ok(),
        "another thing is not throttled: {:?}",
        e.result
    );
    // The sync's own writes are never throttled.
    for _ in 0..5 {
        let e = m.execute(ShadowOp::Get, &a, &[], Origin::Sync);
        assert!(!matches!(e.result, Err(Failure::Throttled)));
    }
}

#[test]
fn paging_tokens_are_bound_to_the_thing_and_only_local_writes_mark_pending() {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), json!({}));
    for n in ["n1", "n2", "n3"] {
        let a = ShadowAddress::new("core-1", Some(n)).unwrap();
        run(
            &m,
            ShadowOp::Update,
            &a,
            json!({"state": {"reported": {"n": n}}}),
        )
        .result
        .unwrap();
    }
    let page = m.list_named("core-1", Some(2), None).unwrap();
    assert_eq!(page.results, ["n1", "n2"]);
    let token = page.next_token.unwrap();
    assert!(!token.contains("n2"), "the token is opaque: {token}");
    let page = m.list_named("core-1", Some(2), Some(&token)).unwrap();
    assert_eq!(page.results, ["n3"]);
    assert!(page.next_token.is_none());
    assert!(matches!(
        m.list_named("other-thing", Some(2), Some(&token)),
        Err(Failure::Invalid(_))
    ));
    assert!(matches!(
        m.list_named("core-1", Some(0), None),
        Err(Failure::Invalid(_))
    ));

    let synced = ShadowAddress::new("core-1", Some("n1")).unwrap();
    let config = ShadowManagerConfig::default();
    m.configure(&config, BTreeSet::from([synced.clone()]));
    let e = run(
        &m,
        ShadowOp::Update,
        &synced,
        json!({"state": {"reported": {"n": 0}}}),
    );
    assert!(e.sync_needed);
    assert_eq!(m.store().pending().unwrap(), vec![synced.clone()]);
    let other = ShadowAddress::new("core-1", Some("n2")).unwrap();
    let e = run(
        &m,
        ShadowOp::Update,
        &other,
        json!({"state": {"reported": {"n": 0}}}),
    );
    assert!(!e.sync_needed, "not synced: not pending");
    let e = m.execute(
        ShadowOp::Update,
        &synced,
        br#"{"state":{"desired":{"n":1}}}"#,
        Origin::Sync,
    );
    assert!(!e.sync_needed, "the sync's own write is not pending again");
}
