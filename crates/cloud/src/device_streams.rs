//! `POST /device/v1/streams/{stream}/records`: where a core's stream manager exports a batch
//! of a stream (its `lichen-cloud:` exports), authenticated as the thing by its certificate
//! ([`crate::device_api`]). The body is `{"records": [{"sequenceNumber", "ingestTime",
//! "payload" (base64)}]}`; the batch is stored in one transaction, idempotently per
//! (stream, thing, sequence number), and the answer — sent only after the commit — is
//! `{"stored", "duplicates", "lastSequenceNumber"}`. The core advances its export cursor
//! only on that answer, so an outage (no answer) makes it send the same batch again, which
//! is stored once: no gap, no reordering.
//!
//! Bounds: the body ≤ [`MAX_BATCH_BODY`] (413 beyond), ≤ [`lichen_cloud_store::MAX_STREAM_BATCH`]
//! records, each payload ≤ [`lichen_cloud_store::MAX_STREAM_RECORD_BYTES`] (422 naming it).

use axum::Json;
use axum::extract::{Extension, Request, State};
use base64::Engine;
use lichen_cloud_store::{Backend, StreamAppend, StreamRecord};
use serde::Deserialize;

use crate::api::body::{ApiPath, decode_json, read_limited};
use crate::api::error::ApiError;
use crate::api::{AppState, now};
use crate::device_api::DeviceIdentity;

/// The route under `/device/v1`.
pub const RECORDS_PATH: &str = "/streams/{stream}/records";
/// The largest batch body read: 500 records of base64 payloads up to the per-batch 4 MiB a
/// core sends, with room for the JSON around them.
pub const MAX_BATCH_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    records: Vec<BatchRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BatchRecord {
    sequence_number: i64,
    ingest_time: i64,
    payload: String,
}

/// The handler (mounted by [`crate::device_api::router`]).
pub async fn post_records<S: Backend>(
    State(state): State<AppState<S>>,
    Extension(device): Extension<DeviceIdentity>,
    ApiPath(stream): ApiPath<String>,
    req: Request,
) -> Result<Json<StreamAppend>, ApiError> {
    let bytes = read_limited(req.into_body(), MAX_BATCH_BODY).await?;
    let batch: Batch = decode_json(&bytes)?;
    let mut records = Vec::with_capacity(batch.records.len());
    for (i, r) in batch.records.into_iter().enumerate() {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(r.payload.as_bytes())
            .map_err(|e| ApiError::invalid(&format!("records[{i}].payload"), e))?;
        records.push(StreamRecord {
            thing: device.thing.clone(),
            stream: stream.clone(),
            sequence_number: r.sequence_number,
            ingest_time: r.ingest_time,
            payload,
            received_at: String::new(),
        });
    }
    let answer = state
        .store
        .append_stream_records(&device.thing, &stream, records, &now())
        .await?;
    tracing::debug!(thing = %device.thing, %stream, stored = answer.stored,
        duplicates = answer.duplicates, "stream records stored");
    Ok(Json(answer))
}
