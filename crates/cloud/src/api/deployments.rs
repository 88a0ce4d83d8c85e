//! Fleet deployments (Greengrass `CreateDeployment` and friends): a deployment to a thing group
//! becomes a job in the `aws-gg-deployment` namespace with one QUEUED execution per member
//! (the group's previous job canceled); a deployment to one thing becomes `desired` of its
//! `AWSManagedGreengrassV2Deployment` shadow. Each is written in one store transaction
//! ([`Backend::create_fleet_deployment`]); the device endpoint is told afterwards, and
//! devices also re-read their jobs and shadow when they connect, so a lost notification only
//! delays delivery.
//!
//! Bounds: at most [`MAX_FLEET_COMPONENTS`] components; the thing shadow's document at most
//! [`DEPLOYMENT_SHADOW_MAX_BYTES`] (Greengrass's largest shadow size); at most
//! [`NOTIFY_CONCURRENCY`] member notifications in flight.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use lichen_cloud_store::{
    Backend, DeploymentTarget, FleetCancel, FleetDeployment, FleetDeploymentWrite, Job,
    JobExecution, JobExecutionStatus, JobStatus, Page, ShadowRecord, StoreError,
};
use lichen_iot::shadow::{self, ShadowLimits, StoredShadow};
use lichen_model::deployment::{ComponentUpdateAction, FailurePolicy, RunWith};
use lichen_model::fleet::{
    DEPLOYMENT_JOBS_NAMESPACE, DEPLOYMENT_SHADOW_NAME, DESIRED_STATUS_ACTIVE,
    DESIRED_STATUS_CANCELED, FleetComponent, FleetComponentUpdatePolicy, FleetConfiguration,
    FleetConfigurationUpdate, FleetValidationPolicy, MAX_FLEET_COMPONENTS, THING_GROUP_PREFIX,
    THING_PREFIX, configuration_arn,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::{ApiJson, ApiPath, ApiQuery};
use super::deployment_status::{is_final, shadow_status};
use super::error::{ApiError, ApiResult};
use super::{AppState, Method, PageQuery, QueryParam, Route, check, next_key};
use crate::validate;

/// Largest deployment shadow document (Greengrass allows shadows up to 30 KiB).
pub const DEPLOYMENT_SHADOW_MAX_BYTES: usize = 30 * 1024;
/// How often creation is retried when another write to the same target got in between.
const CREATE_RETRIES: usize = 3;
/// Members of a group told at once of their new (or canceled) execution. Each notification is
/// a few store reads and a publish; told one after another, a 1,000-member group held the
/// POST for 12 s on PostgreSQL (`examples/bench_fleet`), in parallel it takes a fraction.
pub const NOTIFY_CONCURRENCY: usize = 32;

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Post,
            path: "/v1/deployments",
            operation_id: "createDeployment",
            summary: "Deploy components to a thing group (a job per member) or a thing (its deployment shadow); replaces the target's previous deployment.",
            public: false,
            request: Some("CreateDeployment"),
            response: (201, Some("Deployment")),
            query: &[],
            handler: post(create::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/deployments",
            operation_id: "listDeployments",
            summary: "The current deployment of every target, by id, a page at a time; with historyFilter=ALL also those a newer deployment replaced (INACTIVE or CANCELED, supersededBy).",
            public: false,
            request: None,
            response: (200, Some("DeploymentList")),
            query: LIST_QUERY,
            handler: get(list::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/deployments/{id}",
            operation_id: "getDeployment",
            summary: "A deployment.",
            public: false,
            request: None,
            response: (200, Some("Deployment")),
            query: &[],
            handler: get(describe::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/deployments/{id}/status",
            operation_id: "getDeploymentStatus",
            summary: "Per device: the deployment's status as the device reported it.",
            public: false,
            request: None,
            response: (200, Some("DeploymentStatus")),
            query: &[],
            handler: get(super::deployment_status::status::<S>),
        },
        Route {
            method: Method::Post,
            path: "/v1/deployments/{id}/cancel",
            operation_id: "cancelDeployment",
            summary: "Cancel a deployment (its job and pending executions, or the thing's desired deployment); 409 Superseded naming its successor when a newer deployment replaced it.",
            public: false,
            request: None,
            response: (200, Some("Deployment")),
            query: &[],
            handler: post(cancel::<S>),
        },
    ]
}

/// `GET /v1/deployments`' query: paging and Greengrass ListDeployments' `historyFilter`.
const LIST_QUERY: &[QueryParam] = &[
    QueryParam {
        name: "limit",
        description: "At most this many results (1 to 1000; default 1000).",
        kind: "integer",
    },
    QueryParam {
        name: "after",
        description: "Continue after this key: the `next` of the previous page.",
        kind: "string",
    },
    QueryParam {
        name: "historyFilter",
        description: "LATEST_ONLY (default: each target's current deployment) or ALL (with the deployments newer ones replaced).",
        kind: "string",
    },
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
    pub history_filter: Option<String>,
}

// ---- the request, in the shape of Greengrass CreateDeployment ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateDeployment {
    #[serde(default)]
    pub target_arn: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub deployment_name: Option<String>,
    #[serde(default)]
    pub components: BTreeMap<String, ComponentSpec>,
    #[serde(default)]
    pub deployment_policies: Option<DeploymentPolicies>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ComponentSpec {
    pub component_version: String,
    #[serde(default)]
    pub configuration_update: Option<FleetConfigurationUpdate>,
    #[serde(default)]
    pub run_with: Option<RunWith>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentPolicies {
    #[serde(default)]
    pub failure_handling_policy: Option<FailurePolicy>,
    #[serde(default)]
    pub component_update_policy: Option<UpdatePolicySpec>,
    #[serde(default)]
    pub configuration_validation_policy: Option<ValidationPolicySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdatePolicySpec {
    #[serde(default)]
    pub timeout_in_seconds: Option<u64>,
    #[serde(default)]
    pub action: Option<ComponentUpdateAction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ValidationPolicySpec {
    #[serde(default)]
    pub timeout_in_seconds: Option<u64>,
}

/// What the API answers for a deployment: the stored document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentList {
    pub deployments: Vec<Value>,
    pub next: Option<String>,
}

/// Parses `thinggroup/NAME`, `thing/NAME`, their ARN forms (`arn:…:thinggroup/NAME`) and the
/// CLI's `group:NAME` / `thing:NAME`.
pub fn parse_target(text: &str) -> Result<DeploymentTarget, String> {
    let bare = if text.starts_with("arn:") {
        text.rsplit(':').next().unwrap_or("")
    } else {
        text
    };
    let target = if let Some(g) = bare
        .strip_prefix(THING_GROUP_PREFIX)
        .or_else(|| bare.strip_prefix("group:"))
    {
        DeploymentTarget::ThingGroup(g.to_string())
    } else if let Some(t) = bare
        .strip_prefix(THING_PREFIX)
        .or_else(|| bare.strip_prefix("thing:"))
    {
        DeploymentTarget::Thing(t.to_string())
    } else {
        return Err(format!(
            "targetArn: {text:?} is not thinggroup/NAME or thing/NAME"
        ));
    };
    let name = match &target {
        DeploymentTarget::ThingGroup(n) | DeploymentTarget::Thing(n) => n,
    };
    validate::name("targetArn", name)?;
    Ok(target)
}

/// `thinggroup/NAME` or `thing/NAME`: the group a configuration ARN names.
pub fn target_group(target: &DeploymentTarget) -> String {
    match target {
        DeploymentTarget::ThingGroup(g) => format!("{THING_GROUP_PREFIX}{g}"),
        DeploymentTarget::Thing(t) => format!("{THING_PREFIX}{t}"),
    }
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn fresh_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Checks everything that does not need the store and builds the configuration's components.
fn fleet_components(req: &CreateDeployment) -> ApiResult<BTreeMap<String, FleetComponent>> {
    if req.components.len() > MAX_FLEET_COMPONENTS {
        return Err(ApiError::invalid(
            "components",
            format!(
                "{} components; a deployment names at most {MAX_FLEET_COMPONENTS}",
                req.components.len()
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, spec) in &req.components {
        // Component names are the component store's (`com.example.Name`): no path or
        // control characters, at most 128 bytes.
        if name.is_empty()
            || name.len() > 128
            || name
                .chars()
                .any(|ch| ch.is_control() || ch == '/' || ch == '\\')
        {
            return Err(ApiError::invalid(
                "components",
                format!("{name:?} is not a component name"),
            ));
        }
        if spec.component_version.is_empty() || spec.component_version.len() > 64 {
            return Err(ApiError::invalid(
                &format!("components.{name}.componentVersion"),
                "must be 1 to 64 characters",
            ));
        }
        if let Some(update) = &spec.configuration_update {
            let field = format!("components.{name}.configurationUpdate.merge");
            match &update.merge {
                None => {}
                Some(Value::String(text)) if text.trim().is_empty() => {}
                Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(_)) => {}
                    Ok(_) => return Err(ApiError::invalid(&field, "must be a JSON object")),
                    Err(e) => {
                        return Err(ApiError::invalid(
                            &field,
                            format!("not a JSON document: {e}"),
                        ));
                    }
                },
                Some(Value::Object(_)) => {}
                Some(_) => {
                    return Err(ApiError::invalid(
                        &field,
                        "must be a JSON object (as a string)",
                    ));
                }
            }
            for (i, pointer) in update.reset.iter().enumerate() {
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return Err(ApiError::invalid(
                        &format!("components.{name}.configurationUpdate.reset[{i}]"),
                        format!("{pointer:?} is not a JSON pointer"),
                    ));
                }
            }
        }
        out.insert(
            name.clone(),
            FleetComponent {
                version: spec.component_version.clone(),
                configuration_update: spec.configuration_update.clone(),
                run_with: spec.run_with.clone(),
            },
        );
    }
    Ok(out)
}

async fn create<S: Backend>(
    State(state): State<AppState<S>>,
    ApiJson(req): ApiJson<CreateDeployment>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let target_text = match (&req.target_arn, &req.target) {
        (Some(t), None) | (None, Some(t)) => t.clone(),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "targetArn",
                "give targetArn or target, not both",
            ));
        }
        (None, None) => return Err(ApiError::invalid("targetArn", "is required")),
    };
    let target = parse_target(&target_text)
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "InvalidField", m))?;
    if let Some(n) = &req.deployment_name {
        check(validate::description("deploymentName", n))?;
    }
    let components = fleet_components(&req)?;
    for (name, c) in &components {
        match state.store.get_component_version(name, &c.version).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                return Err(ApiError::invalid(
                    &format!("components.{name}.componentVersion"),
                    format!("{name} {} is not in the component store", c.version),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    match &target {
        DeploymentTarget::ThingGroup(g) => state.store.get_group(g).await.map(|_| ()),
        DeploymentTarget::Thing(t) => state.store.get_thing(t).await.map(|_| ()),
    }
    .map_err(|e| match e {
        StoreError::NotFound { .. } => {
            ApiError::invalid("targetArn", format!("{target_text:?} does not exist"))
        }
        e => e.into(),
    })?;
    let policies = req.deployment_policies.unwrap_or_default();
    let mut last_conflict = None;
    for _ in 0..CREATE_RETRIES {
        match try_create(
            &state,
            &target,
            &req.deployment_name,
            &components,
            &policies,
        )
        .await
        {
            Ok((doc, notify)) => {
                notify_devices(&state, &target, &notify).await;
                return Ok((StatusCode::CREATED, Json(doc)));
            }
            Err(StoreError::VersionConflict { .. }) => {
                last_conflict = Some(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    let _ = last_conflict;
    Err(ApiError::conflict(
        "another deployment to this target was being created at the same time; retry",
    ))
}

/// One attempt: reads the target's current deployment (for the revision and the job to
/// cancel), builds everything, writes it in one transaction.
async fn try_create<S: Backend>(
    state: &AppState<S>,
    target: &DeploymentTarget,
    name: &Option<String>,
    components: &BTreeMap<String, FleetComponent>,
    policies: &DeploymentPolicies,
) -> Result<(Value, Vec<String>), StoreError> {
    let current = state.store.current_deployment(target).await?;
    let revision = current
        .as_ref()
        .and_then(|d| d.document["revision"].as_u64())
        .unwrap_or(0)
        + 1;
    let id = fresh_id();
    let group = target_group(target);
    let arn = configuration_arn(&group, revision);
    let created = super::now();
    let now = now_secs();
    let fleet_config = FleetConfiguration {
        deployment_id: id.clone(),
        configuration_arn: arn.clone(),
        creation_timestamp: u64::try_from(now).unwrap_or(0) * 1000,
        components: components.clone(),
        failure_handling_policy: policies.failure_handling_policy.unwrap_or_default(),
        component_update_policy: policies.component_update_policy.as_ref().map(|p| {
            FleetComponentUpdatePolicy {
                timeout: p.timeout_in_seconds.unwrap_or(60),
                action: p.action.unwrap_or(ComponentUpdateAction::NotifyComponents),
            }
        }),
        configuration_validation_policy: policies.configuration_validation_policy.as_ref().map(
            |p| FleetValidationPolicy {
                timeout: p.timeout_in_seconds.unwrap_or(30),
            },
        ),
        required_capabilities: Vec::new(),
        on_behalf_of: match target {
            DeploymentTarget::ThingGroup(_) => Some(group.clone()),
            DeploymentTarget::Thing(_) => None,
        },
    };
    let config_json = serde_json::to_value(&fleet_config).map_err(|e| StoreError::Invalid {
        field: "deployment",
        message: e.to_string(),
    })?;
    let mut write = FleetDeploymentWrite {
        deployment: FleetDeployment {
            id: id.clone(),
            target: target.clone(),
            components: components
                .iter()
                .map(|(n, c)| (n.clone(), c.version.clone()))
                .collect(),
            document: Value::Null,
            created_at: created.clone(),
        },
        replaces: current.as_ref().map(|d| d.id.clone()),
        cancel_job: current
            .as_ref()
            .and_then(|d| d.document["jobId"].as_str().map(str::to_string)),
        job: None,
        executions: Vec::new(),
        shadow: None,
        now_secs: now,
        superseded_status: None,
    };
    let mut job_id = None;
    match target {
        DeploymentTarget::ThingGroup(g) => {
            let members = all_members(state, g).await?;
            let jid = fresh_id();
            write.job = Some(Job {
                id: jid.clone(),
                document: config_json.clone(),
                status: JobStatus::InProgress,
                targets: members.clone(),
                namespace: Some(DEPLOYMENT_JOBS_NAMESPACE.to_string()),
                created_at: created.clone(),
                updated_at: created.clone(),
            });
            write.executions = members
                .iter()
                .map(|thing| queued_execution(&jid, thing, now))
                .collect();
            job_id = Some(jid);
        }
        DeploymentTarget::Thing(t) => {
            // The shadow will speak of the new deployment only: keep what the device said
            // of the one replaced (a result it never reached is CANCELED by the replacement).
            if let Some(previous) = &current {
                let mut last = shadow_status(state, previous, t).await?;
                if !is_final(&last.status) {
                    last.status = "CANCELED".into();
                }
                write.superseded_status = serde_json::to_value(&last).ok();
            }
            let desired =
                json!({"fleetConfig": config_json, "desiredStatus": DESIRED_STATUS_ACTIVE});
            write.shadow = Some(shadow_with_desired(state, t, desired, true).await?);
        }
    }
    let document = json!({
        "deploymentId": id,
        "deploymentName": name,
        "targetArn": group,
        "revision": revision,
        "configurationArn": arn,
        "jobId": job_id,
        "deploymentStatus": "ACTIVE",
        "creationTimestamp": created,
        "fleetConfig": fleet_config,
    });
    write.deployment.document = document.clone();
    let notify = state.store.create_fleet_deployment(&write).await?;
    Ok((document, notify))
}

fn queued_execution(job_id: &str, thing: &str, now: i64) -> JobExecution {
    JobExecution {
        job_id: job_id.to_string(),
        thing: thing.to_string(),
        status: JobExecutionStatus::Queued,
        status_details: BTreeMap::new(),
        version_number: 1,
        execution_number: 1,
        queued_at: now,
        started_at: None,
        last_updated_at: now,
    }
}

/// Every member of a group, page by page.
async fn all_members<S: Backend>(
    state: &AppState<S>,
    group: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut page = Page::first(lichen_cloud_store::MAX_PAGE);
    loop {
        let batch = state.store.group_members(group, &page).await?;
        let full = batch.len() as u64 >= u64::from(page.effective_limit());
        page.after = batch.last().cloned();
        out.extend(batch);
        if !full {
            return Ok(out);
        }
    }
}

/// The deployment shadow with `desired` set as lichen-iot's shadow update does it (version
/// +1, metadata), and the record version to expect. `replace`: clear the old desired first,
/// so components of the previous deployment do not survive the merge.
async fn shadow_with_desired<S: Backend>(
    state: &AppState<S>,
    thing: &str,
    desired: Value,
    replace: bool,
) -> Result<(ShadowRecord, Option<i64>), StoreError> {
    let invalid = |m: String| StoreError::Invalid {
        field: "components",
        message: m,
    };
    let stored = state
        .store
        .get_shadow(thing, DEPLOYMENT_SHADOW_NAME)
        .await?;
    let expected = stored.as_ref().map(|r| r.version);
    let mut doc: Option<StoredShadow> = match stored {
        Some(r) => Some(serde_json::from_value(r.document).map_err(|e| {
            StoreError::Database(format!("stored deployment shadow of {thing:?}: {e}"))
        })?),
        None => None,
    };
    let limits = ShadowLimits {
        max_document_bytes: DEPLOYMENT_SHADOW_MAX_BYTES,
        max_request_bytes: DEPLOYMENT_SHADOW_MAX_BYTES * 2,
        ..ShadowLimits::default()
    };
    let now = u64::try_from(now_secs()).unwrap_or(0);
    if replace && doc.as_ref().is_some_and(|d| d.state.desired.is_some()) {
        let clear =
            shadow::apply_update(doc.as_ref(), br#"{"state":{"desired":null}}"#, now, &limits)
                .map_err(|e| invalid(format!("deployment shadow: {e:?}")))?;
        doc = Some(clear.stored);
    }
    let request = serde_json::to_vec(&json!({"state": {"desired": desired}}))
        .map_err(|e| invalid(e.to_string()))?;
    let out = shadow::apply_update(doc.as_ref(), &request, now, &limits).map_err(|e| {
        invalid(format!(
            "the deployment does not fit the thing's deployment shadow ({DEPLOYMENT_SHADOW_MAX_BYTES} bytes): {e:?}"
        ))
    })?;
    let record = ShadowRecord {
        thing: thing.to_string(),
        name: DEPLOYMENT_SHADOW_NAME.to_string(),
        document: serde_json::to_value(&out.stored).map_err(|e| invalid(e.to_string()))?,
        version: i64::try_from(out.stored.version).unwrap_or(i64::MAX),
    };
    Ok((record, expected))
}

async fn notify_devices<S: Backend>(
    state: &AppState<S>,
    target: &DeploymentTarget,
    things: &[String],
) {
    let Some(endpoint) = &state.endpoint else {
        return;
    };
    match target {
        DeploymentTarget::ThingGroup(_) => {
            let mut telling = tokio::task::JoinSet::new();
            for thing in things {
                if telling.len() >= NOTIFY_CONCURRENCY {
                    let _ = telling.join_next().await;
                }
                let (endpoint, thing) = (endpoint.clone(), thing.clone());
                telling.spawn(async move { endpoint.jobs_changed(&thing).await });
            }
            while telling.join_next().await.is_some() {}
        }
        DeploymentTarget::Thing(t) => endpoint.shadow_changed(t, DEPLOYMENT_SHADOW_NAME).await,
    }
}

async fn list<S: Backend>(
    State(state): State<AppState<S>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<DeploymentList>> {
    let page = PageQuery {
        limit: q.limit,
        after: q.after.clone(),
    }
    .page()?;
    let found = match q.history_filter.as_deref() {
        None | Some("LATEST_ONLY") => state.store.list_deployments(&page).await?,
        Some("ALL") => state.store.list_deployments_with_history(&page).await?,
        Some(other) => {
            return Err(ApiError::invalid(
                "historyFilter",
                format!("{other:?} is not LATEST_ONLY or ALL"),
            ));
        }
    };
    let next = next_key(&found, &page, |d| &d.id);
    Ok(Json(DeploymentList {
        deployments: found.into_iter().map(|d| d.document).collect(),
        next,
    }))
}

pub(super) fn deployment_id(id: &str) -> ApiResult<()> {
    check(validate::name("deploymentId", id))
}

async fn describe<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    deployment_id(&id)?;
    Ok(Json(state.store.get_deployment(&id).await?.document))
}

/// Cancels in one store transaction that first checks the deployment is still its target's
/// current one, so a cancel racing a replacement can never cancel the successor: a replaced
/// deployment answers 409 Superseded naming the deployment that replaced it.
async fn cancel<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    deployment_id(&id)?;
    for _ in 0..CREATE_RETRIES {
        let d = state.store.get_deployment(&id).await?;
        let shadow = match &d.target {
            DeploymentTarget::ThingGroup(_) => None,
            // A replaced one is refused by the store before this is used.
            DeploymentTarget::Thing(t) if d.document.get("supersededBy").is_none() => Some(
                shadow_with_desired(
                    &state,
                    t,
                    json!({"desiredStatus": DESIRED_STATUS_CANCELED}),
                    false,
                )
                .await?,
            ),
            DeploymentTarget::Thing(_) => None,
        };
        let request = FleetCancel {
            id: id.clone(),
            shadow,
            now_secs: now_secs(),
        };
        match state.store.cancel_fleet_deployment(&request).await {
            Ok((d, things)) => {
                notify_devices(&state, &d.target, &things).await;
                return Ok(Json(d.document));
            }
            // The thing's shadow changed meanwhile (a device report, or a replacement).
            Err(StoreError::VersionConflict { .. }) => continue,
            Err(StoreError::Superseded { key, by, .. }) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Superseded",
                    format!(
                        "deployment {key} was replaced by deployment {by}; cancel {by} instead"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "the thing's deployment shadow kept changing; retry",
    ))
}

/// The group's current deployment job, when the deployment is active: what a thing joining
/// the group gets an execution of.
pub async fn active_group_job<S: Backend>(
    store: &S,
    group: &str,
) -> Result<Option<String>, StoreError> {
    let current = store
        .current_deployment(&DeploymentTarget::ThingGroup(group.to_string()))
        .await?;
    Ok(current.and_then(|d| {
        if d.document["deploymentStatus"] == "ACTIVE" {
            d.document["jobId"].as_str().map(str::to_string)
        } else {
            None
        }
    }))
}

/// A thing joined a group: a QUEUED execution of the group's active deployment job (none if
/// it has one already). Returns whether one was queued.
pub async fn catch_up<S: Backend>(
    state: &AppState<S>,
    group: &str,
    thing: &str,
) -> Result<bool, StoreError> {
    let Some(job_id) = active_group_job(&*state.store, group).await? else {
        return Ok(false);
    };
    match state
        .store
        .put_job_execution(&queued_execution(&job_id, thing, now_secs()), None)
        .await
    {
        Ok(()) => {}
        Err(StoreError::VersionConflict { .. }) => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some(endpoint) = &state.endpoint {
        endpoint.jobs_changed(thing).await;
    }
    Ok(true)
}

/// A thing left a group: its pending execution of the group's deployment job is CANCELED.
pub async fn leave<S: Backend>(
    state: &AppState<S>,
    group: &str,
    thing: &str,
) -> Result<(), StoreError> {
    let current = state
        .store
        .current_deployment(&DeploymentTarget::ThingGroup(group.to_string()))
        .await?;
    let Some(job_id) = current.and_then(|d| d.document["jobId"].as_str().map(str::to_string))
    else {
        return Ok(());
    };
    if state
        .store
        .cancel_job_execution(&job_id, thing, now_secs())
        .await?
        && let Some(endpoint) = &state.endpoint
    {
        endpoint.jobs_changed(thing).await;
    }
    Ok(())
}

/// OpenAPI schemas of these routes.
pub fn schemas() -> Vec<(&'static str, Value)> {
    let s = json!({"type": "string"});
    vec![
        (
            "CreateDeployment",
            json!({
                "type": "object",
                "additionalProperties": false,
                "description": "Greengrass CreateDeployment: targetArn (or target) thinggroup/NAME or thing/NAME.",
                "properties": {
                    "targetArn": s, "target": s, "deploymentName": s,
                    "components": {"type": "object", "maxProperties": MAX_FLEET_COMPONENTS, "additionalProperties": {
                        "type": "object", "required": ["componentVersion"], "additionalProperties": false,
                        "properties": {
                            "componentVersion": s,
                            "configurationUpdate": {"type": "object", "properties": {"merge": s, "reset": {"type": "array", "items": s}}},
                            "runWith": {"type": "object", "properties": {"posixUser": s, "systemResourceLimits": {"type": "object"}}}
                        }
                    }},
                    "deploymentPolicies": {"type": "object", "properties": {
                        "failureHandlingPolicy": {"enum": ["ROLLBACK", "DO_NOTHING"]},
                        "componentUpdatePolicy": {"type": "object", "properties": {"timeoutInSeconds": {"type": "integer"}, "action": {"enum": ["NOTIFY_COMPONENTS", "SKIP_NOTIFY_COMPONENTS"]}}},
                        "configurationValidationPolicy": {"type": "object", "properties": {"timeoutInSeconds": {"type": "integer"}}}
                    }}
                }
            }),
        ),
        (
            "Deployment",
            json!({
                "type": "object",
                "required": ["deploymentId", "targetArn", "revision", "configurationArn", "deploymentStatus", "fleetConfig"],
                "properties": {
                    "deploymentId": s, "deploymentName": s, "targetArn": s,
                    "revision": {"type": "integer"}, "configurationArn": s, "jobId": s,
                    "deploymentStatus": {"enum": ["ACTIVE", "CANCELED", "INACTIVE"]},
                    "supersededBy": s,
                    "deviceStatus": {"type": "object", "description": "Thing targets replaced: the device's last status of this deployment."},
                    "creationTimestamp": s, "fleetConfig": {"type": "object"}
                }
            }),
        ),
        (
            "DeploymentList",
            json!({"type": "object", "required": ["deployments"], "properties": {
                "deployments": {"type": "array", "items": {"$ref": "#/components/schemas/Deployment"}}, "next": s}}),
        ),
        (
            "DeploymentStatus",
            json!({"type": "object", "required": ["deploymentId", "counts", "devices"], "properties": {
                "deploymentId": s, "deploymentStatus": s,
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "devices": {"type": "array", "items": {"type": "object", "required": ["thing", "status", "statusDetails"], "properties": {
                    "thing": s,
                    "status": {"enum": ["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "CANCELED", "REJECTED", "TIMED_OUT", "REMOVED"]},
                    "statusDetails": {"type": "object", "additionalProperties": s},
                    "updatedAt": s
                }}}
            }}),
        ),
    ]
}
