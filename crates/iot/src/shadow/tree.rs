//! The JSON tree operations behind a shadow update: merging a request section into a stored
//! section, the metadata that mirrors it, and the delta between desired and reported.
//!
//! Recursion here is bounded: request sections are refused beyond
//! [`super::MAX_STATE_DEPTH`] levels before they reach these functions, and stored sections
//! only ever hold what passed that check.

use serde_json::{Map, Value, json};

use crate::json::same_value;

/// The metadata of a value written at `now`: objects mirror their keys, arrays hold one
/// entry per element, every other leaf (and an empty object or array) is `{"timestamp"}`.
pub(crate) fn metadata_of(value: &Value, now: u64) -> Value {
    match value {
        Value::Object(map) if !map.is_empty() => Value::Object(metadata_of_map(map, now)),
        Value::Array(items) if !items.is_empty() => {
            Value::Array(items.iter().map(|v| metadata_of(v, now)).collect())
        }
        _ => json!({ "timestamp": now }),
    }
}

/// [`metadata_of`] for each member of an object.
pub(crate) fn metadata_of_map(map: &Map<String, Value>, now: u64) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (k.clone(), metadata_of(v, now)))
        .collect()
}

/// A value with every `null` member removed and objects that end up empty dropped; `None`
/// when nothing remains (a new nested object made only of nulls is not created).
pub(crate) fn without_nulls(value: &Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Object(map) => {
            let kept: Map<String, Value> = map
                .iter()
                .filter_map(|(k, v)| without_nulls(v).map(|v| (k.clone(), v)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        other => Some(other.clone()),
    }
}

/// Merges `update` into `state` (and its `metadata`) the AWS way: `null` removes a key,
/// objects merge recursively, everything else (arrays, scalars, type changes) replaces.
/// Objects left empty are removed.
pub(crate) fn merge_section(
    state: &mut Map<String, Value>,
    metadata: &mut Map<String, Value>,
    update: &Map<String, Value>,
    now: u64,
) {
    for (key, new) in update {
        match new {
            Value::Null => {
                state.remove(key);
                metadata.remove(key);
            }
            Value::Object(new_map) => {
                if let Some(Value::Object(old_map)) = state.get_mut(key) {
                    let meta = metadata
                        .entry(key.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !meta.is_object() {
                        *meta = Value::Object(Map::new());
                    }
                    if let Value::Object(meta_map) = meta {
                        merge_section(old_map, meta_map, new_map, now);
                    }
                    if old_map.is_empty() {
                        state.remove(key);
                        metadata.remove(key);
                    }
                } else {
                    replace(state, metadata, key, new, now);
                }
            }
            _ => replace(state, metadata, key, new, now),
        }
    }
}

fn replace(
    state: &mut Map<String, Value>,
    metadata: &mut Map<String, Value>,
    key: &str,
    new: &Value,
    now: u64,
) {
    match without_nulls(new) {
        Some(value) => {
            metadata.insert(key.to_owned(), metadata_of(&value, now));
            state.insert(key.to_owned(), value);
        }
        None => {
            state.remove(key);
            metadata.remove(key);
        }
    }
}

/// The fields of `desired` that differ from `reported` (numbers by value); a nested object
/// contributes only its differing fields. `None` when they agree.
pub(crate) fn delta(
    desired: &Map<String, Value>,
    reported: Option<&Map<String, Value>>,
) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    for (key, want) in desired {
        let have = reported.and_then(|r| r.get(key));
        match (want, have) {
            (Value::Object(want_map), Some(Value::Object(have_map))) => {
                if let Some(inner) = delta(want_map, Some(have_map)) {
                    out.insert(key.clone(), Value::Object(inner));
                }
            }
            (_, Some(have)) if same_value(want, have) => {}
            _ => {
                out.insert(key.clone(), want.clone());
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The part of `tree` at the paths present in `mask` (a request section): keeps a key of
/// `tree` when the mask names it; where both are objects, recurses. `None` when empty.
pub(crate) fn restrict(
    tree: &Map<String, Value>,
    mask: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    let mut out = Map::new();
    for (key, value) in tree {
        let Some(m) = mask.get(key) else { continue };
        match (value, m) {
            (Value::Object(inner), Value::Object(inner_mask)) => {
                if let Some(kept) = restrict(inner, inner_mask) {
                    out.insert(key.clone(), Value::Object(kept));
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The metadata entries of `metadata` at the paths of `shape` (a delta): the delta's
/// metadata comes from the desired section's.
pub(crate) fn metadata_at(
    metadata: &Map<String, Value>,
    shape: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in shape {
        let Some(meta) = metadata.get(key) else {
            continue;
        };
        match (value, meta) {
            (Value::Object(inner), Value::Object(inner_meta)) if !inner.is_empty() => {
                out.insert(key.clone(), Value::Object(metadata_at(inner_meta, inner)));
            }
            _ => {
                out.insert(key.clone(), meta.clone());
            }
        }
    }
    out
}
