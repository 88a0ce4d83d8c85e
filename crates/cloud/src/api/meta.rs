//! Routes about the API itself: health, the OpenAPI document, and the endpoints bundles name.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use lichen_cloud_store::Backend;
use serde_json::{Value, json};

use super::{AppState, Endpoints, Method, Route};

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Get,
            path: "/healthz",
            operation_id: "health",
            summary: "Whether the API answers (no token needed).",
            public: true,
            request: None,
            response: (200, Some("Health")),
            query: &[],
            handler: get(health),
        },
        Route {
            method: Method::Get,
            path: "/openapi.json",
            operation_id: "openApi",
            summary: "This document (no token needed).",
            public: true,
            request: None,
            response: (200, None),
            query: &[],
            handler: get(openapi::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/endpoints",
            operation_id: "getEndpoints",
            summary: "Where devices reach this cloud: the MQTT endpoint and the API, as \
                      provisioning bundles name them.",
            public: false,
            request: None,
            response: (200, Some("Endpoints")),
            query: &[],
            handler: get(endpoints::<S>),
        },
    ]
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn openapi<S: Backend>(State(state): State<AppState<S>>) -> Json<Value> {
    Json(state.openapi.get().cloned().unwrap_or(Value::Null))
}

async fn endpoints<S: Backend>(State(state): State<AppState<S>>) -> Json<Endpoints> {
    Json((*state.endpoints).clone())
}
