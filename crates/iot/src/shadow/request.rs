//! Parsing and checking shadow request payloads.

use serde_json::{Map, Value};

use super::{ErrorCode, MAX_STATE_DEPTH, ShadowError, ShadowLimits};
use crate::MAX_CLIENT_TOKEN_BYTES;
use crate::json::depth;

/// What a request does to one section.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SectionUpdate {
    Absent,
    /// `"desired": null` (or `"state": null`).
    Clear,
    Merge(Map<String, Value>),
}

/// A checked `…/update` request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct UpdateRequest {
    pub desired: SectionUpdate,
    pub reported: SectionUpdate,
    pub client_token: Option<String>,
    pub version: Option<u64>,
    /// The request's `state` as `update/accepted` echoes it (a client's `delta` dropped).
    pub state_echo: Value,
}

/// A checked `…/get` or `…/delete` request.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct PlainRequest {
    pub client_token: Option<String>,
    pub version: Option<u64>,
}

fn bad(message: impl Into<String>, token: Option<&str>) -> ShadowError {
    ShadowError::new(ErrorCode::BadRequest, message, token)
}

/// Size check, then JSON object parse.
fn parse_object(bytes: &[u8], limits: &ShadowLimits) -> Result<Map<String, Value>, ShadowError> {
    if bytes.len() > limits.max_request_bytes {
        return Err(ShadowError::new(
            ErrorCode::PayloadTooLarge,
            "The payload exceeds the maximum size allowed",
            None,
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) | Err(_) => Err(bad("Invalid JSON", None)),
    }
}

fn client_token(map: &Map<String, Value>) -> Result<Option<String>, ShadowError> {
    match map.get("clientToken") {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_CLIENT_TOKEN_BYTES => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(bad("Invalid clientToken", None)),
    }
}

fn version(map: &Map<String, Value>, token: Option<&str>) -> Result<Option<u64>, ShadowError> {
    match map.get("version") {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad("Invalid version", token)),
        Some(_) => Err(bad("Invalid version", token)),
    }
}

/// Parses a get/delete request: empty, or an object with optional `clientToken` (and, for a
/// delete, `version`).
pub(super) fn parse_plain_request(
    bytes: &[u8],
    limits: &ShadowLimits,
    allow_version: bool,
) -> Result<PlainRequest, ShadowError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(PlainRequest::default());
    }
    let map = parse_object(bytes, limits)?;
    let client_token = client_token(&map)?;
    let version = if allow_version {
        version(&map, client_token.as_deref())?
    } else {
        None
    };
    Ok(PlainRequest {
        client_token,
        version,
    })
}

fn section(
    state: &Map<String, Value>,
    name: &str,
    label: &str,
    token: Option<&str>,
) -> Result<SectionUpdate, ShadowError> {
    match state.get(name) {
        None => Ok(SectionUpdate::Absent),
        Some(Value::Null) => Ok(SectionUpdate::Clear),
        Some(Value::Object(map)) => {
            if depth(&Value::Object(map.clone())) > MAX_STATE_DEPTH {
                return Err(bad(
                    format!(
                        "JSON contains too many levels of nesting; maximum is {MAX_STATE_DEPTH}"
                    ),
                    token,
                ));
            }
            Ok(SectionUpdate::Merge(map.clone()))
        }
        Some(_) => Err(bad(format!("{label} node must be an object"), token)),
    }
}

/// Parses and checks an `…/update` request.
pub(super) fn parse_update(
    bytes: &[u8],
    limits: &ShadowLimits,
) -> Result<UpdateRequest, ShadowError> {
    let map = parse_object(bytes, limits)?;
    let client_token = client_token(&map)?;
    let token = client_token.as_deref();
    let version = version(&map, token)?;
    let (desired, reported, state_echo) = match map.get("state") {
        None => return Err(bad("Missing required node: state", token)),
        Some(Value::Null) => (SectionUpdate::Clear, SectionUpdate::Clear, Value::Null),
        Some(Value::Object(state)) => {
            if let Some(other) = state
                .keys()
                .find(|k| !matches!(k.as_str(), "desired" | "reported" | "delta"))
            {
                let shown: String = other.chars().take(64).collect();
                return Err(bad(
                    format!("State contains an invalid node: '{shown}'"),
                    token,
                ));
            }
            let desired = section(state, "desired", "Desired", token)?;
            let reported = section(state, "reported", "Reported", token)?;
            let mut echo = state.clone();
            echo.remove("delta");
            (desired, reported, Value::Object(echo))
        }
        Some(_) => return Err(bad("State node must be an object", token)),
    };
    Ok(UpdateRequest {
        desired,
        reported,
        client_token,
        version,
        state_echo,
    })
}
