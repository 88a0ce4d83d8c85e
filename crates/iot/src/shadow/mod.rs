//! The AWS IoT Device Shadow service semantics over a stored document.
//!
//! - [`apply_update`]: `…/update` → the new [`StoredShadow`] plus the `update/accepted`,
//!   `update/delta` (when a delta results) and `update/documents` payloads.
//! - [`get`]: `…/get` → the `get/accepted` document (state with `delta`, metadata, version).
//! - [`delete`]: `…/delete` → `delete/accepted` and the tombstone to store.
//! - Failures are a [`ShadowError`] whose [`ShadowError::payload`] is the `…/rejected` body
//!   `{code, message, timestamp, clientToken?}` with AWS's codes and messages.
//!
//! Rules (AWS IoT / Greengrass shadow manager, see `shadows.md` §3.1–3.2):
//! - the request is a JSON object with a required `state` (object or `null`); `desired` and
//!   `reported` are objects or `null`; a client's `delta` is dropped; any other key of `state`
//!   is refused (400);
//! - `null` removes a key, `"desired": null` / `"reported": null` remove the section,
//!   `"state": null` removes both; objects merge recursively; arrays and scalars replace; a
//!   new object made only of nulls is not created; objects left empty disappear;
//! - metadata mirrors the state with `{"timestamp": <epoch seconds>}` per updated leaf;
//! - a new shadow gets version 1 and every accepted update adds 1; a request `version` must
//!   equal the stored version (409 "Version conflict"), or be 1 for a shadow that never
//!   existed (400 "Invalid version");
//! - after a delete the version continues ([`VersionAfterDelete::Continue`], AWS IoT's
//!   behaviour: "the version number of the new device shadow document will follow that of the
//!   deleted one") or restarts at 1 ([`VersionAfterDelete::Restart`], the Greengrass shadow
//!   manager's); the caller keeps the tombstone [`delete`] returns to continue;
//! - the `/delta` message carries the fields of the new desired state that differ from the new
//!   reported state at the paths the request touched (numbers compare by value); it is
//!   produced only when that is not empty; [`get`] shows the whole delta.
//!
//! Bounds: request ≤ [`ShadowLimits::max_request_bytes`] (413 before parsing); desired +
//! reported after the update ≤ [`ShadowLimits::max_document_bytes`] serialized (413);
//! nesting ≤ [`MAX_STATE_DEPTH`] in each section (400); clientToken ≤
//! [`crate::MAX_CLIENT_TOKEN_BYTES`] (400).

mod request;
mod tree;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::json::compact_len;
use crate::topic::ShadowAddress;
use request::{SectionUpdate, UpdateRequest, parse_plain_request, parse_update};
use tree::{delta, merge_section, metadata_at, metadata_of_map, restrict};

/// AWS's nesting limit for `desired` and `reported` (an object holding a scalar is depth 1).
pub const MAX_STATE_DEPTH: usize = 6;
/// Default bound on desired + reported (serialized bytes), AWS's and Greengrass's 8 KiB.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 8 * 1024;
/// Default bound on a request payload, AWS IoT's MQTT payload limit (128 KiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 128 * 1024;

/// What version a shadow created after a delete starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionAfterDelete {
    /// The deleted version + 1 (AWS IoT Core).
    #[default]
    Continue,
    /// 1 (the Greengrass shadow manager's local shadows).
    Restart,
}

/// Configurable bounds and behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowLimits {
    /// Largest serialized `desired` + `reported` after an update (Greengrass:
    /// `shadowDocumentSizeLimitBytes`, default 8192, at most 30720).
    pub max_document_bytes: usize,
    /// Largest request payload accepted for parsing.
    pub max_request_bytes: usize,
    pub version_after_delete: VersionAfterDelete,
}

impl Default for ShadowLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            version_after_delete: VersionAfterDelete::Continue,
        }
    }
}

/// A pair of optional sections, as `state` and `metadata` hold them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sections {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<Map<String, Value>>,
}

