//! The Jobs MQTT API: `lichen_iot::jobs` over the store's jobs and executions. Execution
//! writes are optimistic (expected version) and retried on a concurrent write; `notify` and
//! `notify-next` go out when executions are queued or the current one ends.

use lichen_cloud_store::{
    Backend, JobExecution, JobExecutionStatus as StoreStatus, MAX_PAGE, Page, StoreError,
};
use lichen_iot::jobs::{self, Execution, ExecutionStatus, JobsError, JobsErrorCode};
use lichen_iot::topic::{JobsRequest, JobsTopic, Outcome};
use serde_json::Value;

use crate::service::now_secs;
use crate::{Inner, SHADOW_RETRIES};

fn to_iot_status(s: StoreStatus) -> ExecutionStatus {
    match s {
        StoreStatus::Queued => ExecutionStatus::Queued,
        StoreStatus::InProgress => ExecutionStatus::InProgress,
        StoreStatus::Succeeded => ExecutionStatus::Succeeded,
        StoreStatus::Failed => ExecutionStatus::Failed,
        StoreStatus::TimedOut => ExecutionStatus::TimedOut,
        StoreStatus::Rejected => ExecutionStatus::Rejected,
        StoreStatus::Removed => ExecutionStatus::Removed,
        StoreStatus::Canceled => ExecutionStatus::Canceled,
    }
}

fn to_store_status(s: ExecutionStatus) -> StoreStatus {
    match s {
        ExecutionStatus::Queued => StoreStatus::Queued,
        ExecutionStatus::InProgress => StoreStatus::InProgress,
        ExecutionStatus::Succeeded => StoreStatus::Succeeded,
        ExecutionStatus::Failed => StoreStatus::Failed,
        ExecutionStatus::TimedOut => StoreStatus::TimedOut,
        ExecutionStatus::Rejected => StoreStatus::Rejected,
        ExecutionStatus::Removed => StoreStatus::Removed,
        ExecutionStatus::Canceled => StoreStatus::Canceled,
    }
}

