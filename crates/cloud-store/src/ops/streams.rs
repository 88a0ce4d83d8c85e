//! Stream records: the messages cores' stream managers export to the cloud, one row per
//! message keyed by (stream, thing, sequence number). Storing is idempotent per key, so a
//! batch a core sends again (its answer lost in an outage) is stored once; reads page in
//! (thing, sequence) order.

use base64::Engine;

use crate::db::{Row, Tx, Value};
use crate::{
    MAX_PAGE, MAX_STREAM_BATCH, MAX_STREAM_NAME, MAX_STREAM_RECORD_BYTES, Result, StoreError,
    StreamAppend, StreamQuery, StreamRecord,
};

use super::registry::require_thing;

/// Rows per INSERT statement (5 parameters each: well under both engines' limits).
const ROWS_PER_STATEMENT: usize = 100;

fn invalid(field: &'static str, message: String) -> StoreError {
    StoreError::Invalid { field, message }
}

fn check_stream_name(stream: &str) -> Result<()> {
    if stream.is_empty() || stream.len() > MAX_STREAM_NAME {
        return Err(invalid(
            "stream",
            format!("a stream name has 1 to {MAX_STREAM_NAME} bytes"),
        ));
    }
    if stream.chars().any(char::is_control) {
        return Err(invalid(
            "stream",
            "a stream name has no control characters".into(),
        ));
    }
    Ok(())
}

/// Stores the records of one batch of `thing`'s stream `stream` (the records' own `thing`,
/// `stream` and `received_at` are ignored). NotFound for an unknown thing; Invalid for a bad
/// stream name, more than [`MAX_STREAM_BATCH`] records, a payload over
/// [`MAX_STREAM_RECORD_BYTES`] or a negative sequence number — the whole batch is refused.
pub(crate) async fn append_stream_records(
    tx: &mut dyn Tx,
    thing: String,
    stream: String,
    records: Vec<StreamRecord>,
    at: String,
) -> Result<StreamAppend> {
    check_stream_name(&stream)?;
    if records.len() > MAX_STREAM_BATCH {
        return Err(invalid(
            "records",
            format!(
                "{} records in one batch; at most {MAX_STREAM_BATCH}",
                records.len()
            ),
        ));
    }
    for r in &records {
        if r.sequence_number < 0 {
            return Err(invalid(
                "sequenceNumber",
                format!("{} is negative", r.sequence_number),
            ));
        }
        if r.payload.len() > MAX_STREAM_RECORD_BYTES {
            return Err(invalid(
                "payload",
                format!(
                    "record {} has {} bytes; at most {MAX_STREAM_RECORD_BYTES}",
                    r.sequence_number,
                    r.payload.len()
                ),
            ));
        }
    }
    require_thing(tx, &thing).await?;
    let mut stored = 0;
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO stream_records \
             (thing, stream, sequence, ingest_time, payload, received_at) VALUES ",
        );
        let mut params = vec![
            Value::from(thing.as_str()),
            Value::from(stream.as_str()),
            Value::from(at.as_str()),
        ];
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let n = params.len();
            sql.push_str(&format!("($1, $2, ${}, ${}, ${}, $3)", n + 1, n + 2, n + 3));
            params.push(Value::Int(r.sequence_number));
            params.push(Value::Int(r.ingest_time));
            params.push(Value::Text(
                base64::engine::general_purpose::STANDARD.encode(&r.payload),
            ));
        }
        sql.push_str(" ON CONFLICT (stream, thing, sequence) DO NOTHING");
        stored += tx.execute(&sql, &params).await?;
    }
    Ok(StreamAppend {
        stored,
        duplicates: records.len() as u64 - stored,
        last_sequence_number: records.iter().map(|r| r.sequence_number).max(),
    })
}

fn record_from(stream: &str, row: &Row) -> Result<StreamRecord> {
    let payload = base64::engine::general_purpose::STANDARD
        .decode(row.text(3)?)
        .map_err(|e| StoreError::Database(format!("stored stream payload is not base64: {e}")))?;
    Ok(StreamRecord {
        thing: row.text(0)?,
        stream: stream.to_string(),
        sequence_number: row.int(1)?,
        ingest_time: row.int(2)?,
        payload,
        received_at: row.text(4)?,
    })
}

pub(crate) async fn read_stream_records(
    tx: &mut dyn Tx,
    q: StreamQuery,
) -> Result<Vec<StreamRecord>> {
    check_stream_name(&q.stream)?;
    let limit = if q.limit == 0 || q.limit > MAX_PAGE {
        MAX_PAGE
    } else {
        q.limit
    };
    let (after_thing, after_seq) = q.after.clone().unwrap_or((String::new(), -1));
    let rows = tx
        .query(
            "SELECT thing, sequence, ingest_time, payload, received_at FROM stream_records \
             WHERE stream = $1 AND ($2 = '' OR thing = $2) AND sequence >= $3 \
             AND (thing > $4 OR (thing = $4 AND sequence > $5)) \
             ORDER BY thing, sequence LIMIT $6",
            &[
                Value::from(q.stream.as_str()),
                Value::from(q.thing.clone().unwrap_or_default()),
                Value::Int(q.from),
                Value::from(after_thing),
                Value::Int(after_seq),
                Value::Int(i64::from(limit)),
            ],
        )
        .await?;
    rows.iter().map(|r| record_from(&q.stream, r)).collect()
}
