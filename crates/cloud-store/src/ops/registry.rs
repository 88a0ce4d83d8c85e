//! Things, groups, memberships, connectivity and presence.

use crate::db::{Row, Tx, Value, query_opt, to_json};
use crate::ops::{after, limit, not_found, now};
use crate::{
    Attributes, Connectivity, NewThing, NewThingGroup, Page, Presence, Result, StoreError, Thing,
    ThingGroup,
};

const THING_COLUMNS: &str = "name, attributes, version, created_at";

fn thing_from(row: &Row) -> Result<Thing> {
    Ok(Thing {
        name: row.text(0)?,
        attributes: row.json(1, "thing attributes")?,
        version: row.int(2)?,
        created_at: row.text(3)?,
    })
}

fn group_from(row: &Row) -> Result<ThingGroup> {
    Ok(ThingGroup {
        name: row.text(0)?,
        description: row.opt_text(1)?,
        created_at: row.text(2)?,
    })
}

/// NotFound unless the thing exists.
pub(crate) async fn require_thing(tx: &mut dyn Tx, name: &str) -> Result<()> {
    match query_opt(tx, "SELECT 1 FROM things WHERE name = $1", &[name.into()]).await? {
        Some(_) => Ok(()),
        None => Err(not_found("thing", name)),
    }
}

async fn require_group(tx: &mut dyn Tx, name: &str) -> Result<()> {
    match query_opt(
        tx,
        "SELECT 1 FROM thing_groups WHERE name = $1",
        &[name.into()],
    )
    .await?
    {
        Some(_) => Ok(()),
        None => Err(not_found("thing group", name)),
    }
}

pub(crate) async fn create_thing(tx: &mut dyn Tx, thing: NewThing) -> Result<Thing> {
    let created = Thing {
        name: thing.name,
        attributes: thing.attributes,
        version: 1,
        created_at: now(),
    };
    let inserted = tx
        .execute(
            "INSERT INTO things (name, attributes, version, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
            &[
                created.name.as_str().into(),
                to_json(&created.attributes, "attributes")?.into(),
                created.version.into(),
                created.created_at.as_str().into(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "thing",
            key: created.name,
        });
    }
    Ok(created)
}

pub(crate) async fn get_thing(tx: &mut dyn Tx, name: &str) -> Result<Thing> {
    let sql = format!("SELECT {THING_COLUMNS} FROM things WHERE name = $1");
    match query_opt(tx, &sql, &[name.into()]).await? {
        Some(row) => thing_from(&row),
        None => Err(not_found("thing", name)),
    }
}

pub(crate) async fn list_things(tx: &mut dyn Tx, page: Page) -> Result<Vec<Thing>> {
    let sql = format!("SELECT {THING_COLUMNS} FROM things WHERE name > $1 ORDER BY name LIMIT $2");
    let rows = tx.query(&sql, &[after(&page), limit(&page)]).await?;
    rows.iter().map(thing_from).collect()
}

pub(crate) async fn set_thing_attributes(
    tx: &mut dyn Tx,
    name: &str,
    attributes: Attributes,
    expected_version: Option<i64>,
) -> Result<Thing> {
    let current = get_thing(tx, name).await?;
    if let Some(expected) = expected_version
        && expected != current.version
    {
        return Err(StoreError::VersionConflict {
            kind: "thing",
            key: name.to_owned(),
            expected,
            found: current.version,
        });
    }
    // The version check is repeated in SQL so a concurrent writer between the read above and
    // this update (PostgreSQL, several nodes) still makes this call fail.
    let changed = tx
        .execute(
            "UPDATE things SET attributes = $1, version = version + 1 \
             WHERE name = $2 AND version = $3",
            &[
                to_json(&attributes, "attributes")?.into(),
                name.into(),
                current.version.into(),
            ],
        )
        .await?;
    if changed == 0 {
        let found = get_thing(tx, name).await?.version;
        return Err(StoreError::VersionConflict {
            kind: "thing",
            key: name.to_owned(),
            expected: expected_version.unwrap_or(current.version),
            found,
        });
    }
    Ok(Thing {
        attributes,
        version: current.version + 1,
        ..current
    })
}

