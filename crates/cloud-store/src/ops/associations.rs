//! Client devices associated with core devices (Greengrass
//! BatchAssociateClientDeviceWithCoreDevice and its siblings). An association lets the core
//! use the device's shadow topics at the cloud endpoint. Each call is one transaction;
//! associating twice keeps the first time, disassociating what is not associated is not an
//! error (both as Greengrass).

use crate::db::{Tx, Value, query_opt};
use crate::{
    AssociationError, ClientDeviceAssociation, MAX_ASSOCIATION_BATCH, MAX_CLIENT_DEVICES_PER_CORE,
    Page, Result, StoreError,
};

use super::registry::require_thing;
use super::{after, limit};

fn check_batch(devices: &[String]) -> Result<()> {
    if devices.len() > MAX_ASSOCIATION_BATCH {
        return Err(StoreError::Invalid {
            field: "entries",
            message: format!(
                "{} client devices in one call; at most {MAX_ASSOCIATION_BATCH}",
                devices.len()
            ),
        });
    }
    Ok(())
}

fn entry_error(thing: &str, code: &str, message: String) -> AssociationError {
    AssociationError {
        thing_name: thing.to_string(),
        code: code.to_string(),
        message,
    }
}

async fn count(tx: &mut dyn Tx, core: &str) -> Result<i64> {
    match query_opt(
        tx,
        "SELECT COUNT(*) FROM client_device_associations WHERE core_thing = $1",
        &[core.into()],
    )
    .await?
    {
        Some(row) => row.int(0),
        None => Ok(0),
    }
}

/// Associates each device with `core`. NotFound when the core is not a thing; a device that
/// is not a thing, is the core itself or would pass the core's bound is returned as an error
/// entry and the others are associated.
pub(crate) async fn associate_client_devices(
    tx: &mut dyn Tx,
    core: String,
    devices: Vec<String>,
    at: String,
) -> Result<Vec<AssociationError>> {
    check_batch(&devices)?;
    require_thing(tx, &core).await?;
    let mut errors = Vec::new();
    let mut associated = count(tx, &core).await?;
    for device in &devices {
        if *device == core {
            errors.push(entry_error(
                device,
                "ValidationException",
                "a core device cannot be its own client device".into(),
            ));
            continue;
        }
        if query_opt(tx, "SELECT 1 FROM things WHERE name = $1", &[device.into()])
            .await?
            .is_none()
        {
            errors.push(entry_error(
                device,
                "ResourceNotFoundException",
                format!("thing {device:?} not found"),
            ));
            continue;
        }
        let known = query_opt(
            tx,
            "SELECT 1 FROM client_device_associations WHERE core_thing = $1 AND device_thing = $2",
            &[core.as_str().into(), device.into()],
        )
        .await?
        .is_some();
        if known {
            continue;
        }
        if associated >= MAX_CLIENT_DEVICES_PER_CORE as i64 {
            errors.push(entry_error(
                device,
                "ServiceQuotaExceededException",
                format!(
                    "core device {core:?} has {MAX_CLIENT_DEVICES_PER_CORE} client devices, the most allowed"
                ),
            ));
            continue;
        }
        tx.execute(
            "INSERT INTO client_device_associations (core_thing, device_thing, associated_at) \
             VALUES ($1, $2, $3) ON CONFLICT (core_thing, device_thing) DO NOTHING",
            &[core.as_str().into(), device.into(), at.as_str().into()],
        )
        .await?;
        associated += 1;
    }
    Ok(errors)
}

/// Removes each device's association with `core`. NotFound when the core is not a thing.
pub(crate) async fn disassociate_client_devices(
    tx: &mut dyn Tx,
    core: String,
    devices: Vec<String>,
) -> Result<Vec<AssociationError>> {
    check_batch(&devices)?;
    require_thing(tx, &core).await?;
    for device in &devices {
        tx.execute(
            "DELETE FROM client_device_associations WHERE core_thing = $1 AND device_thing = $2",
            &[core.as_str().into(), device.into()],
        )
        .await?;
    }
    Ok(Vec::new())
}

/// The devices associated with `core`, by name, a page at a time. NotFound when the core is
/// not a thing.
pub(crate) async fn list_client_devices(
    tx: &mut dyn Tx,
    core: String,
    page: Page,
) -> Result<Vec<ClientDeviceAssociation>> {
    require_thing(tx, &core).await?;
    let rows = tx
        .query(
            "SELECT device_thing, associated_at FROM client_device_associations \
             WHERE core_thing = $1 AND device_thing > $2 ORDER BY device_thing LIMIT $3",
            &[Value::from(core.as_str()), after(&page), limit(&page)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ClientDeviceAssociation {
                thing_name: r.text(0)?,
                association_timestamp: r.text(1)?,
            })
        })
        .collect()
}
