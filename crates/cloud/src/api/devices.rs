//! Devices: what the cloud last heard from each thing — online, last seen, and its last fleet
//! status message (overall health, components, last deployment result), as the endpoint
//! stored it from `$aws/things/<t>/greengrassv2/health/json`.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use lichen_cloud_store::{Backend, DeviceStatus, Presence};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::body::{ApiPath, ApiQuery};
use super::error::ApiResult;
use super::{AppState, Method, PAGING, PageQuery, Route, check, next_key};
use crate::validate;

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Get,
            path: "/v1/devices",
            operation_id: "listDevices",
            summary: "Things with their presence, last seen, health, component count and last \
                      deployment result, a page at a time.",
            public: false,
            request: None,
            response: (200, Some("DeviceList")),
            query: PAGING,
            handler: get(list::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/devices/{thing}",
            operation_id: "describeDevice",
            summary: "A thing's last fleet status: each component's state and version, the \
                      last deployment's result with its failure cause.",
            public: false,
            request: None,
            response: (200, Some("DeviceStatus")),
            query: &[],
            handler: get(describe::<S>),
        },
    ]
}

/// One row of `GET /v1/devices`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSummary {
    pub thing: String,
    pub online: bool,
    pub last_seen: Option<String>,
    /// HEALTHY or UNHEALTHY from the last status message; None before the first.
    pub overall: Option<String>,
    pub component_count: usize,
    pub last_deployment: Option<Value>,
}

#[derive(Debug, Serialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceSummary>,
    pub next: Option<String>,
}

/// `GET /v1/devices/{thing}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceDescription {
    #[serde(flatten)]
    pub summary: DeviceSummary,
    pub last_status_at: Option<String>,
    /// Status messages received.
    pub status_count: i64,
    /// `{componentName, version, state, statusDetails}` of the last complete message.
    pub components: Vec<Value>,
}

fn message_field<'a>(status: Option<&'a DeviceStatus>, key: &str) -> Option<&'a Value> {
    status
        .and_then(|s| s.message.as_ref())
        .and_then(|m| m.get(key))
}

/// The last deployment's result: status, detailed status, failure cause, configuration.
fn last_deployment(status: Option<&DeviceStatus>) -> Option<Value> {
    let d = message_field(status, "deploymentInformation")?;
    let details = d.get("statusDetails").cloned().unwrap_or(Value::Null);
    Some(json!({
        "status": d.get("status"),
        "detailedStatus": details.get("detailedStatus"),
        "failureCause": details.get("failureCause"),
        "configurationArn": d.get("fleetConfigurationArnForStatus"),
        "deploymentId": d.get("deploymentId"),
    }))
}

fn summary(
    thing: &str,
    status: Option<&DeviceStatus>,
    presence: Option<&Presence>,
) -> DeviceSummary {
    DeviceSummary {
        thing: thing.to_string(),
        online: presence.is_some_and(|p| p.online),
        last_seen: status
            .map(|s| s.last_seen.clone())
            .or_else(|| presence.map(|p| p.at.clone())),
        overall: message_field(status, "overallDeviceStatus")
            .and_then(Value::as_str)
            .map(str::to_string),
        component_count: message_field(status, "components")
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
        last_deployment: last_deployment(status),
    }
}

async fn list<S: Backend>(
    State(state): State<AppState<S>>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<DeviceList>> {
    let page = q.page()?;
    let things = state.store.list_things(&page).await?;
    let next = next_key(&things, &page, |t| &t.name);
    let mut devices = Vec::with_capacity(things.len());
    for t in &things {
        let status = state.store.get_device_status(&t.name).await?;
        let presence = state.store.get_presence(&t.name).await?;
        devices.push(summary(&t.name, status.as_ref(), presence.as_ref()));
    }
    Ok(Json(DeviceList { devices, next }))
}

async fn describe<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(thing): ApiPath<String>,
) -> ApiResult<Json<DeviceDescription>> {
    check(validate::name("thingName", &thing))?;
    state.store.get_thing(&thing).await?;
    let status = state.store.get_device_status(&thing).await?;
    let presence = state.store.get_presence(&thing).await?;
    let components = message_field(status.as_ref(), "components")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| {
                    let mut m = Map::new();
                    for k in [
                        "componentName",
                        "version",
                        "state",
                        "statusDetails",
                        "isRoot",
                    ] {
                        if let Some(v) = c.get(k) {
                            m.insert(k.into(), v.clone());
                        }
                    }
                    Value::Object(m)
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(DeviceDescription {
        summary: summary(&thing, status.as_ref(), presence.as_ref()),
        last_status_at: status.as_ref().and_then(|s| s.received_at.clone()),
        status_count: status.as_ref().map_or(0, |s| s.sequence),
        components,
    }))
}

/// The schemas the routes above name (merged into the OpenAPI document).
pub fn schemas() -> Vec<(&'static str, Value)> {
    let s = || json!({"type": ["string", "null"]});
    let summary = json!({
        "type": "object",
        "required": ["thing", "online", "componentCount"],
        "properties": {
            "thing": {"type": "string"}, "online": {"type": "boolean"}, "lastSeen": s(),
            "overall": {"enum": ["HEALTHY", "UNHEALTHY", null]},
            "componentCount": {"type": "integer"},
            "lastDeployment": {"type": ["object", "null"], "properties": {
                "status": s(), "detailedStatus": s(), "failureCause": s(),
                "configurationArn": s(), "deploymentId": s()}}
        }
    });
    vec![
        ("DeviceSummary", summary),
        (
            "DeviceList",
            json!({"type": "object", "required": ["devices"], "properties": {
                "devices": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceSummary"}},
                "next": s()}}),
        ),
        (
            "DeviceStatus",
            json!({"allOf": [{"$ref": "#/components/schemas/DeviceSummary"}, {"type": "object",
                "required": ["statusCount", "components"],
                "properties": {"lastStatusAt": s(), "statusCount": {"type": "integer"},
                    "components": {"type": "array", "items": {"type": "object", "properties": {
                        "componentName": {"type": "string"}, "version": {"type": "string"},
                        "state": {"type": "string"}, "statusDetails": {"type": "object"},
                        "isRoot": {"type": "boolean"}}}}}}]}),
        ),
    ]
}
