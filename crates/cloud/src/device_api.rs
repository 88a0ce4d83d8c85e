//! The device HTTPS API (`/device/v1/…`) on the API listener: what a core's fleet agent
//! fetches a deployment's recipes and artifacts from, authenticated by its thing certificate.
//!
//! - **Authentication.** The listener asks for an optional client certificate that must chain
//!   to the cloud CA (`crate::tls::server_config`); the accept loop puts it into every
//!   request as [`PeerCertificate`]. Every `/device/v1` request needs one that the store holds
//!   ACTIVE, DEVICE and attached to a thing — the MQTT gate's rule, read from the store at
//!   every request (`lichen_cloud_store::device_thing`), so a revoked certificate is refused
//!   at its next request. Admin tokens authenticate nothing here (and, the other way round,
//!   `crate::api`'s admin check refuses any request carrying a client certificate).
//! - **Authorization** ([`authorize`]). A thing may fetch `name@version` when that exact
//!   version is a component of the ACTIVE (not canceled) current deployment of a target it
//!   belongs to — `thing/<T>` or any group it is a member of. Because a deployment lists its
//!   root components only and the device resolves their dependencies itself, a version is
//!   also allowed when it is a dependency of an allowed version per the stored recipes:
//!   `ComponentDependencies.<name>.VersionRequirement` matches it, walked transitively over
//!   the stored versions that match each requirement, at most [`MAX_DEPENDENCY_WALK`]
//!   versions per decision (beyond that: refused, naming the bound).
//! - Refusals are JSON `{"error":{"code","message"}}`: 401 without a certificate or with one
//!   the store does not know or has revoked, 403 for a claim or unattached certificate and
//!   for a component the thing may not fetch (naming the thing and `name@version`).
//!
//! The routes themselves are the component store's ([`lichen_cloud_components::device_router`]),
//! nested here under [`PREFIX`], `POST /device/v1/resolve` ([`crate::device_resolve`]),
//! which answers a deployment's dependency closure, and `POST /device/v1/streams/{stream}/records`
//! ([`crate::device_streams`]), where stream exports land.

use std::collections::{BTreeSet, VecDeque};

use axum::Router;
use axum::extract::{RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use lichen_cloud_store::{Backend, CertificateRefusal, FleetDeployment, Page, StoreError};

use crate::api::AppState;
use crate::api::error::ApiError;

/// Where the device routes are nested.
pub const PREFIX: &str = "/device/v1";
/// Most component versions one authorization walks through dependencies.
pub const MAX_DEPENDENCY_WALK: usize = 500;

/// The verified client certificate of the connection a request came on (set by the accept
/// loop; absent when the client sent none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// Lowercase hex SHA-256 of the DER: the store's certificate id.
    pub fingerprint: String,
}

impl PeerCertificate {
    pub fn from_der(der: &[u8]) -> PeerCertificate {
        PeerCertificate {
            fingerprint: lichen_pki::fingerprint(der),
        }
    }
}

/// The thing a `/device/v1` request was authenticated as (a request extension for handlers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub thing: String,
    pub fingerprint: String,
}

/// Nests `routes` (the component store's device fragment, each route naming `{name}` and
/// `{version}`) under [`PREFIX`] behind the device-certificate check and the deployment
/// authorization, beside [`crate::device_resolve`]'s route, which authorizes the versions
/// its body names itself.
pub fn router<S: Backend + 'static>(state: AppState<S>, routes: Router) -> Router {
    let component_routes =
        routes.route_layer(from_fn_with_state(state.clone(), authorize_path::<S>));
    let resolve = Router::new()
        .route(
            crate::device_resolve::RESOLVE_PATH,
            axum::routing::post(crate::device_resolve::resolve::<S>),
        )
        .route(
            crate::device_streams::RECORDS_PATH,
            axum::routing::post(crate::device_streams::post_records::<S>),
        )
        .with_state(state.clone());
    Router::new().nest(
        PREFIX,
        component_routes
            .merge(resolve)
            .route_layer(from_fn_with_state(state, authenticate::<S>)),
    )
}

