//! The AWS IoT Jobs MQTT API as pure transitions over job-execution records.
//!
//! The caller loads the records (an [`Execution`] per job and thing, plus the job's document)
//! and stores what an operation returns; nothing here touches storage.
//!
//! - [`next_pending`]: which execution `$next` means: the oldest IN_PROGRESS one, else the
//!   oldest QUEUED one (by `queuedAt`, then job id).
//! - [`describe`]: `jobs/<jobId>/get` and `jobs/$next/get`.
//! - [`start_next`]: `jobs/start-next` (QUEUED → IN_PROGRESS; an IN_PROGRESS one is returned
//!   unchanged).
//! - [`update`]: `jobs/<jobId>/update`: status transitions, `expectedVersion`, `executionNumber`,
//!   `statusDetails`, `includeJobExecutionState`, `includeJobDocument`.
//! - [`get_pending`]: `jobs/get`; [`notify_payload`] and [`notify_next_payload`]: what the
//!   service publishes on `jobs/notify` and `jobs/notify-next`.
//! - Failures are a [`JobsError`] whose [`JobsError::payload`] is the `…/rejected` body
//!   `{code, message, clientToken?, timestamp, executionState?}` with AWS's codes.
//!
//! Transitions a device may ask for: QUEUED → IN_PROGRESS | SUCCEEDED | FAILED | REJECTED;
//! IN_PROGRESS → IN_PROGRESS (new details) | SUCCEEDED | FAILED | REJECTED. A terminal
//! execution accepts nothing (`InvalidStateTransition`); QUEUED, CANCELED, TIMED_OUT and
//! REMOVED are the service's to set (`InvalidStateTransition`).
//!
//! Mapping to `lichen-cloud-store`'s `JobExecution` (this crate depends on no other lichen
//! crate): `job_id`, `thing` → `thing_name`, `status` (same names), `status_details`,
//! `version_number`, `execution_number`, `queued_at`, `started_at`, `last_updated_at` (the
//! store's `i64` seconds are this crate's `u64`).
//!
//! Bounds: request ≤ [`MAX_REQUEST_BYTES`]; `statusDetails` ≤ [`MAX_STATUS_DETAILS`] entries,
//! keys 1–[`MAX_STATUS_DETAIL_KEY_BYTES`] of `[a-zA-Z0-9:_-]`, values
//! 1–[`MAX_STATUS_DETAIL_VALUE_BYTES`] without control characters; clientToken ≤
//! [`crate::MAX_CLIENT_TOKEN_BYTES`]; `stepTimeoutInMinutes` 1–[`MAX_STEP_TIMEOUT_MINUTES`];
//! `jobs/get` lists ≤ [`MAX_PENDING_LISTED`] per status; `jobs/notify` ≤
//! [`MAX_NOTIFY_LISTED`] executions (AWS's 15).

mod ops;
mod request;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use thiserror::Error;

pub use ops::{
    StartNextOutcome, UpdateOutcome, describe, get_pending, next_pending, notify_next_payload,
    notify_payload, start_next, update,
};

/// Largest request payload parsed.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Most `statusDetails` entries (AWS).
pub const MAX_STATUS_DETAILS: usize = 10;
/// Longest `statusDetails` key (AWS).
pub const MAX_STATUS_DETAIL_KEY_BYTES: usize = 128;
/// Longest `statusDetails` value (AWS).
pub const MAX_STATUS_DETAIL_VALUE_BYTES: usize = 1024;
/// Longest step timeout (AWS: 7 days).
pub const MAX_STEP_TIMEOUT_MINUTES: u64 = 10_080;
/// Most executions per status in a `jobs/get` answer.
pub const MAX_PENDING_LISTED: usize = 100;
/// Most executions in a `jobs/notify` message (AWS: "up to 15").
pub const MAX_NOTIFY_LISTED: usize = 15;

/// A job execution's status (AWS names on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    Queued,
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
    Rejected,
    Removed,
    Canceled,
}

impl ExecutionStatus {
    pub const ALL: [Self; 8] = [
        Self::Queued,
        Self::InProgress,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Rejected,
        Self::Removed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::InProgress => "IN_PROGRESS",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::TimedOut => "TIMED_OUT",
            Self::Rejected => "REJECTED",
            Self::Removed => "REMOVED",
            Self::Canceled => "CANCELED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// QUEUED and IN_PROGRESS are pending; every other status ends the execution.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::InProgress)
    }

    /// Whether a device may ask for this status in an update.
    pub fn device_settable(self) -> bool {
        matches!(
            self,
            Self::InProgress | Self::Succeeded | Self::Failed | Self::Rejected
        )
    }
}

/// One job execution: a job on a thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    pub job_id: String,
    pub thing_name: String,
    pub status: ExecutionStatus,
    #[serde(default)]
    pub status_details: BTreeMap<String, String>,
    /// Starts at 1; every accepted change adds 1.
    pub version_number: u64,
    pub execution_number: u64,
    /// Epoch seconds.
    pub queued_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    pub last_updated_at: u64,
}

