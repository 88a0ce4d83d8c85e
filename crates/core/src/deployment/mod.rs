//! Local deployments: queue, version resolution, execution and rollback.

pub mod builtin;
pub(crate) mod engine;
pub mod installed;
/// The deployment documents live in `lichen-model`; this path is kept for existing callers.
pub mod model {
    pub use lichen_model::deployment::*;
}
pub mod planner;
pub mod queue;
pub mod status;
pub mod validate;

use std::sync::Arc;

use model::{DeploymentStatus, DetailedStatus};

use crate::runtime::Runtime;

/// Runs queued deployments one at a time, for the life of the core.
pub(crate) async fn worker(rt: Arc<Runtime>) {
    loop {
        let id = rt.deployments.next().await;
        let Some(record) = rt.deployments.get(&id) else {
            continue;
        };
        if record.status.is_final() {
            continue;
        }
        let record = match rt.deployments.update(&id, |r| {
            r.status = DeploymentStatus::InProgress;
            r.progress = Some("starting".into());
        }) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(deployment = %id, error = %e, "cannot record deployment start");
                continue;
            }
        };
        let attempt_path = rt.layout.attempt_marker();
        match installed::AttemptMarker::begin(&attempt_path, &id) {
            Ok(m) => tracing::info!(deployment = %id, attempt = m.attempts, "deployment started"),
            Err(e) => {
                tracing::warn!(deployment = %id, error = %e, "deployment started; could not record the attempt")
            }
        }
        let outcome = engine::execute(&rt, &record).await;
        let succeeded = outcome.detailed == DetailedStatus::Successful;
        match &outcome.cause {
            None => tracing::info!(deployment = %id, "deployment succeeded"),
            Some(cause) => {
                tracing::warn!(deployment = %id, status = ?outcome.detailed, %cause, "deployment failed")
            }
        }
        let result = rt.deployments.update(&id, |r| {
            r.status = if succeeded {
                DeploymentStatus::Succeeded
            } else {
                DeploymentStatus::Failed
            };
            r.detailed_status = Some(outcome.detailed);
            r.error_stack = outcome.error_stack;
            r.failure_cause = outcome.cause;
            r.error_types = outcome.error_types;
            r.status_details = outcome.details;
            r.progress = None;
        });
        if let Err(e) = result {
            tracing::error!(deployment = %id, error = %e, "cannot record deployment result");
        }
        if let Err(e) = installed::AttemptMarker::clear(&attempt_path) {
            tracing::warn!(deployment = %id, error = %e, "could not clear the attempt marker");
        }
        // A removal may have freed the space the reserve gave up on a full disk.
        crate::reserve::replenish();
    }
}

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod planner_tests;