impl Sections {
    fn to_value(&self) -> Value {
        let mut out = Map::new();
        if let Some(d) = &self.desired {
            out.insert("desired".into(), Value::Object(d.clone()));
        }
        if let Some(r) = &self.reported {
            out.insert("reported".into(), Value::Object(r.clone()));
        }
        Value::Object(out)
    }
}

/// A stored shadow, serialized in AWS's document shape:
/// `{"state": {desired?, reported?}, "metadata": {desired?, reported?}, "version", "timestamp"}`
/// plus `"deleted": true` for a tombstone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredShadow {
    pub state: Sections,
    pub metadata: Sections,
    pub version: u64,
    /// When it was last written (epoch seconds).
    pub timestamp: u64,
    /// A tombstone left by [`delete`]: the shadow does not exist, but its version is kept so a
    /// new one continues from it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl StoredShadow {
    /// The live document (`None` for a tombstone).
    fn live(stored: Option<&StoredShadow>) -> Option<&StoredShadow> {
        stored.filter(|s| !s.deleted)
    }

    /// `{state, metadata, version}`, as `update/documents` shows it.
    fn snapshot(&self) -> Value {
        object([
            ("state", self.state.to_value()),
            ("metadata", self.metadata.to_value()),
            ("version", Value::from(self.version)),
        ])
    }

    /// Desired vs reported, the whole of it.
    pub fn delta(&self) -> Option<Map<String, Value>> {
        self.state
            .desired
            .as_ref()
            .and_then(|d| delta(d, self.state.reported.as_ref()))
    }
}

/// An AWS shadow error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    Conflict,
    PayloadTooLarge,
    Internal,
}

impl ErrorCode {
    pub fn as_u16(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::Internal => 500,
        }
    }
}

/// A rejected shadow request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("shadow request rejected ({}): {message}", code.as_u16())]
pub struct ShadowError {
    pub code: ErrorCode,
    pub message: String,
    /// The request's clientToken, when it had a valid one.
    pub client_token: Option<String>,
}

impl ShadowError {
    pub(crate) fn new(
        code: ErrorCode,
        message: impl Into<String>,
        client_token: Option<&str>,
    ) -> Self {
        Self {
            code,
            message: message.into(),
            client_token: client_token.map(str::to_owned),
        }
    }

    /// The `…/rejected` payload: `{code, message, timestamp, clientToken?}`.
    pub fn payload(&self, now_epoch_secs: u64) -> Value {
        let mut out = json!({
            "code": self.code.as_u16(),
            "message": self.message,
            "timestamp": now_epoch_secs,
        });
        if let (Some(token), Value::Object(map)) = (&self.client_token, &mut out) {
            map.insert("clientToken".into(), Value::String(token.clone()));
        }
        out
    }
}

/// What an accepted update produces.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateOutcome {
    /// The shadow to store.
    pub stored: StoredShadow,
    /// `update/accepted`: the request's state, the metadata of the updated leaves, the new
    /// version, the timestamp and the clientToken.
    pub accepted: Value,
    /// `update/delta`, when the update leaves desired differing from reported.
    pub delta: Option<Value>,
    /// `update/documents`: previous (absent for a new shadow) and current.
    pub documents: Value,
}

/// What an accepted delete produces.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteOutcome {
    /// `delete/accepted`: `{version, timestamp, clientToken?}` (the deleted version).
    pub accepted: Value,
    /// What to store in place of the shadow so a later update continues its version; a
    /// caller using [`VersionAfterDelete::Restart`] may drop the record instead.
    pub tombstone: StoredShadow,
}

/// An object from owned entries (`json!` would copy every embedded value once more).
fn object<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

fn with_token(mut value: Value, token: Option<&str>) -> Value {
    if let (Some(token), Value::Object(map)) = (token, &mut value) {
        map.insert("clientToken".into(), Value::String(token.to_owned()));
    }
    value
}

