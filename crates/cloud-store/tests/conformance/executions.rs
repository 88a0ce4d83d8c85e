//! Conformance check: job-execution updates written in batches (one transaction), each
//! item's refusal its own.

use lichen_cloud_store::*;

use crate::assert_err;
use crate::fixtures::*;

pub(crate) async fn execution_batches<B: Backend + Clone + 'static>(store: &B) {
    for t in ["b1", "b2", "b3"] {
        store.create_thing(&thing(t)).await.unwrap();
    }
    store
        .create_job(&job("jb", &["b1", "b2", "b3"]))
        .await
        .unwrap();
    // Creation in a batch, one of them for a thing that does not exist.
    let created = store
        .put_job_executions(&[
            (execution("jb", "b1", 1), None),
            (execution("jb", "nobody", 1), None),
            (execution("jb", "b2", 1), None),
            (execution("jb", "b3", 1), None),
        ])
        .await
        .unwrap();
    assert_eq!(created.len(), 4);
    assert!(created[0].is_ok() && created[2].is_ok() && created[3].is_ok());
    assert!(
        matches!(created[1], Err(StoreError::NotFound { .. })),
        "{created:?}"
    );

    // Updates: b1 and b3 at the version read, b2 at a stale one; b2's refusal is its own.
    let mut updated = Vec::new();
    for (t, expected) in [("b1", 1), ("b2", 7), ("b3", 1)] {
        let mut e = execution("jb", t, 1);
        e.status = JobExecutionStatus::InProgress;
        e.version_number = 2;
        updated.push((e, Some(expected)));
    }
    // The same execution twice in one batch: the second sees the first's version.
    let mut again = execution("jb", "b1", 1);
    again.status = JobExecutionStatus::Succeeded;
    again.version_number = 3;
    updated.push((again.clone(), Some(1)));
    let results = store.put_job_executions(&updated).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::VersionConflict { .. })),
        "{results:?}"
    );
    assert!(
        matches!(results[3], Err(StoreError::VersionConflict { .. })),
        "{results:?}"
    );
    let status = |t: &'static str| async move {
        store
            .get_job_execution("jb", t)
            .await
            .unwrap()
            .map(|e| (e.status, e.version_number))
    };
    assert_eq!(
        status("b1").await,
        Some((JobExecutionStatus::InProgress, 2))
    );
    assert_eq!(status("b2").await, Some((JobExecutionStatus::Queued, 1)));
    assert_eq!(
        status("b3").await,
        Some((JobExecutionStatus::InProgress, 2))
    );
    let results = store.put_job_executions(&[(again, Some(2))]).await.unwrap();
    assert!(results[0].is_ok());
    assert_eq!(status("b1").await, Some((JobExecutionStatus::Succeeded, 3)));

    // Empty is fine; over the bound is refused whole.
    assert!(store.put_job_executions(&[]).await.unwrap().is_empty());
    let too_many: Vec<_> = (0..=MAX_EXECUTION_BATCH)
        .map(|_| (execution("jb", "b2", 1), Some(1)))
        .collect();
    assert_err!(
        store.put_job_executions(&too_many).await,
        StoreError::Invalid { .. }
    );
    assert_eq!(status("b2").await, Some((JobExecutionStatus::Queued, 1)));
}
