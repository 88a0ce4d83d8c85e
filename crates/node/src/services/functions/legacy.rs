//! What v1-style functions (`greengrasssdk`) need from the core: the runtime modules the SDK
//! imports (`greengrass_common`, `greengrass_ipc_python_sdk`, written by lichen, put on each
//! instance's `PYTHONPATH`), and what their calls to the Lambda IPC HTTP API
//! (`lichen_lambda::legacy`, on `GG_DAEMON_PORT`) do:
//!
//! - `iot-data` `publish` (an `Event` invoke of `ROUTER_FUNCTION_ARN`, the topic as
//!   `subject`) is routed by `aws.greengrass.LegacySubscriptionRouter`'s `subscriptions`
//!   (`{id: {id, source, subject, target}}`): `source` is the caller's function ARN (as
//!   given, or unqualified) or `component:<name>`; `subject` an MQTT filter; `target`
//!   `cloud` (IoT Core, QoS 1 through the cloud link's spool), `component:<name>` (the local
//!   bus, where the component's SubscribeToTopic receives it; the payload as published, binary)
//!   or a Lambda ARN (that function is invoked with the topic as subject). No matching
//!   subscription → HTTP 400 with the text Greengrass gives;
//! - a function ARN: Lambda-to-Lambda invoke of a function this core runs;
//! - shadow and secret manager ARNs: "not supported" (Greengrass v2 does not serve them to
//!   v1 functions either: reference §2.3).

use std::path::{Path, PathBuf};
use std::sync::Weak;

use lichen_bus::{Message as BusMessage, Payload};
use lichen_core::CoreHandle;
use lichen_lambda::legacy::{
    InvocationType, LegacyFuture, LegacyHost, LegacyRefusal, LegacyReply, LegacyRequest,
    ROUTER_FUNCTION_ARN, SECRETS_MANAGER_FUNCTION_ARN, SHADOW_FUNCTION_ARN,
};
use lichen_lambda::{InvokeError, Pool};
use serde_json::Value;

use super::Functions;

/// The component whose configuration routes v1 publishes.
pub const SUBSCRIPTION_ROUTER: &str = "aws.greengrass.LegacySubscriptionRouter";
/// `GGC_MAX_INTERFACE_VERSION` given to instances (greengrasssdk 1.6.1's INTERFACE_VERSION).
pub const INTERFACE_VERSION: &str = "1.5";

/// The runtime modules, embedded in the binary and written at service start.
const RUNTIME_FILES: &[(&str, &str)] = &[
    (
        "greengrass_common/__init__.py",
        include_str!("python/greengrass_common/__init__.py"),
    ),
    (
        "greengrass_common/env_vars.py",
        include_str!("python/greengrass_common/env_vars.py"),
    ),
    (
        "greengrass_common/function_arn_fields.py",
        include_str!("python/greengrass_common/function_arn_fields.py"),
    ),
    (
        "greengrass_ipc_python_sdk/__init__.py",
        include_str!("python/greengrass_ipc_python_sdk/__init__.py"),
    ),
    (
        "greengrass_ipc_python_sdk/ipc_client.py",
        include_str!("python/greengrass_ipc_python_sdk/ipc_client.py"),
    ),
];

