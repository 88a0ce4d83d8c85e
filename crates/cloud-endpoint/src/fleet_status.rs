//! Fleet status ingestion: a thing's PUBLISH on its own
//! `$aws/things/<t>/greengrassv2/health/json` is parsed as a Greengrass fleet status message
//! and stored as its device status. The payload is bounded by the broker's packet limit and by
//! the store's `MAX_FLEET_STATUS_BYTES`; a bad one is logged with the thing's name and
//! dropped, never fatal. Good ones are queued ([`STATUS_QUEUE`]) for one writer task that
//! stores them [`STATUS_BATCH`] per transaction.

use lichen_cloud_store::{Backend, MAX_FLEET_STATUS_BYTES};
use lichen_model::fleet::FleetStatusMessage;

use crate::Inner;
use crate::events::now_rfc3339;

/// Checks a fleet status body: Greengrass's shape, for the thing that sent it.
pub fn parse(thing: &str, body: &[u8]) -> Result<serde_json::Value, String> {
    if body.len() > MAX_FLEET_STATUS_BYTES {
        return Err(format!(
            "fleet status of {thing} is {} bytes; at most {MAX_FLEET_STATUS_BYTES}",
            body.len()
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("fleet status of {thing} is not JSON: {e}"))?;
    let message: FleetStatusMessage = serde_json::from_value(value.clone())
        .map_err(|e| format!("fleet status of {thing} is not a fleet status message: {e}"))?;
    if message.thing != thing {
        return Err(format!(
            "fleet status published by {thing} names thing {:?}",
            message.thing
        ));
    }
    Ok(value)
}

/// Fleet status messages waiting for the writer; a full queue holds the handler worker back
/// (backpressure, nothing dropped).
pub const STATUS_QUEUE: usize = 1024;
/// Most messages the writer stores in one transaction.
pub const STATUS_BATCH: usize = 64;

/// The sending side of the fleet status writer (in [`Inner`]).
pub(crate) type StatusSender = tokio::sync::mpsc::Sender<(String, serde_json::Value)>;

/// A channel for [`spawn_writer`].
pub(crate) fn channel() -> (
    StatusSender,
    tokio::sync::mpsc::Receiver<(String, serde_json::Value)>,
) {
    tokio::sync::mpsc::channel(STATUS_QUEUE)
}

/// The writer: takes what is queued (at most [`STATUS_BATCH`]) and stores it in one
/// transaction, so a thousand devices reporting at once cost tens of commits, not a thousand,
/// and the handler workers go back to job updates instead of waiting for each commit. Ends
/// when the endpoint (which holds the sender) is gone.
pub(crate) fn spawn_writer<B: Backend + 'static>(
    inner: &std::sync::Arc<Inner<B>>,
    mut rx: tokio::sync::mpsc::Receiver<(String, serde_json::Value)>,
) {
    let weak = std::sync::Arc::downgrade(inner);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(STATUS_BATCH);
        while rx.recv_many(&mut batch, STATUS_BATCH).await > 0 {
            let Some(inner) = weak.upgrade() else { return };
            let count = batch.len();
            match inner
                .store
                .record_fleet_statuses(std::mem::take(&mut batch), &now_rfc3339())
                .await
            {
                Ok(stored) => tracing::debug!(count, stored, "fleet statuses stored"),
                Err(e) => tracing::warn!(count, error = %e, "fleet statuses not stored"),
            }
        }
    });
}

pub(crate) async fn ingest<B: Backend>(inner: &Inner<B>, thing: &str, body: &[u8]) {
    let value = match parse(thing, body) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%thing, error = %e, "fleet status dropped");
            return;
        }
    };
    if inner
        .fleet_status
        .send((thing.to_string(), value))
        .await
        .is_err()
    {
        tracing::warn!(%thing, "fleet status writer stopped; status not stored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_are_named_and_refused() {
        let good = serde_json::json!({
            "ggcVersion": "2.12.0", "platform": "linux", "architecture": "amd64",
            "thing": "t1", "overallDeviceStatus": "HEALTHY", "sequenceNumber": 3,
            "timestamp": 1, "messageType": "COMPLETE", "trigger": "CADENCE", "components": []
        });
        assert!(parse("t1", good.to_string().as_bytes()).is_ok());
        let e = parse("t2", good.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("t2") && e.contains("t1"), "{e}");
        let e = parse("t1", b"{nope").unwrap_err();
        assert!(e.contains("t1") && e.contains("not JSON"), "{e}");
        let e = parse("t1", b"{\"thing\":\"t1\"}").unwrap_err();
        assert!(e.contains("not a fleet status message"), "{e}");
        let big = vec![b' '; MAX_FLEET_STATUS_BYTES + 1];
        assert!(parse("t1", &big).unwrap_err().contains("bytes"));
    }
}
