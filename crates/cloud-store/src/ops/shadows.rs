//! Device shadows. Writes are optimistic: the version check is part of the SQL statement, so
//! of two writers that read the same version exactly one succeeds, on either backend and
//! across several control-plane nodes.

use crate::db::{Tx, query_opt, to_json};
use crate::ops::registry::require_thing;
use crate::ops::{after, limit, not_found};
use crate::{Page, Result, ShadowRecord, StoreError};

fn shadow_key(thing: &str, name: &str) -> String {
    if name.is_empty() {
        thing.to_owned()
    } else {
        format!("{thing}/{name}")
    }
}

async fn stored_version(tx: &mut dyn Tx, thing: &str, name: &str) -> Result<Option<i64>> {
    let row = query_opt(
        tx,
        "SELECT version FROM shadows WHERE thing = $1 AND name = $2",
        &[thing.into(), name.into()],
    )
    .await?;
    row.map(|r| r.int(0)).transpose()
}

fn conflict(thing: &str, name: &str, expected: Option<i64>, found: Option<i64>) -> StoreError {
    StoreError::VersionConflict {
        kind: "shadow",
        key: shadow_key(thing, name),
        expected: expected.unwrap_or(0),
        found: found.unwrap_or(0),
    }
}

pub(crate) async fn get_shadow(
    tx: &mut dyn Tx,
    thing: &str,
    name: &str,
) -> Result<Option<ShadowRecord>> {
    let row = query_opt(
        tx,
        "SELECT thing, name, document, version FROM shadows WHERE thing = $1 AND name = $2",
        &[thing.into(), name.into()],
    )
    .await?;
    row.map(|row| {
        Ok(ShadowRecord {
            thing: row.text(0)?,
            name: row.text(1)?,
            document: row.json(2, "shadow document")?,
            version: row.int(3)?,
        })
    })
    .transpose()
}

pub(crate) async fn put_shadow(
    tx: &mut dyn Tx,
    shadow: ShadowRecord,
    expected_version: Option<i64>,
) -> Result<()> {
    require_thing(tx, &shadow.thing).await?;
    let document = to_json(&shadow.document, "shadow document")?;
    let written = match expected_version {
        None => {
            tx.execute(
                "INSERT INTO shadows (thing, name, document, version) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (thing, name) DO NOTHING",
                &[
                    shadow.thing.as_str().into(),
                    shadow.name.as_str().into(),
                    document.into(),
                    shadow.version.into(),
                ],
            )
            .await?
        }
        Some(expected) => {
            tx.execute(
                "UPDATE shadows SET document = $1, version = $2 \
                 WHERE thing = $3 AND name = $4 AND version = $5",
                &[
                    document.into(),
                    shadow.version.into(),
                    shadow.thing.as_str().into(),
                    shadow.name.as_str().into(),
                    expected.into(),
                ],
            )
            .await?
        }
    };
    if written == 0 {
        let found = stored_version(tx, &shadow.thing, &shadow.name).await?;
        return Err(conflict(
            &shadow.thing,
            &shadow.name,
            expected_version,
            found,
        ));
    }
    Ok(())
}

/// `expected_version` None deletes whatever version is stored.
pub(crate) async fn delete_shadow(
    tx: &mut dyn Tx,
    thing: &str,
    name: &str,
    expected_version: Option<i64>,
) -> Result<()> {
    let deleted = match expected_version {
        None => {
            tx.execute(
                "DELETE FROM shadows WHERE thing = $1 AND name = $2",
                &[thing.into(), name.into()],
            )
            .await?
        }
        Some(expected) => {
            tx.execute(
                "DELETE FROM shadows WHERE thing = $1 AND name = $2 AND version = $3",
                &[thing.into(), name.into(), expected.into()],
            )
            .await?
        }
    };
    if deleted == 0 {
        return match stored_version(tx, thing, name).await? {
            None => Err(not_found("shadow", &shadow_key(thing, name))),
            found => Err(conflict(thing, name, expected_version, found)),
        };
    }
    Ok(())
}

pub(crate) async fn list_named_shadows(
    tx: &mut dyn Tx,
    thing: &str,
    page: Page,
) -> Result<Vec<String>> {
    require_thing(tx, thing).await?;
    let rows = tx
        .query(
            "SELECT name FROM shadows WHERE thing = $1 AND name <> '' AND name > $2 \
             ORDER BY name LIMIT $3",
            &[thing.into(), after(&page), limit(&page)],
        )
        .await?;
    rows.iter().map(|r| r.text(0)).collect()
}
