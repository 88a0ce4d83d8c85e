//! The component store's HTTP routes (axum), relative to where the control plane nests them
//! (`/v1` behind its admin-token layer), and the device router fragment for artifact
//! downloads over mTLS.
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/components` | publish: [`crate::upload`] body, or `application/json` header only |
//! | GET | `/components[?name=&after=&limit=]` | list versions (no recipes) |
//! | GET | `/components/{name}/versions/{version}` | describe, with the stored recipe |
//! | DELETE | `/components/{name}/versions/{version}` | delete (409 while deployed) |
//! | GET | `/components/{name}/versions/{version}/artifacts/{uri}` | download (URI percent-encoded, or the file name; one `Range: bytes=N-[M]` → 206 + `Content-Range`, past the end → 416) |
//!
//! The device fragment ([`device_router`], nested at `/device/v1` behind the device
//! certificate) serves `GET /components/{name}/versions/{version}/recipe` (the stored recipe
//! JSON) and the same artifact download.
//!
//! Errors are `{"error":{"code":"…","message":"…"}}` with the status of
//! [`ComponentError::status`].

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use futures_util::StreamExt as _;
use lichen_cloud_store::{ArtifactStore, Backend, ComponentVersion, Page, StoredArtifact};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::error::ComponentError;
use crate::service::Components;
use crate::upload::{MAX_HEADER_BYTES, UPLOAD_CONTENT_TYPE, UploadHeader, decode_prelude};

/// One route: method, path (OpenAPI form, relative to the nest point), operation id,
/// summary. The router and [`crate::openapi_paths`] are both checked against this table.
pub struct Route {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// OpenAPI path template.
    pub path: &'static str,
    /// OpenAPI `operationId`.
    pub operation_id: &'static str,
    /// One line.
    pub summary: &'static str,
}

/// Every admin route of the component store.
pub const ROUTES: &[Route] = &[
    Route {
        method: "POST",
        path: "/components",
        operation_id: "createComponentVersion",
        summary: "Publish a component version (recipe and artifacts in one streaming upload)",
    },
    Route {
        method: "GET",
        path: "/components",
        operation_id: "listComponentVersions",
        summary: "List component versions, latest first within each name",
    },
    Route {
        method: "GET",
        path: "/components/{name}/versions/{version}",
        operation_id: "describeComponentVersion",
        summary: "Describe a component version, with its stored recipe",
    },
    Route {
        method: "DELETE",
        path: "/components/{name}/versions/{version}",
        operation_id: "deleteComponentVersion",
        summary: "Delete a component version no deployment uses",
    },
    Route {
        method: "GET",
        path: ARTIFACT_PATH,
        operation_id: "getComponentArtifact",
        summary: "Download an artifact of a component version",
    },
];

/// The artifact download path (OpenAPI form), on the admin API and the device listener.
pub const ARTIFACT_PATH: &str = "/components/{name}/versions/{version}/artifacts/{uri}";

/// Longest a request other than an upload's body may take (listing, describing, deleting,
/// opening a download; the download's body then streams without a bound of its own, as the
/// client reads it).
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn bounded<T>(
    what: &str,
    work: impl std::future::Future<Output = Result<T, ComponentError>>,
) -> Result<T, ComponentError> {
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(ComponentError::Timeout {
                what: what.to_owned(),
                seconds: REQUEST_TIMEOUT.as_secs(),
            })
        })
}

/// The axum form of [`ARTIFACT_PATH`]: the URI may contain `/` unencoded too.
const ARTIFACT_ROUTE: &str = "/components/{name}/versions/{version}/artifacts/{*uri}";

/// The admin routes, to nest under the control plane's `/v1` (behind its authentication).
pub fn router<B, A, S>(components: Components<B, A>) -> Router<S>
where
    B: Backend + 'static,
    A: ArtifactStore + 'static,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/components", get(list::<B, A>).post(publish::<B, A>))
        .route(
            "/components/{name}/versions/{version}",
            get(describe::<B, A>).delete(delete::<B, A>),
        )
        .route(ARTIFACT_ROUTE, get(artifact::<B, A>))
        .with_state(components)
}

/// The device recipe path (OpenAPI form), relative to the device API's nest point
/// (`/device/v1`).
pub const RECIPE_PATH: &str = "/components/{name}/versions/{version}/recipe";

/// The device-facing fragment: a version's stored recipe and its artifact downloads (with
/// `Range`), for the control plane to nest under `/device/v1` behind its device-certificate
/// layer (which authenticates and authorizes the device; nothing here does).
pub fn device_router<B, A, S>(components: Components<B, A>) -> Router<S>
where
    B: Backend + 'static,
    A: ArtifactStore + 'static,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(RECIPE_PATH, get(recipe::<B, A>))
        .route(ARTIFACT_ROUTE, get(artifact::<B, A>))
        .with_state(components)
}

/// The stored recipe (JSON, with the digests injected at publish), as-is.
async fn recipe<B: Backend + 'static, A: ArtifactStore + 'static>(
    State(components): State<Components<B, A>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<serde_json::Value>, ComponentError> {
    let component = bounded("reading the recipe", components.describe(&name, &version)).await?;
    Ok(axum::Json(component.recipe))
}

/// What a `Range` header asks for. Only one `bytes=` range is honoured (a resumed download
/// sends `bytes=N-`); anything else is ignored and the whole content is sent, as RFC 9110
/// allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive, when given.
    pub end: Option<u64>,
}

pub fn parse_range(headers: &HeaderMap) -> Option<ByteRange> {
    let value = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse::<u64>().ok()?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse::<u64>().ok()?),
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(ByteRange { start, end })
}

impl IntoResponse for ComponentError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_server_error() {
            tracing::error!(error = %self, "component store request failed");
        }
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        (status, axum::Json(body)).into_response()
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// Longest an upload may send nothing before it is abandoned (a stalled client must not
/// hold its pins and temporary content for ever). The whole upload has no time bound of its
/// own: gigabytes take what they take.
pub const UPLOAD_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn body_reader(body: Body) -> impl AsyncRead + Unpin + Send {
    let chunks = futures_util::stream::unfold(body.into_data_stream(), |mut chunks| async move {
        match tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, chunks.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(std::io::Error::other), chunks)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("nothing arrived for {} s", UPLOAD_IDLE_TIMEOUT.as_secs()),
                )),
                chunks,
            )),
        }
    });
    StreamReader::new(Box::pin(chunks))
}

async fn read_header(
    reader: &mut (dyn AsyncRead + Unpin + Send),
    len: u64,
) -> Result<UploadHeader, ComponentError> {
    let mut json = Vec::new();
    let read = reader
        .take(len)
        .read_to_end(&mut json)
        .await
        .map_err(|e| ComponentError::Read {
            what: "the upload header".into(),
            message: e.to_string(),
        })?;
    if (read as u64) < len {
        return Err(ComponentError::invalid(
            "upload",
            format!("the body ends inside the header ({read} of {len} bytes)"),
        ));
    }
    UploadHeader::parse(&json)
}

async fn publish<B: Backend + 'static, A: ArtifactStore + 'static>(
    State(components): State<Components<B, A>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<ComponentVersion>), ComponentError> {
    let kind = content_type(&headers);
    let mut reader = body_reader(body);
    let header = if kind == UPLOAD_CONTENT_TYPE {
        let mut prelude = [0u8; 8];
        reader
            .read_exact(&mut prelude)
            .await
            .map_err(|e| ComponentError::invalid("upload", format!("reading the prelude: {e}")))?;
        let len = decode_prelude(&prelude)?;
        read_header(&mut reader, len.into()).await?
    } else if kind == "application/json" {
        // The whole body is the header; one byte more than the bound tells it was exceeded.
        let mut json = Vec::new();
        (&mut reader)
            .take(u64::from(MAX_HEADER_BYTES) + 1)
            .read_to_end(&mut json)
            .await
            .map_err(|e| ComponentError::Read {
                what: "the request body".into(),
                message: e.to_string(),
            })?;
        let header = UploadHeader::parse(&json)?;
        if let Some(a) = header.artifacts.iter().find(|a| a.size.is_some()) {
            return Err(ComponentError::invalid(
                "artifacts",
                format!(
                    "artifact {:?} declares content, but an application/json body carries none; \
                     send {UPLOAD_CONTENT_TYPE}",
                    a.uri
                ),
            ));
        }
        header
    } else {
        return Err(ComponentError::UnsupportedMediaType {
            found: kind,
            expected: format!("{UPLOAD_CONTENT_TYPE} or application/json"),
        });
    };
    let component = components
        .publish_upload(&header, &mut reader, "recipe")
        .await?;
    Ok((StatusCode::CREATED, axum::Json(component)))
}

/// Query of `GET /components`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    name: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

/// A listed version: the record without its recipe.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    name: String,
    version: String,
    artifacts: Vec<StoredArtifact>,
    created_at: String,
}

async fn list<B: Backend + 'static, A: ArtifactStore + 'static>(
    State(components): State<Components<B, A>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<serde_json::Value>, ComponentError> {
    let Query(query) = query.map_err(|e| ComponentError::invalid("query", e.body_text()))?;
    let page = Page {
        after: query.after,
        limit: query.limit.unwrap_or(0),
    };
    let versions = bounded("listing", components.list(query.name.as_deref(), &page)).await?;
    // A full page may have a successor: its last `name@version` is where the next starts.
    let next = (versions.len() as u64 >= u64::from(page.effective_limit()))
        .then(|| versions.last().map(|c| format!("{}@{}", c.name, c.version)))
        .flatten();
    let summaries: Vec<Summary> = versions
        .into_iter()
        .map(|c| Summary {
            name: c.name,
            version: c.version,
            artifacts: c.artifacts,
            created_at: c.created_at,
        })
        .collect();
    Ok(axum::Json(
        serde_json::json!({ "components": summaries, "next": next }),
    ))
}

async fn describe<B: Backend + 'static, A: ArtifactStore + 'static>(
    State(components): State<Components<B, A>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<axum::Json<ComponentVersion>, ComponentError> {
    Ok(axum::Json(
        bounded("describing", components.describe(&name, &version)).await?,
    ))
}

async fn delete<B: Backend + 'static, A: ArtifactStore + 'static>(
    State(components): State<Components<B, A>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ComponentError> {
    bounded("deleting", components.delete(&name, &version)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn artifact<B: Backend + 'static, A: ArtifactStore + 'static>(
    State(components): State<Components<B, A>>,
    Path((name, version, uri)): Path<(String, String, String)>,
    request_headers: HeaderMap,
) -> Result<Response, ComponentError> {
    let range = parse_range(&request_headers);
    let offset = range.map(|r| r.start).unwrap_or(0);
    let opened = bounded(
        "opening the artifact",
        components.artifact_from(&name, &version, &uri, offset),
    )
    .await;
    let (artifact, content) = match opened {
        Ok(o) => o,
        Err(ComponentError::Store(lichen_cloud_store::StoreError::Invalid {
            field: "range",
            ..
        })) if range.is_some() => {
            // Past the end: 416 with the size, so the client can start over.
            let (artifact, _) = bounded(
                "opening the artifact",
                components.artifact(&name, &version, &uri),
            )
            .await?;
            return Ok(unsatisfiable(artifact.size));
        }
        Err(e) => return Err(e),
    };
    let size = artifact.size;
    let (status, len) = match range {
        // A range starting at the end of the content (or past it) is unsatisfiable.
        Some(r) if r.start >= size => return Ok(unsatisfiable(size)),
        Some(r) => {
            let last = r.end.map(|e| e.min(size - 1)).unwrap_or(size - 1);
            (StatusCode::PARTIAL_CONTENT, Some((r.start, last)))
        }
        None => (StatusCode::OK, None),
    };
    let body_len = len.map(|(a, b)| b - a + 1).unwrap_or(size);
    let reader = content.reader.take(body_len);
    let mut response = Response::new(Body::from_stream(ReaderStream::new(reader)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some((first, last)) = len
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{size}"))
    {
        headers.insert(header::CONTENT_RANGE, v);
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", artifact.sha256)) {
        headers.insert(header::ETAG, etag);
    }
    // RFC 9530: lets a client verify the download without the recipe (the whole
    // representation's digest, also on a 206).
    if let Ok(raw) = hex::decode(&artifact.sha256) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{b64}:")) {
            headers.insert("repr-digest", v);
        }
    }
    Ok(response)
}

fn unsatisfiable(size: u64) -> Response {
    let mut response = ComponentError::invalid(
        "Range",
        format!("the artifact has {size} bytes; a range must start before its end"),
    )
    .into_response();
    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str) -> Option<ByteRange> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        parse_range(&h)
    }

    #[test]
    fn ranges() {
        assert_eq!(
            range("bytes=100-"),
            Some(ByteRange {
                start: 100,
                end: None
            })
        );
        assert_eq!(
            range("bytes=0-9"),
            Some(ByteRange {
                start: 0,
                end: Some(9)
            })
        );
        // Ignored (the whole content is sent): several ranges, suffix ranges, other units,
        // inverted or malformed ones.
        for v in [
            "bytes=0-1,5-6",
            "bytes=-500",
            "items=0-1",
            "bytes=9-3",
            "bytes=x-",
            "bytes",
        ] {
            assert_eq!(range(v), None, "{v}");
        }
        assert_eq!(parse_range(&HeaderMap::new()), None);
    }
}
