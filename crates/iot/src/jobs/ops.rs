//! The Jobs operations.

use serde_json::{Map, Value, json};

use super::request::{self, requested_status};
use super::{
    Execution, ExecutionStatus, JobsError, JobsErrorCode, MAX_NOTIFY_LISTED, MAX_PENDING_LISTED,
};

fn with_token(mut out: Map<String, Value>, token: Option<&str>) -> Value {
    if let Some(token) = token {
        out.insert("clientToken".into(), json!(token));
    }
    Value::Object(out)
}

/// Pending executions in AWS's order: IN_PROGRESS before QUEUED, each oldest first.
fn pending_sorted(executions: &[Execution]) -> Vec<&Execution> {
    let mut pending: Vec<&Execution> = executions
        .iter()
        .filter(|e| !e.status.is_terminal())
        .collect();
    pending.sort_by(|a, b| {
        (
            a.status != ExecutionStatus::InProgress,
            a.queued_at,
            &a.job_id,
        )
            .cmp(&(
                b.status != ExecutionStatus::InProgress,
                b.queued_at,
                &b.job_id,
            ))
    });
    pending
}

/// The execution `$next` refers to among a thing's executions.
pub fn next_pending(executions: &[Execution]) -> Option<&Execution> {
    pending_sorted(executions).into_iter().next()
}

fn not_found(job_id: &str, thing: Option<&str>, token: Option<&str>) -> JobsError {
    let shown: String = job_id.chars().take(64).collect();
    let message = match thing {
        Some(thing) => format!("Job execution of job {shown} on thing {thing} not found"),
        None => format!("Job execution of job {shown} not found"),
    };
    JobsError::new(JobsErrorCode::ResourceNotFound, message, token)
}

/// `jobs/<jobId>/get` (pass the execution and its job's document; `None` when the thing has
/// no execution of that job) or `jobs/$next/get` (pass [`next_pending`]'s answer, with
/// `is_next`: no pending execution is then an accepted answer without `execution`).
/// `includeJobDocument` defaults to true; `executionNumber`, when given, must match; a
/// terminal execution answers `TerminalStateReached` (the SDK's documented meaning of it).
pub fn describe(
    execution: Option<(&Execution, &Value)>,
    is_next: bool,
    job_id: &str,
    request_json: &[u8],
    now_epoch_secs: u64,
) -> Result<Value, JobsError> {
    let body = request::parse(request_json)?;
    let token = body.client_token.as_deref();
    let mut out = Map::new();
    match execution {
        None if is_next => {}
        None => return Err(not_found(job_id, None, token)),
        Some((exec, document)) => {
            if body
                .execution_number
                .is_some_and(|n| n != exec.execution_number)
            {
                return Err(not_found(&exec.job_id, Some(&exec.thing_name), token));
            }
            if exec.status.is_terminal() {
                return Err(JobsError::new(
                    JobsErrorCode::TerminalStateReached,
                    format!(
                        "Job execution of job {} is in terminal state {}",
                        exec.job_id,
                        exec.status.as_str()
                    ),
                    token,
                )
                .with_state(exec));
            }
            let include = body.include_job_document.unwrap_or(true);
            out.insert("execution".into(), exec.data(include.then_some(document)));
        }
    }
    out.insert("timestamp".into(), json!(now_epoch_secs));
    Ok(with_token(out, token))
}

/// What `start-next` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StartNextOutcome {
    /// The execution to store, when it changed (QUEUED → IN_PROGRESS).
    pub changed: Option<Execution>,
    /// The validated `stepTimeoutInMinutes`, for a caller that enforces step timeouts.
    pub step_timeout_in_minutes: Option<u64>,
    /// `start-next/accepted`: `{execution?, timestamp, clientToken?}`.
    pub accepted: Value,
}

/// `jobs/start-next` on [`next_pending`]'s answer and its job's document. A QUEUED execution
/// becomes IN_PROGRESS (version + 1, `startedAt` now, `statusDetails` replaced when given); an
/// IN_PROGRESS one is returned as it is; none is an accepted answer without `execution`.
pub fn start_next(
    next: Option<(&Execution, &Value)>,
    request_json: &[u8],
    now_epoch_secs: u64,
) -> Result<StartNextOutcome, JobsError> {
    let body = request::parse(request_json)?;
    let token = body.client_token.as_deref();
    let mut out = Map::new();
    let mut changed = None;
    if let Some((exec, document)) = next {
        let shown = if exec.status == ExecutionStatus::Queued {
            let mut started = exec.clone();
            started.status = ExecutionStatus::InProgress;
            if let Some(details) = &body.status_details {
                started.status_details = details.clone();
            }
            started.version_number = bump(exec.version_number, token)?;
            started.started_at = Some(now_epoch_secs);
            started.last_updated_at = now_epoch_secs;
            changed.insert(started).clone()
        } else {
            exec.clone()
        };
        out.insert("execution".into(), shown.data(Some(document)));
    }
    out.insert("timestamp".into(), json!(now_epoch_secs));
    Ok(StartNextOutcome {
        changed,
        step_timeout_in_minutes: body.step_timeout_in_minutes,
        accepted: with_token(out, token),
    })
}

