//! `POST /device/v1/resolve`: the versions of a deployment's whole dependency closure, chosen
//! in the cloud from the stored recipes, as Greengrass's `ResolveComponentCandidates` does for
//! its nucleus. A core's fleet agent sends the root components of the deployment it is about
//! to run (exact versions, as the deployment document lists them) and gets back every
//! component version the closure needs; it then fetches the recipes and artifacts of those
//! its own store does not have (`lichen-node` `services/fleet/fetch.rs`).
//!
//! Why in the cloud and not on the device: the cloud holds every published version, so one
//! request answers the whole closure with the same resolver the core's planner uses
//! (`lichen_recipe::resolve_versions`: highest version satisfying every requirement, with
//! backtracking), instead of the device listing the versions of each dependency in turn.
//! The core still plans from what it then has (fetched recipes plus its store), so the
//! cloud's answer never overrides a local decision (built-ins, a higher local version).
//!
//! - **Authorization.** Authenticated by the device layer of [`crate::device_api`]; every
//!   root must be a version the thing may fetch ([`crate::device_api::authorize`]). The
//!   answer holds only the roots and versions their stored recipes' requirements accept, all
//!   of which the fetch routes then allow through the dependency rule.
//! - **Dependencies the cloud does not hold** (no stored version at all: the core's built-in
//!   components such as `aws.greengrass.Nucleus`, or components installed locally) are left
//!   out of the resolution and answered as `external`, for the device to resolve itself.
//! - **Platform.** The device names its platform (Greengrass's `platform.attributes`: os,
//!   architecture, its `platformOverride`); a dependency version none of whose manifests
//!   accepts it is no candidate, so the highest version the device can run is chosen. Roots
//!   are exact and stay as named: a root with no manifest for the platform fails on the
//!   device, naming the component and the platform.
//! - **Bounds.** At most [`MAX_RESOLVE_ROOTS`] roots per request, [`MAX_PLATFORM_ATTRIBUTES`]
//!   platform attributes of at most [`MAX_PLATFORM_TEXT`] bytes each, at most
//!   [`MAX_RESOLVE_RECIPES`] stored recipes read per request (422 naming the bound beyond),
//!   at most `lichen_cloud_store::MAX_PAGE` versions per component name, and the resolver's
//!   own bounds (`MAX_COMPONENTS_PER_DEPLOYMENT` = 500 components, 100,000 steps).
//! - **Answers.** 200 `{"resolvedComponentVersions": [{componentName, componentVersion}],
//!   "external": [{componentName, versionRequirement, requiredBy}]}`; 400/422 naming the
//!   field; 403 `NotDeployed` for a root the thing may not fetch; 409 `NoResolution` with the
//!   resolver's message (a conflict names every requirement and who has it).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use lichen_cloud_store::{Backend, Page};
use lichen_recipe::{Platform, Recipe, RootRequirement, VersionRange};
use serde::{Deserialize, Serialize};

use crate::api::AppState;
use crate::api::body::ApiJson;
use crate::api::error::ApiError;
use crate::device_api::{DeviceIdentity, Grant, authorize};

/// The route, under [`crate::device_api::PREFIX`].
pub const RESOLVE_PATH: &str = "/resolve";
/// Most root components one request may name (a deployment's own bound).
pub const MAX_RESOLVE_ROOTS: usize = 500;
/// Most stored recipes one resolution reads.
pub const MAX_RESOLVE_RECIPES: usize = 2000;
/// Most platform attributes a request may name.
pub const MAX_PLATFORM_ATTRIBUTES: usize = 32;
/// Longest platform attribute name or value.
pub const MAX_PLATFORM_TEXT: usize = 128;
/// Who the roots' requirements are attributed to in conflict messages.
const ROOT_ORIGIN: &str = "the deployment";

/// The request: the deployment's root components, name → exact version.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveRequest {
    pub components: BTreeMap<String, String>,
    /// The device's platform; without it every version is a candidate.
    #[serde(default)]
    pub platform: Option<ResolvePlatform>,
}

/// Greengrass's `ComponentPlatform`: a name (informational) and the attributes manifests match.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolvePlatform {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One chosen component version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedVersion {
    pub component_name: String,
    pub component_version: String,
}

/// A dependency the cloud holds no version of, left to the device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDependency {
    pub component_name: String,
    pub version_requirement: String,
    /// `name@version` of the chosen component that requires it.
    pub required_by: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolveResponse {
    pub resolved_component_versions: Vec<ResolvedVersion>,
    pub external: Vec<ExternalDependency>,
}

