//! Stream records: what cores' stream managers exported to the cloud (`lichen-cloud:` exports,
//! stored by [`crate::device_streams`]), read a page at a time in (thing, sequence number)
//! order. `lichen cloud stream read NAME` uses it.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use lichen_cloud_store::{Backend, StreamQuery, StreamRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::{ApiPath, ApiQuery};
use super::error::{ApiError, ApiResult};
use super::{AppState, Method, QueryParam, Route};

const QUERY: &[QueryParam] = &[
    QueryParam {
        name: "thing",
        description: "Only this thing's records.",
        kind: "string",
    },
    QueryParam {
        name: "from",
        description: "Only records with a sequence number at least this (default 0).",
        kind: "integer",
    },
    QueryParam {
        name: "after",
        description: "Continue after this key (`THING:SEQUENCE`): the `next` of the previous page.",
        kind: "string",
    },
    QueryParam {
        name: "limit",
        description: "At most this many records (1 to 1000; default 1000).",
        kind: "integer",
    },
];

pub fn routes<S: Backend + 'static>() -> Vec<Route<S>> {
    vec![Route {
        method: Method::Get,
        path: "/v1/streams/{name}/records",
        operation_id: "readStreamRecords",
        summary: "Records cores exported from their stream `name`, ordered by thing then \
                  sequence number, a page at a time.",
        public: false,
        request: None,
        response: (200, Some("StreamRecordList")),
        query: QUERY,
        handler: get(read::<S>),
    }]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsQuery {
    pub thing: Option<String>,
    pub from: Option<i64>,
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// One record as the API shows it (payload base64).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    pub thing: String,
    pub sequence_number: i64,
    pub ingest_time: i64,
    pub payload: String,
    pub received_at: String,
}

impl From<StreamRecord> for RecordView {
    fn from(r: StreamRecord) -> RecordView {
        RecordView {
            thing: r.thing,
            sequence_number: r.sequence_number,
            ingest_time: r.ingest_time,
            payload: base64::engine::general_purpose::STANDARD.encode(&r.payload),
            received_at: r.received_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RecordList {
    pub stream: String,
    pub records: Vec<RecordView>,
    pub next: Option<String>,
}

fn parse_after(after: &str) -> ApiResult<(String, i64)> {
    after
        .rsplit_once(':')
        .and_then(|(thing, seq)| Some((thing.to_string(), seq.parse::<i64>().ok()?)))
        .filter(|(thing, _)| !thing.is_empty())
        .ok_or_else(|| ApiError::invalid("after", "expected THING:SEQUENCE (a page's `next`)"))
}

async fn read<S: Backend>(
    State(state): State<AppState<S>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<RecordsQuery>,
) -> ApiResult<Json<RecordList>> {
    let limit = q.limit.unwrap_or(lichen_cloud_store::MAX_PAGE);
    if limit == 0 || limit > lichen_cloud_store::MAX_PAGE {
        return Err(ApiError::invalid(
            "limit",
            format!(
                "must be 1 to {} (got {limit})",
                lichen_cloud_store::MAX_PAGE
            ),
        ));
    }
    let from = q.from.unwrap_or(0);
    if from < 0 {
        return Err(ApiError::invalid("from", "must be 0 or more"));
    }
    let after = q.after.as_deref().map(parse_after).transpose()?;
    let query = StreamQuery {
        stream: name.clone(),
        thing: q.thing.filter(|t| !t.is_empty()),
        from,
        after,
        limit,
    };
    let records = state.store.read_stream_records(&query).await?;
    let next = (records.len() as u64 >= u64::from(limit))
        .then(|| {
            records
                .last()
                .map(|r| format!("{}:{}", r.thing, r.sequence_number))
        })
        .flatten();
    Ok(Json(RecordList {
        stream: name,
        records: records.into_iter().map(RecordView::from).collect(),
        next,
    }))
}

/// The schemas the route above names (merged into the OpenAPI document).
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![(
        "StreamRecordList",
        json!({"type": "object", "required": ["stream", "records"], "properties": {
            "stream": {"type": "string"},
            "records": {"type": "array", "items": {"type": "object",
                "required": ["thing", "sequenceNumber", "ingestTime", "payload", "receivedAt"],
                "properties": {
                    "thing": {"type": "string"},
                    "sequenceNumber": {"type": "integer"},
                    "ingestTime": {"type": "integer", "description": "Unix epoch milliseconds, when the core appended it."},
                    "payload": {"type": "string", "contentEncoding": "base64"},
                    "receivedAt": {"type": "string", "format": "date-time"}}}},
            "next": {"type": ["string", "null"]}}}),
    )]
}
