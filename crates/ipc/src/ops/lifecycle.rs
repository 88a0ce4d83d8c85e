//! Lifecycle operations: UpdateState, SubscribeToComponentUpdates, DeferComponentUpdate
//! (no policy needed) and PauseComponent/ResumeComponent (`aws.greengrass.ipc.lifecycle`).

use lichen_core::ReportedState;
use serde::Deserialize;
use serde_json::json;

use super::{Caller, Reply, Shared, parse};
use crate::error::OpError;

#[derive(Deserialize)]
struct UpdateStateRequest {
    state: Option<String>,
}

pub(super) fn update_state(
    shared: &Shared,
    caller: &Caller,
    payload: &[u8],
) -> Result<Reply, OpError> {
    let req: UpdateStateRequest = parse("UpdateState", payload)?;
    let state = match req.state.as_deref() {
        Some("RUNNING") => ReportedState::Running,
        Some("ERRORED") => ReportedState::Errored,
        other => {
            return Err(OpError::invalid(format!(
                "state must be RUNNING or ERRORED, not {other:?}"
            )));
        }
    };
    shared.core.report_state(&caller.component, state)?;
    Ok(Reply::empty())
}

pub(super) fn subscribe_updates(shared: &Shared, caller: &Caller) -> Result<Reply, OpError> {
    let registration = shared.hooks.register_update_subscriber(&caller.component);
    Ok(Reply::Stream {
        initial: json!({}),
        run: Box::new(move |sink| Box::pin(registration.forward(sink))),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeferRequest {
    deployment_id: Option<String>,
    /// The component the answer is for; defaults to the caller.
    message: Option<String>,
    recheck_after_ms: Option<i64>,
}

pub(super) fn defer(shared: &Shared, caller: &Caller, payload: &[u8]) -> Result<Reply, OpError> {
    let req: DeferRequest = parse("DeferComponentUpdate", payload)?;
    let deployment_id = req
        .deployment_id
        .filter(|d| !d.is_empty())
        .ok_or_else(|| OpError::invalid("deploymentId is required"))?;
    let ms = req.recheck_after_ms.unwrap_or(0);
    if ms < 0 {
        return Err(OpError::invalid("recheckAfterMs must not be negative"));
    }
    let component = req
        .message
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| caller.component.clone());
    shared.hooks.defer(&component, &deployment_id, ms as u64)?;
    Ok(Reply::empty())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ComponentRequest {
    component_name: Option<String>,
}

pub(super) fn component_name(op: &str, payload: &[u8]) -> Result<String, OpError> {
    let req: ComponentRequest = parse(op, payload)?;
    req.component_name
        .filter(|c| !c.is_empty())
        .ok_or_else(|| OpError::invalid("componentName is required"))
}

pub(super) async fn pause(shared: &Shared, payload: &[u8], pause: bool) -> Result<Reply, OpError> {
    let op = if pause {
        "PauseComponent"
    } else {
        "ResumeComponent"
    };
    let name = component_name(op, payload)?;
    let result = if pause {
        shared.core.pause_component(&name).await
    } else {
        shared.core.resume_component(&name).await
    };
    result.map_err(|e| match e {
        lichen_core::CoreError::ComponentNotFound(_) => e.into(),
        other => OpError::service(other.to_string()),
    })?;
    Ok(Reply::empty())
}
