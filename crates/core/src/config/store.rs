//! The durable store of every component's configuration tree.
//!
//! The whole store is one JSON file replaced atomically (see [`crate::atomic`]), so a kill -9
//! at any moment leaves either the old or the new store. Updates are serialized by a mutex,
//! and each committed change is announced on a broadcast channel (bounded: slow listeners
//! lose the oldest notifications and are told how many they missed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use super::tree;
use crate::atomic::{read_json, write_json_atomic};
use crate::error::{CoreError, Result};
use crate::handle::ConfigChange;

/// Change notifications kept for slow listeners.
pub const CHANGE_CHANNEL_CAPACITY: usize = 1024;
/// Per update, at most this many leaf paths are announced; beyond it one whole-component
/// notification is sent instead.
const MAX_CHANGE_EVENTS: usize = 256;
/// Largest configuration (value plus modification times, as stored JSON) a component may
/// grow its own tree to through `UpdateConfiguration`; deployments are not limited in size. Both are limited in depth
/// ([`tree::MAX_CONFIG_DEPTH`]).
pub const MAX_COMPONENT_UPDATE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ComponentConfig {
    pub value: Value,
    /// Last-modified time (ms since epoch) per JSON pointer that was written; `""` is the
    /// whole tree (set by deployments).
    #[serde(default)]
    pub modified: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    components: BTreeMap<String, ComponentConfig>,
}

pub struct ConfigStore {
    path: PathBuf,
    data: Mutex<BTreeMap<String, ComponentConfig>>,
    changes: broadcast::Sender<ConfigChange>,
}

/// What [`ConfigStore::snapshot`] returns and [`ConfigStore::restore`] takes back.
pub type ConfigSnapshot = BTreeMap<String, ComponentConfig>;

fn to_pointer(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")))
        .collect()
}

