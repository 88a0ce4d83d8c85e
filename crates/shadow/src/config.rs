//! The `aws.greengrass.ShadowManager` configuration, read with its Greengrass keys so a recipe
//! or deployment written for Greengrass works unchanged:
//!
//! ```json
//! { "strategy": {"type": "realTime" | "periodic", "delay": 300},
//!   "synchronize": {
//!     "coreThing": {"classic": true, "namedShadows": ["A"]},
//!     "shadowDocuments": [{"thingName": "dev1", "classic": false, "namedShadows": ["B"]}],
//!     "direction": "betweenDeviceAndCloud" | "deviceToCloud" | "cloudToDevice" },
//!   "rateLimits": {"maxOutboundSyncUpdatesPerSecond": 100, "maxTotalLocalRequestsRate": 200,
//!                  "maxLocalRequestsPerSecondPerThing": 20},
//!   "shadowDocumentSizeLimitBytes": 8192 }
//! ```
//!
//! Keys are matched case-insensitively (Greengrass configuration keys are); unknown keys are
//! ignored, as Greengrass does; a wrong type or range is an error naming the key. Nothing is
//! synced until `synchronize` is present. The older `shadowDocumentsMap` form
//! (`{thing: {classic, namedShadows}}`) is read too.

use std::collections::BTreeSet;

use lichen_iot::topic::ShadowAddress;
use serde_json::{Map, Value};

/// The reserved named shadow Greengrass deployments use; never synced by this service.
pub const DEPLOYMENT_SHADOW: &str = "AWSManagedGreengrassV2Deployment";
/// Default and largest `shadowDocumentSizeLimitBytes`.
pub const DEFAULT_DOCUMENT_SIZE_LIMIT: usize = 8192;
pub const MAX_DOCUMENT_SIZE_LIMIT: usize = 30720;
/// Defaults of `rateLimits`.
pub const DEFAULT_OUTBOUND_SYNC_RATE: u32 = 100;
pub const DEFAULT_TOTAL_LOCAL_RATE: u32 = 200;
pub const DEFAULT_PER_THING_LOCAL_RATE: u32 = 20;
/// Bound on the shadows one configuration may name for sync.
pub const MAX_SYNCED_SHADOWS: usize = 10_000;

/// Which way changes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    BetweenDeviceAndCloud,
    DeviceToCloud,
    CloudToDevice,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::BetweenDeviceAndCloud => "betweenDeviceAndCloud",
            Direction::DeviceToCloud => "deviceToCloud",
            Direction::CloudToDevice => "cloudToDevice",
        }
    }
}

/// When syncs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// After every change.
    #[default]
    RealTime,
    /// Every `delay_secs` seconds.
    Periodic { delay_secs: u64 },
}

/// The shadows to sync: per thing, the classic one and/or named ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncConfig {
    /// The core's own thing: `coreThing.classic` (default true) and `coreThing.namedShadows`.
    pub core_classic: bool,
    pub core_named: BTreeSet<String>,
    /// `shadowDocuments`: other things (client devices), as checked addresses.
    pub documents: BTreeSet<ShadowAddress>,
    pub direction: Direction,
}

impl SyncConfig {
    /// The addresses to sync for a core named `core_thing` (the deployment shadow left out).
    pub fn addresses(&self, core_thing: &str) -> BTreeSet<ShadowAddress> {
        let mut out = self.documents.clone();
        if ShadowAddress::new(core_thing, None).is_ok() {
            if self.core_classic {
                out.insert(ShadowAddress {
                    thing: core_thing.to_string(),
                    shadow: None,
                });
            }
            for name in &self.core_named {
                out.insert(ShadowAddress {
                    thing: core_thing.to_string(),
                    shadow: Some(name.clone()),
                });
            }
        }
        out.retain(|a| a.shadow.as_deref() != Some(DEPLOYMENT_SHADOW));
        out
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowManagerConfig {
    pub document_size_limit: usize,
    pub max_total_local_rate: u32,
    pub max_per_thing_local_rate: u32,
    pub max_outbound_sync_rate: u32,
    pub strategy: Strategy,
    /// `None` until a `synchronize` section is configured: nothing syncs.
    pub synchronize: Option<SyncConfig>,
}

impl Default for ShadowManagerConfig {
    fn default() -> Self {
        ShadowManagerConfig {
            document_size_limit: DEFAULT_DOCUMENT_SIZE_LIMIT,
            max_total_local_rate: DEFAULT_TOTAL_LOCAL_RATE,
            max_per_thing_local_rate: DEFAULT_PER_THING_LOCAL_RATE,
            max_outbound_sync_rate: DEFAULT_OUTBOUND_SYNC_RATE,
            strategy: Strategy::RealTime,
            synchronize: None,
        }
    }
}

/// A configuration value that cannot be used; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("aws.greengrass.ShadowManager configuration {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
    }
}

/// A member of `map` whose key equals `name` ignoring ASCII case.
fn member<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn object<'a>(v: &'a Value, key: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object().ok_or_else(|| err(key, "must be an object"))
}

