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

/// Reads a body up to `limit` bytes; a longer one (declared or streamed) is 413.
pub async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b.to_vec()),
        Err(e) => {
            // to_bytes reports the limit through a LengthLimitError in the source chain.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::too_large(limit));
                }
                source = s.source();
            }
            Err(ApiError::malformed(format!(
                "reading the request body: {e}"
            )))
        }
    }
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
