//! Fleet status ingestion: a thing's PUBLISH on its own
//! `$aws/things/<t>/greengrassv2/health/json` is parsed as a Greengrass fleet status message
//! and stored as its device status. The payload is bounded by the broker's packet limit and by
//! the store's `MAX_FLEET_STATUS_BYTES`; a bad one is logged with the thing's name and
//! dropped, never fatal.

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

pub(crate) async fn ingest<B: Backend>(inner: &Inner<B>, thing: &str, body: &[u8]) {
    let value = match parse(thing, body) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%thing, error = %e, "fleet status dropped");
            return;
        }
    };
    match inner
        .store
        .record_fleet_status(thing, &value, &now_rfc3339())
        .await
    {
        Ok(s) => tracing::debug!(%thing, sequence = s.sequence, "fleet status stored"),
        Err(e) => tracing::warn!(%thing, error = %e, "fleet status not stored"),
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
