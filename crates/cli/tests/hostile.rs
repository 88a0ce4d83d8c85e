//! The real core refuses hostile deployment requests and names at creation, so nothing it
//! stores fails to load later.

mod common;

use common::TestCore;
use serde_json::{Value, json};

fn nested(levels: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..levels {
        v = json!({ "k": v });
    }
    v
}

#[test]
fn deep_update_config_is_refused_at_creation_and_listing_keeps_working() {
    let core = TestCore::start();
    // 122 levels used to be accepted and then broke `deployment list`; 640 is 10x the bound.
    for levels in [65, 122, 640] {
        let update = json!({"com.example.Deep": {"MERGE": nested(levels)}}).to_string();
        let out = core.cli(&["deployment", "create", "--update-config", &update]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{levels} levels accepted");
        // Beyond serde_json's limit of 128 the CLI refuses the text itself.
        let refused_by_core =
            stderr.contains("configurationUpdates") && stderr.contains("64 levels");
        assert!(
            refused_by_core || levels > 128 && stderr.contains("recursion limit"),
            "{levels}: {stderr}"
        );
    }
    let update = json!({"com.example.Deep": {"RESET": ["/a".repeat(640)]}}).to_string();
    let out = core.cli(&["deployment", "create", "--update-config", &update]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RESET"));

    let list = core.json(&["deployment", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

#[test]
fn bidirectional_controls_in_deployment_names_are_refused() {
    let core = TestCore::start();
    let merge = "com.example.\u{202E}gpj.exe=1.0.0";
    let out = core.cli(&["deployment", "create", "--merge", merge]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("rootComponentsToAdd") && stderr.contains("\\u{202e}"),
        "{stderr}"
    );
}
