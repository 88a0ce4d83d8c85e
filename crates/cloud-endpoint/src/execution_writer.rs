//! Job-execution updates (`<jobId>/update`, `start-next`) written in batches: the handler
//! workers hand each versioned write to one writer task and wait for its own result; the
//! writer stores what is queued, at most [`EXECUTION_BATCH`], in one transaction
//! (`Backend::put_job_executions`). A fleet reporting at once costs one commit per batch
//! instead of one per device (on PostgreSQL each write was its own transaction; SQLite's
//! group commit already shared commits, the batch also saves its per-operation queueing).
//!
//! A batch the store fails as a whole (a database error, not one item's version conflict) is
//! written again one item at a time, so one bad row never fails the others.
//!
//! Bounds: [`EXECUTION_QUEUE`] writes waiting (a full queue holds the handler worker back,
//! nothing dropped); at most [`EXECUTION_BATCH`] per transaction. As each handler worker
//! waits for its write, a batch holds at most one write per worker (`HANDLER_WORKERS`).

use std::sync::{Arc, Weak};

use lichen_cloud_store::{Backend, JobExecution, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::Inner;

/// Writes waiting for the writer.
pub const EXECUTION_QUEUE: usize = 1024;
/// Most writes in one transaction.
pub const EXECUTION_BATCH: usize = 64;

type Reply = oneshot::Sender<Result<(), StoreError>>;
pub(crate) struct Write {
    execution: JobExecution,
    expected: i64,
    reply: Reply,
}

/// The sending side, held by the endpoint's shared state.
#[derive(Clone)]
pub(crate) struct ExecutionWriter {
    tx: mpsc::Sender<Write>,
}

impl ExecutionWriter {
    /// The writer's queue; [`spawn`] starts its task once the shared state exists.
    pub(crate) fn channel() -> (ExecutionWriter, mpsc::Receiver<Write>) {
        let (tx, rx) = mpsc::channel(EXECUTION_QUEUE);
        (ExecutionWriter { tx }, rx)
    }

    /// Writes `execution` if its stored version is still `expected` (VersionConflict
    /// otherwise), batched with the writes of other handler workers.
    pub(crate) async fn put(
        &self,
        execution: JobExecution,
        expected: i64,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Database("the job execution writer stopped".into());
        self.tx
            .send(Write {
                execution,
                expected,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Starts the writer over the endpoint's store. Weak: the shared state holds the sender, and
/// the writer ends once the endpoint (and with it every sender) is gone.
pub(crate) fn spawn<B: Backend + 'static>(inner: &Arc<Inner<B>>, rx: mpsc::Receiver<Write>) {
    tokio::spawn(run(Arc::downgrade(inner), rx));
}

async fn run<B: Backend>(inner: Weak<Inner<B>>, mut rx: mpsc::Receiver<Write>) {
    let mut batch: Vec<Write> = Vec::with_capacity(EXECUTION_BATCH);
    while rx.recv_many(&mut batch, EXECUTION_BATCH).await > 0 {
        let Some(inner) = inner.upgrade() else { return };
        let store = &inner.store;
        let items: Vec<(JobExecution, Option<i64>)> = batch
            .iter()
            .map(|w| (w.execution.clone(), Some(w.expected)))
            .collect();
        match store.put_job_executions(&items).await {
            Ok(results) if results.len() == batch.len() => {
                for (w, result) in batch.drain(..).zip(results) {
                    let _ = w.reply.send(result);
                }
            }
            outcome => {
                if let Err(e) = &outcome {
                    tracing::warn!(count = batch.len(), error = %e, "job execution batch failed; writing one at a time");
                }
                for w in batch.drain(..) {
                    let result = store
                        .put_job_execution(&w.execution, Some(w.expected))
                        .await;
                    let _ = w.reply.send(result);
                }
            }
        }
    }
}
