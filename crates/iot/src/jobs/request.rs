//! Parsing and checking Jobs request payloads.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{
    ExecutionStatus, JobsError, JobsErrorCode, MAX_REQUEST_BYTES, MAX_STATUS_DETAIL_KEY_BYTES,
    MAX_STATUS_DETAIL_VALUE_BYTES, MAX_STATUS_DETAILS, MAX_STEP_TIMEOUT_MINUTES,
};
use crate::MAX_CLIENT_TOKEN_BYTES;

/// The fields a Jobs request may carry, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct JobsRequestBody {
    pub client_token: Option<String>,
    pub status: Option<String>,
    pub status_details: Option<BTreeMap<String, String>>,
    pub expected_version: Option<u64>,
    pub execution_number: Option<u64>,
    pub include_job_document: Option<bool>,
    pub include_job_execution_state: Option<bool>,
    pub step_timeout_in_minutes: Option<u64>,
}

fn invalid(message: impl Into<String>, token: Option<&str>) -> JobsError {
    JobsError::new(JobsErrorCode::InvalidRequest, message, token)
}

/// Parses a request payload. An empty payload is `{}` (except where `status` is required,
/// which the caller checks).
pub(super) fn parse(bytes: &[u8]) -> Result<JobsRequestBody, JobsError> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(invalid(
            format!(
                "Request is {} bytes; at most {MAX_REQUEST_BYTES} are allowed",
                bytes.len()
            ),
            None,
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(JobsRequestBody::default());
    }
    let map = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(JobsError::new(
                JobsErrorCode::InvalidJson,
                "Request is not a JSON object",
                None,
            ));
        }
        Err(e) => {
            return Err(JobsError::new(
                JobsErrorCode::InvalidJson,
                format!("Invalid JSON: {e}"),
                None,
            ));
        }
    };
    let client_token = match map.get("clientToken") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_CLIENT_TOKEN_BYTES => {
            Some(s.clone())
        }
        Some(_) => {
            return Err(invalid(
                format!("clientToken must be a string of 1 to {MAX_CLIENT_TOKEN_BYTES} bytes"),
                None,
            ));
        }
    };
    let token = client_token.as_deref();
    let status = match map.get("status") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("status must be a string", token)),
    };
    Ok(JobsRequestBody {
        status,
        status_details: status_details(&map, token)?,
        expected_version: number(&map, "expectedVersion", u64::MAX, token)?,
        execution_number: number(&map, "executionNumber", u64::MAX, token)?,
        include_job_document: boolean(&map, "includeJobDocument", token)?,
        include_job_execution_state: boolean(&map, "includeJobExecutionState", token)?,
        step_timeout_in_minutes: match number(
            &map,
            "stepTimeoutInMinutes",
            MAX_STEP_TIMEOUT_MINUTES,
            token,
        )? {
            Some(0) => {
                return Err(invalid(
                    format!(
                        "stepTimeoutInMinutes must be between 1 and {MAX_STEP_TIMEOUT_MINUTES}"
                    ),
                    token,
                ));
            }
            other => other,
        },
        client_token,
    })
}

fn number(
    map: &Map<String, Value>,
    field: &str,
    max: u64,
    token: Option<&str>,
) -> Result<Option<u64>, JobsError> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= max => Ok(Some(v)),
            _ => Err(invalid(
                format!("{field} must be an integer between 0 and {max}"),
                token,
            )),
        },
        Some(_) => Err(invalid(format!("{field} must be a number"), token)),
    }
}

fn boolean(
    map: &Map<String, Value>,
    field: &str,
    token: Option<&str>,
) -> Result<Option<bool>, JobsError> {
    match map.get(field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(format!("{field} must be a boolean"), token)),
    }
}

fn status_details(
    map: &Map<String, Value>,
    token: Option<&str>,
) -> Result<Option<BTreeMap<String, String>>, JobsError> {
    let details = match map.get("statusDetails") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(details)) => details,
        Some(_) => return Err(invalid("statusDetails must be an object of strings", token)),
    };
    if details.len() > MAX_STATUS_DETAILS {
        return Err(invalid(
            format!(
                "statusDetails has {} entries; at most {MAX_STATUS_DETAILS} are allowed",
                details.len()
            ),
            token,
        ));
    }
    let mut out = BTreeMap::new();
    for (key, value) in details {
        let shown: String = key.chars().take(MAX_STATUS_DETAIL_KEY_BYTES).collect();
        if key.is_empty()
            || key.len() > MAX_STATUS_DETAIL_KEY_BYTES
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":_-".contains(&b))
        {
            return Err(invalid(
                format!(
                    "statusDetails key {shown:?} must be 1 to {MAX_STATUS_DETAIL_KEY_BYTES} bytes of letters, digits, ':', '_' or '-'"
                ),
                token,
            ));
        }
        let Value::String(text) = value else {
            return Err(invalid(
                format!("statusDetails.{shown} must be a string"),
                token,
            ));
        };
        if text.is_empty()
            || text.len() > MAX_STATUS_DETAIL_VALUE_BYTES
            || text.chars().any(char::is_control)
        {
            return Err(invalid(
                format!(
                    "statusDetails.{shown} must be 1 to {MAX_STATUS_DETAIL_VALUE_BYTES} bytes without control characters"
                ),
                token,
            ));
        }
        out.insert(key.clone(), text.clone());
    }
    Ok(Some(out))
}

/// The requested status of an update, checked to be a known status.
pub(super) fn requested_status(body: &JobsRequestBody) -> Result<ExecutionStatus, JobsError> {
    let token = body.client_token.as_deref();
    let Some(text) = &body.status else {
        return Err(invalid("status is required", token));
    };
    ExecutionStatus::parse(text).ok_or_else(|| {
        let shown: String = text.chars().take(32).collect();
        invalid(
            format!("status {shown:?} is not one of IN_PROGRESS, SUCCEEDED, FAILED, REJECTED"),
            token,
        )
    })
}