/// Writes the runtime modules under `<root>/lambda-runtime/python` (world-readable: instances
/// run as their component's user) and returns that directory, for `PYTHONPATH`.
pub fn write_runtime(root: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("lambda-runtime").join("python");
    for (rel, text) in RUNTIME_FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
        }
        if std::fs::read(&path).ok().as_deref() == Some(text.as_bytes()) {
            continue;
        }
        lichen_sys::atomic::write_atomic(&path, text.as_bytes(), 0o644)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    std::fs::set_permissions(
        root.join("lambda-runtime"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    Ok(dir)
}

/// The text Greengrass answers a publish no subscription routes (seen in a device's log).
pub fn no_subscription_message(source: &str, subject: &str) -> String {
    format!(
        "No subscription exists for the source {source} and subject {subject}. Deploy and configure \
         aws.greengrass.LegacySubscriptionRouter component to support publishing from Lambdas."
    )
}

fn unqualified(arn: &str) -> &str {
    // arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
    let mut colons = arn.match_indices(':').map(|(i, _)| i);
    match colons.nth(6) {
        Some(i) => &arn[..i],
        None => arn,
    }
}

/// Whether a subscription's `source` names the caller.
fn source_matches(source: &str, component: &str, function_arn: &str) -> bool {
    source == function_arn
        || source.strip_prefix("component:") == Some(component)
        || (source.starts_with("arn:")
            && unqualified(source) == source
            && unqualified(function_arn) == source)
}

/// The `target`s of the router's subscriptions for this source and topic.
pub fn route_targets(
    subscriptions: &Value,
    component: &str,
    function_arn: &str,
    topic: &str,
) -> Vec<String> {
    let Some(map) = subscriptions.as_object() else {
        return Vec::new();
    };
    let mut targets: Vec<String> = Vec::new();
    for entry in map.values() {
        let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default();
        let (source, subject, target) = (field("source"), field("subject"), field("target"));
        if target.is_empty() || !source_matches(source, component, function_arn) {
            continue;
        }
        if lichen_mqtt_client::topic::validate_topic_filter(subject).is_err()
            || !lichen_mqtt_client::topic::topic_matches(subject, topic)
        {
            continue;
        }
        if !targets.iter().any(|t| t == target) {
            targets.push(target.to_string());
        }
    }
    targets
}

/// The node's side of the Lambda IPC API.
pub struct LegacyRouter {
    pub(super) core: CoreHandle,
    pub(super) functions: Weak<Functions>,
}

impl LegacyHost for LegacyRouter {
    fn invoke(&self, request: LegacyRequest) -> LegacyFuture<'_> {
        Box::pin(async move {
            let target = request.target_arn.clone();
            if target == ROUTER_FUNCTION_ARN {
                return self.publish(request).await;
            }
            if target == SHADOW_FUNCTION_ARN || target == SECRETS_MANAGER_FUNCTION_ARN {
                return Err(LegacyRefusal::new(
                    400,
                    format!(
                        "{target} is not supported by lichen (as on Greengrass v2): use the IPC \
                         operations (shadows, GetSecretValue) from the function instead"
                    ),
                ));
            }
            self.invoke_function(request).await
        })
    }
}

impl LegacyRouter {
    fn pool_for(&self, arn: &str) -> Option<Pool> {
        self.functions.upgrade()?.pool_by_arn(arn)
    }

    async fn publish(&self, request: LegacyRequest) -> Result<LegacyReply, LegacyRefusal> {
        let caller = &request.caller;
        let Some(topic) = request.custom("subject").map(str::to_string) else {
            return Err(LegacyRefusal::new(
                400,
                "publish: the client context names no subject (topic)",
            ));
        };
        if lichen_mqtt_client::topic::validate_topic_name(&topic).is_err() {
            return Err(LegacyRefusal::new(
                400,
                format!("publish: {topic:?} is not a valid topic"),
            ));
        }
        let subscriptions = self
            .core
            .get_configuration(SUBSCRIPTION_ROUTER, &["subscriptions".to_string()])
            .unwrap_or(Value::Null);
        let targets = route_targets(
            &subscriptions,
            &caller.component,
            &caller.function_arn,
            &topic,
        );
        if targets.is_empty() {
            return Err(LegacyRefusal::new(
                400,
                no_subscription_message(&caller.function_arn, &topic),
            ));
        }
        let mut failures = Vec::new();
        let mut on_bus = false;
        for target in &targets {
            let result = if target == "cloud" {
                self.to_cloud(&topic, &request.payload).await
            } else if target.starts_with("component:") {
                if on_bus {
                    continue;
                }
                on_bus = true;
                self.to_bus(&caller.component, &topic, &request.payload)
            } else {
                self.to_function(target, &topic, &request.payload)
            };
            if let Err(e) = result {
                tracing::warn!(component = %caller.component, topic = %topic, target = %target, error = %e, "a v1 publish was not delivered");
                failures.push(format!("{target}: {e}"));
            }
        }
        if failures.len() == targets.len() {
            return Err(LegacyRefusal::new(500, failures.join("; ")));
        }
        Ok(LegacyReply::Accepted)
    }

