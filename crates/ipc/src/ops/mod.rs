//! Greengrass IPC operations: the model's operation list, the built-in operations, and what
//! handlers get and return.
//!
//! Each operation is one [`Operation`] descriptor (authorization, slowness, modeled errors,
//! stream event shape, handler); the core's own are in [`builtin`] and a service adds its
//! own to an [`Operations`] table. Every operation of the model that nobody registered
//! answers ServiceError "… is not supported yet".
//!
//! Errors: each operation answers only the error shapes the model declares for it
//! ([`Operation::modeled_errors`]); anything else (e.g. InvalidArgumentsError from
//! PublishToTopic, which does not declare it) is sent as ServiceError with the intended
//! shape's name leading its message, because the JavaScript SDK rejects undeclared shapes
//! outright. Denied calls are the exception: they always get UnauthorizedError (see
//! [`Operation::conform`]).

pub mod builtin;
mod cli;
mod config;
mod lifecycle;
mod misc;
mod operation;
mod pubsub;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use lichen_core::CoreHandle;
use lichen_eventstream::MessageType;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::authz::PolicyCache;
use crate::error::OpError;
use crate::hooks::IpcHooks;

pub(crate) use operation::unsupported;
pub use operation::{
    Authorization, Call, CallFuture, DuplicateOperation, Handler, Operation, Operations, Resource,
};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Prefix of every operation and shape name.
pub const NAMESPACE: &str = "aws.greengrass#";

/// Every operation of `aws.greengrass#GreengrassCoreIPC` (awsiotsdk 1.31 model).
pub const MODEL_OPERATIONS: [&str; 35] = [
    "AuthorizeClientDeviceAction",
    "CancelLocalDeployment",
    "CreateDebugPassword",
    "CreateLocalDeployment",
    "DeferComponentUpdate",
    "DeleteThingShadow",
    "GetClientDeviceAuthToken",
    "GetComponentDetails",
    "GetConfiguration",
    "GetLocalDeploymentStatus",
    "GetSecretValue",
    "GetThingShadow",
    "ListComponents",
    "ListLocalDeployments",
    "ListNamedShadowsForThing",
    "PauseComponent",
    "PublishToIoTCore",
    "PublishToTopic",
    "PutComponentMetric",
    "RestartComponent",
    "ResumeComponent",
    "SendConfigurationValidityReport",
    "StopComponent",
    "SubscribeToCertificateUpdates",
    "SubscribeToComponentUpdates",
    "SubscribeToConfigurationUpdate",
    "SubscribeToIoTCoreConnectionStatus",
    "SubscribeToIoTCore",
    "SubscribeToTopic",
    "SubscribeToValidateConfigurationUpdates",
    "UpdateConfiguration",
    "UpdateState",
    "UpdateThingShadow",
    "ValidateAuthorizationToken",
    "VerifyClientDeviceIdentity",
];

/// State shared by every connection of one server.
pub(crate) struct Shared {
    pub core: CoreHandle,
    pub policies: Arc<PolicyCache>,
    pub hooks: Arc<IpcHooks>,
    pub operations: Operations,
    pub max_frame: usize,
}

/// The authenticated component on a connection.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub component: String,
    /// Bus origin of its messages: `component:<name>`.
    pub origin: Arc<str>,
}

impl Caller {
    pub fn new(component: String) -> Self {
        let origin: Arc<str> = Arc::from(format!("component:{component}"));
        Caller { component, origin }
    }
}

/// Where a streaming operation's events go: one stream of one connection.
#[derive(Clone)]
pub struct EventSink {
    pub(crate) tx: crate::conn::Outbound,
    pub(crate) stream_id: i32,
    pub(crate) model_type: &'static str,
    pub(crate) max_frame: usize,
}

impl EventSink {
    /// Appends one event frame to `out`; false (and nothing appended) when it is too large.
    pub fn encode(&self, payload: &[u8], out: &mut BytesMut) -> bool {
        match lichen_eventstream::encode_json(
            out,
            MessageType::ApplicationMessage,
            0,
            self.stream_id,
            self.model_type,
            payload,
            self.max_frame,
        ) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(stream = self.stream_id, error = %e, "IPC event dropped");
                false
            }
        }
    }

    /// Queues encoded frames; false once the connection is gone.
    pub async fn send(&self, frames: Bytes) -> bool {
        self.tx.send(frames).await.is_ok()
    }

    pub async fn send_json(&self, v: &Value) -> bool {
        let mut out = BytesMut::new();
        let payload = serde_json::to_vec(v).unwrap_or_default();
        if !self.encode(&payload, &mut out) {
            return !self.tx.is_closed();
        }
        self.send(out.freeze()).await
    }
}

/// Runs a stream's event loop once the initial response is queued; the stream ends when it
/// returns (or the client closes it, which aborts it).
pub type StreamRun = Box<dyn FnOnce(EventSink) -> BoxFuture<'static, ()> + Send>;

/// What a handler answers.
pub enum Reply {
    /// The `…Response` of a unary operation, sent with TERMINATE_STREAM.
    Unary(Value),
    /// The initial `…Response` (sent without TERMINATE_STREAM), then events.
    Stream { initial: Value, run: StreamRun },
}