fn refusal(status: StatusCode, code: &'static str, message: String) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// Authenticates the device: the request's [`DeviceIdentity`] for what runs after.
async fn authenticate<S: Backend>(
    State(state): State<AppState<S>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(peer) = req.extensions().get::<PeerCertificate>().cloned() else {
        let why = if req
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            "admin tokens are not accepted on /device/v1: present the thing's certificate (mutual TLS)"
        } else {
            "no client certificate: /device/v1 needs the thing's certificate (mutual TLS)"
        };
        return refusal(
            StatusCode::UNAUTHORIZED,
            "ClientCertificateRequired",
            why.into(),
        );
    };
    let thing = match lichen_cloud_store::device_thing(&*state.store, &peer.fingerprint).await {
        Ok(t) => t,
        Err(e) => {
            let status = match &e {
                CertificateRefusal::NotRegistered(_) | CertificateRefusal::Revoked(_) => {
                    StatusCode::UNAUTHORIZED
                }
                CertificateRefusal::NotDevice(_) | CertificateRefusal::NotAttached(_) => {
                    StatusCode::FORBIDDEN
                }
                CertificateRefusal::Lookup(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            tracing::info!(fingerprint = %peer.fingerprint, reason = %e, "device API request refused");
            return refusal(status, e.code(), e.to_string());
        }
    };
    req.extensions_mut().insert(DeviceIdentity {
        thing,
        fingerprint: peer.fingerprint,
    });
    next.run(req).await
}

/// Authorizes the component version named by the path (after [`authenticate`]).
async fn authorize_path<S: Backend>(
    State(state): State<AppState<S>>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let Some(thing) = req
        .extensions()
        .get::<DeviceIdentity>()
        .map(|d| d.thing.clone())
    else {
        // Unreachable: the authentication layer runs first. Deny rather than trust.
        return refusal(
            StatusCode::UNAUTHORIZED,
            "ClientCertificateRequired",
            "the device was not authenticated".into(),
        );
    };
    let mut name = None;
    let mut version = None;
    for (k, v) in params.iter() {
        match k {
            "name" => name = Some(v.to_string()),
            "version" => version = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(name), Some(version)) = (name, version) else {
        return refusal(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no device route {}", req.uri().path()),
        );
    };
    match authorize(&*state.store, &thing, &name, &version).await {
        Ok(Grant::Allowed { deployment }) => {
            tracing::debug!(%thing, component = %format!("{name}@{version}"), %deployment, "device fetch allowed");
        }
        Ok(Grant::Denied(why)) => {
            tracing::info!(%thing, component = %format!("{name}@{version}"), reason = %why, "device fetch refused");
            return refusal(StatusCode::FORBIDDEN, "NotDeployed", why);
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    next.run(req).await
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Allowed by this deployment (directly or through a dependency).
    Allowed { deployment: String },
    /// Refused; the message names the thing, the component and why.
    Denied(String),
}

fn active(d: &FleetDeployment) -> bool {
    d.document["deploymentStatus"].as_str() == Some("ACTIVE")
}

/// Whether `thing` may fetch `name@version` (the rule in the module documentation).
pub async fn authorize<S: Backend>(
    store: &S,
    thing: &str,
    name: &str,
    version: &str,
) -> Result<Grant, StoreError> {
    let deployments: Vec<FleetDeployment> = store
        .deployments_for_thing(thing)
        .await?
        .into_iter()
        .filter(active)
        .collect();
    let denied = |why: &str| {
        Grant::Denied(format!(
            "thing {thing:?} may not fetch component {name}@{version}: {why}"
        ))
    };
    if deployments.is_empty() {
        return Ok(denied(
            "no active deployment targets the thing or any of its groups",
        ));
    }
    if let Some(d) = deployments
        .iter()
        .find(|d| d.components.get(name).map(String::as_str) == Some(version))
    {
        return Ok(Grant::Allowed {
            deployment: d.id.clone(),
        });
    }
    let Ok(wanted) = semver::Version::parse(version) else {
        return Ok(denied("it is not in the thing's active deployments"));
    };
    for d in &deployments {
        match dependency_allows(store, d, name, &wanted).await? {
            Walk::Found => {
                return Ok(Grant::Allowed {
                    deployment: d.id.clone(),
                });
            }
            Walk::NotFound => {}
            Walk::TooLarge => {
                return Ok(denied(&format!(
                    "deployment {} has more than {MAX_DEPENDENCY_WALK} component versions to walk for dependencies",
                    d.id
                )));
            }
        }
    }
    let listed: Vec<String> = deployments
        .iter()
        .map(|d| {
            format!(
                "{} ({})",
                d.id,
                d.document["targetArn"].as_str().unwrap_or("")
            )
        })
        .collect();
    Ok(denied(&format!(
        "it is neither a component nor a dependency of the thing's active deployments {}",
        listed.join(", ")
    )))
}

enum Walk {
    Found,
    NotFound,
    TooLarge,
}

/// Walks the stored recipes from the deployment's components through their dependencies,
/// looking for `name` with a requirement `wanted` satisfies.
async fn dependency_allows<S: Backend>(
    store: &S,
    deployment: &FleetDeployment,
    name: &str,
    wanted: &semver::Version,
) -> Result<Walk, StoreError> {
    let mut queue: VecDeque<(String, String)> = deployment
        .components
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut seen: BTreeSet<(String, String)> = queue.iter().cloned().collect();
    while let Some((n, v)) = queue.pop_front() {
        let component = match store.get_component_version(&n, &v).await {
            Ok(c) => c,
            // A version deleted since (or never published) has no dependencies to allow.
            Err(StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let what = format!("stored recipe of {n}@{v}");
        let recipe = match lichen_recipe::recipe_from_value(component.recipe, &what) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(component = %format!("{n}@{v}"), error = %e, "stored recipe does not parse; its dependencies allow nothing");
                continue;
            }
        };
        for (dep, requirement) in &recipe.dependencies {
            if dep == name && requirement.requirement.matches(wanted) {
                return Ok(Walk::Found);
            }
            // Every stored version of the dependency the requirement accepts may be what the
            // device resolved; its own dependencies are allowed too.
            let versions = store
                .list_component_versions(Some(dep), &Page::first(lichen_cloud_store::MAX_PAGE))
                .await?;
            for c in versions {
                let Ok(parsed) = semver::Version::parse(&c.version) else {
                    continue;
                };
                if !requirement.requirement.matches(&parsed) {
                    continue;
                }
                let key = (c.name, c.version);
                if seen.insert(key.clone()) {
                    if seen.len() > MAX_DEPENDENCY_WALK {
                        return Ok(Walk::TooLarge);
                    }
                    queue.push_back(key);
                }
            }
        }
    }
    Ok(Walk::NotFound)
}
