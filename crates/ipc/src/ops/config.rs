//! Configuration operations: Get/UpdateConfiguration, SubscribeToConfigurationUpdate and
//! configuration validation (SubscribeToValidateConfigurationUpdates,
//! SendConfigurationValidityReport). None needs an authorization policy.

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{Caller, EventSink, Reply, Shared, parse};
use crate::error::OpError;
use crate::hooks::ValidityReport;

fn to_core_err(component: &str, key_path: &[String], e: lichen_core::CoreError) -> OpError {
    match e {
        lichen_core::CoreError::InvalidArgument(m) => {
            OpError::not_found("KeyPath", &format!("{component}/{}", key_path.join("/")), m)
        }
        other => other.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetRequest {
    component_name: Option<String>,
    #[serde(default)]
    key_path: Vec<String>,
}

pub(super) fn get(shared: &Shared, caller: &Caller, payload: &[u8]) -> Result<Reply, OpError> {
    let req: GetRequest = parse("GetConfiguration", payload)?;
    let component = req
        .component_name
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| caller.component.clone());
    let value = shared
        .core
        .get_configuration(&component, &req.key_path)
        .map_err(|e| to_core_err(&component, &req.key_path, e))?;
    // Like the Java nucleus: a leaf comes back as {"<last key>": value}.
    let value = match (value, req.key_path.last()) {
        (v @ Value::Object(_), _) => v,
        (v, Some(last)) => json!({ last: v }),
        (v, None) => v,
    };
    Ok(Reply::Unary(
        json!({"componentName": component, "value": value}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateRequest {
    #[serde(default)]
    key_path: Vec<String>,
    timestamp: Option<f64>,
    value_to_merge: Option<Value>,
}

/// Seconds (float, ms precision) since the epoch → milliseconds, as Greengrass does.
pub(crate) fn timestamp_ms(seconds: Option<f64>) -> Result<u64, OpError> {
    match seconds {
        None => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()),
        Some(s) if (0.0..1.0e13).contains(&s) => Ok((s * 1000.0).round() as u64),
        Some(s) => Err(OpError::invalid(format!(
            "timestamp {s} is not a valid epoch time in seconds"
        ))),
    }
}

pub(super) fn update(shared: &Shared, caller: &Caller, payload: &[u8]) -> Result<Reply, OpError> {
    let req: UpdateRequest = parse("UpdateConfiguration", payload)?;
    let value = req
        .value_to_merge
        .ok_or_else(|| OpError::invalid("valueToMerge is required"))?;
    // A component must not grant itself permissions.
    let touches_acl = match req.key_path.first() {
        Some(first) => first == "accessControl",
        None => value.get("accessControl").is_some(),
    };
    if touches_acl {
        return Err(OpError::invalid(
            "Config update is not allowed for following fields [accessControl]",
        ));
    }
    if req.key_path.is_empty() && !value.is_object() {
        return Err(OpError::invalid(
            "valueToMerge must be an object when keyPath is empty",
        ));
    }
    let ts = timestamp_ms(req.timestamp)?;
    shared
        .core
        .update_configuration(&caller.component, &req.key_path, ts, value)?;
    Ok(Reply::empty())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeRequest {
    component_name: Option<String>,
    #[serde(default)]
    key_path: Vec<String>,
}

fn related(a: &[String], b: &[String]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

pub(super) fn subscribe(
    shared: &Shared,
    caller: &Caller,
    payload: &[u8],
) -> Result<Reply, OpError> {
    let req: SubscribeRequest = parse("SubscribeToConfigurationUpdate", payload)?;
    let component = req
        .component_name
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| caller.component.clone());
    // Subscribe before reading so that no change falls between the two.
    let mut rx = shared.core.subscribe_configuration();
    let last = match shared.core.get_configuration(&component, &req.key_path) {
        Ok(v) => Some(v),
        Err(lichen_core::CoreError::ComponentNotFound(name)) => {
            return Err(OpError::not_found(
                "Component",
                &name,
                format!("component {name} not found"),
            ));
        }
        Err(_) => None,
    };
    let core = shared.core.clone();
    let key_path = req.key_path;
    let run = move |sink: EventSink| -> super::BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut last = last;
            loop {
                let changed_path = match rx.recv().await {
                    Ok(change) if change.component != component => continue,
                    Ok(change) if !change.key_path.is_empty() => {
                        if !related(&change.key_path, &key_path) {
                            continue;
                        }
                        last = core.get_configuration(&component, &key_path).ok();
                        change.key_path
                    }
                    // A whole-tree change (deployment) or missed notifications: compare.
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let now = core.get_configuration(&component, &key_path).ok();
                        if now == last {
                            continue;
                        }
                        last = now;
                        key_path.clone()
                    }
                    Err(RecvError::Closed) => return,
                };
                let event = json!({"configurationUpdateEvent": {
                    "componentName": component, "keyPath": changed_path}});
                if !sink.send_json(&event).await {
                    return;
                }
            }
        })
    };
    Ok(Reply::Stream {
        initial: json!({}),
        run: Box::new(run),
    })
}

pub(super) fn subscribe_validate(shared: &Shared, caller: &Caller) -> Result<Reply, OpError> {
    let registration = shared.hooks.register_validator(&caller.component);
    Ok(Reply::Stream {
        initial: json!({}),
        run: Box::new(move |sink| Box::pin(registration.forward(sink))),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportRequest {
    configuration_validity_report: Option<ReportBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportBody {
    status: Option<String>,
    deployment_id: Option<String>,
    message: Option<String>,
}

pub(super) fn validity_report(
    shared: &Shared,
    caller: &Caller,
    payload: &[u8],
) -> Result<Reply, OpError> {
    let req: ReportRequest = parse("SendConfigurationValidityReport", payload)?;
    let body = req
        .configuration_validity_report
        .ok_or_else(|| OpError::invalid("configurationValidityReport is required"))?;
    let deployment_id = body
        .deployment_id
        .filter(|d| !d.is_empty())
        .ok_or_else(|| OpError::invalid("configurationValidityReport.deploymentId is required"))?;
    let report = match body.status.as_deref() {
        Some("ACCEPTED") => ValidityReport::Accepted,
        Some("REJECTED") => ValidityReport::Rejected(body.message.unwrap_or_default()),
        other => {
            return Err(OpError::invalid(format!(
                "configurationValidityReport.status must be ACCEPTED or REJECTED, not {other:?}"
            )));
        }
    };
    shared
        .hooks
        .report_validity(&caller.component, &deployment_id, report)?;
    Ok(Reply::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_seconds() {
        assert_eq!(
            timestamp_ms(Some(1_700_000_000.123)).unwrap(),
            1_700_000_000_123
        );
        assert!(timestamp_ms(Some(-1.0)).is_err());
        assert!(timestamp_ms(Some(f64::NAN)).is_err());
        assert!(timestamp_ms(None).unwrap() > 1_600_000_000_000);
    }

    #[test]
    fn relation_is_prefix_either_way() {
        let p = |s: &str| -> Vec<String> {
            s.split('/')
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        };
        assert!(related(&p("a/b"), &p("a")));
        assert!(related(&p("a"), &p("a/b")));
        assert!(related(&p(""), &p("a/b")));
        assert!(!related(&p("a/c"), &p("a/b")));
    }
}
