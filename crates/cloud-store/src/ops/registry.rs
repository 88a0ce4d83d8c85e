//! Things, groups, memberships, connectivity and presence.

use crate::db::{Row, Tx, Value, query_opt, to_json};
use crate::ops::{after, limit, not_found, now};
use crate::{
    Attributes, Connectivity, NewThing, NewThingGroup, Page, Presence, PresenceChange, Result,
    StoreError, Thing, ThingGroup,
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

/// Sets the presence outright; the live-connection count follows it (1 online, 0 offline),
/// held by no endpoint node (the `""` node, which no endpoint resets). The endpoint uses
/// [`presence_changed`] instead.
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
    tx.execute(
        "DELETE FROM presence_nodes WHERE thing = $1",
        &[presence.thing.as_str().into()],
    )
    .await?;
    if presence.online {
        tx.execute(
            "INSERT INTO presence_nodes (thing, node, connections) VALUES ($1, '', 1)",
            &[presence.thing.as_str().into()],
        )
        .await?;
    }
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

/// A net change of the thing's live connections on one node (floored at zero), then the
/// thing's presence from the sum over its nodes. The presence row is written first: on
/// PostgreSQL its row lock orders concurrent changes of one thing from several nodes, so each
/// sum sees the other's committed count.
pub(crate) async fn presence_changed(tx: &mut dyn Tx, change: PresenceChange) -> Result<()> {
    let PresenceChange {
        node,
        thing,
        client_id,
        last_connect,
        delta,
        at,
    } = change;
    require_thing(tx, &thing).await?;
    tx.execute(
        "INSERT INTO presence (thing, online, client_id, at, connections) \
         VALUES ($1, 0, $2, $3, 0) ON CONFLICT (thing) DO UPDATE SET at = excluded.at",
        &[
            thing.as_str().into(),
            client_id.as_str().into(),
            at.as_str().into(),
        ],
    )
    .await?;
    tx.execute(
        "INSERT INTO presence_nodes (thing, node, connections) \
         VALUES ($1, $2, CASE WHEN $3 > 0 THEN $3 ELSE 0 END) \
         ON CONFLICT (thing, node) DO UPDATE SET connections = \
         CASE WHEN presence_nodes.connections + $3 > 0 \
             THEN presence_nodes.connections + $3 ELSE 0 END",
        &[
            thing.as_str().into(),
            node.as_str().into(),
            Value::Int(delta),
        ],
    )
    .await?;
    tx.execute(
        "DELETE FROM presence_nodes WHERE thing = $1 AND node = $2 AND connections = 0",
        &[thing.as_str().into(), node.as_str().into()],
    )
    .await?;
    let total = query_opt(
        tx,
        "SELECT CAST(COALESCE(SUM(connections), 0) AS BIGINT) FROM presence_nodes WHERE thing = $1",
        &[thing.as_str().into()],
    )
    .await?
    .map(|row| row.int(0))
    .transpose()?
    .unwrap_or(0);
    // The client id shown: the last to connect while any connection is live, the last to
    // leave once none is; kept when these events hold no connect and some connection lives.
    let shown = if total == 0 {
        Some(client_id)
    } else {
        last_connect
    };
    let new_client = shown.is_some();
    let client_id = shown.unwrap_or_default();
    tx.execute(
        "UPDATE presence SET online = $2, connections = $3, \
         client_id = CASE WHEN $4 <> 0 THEN $5 ELSE client_id END WHERE thing = $1",
        &[
            thing.as_str().into(),
            Value::from(total > 0),
            Value::Int(total),
            Value::from(new_client),
            client_id.as_str().into(),
        ],
    )
    .await?;
    Ok(())
}

/// Forgets `node`'s live connections (an endpoint node starting: those it counted before it
/// stopped or crashed are gone) and recomputes the presence of every thing that changes:
/// offline when no other node holds a connection. Returns how many things changed.
pub(crate) async fn reset_presence(tx: &mut dyn Tx, node: String, at: String) -> Result<u64> {
    tx.execute(
        "DELETE FROM presence_nodes WHERE node = $1",
        &[node.as_str().into()],
    )
    .await?;
    const SUM: &str = "CAST(COALESCE((SELECT SUM(n.connections) FROM presence_nodes n \
                       WHERE n.thing = presence.thing), 0) AS BIGINT)";
    tx.execute(
        &format!(
            "UPDATE presence SET connections = {SUM}, \
             online = CASE WHEN {SUM} > 0 THEN 1 ELSE 0 END, at = $1 \
             WHERE connections <> {SUM} OR online <> CASE WHEN {SUM} > 0 THEN 1 ELSE 0 END"
        ),
        &[at.into()],
    )
    .await
}
