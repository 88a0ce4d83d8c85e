//! Things: create (with attributes and groups), list, describe (groups, connectivity,
//! presence, certificates), attributes, connectivity, delete.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, patch, post, put};
use lichen_cloud_store::{
    Attributes, Backend, CertificateFilter, CertificateStatus, Connectivity, ConnectivityEndpoint,
    NewThing, Page, Presence, Thing,
};
use serde::{Deserialize, Serialize};

use super::body::{ApiJson, ApiPath, ApiQuery};
use super::certificates::CertificateSummary;
use super::error::{ApiError, ApiResult};
use super::{AppState, Method, PAGING, PageQuery, Route, check, next_key, now};
use crate::validate;

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Post,
            path: "/v1/things",
            operation_id: "createThing",
            summary: "Register a thing, with attributes and the groups it joins.",
            public: false,
            request: Some("CreateThing"),
            response: (201, Some("Thing")),
            query: &[],
            handler: post(create::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/things",
            operation_id: "listThings",
            summary: "List things by name, a page at a time.",
            public: false,
            request: None,
            response: (200, Some("ThingList")),
            query: PAGING,
            handler: get(list::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/things/{name}",
            operation_id: "describeThing",
            summary: "A thing with its groups, connectivity, presence and certificates.",
            public: false,
            request: None,
            response: (200, Some("ThingDescription")),
            query: &[],
            handler: get(describe::<S>),
        },
        Route {
            method: Method::Delete,
            path: "/v1/things/{name}",
            operation_id: "deleteThing",
            summary: "Delete a thing: its memberships and connectivity go, its certificates \
                      are revoked.",
            public: false,
            request: None,
            response: (204, None),
            query: &[],
            handler: delete(remove::<S>),
        },
        Route {
            method: Method::Patch,
            path: "/v1/things/{name}/attributes",
            operation_id: "updateThingAttributes",
            summary: "Merge attributes into a thing: a string sets a key, null removes it.",
            public: false,
            request: Some("UpdateAttributes"),
            response: (200, Some("Thing")),
            query: &[],
            handler: patch(update_attributes::<S>),
        },
        Route {
            method: Method::Delete,
            path: "/v1/things/{name}/attributes/{key}",
            operation_id: "deleteThingAttribute",
            summary: "Remove one attribute of a thing.",
            public: false,
            request: None,
            response: (200, Some("Thing")),
            query: &[],
            handler: delete(delete_attribute::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/things/{name}/connectivity",
            operation_id: "getConnectivityInfo",
            summary: "The addresses a core's client devices reach its broker at.",
            public: false,
            request: None,
            response: (200, Some("Connectivity")),
            query: &[],
            handler: get(get_connectivity::<S>),
        },
        Route {
            method: Method::Put,
            path: "/v1/things/{name}/connectivity",
            operation_id: "updateConnectivityInfo",
            summary: "Replace a core's connectivity information.",
            public: false,
            request: Some("UpdateConnectivity"),
            response: (200, Some("Connectivity")),
            query: &[],
            handler: put(put_connectivity::<S>),
        },
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateThing {
    pub name: String,
    #[serde(default)]
    pub attributes: Attributes,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingList {
    pub things: Vec<Thing>,
    pub next: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingDescription {
    #[serde(flatten)]
    pub thing: Thing,
    pub groups: Vec<String>,
    pub connectivity: Option<Connectivity>,
    pub presence: Option<Presence>,
    pub online: bool,
    pub certificates: Vec<CertificateSummary>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateAttributes {
    /// A value sets the key; null removes it.
    pub attributes: BTreeMap<String, Option<String>>,
    /// When given, the update is refused (409) if the thing changed since this version.
    #[serde(default)]
    pub expected_version: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateConnectivity {
    pub endpoints: Vec<ConnectivityEndpoint>,
}

fn thing_name(name: &str) -> ApiResult<()> {
    check(validate::name("thingName", name))
}

async fn create<S: Backend>(
    State(state): State<AppState<S>>,
    ApiJson(req): ApiJson<CreateThing>,
) -> ApiResult<(StatusCode, Json<Thing>)> {
    thing_name(&req.name)?;
    check(validate::attributes(&req.attributes))?;
    if req.groups.len() > validate::MAX_GROUPS_AT_CREATE {
        return Err(ApiError::invalid(
            "groups",
            format!(
                "at most {} groups at creation (got {})",
                validate::MAX_GROUPS_AT_CREATE,
                req.groups.len()
            ),
        ));
    }
    for g in &req.groups {
        check(validate::name("groups[]", g))?;
    }
    // One transaction: a missing group (named in the 404) or a failed write creates nothing.
    let thing = state
        .store
        .create_thing_in_groups(
            &NewThing {
                name: req.name.clone(),
                attributes: req.attributes,
            },
            &req.groups,
        )
        .await?;
    tracing::info!(thing = %thing.name, "thing created");
    Ok((StatusCode::CREATED, Json(thing)))
}

async fn list<S: Backend>(
    State(state): State<AppState<S>>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<ThingList>> {
    let page = q.page()?;
    let things = state.store.list_things(&page).await?;
    let next = next_key(&things, &page, |t| &t.name);
    Ok(Json(ThingList { things, next }))
}

pub async fn describe_thing<S: Backend>(
    state: &AppState<S>,
    name: &str,
) -> ApiResult<ThingDescription> {
    let thing = state.store.get_thing(name).await?;
    let groups = state.store.groups_of(name).await?;
    let connectivity = state.store.get_connectivity(name).await?;
    let presence = state.store.get_presence(name).await?;
    let certificates = state
        .store
        .list_certificates(
            &CertificateFilter {
                thing: Some(name.to_string()),
                ..Default::default()
            },
            &Page::first(lichen_cloud_store::MAX_PAGE),
        )
        .await?
        .iter()
        .map(CertificateSummary::from)
        .collect();
    Ok(ThingDescription {
        thing,
        groups,
        connectivity,
        online: presence.as_ref().is_some_and(|p| p.online),
        presence,
        certificates,
    })
}

async fn describe<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ThingDescription>> {
    thing_name(&name)?;
    describe_thing(&state, &name).await.map(Json)
}

async fn remove<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    thing_name(&name)?;
    // The store revokes the thing's certificates; the endpoint must drop their connections.
    let active = state
        .store
        .list_certificates(
            &CertificateFilter {
                thing: Some(name.clone()),
                status: Some(CertificateStatus::Active),
                kind: None,
            },
            &Page::first(lichen_cloud_store::MAX_PAGE),
        )
        .await?;
    state.store.delete_thing(&name).await?;
    if let Some(endpoint) = &state.endpoint {
        for c in &active {
            endpoint.certificate_revoked(&c.fingerprint).await;
        }
        // Its associations went with it: no connected core keeps reaching its shadows (a
        // thing of that name created later is another device).
        endpoint.client_devices_changed(&name).await;
    }
    tracing::info!(thing = %name, revoked = active.len(), "thing deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn update_attributes<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateAttributes>,
) -> ApiResult<Json<Thing>> {
    thing_name(&name)?;
    for (k, v) in &req.attributes {
        check(validate::attribute_name(k))?;
        if let Some(v) = v {
            check(validate::attribute_value(k, v))?;
        }
    }
    let thing = state.store.get_thing(&name).await?;
    if let Some(expected) = req.expected_version
        && expected != thing.version
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "VersionConflict",
            format!(
                "thing {name:?} is at version {}, not expectedVersion {expected}",
                thing.version
            ),
        ));
    }
    let mut attributes = thing.attributes.clone();
    for (k, v) in req.attributes {
        match v {
            Some(v) => attributes.insert(k, v),
            None => attributes.remove(&k),
        };
    }
    check(validate::attributes(&attributes))?;
    // The version read above guards the write: a concurrent change makes this a 409.
    let updated = state
        .store
        .set_thing_attributes(&name, &attributes, Some(thing.version))
        .await?;
    Ok(Json(updated))
}

async fn delete_attribute<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath((name, key)): ApiPath<(String, String)>,
) -> ApiResult<Json<Thing>> {
    thing_name(&name)?;
    check(validate::attribute_name(&key))?;
    let thing = state.store.get_thing(&name).await?;
    let mut attributes = thing.attributes.clone();
    if attributes.remove(&key).is_none() {
        return Err(ApiError::not_found("attribute", &format!("{name}/{key}")));
    }
    let updated = state
        .store
        .set_thing_attributes(&name, &attributes, Some(thing.version))
        .await?;
    Ok(Json(updated))
}

async fn get_connectivity<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Connectivity>> {
    thing_name(&name)?;
    state.store.get_thing(&name).await?;
    match state.store.get_connectivity(&name).await? {
        Some(c) => Ok(Json(c)),
        None => Err(ApiError::not_found("connectivity of thing", &name)),
    }
}

async fn put_connectivity<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateConnectivity>,
) -> ApiResult<Json<Connectivity>> {
    thing_name(&name)?;
    if req.endpoints.len() > validate::MAX_CONNECTIVITY_ENDPOINTS {
        return Err(ApiError::invalid(
            "endpoints",
            format!(
                "at most {} (got {})",
                validate::MAX_CONNECTIVITY_ENDPOINTS,
                req.endpoints.len()
            ),
        ));
    }
    for (i, e) in req.endpoints.iter().enumerate() {
        check(validate::host_address(&e.host_address).map_err(|m| format!("endpoints[{i}].{m}")))?;
        if e.port == 0 {
            return Err(ApiError::invalid(
                &format!("endpoints[{i}].port"),
                "must be 1 to 65535",
            ));
        }
        check(validate::description(
            &format!("endpoints[{i}].metadata"),
            &e.metadata,
        ))?;
    }
    state.store.get_thing(&name).await?;
    let info = Connectivity {
        thing: name,
        endpoints: req.endpoints,
        reported_at: now(),
    };
    state.store.put_connectivity(&info).await?;
    Ok(Json(info))
}
