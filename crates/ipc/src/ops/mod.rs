//! Greengrass IPC operations: the model's operation list, dispatch, and what handlers return.
//!
//! | operations | authorization (service id → resource) |
//! |---|---|
//! | PublishToTopic, SubscribeToTopic (streams `SubscriptionResponseMessage`) | `aws.greengrass.ipc.pubsub` → the topic or filter, MQTT wildcards literal |
//! | GetConfiguration (any component), UpdateConfiguration (own, not `accessControl`), SubscribeToConfigurationUpdate, SubscribeToValidateConfigurationUpdates, SendConfigurationValidityReport | none |
//! | UpdateState, SubscribeToComponentUpdates, DeferComponentUpdate | none |
//! | PauseComponent, ResumeComponent | `aws.greengrass.ipc.lifecycle` → component name |
//! | ListComponents, GetComponentDetails, RestartComponent, StopComponent, CreateLocalDeployment, CancelLocalDeployment, GetLocalDeploymentStatus, ListLocalDeployments | `aws.greengrass.Cli` → component name, deployment id, or `*` |
//! | PutComponentMetric | `aws.greengrass.ipc.componentmetric` → metric name (unlike Greengrass, components need not be named `aws.*`) |
//! | ValidateAuthorizationToken | `aws.greengrass.StreamManager` always; others need lichen's `lichen.ipc.auth` → `*` |
//! | every other operation of the model | answers ServiceError "… is not supported yet" |
//!
//! Errors: each operation answers only the error shapes the model declares for it
//! ([`modeled_errors`]); anything else (e.g. InvalidArgumentsError from PublishToTopic, which
//! does not declare it) is sent as ServiceError with the intended shape's name leading its
//! message, because the JavaScript SDK rejects undeclared shapes outright. Denied calls are
//! the exception: they always get UnauthorizedError (see [`conform`]).

mod cli;
mod config;
mod lifecycle;
mod misc;
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
use crate::error::{ErrorShape, OpError};
use crate::hooks::IpcHooks;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

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

/// The `service-model-type` of a streaming operation's events.
pub fn stream_event_shape(op: &str) -> Option<&'static str> {
    Some(match op {
        "SubscribeToTopic" => "aws.greengrass#SubscriptionResponseMessage",
        "SubscribeToConfigurationUpdate" => "aws.greengrass#ConfigurationUpdateEvents",
        "SubscribeToValidateConfigurationUpdates" => {
            "aws.greengrass#ValidateConfigurationUpdateEvents"
        }
        "SubscribeToComponentUpdates" => "aws.greengrass#ComponentUpdatePolicyEvents",
        "SubscribeToIoTCore" => "aws.greengrass#IoTCoreMessage",
        "SubscribeToCertificateUpdates" => "aws.greengrass#CertificateUpdateEvent",
        "SubscribeToIoTCoreConnectionStatus" => "aws.greengrass#IoTCoreConnectionStatusEvent",
        _ => return None,
    })
}

/// The errors the model declares for each operation (besides ServiceError, which every
/// operation declares). Strict SDKs (JavaScript) refuse any other error shape, so errors
/// outside this list are sent as ServiceError; see [`conform`].
pub fn modeled_errors(op: &str) -> &'static [ErrorShape] {
    use ErrorShape::*;
    match op {
        "CancelLocalDeployment" | "GetComponentDetails" | "DeferComponentUpdate" => {
            &[ResourceNotFoundError, InvalidArgumentsError]
        }
        "CreateLocalDeployment" => &[
            InvalidRecipeDirectoryPathError,
            InvalidArtifactsDirectoryPathError,
            InvalidArgumentsError,
        ],
        "GetConfiguration"
        | "GetLocalDeploymentStatus"
        | "SubscribeToComponentUpdates"
        | "SubscribeToConfigurationUpdate"
        | "UpdateState" => &[ResourceNotFoundError],
        "PauseComponent" | "ResumeComponent" | "GetSecretValue" => {
            &[UnauthorizedError, ResourceNotFoundError]
        }
        "PublishToTopic" | "PublishToIoTCore" | "SubscribeToIoTCore" | "CreateDebugPassword" => {
            &[UnauthorizedError]
        }
        "SubscribeToTopic" | "PutComponentMetric" | "SubscribeToCertificateUpdates" => {
            &[UnauthorizedError, InvalidArgumentsError]
        }
        "RestartComponent" | "StopComponent" => &[ComponentNotFoundError, InvalidArgumentsError],
        "SendConfigurationValidityReport" => &[InvalidArgumentsError],
        "UpdateConfiguration" => &[
            UnauthorizedError,
            ConflictError,
            FailedUpdateConditionCheckError,
            InvalidArgumentsError,
        ],
        "ValidateAuthorizationToken" => &[InvalidTokenError, UnauthorizedError],
        _ => &[],
    }
}

/// Keeps an error within the operation's modeled shapes: anything else becomes a
/// ServiceError whose message names the intended shape. UnauthorizedError is the exception:
/// a denied call always gets it (as in Greengrass, and what Python/Java/C++ code catches),
/// even from the CLI operations whose model omits it; the JavaScript SDK then reports an
/// untyped error naming UnauthorizedError.
pub fn conform(op: &str, e: OpError) -> OpError {
    if matches!(
        e.shape,
        ErrorShape::ServiceError | ErrorShape::UnauthorizedError
    ) || modeled_errors(op).contains(&e.shape)
    {
        e
    } else {
        OpError::service(format!("{}: {}", e.shape.name(), e.message))
    }
}

