//! The SQLite backend: one database file, one connection, owned by a dedicated thread.
//!
//! Async callers never block the runtime: each call sends its operation over a bounded queue
//! ([`QUEUE_DEPTH`]) to the worker thread, which runs it in its own savepoint inside a
//! `BEGIN IMMEDIATE` transaction shared with whatever else was queued (group commit, at most
//! [`MAX_BATCH`] operations), and answers over a oneshot channel after the COMMIT. A full queue makes callers wait (backpressure), it does
//! not grow. One connection serialises every operation, which is what SQLite does with writers
//! anyway, and makes optimistic version checks trivially race-free.
//!
//! Durability: WAL with `synchronous = FULL`, so a commit is fsynced to the WAL before the
//! call returns; an acknowledged write survives kill -9 and power loss (`NORMAL` would only
//! survive a process crash). Foreign keys are on (they carry the cascades of `delete_thing`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, ffi};
use tokio::sync::{mpsc, oneshot};

use crate::backend_impl::{impl_backend, op};
use crate::db::{BoxFut, Cell, Dialect, Op, Row, Tx, Value};
use crate::ops::{
    associations, atomic, certs, components, fleet, jobs, now, registry, shadows, status, streams,
};
use crate::schema;
use crate::*;

/// Operations waiting for the worker thread, at most. Beyond this, callers wait to enqueue.
pub const QUEUE_DEPTH: usize = 256;

/// How long a statement waits for another process holding the database's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Operations committed together, at most (group commit: one WAL fsync for the batch).
pub const MAX_BATCH: usize = 64;

/// Called once the batch's transaction has ended: with None when it committed, with the
/// reason otherwise. It answers the caller.
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;
/// One queued operation. Given the connection inside the batch's transaction (or, when the
/// transaction could not begin, the reason), it runs the operation in its own savepoint and
/// returns how to answer once the batch ends.
type WorkItem = Box<dyn FnOnce(&mut Connection, Option<&str>) -> Reply + Send>;

/// Cheap to clone: clones share the worker thread, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<WorkItem>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn db_error(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Database(format!("{}: {e}", path.display()))
}

impl SqliteBackend {
    /// Opens (creating it 0600 if missing) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteBackend> {
        let path = path.to_path_buf();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<WorkItem>(QUEUE_DEPTH);
        let worker_path = path.clone();
        std::thread::Builder::new()
            .name("lichen-sqlite".into())
            .spawn(move || match open_connection(&worker_path) {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(conn, jobs_rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| StoreError::Database(format!("starting the SQLite thread: {e}")))?;
        ready_rx.await.map_err(|_| {
            StoreError::Database("the SQLite thread stopped while opening".into())
        })??;
        let backend = SqliteBackend {
            inner: Arc::new(Inner {
                jobs: jobs_tx,
                path,
            }),
        };
        let applied_at = now();
        backend
            .run(op(move |tx| Box::pin(schema::migrate(tx, applied_at))))
            .await?;
        Ok(backend)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs one operation in one transaction on the worker thread.
    pub(crate) async fn run<R: Send + 'static>(&self, operation: Op<R>) -> Result<R> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: WorkItem = Box::new(move |conn, begin_failed| {
            let result = match begin_failed {
                Some(reason) => Err(StoreError::Database(reason.to_owned())),
                None => run_in_savepoint(conn, operation),
            };
            Box::new(move |commit_failed| {
                let answer = match (result, commit_failed) {
                    (Ok(_), Some(reason)) => Err(StoreError::Database(reason.to_owned())),
                    (result, _) => result,
                };
                let _ = reply_tx.send(answer);
            })
        });
        self.inner
            .jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Database("the SQLite thread has stopped".into()))?;
        reply_rx
            .await
            .map_err(|_| StoreError::Database("the SQLite thread dropped the operation".into()))?
    }
}

impl_backend!(SqliteBackend);

