//! `$aws/things/<thing>/jobs/…` topics, including the `namespace-<id>` forms Greengrass uses
//! (`notify-namespace-aws-gg-deployment`, `$next/namespace-aws-gg-deployment/get`,
//! `<jobId>/namespace-aws-gg-deployment/update`).

use std::fmt;

use super::{
    Outcome, TopicError, check_len, validate_job_id, validate_namespace, validate_thing_name,
};

/// What a jobs topic is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobsRequest {
    /// `jobs/get`: GetPendingJobExecutions.
    GetPending,
    /// `jobs/start-next`: StartNextPendingJobExecution.
    StartNext,
    /// `jobs/$next/get`: DescribeJobExecution of the next pending execution.
    DescribeNext,
    /// `jobs/<jobId>/get`: DescribeJobExecution.
    Describe { job_id: String },
    /// `jobs/<jobId>/update`: UpdateJobExecution.
    Update { job_id: String },
    /// `jobs/notify`: the service's ListNotification (no replies).
    Notify,
    /// `jobs/notify-next`: the service's NextNotification (no replies).
    NotifyNext,
}

/// A jobs topic: `$aws/things/<thing>/jobs/<…>[/accepted|/rejected]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobsTopic {
    pub thing: String,
    /// The `<id>` of a `namespace-<id>` segment (Greengrass: `aws-gg-deployment`). AWS
    /// defines namespaced forms for notify, notify-next, `$next/get`, `<jobId>/get` and
    /// `<jobId>/update`; the others have none.
    pub namespace: Option<String>,
    pub request: JobsRequest,
    /// `None` for the request (or notification) topic itself. Notifications have no replies.
    pub reply: Option<Outcome>,
}

const NAMESPACE_PREFIX: &str = "namespace-";

impl JobsTopic {
    /// Parses a jobs topic; names are validated.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        check_len(topic)?;
        let malformed = || TopicError::Malformed {
            family: "jobs",
            topic: topic.to_owned(),
        };
        let rest = topic.strip_prefix("$aws/things/").ok_or_else(malformed)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [thing, "jobs", tail @ ..] = parts.as_slice() else {
            return Err(malformed());
        };
        validate_thing_name(thing)?;
        let namespace_of = |segment: &str| -> Result<String, TopicError> {
            let id = segment
                .strip_prefix(NAMESPACE_PREFIX)
                .ok_or_else(malformed)?;
            validate_namespace(id)?;
            Ok(id.to_owned())
        };
        // Split off a trailing accepted/rejected.
        let (body, reply) = match tail.split_last() {
            Some((last, body)) if Outcome::parse(last).is_some() => (body, Outcome::parse(last)),
            _ => (tail, None),
        };
        let (request, namespace) = match body {
            ["get"] => (JobsRequest::GetPending, None),
            ["start-next"] => (JobsRequest::StartNext, None),
            [notify] if reply.is_none() && notify.starts_with("notify") => {
                if *notify == "notify" {
                    (JobsRequest::Notify, None)
                } else if *notify == "notify-next" {
                    (JobsRequest::NotifyNext, None)
                } else if let Some(ns) = notify.strip_prefix("notify-next-") {
                    (JobsRequest::NotifyNext, Some(namespace_of(ns)?))
                } else if let Some(ns) = notify.strip_prefix("notify-") {
                    (JobsRequest::Notify, Some(namespace_of(ns)?))
                } else {
                    return Err(malformed());
                }
            }
            ["$next", "get"] => (JobsRequest::DescribeNext, None),
            ["$next", ns, "get"] => (JobsRequest::DescribeNext, Some(namespace_of(ns)?)),
            [id, op] => (job_request(id, op).ok_or_else(malformed)??, None),
            [id, ns, op] => (
                job_request(id, op).ok_or_else(malformed)??,
                Some(namespace_of(ns)?),
            ),
            _ => return Err(malformed()),
        };
        Ok(Self {
            thing: (*thing).to_owned(),
            namespace,
            request,
            reply,
        })
    }

    /// The request topic for `request` on `thing` (no namespace).
    pub fn request(thing: &str, request: JobsRequest) -> Self {
        Self {
            thing: thing.to_owned(),
            namespace: None,
            request,
            reply: None,
        }
    }

    /// The same topic's `accepted`/`rejected` reply.
    pub fn with_reply(&self, reply: Outcome) -> Self {
        Self {
            reply: Some(reply),
            ..self.clone()
        }
    }

    /// The notification topics are published by the service and have no replies.
    pub fn is_notification(&self) -> bool {
        matches!(self.request, JobsRequest::Notify | JobsRequest::NotifyNext)
    }
}

/// `<jobId>/get` or `<jobId>/update`: `None` when `op` is neither, `Some(Err)` for a bad id.
fn job_request(id: &str, op: &str) -> Option<Result<JobsRequest, TopicError>> {
    let make: fn(String) -> JobsRequest = match op {
        "get" => |job_id| JobsRequest::Describe { job_id },
        "update" => |job_id| JobsRequest::Update { job_id },
        _ => return None,
    };
    Some(validate_job_id(id).map(|()| make(id.to_owned())))
}

impl fmt::Display for JobsTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "$aws/things/{}/jobs/", self.thing)?;
        let ns = self.namespace.as_deref();
        match (&self.request, ns) {
            (JobsRequest::GetPending, _) => f.write_str("get")?,
            (JobsRequest::StartNext, _) => f.write_str("start-next")?,
            (JobsRequest::Notify, None) => f.write_str("notify")?,
            (JobsRequest::Notify, Some(ns)) => write!(f, "notify-{NAMESPACE_PREFIX}{ns}")?,
            (JobsRequest::NotifyNext, None) => f.write_str("notify-next")?,
            (JobsRequest::NotifyNext, Some(ns)) => write!(f, "notify-next-{NAMESPACE_PREFIX}{ns}")?,
            (JobsRequest::DescribeNext, None) => f.write_str("$next/get")?,
            (JobsRequest::DescribeNext, Some(ns)) => write!(f, "$next/{NAMESPACE_PREFIX}{ns}/get")?,
            (JobsRequest::Describe { job_id }, None) => write!(f, "{job_id}/get")?,
            (JobsRequest::Describe { job_id }, Some(ns)) => {
                write!(f, "{job_id}/{NAMESPACE_PREFIX}{ns}/get")?
            }
            (JobsRequest::Update { job_id }, None) => write!(f, "{job_id}/update")?,
            (JobsRequest::Update { job_id }, Some(ns)) => {
                write!(f, "{job_id}/{NAMESPACE_PREFIX}{ns}/update")?
            }
        }
        if let Some(reply) = self.reply {
            write!(f, "/{}", reply.as_str())?;
        }
        Ok(())
    }
}
