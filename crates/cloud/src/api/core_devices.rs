//! Client devices associated with core devices, in Greengrass's shapes
//! (BatchAssociateClientDeviceWithCoreDevice, BatchDisassociateClientDeviceFromCoreDevice,
//! ListClientDevicesAssociatedWithCoreDevice). An association lets the core use the device's
//! shadow topics at the device endpoint (its ShadowManager's `shadowDocuments` sync); the
//! endpoint re-reads the core's list after each change.

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use lichen_cloud_store::{AssociationError, Backend, ClientDeviceAssociation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::{ApiJson, ApiPath, ApiQuery};
use super::error::{ApiError, ApiResult};
use super::{AppState, Method, QueryParam, Route, check};
use crate::validate;

const LIST_QUERY: &[QueryParam] = &[
    QueryParam {
        name: "maxResults",
        description: "At most this many results (1 to 1000; default 1000).",
        kind: "integer",
    },
    QueryParam {
        name: "nextToken",
        description: "Continue after this: the `nextToken` of the previous page.",
        kind: "string",
    },
];

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Post,
            path: "/greengrass/v2/coreDevices/{core}/associateClientDevices",
            operation_id: "batchAssociateClientDeviceWithCoreDevice",
            summary: "Associate client devices (things) with a core device, up to 100 per \
                      call; the core may then use their shadow topics. Devices that cannot \
                      be associated are returned in `errorEntries`.",
            public: false,
            request: Some("ClientDeviceEntries"),
            response: (200, Some("ClientDeviceErrorEntries")),
            query: &[],
            handler: post(associate::<S>),
        },
        Route {
            method: Method::Post,
            path: "/greengrass/v2/coreDevices/{core}/disassociateClientDevices",
            operation_id: "batchDisassociateClientDeviceFromCoreDevice",
            summary: "Disassociate client devices from a core device, up to 100 per call \
                      (one not associated is no error).",
            public: false,
            request: Some("ClientDeviceEntries"),
            response: (200, Some("ClientDeviceErrorEntries")),
            query: &[],
            handler: post(disassociate::<S>),
        },
        Route {
            method: Method::Get,
            path: "/greengrass/v2/coreDevices/{core}/associatedClientDevices",
            operation_id: "listClientDevicesAssociatedWithCoreDevice",
            summary: "The client devices associated with a core device, by name, a page at \
                      a time.",
            public: false,
            request: None,
            response: (200, Some("AssociatedClientDeviceList")),
            query: LIST_QUERY,
            handler: get(list::<S>),
        },
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Entry {
    pub thing_name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Entries {
    #[serde(default)]
    pub entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEntries {
    pub error_entries: Vec<AssociationError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociatedList {
    pub associated_client_devices: Vec<ClientDeviceAssociation>,
    pub next_token: Option<String>,
}

/// The core's name and the entries' thing names, checked; Greengrass's bound per call.
fn checked(core: &str, entries: Entries) -> ApiResult<Vec<String>> {
    check(validate::name("coreDeviceThingName", core))?;
    if entries.entries.len() > lichen_cloud_store::MAX_ASSOCIATION_BATCH {
        return Err(ApiError::invalid(
            "entries",
            format!(
                "at most {} per call (got {})",
                lichen_cloud_store::MAX_ASSOCIATION_BATCH,
                entries.entries.len()
            ),
        ));
    }
    let mut names = Vec::with_capacity(entries.entries.len());
    for e in entries.entries {
        check(validate::name("thingName", &e.thing_name))?;
        names.push(e.thing_name);
    }
    Ok(names)
}

async fn changed<S>(state: &AppState<S>, core: &str) {
    if let Some(endpoint) = &state.endpoint {
        endpoint.client_devices_changed(core).await;
    }
}

async fn associate<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(core): ApiPath<String>,
    ApiJson(req): ApiJson<Entries>,
) -> ApiResult<Json<ErrorEntries>> {
    let devices = checked(&core, req)?;
    let error_entries = state
        .store
        .associate_client_devices(&core, &devices, &super::now())
        .await?;
    changed(&state, &core).await;
    Ok(Json(ErrorEntries { error_entries }))
}

async fn disassociate<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(core): ApiPath<String>,
    ApiJson(req): ApiJson<Entries>,
) -> ApiResult<Json<ErrorEntries>> {
    let devices = checked(&core, req)?;
    let error_entries = state
        .store
        .disassociate_client_devices(&core, &devices)
        .await?;
    changed(&state, &core).await;
    Ok(Json(ErrorEntries { error_entries }))
}

async fn list<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(core): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<AssociatedList>> {
    check(validate::name("coreDeviceThingName", &core))?;
    let page = super::PageQuery {
        limit: q.max_results,
        after: q.next_token,
    }
    .page()?;
    let associated_client_devices = state.store.list_client_devices(&core, &page).await?;
    let next_token = super::next_key(&associated_client_devices, &page, |a| &a.thing_name);
    Ok(Json(AssociatedList {
        associated_client_devices,
        next_token,
    }))
}

/// The schemas the routes above name (merged into the OpenAPI document).
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "ClientDeviceEntries",
            json!({"type": "object", "additionalProperties": false, "properties": {
                "entries": {"type": "array", "maxItems": 100, "items": {"type": "object",
                    "additionalProperties": false, "required": ["thingName"],
                    "properties": {"thingName": {"type": "string"}}}}}}),
        ),
        (
            "ClientDeviceErrorEntries",
            json!({"type": "object", "required": ["errorEntries"], "properties": {
                "errorEntries": {"type": "array", "items": {"type": "object",
                    "required": ["thingName", "code", "message"], "properties": {
                        "thingName": {"type": "string"},
                        "code": {"type": "string", "enum": ["ResourceNotFoundException",
                            "ValidationException", "ServiceQuotaExceededException"]},
                        "message": {"type": "string"}}}}}}),
        ),
        (
            "AssociatedClientDeviceList",
            json!({"type": "object", "required": ["associatedClientDevices"], "properties": {
                "associatedClientDevices": {"type": "array", "items": {"type": "object",
                    "required": ["thingName", "associationTimestamp"], "properties": {
                        "thingName": {"type": "string"},
                        "associationTimestamp": {"type": "string", "format": "date-time"}}}},
                "nextToken": {"type": ["string", "null"]}}}),
        ),
    ]
}
