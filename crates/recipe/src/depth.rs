//! Nesting bounds for configuration trees.
//!
//! Configuration values come from recipes, deployments and components (IPC
//! `UpdateConfiguration`). Every consumer stores them inside larger JSON documents (the
//! configuration store, deployment records, control-channel replies) that `serde_json` must
//! parse again with its recursion limit of 128, and many walks of a tree (clone, drop,
//! serialization, merge) recurse. So a tree is never allowed to grow deeper than
//! [`MAX_CONFIG_DEPTH`]: every entry point checks with [`depth_exceeds`], which is itself
//! iterative and stops as soon as the bound is crossed.

use serde_json::Value;

/// Deepest a component configuration tree may be, counting every object or list level
/// from the component's root (key-path segments plus the nesting of the merged value).
/// `{"a": {"b": 1}}` has depth 2. Chosen so that the tree nested inside the largest
/// enclosing document (about 10 levels) stays far below `serde_json`'s limit of 128.
pub const MAX_CONFIG_DEPTH: usize = 64;

/// The nesting depth of `value` (a scalar is 0, `{}` or `[]` is 1), or `None` as soon as it
/// would exceed `limit`. Iterative: safe on any input that could be parsed.
pub fn depth_within(value: &Value, limit: usize) -> Option<usize> {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((node, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match node {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        let here = level + 1;
        if here > limit {
            return None;
        }
        deepest = deepest.max(here);
        stack.extend(children.map(|c| (c, here)));
    }
    Some(deepest)
}

/// Whether `value`, placed under `prefix_len` key-path segments, would make a tree deeper
/// than `limit`.
pub fn depth_exceeds(prefix_len: usize, value: &Value, limit: usize) -> bool {
    match limit.checked_sub(prefix_len) {
        None => true,
        Some(rest) => depth_within(value, rest).is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "k": v });
        }
        v
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth_within(&json!(1), 5), Some(0));
        assert_eq!(depth_within(&json!({}), 5), Some(1));
        assert_eq!(depth_within(&json!({"a": [1, {"b": 2}]}), 5), Some(3));
        assert_eq!(depth_within(&nested(64), 64), Some(64));
        assert_eq!(depth_within(&nested(65), 64), None);
    }

    #[test]
    fn prefix_counts_against_the_bound() {
        assert!(!depth_exceeds(60, &nested(4), MAX_CONFIG_DEPTH));
        assert!(depth_exceeds(61, &nested(4), MAX_CONFIG_DEPTH));
        assert!(depth_exceeds(65, &json!(1), MAX_CONFIG_DEPTH));
        assert!(!depth_exceeds(64, &json!(1), MAX_CONFIG_DEPTH));
    }
}
