//! A component cannot crash or brick the core through its own configuration: deep key paths
//! and values are refused with InvalidArgumentsError before anything is stored, and the
//! deepest allowed tree survives a restart. Runs on the default test thread stack.

mod common;

use common::Harness;
use lichen_core::config::tree::MAX_CONFIG_DEPTH;
use serde_json::{Value, json};

fn nested(levels: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..levels {
        v = json!({ "k": v });
    }
    v
}

fn long_path(segments: usize) -> Vec<String> {
    (0..segments).map(|i| format!("k{i}")).collect()
}

#[tokio::test]
async fn deep_configuration_is_refused_and_the_deepest_allowed_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let h = Harness::start_with(Default::default(), Some(root.clone())).await;
    let component = "com.example.Deep";
    let client = h.client(component, json!({})).await;

    // 10x the bound, and the sizes that crashed or bricked the core before.
    for segments in [10 * MAX_CONFIG_DEPTH, 130, 2_000, 20_000] {
        let e = client
            .call(
                "UpdateConfiguration",
                &json!({"keyPath": long_path(segments), "valueToMerge": 1}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.shape(), Some("InvalidArgumentsError"), "{segments}: {e}");
    }
    for levels in [MAX_CONFIG_DEPTH + 1, 124, 10 * MAX_CONFIG_DEPTH] {
        let e = client
            .call(
                "UpdateConfiguration",
                &json!({"keyPath": ["v"], "valueToMerge": nested(levels)}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.shape(), Some("InvalidArgumentsError"), "{levels}: {e}");
    }
    let stored = h.handle.get_configuration(component, &[]).unwrap();
    assert_eq!(stored, json!({"accessControl": {}}), "nothing was stored");

    // The deepest allowed trees, by key path and by value.
    let deepest_path = long_path(MAX_CONFIG_DEPTH);
    client
        .call(
            "UpdateConfiguration",
            &json!({"keyPath": deepest_path, "valueToMerge": "end"}),
        )
        .await
        .unwrap();
    client
        .call(
            "UpdateConfiguration",
            &json!({"keyPath": ["v"], "valueToMerge": nested(MAX_CONFIG_DEPTH - 1)}),
        )
        .await
        .unwrap();
    drop(client);
    let Harness { core, server, .. } = h;
    drop(server);
    core.shutdown().await;

    let h = Harness::start_with(Default::default(), Some(root)).await;
    let client = h.client(component, json!({})).await;
    let got = client
        .call(
            "GetConfiguration",
            &json!({"keyPath": long_path(MAX_CONFIG_DEPTH)}),
        )
        .await
        .unwrap();
    assert_eq!(
        got["value"],
        json!({ format!("k{}", MAX_CONFIG_DEPTH - 1): "end" })
    );
    let got = client
        .call("GetConfiguration", &json!({"keyPath": ["v"]}))
        .await
        .unwrap();
    assert_eq!(got["value"], nested(MAX_CONFIG_DEPTH - 1));
}
