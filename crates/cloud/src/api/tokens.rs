//! Admin tokens: create (the secret is shown once), list, delete. The last one cannot be
//! deleted, so the API cannot lock its administrators out.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use lichen_cloud_store::{AdminToken, Backend};
use serde::{Deserialize, Serialize};

use super::body::{ApiJson, ApiPath};
use super::error::{ApiError, ApiResult};
use super::{AppState, Method, Route, check, now};
use crate::tokens::{MAX_ADMIN_TOKENS, hash, new_id, new_secret};
use crate::validate;

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Post,
            path: "/v1/admin-tokens",
            operation_id: "createAdminToken",
            summary: "Create an admin token. Its secret is in this answer only.",
            public: false,
            request: Some("CreateAdminToken"),
            response: (201, Some("NewAdminToken")),
            query: &[],
            handler: post(create::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/admin-tokens",
            operation_id: "listAdminTokens",
            summary: "List admin tokens (ids and descriptions; never secrets).",
            public: false,
            request: None,
            response: (200, Some("AdminTokenList")),
            query: &[],
            handler: get(list::<S>),
        },
        Route {
            method: Method::Delete,
            path: "/v1/admin-tokens/{id}",
            operation_id: "deleteAdminToken",
            summary: "Delete an admin token; requests with it are refused from then on.",
            public: false,
            request: None,
            response: (204, None),
            query: &[],
            handler: delete(remove::<S>),
        },
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateAdminToken {
    #[serde(default)]
    pub description: String,
}

/// An admin token as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminTokenInfo {
    pub id: String,
    pub description: String,
    pub created_at: String,
}

impl From<&AdminToken> for AdminTokenInfo {
    fn from(t: &AdminToken) -> AdminTokenInfo {
        AdminTokenInfo {
            id: t.id.clone(),
            description: t.description.clone(),
            created_at: t.created_at.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAdminToken {
    #[serde(flatten)]
    pub info: AdminTokenInfo,
    /// The secret: shown here once, stored only as its sha256.
    pub token: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminTokenList {
    pub tokens: Vec<AdminTokenInfo>,
}

/// A new token record (not stored) and its secret.
pub fn new_token(description: &str) -> (AdminToken, String) {
    let secret = new_secret();
    let token = AdminToken {
        id: new_id(),
        token_hash: hash(&secret),
        description: description.to_string(),
        created_at: now(),
    };
    (token, secret)
}

/// Creates and stores a token; returns the record and the secret.
pub async fn create_token<S: Backend>(
    store: &S,
    description: &str,
) -> ApiResult<(AdminToken, String)> {
    let (token, secret) = new_token(description);
    store.put_admin_token(&token).await?;
    Ok((token, secret))
}

async fn create<S: Backend>(
    State(state): State<AppState<S>>,
    ApiJson(req): ApiJson<CreateAdminToken>,
) -> ApiResult<(StatusCode, Json<NewAdminToken>)> {
    check(validate::description("description", &req.description))?;
    let existing = state.store.list_admin_tokens().await?;
    if existing.len() >= MAX_ADMIN_TOKENS {
        return Err(ApiError::conflict(format!(
            "the cloud keeps at most {MAX_ADMIN_TOKENS} admin tokens; delete one first"
        )));
    }
    let (token, secret) = create_token(&*state.store, &req.description).await?;
    tracing::info!(id = %token.id, "admin token created");
    Ok((
        StatusCode::CREATED,
        Json(NewAdminToken {
            info: AdminTokenInfo::from(&token),
            token: secret,
        }),
    ))
}

async fn list<S: Backend>(State(state): State<AppState<S>>) -> ApiResult<Json<AdminTokenList>> {
    let tokens = state.store.list_admin_tokens().await?;
    Ok(Json(AdminTokenList {
        tokens: tokens.iter().map(AdminTokenInfo::from).collect(),
    }))
}

async fn remove<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let tokens = state.store.list_admin_tokens().await?;
    if !tokens.iter().any(|t| t.id == id) {
        return Err(ApiError::not_found("admin token", &id));
    }
    if tokens.len() == 1 {
        return Err(ApiError::conflict(format!(
            "admin token {id:?} is the last one; create another before deleting it"
        )));
    }
    state.store.delete_admin_token(&id).await?;
    tracing::info!(%id, "admin token deleted");
    Ok(StatusCode::NO_CONTENT)
}
