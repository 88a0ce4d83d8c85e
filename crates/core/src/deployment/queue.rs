//! The persisted deployment queue. Deployments run one at a time, in order. Each record is a
//! file `deployments/records/<id>.json` replaced atomically on every status change, so after
//! a crash the queue is rebuilt from disk: QUEUED ones wait again, an IN_PROGRESS one is
//! resumed from the start or, if it had begun changing the device, rolled back (see
//! [`super::installed::OngoingMarker`]).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use rand::Rng;
use tokio::sync::Notify;

use super::model::{DeploymentRecord, DeploymentRequest, DeploymentStatus, LOCAL_DEPLOYMENT_GROUP};
use crate::atomic::{read_json, write_json_atomic};
use crate::error::{CoreError, Result};
use crate::runtime::now_ms;

/// Finished records kept on disk and listed; older ones are deleted.
pub const MAX_FINISHED_RECORDS: usize = 100;
/// Deployments that may wait in the queue at once.
pub const MAX_QUEUED: usize = 64;

pub struct DeploymentQueue {
    dir: PathBuf,
    records: Mutex<BTreeMap<String, DeploymentRecord>>,
    pending: Mutex<VecDeque<String>>,
    wake: Notify,
}

fn new_id() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

impl DeploymentQueue {
    /// Loads records; QUEUED and IN_PROGRESS ones go back in the queue, oldest first.
    pub fn open(dir: PathBuf) -> Result<DeploymentQueue> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| CoreError::io(format!("creating {}", dir.display()), e))?;
        let mut records = BTreeMap::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| CoreError::io(format!("reading {}", dir.display()), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read_json::<DeploymentRecord>(&path) {
                Ok(Some(r)) => {
                    records.insert(r.deployment_id.clone(), r);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping unreadable deployment record")
                }
            }
        }
        let mut unfinished: Vec<&DeploymentRecord> =
            records.values().filter(|r| !r.status.is_final()).collect();
        unfinished.sort_by_key(|r| (r.created_on, r.deployment_id.clone()));
        let pending = unfinished.iter().map(|r| r.deployment_id.clone()).collect();
        Ok(DeploymentQueue {
            dir,
            records: Mutex::new(records),
            pending: Mutex::new(pending),
            wake: Notify::new(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Records and queues `request`, returning its id. A request carrying a `deployment_id`
    /// (a fleet deployment) that is already recorded — queued, running or finished — is not
    /// queued again: its id comes back, so a job delivered twice runs once. (Finished records
    /// past [`MAX_FINISHED_RECORDS`] are forgotten; the fleet agent also skips deployments the
    /// cloud already has a final status for.)
    pub fn enqueue(&self, mut request: DeploymentRequest) -> Result<String> {
        super::validate::check_request(&request)?;
        // Held to the end, so that two deliveries of one id cannot both be queued.
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = &request.deployment_id
            && self.get(id).is_some()
        {
            tracing::info!(deployment = %id, "deployment already received; not queued again");
            return Ok(id.clone());
        }
        if pending.len() >= MAX_QUEUED {
            return Err(CoreError::Conflict(format!(
                "{MAX_QUEUED} deployments are already queued; wait for them to finish"
            )));
        }
        if request.group_name.as_deref().is_none_or(str::is_empty) {
            request.group_name = Some(LOCAL_DEPLOYMENT_GROUP.to_string());
        }
        let record = DeploymentRecord {
            deployment_id: request.deployment_id.clone().unwrap_or_else(new_id),
            status: DeploymentStatus::Queued,
            created_on: now_ms(),
            detailed_status: None,
            failure_cause: None,
            error_stack: Vec::new(),
            error_types: Vec::new(),
            status_details: Vec::new(),
            progress: None,
            request,
        };
        let id = record.deployment_id.clone();
        self.save(record)?;
        pending.push_back(id.clone());
        drop(pending);
        self.wake.notify_one();
        Ok(id)
    }

    /// Persists a record (new or changed) and prunes old finished ones.
    pub fn save(&self, record: DeploymentRecord) -> Result<()> {
        write_json_atomic(&self.path(&record.deployment_id), &record, 0o600)?;
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.insert(record.deployment_id.clone(), record);
        let mut finished: Vec<(u64, String)> = records
            .values()
            .filter(|r| r.status.is_final())
            .map(|r| (r.created_on, r.deployment_id.clone()))
            .collect();
        if finished.len() > MAX_FINISHED_RECORDS {
            finished.sort();
            for (_, id) in finished.iter().take(finished.len() - MAX_FINISHED_RECORDS) {
                records.remove(id);
                let _ = std::fs::remove_file(self.path(id));
            }
        }
        Ok(())
    }

    /// Updates a record in place with `f` and persists it.
    pub fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut DeploymentRecord),
    ) -> Result<DeploymentRecord> {
        let mut record = self
            .get(id)
            .ok_or_else(|| CoreError::DeploymentNotFound(id.to_string()))?;
        f(&mut record);
        self.save(record.clone())?;
        Ok(record)
    }

    /// Sets the human-readable progress line without forcing a disk write each time.
    pub fn set_progress(&self, id: &str, progress: impl Into<String>) {
        let progress = progress.into();
        tracing::info!(deployment = id, "{progress}");
        if let Some(r) = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            r.progress = Some(progress);
        }
    }

    pub fn get(&self, id: &str) -> Option<DeploymentRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Newest first.
    pub fn list(&self) -> Vec<DeploymentRecord> {
        let mut all: Vec<DeploymentRecord> = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.created_on));
        all
    }

    /// Cancels a deployment that has not started. One that is applying changes cannot be
    /// cancelled (it completes or rolls back).
    pub fn cancel(&self, id: &str) -> Result<()> {
        let record = self
            .get(id)
            .ok_or_else(|| CoreError::DeploymentNotFound(id.to_string()))?;
        match record.status {
            DeploymentStatus::Queued => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|p| p != id);
                self.update(id, |r| {
                    r.status = DeploymentStatus::Canceled;
                    r.progress = None;
                })?;
                Ok(())
            }
            DeploymentStatus::InProgress => Err(CoreError::Conflict(format!(
                "deployment {id} is in progress and can no longer be canceled"
            ))),
            s => Err(CoreError::Conflict(format!(
                "deployment {id} has already finished ({s:?})"
            ))),
        }
    }

    /// Waits for the next deployment to run.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.wake.notified();
            if let Some(id) = self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front()
            {
                return id;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_survives_reopen_and_cancel_works() {
        let dir = tempfile::tempdir().unwrap();
        let q = DeploymentQueue::open(dir.path().to_path_buf()).unwrap();
        let a = q.enqueue(DeploymentRequest::default()).unwrap();
        let b = q.enqueue(DeploymentRequest::default()).unwrap();
        assert_eq!(
            q.get(&a).unwrap().request.group_name.as_deref(),
            Some("LOCAL_DEPLOYMENT")
        );
        q.cancel(&b).unwrap();
        assert_eq!(q.get(&b).unwrap().status, DeploymentStatus::Canceled);
        assert!(q.cancel(&b).is_err());
        drop(q);
        let q = DeploymentQueue::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(q.list().len(), 2);
        let pending = q.pending.lock().unwrap().clone();
        assert_eq!(pending, VecDeque::from([a]));
    }

    #[test]
    fn a_deployment_id_delivered_again_is_not_queued_again() {
        let dir = tempfile::tempdir().unwrap();
        let q = DeploymentQueue::open(dir.path().to_path_buf()).unwrap();
        let fleet = DeploymentRequest {
            deployment_id: Some("4f1c2d3e-0000-4000-8000-00000000000a".into()),
            group_name: Some("thinggroup/fleet".into()),
            ..Default::default()
        };
        let id = q.enqueue(fleet.clone()).unwrap();
        assert_eq!(id, "4f1c2d3e-0000-4000-8000-00000000000a");
        assert_eq!(q.enqueue(fleet.clone()).unwrap(), id);
        assert_eq!(q.list().len(), 1);
        assert_eq!(q.pending.lock().unwrap().len(), 1);
        // Finished, and after a restart of the core: still the same record, not queued.
        q.update(&id, |r| r.status = DeploymentStatus::Succeeded)
            .unwrap();
        q.pending.lock().unwrap().clear();
        drop(q);
        let q = DeploymentQueue::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(q.enqueue(fleet).unwrap(), id);
        assert_eq!(q.list().len(), 1);
        assert_eq!(q.get(&id).unwrap().status, DeploymentStatus::Succeeded);
        assert!(q.pending.lock().unwrap().is_empty());
        // Local deployments without an id still get a fresh one each time.
        let a = q.enqueue(DeploymentRequest::default()).unwrap();
        let b = q.enqueue(DeploymentRequest::default()).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_deployment_id_that_is_no_safe_file_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let q = DeploymentQueue::open(dir.path().to_path_buf()).unwrap();
        for bad in [
            "",
            "../escape",
            "a/b",
            ".hidden",
            &"x".repeat(129),
            "tab\there",
        ] {
            let err = q
                .enqueue(DeploymentRequest {
                    deployment_id: Some(bad.to_string()),
                    ..Default::default()
                })
                .unwrap_err();
            assert!(err.to_string().contains("deploymentId"), "{bad:?}: {err}");
        }
        assert!(q.list().is_empty());
        assert!(!dir.path().join("..").join("escape.json").exists());
    }

    #[test]
    fn ids_look_like_uuids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
