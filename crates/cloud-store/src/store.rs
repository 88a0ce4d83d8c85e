//! [`Store`]: the backend the cloud holds, chosen at start-up, with no generics for callers.

use std::path::Path;

use crate::backend_impl::{impl_backend, op};
use crate::db::Op;
use crate::ops::{
    associations, atomic, certs, components, fleet, jobs, registry, shadows, status, streams,
};
use crate::postgres::{DEFAULT_POOL_SIZE, PostgresBackend};
use crate::sqlite::SqliteBackend;
use crate::*;

/// The SQLite file under the data directory.
pub const SQLITE_FILE: &str = "cloud.db";

/// Either backend. Cheap to clone (each holds an `Arc`), `Send + Sync + 'static`: clone it
/// into axum state and tokio tasks.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(SqliteBackend),
    Postgres(PostgresBackend),
}

impl Store {
    /// `database_url` None: SQLite at `<data_dir>/cloud.db`. Otherwise a `postgres://` or
    /// `postgresql://` URL.
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Store> {
        match database_url {
            None => Ok(Store::Sqlite(
                SqliteBackend::open(&data_dir.join(SQLITE_FILE)).await?,
            )),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(
                Store::Postgres(PostgresBackend::connect(url, DEFAULT_POOL_SIZE).await?),
            ),
            Some(_) => Err(StoreError::Invalid {
                field: "database url",
                message: "expected a postgres:// or postgresql:// URL".into(),
            }),
        }
    }

    /// `"sqlite"` or `"postgres"`, for logs and benchmark labels.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Delegates to the backend it holds.
    pub(crate) async fn run<R: Send + 'static>(&self, operation: Op<R>) -> Result<R> {
        match self {
            Store::Sqlite(backend) => backend.run(operation).await,
            Store::Postgres(backend) => backend.run(operation).await,
        }
    }
}

impl_backend!(Store);

impl From<SqliteBackend> for Store {
    fn from(backend: SqliteBackend) -> Store {
        Store::Sqlite(backend)
    }
}

impl From<PostgresBackend> for Store {
    fn from(backend: PostgresBackend) -> Store {
        Store::Postgres(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_shareable<T: Clone + Send + Sync + 'static>() {}

    #[test]
    fn store_is_shareable_across_tasks() {
        assert_shareable::<Store>();
    }
}
