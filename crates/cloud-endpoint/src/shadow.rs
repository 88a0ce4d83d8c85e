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

/// Applies a request on a shadow topic and publishes its replies. Returns the rejection
/// payload when it was rejected (the control plane's [`crate::EndpointHandle::update_shadow`]
/// hands it back to its caller).
pub async fn handle<B: Backend>(
    inner: &Inner<B>,
    topic: &ShadowTopic,
    payload: &[u8],
) -> Result<(), Value> {
    let address = topic.address();
    let thing = address.thing.as_str();
    let name = address.shadow.as_deref().unwrap_or("");
    let limits = &inner.config.shadow;
    let reply = |r: ShadowReply, body: &Value| inner.reply(&topic.with_reply(r).to_string(), body);
    let reject = |body: Value| {
        reply(ShadowReply::Rejected, &body);
        Err(body)
    };
    for _ in 0..SHADOW_RETRIES {
        let now = now_secs();
        let (stored, expected) = match load(inner, thing, name).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(%thing, shadow = %name, error = %e, "shadow read failed");
                return reject(internal(now));
            }
        };
        match topic.op {
            ShadowOp::Get => {
                return match shadow::get(stored.as_ref(), payload, &address, now, limits) {
                    Ok(doc) => {
                        reply(ShadowReply::Accepted, &doc);
                        Ok(())
                    }
                    Err(e) => reject(e.payload(now)),
                };
            }
            ShadowOp::Update => {
                let out = match shadow::apply_update(stored.as_ref(), payload, now, limits) {
                    Ok(o) => o,
                    Err(e) => return reject(e.payload(now)),
                };
                match save(inner, thing, name, &out.stored, expected).await {
                    Ok(()) => {
                        reply(ShadowReply::Accepted, &out.accepted);
                        reply(ShadowReply::Documents, &out.documents);
                        if let Some(delta) = &out.delta {
                            reply(ShadowReply::Delta, delta);
                        }
                        return Ok(());
                    }
                    Err(StoreError::VersionConflict { .. }) => continue,
                    Err(e) => {
                        tracing::error!(%thing, shadow = %name, error = %e, "shadow write failed");
                        return reject(internal(now));
                    }
                }
            }
            ShadowOp::Delete => {
                let out = match shadow::delete(stored.as_ref(), payload, &address, now, limits) {
                    Ok(o) => o,
                    Err(e) => return reject(e.payload(now)),
                };
                match save(inner, thing, name, &out.tombstone, expected).await {
                    Ok(()) => {
                        reply(ShadowReply::Accepted, &out.accepted);
                        return Ok(());
                    }
                    Err(StoreError::VersionConflict { .. }) => continue,
                    Err(e) => {
                        tracing::error!(%thing, shadow = %name, error = %e, "shadow delete failed");
                        return reject(internal(now));
                    }
                }
            }
        }
    }
    tracing::warn!(%thing, shadow = %name, "shadow kept changing; request rejected");
    reject(json!({"code": 409, "message": "Version conflict", "timestamp": now_secs()}))
}

/// After the store's copy of a shadow was written by someone other than this service:
/// publishes `update/delta` with the whole of desired-vs-reported (what a device that missed
/// the update would need), nothing when they agree. `documents` needs the previous state,
/// which only [`handle`] has: writers that want it go through `update_shadow`.
pub async fn publish_delta<B: Backend>(
    inner: &Inner<B>,
    thing: &str,
    name: &str,
) -> Result<bool, String> {
    let (stored, _) = load(inner, thing, name).await?;
    let Some(doc) = stored.filter(|d| !d.deleted) else {
        return Ok(false);
    };
    let Some(delta) = doc.delta() else {
        return Ok(false);
    };
    let topic = ShadowTopic {
        thing: thing.to_string(),
        shadow: (!name.is_empty()).then(|| name.to_string()),
        op: ShadowOp::Update,
        reply: Some(ShadowReply::Delta),
    };
    let meta = doc.metadata.desired.clone().unwrap_or_default();
    inner.reply(
        &topic.to_string(),
        &json!({
            "version": doc.version,
            "timestamp": now_secs(),
            "state": Value::Object(delta),
            "metadata": Value::Object(meta),
        }),
    );
    Ok(true)
}
