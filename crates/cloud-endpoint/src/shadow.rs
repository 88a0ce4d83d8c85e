//! Device Shadow service: `lichen_iot::shadow` over the store's shadow records. Writes are
//! optimistic (the version read is the version expected) and retried when another write got
//! in between; a deleted shadow stays as a tombstone so its version continues.

use lichen_cloud_store::{Backend, ShadowRecord, StoreError};
use lichen_iot::shadow::{self, StoredShadow};
use lichen_iot::topic::{ShadowOp, ShadowReply, ShadowTopic};
use serde_json::{Value, json};

use crate::service::now_secs;
use crate::{Inner, SHADOW_RETRIES};

/// The rejected payload for a failure of ours (AWS 500).
fn internal(now: u64) -> Value {
    json!({"code": 500, "message": "Internal service failure", "timestamp": now})
}

/// Loads a shadow: the stored document and the record version to expect when writing.
async fn load<B: Backend>(
    inner: &Inner<B>,
    thing: &str,
    name: &str,
) -> Result<(Option<StoredShadow>, Option<i64>), String> {
    match inner.store.get_shadow(thing, name).await {
        Ok(None) => Ok((None, None)),
        Ok(Some(rec)) => {
            let doc: StoredShadow = serde_json::from_value(rec.document)
                .map_err(|e| format!("stored shadow of {thing:?} ({name:?}) unreadable: {e}"))?;
            Ok((Some(doc), Some(rec.version)))
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn save<B: Backend>(
    inner: &Inner<B>,
    thing: &str,
    name: &str,
    doc: &StoredShadow,
    expected: Option<i64>,
) -> Result<(), StoreError> {
    let record = ShadowRecord {
        thing: thing.to_string(),
        name: name.to_string(),
        document: serde_json::to_value(doc).map_err(|e| StoreError::Invalid {
            field: "shadow",
            message: e.to_string(),
        })?,
        version: i64::try_from(doc.version).unwrap_or(i64::MAX),
    };
    inner.store.put_shadow(&record, expected).await
}

pub async fn handle<B: Backend>(inner: &Inner<B>, topic: &ShadowTopic, payload: &[u8]) {
    let address = topic.address();
    let thing = address.thing.as_str();
    let name = address.shadow.as_deref().unwrap_or("");
    let limits = &inner.config.shadow;
    let reply = |r: ShadowReply, body: &Value| inner.reply(&topic.with_reply(r).to_string(), body);
    for _ in 0..SHADOW_RETRIES {
        let now = now_secs();
        let (stored, expected) = match load(inner, thing, name).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(%thing, shadow = %name, error = %e, "shadow read failed");
                reply(ShadowReply::Rejected, &internal(now));
                return;
            }
        };
        match topic.op {
            ShadowOp::Get => {
                match shadow::get(stored.as_ref(), payload, &address, now, limits) {
                    Ok(doc) => reply(ShadowReply::Accepted, &doc),
                    Err(e) => reply(ShadowReply::Rejected, &e.payload(now)),
                }
                return;
            }
            ShadowOp::Update => {
                let out = match shadow::apply_update(stored.as_ref(), payload, now, limits) {
                    Ok(o) => o,
                    Err(e) => {
                        reply(ShadowReply::Rejected, &e.payload(now));
                        return;
                    }
                };
                match save(inner, thing, name, &out.stored, expected).await {
                    Ok(()) => {
                        reply(ShadowReply::Accepted, &out.accepted);
                        reply(ShadowReply::Documents, &out.documents);
                        if let Some(delta) = &out.delta {
                            reply(ShadowReply::Delta, delta);
                        }
                        return;
                    }
                    Err(StoreError::VersionConflict { .. }) => continue,
                    Err(e) => {
                        tracing::error!(%thing, shadow = %name, error = %e, "shadow write failed");
                        reply(ShadowReply::Rejected, &internal(now));
                        return;
                    }
                }
            }
            ShadowOp::Delete => {
                let out = match shadow::delete(stored.as_ref(), payload, &address, now, limits) {
                    Ok(o) => o,
                    Err(e) => {
                        reply(ShadowReply::Rejected, &e.payload(now));
                        return;
                    }
                };
                match save(inner, thing, name, &out.tombstone, expected).await {
                    Ok(()) => {
                        reply(ShadowReply::Accepted, &out.accepted);
                        return;
                    }
                    Err(StoreError::VersionConflict { .. }) => continue,
                    Err(e) => {
                        tracing::error!(%thing, shadow = %name, error = %e, "shadow delete failed");
                        reply(ShadowReply::Rejected, &internal(now));
                        return;
                    }
                }
            }
        }
    }
    tracing::warn!(%thing, shadow = %name, "shadow kept changing; request rejected");
    reply(
        ShadowReply::Rejected,
        &json!({"code": 409, "message": "Version conflict", "timestamp": now_secs()}),
    );
}