impl Reply {
    pub fn empty() -> Self {
        Reply::Unary(Value::Object(Default::default()))
    }
}

/// Parses a request body; an empty body is `{}`.
pub(crate) fn parse<T: DeserializeOwned>(op: &str, payload: &[u8]) -> Result<T, OpError> {
    let body: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        payload
    };
    serde_json::from_slice(body).map_err(|e| OpError::invalid(format!("invalid {op} request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorShape;

    /// The error shapes per operation in the Smithy model, as the JavaScript SDK
    /// (aws-iot-device-sdk-v2 1.28.0, `makeServiceModel()`) enforces them.
    const MODEL: &str = "
CancelLocalDeployment ServiceError,ResourceNotFoundError,InvalidArgumentsError
CreateDebugPassword UnauthorizedError,ServiceError
CreateLocalDeployment ServiceError,InvalidRecipeDirectoryPathError,InvalidArtifactsDirectoryPathError,InvalidArgumentsError
DeferComponentUpdate ServiceError,ResourceNotFoundError,InvalidArgumentsError
GetComponentDetails ServiceError,ResourceNotFoundError,InvalidArgumentsError
GetConfiguration ServiceError,ResourceNotFoundError
GetLocalDeploymentStatus ServiceError,ResourceNotFoundError
GetSecretValue UnauthorizedError,ResourceNotFoundError,ServiceError
ListComponents ServiceError
ListLocalDeployments ServiceError
PauseComponent UnauthorizedError,ServiceError,ResourceNotFoundError
PublishToIoTCore ServiceError,UnauthorizedError
PublishToTopic ServiceError,UnauthorizedError
PutComponentMetric UnauthorizedError,ServiceError,InvalidArgumentsError
RestartComponent ServiceError,ComponentNotFoundError,InvalidArgumentsError
ResumeComponent UnauthorizedError,ServiceError,ResourceNotFoundError
SendConfigurationValidityReport InvalidArgumentsError,ServiceError
StopComponent ServiceError,ComponentNotFoundError,InvalidArgumentsError
SubscribeToCertificateUpdates ServiceError,UnauthorizedError,InvalidArgumentsError
SubscribeToComponentUpdates ServiceError,ResourceNotFoundError
SubscribeToConfigurationUpdate ServiceError,ResourceNotFoundError
SubscribeToIoTCore ServiceError,UnauthorizedError
SubscribeToTopic InvalidArgumentsError,ServiceError,UnauthorizedError
SubscribeToValidateConfigurationUpdates ServiceError
UpdateConfiguration ServiceError,UnauthorizedError,ConflictError,FailedUpdateConditionCheckError,InvalidArgumentsError
UpdateState ServiceError,ResourceNotFoundError
ValidateAuthorizationToken InvalidTokenError,UnauthorizedError,ServiceError
";

    #[test]
    fn modeled_errors_match_the_model() {
        let table = Operations::builtin();
        for line in MODEL.lines().filter(|l| !l.is_empty()) {
            let (op, shapes) = line.split_once(' ').unwrap();
            assert!(MODEL_OPERATIONS.contains(&op), "{op}");
            // Operations nobody serves yet answer ServiceError only.
            let Some(operation) = table.get(op) else {
                continue;
            };
            let mut want: Vec<&str> = shapes
                .split(',')
                .filter(|s| *s != "ServiceError")
                // Shapes lichen never sends.
                .filter(|s| !s.starts_with("InvalidClientDevice") && *s != "InvalidCredentialError")
                .collect();
            want.sort();
            let mut got: Vec<&str> = operation
                .modeled_errors()
                .iter()
                .map(|s| s.name())
                .collect();
            got.sort();
            assert_eq!(got, want, "{op}");
        }
    }

    #[test]
    fn unmodeled_errors_become_service_errors() {
        let table = Operations::builtin();
        let conform = |op: &str, e| table.get(op).unwrap().conform(e);
        let e = conform("PublishToTopic", OpError::invalid("bad topic"));
        assert_eq!(e.shape, ErrorShape::ServiceError);
        assert_eq!(e.message, "InvalidArgumentsError: bad topic");
        let e = conform("SubscribeToTopic", OpError::invalid("bad filter"));
        assert_eq!(e.shape, ErrorShape::InvalidArgumentsError);
        let e = conform("ListComponents", OpError::unauthorized("no"));
        assert_eq!(e.shape, ErrorShape::UnauthorizedError);
    }

    #[test]
    fn builtin_table_is_the_served_part_of_the_model() {
        let table = Operations::builtin();
        let names = table.names();
        assert_eq!(names.len(), 22, "{names:?}");
        for name in &names {
            assert!(MODEL_OPERATIONS.contains(name), "{name}");
        }
        let streams: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| table.get(n).unwrap().stream_event_shape().is_some())
            .collect();
        assert_eq!(
            streams,
            [
                "SubscribeToComponentUpdates",
                "SubscribeToConfigurationUpdate",
                "SubscribeToTopic",
                "SubscribeToValidateConfigurationUpdates"
            ]
        );
        assert_eq!(
            unsupported("GetSecretValue").message,
            "aws.greengrass#GetSecretValue is not supported yet"
        );
    }
}