/// Applies an `…/update` request to the stored shadow (`None` when it never existed).
pub fn apply_update(
    stored: Option<&StoredShadow>,
    request_json: &[u8],
    now_epoch_secs: u64,
    limits: &ShadowLimits,
) -> Result<UpdateOutcome, ShadowError> {
    let now = now_epoch_secs;
    let request = parse_update(request_json, limits)?;
    let token = request.client_token.as_deref();
    let live = StoredShadow::live(stored);

    let base_version = match (live, stored) {
        (Some(s), _) => s.version,
        (None, Some(tomb)) if limits.version_after_delete == VersionAfterDelete::Continue => {
            tomb.version
        }
        _ => 0,
    };
    if let Some(expected) = request.version {
        let ok = match (live, stored) {
            (Some(s), _) => expected == s.version,
            (None, Some(_)) if base_version > 0 => expected == base_version,
            _ => expected == 1,
        };
        if !ok {
            return Err(if live.is_none() && base_version == 0 {
                ShadowError::new(ErrorCode::BadRequest, "Invalid version", token)
            } else {
                ShadowError::new(ErrorCode::Conflict, "Version conflict", token)
            });
        }
    }
    let version = base_version
        .checked_add(1)
        .ok_or_else(|| ShadowError::new(ErrorCode::Internal, "Internal service failure", token))?;

    let mut next = live.cloned().unwrap_or_default();
    apply_section(
        &mut next.state.desired,
        &mut next.metadata.desired,
        &request.desired,
        now,
    );
    apply_section(
        &mut next.state.reported,
        &mut next.metadata.reported,
        &request.reported,
        now,
    );
    next.version = version;
    next.timestamp = now;
    next.deleted = false;

    let size = next.state.desired.as_ref().map_or(0, compact_len)
        + next.state.reported.as_ref().map_or(0, compact_len);
    if size > limits.max_document_bytes {
        return Err(ShadowError::new(
            ErrorCode::PayloadTooLarge,
            "The payload exceeds the maximum size allowed",
            token,
        ));
    }

    let accepted = with_token(
        object([
            ("state", request.state_echo.clone()),
            ("metadata", accepted_metadata(&request, now)),
            ("version", Value::from(version)),
            ("timestamp", Value::from(now)),
        ]),
        token,
    );
    let delta = delta_payload(&next, &request, now);
    let mut documents = Map::new();
    if let Some(prev) = live {
        documents.insert("previous".into(), prev.snapshot());
    }
    documents.insert("current".into(), next.snapshot());
    documents.insert("timestamp".into(), json!(now));
    let documents = with_token(Value::Object(documents), token);
    Ok(UpdateOutcome {
        stored: next,
        accepted,
        delta,
        documents,
    })
}

fn apply_section(
    state: &mut Option<Map<String, Value>>,
    metadata: &mut Option<Map<String, Value>>,
    update: &SectionUpdate,
    now: u64,
) {
    match update {
        SectionUpdate::Absent => {}
        SectionUpdate::Clear => {
            *state = None;
            *metadata = None;
        }
        SectionUpdate::Merge(changes) => {
            let mut s = state.take().unwrap_or_default();
            let mut m = metadata.take().unwrap_or_default();
            merge_section(&mut s, &mut m, changes, now);
            if !s.is_empty() {
                *state = Some(s);
                *metadata = Some(m);
            }
        }
    }
}

/// Metadata of what the request wrote, removals (nulls) included.
fn accepted_metadata(request: &UpdateRequest, now: u64) -> Value {
    let mut out = Map::new();
    for (name, section) in [
        ("desired", &request.desired),
        ("reported", &request.reported),
    ] {
        match section {
            SectionUpdate::Absent => {}
            SectionUpdate::Clear => {
                out.insert(name.into(), json!({ "timestamp": now }));
            }
            SectionUpdate::Merge(changes) => {
                out.insert(name.into(), Value::Object(metadata_of_map(changes, now)));
            }
        }
    }
    Value::Object(out)
}

