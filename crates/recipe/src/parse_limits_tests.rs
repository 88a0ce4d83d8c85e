//! Hostile names and configuration trees are refused with the field named.

use serde_json::{Value, json};

use crate::{MAX_CONFIG_DEPTH, parse_recipe};

fn recipe(name: &str, default_configuration: Value) -> String {
    json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": "1.0.0",
        "ComponentConfiguration": {"DefaultConfiguration": default_configuration},
    })
    .to_string()
}

fn nested(levels: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..levels {
        v = json!({ "k": v });
    }
    v
}

#[test]
fn bidirectional_controls_in_names_are_refused() {
    for c in [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
    ] {
        let name = format!("com.example.{c}gpj.exe");
        let e = parse_recipe(&recipe(&name, json!({})), "r.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ComponentName"), "{e}");
        assert!(!e.contains(c), "the error quotes the name escaped: {e}");
    }
    assert!(parse_recipe(&recipe("com.example.Fine-Name_2", json!({})), "r.json").is_ok());
}

#[test]
fn control_characters_in_rejected_names_are_escaped_in_the_error() {
    let e = parse_recipe(
        &recipe("com.example.A\nFORGED LINE\u{0}", json!({})),
        "r.json",
    )
    .unwrap_err()
    .to_string();
    assert!(!e.contains('\n') && !e.contains('\0'), "{e:?}");
    assert!(e.contains("\\n") && e.contains("\\0"), "{e}");
}

#[test]
fn default_configuration_depth_is_bounded() {
    // The deepest allowed tree parses...
    let r = parse_recipe(&recipe("com.example.A", nested(MAX_CONFIG_DEPTH)), "r.json").unwrap();
    assert_eq!(
        crate::depth::depth_within(&r.default_configuration, 1000),
        Some(MAX_CONFIG_DEPTH)
    );
    // ...one more level is refused, naming the field.
    let e = parse_recipe(
        &recipe("com.example.A", nested(MAX_CONFIG_DEPTH + 1)),
        "r.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("ComponentConfiguration.DefaultConfiguration"),
        "{e}"
    );
}