/// A positive integer; Greengrass configuration often carries numbers as strings.
fn positive(v: &Value, key: &str) -> Result<u64, ConfigError> {
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if n > 0 => Ok(n),
        _ => Err(err(key, format!("must be a positive integer, not {v}"))),
    }
}

fn boolean(v: &Value, key: &str) -> Result<bool, ConfigError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(err(key, format!("must be true or false, not {v}"))),
    }
}

fn names(v: &Value, key: &str) -> Result<BTreeSet<String>, ConfigError> {
    let list = v.as_array().ok_or_else(|| err(key, "must be a list"))?;
    let mut out = BTreeSet::new();
    for item in list {
        let name = item
            .as_str()
            .ok_or_else(|| err(key, format!("{item} is not a shadow name")))?;
        lichen_iot::topic::validate_shadow_name(name).map_err(|e| err(key, e.to_string()))?;
        out.insert(name.to_string());
    }
    Ok(out)
}

/// `{classic?, namedShadows?}` → addresses of `thing`.
fn thing_shadows(
    thing: &str,
    spec: &Map<String, Value>,
    key: &str,
    out: &mut BTreeSet<ShadowAddress>,
) -> Result<(), ConfigError> {
    let address = ShadowAddress::new(thing, None)
        .map_err(|e| err(&format!("{key}.thingName"), e.to_string()))?;
    let classic = match member(spec, "classic") {
        Some(v) => boolean(v, &format!("{key}.classic"))?,
        None => true,
    };
    if classic {
        out.insert(address.clone());
    }
    if let Some(v) = member(spec, "namedShadows") {
        for name in names(v, &format!("{key}.namedShadows"))? {
            out.insert(ShadowAddress {
                thing: address.thing.clone(),
                shadow: Some(name),
            });
        }
    }
    Ok(())
}

fn parse_synchronize(v: &Value) -> Result<SyncConfig, ConfigError> {
    let key = "synchronize";
    let map = object(v, key)?;
    let mut sync = SyncConfig {
        core_classic: true,
        ..SyncConfig::default()
    };
    if let Some(core) = member(map, "coreThing") {
        let core = object(core, "synchronize.coreThing")?;
        if let Some(v) = member(core, "classic") {
            sync.core_classic = boolean(v, "synchronize.coreThing.classic")?;
        }
        if let Some(v) = member(core, "namedShadows") {
            sync.core_named = names(v, "synchronize.coreThing.namedShadows")?;
        }
    }
    if let Some(docs) = member(map, "shadowDocuments") {
        let list = docs
            .as_array()
            .ok_or_else(|| err("synchronize.shadowDocuments", "must be a list"))?;
        for (i, doc) in list.iter().enumerate() {
            let k = format!("synchronize.shadowDocuments[{i}]");
            let doc = object(doc, &k)?;
            let thing = member(doc, "thingName")
                .and_then(Value::as_str)
                .ok_or_else(|| err(&format!("{k}.thingName"), "is required (a string)"))?;
            thing_shadows(thing, doc, &k, &mut sync.documents)?;
        }
    }
    if let Some(docs) = member(map, "shadowDocumentsMap") {
        let docs = object(docs, "synchronize.shadowDocumentsMap")?;
        for (thing, spec) in docs {
            let k = format!("synchronize.shadowDocumentsMap.{thing}");
            thing_shadows(thing, object(spec, &k)?, &k, &mut sync.documents)?;
        }
    }
    if let Some(d) = member(map, "direction") {
        let s = d
            .as_str()
            .ok_or_else(|| err("synchronize.direction", "must be a string"))?;
        // Greengrass documents the default as BETWEEN_DEVICE_AND_CLOUD: accept both spellings.
        let folded: String = s.chars().filter(|c| *c != '_').collect();
        sync.direction = match folded.to_ascii_lowercase().as_str() {
            "betweendeviceandcloud" => Direction::BetweenDeviceAndCloud,
            "devicetocloud" => Direction::DeviceToCloud,
            "cloudtodevice" => Direction::CloudToDevice,
            _ => {
                return Err(err(
                    "synchronize.direction",
                    format!("{s:?} is not betweenDeviceAndCloud, deviceToCloud or cloudToDevice"),
                ));
            }
        };
    }
    let count = sync.documents.len() + sync.core_named.len() + 1;
    if count > MAX_SYNCED_SHADOWS {
        return Err(err(
            key,
            format!("names {count} shadows; at most {MAX_SYNCED_SHADOWS} may be synced"),
        ));
    }
    Ok(sync)
}