pub(crate) async fn delete_thing(tx: &mut dyn Tx, name: &str) -> Result<()> {
    require_thing(tx, name).await?;
    // Certificates outlive the thing, detached and revoked, so a leaked device key stays
    // refused; memberships, connectivity, presence, shadows and job executions go with the
    // thing (ON DELETE CASCADE).
    tx.execute(
        "UPDATE certificates SET status = 'REVOKED', revoked_at = COALESCE(revoked_at, $1), \
         thing = NULL WHERE thing = $2",
        &[now().into(), name.into()],
    )
    .await?;
    tx.execute("DELETE FROM things WHERE name = $1", &[name.into()])
        .await?;
    Ok(())
}

pub(crate) async fn create_group(tx: &mut dyn Tx, group: NewThingGroup) -> Result<ThingGroup> {
    let created = ThingGroup {
        name: group.name,
        description: group.description,
        created_at: now(),
    };
    let inserted = tx
        .execute(
            "INSERT INTO thing_groups (name, description, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
            &[
                created.name.as_str().into(),
                (&created.description).into(),
                created.created_at.as_str().into(),
            ],
        )
        .await?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: "thing group",
            key: created.name,
        });
    }
    Ok(created)
}

pub(crate) async fn get_group(tx: &mut dyn Tx, name: &str) -> Result<ThingGroup> {
    match query_opt(
        tx,
        "SELECT name, description, created_at FROM thing_groups WHERE name = $1",
        &[name.into()],
    )
    .await?
    {
        Some(row) => group_from(&row),
        None => Err(not_found("thing group", name)),
    }
}

pub(crate) async fn list_groups(tx: &mut dyn Tx, page: Page) -> Result<Vec<ThingGroup>> {
    let rows = tx
        .query(
            "SELECT name, description, created_at FROM thing_groups WHERE name > $1 \
             ORDER BY name LIMIT $2",
            &[after(&page), limit(&page)],
        )
        .await?;
    rows.iter().map(group_from).collect()
}

pub(crate) async fn delete_group(tx: &mut dyn Tx, name: &str) -> Result<()> {
    let deleted = tx
        .execute("DELETE FROM thing_groups WHERE name = $1", &[name.into()])
        .await?;
    if deleted == 0 {
        return Err(not_found("thing group", name));
    }
    Ok(())
}

pub(crate) async fn add_to_group(tx: &mut dyn Tx, group: &str, thing: &str) -> Result<()> {
    require_group(tx, group).await?;
    require_thing(tx, thing).await?;
    tx.execute(
        "INSERT INTO group_members (group_name, thing_name) VALUES ($1, $2) \
         ON CONFLICT (group_name, thing_name) DO NOTHING",
        &[group.into(), thing.into()],
    )
    .await?;
    Ok(())
}

/// Removing a thing that is not a member is not an error (as AWS IoT); an unknown group or
/// thing is.
pub(crate) async fn remove_from_group(tx: &mut dyn Tx, group: &str, thing: &str) -> Result<()> {
    require_group(tx, group).await?;
    require_thing(tx, thing).await?;
    tx.execute(
        "DELETE FROM group_members WHERE group_name = $1 AND thing_name = $2",
        &[group.into(), thing.into()],
    )
    .await?;
    Ok(())
}

pub(crate) async fn group_members(tx: &mut dyn Tx, group: &str, page: Page) -> Result<Vec<String>> {
    require_group(tx, group).await?;
    let rows = tx
        .query(
            "SELECT thing_name FROM group_members WHERE group_name = $1 AND thing_name > $2 \
             ORDER BY thing_name LIMIT $3",
            &[group.into(), after(&page), limit(&page)],
        )
        .await?;
    rows.iter().map(|r| r.text(0)).collect()
}

/// Every group of the thing, by name. Not paged: a thing is in few groups (AWS IoT allows
/// 10), and the authorizer needs them all.
pub(crate) async fn groups_of(tx: &mut dyn Tx, thing: &str) -> Result<Vec<String>> {
    require_thing(tx, thing).await?;
    let rows = tx
        .query(
            "SELECT group_name FROM group_members WHERE thing_name = $1 ORDER BY group_name",
            &[thing.into()],
        )
        .await?;
    rows.iter().map(|r| r.text(0)).collect()
}