    async fn to_cloud(&self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let link = self
            .functions
            .upgrade()
            .and_then(|f| f.cloud.as_ref().and_then(|c| c.link()))
            .ok_or("the core has no cloud connection configured")?;
        let message = lichen_mqtt_client::Message::new(
            topic,
            payload.to_vec(),
            lichen_mqtt_client::QoS::AtLeastOnce,
        );
        link.publish_spooled(message)
            .await
            .map_err(|e| e.to_string())
    }

    fn to_bus(&self, component: &str, topic: &str, payload: &[u8]) -> Result<(), String> {
        self.core
            .bus()
            .publish(BusMessage::new(
                topic,
                Payload::Binary(payload.to_vec().into()),
                format!("component:{component}"),
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn to_function(&self, arn: &str, topic: &str, payload: &[u8]) -> Result<(), String> {
        let pool = self
            .pool_for(arn)
            .ok_or_else(|| format!("no function {arn} runs on this core"))?;
        super::invoke_event(&pool, topic.to_string(), payload.to_vec());
        Ok(())
    }

    async fn invoke_function(&self, request: LegacyRequest) -> Result<LegacyReply, LegacyRefusal> {
        let target = &request.target_arn;
        let Some(pool) = self.pool_for(target) else {
            return Err(LegacyRefusal::new(
                404,
                format!("Function not found: {target} (no such function runs on this core)"),
            ));
        };
        let topic = request.custom("subject").map(str::to_string);
        if request.invocation_type == InvocationType::Event {
            let topic = topic.unwrap_or_default();
            super::invoke_event(&pool, topic, request.payload);
            return Ok(LegacyReply::Accepted);
        }
        match pool.invoke(request.payload, topic).await {
            Ok(result) => Ok(LegacyReply::Result {
                function_error: result.is_error().then_some("Handled"),
                payload: result.body(),
            }),
            Err(e @ InvokeError::QueueFull { .. }) => Err(LegacyRefusal::new(429, e.to_string())),
            Err(e @ InvokeError::NotJson { .. }) => Err(LegacyRefusal::new(400, e.to_string())),
            Err(e) => Ok(LegacyReply::Result {
                payload: serde_json::json!({"errorMessage": e.to_string()})
                    .to_string()
                    .into_bytes(),
                function_error: Some("Unhandled"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:pub:3";

    #[test]
    fn routes_by_source_and_subject_filter() {
        let subs = json!({
            "a": {"id": "a", "source": ARN, "subject": "sensors/+/temp", "target": "component:com.example.Sub"},
            "b": {"id": "b", "source": "component:com.example.Pub", "subject": "sensors/#", "target": "cloud"},
            "c": {"id": "c", "source": "arn:aws:lambda:us-east-1:123456789012:function:pub", "subject": "x", "target": "cloud"},
            "d": {"id": "d", "source": "arn:aws:lambda:us-east-1:123456789012:function:other:1", "subject": "#", "target": "cloud"},
            "e": {"id": "e", "source": ARN, "subject": "bad/#/filter", "target": "cloud"}
        });
        let t = |topic| route_targets(&subs, "com.example.Pub", ARN, topic);
        assert_eq!(
            t("sensors/1/temp"),
            vec!["component:com.example.Sub", "cloud"]
        );
        assert_eq!(t("sensors/1/hum"), vec!["cloud"]);
        // An unqualified source matches every version of the function.
        assert_eq!(t("x"), vec!["cloud"]);
        assert!(t("other").is_empty());
        assert!(route_targets(&Value::Null, "c", ARN, "x").is_empty());
    }

    #[test]
    fn the_refusal_text_is_greengrass_s() {
        assert_eq!(
            no_subscription_message(ARN, "a/b"),
            "No subscription exists for the source arn:aws:lambda:us-east-1:123456789012:function:pub:3 \
             and subject a/b. Deploy and configure aws.greengrass.LegacySubscriptionRouter component \
             to support publishing from Lambdas."
        );
    }

    #[test]
    fn the_runtime_modules_are_written_readable() {
        let dir = tempfile::tempdir().unwrap();
        let py = write_runtime(dir.path()).unwrap();
        let text = std::fs::read_to_string(py.join("greengrass_ipc_python_sdk/ipc_client.py"));
        assert!(text.unwrap().contains("class IPCClient"));
        // Idempotent.
        write_runtime(dir.path()).unwrap();
    }
}
