//! The AWS Lambda Runtime API (`2018-06-01`), served to one instance on loopback: the
//! runtime interface client (`awslambdaric`, `aws-lambda-ric`) long-polls `next`, then posts
//! the handler's `response` or `error`. Bodies are bounded by [`MAX_RESULT_BYTES`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::pool::{Instance, Outcome};

/// A handler's result or error document larger than this is refused (413) and the
/// invocation fails.
pub const MAX_RESULT_BYTES: usize = 6 * 1024 * 1024;

/// Binds `127.0.0.1:0` and serves the Runtime API of `instance` until it ends.
pub(crate) async fn serve(instance: Arc<Instance>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .layer(DefaultBodyLimit::max(MAX_RESULT_BYTES))
        .with_state(instance.clone());
    let mut ended = instance.ended.subscribe();
    tokio::spawn(async move {
        let shutdown = async move {
            while !*ended.borrow_and_update() {
                if ended.changed().await.is_err() {
                    return;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::debug!(error = %e, "runtime API server ended");
        }
    });
    Ok(addr)
}

async fn next(State(instance): State<Arc<Instance>>) -> Response {
    let Some(work) = instance.next_invocation().await else {
        // The instance is being stopped: the client sees an error and exits.
        return (StatusCode::GONE, "instance stopping").into_response();
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("Lambda-Runtime-Aws-Request-Id", &work.request_id);
    put("Lambda-Runtime-Deadline-Ms", &work.deadline_ms.to_string());
    put("Lambda-Runtime-Invoked-Function-Arn", &work.function_arn);
    put("Lambda-Runtime-Trace-Id", "");
    if let Some(context) = &work.client_context {
        put("Lambda-Runtime-Client-Context", context);
    }
    put("Content-Type", work.content_type);
    (StatusCode::OK, headers, Body::from(work.payload)).into_response()
}

async fn response(
    State(instance): State<Arc<Instance>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish(&instance, &id, Outcome::Ok(body.to_vec()))
}

async fn error(
    State(instance): State<Arc<Instance>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish(&instance, &id, Outcome::HandlerError(body.to_vec()))
}

fn finish(instance: &Instance, id: &str, outcome: Outcome) -> Response {
    if instance.complete(id, outcome) {
        (StatusCode::ACCEPTED, "{\"status\":\"OK\"}").into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            "{\"errorMessage\":\"unknown or finished request id\",\"errorType\":\"InvalidRequestID\"}",
        )
            .into_response()
    }
}

async fn init_error(State(instance): State<Arc<Instance>>, body: Bytes) -> Response {
    instance.init_failed(&String::from_utf8_lossy(&body));
    (StatusCode::ACCEPTED, "{\"status\":\"OK\"}").into_response()
}
