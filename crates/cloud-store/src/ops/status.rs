//! Device status: the last fleet status message of each thing (Greengrass's
//! `$aws/things/<t>/greengrassv2/health/json`) and when the thing was last heard of.

use crate::db::{Row, Tx, Value, query_opt, to_json};
use crate::ops::{after, limit};
use crate::{DeviceStatus, MAX_FLEET_STATUS_BYTES, Page, Result, StoreError};

use super::registry::require_thing;

const COLUMNS: &str = "thing, message, received_at, sequence, last_seen";

fn status_from(row: &Row) -> Result<DeviceStatus> {
    let message = match row.opt_text(1)? {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            StoreError::Database(format!(
                "stored fleet status message is not valid JSON: {e}"
            ))
        })?),
        None => None,
    };
    Ok(DeviceStatus {
        thing: row.text(0)?,
        message,
        received_at: row.opt_text(2)?,
        sequence: row.int(3)?,
        last_seen: row.text(4)?,
    })
}

/// Stores `message` as the thing's last fleet status (the sequence counts them) and marks it
/// seen at `at`. Refused when its JSON exceeds [`MAX_FLEET_STATUS_BYTES`].
pub(crate) async fn record_fleet_status(
    tx: &mut dyn Tx,
    thing: String,
    message: serde_json::Value,
    at: String,
) -> Result<DeviceStatus> {
    require_thing(tx, &thing).await?;
    let text = to_json(&message, "fleet status message")?;
    if text.len() > MAX_FLEET_STATUS_BYTES {
        return Err(StoreError::Invalid {
            field: "fleetStatus",
            message: format!(
                "fleet status message of {thing} is {} bytes; at most {MAX_FLEET_STATUS_BYTES}",
                text.len()
            ),
        });
    }
    tx.execute(
        "INSERT INTO device_status (thing, message, received_at, sequence, last_seen) \
         VALUES ($1, $2, $3, 1, $3) ON CONFLICT (thing) DO UPDATE SET \
         message = excluded.message, received_at = excluded.received_at, \
         sequence = device_status.sequence + 1, last_seen = excluded.last_seen",
        &[thing.as_str().into(), text.into(), at.as_str().into()],
    )
    .await?;
    get_device_status(tx, &thing)
        .await?
        .ok_or_else(|| StoreError::Database("device status vanished".into()))
}

/// [`record_fleet_status`] for many messages in one transaction (the endpoint's batches).
/// A message of a thing deleted since, or over the size bound, is skipped (logged) so that it
/// cannot undo the others. Returns how many were stored.
pub(crate) async fn record_fleet_statuses(
    tx: &mut dyn Tx,
    batch: Vec<(String, serde_json::Value)>,
    at: String,
) -> Result<u64> {
    let mut stored = 0;
    for (thing, message) in batch {
        let text = to_json(&message, "fleet status message")?;
        if text.len() > MAX_FLEET_STATUS_BYTES {
            tracing::warn!(%thing, bytes = text.len(), "fleet status over the bound; not stored");
            continue;
        }
        let known = query_opt(
            tx,
            "SELECT 1 FROM things WHERE name = $1",
            &[Value::from(thing.as_str())],
        )
        .await?;
        if known.is_none() {
            tracing::info!(%thing, "fleet status of a thing that no longer exists; not stored");
            continue;
        }
        tx.execute(
            "INSERT INTO device_status (thing, message, received_at, sequence, last_seen) \
             VALUES ($1, $2, $3, 1, $3) ON CONFLICT (thing) DO UPDATE SET \
             message = excluded.message, received_at = excluded.received_at, \
             sequence = device_status.sequence + 1, last_seen = excluded.last_seen",
            &[thing.as_str().into(), text.into(), at.as_str().into()],
        )
        .await?;
        stored += 1;
    }
    Ok(stored)
}

/// Marks the thing seen at `at` (a connect, a disconnect, any message).
pub(crate) async fn touch_device(tx: &mut dyn Tx, thing: String, at: String) -> Result<()> {
    require_thing(tx, &thing).await?;
    tx.execute(
        "INSERT INTO device_status (thing, message, received_at, sequence, last_seen) \
         VALUES ($1, NULL, NULL, 0, $2) ON CONFLICT (thing) DO UPDATE SET \
         last_seen = excluded.last_seen",
        &[thing.as_str().into(), at.as_str().into()],
    )
    .await?;
    Ok(())
}

pub(crate) async fn get_device_status(
    tx: &mut dyn Tx,
    thing: &str,
) -> Result<Option<DeviceStatus>> {
    let sql = format!("SELECT {COLUMNS} FROM device_status WHERE thing = $1");
    let row = query_opt(tx, &sql, &[Value::from(thing)]).await?;
    row.as_ref().map(status_from).transpose()
}

pub(crate) async fn list_device_statuses(tx: &mut dyn Tx, page: Page) -> Result<Vec<DeviceStatus>> {
    let sql =
        format!("SELECT {COLUMNS} FROM device_status WHERE thing > $1 ORDER BY thing LIMIT $2");
    let rows = tx.query(&sql, &[after(&page), limit(&page)]).await?;
    rows.iter().map(status_from).collect()
}
