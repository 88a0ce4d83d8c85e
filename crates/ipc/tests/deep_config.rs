//! A component cannot crash or brick the core through its own configuration: key paths and
//! values past the depth bound are refused over IPC before anything is stored, and the
//! deepest tree that is accepted survives a restart. Each hostile input is 10x its bound and
//! runs on the default test-thread stack.

mod common;

use common::Harness;
use lichen_core::config::tree::{MAX_CONFIG_DEPTH, MAX_KEY_PATH_SEGMENTS};
use lichen_core::settings::Settings;
use serde_json::{Value, json};

const COMPONENT: &str = "com.example.Deep";

fn nested(levels: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..levels {
        v = json!({ "k": v });
    }
    v
}

fn keys(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn deep_configuration_is_refused_and_the_deepest_allowed_survives_a_restart() {
    let h = Harness::start().await;
    let root = h.dir.path().join("root");
    let client = h.client(COMPONENT, json!({})).await;

    // A key path 10x the bound (the report's 2,000 segments overflowed the stack).
    let err = client
        .call(
            "UpdateConfiguration",
            &json!({"keyPath": keys(MAX_KEY_PATH_SEGMENTS * 10, "k"), "valueToMerge": 1}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.shape(), Some("InvalidArgumentsError"), "{err}");
    assert!(err.to_string().contains("keyPath"), "{err}");

    // A value 10x the bound: refused whole.
    let err = client
        .call(
            "UpdateConfiguration",
            &json!({"keyPath": ["v"], "valueToMerge": nested(MAX_CONFIG_DEPTH * 10)}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.shape(), Some("InvalidArgumentsError"), "{err}");

    // Just past the bound, split between key path and value (the report's 124 deep was
    // saved and then failed to load): refused, naming the limit.
    let err = client
        .call(
            "UpdateConfiguration",
            &json!({"keyPath": keys(10, "p"), "valueToMerge": nested(MAX_CONFIG_DEPTH - 9)}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.shape(), Some("InvalidArgumentsError"), "{err}");
    assert!(err.to_string().contains("64 levels"), "{err}");
    let stored = h.handle.get_configuration(COMPONENT, &[]).unwrap();
    assert_eq!(stored, json!({"accessControl": {}}), "nothing was stored");

    // Exactly the bound is accepted, and the component reads it back.
    client
        .call(
            "UpdateConfiguration",
            &json!({"keyPath": keys(10, "p"), "valueToMerge": nested(MAX_CONFIG_DEPTH - 10)}),
        )
        .await
        .unwrap();
    let before = client
        .call("GetConfiguration", &json!({"keyPath": []}))
        .await
        .unwrap();
    drop(client);

    // Restart on the same root: the store loads, and the tree is what was saved.
    let Harness {
        core, server, dir, ..
    } = h;
    server.shutdown().await;
    core.shutdown().await;
    let again = Harness::start_with(Settings::default(), Some(root)).await;
    let client = again.client(COMPONENT, json!({})).await;
    let after = client
        .call("GetConfiguration", &json!({"keyPath": []}))
        .await
        .unwrap();
    assert_eq!(after, before);
    drop(dir);
}