fn secs(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn to_iot(e: &JobExecution) -> Execution {
    Execution {
        job_id: e.job_id.clone(),
        thing_name: e.thing.clone(),
        status: to_iot_status(e.status),
        status_details: e.status_details.clone(),
        version_number: secs(e.version_number),
        execution_number: secs(e.execution_number),
        queued_at: secs(e.queued_at),
        started_at: e.started_at.map(secs),
        last_updated_at: secs(e.last_updated_at),
    }
}

pub fn to_store(e: &Execution) -> JobExecution {
    JobExecution {
        job_id: e.job_id.clone(),
        thing: e.thing_name.clone(),
        status: to_store_status(e.status),
        status_details: e.status_details.clone(),
        version_number: signed(e.version_number),
        execution_number: signed(e.execution_number),
        queued_at: signed(e.queued_at),
        started_at: e.started_at.map(signed),
        last_updated_at: signed(e.last_updated_at),
    }
}

fn internal(message: &str) -> JobsError {
    JobsError::new(JobsErrorCode::InternalError, message, None)
}

/// The thing's pending (QUEUED or IN_PROGRESS) executions.
async fn pending<B: Backend>(inner: &Inner<B>, thing: &str) -> Result<Vec<Execution>, JobsError> {
    let list = inner
        .store
        .list_job_executions_for_thing(
            thing,
            &[StoreStatus::Queued, StoreStatus::InProgress],
            &Page::first(MAX_PAGE),
        )
        .await
        .map_err(|e| {
            tracing::error!(%thing, error = %e, "job executions unreadable");
            internal("Internal service failure")
        })?;
    Ok(list.iter().map(to_iot).collect())
}

/// A job's document (`None` when the job is gone).
async fn document<B: Backend>(inner: &Inner<B>, job_id: &str) -> Result<Option<Value>, JobsError> {
    match inner.store.get_job(job_id).await {
        Ok(j) => Ok(Some(j.document)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => {
            tracing::error!(job = %job_id, error = %e, "job unreadable");
            Err(internal("Internal service failure"))
        }
    }
}

/// The next pending execution with its document.
async fn next<B: Backend>(
    inner: &Inner<B>,
    thing: &str,
) -> Result<Option<(Execution, Value)>, JobsError> {
    let all = pending(inner, thing).await?;
    let Some(n) = jobs::next_pending(&all).cloned() else {
        return Ok(None);
    };
    let doc = document(inner, &n.job_id).await?.unwrap_or(Value::Null);
    Ok(Some((n, doc)))
}

enum Answer {
    Accepted(Value),
    /// Accepted, and the thing's next execution may have changed.
    AcceptedNotify(Value),
    Retry,
}

pub async fn handle<B: Backend>(inner: &Inner<B>, topic: &JobsTopic, payload: &[u8]) {
    let thing = topic.thing.as_str();
    for _ in 0..SHADOW_RETRIES {
        let now = now_secs();
        let answer = run(inner, topic, thing, payload, now).await;
        match answer {
            Ok(Answer::Retry) => continue,
            Ok(Answer::Accepted(v)) => {
                inner.reply(&topic.with_reply(Outcome::Accepted).to_string(), &v);
                return;
            }
            Ok(Answer::AcceptedNotify(v)) => {
                inner.reply(&topic.with_reply(Outcome::Accepted).to_string(), &v);
                notify(inner, thing).await;
                return;
            }
            Err(e) => {
                inner.reply(
                    &topic.with_reply(Outcome::Rejected).to_string(),
                    &e.payload(now),
                );
                return;
            }
        }
    }
    let e = JobsError::new(
        JobsErrorCode::RequestThrottled,
        "The job execution kept changing",
        None,
    );
    inner.reply(
        &topic.with_reply(Outcome::Rejected).to_string(),
        &e.payload(now_secs()),
    );
}

async fn store_execution<B: Backend>(
    inner: &Inner<B>,
    new: &Execution,
    expected: u64,
) -> Result<bool, JobsError> {
    match inner
        .store
        .put_job_execution(&to_store(new), Some(signed(expected)))
        .await
    {
        Ok(()) => Ok(true),
        Err(StoreError::VersionConflict { .. }) => Ok(false),
        Err(e) => {
            tracing::error!(job = %new.job_id, thing = %new.thing_name, error = %e, "job execution not stored");
            Err(internal("Internal service failure"))
        }
    }
}

async fn run<B: Backend>(
    inner: &Inner<B>,
    topic: &JobsTopic,
    thing: &str,
    payload: &[u8],
    now: u64,
) -> Result<Answer, JobsError> {
    match &topic.request {
        JobsRequest::GetPending => {
            let all = pending(inner, thing).await?;
            jobs::get_pending(&all, payload, now).map(Answer::Accepted)
        }
        JobsRequest::DescribeNext => {
            let n = next(inner, thing).await?;
            jobs::describe(n.as_ref().map(|(e, d)| (e, d)), true, "$next", payload, now)
                .map(Answer::Accepted)
        }
        JobsRequest::StartNext => {
            let n = next(inner, thing).await?;
            let out = jobs::start_next(n.as_ref().map(|(e, d)| (e, d)), payload, now)?;
            if let (Some(changed), Some((old, _))) = (&out.changed, &n)
                && !store_execution(inner, changed, old.version_number).await?
            {
                return Ok(Answer::Retry);
            }
            Ok(Answer::Accepted(out.accepted))
        }
        JobsRequest::Describe { job_id } | JobsRequest::Update { job_id } => {
            let exec = inner
                .store
                .get_job_execution(job_id, thing)
                .await
                .map_err(|e| {
                    tracing::error!(job = %job_id, %thing, error = %e, "job execution unreadable");
                    internal("Internal service failure")
                })?
                .map(|e| to_iot(&e));
            let doc = match &exec {
                Some(_) => document(inner, job_id).await?.unwrap_or(Value::Null),
                None => Value::Null,
            };
            let pair = exec.as_ref().map(|e| (e, &doc));
            if matches!(topic.request, JobsRequest::Describe { .. }) {
                return jobs::describe(pair, false, job_id, payload, now).map(Answer::Accepted);
            }
            let out = jobs::update(pair, job_id, payload, now)?;
            let Some(old) = &exec else {
                return Ok(Answer::Accepted(out.accepted));
            };
            if !store_execution(inner, &out.execution, old.version_number).await? {
                return Ok(Answer::Retry);
            }
            if out.execution.status.is_terminal() {
                Ok(Answer::AcceptedNotify(out.accepted))
            } else {
                Ok(Answer::Accepted(out.accepted))
            }
        }
        JobsRequest::Notify | JobsRequest::NotifyNext => {
            Err(JobsError::invalid_topic(&topic.to_string()))
        }
    }
}

/// Publishes `jobs/notify` and `jobs/notify-next` for `thing`.
pub async fn notify<B: Backend>(inner: &Inner<B>, thing: &str) {
    let now = now_secs();
    let all = match pending(inner, thing).await {
        Ok(a) => a,
        Err(_) => return,
    };
    let notify_topic = JobsTopic::request(thing, JobsRequest::Notify).to_string();
    inner.reply(&notify_topic, &jobs::notify_payload(&all, now));
    let next = match jobs::next_pending(&all) {
        Some(n) => {
            let doc = document(inner, &n.job_id)
                .await
                .ok()
                .flatten()
                .unwrap_or(Value::Null);
            Some((n.clone(), doc))
        }
        None => None,
    };
    let topic = JobsTopic::request(thing, JobsRequest::NotifyNext).to_string();
    inner.reply(
        &topic,
        &jobs::notify_next_payload(next.as_ref().map(|(e, d)| (e, d)), now),
    );
}
