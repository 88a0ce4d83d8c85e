//! Pure operations on configuration trees (JSON objects), with the Greengrass deployment
//! semantics of `update-component-configurations`: RESET runs before MERGE; MERGE deep-merges
//! objects and replaces leaves and lists wholesale; RESET restores a node to its default or
//! removes it when there is no default; `""` resets everything.

use serde_json::{Map, Value};

/// Deepest a configuration tree may be; every way in (deployments, IPC, recipes) checks it,
/// so the recursive walks here (merge, clone, serialization) are bounded by it.
pub use lichen_recipe::MAX_CONFIG_DEPTH;

/// Deep-merges `patch` into `target`: objects merge key by key, everything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Splits a JSON pointer (`/a/b`, with `~1` and `~0` escapes) into keys.
pub fn pointer_keys(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("JSON pointer {pointer:?} must be empty or start with '/'"))?;
    Ok(rest
        .split('/')
        .map(|k| k.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn get_path<'a>(v: &'a Value, keys: &[String]) -> Option<&'a Value> {
    keys.iter().try_fold(v, |node, k| match node {
        Value::Object(m) => m.get(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The node at `keys`, if any.
pub fn get<'a>(v: &'a Value, keys: &[String]) -> Option<&'a Value> {
    get_path(v, keys)
}

/// Sets the node at `keys`, creating intermediate objects (replacing non-objects on the way).
pub fn set(root: &mut Value, keys: &[String], value: Value) {
    let Some((last, parents)) = keys.split_last() else {
        *root = value;
        return;
    };
    let mut node = root;
    for k in parents {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(m) = node else { return };
        node = m
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let Value::Object(m) = node {
        m.insert(last.clone(), value);
    }
}

/// Removes the node at `keys`; returns whether it existed.
pub fn remove(root: &mut Value, keys: &[String]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        let existed = !matches!(root, Value::Object(m) if m.is_empty());
        *root = Value::Object(Map::new());
        return existed;
    };
    let mut node = root;
    for k in parents {
        match node {
            Value::Object(m) => match m.get_mut(k) {
                Some(n) => node = n,
                None => return false,
            },
            _ => return false,
        }
    }
    match node {
        Value::Object(m) => m.remove(last).is_some(),
        _ => false,
    }
}

/// Restores the node at `pointer` to its value in `defaults`, or removes it.
pub fn reset(config: &mut Value, defaults: &Value, pointer: &str) -> Result<(), String> {
    let keys = pointer_keys(pointer)?;
    match get_path(defaults, &keys) {
        Some(d) => set(config, &keys, d.clone()),
        None => {
            remove(config, &keys);
        }
    }
    Ok(())
}

/// The configuration a deployment produces for one component.
///
/// - a component new to the device starts from its defaults;
/// - an existing one keeps its configuration, and keys that the (possibly new) defaults add
///   and the configuration lacks are filled in;
/// - then RESET pointers are applied, then MERGE.
pub fn compute_update(
    current: Option<&Value>,
    defaults: &Value,
    reset_pointers: &[String],
    merge_patch: Option<&Value>,
) -> Result<Value, String> {
    let mut config = match current {
        None => defaults.clone(),
        Some(cur) => {
            let mut c = defaults.clone();
            merge(&mut c, cur);
            c
        }
    };
    if !config.is_object() {
        config = Value::Object(Map::new());
    }
    for p in reset_pointers {
        reset(&mut config, defaults, p)?;
    }
    if let Some(patch) = merge_patch {
        if !patch.is_object() {
            return Err("MERGE must be a JSON object".into());
        }
        merge(&mut config, patch);
    }
    Ok(config)
}

/// Every leaf path under `v` (objects are walked, lists and scalars are leaves), for change
/// notifications, in key order. Bounded by `max` entries; iterative, so any depth is safe.
pub fn leaf_paths(v: &Value, prefix: &[String], out: &mut Vec<Vec<String>>, max: usize) {
    let mut stack: Vec<(&Value, Vec<String>)> = vec![(v, prefix.to_vec())];
    while let Some((node, path)) = stack.pop() {
        if out.len() >= max {
            return;
        }
        match node {
            Value::Object(m) if !m.is_empty() => {
                // Reversed so that the first key is walked first.
                for (k, child) in m.iter().rev() {
                    let mut p = path.clone();
                    p.push(k.clone());
                    stack.push((child, p));
                }
            }
            _ => out.push(path),
        }
    }
}

/// Refuses a tree that would be deeper than [`MAX_CONFIG_DEPTH`] once `value` is placed
/// under `key_path` (or, for a pointer list, a pointer with more segments). The message
/// names `what`.
pub fn check_depth(what: &str, key_path_len: usize, value: &Value) -> Result<(), String> {
    if key_path_len > MAX_CONFIG_DEPTH {
        return Err(format!(
            "{what}: the key path has {key_path_len} segments; at most {MAX_CONFIG_DEPTH} are allowed"
        ));
    }
    if lichen_recipe::depth::depth_exceeds(key_path_len, value, MAX_CONFIG_DEPTH) {
        return Err(format!(
            "{what}: the value would nest the configuration more than {MAX_CONFIG_DEPTH} levels deep"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_replaces_lists_and_leaves_and_deep_merges_objects() {
        let mut t = json!({"a": {"x": 1, "y": [1, 2]}, "b": "s"});
        merge(
            &mut t,
            &json!({"a": {"y": [3], "z": null}, "b": {"now": "object"}}),
        );
        assert_eq!(
            t,
            json!({"a": {"x": 1, "y": [3], "z": null}, "b": {"now": "object"}})
        );
    }

    #[test]
    fn reset_before_merge() {
        let defaults = json!({"port": 80, "mode": "a", "list": [1]});
        let current = json!({"port": 8080, "mode": "b", "extra": true, "list": [1, 2]});
        let out = compute_update(
            Some(&current),
            &defaults,
            &["/port".into(), "/extra".into(), "/list".into()],
            Some(&json!({"mode": "c"})),
        )
        .unwrap();
        assert_eq!(out, json!({"port": 80, "mode": "c", "list": [1]}));
    }

    #[test]
    fn reset_everything_with_empty_pointer() {
        let defaults = json!({"a": 1});
        let out = compute_update(
            Some(&json!({"a": 2, "b": 3})),
            &defaults,
            &["".into()],
            None,
        )
        .unwrap();
        assert_eq!(out, json!({"a": 1}));
    }

    #[test]
    fn new_defaults_fill_missing_keys_only() {
        let out =
            compute_update(Some(&json!({"a": 2})), &json!({"a": 1, "b": 1}), &[], None).unwrap();
        assert_eq!(out, json!({"a": 2, "b": 1}));
    }

    #[test]
    fn pointer_escapes_and_errors() {
        assert_eq!(pointer_keys("/a~1b/c~0d").unwrap(), vec!["a/b", "c~d"]);
        assert!(pointer_keys("nope").is_err());
        assert!(compute_update(None, &json!({}), &["bad".into()], None).is_err());
        assert!(compute_update(None, &json!({}), &[], Some(&json!([1]))).is_err());
    }

    #[test]
    fn set_and_remove_paths() {
        let mut v = json!({});
        set(&mut v, &["a".into(), "b".into()], json!(1));
        assert_eq!(v, json!({"a": {"b": 1}}));
        assert!(remove(&mut v, &["a".into(), "b".into()]));
        assert!(!remove(&mut v, &["zz".into()]));
    }
}