impl Execution {
    /// A new QUEUED execution (version 1).
    pub fn queued(job_id: &str, thing_name: &str, execution_number: u64, now: u64) -> Self {
        Self {
            job_id: job_id.to_owned(),
            thing_name: thing_name.to_owned(),
            status: ExecutionStatus::Queued,
            status_details: BTreeMap::new(),
            version_number: 1,
            execution_number,
            queued_at: now,
            started_at: None,
            last_updated_at: now,
        }
    }

    /// AWS's `JobExecutionState`: `{status, statusDetails, versionNumber}`.
    pub fn state(&self) -> Value {
        json!({
            "status": self.status.as_str(),
            "statusDetails": self.status_details,
            "versionNumber": self.version_number,
        })
    }

    /// AWS's `JobExecutionData`, with the job document when given.
    pub fn data(&self, document: Option<&Value>) -> Value {
        let mut out = Map::new();
        out.insert("jobId".into(), json!(self.job_id));
        out.insert("thingName".into(), json!(self.thing_name));
        if let Some(doc) = document {
            out.insert("jobDocument".into(), doc.clone());
        }
        out.insert("status".into(), json!(self.status.as_str()));
        out.insert("statusDetails".into(), json!(self.status_details));
        out.insert("queuedAt".into(), json!(self.queued_at));
        if let Some(started) = self.started_at {
            out.insert("startedAt".into(), json!(started));
        }
        out.insert("lastUpdatedAt".into(), json!(self.last_updated_at));
        out.insert("versionNumber".into(), json!(self.version_number));
        out.insert("executionNumber".into(), json!(self.execution_number));
        Value::Object(out)
    }

    /// AWS's `JobExecutionSummary`.
    pub fn summary(&self) -> Value {
        let mut out = Map::new();
        out.insert("jobId".into(), json!(self.job_id));
        out.insert("queuedAt".into(), json!(self.queued_at));
        if let Some(started) = self.started_at {
            out.insert("startedAt".into(), json!(started));
        }
        out.insert("lastUpdatedAt".into(), json!(self.last_updated_at));
        out.insert("versionNumber".into(), json!(self.version_number));
        out.insert("executionNumber".into(), json!(self.execution_number));
        Value::Object(out)
    }
}

/// AWS Jobs rejection codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobsErrorCode {
    InvalidTopic,
    InvalidJson,
    InvalidRequest,
    InvalidStateTransition,
    ResourceNotFound,
    VersionMismatch,
    InternalError,
    RequestThrottled,
    TerminalStateReached,
}

impl JobsErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidTopic => "InvalidTopic",
            Self::InvalidJson => "InvalidJson",
            Self::InvalidRequest => "InvalidRequest",
            Self::InvalidStateTransition => "InvalidStateTransition",
            Self::ResourceNotFound => "ResourceNotFound",
            Self::VersionMismatch => "VersionMismatch",
            Self::InternalError => "InternalError",
            Self::RequestThrottled => "RequestThrottled",
            Self::TerminalStateReached => "TerminalStateReached",
        }
    }
}

/// A rejected jobs request.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("jobs request rejected ({}): {message}", code.as_str())]
pub struct JobsError {
    pub code: JobsErrorCode,
    pub message: String,
    pub client_token: Option<String>,
    /// The execution's state, for `VersionMismatch` and `InvalidStateTransition`.
    pub execution_state: Option<Box<Value>>,
}

impl JobsError {
    pub fn new(
        code: JobsErrorCode,
        message: impl Into<String>,
        client_token: Option<&str>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            client_token: client_token.map(str::to_owned),
            execution_state: None,
        }
    }

    fn with_state(mut self, execution: &Execution) -> Self {
        self.execution_state = Some(Box::new(execution.state()));
        self
    }

    /// The error for a topic under `$aws/things/<thing>/jobs/` that maps to no API.
    pub fn invalid_topic(topic: &str) -> Self {
        let shown: String = topic.chars().take(256).collect();
        Self::new(
            JobsErrorCode::InvalidTopic,
            format!("Topic {shown} does not map to a Jobs API"),
            None,
        )
    }

    /// The `…/rejected` payload: `{code, message, clientToken?, timestamp, executionState?}`.
    pub fn payload(&self, now_epoch_secs: u64) -> Value {
        let mut out = Map::new();
        out.insert("code".into(), json!(self.code.as_str()));
        out.insert("message".into(), json!(self.message));
        if let Some(token) = &self.client_token {
            out.insert("clientToken".into(), json!(token));
        }
        out.insert("timestamp".into(), json!(now_epoch_secs));
        if let Some(state) = &self.execution_state {
            out.insert("executionState".into(), (**state).clone());
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests;