pub(crate) async fn put_connectivity(tx: &mut dyn Tx, info: Connectivity) -> Result<()> {
    require_thing(tx, &info.thing).await?;
    tx.execute(
        "INSERT INTO connectivity (thing, endpoints, reported_at) VALUES ($1, $2, $3) \
         ON CONFLICT (thing) DO UPDATE SET endpoints = excluded.endpoints, \
         reported_at = excluded.reported_at",
        &[
            info.thing.as_str().into(),
            to_json(&info.endpoints, "connectivity endpoints")?.into(),
            info.reported_at.as_str().into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn get_connectivity(tx: &mut dyn Tx, thing: &str) -> Result<Option<Connectivity>> {
    let row = query_opt(
        tx,
        "SELECT thing, endpoints, reported_at FROM connectivity WHERE thing = $1",
        &[thing.into()],
    )
    .await?;
    row.map(|row| {
        Ok(Connectivity {
            thing: row.text(0)?,
            endpoints: row.json(1, "connectivity endpoints")?,
            reported_at: row.text(2)?,
        })
    })
    .transpose()
}

/// Sets the presence outright; the live-connection count follows it (1 online, 0 offline).
/// The endpoint uses [`presence_connected`] and [`presence_disconnected`] instead.
pub(crate) async fn set_presence(tx: &mut dyn Tx, presence: Presence) -> Result<()> {
    require_thing(tx, &presence.thing).await?;
    tx.execute(
        "INSERT INTO presence (thing, online, client_id, at, connections) \
         VALUES ($1, $2, $3, $4, $2) \
         ON CONFLICT (thing) DO UPDATE SET online = excluded.online, \
         client_id = excluded.client_id, at = excluded.at, connections = excluded.connections",
        &[
            presence.thing.as_str().into(),
            Value::from(presence.online),
            presence.client_id.as_str().into(),
            presence.at.as_str().into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn get_presence(tx: &mut dyn Tx, thing: &str) -> Result<Option<Presence>> {
    let row = query_opt(
        tx,
        "SELECT thing, online, client_id, at FROM presence WHERE thing = $1",
        &[thing.into()],
    )
    .await?;
    row.map(|row| {
        Ok(Presence {
            thing: row.text(0)?,
            online: row.bool(1)?,
            client_id: row.text(2)?,
            at: row.text(3)?,
        })
    })
    .transpose()
}

/// One more live connection of the thing (under any of its client ids): online.
pub(crate) async fn presence_connected(
    tx: &mut dyn Tx,
    thing: String,
    client_id: String,
    at: String,
) -> Result<()> {
    require_thing(tx, &thing).await?;
    tx.execute(
        "INSERT INTO presence (thing, online, client_id, at, connections) \
         VALUES ($1, 1, $2, $3, 1) \
         ON CONFLICT (thing) DO UPDATE SET online = 1, client_id = excluded.client_id, \
         at = excluded.at, connections = presence.connections + 1",
        &[thing.into(), client_id.into(), at.into()],
    )
    .await?;
    Ok(())
}

/// One live connection fewer (never below zero): the thing stays online while another of
/// its connections is live. The client id shown is the one that connected last until the
/// last connection goes, then the one that left last.
pub(crate) async fn presence_disconnected(
    tx: &mut dyn Tx,
    thing: String,
    client_id: String,
    at: String,
) -> Result<()> {
    require_thing(tx, &thing).await?;
    tx.execute(
        "INSERT INTO presence (thing, online, client_id, at, connections) \
         VALUES ($1, 0, $2, $3, 0) \
         ON CONFLICT (thing) DO UPDATE SET \
         online = CASE WHEN presence.connections > 1 THEN 1 ELSE 0 END, \
         client_id = CASE WHEN presence.connections > 1 THEN presence.client_id \
             ELSE excluded.client_id END, \
         at = excluded.at, \
         connections = CASE WHEN presence.connections > 1 THEN presence.connections - 1 \
             ELSE 0 END",
        &[thing.into(), client_id.into(), at.into()],
    )
    .await?;
    Ok(())
}

/// Every thing offline with no live connection: what an endpoint does at start, since the
/// connections counted before it stopped (or crashed) are gone. Returns how many things
/// were marked offline.
pub(crate) async fn reset_presence(tx: &mut dyn Tx, at: String) -> Result<u64> {
    tx.execute(
        "UPDATE presence SET online = 0, connections = 0, at = $1 \
         WHERE online <> 0 OR connections <> 0",
        &[at.into()],
    )
    .await
}
