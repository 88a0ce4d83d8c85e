//! The jobs view (read only): `GET /v1/jobs`, `GET /v1/jobs/{id}` and
//! `GET /v1/jobs/{id}/executions`, in the shape of AWS IoT's ListJobs / DescribeJob /
//! ListJobExecutionsForJob. Jobs are made by group deployments (`crate::api::deployments`,
//! namespace `aws-gg-deployment`) and stay after their deployment is replaced (CANCELED), so
//! a replaced deployment's per-device results remain readable here.
//!
//! Pages: at most `lichen_cloud_store::MAX_PAGE` items, continued with `after` = `next`.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use lichen_cloud_store::{Backend, Job, JobExecution};
use serde::Serialize;
use serde_json::{Value, json};

use super::body::{ApiPath, ApiQuery};
use super::error::ApiResult;
use super::{AppState, Method, PAGING, PageQuery, Route, check, next_key};
use crate::validate;

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![
        Route {
            method: Method::Get,
            path: "/v1/jobs",
            operation_id: "listJobs",
            summary: "Jobs (group deployments make one each), by id, a page at a time.",
            public: false,
            request: None,
            response: (200, Some("JobList")),
            query: PAGING,
            handler: get(list::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/jobs/{id}",
            operation_id: "getJob",
            summary: "A job: its document, status, targets and execution counts per status.",
            public: false,
            request: None,
            response: (200, Some("Job")),
            query: &[],
            handler: get(describe::<S>),
        },
        Route {
            method: Method::Get,
            path: "/v1/jobs/{id}/executions",
            operation_id: "listJobExecutions",
            summary: "A job's executions, one per thing, by thing, a page at a time.",
            public: false,
            request: None,
            response: (200, Some("JobExecutionList")),
            query: PAGING,
            handler: get(executions::<S>),
        },
    ]
}

/// A job as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    pub status: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub targets: Vec<String>,
    pub document: Value,
    pub created_at: String,
    pub last_updated_at: String,
    /// Executions per status (describe only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_counts: Option<std::collections::BTreeMap<String, u64>>,
}

fn view(job: Job) -> JobView {
    JobView {
        job_id: job.id,
        status: serde_json::to_value(job.status).unwrap_or(Value::Null),
        namespace: job.namespace,
        targets: job.targets,
        document: job.document,
        created_at: job.created_at,
        last_updated_at: job.updated_at,
        execution_counts: None,
    }
}

fn execution_view(e: &JobExecution) -> Value {
    json!({
        "jobId": e.job_id,
        "thingName": e.thing,
        "status": e.status,
        "statusDetails": e.status_details,
        "versionNumber": e.version_number,
        "executionNumber": e.execution_number,
        "queuedAt": e.queued_at,
        "startedAt": e.started_at,
        "lastUpdatedAt": e.last_updated_at,
    })
}

fn job_id(id: &str) -> ApiResult<()> {
    check(validate::name("jobId", id))
}

async fn list<S: Backend>(
    State(state): State<AppState<S>>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let page = q.page()?;
    let found = state.store.list_jobs(&page).await?;
    let next = next_key(&found, &page, |j| &j.id);
    let jobs: Vec<JobView> = found.into_iter().map(view).collect();
    Ok(Json(json!({"jobs": jobs, "next": next})))
}

async fn describe<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    job_id(&id)?;
    let job = state.store.get_job(&id).await?;
    let mut counts = std::collections::BTreeMap::new();
    let mut page = lichen_cloud_store::Page::first(lichen_cloud_store::MAX_PAGE);
    loop {
        let batch = state.store.list_job_executions_for_job(&id, &page).await?;
        for e in &batch {
            *counts.entry(e.status.as_str().to_string()).or_default() += 1;
        }
        match next_key(&batch, &page, |e| &e.thing) {
            Some(after) => page.after = Some(after),
            None => break,
        }
    }
    let mut v = view(job);
    v.execution_counts = Some(counts);
    Ok(Json(v))
}

async fn executions<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    job_id(&id)?;
    // 404 for a job that does not exist, rather than an empty list.
    state.store.get_job(&id).await?;
    let page = q.page()?;
    let found = state.store.list_job_executions_for_job(&id, &page).await?;
    let next = next_key(&found, &page, |e| &e.thing);
    let list: Vec<Value> = found.iter().map(execution_view).collect();
    Ok(Json(json!({"executions": list, "next": next})))
}

/// OpenAPI schemas of the jobs view.
pub fn schemas() -> Vec<(&'static str, Value)> {
    let s = json!({"type": "string"});
    let i = json!({"type": "integer"});
    vec![
        (
            "Job",
            json!({"type": "object", "required": ["jobId", "status", "targets", "document", "createdAt", "lastUpdatedAt"],
            "properties": {
                "jobId": s, "namespace": s,
                "status": {"enum": ["IN_PROGRESS", "CANCELED", "COMPLETED", "DELETION_IN_PROGRESS"]},
                "targets": {"type": "array", "items": s},
                "document": {"type": "object"},
                "createdAt": s, "lastUpdatedAt": s,
                "executionCounts": {"type": "object", "additionalProperties": i}
            }}),
        ),
        (
            "JobList",
            json!({"type": "object", "required": ["jobs"], "properties": {
                "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}, "next": s}}),
        ),
        (
            "JobExecutionList",
            json!({"type": "object", "required": ["executions"], "properties": {
                "executions": {"type": "array", "items": {"type": "object",
                    "required": ["jobId", "thingName", "status", "versionNumber", "executionNumber", "queuedAt", "lastUpdatedAt"],
                    "properties": {
                        "jobId": s, "thingName": s,
                        "status": {"enum": ["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"]},
                        "statusDetails": {"type": "object", "additionalProperties": s},
                        "versionNumber": i, "executionNumber": i, "queuedAt": i, "startedAt": i, "lastUpdatedAt": i
                    }}},
                "next": s}}),
        ),
    ]
}