/// The handler (mounted by [`crate::device_api::router`]).
pub async fn resolve<S: Backend>(
    State(state): State<AppState<S>>,
    Extension(device): Extension<DeviceIdentity>,
    ApiJson(request): ApiJson<ResolveRequest>,
) -> Result<Json<ResolveResponse>, ApiError> {
    let roots = check_roots(&request)?;
    for (name, version) in &request.components {
        match authorize(&*state.store, &device.thing, name, version).await? {
            Grant::Allowed { .. } => {}
            Grant::Denied(why) => {
                tracing::info!(thing = %device.thing, component = %format!("{name}@{version}"), reason = %why, "resolve refused");
                return Err(ApiError::new(StatusCode::FORBIDDEN, "NotDeployed", why));
            }
        }
    }
    let platform = check_platform(&request)?;
    let catalog = load_catalog(&*state.store, request.components.keys()).await?;
    let answer = resolve_in(&catalog, &roots, platform.as_ref())?;
    tracing::debug!(thing = %device.thing, components = answer.resolved_component_versions.len(), external = answer.external.len(), "dependencies resolved");
    Ok(Json(answer))
}

fn check_platform(request: &ResolveRequest) -> Result<Option<Platform>, ApiError> {
    let Some(p) = &request.platform else {
        return Ok(None);
    };
    if p.attributes.len() > MAX_PLATFORM_ATTRIBUTES {
        return Err(ApiError::invalid(
            "platform.attributes",
            format!(
                "{} attributes; at most {MAX_PLATFORM_ATTRIBUTES}",
                p.attributes.len()
            ),
        ));
    }
    let mut platform = Platform::default();
    for (k, v) in &p.attributes {
        if k.is_empty() || k.len() > MAX_PLATFORM_TEXT || v.len() > MAX_PLATFORM_TEXT {
            return Err(ApiError::invalid(
                &format!("platform.attributes.{k}"),
                format!("names and values are 1 to {MAX_PLATFORM_TEXT} bytes"),
            ));
        }
        platform = platform.with(k.clone(), v.clone());
    }
    Ok(Some(platform))
}

fn check_roots(request: &ResolveRequest) -> Result<Vec<RootRequirement>, ApiError> {
    if request.components.is_empty() {
        return Err(ApiError::invalid(
            "components",
            "name at least one root component",
        ));
    }
    if request.components.len() > MAX_RESOLVE_ROOTS {
        return Err(ApiError::invalid(
            "components",
            format!(
                "{} components; at most {MAX_RESOLVE_ROOTS}",
                request.components.len()
            ),
        ));
    }
    request
        .components
        .iter()
        .map(|(name, version)| {
            let field = format!("components.{name}");
            let parsed = semver::Version::parse(version)
                .map_err(|e| ApiError::invalid(&field, format!("{version:?}: {e}")))?;
            Ok(RootRequirement {
                name: name.clone(),
                requirement: VersionRange::exact(&parsed),
                origin: ROOT_ORIGIN.to_string(),
            })
        })
        .collect()
}

/// Every stored version (parsed) of every component name reachable from `roots` through the
/// dependencies of any stored version. Names the cloud holds no version of map to nothing.
pub async fn load_catalog<'a, S: Backend>(
    store: &S,
    roots: impl Iterator<Item = &'a String>,
) -> Result<BTreeMap<String, Vec<Recipe>>, ApiError> {
    let mut queue: VecDeque<String> = roots.cloned().collect();
    let mut seen: BTreeSet<String> = queue.iter().cloned().collect();
    let mut catalog: BTreeMap<String, Vec<Recipe>> = BTreeMap::new();
    let mut read = 0usize;
    while let Some(name) = queue.pop_front() {
        let versions = store
            .list_component_versions(Some(&name), &Page::first(lichen_cloud_store::MAX_PAGE))
            .await?;
        read += versions.len();
        if read > MAX_RESOLVE_RECIPES {
            return Err(ApiError::invalid(
                "components",
                format!(
                    "the dependency closure reaches more than {MAX_RESOLVE_RECIPES} stored component versions"
                ),
            ));
        }
        let mut parsed = Vec::with_capacity(versions.len());
        for c in versions {
            let what = format!("stored recipe of {}@{}", c.name, c.version);
            match lichen_recipe::recipe_from_value(c.recipe, &what) {
                Ok(r) => parsed.push(r),
                Err(e) => {
                    tracing::warn!(component = %format!("{}@{}", c.name, c.version), error = %e, "stored recipe does not parse; not a candidate");
                }
            }
        }
        for dep in parsed.iter().flat_map(|r| r.dependencies.keys()) {
            if seen.insert(dep.clone()) {
                queue.push_back(dep.clone());
            }
        }
        catalog.insert(name, parsed);
    }
    Ok(catalog)
}