fn bump(version: u64, token: Option<&str>) -> Result<u64, JobsError> {
    version.checked_add(1).ok_or_else(|| {
        JobsError::new(
            JobsErrorCode::InternalError,
            "Job execution version overflow",
            token,
        )
    })
}

/// What an accepted update produced.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateOutcome {
    /// The execution to store.
    pub execution: Execution,
    /// The validated `stepTimeoutInMinutes`, for a caller that enforces step timeouts.
    pub step_timeout_in_minutes: Option<u64>,
    /// `update/accepted`: `{executionState?, jobDocument?, timestamp, clientToken?}`.
    pub accepted: Value,
}

/// `jobs/<jobId>/update` on the thing's execution of `job_id` (`None` when it has none) and
/// the job's document.
pub fn update(
    execution: Option<(&Execution, &Value)>,
    job_id: &str,
    request_json: &[u8],
    now_epoch_secs: u64,
) -> Result<UpdateOutcome, JobsError> {
    let body = request::parse(request_json)?;
    let token = body.client_token.as_deref();
    let status = requested_status(&body)?;
    let Some((exec, document)) = execution else {
        return Err(not_found(job_id, None, token));
    };
    if body
        .execution_number
        .is_some_and(|n| n != exec.execution_number)
    {
        return Err(not_found(&exec.job_id, Some(&exec.thing_name), token));
    }
    if body
        .expected_version
        .is_some_and(|v| v != exec.version_number)
    {
        return Err(JobsError::new(
            JobsErrorCode::VersionMismatch,
            format!(
                "expectedVersion {} does not match the job execution's version {}",
                body.expected_version.unwrap_or_default(),
                exec.version_number
            ),
            token,
        )
        .with_state(exec));
    }
    if exec.status.is_terminal() || !status.device_settable() {
        return Err(JobsError::new(
            JobsErrorCode::InvalidStateTransition,
            format!(
                "Job execution of job {} cannot change from {} to {}",
                exec.job_id,
                exec.status.as_str(),
                status.as_str()
            ),
            token,
        )
        .with_state(exec));
    }
    let mut next = exec.clone();
    next.status = status;
    if let Some(details) = &body.status_details {
        next.status_details = details.clone();
    }
    if next.started_at.is_none() && exec.status == ExecutionStatus::Queued {
        next.started_at = Some(now_epoch_secs);
    }
    next.version_number = bump(exec.version_number, token)?;
    next.last_updated_at = now_epoch_secs;

    let mut out = Map::new();
    if body.include_job_execution_state.unwrap_or(false) {
        out.insert("executionState".into(), next.state());
    }
    if body.include_job_document.unwrap_or(false) {
        out.insert("jobDocument".into(), document.clone());
    }
    out.insert("timestamp".into(), json!(now_epoch_secs));
    Ok(UpdateOutcome {
        execution: next,
        step_timeout_in_minutes: body.step_timeout_in_minutes,
        accepted: with_token(out, token),
    })
}

/// `jobs/get`: `{inProgressJobs, queuedJobs, timestamp, clientToken?}`, each list oldest
/// first and at most [`MAX_PENDING_LISTED`] long.
pub fn get_pending(
    executions: &[Execution],
    request_json: &[u8],
    now_epoch_secs: u64,
) -> Result<Value, JobsError> {
    let body = request::parse(request_json)?;
    let pending = pending_sorted(executions);
    let list = |status: ExecutionStatus| -> Vec<Value> {
        pending
            .iter()
            .filter(|e| e.status == status)
            .take(MAX_PENDING_LISTED)
            .map(|e| e.summary())
            .collect()
    };
    let mut out = Map::new();
    out.insert(
        "inProgressJobs".into(),
        json!(list(ExecutionStatus::InProgress)),
    );
    out.insert("queuedJobs".into(), json!(list(ExecutionStatus::Queued)));
    out.insert("timestamp".into(), json!(now_epoch_secs));
    Ok(with_token(out, body.client_token.as_deref()))
}

/// `jobs/notify`: `{"jobs": {"IN_PROGRESS": [...], "QUEUED": [...]}, timestamp}` with at most
/// [`MAX_NOTIFY_LISTED`] pending executions in all (IN_PROGRESS first); statuses with none
/// are left out, so no pending execution gives `"jobs": {}`.
pub fn notify_payload(executions: &[Execution], now_epoch_secs: u64) -> Value {
    let mut jobs = Map::new();
    for exec in pending_sorted(executions)
        .into_iter()
        .take(MAX_NOTIFY_LISTED)
    {
        let entry = jobs
            .entry(exec.status.as_str())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(exec.summary());
        }
    }
    json!({ "timestamp": now_epoch_secs, "jobs": jobs })
}

/// `jobs/notify-next`: `{timestamp, execution?}` for [`next_pending`]'s answer, with the job
/// document; without `execution` when nothing is pending.
pub fn notify_next_payload(next: Option<(&Execution, &Value)>, now_epoch_secs: u64) -> Value {
    let mut out = Map::new();
    out.insert("timestamp".into(), json!(now_epoch_secs));
    if let Some((exec, document)) = next {
        out.insert("execution".into(), exec.data(Some(document)));
    }
    Value::Object(out)
}
