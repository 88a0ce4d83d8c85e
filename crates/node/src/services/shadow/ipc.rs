//! The shadow IPC operations in the reference's shapes:
//!
//! - `GetThingShadow{thingName, shadowName?}` → `{payload}` (the `get/accepted` JSON, base64
//!   on the wire as every blob);
//! - `UpdateThingShadow{thingName, shadowName?, payload}` → `{payload}` (`update/accepted`);
//! - `DeleteThingShadow{thingName, shadowName?}` → `{payload: ""}` (empty);
//! - `ListNamedShadowsForThing{thingName, pageSize? (1–100, 25), nextToken?}` →
//!   `{results, timestamp, nextToken?}`.
//!
//! `shadowName` `""` or absent is the classic shadow. Authorization: service
//! `aws.greengrass.ShadowManager`, operation `aws.greengrass#<Name>`, resource
//! `$aws/things/<thing>/shadow` or `$aws/things/<thing>/shadow/name/<shadow>` (the thing name
//! for List); `{iot:thingName}` in a policy is the core's thing (the IPC authorizer's rule).
//! Errors: 400/413 → InvalidArgumentsError, 404 → ResourceNotFoundError (resourceType
//! `shadow`), 409 → ConflictError, over a rate limit → ServiceError "Too Many Requests",
//! the store failing → ServiceError.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lichen_iot::shadow::ErrorCode;
use lichen_iot::topic::{ShadowAddress, ShadowOp};
use lichen_ipc::{Call, ErrorShape, Handler, OpError, Operation, Reply, Resource};
use lichen_shadow::{Failure, Origin};
use serde::Deserialize;
use serde_json::json;

use super::{COMPONENT, Shared};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShadowRequest {
    thing_name: Option<String>,
    shadow_name: Option<String>,
    payload: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    thing_name: Option<String>,
    page_size: Option<i64>,
    next_token: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(op: &str, payload: &[u8]) -> Result<T, OpError> {
    let body: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        payload
    };
    serde_json::from_slice(body).map_err(|e| OpError::invalid(format!("invalid {op} request: {e}")))
}

fn address(thing: Option<&str>, shadow: Option<&str>) -> Result<ShadowAddress, OpError> {
    let thing = thing
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OpError::invalid("thingName is required"))?;
    ShadowAddress::new(thing, shadow.filter(|s| !s.is_empty()))
        .map_err(|e| OpError::invalid(e.to_string()))
}

/// The shadow resource a Get/Update/Delete must be allowed on.
fn shadow_resource(call: &Call<'_>) -> Result<Vec<String>, OpError> {
    let req: ShadowRequest = parse("shadow", call.payload())?;
    let a = address(req.thing_name.as_deref(), req.shadow_name.as_deref())?;
    Ok(vec![a.prefix()])
}

fn thing_resource(call: &Call<'_>) -> Result<Vec<String>, OpError> {
    let req: ListRequest = parse("ListNamedShadowsForThing", call.payload())?;
    let a = address(req.thing_name.as_deref(), None)?;
    Ok(vec![a.thing])
}

fn op_error(e: Failure, address: &ShadowAddress) -> OpError {
    match e {
        Failure::Rejected(e) => match e.code {
            ErrorCode::NotFound => {
                OpError::not_found("shadow", address.shadow.as_deref().unwrap_or(""), e.message)
            }
            ErrorCode::Conflict => OpError::new(ErrorShape::ConflictError, e.message),
            ErrorCode::BadRequest | ErrorCode::PayloadTooLarge => OpError::invalid(e.message),
            ErrorCode::Internal => OpError::service(e.message),
        },
        Failure::Throttled => OpError::service(lichen_shadow::manager::THROTTLED_MESSAGE),
        Failure::Invalid(m) => OpError::invalid(m),
        Failure::Store(e) => OpError::service(format!("the local shadow store failed: {e}")),
    }
}

const GET_ERRORS: &[ErrorShape] = &[
    ErrorShape::InvalidArgumentsError,
    ErrorShape::ResourceNotFoundError,
];
const UPDATE_ERRORS: &[ErrorShape] =
    &[ErrorShape::ConflictError, ErrorShape::InvalidArgumentsError];

fn shadow_op(shared: Arc<Shared>, name: &'static str, op: ShadowOp) -> Operation {
    Operation::new(
        name,
        Handler::asynchronous(move |call| {
            let shared = shared.clone();
            Box::pin(async move {
                let req: ShadowRequest = parse(name, call.payload())?;
                let a = address(req.thing_name.as_deref(), req.shadow_name.as_deref())?;
                let payload = match op {
                    ShadowOp::Update => {
                        let p = B64
                            .decode(req.payload.unwrap_or_default())
                            .map_err(|e| OpError::invalid(format!("payload is not base64: {e}")))?;
                        if p.is_empty() {
                            return Err(OpError::invalid("Missing update payload"));
                        }
                        p
                    }
                    _ => Vec::new(),
                };
                let doc = shared
                    .run(op, a.clone(), payload, Origin::Local)
                    .await
                    .map_err(|e| op_error(e, &a))?;
                let payload = match op {
                    ShadowOp::Delete => String::new(),
                    _ => B64.encode(serde_json::to_vec(&doc).unwrap_or_default()),
                };
                Ok(Reply::Unary(json!({ "payload": payload })))
            })
        }),
    )
    .authorize(COMPONENT, Resource::Computed(shadow_resource))
    .errors(match op {
        ShadowOp::Update => UPDATE_ERRORS,
        _ => GET_ERRORS,
    })
    .slow()
}

fn list_op(shared: Arc<Shared>) -> Operation {
    Operation::new(
        "ListNamedShadowsForThing",
        Handler::asynchronous(move |call| {
            let shared = shared.clone();
            Box::pin(async move {
                let req: ListRequest = parse("ListNamedShadowsForThing", call.payload())?;
                let a = address(req.thing_name.as_deref(), None)?;
                let manager = shared
                    .manager()
                    .cloned()
                    .ok_or_else(|| OpError::service("the shadow service is not running"))?;
                if !manager.admit(&a.thing) {
                    return Err(op_error(Failure::Throttled, &a));
                }
                let thing = a.thing.clone();
                let page = tokio::task::spawn_blocking(move || {
                    manager.list_named(&thing, req.page_size, req.next_token.as_deref())
                })
                .await
                .map_err(|e| OpError::service(e.to_string()))?
                .map_err(|e| op_error(e, &a))?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let mut out = json!({ "results": page.results, "timestamp": now });
                if let Some(t) = page.next_token {
                    out["nextToken"] = json!(t);
                }
                Ok(Reply::Unary(out))
            })
        }),
    )
    .authorize(COMPONENT, Resource::Computed(thing_resource))
    .errors(GET_ERRORS)
    .slow()
}

pub(super) fn operations(shared: Arc<Shared>) -> Vec<Operation> {
    vec![
        shadow_op(shared.clone(), "GetThingShadow", ShadowOp::Get),
        shadow_op(shared.clone(), "UpdateThingShadow", ShadowOp::Update),
        shadow_op(shared.clone(), "DeleteThingShadow", ShadowOp::Delete),
        list_op(shared),
    ]
}
