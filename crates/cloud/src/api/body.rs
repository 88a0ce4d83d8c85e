//! Reading request bodies: JSON only, at most [`MAX_JSON_BODY`] bytes, decoded into a type
//! that refuses unknown fields, with errors that name the limit or the field.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest JSON request body the API reads (1 MiB); larger ones get 413.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// A JSON request body of type `T`.
pub struct ApiJson<T>(pub T);

/// Decodes a JSON body, mapping serde's error (which names the field and position) to 400.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::malformed(
            "request body is empty; a JSON object is expected",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::malformed(format!("request body: {e}")))
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !ct.starts_with("application/json") {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("Content-Type {ct:?}: the API takes application/json"),
                ));
            }
        }
        let bytes = read_limited(body, MAX_JSON_BODY).await?;
        decode_json(&bytes).map(ApiJson)
    }
}

/// How much of an oversized body is read and thrown away before the 413 is sent, and for
/// how long: closing a connection with unread data makes the kernel reset it, and the client
/// would lose the answer that names the limit.
pub const DRAIN_LIMIT: usize = 16 * 1024 * 1024;
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads a body up to `limit` bytes; a longer one (declared or streamed) is 413.
pub async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::malformed(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                drain(body).await;
                return Err(ApiError::too_large(limit));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

async fn drain(mut body: Body) {
    use http_body_util::BodyExt;
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                seen += d.len();
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
}

/// Query parameters of type `T`, with a 400 that names the parameter.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::malformed(format!("query: {}", e.body_text())))
    }
}

/// Path parameters of type `T`, with a JSON 400 when they do not decode.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| ApiPath(p))
            .map_err(|e| ApiError::malformed(format!("path: {}", e.body_text())))
    }
}
