//! The little SQL layer both backends share: parameters, rows, and a transaction interface.
//!
//! The operations (`ops`) are written once against [`Tx`], in the SQL that SQLite and
//! PostgreSQL both speak (`$n` parameters, `ON CONFLICT`, `RETURNING`), so the two backends
//! cannot drift apart. Each backend runs one operation inside one transaction: it commits
//! when the operation returns Ok and rolls back otherwise.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, StoreError};

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which SQL engine runs the statements, for the few places the dialects differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement parameter. Nulls carry their type because PostgreSQL checks it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
    NullText,
    NullInt,
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(i64::from(v))
    }
}
impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        v.map_or(Value::NullText, Value::from)
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        v.map_or(Value::NullText, Value::Text)
    }
}
impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Value {
        v.as_deref().into()
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        v.map_or(Value::NullInt, Value::Int)
    }
}

/// One column of a result row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(pub(crate) Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Database(format!("result row has no column {i}")))
    }

    pub(crate) fn text(&self, i: usize) -> Result<String> {
        match self.cell(i)? {
            Cell::Text(s) => Ok(s.clone()),
            other => Err(StoreError::Database(format!(
                "column {i}: expected text, found {other:?}"
            ))),
        }
    }

    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    pub(crate) fn int(&self, i: usize) -> Result<i64> {
        match self.cell(i)? {
            Cell::Int(v) => Ok(*v),
            other => Err(StoreError::Database(format!(
                "column {i}: expected an integer, found {other:?}"
            ))),
        }
    }

    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub(crate) fn bool(&self, i: usize) -> Result<bool> {
        Ok(self.int(i)? != 0)
    }

    /// A column holding JSON text, decoded.
    pub(crate) fn json<T: DeserializeOwned>(&self, i: usize, what: &str) -> Result<T> {
        let text = self.text(i)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Database(format!("stored {what} is not valid JSON: {e}")))
    }

    /// A column holding an enum's serde name (`"ACTIVE"`), decoded.
    pub(crate) fn enum_of<T: DeserializeOwned>(&self, i: usize, what: &str) -> Result<T> {
        let text = self.text(i)?;
        serde_json::from_value(serde_json::Value::String(text.clone()))
            .map_err(|_| StoreError::Database(format!("stored {what} {text:?} is unknown")))
    }
}

/// JSON text of a value for a TEXT column.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid {
        field: "json",
        message: format!("{what} cannot be encoded: {e}"),
    })
}

/// An enum's serde name (`CertificateStatus::Active` → `"ACTIVE"`).
pub(crate) fn enum_name<T: Serialize>(value: &T) -> Result<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(StoreError::Database("enum has no string name".into())),
    }
}

/// One open transaction. `query` returns every row (callers bound them with `LIMIT`);
/// `execute` returns the number of rows changed; `batch` runs several statements without
/// parameters (migrations).
pub(crate) trait Tx: Send {
    fn dialect(&self) -> Dialect;
    fn query<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFut<'a, Result<Vec<Row>>>;
    fn execute<'a>(&'a mut self, sql: &'a str, params: &'a [Value]) -> BoxFut<'a, Result<u64>>;
    fn batch<'a>(&'a mut self, sql: &'a str) -> BoxFut<'a, Result<()>>;
}

/// The first row, if any.
pub(crate) async fn query_opt(tx: &mut dyn Tx, sql: &str, params: &[Value]) -> Result<Option<Row>> {
    Ok(tx.query(sql, params).await?.into_iter().next())
}

/// An operation run inside one transaction: given the transaction, it returns a future that
/// borrows it. Boxed so one backend-neutral set of operations serves both backends.
pub(crate) type Op<R> = Box<dyn for<'t> FnOnce(&'t mut dyn Tx) -> BoxFut<'t, Result<R>> + Send>;
