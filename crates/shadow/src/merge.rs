//! The three-way merge cloud sync reconciles with, and the update patch that turns one state
//! into another.
//!
//! A section (`desired` or `reported`) is merged key by key against the last synced document
//! (the base): a key only one side changed takes that side's value; a key both changed to the
//! same value keeps it; both changed differently: two objects merge recursively, anything else
//! takes the preferred side's value (for `betweenDeviceAndCloud`, the device's for
//! `reported` and the cloud's for `desired`). A key removed on one side and untouched on the
//! other is removed. Recursion depth is bounded by the shadow depth limit (6) of the inputs.

use serde_json::{Map, Value};

use crate::config::Direction;

/// Which side wins a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    Local,
    Cloud,
}

fn merge_value(
    base: Option<&Value>,
    local: Option<&Value>,
    cloud: Option<&Value>,
    prefer: Prefer,
) -> Option<Value> {
    if local == cloud {
        return local.cloned();
    }
    if local == base {
        return cloud.cloned();
    }
    if cloud == base {
        return local.cloned();
    }
    if let (Some(Value::Object(l)), Some(Value::Object(c))) = (local, cloud) {
        let b = base.and_then(Value::as_object);
        return merge_map(b, Some(l), Some(c), prefer).map(Value::Object);
    }
    match prefer {
        Prefer::Local => local.cloned(),
        Prefer::Cloud => cloud.cloned(),
    }
}

/// Merges one section; `None` = the section is absent (or empty) afterwards.
pub fn merge_map(
    base: Option<&Map<String, Value>>,
    local: Option<&Map<String, Value>>,
    cloud: Option<&Map<String, Value>>,
    prefer: Prefer,
) -> Option<Map<String, Value>> {
    let mut keys: Vec<&String> = Vec::new();
    for m in [local, cloud, base].into_iter().flatten() {
        for k in m.keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let mut out = Map::new();
    for k in keys {
        let (b, l, c) = (
            base.and_then(|m| m.get(k)),
            local.and_then(|m| m.get(k)),
            cloud.and_then(|m| m.get(k)),
        );
        if let Some(v) = merge_value(b, l, c, prefer) {
            out.insert(k.clone(), v);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `{desired?, reported?}` of a state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub desired: Option<Map<String, Value>>,
    pub reported: Option<Map<String, Value>>,
}

impl State {
    /// From `{"desired": {…}, "reported": {…}}` (other keys ignored; `null`/non-objects = absent).
    pub fn from_value(v: &Value) -> State {
        let section = |name: &str| v.get(name).and_then(Value::as_object).cloned();
        State {
            desired: section("desired").filter(|m| !m.is_empty()),
            reported: section("reported").filter(|m| !m.is_empty()),
        }
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        if let Some(d) = &self.desired {
            m.insert("desired".into(), Value::Object(d.clone()));
        }
        if let Some(r) = &self.reported {
            m.insert("reported".into(), Value::Object(r.clone()));
        }
        Value::Object(m)
    }
}

/// The merged state for `direction`: `deviceToCloud` takes the device's state whole,
/// `cloudToDevice` the cloud's, `betweenDeviceAndCloud` merges (cloud wins `desired`, device
/// wins `reported`).
pub fn three_way(base: &State, local: &State, cloud: &State, direction: Direction) -> State {
    match direction {
        Direction::DeviceToCloud => local.clone(),
        Direction::CloudToDevice => cloud.clone(),
        Direction::BetweenDeviceAndCloud => State {
            desired: merge_map(
                base.desired.as_ref(),
                local.desired.as_ref(),
                cloud.desired.as_ref(),
                Prefer::Cloud,
            ),
            reported: merge_map(
                base.reported.as_ref(),
                local.reported.as_ref(),
                cloud.reported.as_ref(),
                Prefer::Local,
            ),
        },
    }
}

fn patch_map(from: &Map<String, Value>, to: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, new) in to {
        match (from.get(k), new) {
            (Some(old), new) if old == new => {}
            (Some(Value::Object(old)), Value::Object(new)) => {
                let inner = patch_map(old, new);
                if !inner.is_empty() {
                    out.insert(k.clone(), Value::Object(inner));
                }
            }
            _ => {
                out.insert(k.clone(), new.clone());
            }
        }
    }
    for k in from.keys() {
        if !to.contains_key(k) {
            out.insert(k.clone(), Value::Null);
        }
    }
    out
}

/// The `state` of an update request turning `from` into `to` (only what differs; `null`
/// removes), or `None` when they are equal.
pub fn patch(from: &State, to: &State) -> Option<Value> {
    let mut state = Map::new();
    for (name, f, t) in [
        ("desired", &from.desired, &to.desired),
        ("reported", &from.reported, &to.reported),
    ] {
        match (f, t) {
            (None, None) => {}
            (Some(_), None) => {
                state.insert(name.into(), Value::Null);
            }
            (None, Some(t)) => {
                state.insert(name.into(), Value::Object(t.clone()));
            }
            (Some(f), Some(t)) => {
                let p = patch_map(f, t);
                if !p.is_empty() {
                    state.insert(name.into(), Value::Object(p));
                }
            }
        }
    }
    (!state.is_empty()).then_some(Value::Object(state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn st(v: Value) -> State {
        State::from_value(&v)
    }

    #[test]
    fn between_device_and_cloud_cloud_wins_desired_device_wins_reported() {
        let base = st(
            json!({"desired": {"color": "red", "mode": "a"}, "reported": {"color": "red", "t": 1}}),
        );
        let local = st(
            json!({"desired": {"color": "green", "mode": "a"}, "reported": {"color": "green", "t": 1}}),
        );
        let cloud = st(
            json!({"desired": {"color": "blue", "mode": "b"}, "reported": {"color": "blue", "t": 2}}),
        );
        let m = three_way(&base, &local, &cloud, Direction::BetweenDeviceAndCloud);
        assert_eq!(
            m.to_value(),
            json!({"desired": {"color": "blue", "mode": "b"}, "reported": {"color": "green", "t": 2}})
        );
        assert_eq!(
            three_way(&base, &local, &cloud, Direction::DeviceToCloud),
            local
        );
        assert_eq!(
            three_way(&base, &local, &cloud, Direction::CloudToDevice),
            cloud
        );
    }

    #[test]
    fn removals_and_nested_objects() {
        let base = st(json!({"reported": {"a": 1, "n": {"x": 1, "y": 1}}}));
        let local = st(json!({"reported": {"n": {"x": 2, "y": 1}}}));
        let cloud = st(json!({"reported": {"a": 1, "n": {"x": 1, "y": 3}, "new": true}}));
        let m = three_way(&base, &local, &cloud, Direction::BetweenDeviceAndCloud);
        assert_eq!(
            m.to_value(),
            json!({"reported": {"n": {"x": 2, "y": 3}, "new": true}})
        );
    }

    #[test]
    fn patch_turns_one_state_into_another() {
        let from = st(json!({"desired": {"a": 1, "o": {"k": 1, "gone": 2}}, "reported": {"r": 1}}));
        let to = st(json!({"desired": {"a": 1, "o": {"k": 5}, "b": [1]}}));
        assert_eq!(
            patch(&from, &to).unwrap(),
            json!({"desired": {"o": {"k": 5, "gone": null}, "b": [1]}, "reported": null})
        );
        assert_eq!(patch(&to, &to), None);
    }
}