/// The `/delta` message for an accepted update, restricted to the paths it touched.
fn delta_payload(next: &StoredShadow, request: &UpdateRequest, now: u64) -> Option<Value> {
    let full = next.delta()?;
    let touched = match (&request.desired, &request.reported) {
        (SectionUpdate::Clear, _) | (_, SectionUpdate::Clear) => Some(full.clone()),
        (d, r) => {
            let mut mask = Map::new();
            for section in [d, r] {
                if let SectionUpdate::Merge(changes) = section {
                    union_into(&mut mask, changes);
                }
            }
            restrict(&full, &mask)
        }
    }?;
    let meta = next
        .metadata
        .desired
        .as_ref()
        .map(|m| metadata_at(m, &touched))
        .unwrap_or_default();
    Some(with_token(
        object([
            ("version", Value::from(next.version)),
            ("timestamp", Value::from(now)),
            ("state", Value::Object(touched)),
            ("metadata", Value::Object(meta)),
        ]),
        request.client_token.as_deref(),
    ))
}

/// Adds the paths of `more` to `mask`.
fn union_into(mask: &mut Map<String, Value>, more: &Map<String, Value>) {
    for (key, value) in more {
        match (mask.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(inner)) => union_into(existing, inner),
            (Some(_), Value::Object(_)) => {}
            (Some(_), _) => {
                // A scalar (or null) covers the whole subtree.
                mask.insert(key.clone(), Value::Null);
            }
            (None, v) => {
                mask.insert(key.clone(), v.clone());
            }
        }
    }
}

/// Answers `…/get`: the `get/accepted` document, or 404 when the shadow does not exist.
/// `request_json` may be empty or `{"clientToken": …}`.
pub fn get(
    stored: Option<&StoredShadow>,
    request_json: &[u8],
    address: &ShadowAddress,
    now_epoch_secs: u64,
    limits: &ShadowLimits,
) -> Result<Value, ShadowError> {
    let request = parse_plain_request(request_json, limits, false)?;
    let token = request.client_token.as_deref();
    let shadow = StoredShadow::live(stored).ok_or_else(|| not_found(address, token))?;
    let mut state = Map::new();
    if let Some(d) = &shadow.state.desired {
        state.insert("desired".into(), Value::Object(d.clone()));
    }
    if let Some(r) = &shadow.state.reported {
        state.insert("reported".into(), Value::Object(r.clone()));
    }
    if let Some(delta) = shadow.delta() {
        state.insert("delta".into(), Value::Object(delta));
    }
    Ok(with_token(
        object([
            ("state", Value::Object(state)),
            ("metadata", shadow.metadata.to_value()),
            ("version", Value::from(shadow.version)),
            ("timestamp", Value::from(now_epoch_secs)),
        ]),
        token,
    ))
}

/// Answers `…/delete`: `delete/accepted` and the tombstone, or 404 when the shadow does not
/// exist, or 409 when the request's `version` is not the stored one.
pub fn delete(
    stored: Option<&StoredShadow>,
    request_json: &[u8],
    address: &ShadowAddress,
    now_epoch_secs: u64,
    limits: &ShadowLimits,
) -> Result<DeleteOutcome, ShadowError> {
    let request = parse_plain_request(request_json, limits, true)?;
    let token = request.client_token.as_deref();
    let shadow = StoredShadow::live(stored).ok_or_else(|| not_found(address, token))?;
    if request.version.is_some_and(|v| v != shadow.version) {
        return Err(ShadowError::new(
            ErrorCode::Conflict,
            "Version conflict",
            token,
        ));
    }
    Ok(DeleteOutcome {
        accepted: with_token(
            json!({ "version": shadow.version, "timestamp": now_epoch_secs }),
            token,
        ),
        tombstone: StoredShadow {
            version: shadow.version,
            timestamp: now_epoch_secs,
            deleted: true,
            ..StoredShadow::default()
        },
    })
}

fn not_found(address: &ShadowAddress, token: Option<&str>) -> ShadowError {
    ShadowError::new(
        ErrorCode::NotFound,
        format!("No shadow exists with name: '{}'", address.display_name()),
        token,
    )
}

#[cfg(test)]
mod tests;