/// Resolves `roots` over `catalog` (pure): dependencies on names with no version in the
/// catalog are taken out and answered as external.
pub fn resolve_in(
    catalog: &BTreeMap<String, Vec<Recipe>>,
    roots: &[RootRequirement],
    platform: Option<&Platform>,
) -> Result<ResolveResponse, ApiError> {
    let held = |name: &str| catalog.get(name).is_some_and(|v| !v.is_empty());
    let is_root = |name: &str| roots.iter().any(|r| r.name == name);
    // A dependency version the device cannot run is no candidate; roots stay as named.
    let runs_here = |name: &str, r: &Recipe| {
        is_root(name) || platform.is_none_or(|p| r.manifest_for(p).is_some())
    };
    let candidates = |name: &str| -> Vec<Recipe> {
        catalog
            .get(name)
            .into_iter()
            .flatten()
            .filter(|r| runs_here(name, r))
            .cloned()
            .map(|mut r| {
                r.dependencies.retain(|d, _| held(d));
                r
            })
            .collect()
    };
    let chosen = lichen_recipe::resolve_versions(roots, &candidates).map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            "NoResolution",
            format!("resolving the deployment's dependencies: {e}"),
        )
    })?;
    let mut external = Vec::new();
    let mut resolved = Vec::with_capacity(chosen.len());
    for (name, recipe) in &chosen {
        resolved.push(ResolvedVersion {
            component_name: name.clone(),
            component_version: recipe.version.to_string(),
        });
        // The chosen recipe as stored, with the dependencies the resolution left out.
        let full = catalog
            .get(name)
            .into_iter()
            .flatten()
            .find(|r| r.version == recipe.version);
        for (dep, d) in full.into_iter().flat_map(|r| r.dependencies.iter()) {
            if !held(dep) {
                external.push(ExternalDependency {
                    component_name: dep.clone(),
                    version_requirement: d.requirement.as_str().to_string(),
                    required_by: format!("{name}@{}", recipe.version),
                });
            }
        }
    }
    Ok(ResolveResponse {
        resolved_component_versions: resolved,
        external,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(name: &str, version: &str, deps: &[(&str, &str)]) -> Recipe {
        recipe_for(name, version, deps, "linux")
    }

    fn recipe_for(name: &str, version: &str, deps: &[(&str, &str)], os: &str) -> Recipe {
        let deps: serde_json::Map<String, serde_json::Value> = deps
            .iter()
            .map(|(n, r)| (n.to_string(), serde_json::json!({"VersionRequirement": r})))
            .collect();
        lichen_recipe::recipe_from_value(
            serde_json::json!({
                "RecipeFormatVersion": "2020-01-25",
                "ComponentName": name,
                "ComponentVersion": version,
                "ComponentDependencies": deps,
                "Manifests": [{"Platform": {"os": os}, "Lifecycle": {"Run": "true"}}]
            }),
            "test",
        )
        .unwrap()
    }

    fn root(name: &str, version: &str) -> RootRequirement {
        RootRequirement {
            name: name.into(),
            requirement: VersionRange::exact(&semver::Version::parse(version).unwrap()),
            origin: ROOT_ORIGIN.into(),
        }
    }

    fn catalog(recipes: Vec<Recipe>) -> BTreeMap<String, Vec<Recipe>> {
        let mut out: BTreeMap<String, Vec<Recipe>> = BTreeMap::new();
        for r in recipes {
            out.entry(r.name.clone()).or_default().push(r);
        }
        out
    }

    fn versions(answer: &ResolveResponse) -> Vec<String> {
        answer
            .resolved_component_versions
            .iter()
            .map(|r| format!("{}@{}", r.component_name, r.component_version))
            .collect()
    }

    #[test]
    fn the_closure_takes_the_highest_version_every_requirement_accepts() {
        let mut cat = catalog(vec![
            recipe(
                "App",
                "1.0.0",
                &[("Lib", "^1.0.0"), ("aws.greengrass.Nucleus", ">=2.0.0")],
            ),
            recipe("Lib", "1.0.0", &[]),
            recipe("Lib", "1.4.0", &[("Util", "<2.0.0")]),
            recipe("Lib", "2.0.0", &[]),
            recipe("Util", "1.9.0", &[]),
            recipe("Util", "2.1.0", &[]),
        ]);
        cat.insert("aws.greengrass.Nucleus".into(), Vec::new());
        let answer = resolve_in(&cat, &[root("App", "1.0.0")], None).unwrap();
        assert_eq!(
            versions(&answer),
            vec!["App@1.0.0", "Lib@1.4.0", "Util@1.9.0"]
        );
        assert_eq!(
            answer.external,
            vec![ExternalDependency {
                component_name: "aws.greengrass.Nucleus".into(),
                version_requirement: ">=2.0.0".into(),
                required_by: "App@1.0.0".into(),
            }]
        );
    }

    #[test]
    fn a_dependency_version_the_platform_cannot_run_is_no_candidate() {
        let cat = catalog(vec![
            recipe("App", "1.0.0", &[("Lib", "^1.0.0")]),
            recipe("Lib", "1.0.0", &[]),
            recipe_for("Lib", "1.5.0", &[], "windows"),
        ]);
        let linux = Platform::default()
            .with("os", "linux")
            .with("architecture", "amd64");
        let answer = resolve_in(&cat, &[root("App", "1.0.0")], Some(&linux)).unwrap();
        assert_eq!(versions(&answer), vec!["App@1.0.0", "Lib@1.0.0"]);
        // Without a platform, the highest version.
        let answer = resolve_in(&cat, &[root("App", "1.0.0")], None).unwrap();
        assert_eq!(versions(&answer), vec!["App@1.0.0", "Lib@1.5.0"]);
        // A root is kept as named, so the device can say which component does not fit it.
        let cat = catalog(vec![recipe_for("Win", "1.0.0", &[], "windows")]);
        let answer = resolve_in(&cat, &[root("Win", "1.0.0")], Some(&linux)).unwrap();
        assert_eq!(versions(&answer), vec!["Win@1.0.0"]);
        // Too many or too long attributes are refused naming the field.
        let request = |attributes: BTreeMap<String, String>| ResolveRequest {
            components: BTreeMap::new(),
            platform: Some(ResolvePlatform {
                name: None,
                attributes,
            }),
        };
        let many = (0..=MAX_PLATFORM_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(check_platform(&request(many)).is_err());
        let long = [("os".to_string(), "x".repeat(MAX_PLATFORM_TEXT + 1))].into();
        let err = check_platform(&request(long)).unwrap_err();
        assert!(err.body().error.message.contains("platform.attributes.os"));
    }

    #[test]
    fn a_conflict_names_both_requirements() {
        let cat = catalog(vec![
            recipe("A", "1.0.0", &[("Lib", "^1.0.0")]),
            recipe("B", "1.0.0", &[("Lib", "^2.0.0")]),
            recipe("Lib", "1.0.0", &[]),
            recipe("Lib", "2.0.0", &[]),
        ]);
        let err = resolve_in(&cat, &[root("A", "1.0.0"), root("B", "1.0.0")], None).unwrap_err();
        let body = err.body();
        assert_eq!(body.error.code, "NoResolution");
        assert!(
            body.error.message.contains("^1.0.0") && body.error.message.contains("^2.0.0"),
            "{}",
            body.error.message
        );
    }

    #[test]
    fn a_root_version_the_cloud_lacks_is_refused() {
        let cat = catalog(vec![recipe("A", "1.0.0", &[])]);
        let err = resolve_in(&cat, &[root("A", "3.0.0")], None).unwrap_err();
        assert!(err.body().error.message.contains("A"));
    }

    #[test]
    fn roots_are_checked_before_the_store() {
        let many: BTreeMap<String, String> = (0..=MAX_RESOLVE_ROOTS)
            .map(|i| (format!("c{i}"), "1.0.0".to_string()))
            .collect();
        assert!(
            check_roots(&ResolveRequest {
                components: many,
                platform: None
            })
            .is_err()
        );
        let bad = ResolveRequest {
            components: [("A".to_string(), "one".to_string())].into(),
            platform: None,
        };
        let err = check_roots(&bad).unwrap_err();
        assert!(
            err.body().error.message.contains("components.A"),
            "{:?}",
            err.body()
        );
        assert!(
            check_roots(&ResolveRequest {
                components: BTreeMap::new(),
                platform: None,
            })
            .is_err()
        );
    }
}
