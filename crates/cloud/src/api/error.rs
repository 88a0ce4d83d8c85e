//! API errors: every failure answers `{"error":{"code":"…","message":"…"}}` with a status
//! that says whose fault it is, and a message that names the field, id or limit concerned.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lichen_cloud_store::StoreError;
use serde::{Deserialize, Serialize};

/// The error body the API answers with, and the client decodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// One API failure: an HTTP status, a stable machine-readable code and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The body is not JSON of the expected shape (syntax, types, unknown or missing fields).
    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "MalformedRequest", message)
    }

    /// A field parsed but its value is not acceptable.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidField",
            format!("{field}: {message}"),
        )
    }

    pub fn not_found(kind: &str, key: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{kind} {key:?} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "Conflict", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLarge",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub fn not_supported(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotSupported",
            format!("{what} is not supported yet"),
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "API request failed");
        }
        (self.status, Json(self.body())).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "NotFound", e.to_string())
            }
            StoreError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "AlreadyExists", e.to_string())
            }
            StoreError::VersionConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "VersionConflict", e.to_string())
            }
            StoreError::InUse { .. } => ApiError::new(StatusCode::CONFLICT, "InUse", e.to_string()),
            StoreError::Superseded { .. } => {
                ApiError::new(StatusCode::CONFLICT, "Superseded", e.to_string())
            }
            StoreError::Invalid { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "InvalidField",
                e.to_string(),
            ),
            // Database details stay in the log; the caller learns only that it failed.
            StoreError::Database(_) | StoreError::Artifacts { .. } => {
                tracing::error!(error = %e, "store failure");
                ApiError::internal("the cloud's store failed; see the cloud's log")
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