/// Operations that may wait on the runtime (process control, deployments). The connection
/// runs them in their own task so that other streams on it go on meanwhile.
pub fn is_slow(op: &str) -> bool {
    matches!(
        op,
        "RestartComponent"
            | "StopComponent"
            | "PauseComponent"
            | "ResumeComponent"
            | "CreateLocalDeployment"
            | "CancelLocalDeployment"
    )
}

/// State shared by every connection of one server.
pub(crate) struct Shared {
    pub core: CoreHandle,
    pub policies: Arc<PolicyCache>,
    pub hooks: Arc<IpcHooks>,
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
pub(crate) struct EventSink {
    pub tx: crate::conn::Outbound,
    pub stream_id: i32,
    pub model_type: &'static str,
    pub max_frame: usize,
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

/// Runs a stream's event loop once the initial response is queued.
pub(crate) type StreamRun = Box<dyn FnOnce(EventSink) -> BoxFuture<()> + Send>;

pub(crate) enum Reply {
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

pub(crate) fn authorize(
    shared: &Shared,
    caller: &Caller,
    service: &str,
    op: &str,
    resource: &str,
) -> Result<(), OpError> {
    let operation = format!("{NAMESPACE}{op}");
    if shared
        .policies
        .allows(&caller.component, service, &operation, resource)
    {
        Ok(())
    } else {
        Err(OpError::unauthorized(format!(
            "Principal {} is not authorized to perform {service}:{operation} on resource {resource}",
            caller.component
        )))
    }
}

/// Runs operation `op` (short name, e.g. `PublishToTopic`) for `caller`. Errors are within
/// the operation's modeled shapes.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    caller: &Caller,
    op: &str,
    payload: &[u8],
) -> Result<Reply, OpError> {
    run(shared, caller, op, payload)
        .await
        .map_err(|e| conform(op, e))
}

async fn run(
    shared: &Arc<Shared>,
    caller: &Caller,
    op: &str,
    payload: &[u8],
) -> Result<Reply, OpError> {
    match op {
        "PublishToTopic" => pubsub::publish(shared, caller, payload),
        "SubscribeToTopic" => pubsub::subscribe(shared, caller, payload),
        "GetConfiguration" => config::get(shared, caller, payload),
        "UpdateConfiguration" => config::update(shared, caller, payload),
        "SubscribeToConfigurationUpdate" => config::subscribe(shared, caller, payload),
        "SubscribeToValidateConfigurationUpdates" => config::subscribe_validate(shared, caller),
        "SendConfigurationValidityReport" => config::validity_report(shared, caller, payload),
        "UpdateState" => lifecycle::update_state(shared, caller, payload),
        "SubscribeToComponentUpdates" => lifecycle::subscribe_updates(shared, caller),
        "DeferComponentUpdate" => lifecycle::defer(shared, caller, payload),
        "PauseComponent" => lifecycle::pause(shared, caller, payload, true).await,
        "ResumeComponent" => lifecycle::pause(shared, caller, payload, false).await,
        "ListComponents" => cli::list_components(shared, caller),
        "GetComponentDetails" => cli::component_details(shared, caller, payload),
        "RestartComponent" => cli::restart(shared, caller, payload).await,
        "StopComponent" => cli::stop(shared, caller, payload).await,
        "CreateLocalDeployment" => cli::create_deployment(shared, caller, payload).await,
        "CancelLocalDeployment" => cli::cancel_deployment(shared, caller, payload).await,
        "GetLocalDeploymentStatus" => cli::deployment_status(shared, caller, payload),
        "ListLocalDeployments" => cli::list_deployments(shared, caller),
        "ValidateAuthorizationToken" => misc::validate_token(shared, caller, payload),
        "PutComponentMetric" => misc::put_metric(shared, caller, payload),
        other if MODEL_OPERATIONS.contains(&other) => Err(OpError::service(format!(
            "{NAMESPACE}{other} is not supported yet"
        ))),
        other => Err(OpError::service(format!(
            "{other} is an unsupported operation"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for line in MODEL.lines().filter(|l| !l.is_empty()) {
            let (op, shapes) = line.split_once(' ').unwrap();
            assert!(MODEL_OPERATIONS.contains(&op), "{op}");
            let mut want: Vec<&str> = shapes
                .split(',')
                .filter(|s| *s != "ServiceError")
                // Shapes lichen never sends.
                .filter(|s| !s.starts_with("InvalidClientDevice") && *s != "InvalidCredentialError")
                .collect();
            want.sort();
            let mut got: Vec<&str> = modeled_errors(op).iter().map(|s| s.name()).collect();
            got.sort();
            assert_eq!(got, want, "{op}");
        }
    }

    #[test]
    fn unmodeled_errors_become_service_errors() {
        let e = conform("PublishToTopic", OpError::invalid("bad topic"));
        assert_eq!(e.shape, ErrorShape::ServiceError);
        assert_eq!(e.message, "InvalidArgumentsError: bad topic");
        let e = conform("SubscribeToTopic", OpError::invalid("bad filter"));
        assert_eq!(e.shape, ErrorShape::InvalidArgumentsError);
        let e = conform("ListComponents", OpError::unauthorized("no"));
        assert_eq!(e.shape, ErrorShape::UnauthorizedError);
    }
}
