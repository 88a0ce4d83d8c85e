//! The PostgreSQL backend (`tokio-postgres`, no TLS: loopback or a Unix socket).
//!
//! A small hand-rolled pool: at most `pool_size` connections ([`DEFAULT_POOL_SIZE`] unless
//! given), each checked out by one operation at a time behind a semaphore; callers beyond
//! that wait for a permit. Connections are opened lazily and replaced when they close. Each
//! connection keeps its prepared statements (at most [`STATEMENT_CACHE`]).
//!
//! Every operation runs in one READ COMMITTED transaction. Version checks are in the SQL
//! (`UPDATE … WHERE version = $n`, `INSERT … ON CONFLICT DO NOTHING`): a concurrent writer
//! holding the row makes the second statement wait, then match nothing, so exactly one of
//! two racing writers wins — also across several control-plane nodes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Config, NoTls, Statement, Transaction};

use crate::backend_impl::{impl_backend, op};
use crate::db::{BoxFut, Cell, Dialect, Op, Row, Tx, Value};
use crate::ops::{
    associations, atomic, certs, components, fleet, jobs, now, registry, shadows, status, streams,
};
use crate::schema;
use crate::*;

/// Connections per backend unless the caller chooses.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Prepared statements kept per connection; the cache is emptied when it would grow past it.
pub const STATEMENT_CACHE: usize = 256;

struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

struct Pool {
    config: Config,
    permits: Semaphore,
    idle: Mutex<Vec<Conn>>,
    size: usize,
}

/// Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PostgresBackend {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PostgresBackend {
    // The configuration may hold a password: show only where it points.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("hosts", &self.pool.config.get_hosts())
            .field("dbname", &self.pool.config.get_dbname())
            .field("pool_size", &self.pool.size)
            .finish()
    }
}

fn map_error(e: tokio_postgres::Error) -> StoreError {
    let Some(db) = e.as_db_error() else {
        let mut message = e.to_string();
        if let Some(source) = std::error::Error::source(&e) {
            message = format!("{message}: {source}");
        }
        return StoreError::Database(message);
    };
    let detail = db.detail().unwrap_or(db.message()).to_owned();
    match *db.code() {
        SqlState::FOREIGN_KEY_VIOLATION => StoreError::NotFound {
            kind: "referenced record",
            key: detail,
        },
        SqlState::UNIQUE_VIOLATION => StoreError::AlreadyExists {
            kind: "record",
            key: detail,
        },
        _ => StoreError::Database(format!("{} ({})", db.message(), db.code().code())),
    }
}

impl PostgresBackend {
    /// Connects to `url` (`postgres://user@host:port/db`, or `?host=/socket/dir`), checks it
    /// with one connection and brings the schema up to date.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PostgresBackend> {
        // The parse error never echoes the URL, which may hold a password.
        let config: Config = url.parse().map_err(|e| StoreError::Invalid {
            field: "database url",
            message: format!("not a PostgreSQL connection URL: {e}"),
        })?;
        let size = pool_size.max(1);
        let backend = PostgresBackend {
            pool: Arc::new(Pool {
                config,
                permits: Semaphore::new(size),
                idle: Mutex::new(Vec::with_capacity(size)),
                size,
            }),
        };
        let applied_at = now();
        backend
            .run(op(move |tx| Box::pin(schema::migrate(tx, applied_at))))
            .await?;
        Ok(backend)
    }

    pub fn pool_size(&self) -> usize {
        self.pool.size
    }

    async fn open_conn(&self) -> Result<Conn> {
        let (client, connection) = self.pool.config.connect(NoTls).await.map_err(map_error)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    fn checkout_idle(&self) -> Option<Conn> {
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.client.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push(conn);
    }

    /// Runs one operation in one transaction on a pooled connection.
    pub(crate) async fn run<R: Send + 'static>(&self, operation: Op<R>) -> Result<R> {
        let _permit = self
            .pool
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Database("the PostgreSQL pool is closed".into()))?;
        let mut conn = match self.checkout_idle() {
            Some(conn) => conn,
            None => self.open_conn().await?,
        };
        let result = run_in_transaction(&mut conn, operation).await;
        self.checkin(conn);
        result
    }
}

async fn run_in_transaction<R>(conn: &mut Conn, operation: Op<R>) -> Result<R> {
    let Conn { client, statements } = conn;
    let transaction = client.transaction().await.map_err(map_error)?;
    let mut tx = PgTx {
        transaction,
        statements,
    };
    let result = operation(&mut tx).await;
    match result {
        Ok(value) => {
            tx.transaction.commit().await.map_err(map_error)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.transaction.rollback().await {
                tracing::warn!(error = %rollback, "PostgreSQL rollback failed");
            }
            Err(e)
        }
    }
}

impl_backend!(PostgresBackend);

struct PgTx<'c> {
    transaction: Transaction<'c>,
    statements: &'c mut HashMap<String, Statement>,
}

impl PgTx<'_> {
    async fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.transaction.prepare(sql).await.map_err(map_error)?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

fn params_of(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn row_of(row: &tokio_postgres::Row) -> Result<Row> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map(|v| v.map(Cell::Int))
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|v| Cell::Int(i64::from(v))))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|v| Cell::Int(i64::from(v))))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)
                .map(|v| v.map(|v| Cell::Int(i64::from(v))))
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME {
            row.try_get::<_, Option<String>>(i)
                .map(|v| v.map(Cell::Text))
        } else if *ty == Type::VOID {
            Ok(None)
        } else {
            return Err(StoreError::Database(format!(
                "column {} has type {ty}, which the store never reads",
                column.name()
            )));
        };
        cells.push(cell.map_err(map_error)?.unwrap_or(Cell::Null));
    }
    Ok(Row(cells))
}

impl Tx for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn query<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFut<'a, Result<Vec<Row>>> {
        Box::pin(async move {
            let statement = self.statement(sql).await?;
            let rows = self
                .transaction
                .query(&statement, &params_of(params))
                .await
                .map_err(map_error)?;
            rows.iter().map(row_of).collect()
        })
    }

    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFut<'a, Result<u64>> {
        Box::pin(async move {
            let statement = self.statement(sql).await?;
            self.transaction
                .execute(&statement, &params_of(params))
                .await
                .map_err(map_error)
        })
    }

    fn batch<'a>(&'a mut self, sql: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move { self.transaction.batch_execute(sql).await.map_err(map_error) })
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Value::Int(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::NullText | Value::NullInt => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty)
            || <i32 as ToSql>::accepts(ty)
            || <i16 as ToSql>::accepts(ty)
            || <String as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}
