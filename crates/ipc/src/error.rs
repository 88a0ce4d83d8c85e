//! Errors of the IPC server, and the modeled error shapes operations answer with.

use serde_json::{Map, Value, json};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("IPC socket {path}: {source}")]
    Socket {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("IPC socket {0} exists and is not a socket; refusing to replace it")]
    NotASocket(std::path::PathBuf),
    #[error("connecting to IPC socket {path}: {source}")]
    Connect {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("IPC connection: {0}")]
    Protocol(String),
    #[error("IPC connection closed")]
    Closed,
}

/// The error shapes of the Greengrass IPC model that lichen sends. The SDKs map the
/// `service-model-type` header (`aws.greengrass#<name>`) to an exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    ServiceError,
    UnauthorizedError,
    ResourceNotFoundError,
    InvalidArgumentsError,
    ConflictError,
    ComponentNotFoundError,
    FailedUpdateConditionCheckError,
    InvalidTokenError,
    InvalidRecipeDirectoryPathError,
    InvalidArtifactsDirectoryPathError,
}

impl ErrorShape {
    pub fn name(self) -> &'static str {
        match self {
            ErrorShape::ServiceError => "ServiceError",
            ErrorShape::UnauthorizedError => "UnauthorizedError",
            ErrorShape::ResourceNotFoundError => "ResourceNotFoundError",
            ErrorShape::InvalidArgumentsError => "InvalidArgumentsError",
            ErrorShape::ConflictError => "ConflictError",
            ErrorShape::ComponentNotFoundError => "ComponentNotFoundError",
            ErrorShape::FailedUpdateConditionCheckError => "FailedUpdateConditionCheckError",
            ErrorShape::InvalidTokenError => "InvalidTokenError",
            ErrorShape::InvalidRecipeDirectoryPathError => "InvalidRecipeDirectoryPathError",
            ErrorShape::InvalidArtifactsDirectoryPathError => "InvalidArtifactsDirectoryPathError",
        }
    }

    pub fn model_type(self) -> String {
        format!("aws.greengrass#{}", self.name())
    }
}

/// A modeled error an operation answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    pub shape: ErrorShape,
    pub message: String,
    /// `resourceType`/`resourceName` of ResourceNotFoundError.
    pub resource: Option<(String, String)>,
}

impl OpError {
    pub fn new(shape: ErrorShape, message: impl Into<String>) -> Self {
        OpError {
            shape,
            message: message.into(),
            resource: None,
        }
    }
    pub fn service(message: impl Into<String>) -> Self {
        Self::new(ErrorShape::ServiceError, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorShape::InvalidArgumentsError, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorShape::UnauthorizedError, message)
    }
    pub fn not_found(kind: &str, name: &str, message: impl Into<String>) -> Self {
        OpError {
            shape: ErrorShape::ResourceNotFoundError,
            message: message.into(),
            resource: Some((kind.to_string(), name.to_string())),
        }
    }

    /// The JSON body: the modeled `message` (plus resource fields) and the `_message`,
    /// `_errorCode` and `_service` fields the Java SDK error classes carry.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("message".into(), json!(self.message));
        if let Some((kind, name)) = &self.resource {
            m.insert("resourceType".into(), json!(kind));
            m.insert("resourceName".into(), json!(name));
        }
        m.insert("_message".into(), json!(self.message));
        m.insert("_errorCode".into(), json!(self.shape.name()));
        m.insert("_service".into(), json!("aws.greengrass#GreengrassCoreIPC"));
        Value::Object(m)
    }
}

impl From<lichen_core::CoreError> for OpError {
    fn from(e: lichen_core::CoreError) -> Self {
        use lichen_core::CoreError as C;
        match &e {
            C::ComponentNotFound(name) => OpError::not_found("Component", name, e.to_string()),
            C::DeploymentNotFound(id) => OpError::not_found("LocalDeployment", id, e.to_string()),
            C::InvalidArgument(_) => OpError::invalid(e.to_string()),
            C::Conflict(_) => OpError::new(ErrorShape::ConflictError, e.to_string()),
            C::FailedUpdateCondition(_) => {
                OpError::new(ErrorShape::FailedUpdateConditionCheckError, e.to_string())
            }
            _ => OpError::service(e.to_string()),
        }
    }
}
