//! A Lambda component's configuration keys, as Greengrass's Lambda import writes them
//! (`ComponentConfiguration.DefaultConfiguration`, merged with the deployment's updates).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Greengrass's defaults (reference §2.1).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_MAX_INSTANCES: usize = 100;
pub const DEFAULT_MAX_QUEUE: usize = 1000;
pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(60);
pub const DEFAULT_STATUS_TIMEOUT: Duration = Duration::from_secs(60);
/// lichen's own ceilings, so a configuration cannot make the core hold unbounded work.
pub const MAX_INSTANCES_CEILING: usize = 1000;
pub const MAX_QUEUE_CEILING: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The event is the payload parsed as JSON (`application/json` to the runtime client).
    Json,
    /// The event is the payload's bytes (`application/octet-stream`).
    Binary,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSource {
    PubSub,
    IotCore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource {
    pub topic: String,
    pub source: TopicSource,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunctionConfig {
    pub pinned: bool,
    pub timeout: Duration,
    pub max_instances: usize,
    pub max_queue: usize,
    pub max_idle: Duration,
    pub status_timeout: Duration,
    pub encoding: Encoding,
    pub environment: BTreeMap<String, String>,
    /// `containerMode: GreengrassContainer` was asked for; lichen runs NoContainer.
    pub container_requested: bool,
    pub event_sources: Vec<EventSource>,
}

impl Default for FunctionConfig {
    fn default() -> Self {
        FunctionConfig {
            pinned: true,
            timeout: DEFAULT_TIMEOUT,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_queue: DEFAULT_MAX_QUEUE,
            max_idle: DEFAULT_MAX_IDLE,
            status_timeout: DEFAULT_STATUS_TIMEOUT,
            encoding: Encoding::Json,
            environment: BTreeMap::new(),
            container_requested: false,
            event_sources: Vec::new(),
        }
    }
}

/// A configuration key of `component` that does not fit.
#[derive(Debug, thiserror::Error)]
#[error("configuration of {component}: {key}: {message}")]
pub struct ConfigError {
    pub component: String,
    pub key: String,
    pub message: String,
}

/// What `containerMode: GreengrassContainer` would isolate and lichen does not.
pub const CONTAINER_WARNING: &str = "containerMode GreengrassContainer is not supported: the function runs as NoContainer, so its filesystem, /proc, /sys, devices, volumes and memorySize limit are not isolated from the host";

impl FunctionConfig {
    /// Reads the keys from the component's configuration (`Value::Null`: all defaults).
    pub fn from_config(component: &str, config: &Value) -> Result<FunctionConfig, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            component: component.to_string(),
            key: key.to_string(),
            message,
        };
        let mut cfg = FunctionConfig::default();
        let Some(map) = config.as_object() else {
            return Ok(cfg);
        };
        // Numbers show as floats (`3.0`) in Greengrass configuration; strings are accepted too.
        let number = |key: &str, min: f64, max: f64| -> Result<Option<f64>, ConfigError> {
            let Some(v) = map.get(key) else {
                return Ok(None);
            };
            let n = match v {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .ok_or_else(|| err(key, format!("expected a number, got {v}")))?;
            if !(min..=max).contains(&n) {
                return Err(err(key, format!("{n} is outside {min}..={max}")));
            }
            Ok(Some(n))
        };
        if let Some(v) = map.get("pinned") {
            cfg.pinned = match v {
                Value::Bool(b) => *b,
                Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                _ => return Err(err("pinned", format!("expected true or false, got {v}"))),
            };
        }
        if let Some(n) = number("timeoutInSeconds", 1.0, 86_400.0)? {
            cfg.timeout = Duration::from_secs_f64(n);
        }
        if let Some(n) = number("maxInstancesCount", 1.0, MAX_INSTANCES_CEILING as f64)? {
            cfg.max_instances = n as usize;
        }
        if let Some(n) = number("maxQueueSize", 1.0, MAX_QUEUE_CEILING as f64)? {
            cfg.max_queue = n as usize;
        }
        if let Some(n) = number("maxIdleTimeInSeconds", 1.0, 86_400.0)? {
            cfg.max_idle = Duration::from_secs_f64(n);
        }
        if let Some(n) = number("statusTimeoutInSeconds", 1.0, 86_400.0)? {
            cfg.status_timeout = Duration::from_secs_f64(n);
        }
        if let Some(v) = map.get("inputPayloadEncodingType") {
            cfg.encoding = match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("json") => Encoding::Json,
                Some("binary") => Encoding::Binary,
                _ => {
                    return Err(err(
                        "inputPayloadEncodingType",
                        format!("expected json or binary, got {v}"),
                    ));
                }
            };
        }
        if let Some(vars) = map
            .get("lambdaExecutionParameters")
            .and_then(|p| p.get("EnvironmentVariables"))
        {
            let Some(vars) = vars.as_object() else {
                return Err(err(
                    "lambdaExecutionParameters.EnvironmentVariables",
                    "expected a map".into(),
                ));
            };
            for (k, v) in vars {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => v.to_string(),
                    _ => {
                        return Err(err(
                            &format!("lambdaExecutionParameters.EnvironmentVariables.{k}"),
                            "expected a string".into(),
                        ));
                    }
                };
                cfg.environment.insert(k.clone(), text);
            }
        }
        if let Some(mode) = map.get("containerMode") {
            match mode.as_str() {
                Some("NoContainer") => {}
                Some("GreengrassContainer") => cfg.container_requested = true,
                _ => {
                    return Err(err(
                        "containerMode",
                        format!("expected NoContainer or GreengrassContainer, got {mode}"),
                    ));
                }
            }
        }
        if let Some(topics) = map.get("pubsubTopics") {
            // A map keyed "0", "1", … (a list is accepted too).
            let entries: Vec<(String, &Value)> = match topics {
                Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v))
                    .collect(),
                _ => return Err(err("pubsubTopics", "expected a map".into())),
            };
            for (key, entry) in entries {
                let at = format!("pubsubTopics.{key}");
                let topic = entry
                    .get("topic")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| err(&at, "missing topic".into()))?;
                let source = match entry.get("type").and_then(Value::as_str) {
                    None | Some("PUB_SUB") => TopicSource::PubSub,
                    Some("IOT_CORE") => TopicSource::IotCore,
                    Some(other) => {
                        return Err(err(
                            &format!("{at}.type"),
                            format!("expected PUB_SUB or IOT_CORE, got {other}"),
                        ));
                    }
                };
                cfg.event_sources.push(EventSource {
                    topic: topic.to_string(),
                    source,
                });
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greengrass_import_shape() {
        let cfg = FunctionConfig::from_config(
            "f",
            &serde_json::json!({
                "pinned": false, "timeoutInSeconds": 3.0, "maxInstancesCount": "4",
                "maxQueueSize": 10, "maxIdleTimeInSeconds": 30, "inputPayloadEncodingType": "binary",
                "lambdaExecutionParameters": {"EnvironmentVariables": {"A": "1", "B": 2}},
                "containerMode": "GreengrassContainer",
                "pubsubTopics": {"0": {"topic": "a/+", "type": "PUB_SUB"}, "1": {"topic": "b/#", "type": "IOT_CORE"}}
            }),
        )
        .unwrap();
        assert!(!cfg.pinned);
        assert_eq!(cfg.max_instances, 4);
        assert_eq!(cfg.max_queue, 10);
        assert_eq!(cfg.encoding, Encoding::Binary);
        assert_eq!(cfg.environment["B"], "2");
        assert!(cfg.container_requested);
        assert_eq!(cfg.event_sources[1].source, TopicSource::IotCore);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = FunctionConfig::from_config("com.F", &serde_json::json!({"maxQueueSize": 0}))
            .unwrap_err();
        assert_eq!(e.key, "maxQueueSize");
        assert!(e.to_string().contains("com.F"), "{e}");
        let e = FunctionConfig::from_config(
            "com.F",
            &serde_json::json!({"pubsubTopics": {"0": {"type": "PUB_SUB"}}}),
        )
        .unwrap_err();
        assert_eq!(e.key, "pubsubTopics.0");
    }
}
