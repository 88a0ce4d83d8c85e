//! Fleet deployment delivery: a deployment, the job or shadow that carries it to devices, and
//! the cancellation of the job it replaces, written in one transaction so a crash mid-way
//! leaves either all of it or none. The deployment a new one replaces moves to
//! `deployment_history` in that transaction (INACTIVE, its successor named); cancelling it
//! afterwards is refused with [`StoreError::Superseded`], so it can never touch its successor.
//!
//! Bound: at most [`HISTORY_PER_TARGET`] superseded deployments kept per target.

use crate::db::{Tx, Value, query_opt, to_json};
use crate::ops::components::{
    DEPLOYMENT_COLUMNS, deployment_for_target, put_deployment_superseding, target_columns,
};
use crate::ops::{jobs, shadows};
use crate::{
    DeploymentTarget, FleetCancel, FleetDeployment, FleetDeploymentWrite, Result, StoreError,
};

/// Superseded deployments kept per target; older ones are removed when another is added.
pub const HISTORY_PER_TARGET: i64 = 100;

/// Moves `previous` (the target's current deployment) to the history, superseded by
/// `successor`: `deploymentStatus` INACTIVE unless it was CANCELED, `supersededBy`, and the
/// device's last status when the caller knows it (`deviceStatus`, thing targets: their shadow
/// will soon speak only of the successor). The caller replaces the current row.
pub(crate) async fn supersede(
    tx: &mut dyn Tx,
    previous: FleetDeployment,
    successor: &str,
    device_status: Option<serde_json::Value>,
) -> Result<()> {
    let (kind, target_name) = target_columns(&previous.target);
    let mut document = previous.document;
    if let Some(doc) = document.as_object_mut() {
        if doc.get("deploymentStatus").and_then(|s| s.as_str()) != Some("CANCELED") {
            doc.insert("deploymentStatus".into(), "INACTIVE".into());
        }
        doc.insert("supersededBy".into(), successor.into());
        if let Some(status) = device_status {
            doc.insert("deviceStatus".into(), status);
        }
    }
    let at = crate::ops::now();
    tx.execute(
        &format!(
            "INSERT INTO deployment_history ({DEPLOYMENT_COLUMNS}, superseded_by, superseded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ),
        &[
            previous.id.as_str().into(),
            kind.into(),
            target_name.into(),
            to_json(&previous.components, "deployment components")?.into(),
            to_json(&document, "deployment document")?.into(),
            previous.created_at.as_str().into(),
            successor.into(),
            at.into(),
        ],
    )
    .await?;
    tx.execute(
        "DELETE FROM deployment_history WHERE target_kind = $1 AND target_name = $2 \
         AND id NOT IN (SELECT id FROM deployment_history WHERE target_kind = $1 \
         AND target_name = $2 ORDER BY superseded_at DESC, id DESC LIMIT $3)",
        &[
            kind.into(),
            target_name.into(),
            Value::Int(HISTORY_PER_TARGET),
        ],
    )
    .await?;
    Ok(())
}

/// Cancels a current deployment in one transaction: its job and pending executions (group) or
/// the thing's deployment shadow as the caller built it, and `deploymentStatus` CANCELED.
/// Superseded (naming the successor) when a newer deployment replaced it; NotFound when no
/// such deployment exists. Returns the things to notify.
pub(crate) async fn cancel_fleet_deployment(
    tx: &mut dyn Tx,
    cancel: FleetCancel,
) -> Result<(FleetDeployment, Vec<String>)> {
    let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1");
    let Some(row) = query_opt(tx, &sql, &[cancel.id.as_str().into()]).await? else {
        let by = query_opt(
            tx,
            "SELECT superseded_by FROM deployment_history WHERE id = $1",
            &[cancel.id.as_str().into()],
        )
        .await?;
        return Err(match by {
            Some(row) => StoreError::Superseded {
                kind: "deployment",
                key: cancel.id,
                by: row.text(0)?,
            },
            None => crate::ops::not_found("deployment", &cancel.id),
        });
    };
    let mut deployment = crate::ops::components::deployment_from(&row)?;
    let mut notified = Vec::new();
    match &deployment.target {
        DeploymentTarget::ThingGroup(_) => {
            if let Some(job_id) = deployment.document["jobId"].as_str()
                && query_opt(tx, "SELECT id FROM jobs WHERE id = $1", &[job_id.into()])
                    .await?
                    .is_some()
            {
                notified = cancel_job(tx, job_id, cancel.now_secs).await?;
            }
        }
        DeploymentTarget::Thing(thing) => {
            let Some((shadow, expected)) = cancel.shadow else {
                return Err(StoreError::Invalid {
                    field: "shadow",
                    message: format!("cancelling thing {thing:?}'s deployment needs its shadow"),
                });
            };
            if shadow.thing != *thing {
                return Err(StoreError::Invalid {
                    field: "shadow",
                    message: format!("the shadow is {:?}'s, not {thing:?}'s", shadow.thing),
                });
            }
            notified.push(thing.clone());
            shadows::put_shadow(tx, shadow, expected).await?;
        }
    }
    if let Some(doc) = deployment.document.as_object_mut() {
        doc.insert("deploymentStatus".into(), "CANCELED".into());
    }
    tx.execute(
        "UPDATE deployments SET document = $2 WHERE id = $1",
        &[
            deployment.id.as_str().into(),
            to_json(&deployment.document, "deployment document")?.into(),
        ],
    )
    .await?;
    Ok((deployment, notified))
}

/// Marks a job CANCELED and its QUEUED / IN_PROGRESS executions CANCELED (each execution's
/// version bumped, so a device's stale update is refused). Returns the things whose execution
/// was canceled.
pub(crate) async fn cancel_job(
    tx: &mut dyn Tx,
    job_id: &str,
    now_secs: i64,
) -> Result<Vec<String>> {
    let mut job = jobs::get_job(tx, job_id).await?;
    if job.status != crate::JobStatus::Canceled {
        job.status = crate::JobStatus::Canceled;
        job.updated_at = crate::ops::now();
        jobs::update_job(tx, job).await?;
    }
    let rows = tx
        .query(
            "SELECT thing FROM job_executions WHERE job_id = $1 \
             AND status IN ('QUEUED', 'IN_PROGRESS') ORDER BY thing",
            &[job_id.into()],
        )
        .await?;
    let things: Vec<String> = rows.iter().map(|r| r.text(0)).collect::<Result<_>>()?;
    tx.execute(
        "UPDATE job_executions SET status = 'CANCELED', version_number = version_number + 1, \
         last_updated_at = $2 WHERE job_id = $1 AND status IN ('QUEUED', 'IN_PROGRESS')",
        &[job_id.into(), Value::Int(now_secs)],
    )
    .await?;
    Ok(things)
}

/// Cancels one thing's non-terminal execution of a job (a thing left the group). Returns
/// whether there was one.
pub(crate) async fn cancel_execution(
    tx: &mut dyn Tx,
    job_id: &str,
    thing: &str,
    now_secs: i64,
) -> Result<bool> {
    let n = tx
        .execute(
            "UPDATE job_executions SET status = 'CANCELED', version_number = version_number + 1, \
             last_updated_at = $3 WHERE job_id = $1 AND thing = $2 \
             AND status IN ('QUEUED', 'IN_PROGRESS')",
            &[job_id.into(), thing.into(), Value::Int(now_secs)],
        )
        .await?;
    Ok(n > 0)
}

/// Writes a deployment with its delivery. `write.replaces` must still be the target's current
/// deployment id (None: the target has none), else VersionConflict: two deployments to one
/// target at once cannot both win.
pub(crate) async fn create_fleet_deployment(
    tx: &mut dyn Tx,
    write: FleetDeploymentWrite,
) -> Result<Vec<String>> {
    let current = deployment_for_target(tx, &write.deployment.target).await?;
    let current_id = current.as_ref().map(|d| d.id.clone());
    if current_id != write.replaces {
        return Err(StoreError::VersionConflict {
            kind: "deployment target",
            key: target_key(&write.deployment.target),
            expected: 0,
            found: 0,
        });
    }
    let mut notified = Vec::new();
    if let Some(old_job) = &write.cancel_job
        && query_opt(
            tx,
            "SELECT id FROM jobs WHERE id = $1",
            &[old_job.as_str().into()],
        )
        .await?
        .is_some()
    {
        notified.extend(cancel_job(tx, old_job, write.now_secs).await?);
    }
    if let Some(job) = write.job {
        jobs::create_job(tx, job).await?;
    }
    for execution in write.executions {
        notified.push(execution.thing.clone());
        jobs::put_job_execution(tx, execution, None).await?;
    }
    if let Some((shadow, expected)) = write.shadow {
        notified.push(shadow.thing.clone());
        shadows::put_shadow(tx, shadow, expected).await?;
    }
    put_deployment_superseding(tx, write.deployment, write.superseded_status).await?;
    notified.sort();
    notified.dedup();
    Ok(notified)
}

fn target_key(target: &DeploymentTarget) -> String {
    match target {
        DeploymentTarget::Thing(t) => format!("thing/{t}"),
        DeploymentTarget::ThingGroup(g) => format!("thinggroup/{g}"),
    }
}

/// The target's current deployment, if any.
pub(crate) async fn current_deployment(
    tx: &mut dyn Tx,
    target: &DeploymentTarget,
) -> Result<Option<FleetDeployment>> {
    deployment_for_target(tx, target).await
}

/// The current deployment of every target `thing` belongs to: its own (`thing/<T>`) first,
/// then its groups' in name order; canceled ones included (the caller reads
/// `deploymentStatus`). One transaction, so a membership change cannot interleave. NotFound
/// when the thing does not exist. Bounded by the thing's groups (the registry bounds them).
pub(crate) async fn deployments_for_thing(
    tx: &mut dyn Tx,
    thing: &str,
) -> Result<Vec<FleetDeployment>> {
    let groups = crate::ops::registry::groups_of(tx, thing).await?;
    let mut out = Vec::with_capacity(groups.len() + 1);
    let targets = std::iter::once(DeploymentTarget::Thing(thing.to_owned()))
        .chain(groups.into_iter().map(DeploymentTarget::ThingGroup));
    for target in targets {
        if let Some(d) = deployment_for_target(tx, &target).await? {
            out.push(d);
        }
    }
    Ok(out)
}
