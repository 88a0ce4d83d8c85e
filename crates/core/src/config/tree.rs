//! Pure operations on configuration trees (JSON objects), with the Greengrass deployment
//! semantics of `update-component-configurations`: RESET runs before MERGE; MERGE deep-merges
//! objects and replaces leaves and lists wholesale; RESET restores a node to its default or
//! removes it when there is no default; `""` resets everything.

use serde_json::{Map, Value};

/// Deepest nesting a component's configuration tree may have: its root object counts 1, and
/// each object or list inside another adds 1 (scalars add nothing). `UpdateConfiguration`
/// (key-path segments plus the value's own depth) and deployments (the resulting tree) are
/// refused beyond it. It leaves room under serde_json's parser limit of 128 for the store file
/// and deployment records, which wrap a tree in a few more levels, so whatever is saved loads
/// again at the next start. It is the recipe crate's bound on `DefaultConfiguration`, so a
/// recipe's defaults always fit a configuration tree.
pub const MAX_CONFIG_DEPTH: usize = lichen_recipe::MAX_DEFAULT_CONFIGURATION_DEPTH;

/// Most segments an `UpdateConfiguration` key path may have (each is one level of nesting).
pub const MAX_KEY_PATH_SEGMENTS: usize = MAX_CONFIG_DEPTH;

/// Nesting depth of `v` (a scalar is 0, `{}` or `[]` is 1, `{"a": {}}` is 2), counted
/// iteratively and only up to `cap + 1`, so a hostile tree neither overflows the stack nor
/// costs more than walking its first `cap + 1` levels.
pub fn nesting_depth(v: &Value, cap: usize) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((node, above)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match node {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        let here = above + 1;
        deepest = deepest.max(here);
        if here > cap {
            return deepest;
        }
        stack.extend(children.map(|c| (c, here)));
    }
    deepest
}

/// Refuses a value that, placed under `prefix_depth` levels of keys, would nest deeper than
/// [`MAX_CONFIG_DEPTH`]. `what` names the field in the error.
pub fn check_depth(what: &str, prefix_depth: usize, v: &Value) -> Result<(), String> {
    let room = MAX_CONFIG_DEPTH.saturating_sub(prefix_depth);
    let depth = nesting_depth(v, room);
    if prefix_depth > MAX_CONFIG_DEPTH || depth > room {
        return Err(format!(
            "{what} nests more than {MAX_CONFIG_DEPTH} levels deep (the limit of a component \
             configuration)"
        ));
    }
    Ok(())
}

/// Deep-merges `patch` into `target`: objects merge key by key, everything else replaces.
/// Iterative, so the depth of `patch` costs heap, not stack.
pub fn merge(target: &mut Value, patch: &Value) {
    let mut stack: Vec<(&mut Value, &Value)> = vec![(target, patch)];
    while let Some((target, patch)) = stack.pop() {
        if !(target.is_object() && patch.is_object()) {
            *target = patch.clone();
            continue;
        }
        let (Value::Object(t), Value::Object(p)) = (target, patch) else {
            continue;
        };
        let deep = |t: &Map<String, Value>, k: &String, v: &Value| {
            v.is_object() && t.get(k).is_some_and(Value::is_object)
        };
        let to_merge: std::collections::BTreeSet<&String> = p
            .iter()
            .filter(|(k, v)| deep(t, k, v))
            .map(|(k, _)| k)
            .collect();
        for (k, v) in p {
            if !to_merge.contains(k) {
                t.insert(k.clone(), v.clone());
            }
        }
        for (k, child) in t.iter_mut() {
            if to_merge.contains(k)
                && let Some(patch_child) = p.get(k)
            {
                stack.push((child, patch_child));
            }
        }
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
        check_depth("MERGE", 0, patch)?;
        merge(&mut config, patch);
    }
    check_depth("the resulting configuration", 0, &config)?;
    Ok(config)
}

/// Every leaf path under `v` (objects are walked, lists and scalars are leaves), for change
/// notifications. Bounded by `max` entries; iterative.
pub fn leaf_paths(v: &Value, prefix: &[String], out: &mut Vec<Vec<String>>, max: usize) {
    let mut stack: Vec<(&Value, Vec<String>)> = vec![(v, prefix.to_vec())];
    while let Some((node, path)) = stack.pop() {
        if out.len() >= max {
            return;
        }
        match node {
            Value::Object(m) if !m.is_empty() => {
                // Reversed so that leaves come out in the map's order.
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

    /// A tree `levels` containers deep, built without recursion.
    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "k": v });
        }
        v
    }

    #[test]
    fn depth_is_counted_without_recursion_and_capped() {
        assert_eq!(nesting_depth(&json!(1), 10), 0);
        assert_eq!(nesting_depth(&json!({}), 10), 1);
        assert_eq!(nesting_depth(&json!({"a": [1, {"b": {}}]}), 10), 4);
        // 10x the bound on this (default-sized) test thread: counting stops past the cap.
        let deep = nested(MAX_CONFIG_DEPTH * 10);
        assert_eq!(nesting_depth(&deep, MAX_CONFIG_DEPTH), MAX_CONFIG_DEPTH + 1);
        assert!(check_depth("v", 0, &deep).is_err());
        assert!(check_depth("v", 0, &nested(MAX_CONFIG_DEPTH)).is_ok());
        assert!(check_depth("v", 1, &nested(MAX_CONFIG_DEPTH)).is_err());
        assert!(check_depth("v", MAX_CONFIG_DEPTH, &json!(1)).is_ok());
        assert!(check_depth("v", MAX_CONFIG_DEPTH + 1, &json!(1)).is_err());
        // Dropping a value this deep recurses in serde_json; take it apart iteratively.
        dismantle(deep);
    }

    fn dismantle(mut v: Value) {
        while let Value::Object(mut m) = v {
            v = m.remove("k").unwrap_or(Value::Null);
        }
    }

    #[test]
    fn deployments_deeper_than_the_bound_are_refused() {
        let err =
            compute_update(None, &json!({}), &[], Some(&nested(MAX_CONFIG_DEPTH + 1))).unwrap_err();
        assert!(err.contains("MERGE") && err.contains("64"), "{err}");
        let err = compute_update(None, &nested(MAX_CONFIG_DEPTH + 1), &[], None).unwrap_err();
        assert!(err.contains("resulting configuration"), "{err}");
        assert!(compute_update(None, &json!({}), &[], Some(&nested(MAX_CONFIG_DEPTH))).is_ok());
    }

    #[test]
    fn merge_and_leaf_paths_are_iterative() {
        let mut t = json!({"a": {"x": 1, "keep": true}, "b": 2});
        merge(
            &mut t,
            &json!({"a": {"x": {"deep": [1]}, "y": 3}, "c": {"n": {}}}),
        );
        assert_eq!(
            t,
            json!({"a": {"x": {"deep": [1]}, "keep": true, "y": 3}, "b": 2, "c": {"n": {}}})
        );
        let mut out = Vec::new();
        leaf_paths(&t, &["p".into()], &mut out, 100);
        let mut joined: Vec<String> = out.iter().map(|p| p.join("/")).collect();
        joined.sort();
        assert_eq!(joined, ["p/a/keep", "p/a/x/deep", "p/a/y", "p/b", "p/c/n"]);
        let mut few = Vec::new();
        leaf_paths(&t, &[], &mut few, 2);
        assert_eq!(few.len(), 2);
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
