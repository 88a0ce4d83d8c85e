//! The Jobs MQTT API: `lichen_iot::jobs` over the store's jobs and executions. Execution
//! writes are optimistic (expected version) and retried on a concurrent write; `notify` and
//! `notify-next` go out when executions are queued or the current one ends.

use lichen_cloud_store::{
    Backend, JobExecution, JobExecutionStatus as StoreStatus, MAX_PAGE, Page, StoreError,
};
use lichen_iot::jobs::{self, Execution, ExecutionStatus, JobsError, JobsErrorCode};
use lichen_iot::topic::{JobsRequest, JobsTopic, Outcome};
use serde_json::Value;
use std::sync::Arc;

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

/// Most jobs whose namespace and document are kept in memory ([`JobCache`]).
pub const JOB_CACHE_ENTRIES: usize = 256;

/// What never changes about a job once it exists: its namespace and document (as in AWS IoT
/// Jobs, where neither can be updated; lichen's store only ever updates a job's status). Kept
/// for the most recent jobs so that a thing's `$next`, update or notification does not read
/// the job again for each of its executions: with a 1,000-member group deployment that was
/// a third of the endpoint's store reads (`examples/bench_fleet`). Bounded by
/// [`JOB_CACHE_ENTRIES`]; when full it is emptied (a fleet has a few live jobs at a time, so
/// it refills with those at once).
#[derive(Default)]
pub(crate) struct JobCache(std::sync::Mutex<std::collections::HashMap<String, Arc<JobFacts>>>);

pub(crate) struct JobFacts {
    namespace: Option<String>,
    document: Value,
}

impl JobCache {
    fn get(&self, job_id: &str) -> Option<Arc<JobFacts>> {
        self.0.lock().ok()?.get(job_id).cloned()
    }

    fn put(&self, job_id: &str, facts: Arc<JobFacts>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= JOB_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(job_id.to_string(), facts);
        }
    }
}