fn open_connection(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Database(format!("creating {}: {e}", dir.display())))?;
    }
    // Created 0600 before SQLite sees it: the WAL and shared-memory files copy its mode.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Database(format!("creating {}: {e}", path.display())))?;
    let conn = Connection::open(path).map_err(|e| db_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| db_error(path, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| db_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "{}: could not switch to WAL (journal mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| db_error(path, e))?;
    Ok(conn)
}

fn serve(mut conn: Connection, mut jobs: mpsc::Receiver<WorkItem>) {
    while let Some(first) = jobs.blocking_recv() {
        // Group commit: whatever queued up meanwhile shares the transaction (and its fsync).
        // Each operation is still atomic on its own, in its savepoint; callers hear back only
        // after the COMMIT, so an answer still means durable.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch);
    }
    tracing::debug!("SQLite worker stopping: every handle is gone");
}

fn run_batch(conn: &mut Connection, batch: Vec<WorkItem>) {
    let begin_failed = conn
        .execute_batch("BEGIN IMMEDIATE")
        .err()
        .map(|e| map_error(e).to_string());
    let replies: Vec<Reply> = batch
        .into_iter()
        .map(|job| job(conn, begin_failed.as_deref()))
        .collect();
    let commit_failed = match begin_failed {
        Some(reason) => Some(reason),
        None => match conn.execute_batch("COMMIT") {
            Ok(()) => None,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Some(map_error(e).to_string())
            }
        },
    };
    for reply in replies {
        reply(commit_failed.as_deref());
    }
}

fn run_in_savepoint<R>(conn: &mut Connection, operation: Op<R>) -> Result<R> {
    conn.execute_batch("SAVEPOINT op").map_err(map_error)?;
    let result = {
        let mut tx = SqliteTx { conn: &mut *conn };
        complete_now(operation(&mut tx))
    };
    match result {
        Ok(value) => {
            conn.execute_batch("RELEASE op").map_err(map_error)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = conn.execute_batch("ROLLBACK TO op; RELEASE op") {
                tracing::warn!(error = %rollback, "SQLite savepoint rollback failed");
            }
            Err(e)
        }
    }
}

/// Drives an operation's future to completion with one poll: every await in it is on a
/// [`SqliteTx`] method, and those answer synchronously.
fn complete_now<R>(future: BoxFut<'_, Result<R>>) -> Result<R> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::Database(
            "a SQLite operation waited on something other than the database".into(),
        )),
    }
}

fn map_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, message) = &e
        && failure.code == ErrorCode::ConstraintViolation
    {
        let detail = message.clone().unwrap_or_default();
        return match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => StoreError::NotFound {
                kind: "referenced record",
                key: detail,
            },
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                StoreError::AlreadyExists {
                    kind: "record",
                    key: detail,
                }
            }
            _ => StoreError::Database(e.to_string()),
        };
    }
    StoreError::Database(e.to_string())
}

struct SqliteTx<'c> {
    conn: &'c mut Connection,
}

impl SqliteTx<'_> {
    fn prepare<'s>(
        conn: &'s Connection,
        sql: &str,
        params: &[Value],
    ) -> Result<rusqlite::CachedStatement<'s>> {
        let mut stmt = conn.prepare_cached(sql).map_err(map_error)?;
        // Parameters are bound by name (`$1`…): SQLite numbers named parameters in order of
        // first appearance, which need not be their numeric order.
        for (i, value) in params.iter().enumerate() {
            let name = format!("${}", i + 1);
            let Some(index) = stmt.parameter_index(&name).map_err(map_error)? else {
                return Err(StoreError::Database(format!(
                    "statement has no parameter {name}: {sql}"
                )));
            };
            let bound = match value {
                Value::Int(v) => stmt.raw_bind_parameter(index, v),
                Value::Text(v) => stmt.raw_bind_parameter(index, v),
                Value::NullText | Value::NullInt => {
                    stmt.raw_bind_parameter(index, rusqlite::types::Null)
                }
            };
            bound.map_err(map_error)?;
        }
        Ok(stmt)
    }

    fn query_now(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = Self::prepare(self.conn, sql, params)?;
        let columns = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_error)? {
            let mut cells = Vec::with_capacity(columns);
            for i in 0..columns {
                let cell = match row.get_ref(i).map_err(map_error)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Real(_) | ValueRef::Blob(_) => {
                        return Err(StoreError::Database(format!(
                            "column {i} holds a real or a blob, which the schema never stores"
                        )));
                    }
                };
                cells.push(cell);
            }
            out.push(Row(cells));
        }
        Ok(out)
    }

    fn execute_now(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = Self::prepare(self.conn, sql, params)?;
        let changed = stmt.raw_execute().map_err(map_error)?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }
}

impl Tx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn query<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFut<'a, Result<Vec<Row>>> {
        let result = self.query_now(sql, params);
        Box::pin(std::future::ready(result))
    }

    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFut<'a, Result<u64>> {
        let result = self.execute_now(sql, params);
        Box::pin(std::future::ready(result))
    }

    fn batch<'a>(&'a mut self, sql: &'a str) -> BoxFut<'a, Result<()>> {
        let result = self.conn.execute_batch(sql).map_err(map_error);
        Box::pin(std::future::ready(result))
    }
}
