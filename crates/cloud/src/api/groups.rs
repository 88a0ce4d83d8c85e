//! Thing groups and their members.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use lichen_cloud_store::{Backend, NewThingGroup, ThingGroup};
use serde::{Deserialize, Serialize};

use super::body::{ApiJson, ApiPath, ApiQuery};
use super::error::ApiResult;
use super::{AppState, Method, PAGING, PageQuery, Route, check, next_key};
use crate::validate;

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Post,
            path: "/v1/thing-groups",
            operation_id: "createThingGroup",
            summary: "Create a thing group.",
            public: false,
            request: Some("CreateThingGroup"),
            response: (201, Some("ThingGroup")),
            query: &[],
            handler: post(create::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/thing-groups",
            operation_id: "listThingGroups",
            summary: "List thing groups by name, a page at a time.",
            public: false,
            request: None,
            response: (200, Some("ThingGroupList")),
            query: PAGING,
            handler: get(list::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/thing-groups/{name}",
            operation_id: "describeThingGroup",
            summary: "A thing group.",
            public: false,
            request: None,
            response: (200, Some("ThingGroup")),
            query: &[],
            handler: get(describe::<S>),
        },
        Route {
            method: Method::Delete,
            path: "/v1/thing-groups/{name}",
            operation_id: "deleteThingGroup",
            summary: "Delete a thing group (its members stay, without it).",
            public: false,
            request: None,
            response: (204, None),
            query: &[],
            handler: delete(remove::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/thing-groups/{name}/members",
            operation_id: "listThingsInThingGroup",
            summary: "The things in a group, by name, a page at a time.",
            public: false,
            request: None,
            response: (200, Some("MemberList")),
            query: PAGING,
            handler: get(members::<S>),
        },
        Route {
            method: Method::Put,
            path: "/v1/thing-groups/{name}/members/{thing}",
            operation_id: "addThingToThingGroup",
            summary: "Add a thing to a group (adding it twice is not an error).",
            public: false,
            request: None,
            response: (204, None),
            query: &[],
            handler: put(add::<S>),
        },
        Route {
            method: Method::Delete,
            path: "/v1/thing-groups/{name}/members/{thing}",
            operation_id: "removeThingFromThingGroup",
            summary: "Remove a thing from a group.",
            public: false,
            request: None,
            response: (204, None),
            query: &[],
            handler: delete(remove_member::<S>),
        },
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateThingGroup {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingGroupList {
    pub groups: Vec<ThingGroup>,
    pub next: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberList {
    pub things: Vec<String>,
    pub next: Option<String>,
}

fn group_name(name: &str) -> ApiResult<()> {
    check(validate::name("groupName", name))
}

async fn create<S: Backend>(
    State(state): State<AppState<S>>,
    ApiJson(req): ApiJson<CreateThingGroup>,
) -> ApiResult<(StatusCode, Json<ThingGroup>)> {
    group_name(&req.name)?;
    if let Some(d) = &req.description {
        check(validate::description("description", d))?;
    }
    let group = state
        .store
        .create_group(&NewThingGroup {
            name: req.name,
            description: req.description,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(group)))
}

async fn list<S: Backend>(
    State(state): State<AppState<S>>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<ThingGroupList>> {
    let page = q.page()?;
    let groups = state.store.list_groups(&page).await?;
    let next = next_key(&groups, &page, |g| &g.name);
    Ok(Json(ThingGroupList { groups, next }))
}

async fn describe<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ThingGroup>> {
    group_name(&name)?;
    Ok(Json(state.store.get_group(&name).await?))
}

async fn remove<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    group_name(&name)?;
    state.store.delete_group(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn members<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<MemberList>> {
    group_name(&name)?;
    let page = q.page()?;
    state.store.get_group(&name).await?;
    let things = state.store.group_members(&name, &page).await?;
    let next = next_key(&things, &page, |t| t.as_str());
    Ok(Json(MemberList { things, next }))
}

async fn add<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath((name, thing)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    group_name(&name)?;
    check(validate::name("thingName", &thing))?;
    state.store.add_to_group(&name, &thing).await?;
    // A new member gets the group's current deployment.
    super::deployments::catch_up(&state, &name, &thing).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_member<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath((name, thing)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    group_name(&name)?;
    check(validate::name("thingName", &thing))?;
    state.store.remove_from_group(&name, &thing).await?;
    super::deployments::leave(&state, &name, &thing).await?;
    Ok(StatusCode::NO_CONTENT)
}
