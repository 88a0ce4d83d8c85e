//! The admin control channel: how the `lichen` CLI drives a running core.
//!
//! A Unix socket at `<root>/control.socket` (mode 0660) carrying one JSON request per line and
//! one JSON response per line. Only root, the core's own user, and members of the configured
//! admin group may use it (checked with the peer's credentials). The CLI never edits the
//! core's files; everything goes through here.
//!
//! Bounds: a request line is at most [`MAX_REQUEST_BYTES`]; at most [`MAX_CLIENTS`]
//! connections are served at once.

pub mod client;
mod server;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use lichen_model::control::{
    BrokerInfo, ControlReply, ControlRequest, ControlRequestError, ControlService, CoreStatus,
    DeploymentCreated, DeviceInfo, DeviceRemoved, Done, FunctionResult, ListenerInfo, ReplyError,
};
pub use server::{ControlServer, serve};

use crate::error::CoreError;
use crate::handle::BoxFuture;

pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
pub const MAX_CLIENTS: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable kind: `ComponentNotFound`, `DeploymentNotFound`, `InvalidArgument`,
    /// `Conflict`, `NotSupported`, `ServiceError`, `Unauthorized`.
    pub kind: String,
    pub message: String,
}

impl ErrorBody {
    pub fn from_core(e: &CoreError) -> ErrorBody {
        let kind = match e {
            CoreError::ComponentNotFound(_) => "ComponentNotFound",
            CoreError::DeploymentNotFound(_) => "DeploymentNotFound",
            CoreError::InvalidArgument(_) => "InvalidArgument",
            CoreError::Conflict(_) => "Conflict",
            CoreError::NotSupported(_) => "NotSupported",
            _ => "ServiceError",
        };
        ErrorBody {
            kind: kind.into(),
            message: e.to_string(),
        }
    }
}

/// Requests served by another service (e.g. `device.*` by the broker), registered by the
/// binary that composes them. The extension declares the [`ControlService`] it serves and
/// receives only requests of that service.
pub trait ControlExtension: Send + Sync + 'static {
    fn service(&self) -> ControlService;

    fn handle<'a>(
        &'a self,
        request: ControlRequest,
    ) -> BoxFuture<'a, Result<ControlReply, CoreError>>;
}

pub type Extensions = Vec<Arc<dyn ControlExtension>>;
