//! Fleet deployment delivery: a deployment, the job or shadow that carries it to devices, and
//! the cancellation of the job it replaces, written in one transaction so a crash mid-way
//! leaves either all of it or none.

use crate::db::{Tx, Value, query_opt};
use crate::ops::components::{deployment_for_target, put_deployment};
use crate::ops::{jobs, shadows};
use crate::{DeploymentTarget, FleetDeployment, FleetDeploymentWrite, Result, StoreError};

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
    put_deployment(tx, write.deployment).await?;
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