/// A job's namespace and document (`None` when the job is gone), from the cache or the store.
async fn job_facts<B: Backend>(
    inner: &Inner<B>,
    job_id: &str,
) -> Result<Option<Arc<JobFacts>>, JobsError> {
    if let Some(facts) = inner.jobs.get(job_id) {
        return Ok(Some(facts));
    }
    match inner.store.get_job(job_id).await {
        Ok(j) => {
            let facts = Arc::new(JobFacts {
                namespace: j.namespace,
                document: j.document,
            });
            inner.jobs.put(job_id, facts.clone());
            Ok(Some(facts))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => {
            tracing::error!(job = %job_id, error = %e, "job unreadable");
            Err(internal("Internal service failure"))
        }
    }
}

/// A job's jobs namespace (`None` for an un-namespaced job or one that is gone).
async fn namespace_of<B: Backend>(
    inner: &Inner<B>,
    job_id: &str,
) -> Result<Option<String>, JobsError> {
    Ok(job_facts(inner, job_id)
        .await?
        .and_then(|f| f.namespace.clone()))
}

/// The thing's executions with one of `statuses` (all when empty) whose job is in
/// `namespace` (`None`: un-namespaced jobs), each with that namespace. Bounded by one page.
async fn executions_in<B: Backend>(
    inner: &Inner<B>,
    thing: &str,
    statuses: &[StoreStatus],
    namespace: Option<Option<&str>>,
) -> Result<Vec<(Execution, Option<String>)>, JobsError> {
    let list = inner
        .store
        .list_job_executions_for_thing(thing, statuses, &Page::first(MAX_PAGE))
        .await
        .map_err(|e| {
            tracing::error!(%thing, error = %e, "job executions unreadable");
            internal("Internal service failure")
        })?;
    let mut out = Vec::with_capacity(list.len());
    for e in &list {
        let ns = namespace_of(inner, &e.job_id).await?;
        if namespace.is_none_or(|want| want == ns.as_deref()) {
            out.push((to_iot(e), ns));
        }
    }
    Ok(out)
}

/// The thing's pending (QUEUED or IN_PROGRESS) executions: a namespaced request
/// (`$next/namespace-N/get`) sees only namespace N's jobs, a plain one sees all (AWS has no
/// namespaced get-pending or start-next, so those must reach every job).
async fn pending<B: Backend>(
    inner: &Inner<B>,
    thing: &str,
    namespace: Option<&str>,
) -> Result<Vec<Execution>, JobsError> {
    let list = executions_in(
        inner,
        thing,
        &[StoreStatus::Queued, StoreStatus::InProgress],
        namespace.map(Some),
    )
    .await?;
    Ok(list.into_iter().map(|(e, _)| e).collect())
}

/// A job's document (`None` when the job is gone).
async fn document<B: Backend>(inner: &Inner<B>, job_id: &str) -> Result<Option<Value>, JobsError> {
    Ok(job_facts(inner, job_id).await?.map(|f| f.document.clone()))
}

/// The next pending execution with its document.
async fn next<B: Backend>(
    inner: &Inner<B>,
    thing: &str,
    namespace: Option<&str>,
) -> Result<Option<(Execution, Value)>, JobsError> {
    let all = pending(inner, thing, namespace).await?;
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
    // Batched with other devices' updates (one commit for many under load).
    match inner.executions.put(to_store(new), signed(expected)).await {
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
    let namespace = topic.namespace.as_deref();
    match &topic.request {
        JobsRequest::GetPending => {
            let all = pending(inner, thing, namespace).await?;
            jobs::get_pending(&all, payload, now).map(Answer::Accepted)
        }
        JobsRequest::DescribeNext => {
            let n = next(inner, thing, namespace).await?;
            jobs::describe(n.as_ref().map(|(e, d)| (e, d)), true, "$next", payload, now)
                .map(Answer::Accepted)
        }
        JobsRequest::StartNext => {
            let n = next(inner, thing, namespace).await?;
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

/// Publishes `jobs/notify` and `jobs/notify-next` for `thing`: the plain topics for its
/// un-namespaced jobs, and `notify-namespace-N` / `notify-next-namespace-N` for every
/// namespace N one of its executions (any status, so a finished or canceled one's namespace
/// still hears that nothing is pending) belongs to.
pub async fn notify<B: Backend>(inner: &Inner<B>, thing: &str) {
    let now = now_secs();
    let all = match executions_in(inner, thing, &[], None).await {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut namespaces: std::collections::BTreeSet<Option<String>> =
        all.iter().map(|(_, ns)| ns.clone()).collect();
    namespaces.insert(None);
    for namespace in namespaces {
        let pending: Vec<Execution> = all
            .iter()
            .filter(|(e, ns)| *ns == namespace && !e.status.is_terminal())
            .map(|(e, _)| e.clone())
            .collect();
        let topic_for = |request| JobsTopic {
            namespace: namespace.clone(),
            ..JobsTopic::request(thing, request)
        };
        inner.reply(
            &topic_for(JobsRequest::Notify).to_string(),
            &jobs::notify_payload(&pending, now),
        );
        let next = match jobs::next_pending(&pending) {
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
        inner.reply(
            &topic_for(JobsRequest::NotifyNext).to_string(),
            &jobs::notify_next_payload(next.as_ref().map(|(e, d)| (e, d)), now),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_cache_stays_within_its_bound_and_answers_what_it_holds() {
        let cache = JobCache::default();
        let facts = |ns: &str| {
            Arc::new(JobFacts {
                namespace: Some(ns.to_string()),
                document: serde_json::json!({"ns": ns}),
            })
        };
        for i in 0..JOB_CACHE_ENTRIES * 2 + 1 {
            cache.put(&format!("job-{i}"), facts(&format!("n{i}")));
            assert!(cache.0.lock().unwrap().len() <= JOB_CACHE_ENTRIES);
        }
        let last = format!("job-{}", JOB_CACHE_ENTRIES * 2);
        let got = cache.get(&last).expect("the newest job is kept");
        assert_eq!(
            got.namespace.as_deref(),
            Some(format!("n{}", JOB_CACHE_ENTRIES * 2).as_str())
        );
        assert!(cache.get("job-0").is_none(), "emptied when full");
    }
}