impl ShadowManagerConfig {
    /// Reads a configuration tree (`{}` or `null` = the defaults).
    pub fn parse(v: &Value) -> Result<ShadowManagerConfig, ConfigError> {
        let mut c = ShadowManagerConfig::default();
        let map = match v {
            Value::Null => return Ok(c),
            Value::Object(m) => m,
            _ => return Err(err("(root)", "must be an object")),
        };
        if let Some(v) = member(map, "shadowDocumentSizeLimitBytes") {
            let n = positive(v, "shadowDocumentSizeLimitBytes")? as usize;
            if n > MAX_DOCUMENT_SIZE_LIMIT {
                return Err(err(
                    "shadowDocumentSizeLimitBytes",
                    format!("{n} is more than the maximum {MAX_DOCUMENT_SIZE_LIMIT}"),
                ));
            }
            c.document_size_limit = n;
        }
        if let Some(r) = member(map, "rateLimits") {
            let r = object(r, "rateLimits")?;
            let rate = |name: &str| -> Result<Option<u32>, ConfigError> {
                member(r, name)
                    .map(|v| {
                        let key = format!("rateLimits.{name}");
                        positive(v, &key).map(|n| n.min(u64::from(u32::MAX)) as u32)
                    })
                    .transpose()
            };
            if let Some(n) = rate("maxOutboundSyncUpdatesPerSecond")? {
                c.max_outbound_sync_rate = n;
            }
            if let Some(n) = rate("maxTotalLocalRequestsRate")? {
                c.max_total_local_rate = n;
            }
            if let Some(n) = rate("maxLocalRequestsPerSecondPerThing")? {
                c.max_per_thing_local_rate = n;
            }
        }
        if let Some(s) = member(map, "strategy") {
            let s = object(s, "strategy")?;
            let kind = member(s, "type")
                .and_then(Value::as_str)
                .unwrap_or("realTime");
            c.strategy = if kind.eq_ignore_ascii_case("realTime") {
                Strategy::RealTime
            } else if kind.eq_ignore_ascii_case("periodic") {
                let delay = member(s, "delay").ok_or_else(|| {
                    err("strategy.delay", "is required with the periodic strategy")
                })?;
                Strategy::Periodic {
                    delay_secs: positive(delay, "strategy.delay")?,
                }
            } else {
                return Err(err(
                    "strategy.type",
                    format!("{kind:?} is not realTime or periodic"),
                ));
            };
        }
        if let Some(s) = member(map, "synchronize") {
            c.synchronize = Some(parse_synchronize(s)?);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_the_reference_example() {
        assert_eq!(
            ShadowManagerConfig::parse(&json!({})).unwrap(),
            ShadowManagerConfig::default()
        );
        let c = ShadowManagerConfig::parse(&json!({
            "strategy": {"type": "periodic", "delay": 300},
            "synchronize": {
                "coreThing": {"classic": true, "namedShadows": ["MyCoreShadowA", "AWSManagedGreengrassV2Deployment"]},
                "shadowDocuments": [
                    {"thingName": "MyDevice1", "classic": false, "namedShadows": ["MyShadowA", "MyShadowB"]},
                    {"thingName": "MyDevice2", "classic": true, "namedShadows": []}
                ],
                "direction": "BETWEEN_DEVICE_AND_CLOUD"
            },
            "rateLimits": {"maxOutboundSyncUpdatesPerSecond": 50, "maxTotalLocalRequestsRate": "150",
                           "maxLocalRequestsPerSecondPerThing": 10},
            "shadowDocumentSizeLimitBytes": 30720
        }))
        .unwrap();
        assert_eq!(c.strategy, Strategy::Periodic { delay_secs: 300 });
        assert_eq!(c.document_size_limit, 30720);
        assert_eq!(
            (
                c.max_outbound_sync_rate,
                c.max_total_local_rate,
                c.max_per_thing_local_rate
            ),
            (50, 150, 10)
        );
        let sync = c.synchronize.unwrap();
        let addrs = sync.addresses("core1");
        let shown: Vec<String> = addrs.iter().map(|a| a.prefix()).collect();
        assert_eq!(
            shown,
            [
                "$aws/things/MyDevice1/shadow/name/MyShadowA",
                "$aws/things/MyDevice1/shadow/name/MyShadowB",
                "$aws/things/MyDevice2/shadow",
                "$aws/things/core1/shadow",
                "$aws/things/core1/shadow/name/MyCoreShadowA",
            ]
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = ShadowManagerConfig::parse(&json!({"shadowDocumentSizeLimitBytes": 30721}))
            .unwrap_err();
        assert_eq!(e.key, "shadowDocumentSizeLimitBytes");
        let e =
            ShadowManagerConfig::parse(&json!({"rateLimits": {"maxTotalLocalRequestsRate": 0}}))
                .unwrap_err();
        assert_eq!(e.key, "rateLimits.maxTotalLocalRequestsRate");
        let e = ShadowManagerConfig::parse(&json!({"strategy": {"type": "periodic"}})).unwrap_err();
        assert_eq!(e.key, "strategy.delay");
        let e = ShadowManagerConfig::parse(&json!({"synchronize": {"direction": "sideways"}}))
            .unwrap_err();
        assert_eq!(e.key, "synchronize.direction");
        let e = ShadowManagerConfig::parse(
            &json!({"synchronize": {"shadowDocuments": [{"thingName": "bad/name"}]}}),
        )
        .unwrap_err();
        assert_eq!(e.key, "synchronize.shadowDocuments[0].thingName");
    }
}