impl ConfigStore {
    pub fn open(path: PathBuf) -> Result<Self> {
        let file: StoreFile = read_json(&path)?.unwrap_or_default();
        let (changes, _) = broadcast::channel(CHANGE_CHANNEL_CAPACITY);
        Ok(ConfigStore {
            path,
            data: Mutex::new(file.components),
            changes,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ComponentConfig>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, data: &BTreeMap<String, ComponentConfig>) -> Result<()> {
        let file = StoreFile {
            version: 1,
            components: data.clone(),
        };
        write_json_atomic(&self.path, &file, 0o600)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ConfigChange> {
        self.changes.subscribe()
    }

    /// The node at `key_path` of `component`'s configuration.
    pub fn get(&self, component: &str, key_path: &[String]) -> Option<Value> {
        let data = self.lock();
        let cfg = data.get(component)?;
        tree::get(&cfg.value, key_path).cloned()
    }

    pub fn contains(&self, component: &str) -> bool {
        self.lock().contains_key(component)
    }

    pub fn snapshot(&self) -> ConfigSnapshot {
        self.lock().clone()
    }

    /// Commits new whole configurations (`None` removes a component's configuration) in one
    /// atomic write, as a deployment does, and announces what changed.
    pub fn commit(&self, changes: BTreeMap<String, Option<Value>>, now_ms: u64) -> Result<()> {
        let data = self.lock();
        let mut next = data.clone();
        for (component, value) in changes {
            match value {
                Some(v) => {
                    next.insert(
                        component,
                        ComponentConfig {
                            value: v,
                            modified: BTreeMap::from([(String::new(), now_ms)]),
                        },
                    );
                }
                None => {
                    next.remove(&component);
                }
            }
        }
        self.install(data, next)
    }

    /// Puts a snapshot back exactly (rollback).
    pub fn restore(&self, snapshot: ConfigSnapshot) -> Result<()> {
        let data = self.lock();
        self.install(data, snapshot)
    }

    /// Persists `next` as the whole store, then swaps it in and announces every component
    /// whose configuration differs.
    fn install(
        &self,
        mut data: std::sync::MutexGuard<'_, BTreeMap<String, ComponentConfig>>,
        next: BTreeMap<String, ComponentConfig>,
    ) -> Result<()> {
        let changed: std::collections::BTreeSet<String> = data
            .keys()
            .chain(next.keys())
            .filter(|k| data.get(*k).map(|c| &c.value) != next.get(*k).map(|c| &c.value))
            .cloned()
            .collect();
        self.persist(&next)?;
        *data = next;
        drop(data);
        for component in changed {
            let _ = self.changes.send(ConfigChange {
                component,
                key_path: Vec::new(),
            });
        }
        Ok(())
    }

    /// IPC `UpdateConfiguration`: merges `value` at `key_path` of `component`'s own tree.
    /// Refused when any node it would touch was modified after `timestamp_ms`.
    pub fn update_from_component(
        &self,
        component: &str,
        key_path: &[String],
        timestamp_ms: u64,
        value: Value,
    ) -> Result<()> {
        // Before anything else: a key path or value past the depth bound would overflow the
        // stack in the walks below, and the store file would no longer load.
        if key_path.len() > tree::MAX_KEY_PATH_SEGMENTS {
            return Err(CoreError::InvalidArgument(format!(
                "keyPath has {} segments; at most {} are allowed",
                key_path.len(),
                tree::MAX_KEY_PATH_SEGMENTS
            )));
        }
        tree::check_depth("valueToMerge under keyPath", key_path.len(), &value)
            .map_err(CoreError::InvalidArgument)?;
        let mut data = self.lock();
        let mut cfg = data.get(component).cloned().unwrap_or_default();
        if !cfg.value.is_object() {
            cfg.value = Value::Object(Default::default());
        }
        let mut touched = Vec::new();
        tree::leaf_paths(&value, key_path, &mut touched, MAX_CHANGE_EVENTS + 1);
        if touched.is_empty() {
            touched.push(key_path.to_vec());
        }
        for leaf in &touched {
            let leaf_ptr = to_pointer(leaf);
            let newest = cfg
                .modified
                .iter()
                .filter(|(p, _)| {
                    leaf_ptr.starts_with(p.as_str())
                        && (leaf_ptr.len() == p.len() || leaf_ptr[p.len()..].starts_with('/'))
                        || p.starts_with(&leaf_ptr)
                })
                .map(|(_, t)| *t)
                .max()
                .unwrap_or(0);
            if timestamp_ms < newest {
                return Err(CoreError::FailedUpdateCondition(format!(
                    "proposed timestamp {timestamp_ms} is older than the last modification \
                     ({newest}) of {component}{leaf_ptr}"
                )));
            }
        }
        match tree::get(&cfg.value, key_path) {
            Some(existing) if existing.is_object() && value.is_object() => {
                let mut node = existing.clone();
                tree::merge(&mut node, &value);
                tree::set(&mut cfg.value, key_path, node);
            }
            _ => tree::set(&mut cfg.value, key_path, value),
        }
        for leaf in &touched {
            cfg.modified.insert(to_pointer(leaf), timestamp_ms);
        }
        // Times of nodes that no longer exist would otherwise accumulate forever.
        let value = &cfg.value;
        cfg.modified.retain(|p, _| {
            p.is_empty() || tree::pointer_keys(p).is_ok_and(|k| tree::get(value, &k).is_some())
        });
        let size = serde_json::to_vec(&cfg)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_COMPONENT_UPDATE_BYTES {
            return Err(CoreError::InvalidArgument(format!(
                "the configuration of {component} would grow to {size} bytes; the limit for \
                 UpdateConfiguration is {MAX_COMPONENT_UPDATE_BYTES}"
            )));
        }
        let mut next = data.clone();
        next.insert(component.to_string(), cfg);
        self.persist(&next)?;
        *data = next;
        drop(data);
        if touched.len() > MAX_CHANGE_EVENTS {
            touched = vec![key_path.to_vec()];
        }
        for key_path in touched {
            let _ = self.changes.send(ConfigChange {
                component: component.to_string(),
                key_path,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commit_persists_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("effective.json");
        let store = ConfigStore::open(path.clone()).unwrap();
        let mut rx = store.subscribe();
        store
            .commit(
                BTreeMap::from([("c".to_string(), Some(json!({"a": {"b": 1}})))]),
                5,
            )
            .unwrap();
        assert_eq!(rx.try_recv().unwrap().component, "c");
        let reopened = ConfigStore::open(path).unwrap();
        assert_eq!(reopened.get("c", &keys(&["a", "b"])), Some(json!(1)));
    }

    #[test]
    fn component_update_respects_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path().join("s.json")).unwrap();
        store
            .commit(
                BTreeMap::from([("c".to_string(), Some(json!({"a": 1})))]),
                100,
            )
            .unwrap();
        let mut rx = store.subscribe();
        store
            .update_from_component("c", &keys(&["n"]), 200, json!({"x": 1}))
            .unwrap();
        assert_eq!(rx.try_recv().unwrap().key_path, keys(&["n", "x"]));
        let err = store
            .update_from_component("c", &keys(&["n"]), 150, json!({"x": 2}))
            .unwrap_err();
        assert!(matches!(err, CoreError::FailedUpdateCondition(_)));
        store
            .update_from_component("c", &keys(&["n"]), 300, json!({"y": 2}))
            .unwrap();
        assert_eq!(store.get("c", &keys(&["n"])), Some(json!({"x": 1, "y": 2})));
    }

    #[test]
    fn component_updates_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path().join("s.json")).unwrap();
        let big = "x".repeat(MAX_COMPONENT_UPDATE_BYTES);
        let err = store
            .update_from_component("c", &keys(&["k"]), 1, json!(big))
            .unwrap_err();
        assert!(matches!(err, CoreError::InvalidArgument(_)), "{err}");
        assert_eq!(store.get("c", &keys(&["k"])), None, "nothing stored");
        store
            .update_from_component("c", &keys(&["k"]), 2, json!("small"))
            .unwrap();
        assert_eq!(store.get("c", &keys(&["k"])), Some(json!("small")));
    }

    fn nested(levels: usize) -> Value {
        let mut v = json!("leaf");
        for _ in 0..levels {
            v = json!({ "k": v });
        }
        v
    }

    #[test]
    fn deep_updates_are_refused_and_the_deepest_allowed_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let store = ConfigStore::open(path.clone()).unwrap();
        // 10x the bound, on this default-sized test thread.
        let long_path: Vec<String> = (0..tree::MAX_KEY_PATH_SEGMENTS * 10)
            .map(|i| format!("k{i}"))
            .collect();
        let err = store
            .update_from_component("c", &long_path, 1, json!(1))
            .unwrap_err();
        assert!(matches!(err, CoreError::InvalidArgument(_)), "{err}");
        let err = store
            .update_from_component("c", &keys(&["a"]), 1, nested(tree::MAX_CONFIG_DEPTH))
            .unwrap_err();
        assert!(err.to_string().contains("64 levels"), "{err}");
        assert!(!store.contains("c"), "nothing stored");

        // The deepest tree allowed: half through the key path, half in the value.
        let half = tree::MAX_CONFIG_DEPTH / 2;
        let path_keys: Vec<String> = (0..half).map(|i| format!("p{i}")).collect();
        store
            .update_from_component("c", &path_keys, 2, nested(half))
            .unwrap();
        let expected = store.get("c", &[]).unwrap();
        assert_eq!(tree::nesting_depth(&expected, 1000), tree::MAX_CONFIG_DEPTH);
        drop(store);
        let reopened = ConfigStore::open(path).unwrap();
        assert_eq!(reopened.get("c", &[]), Some(expected));
    }

    #[test]
    fn restore_puts_snapshot_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path().join("s.json")).unwrap();
        store
            .commit(
                BTreeMap::from([("c".to_string(), Some(json!({"a": 1})))]),
                1,
            )
            .unwrap();
        let snap = store.snapshot();
        store
            .commit(
                BTreeMap::from([
                    ("c".to_string(), Some(json!({"a": 2}))),
                    ("d".to_string(), Some(json!({}))),
                ]),
                2,
            )
            .unwrap();
        store.restore(snap).unwrap();
        assert_eq!(store.get("c", &[]), Some(json!({"a": 1})));
        assert!(!store.contains("d"));
    }
}
