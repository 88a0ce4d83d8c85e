//! The durable shadow store: one SQLite file, `<root>/shadows/shadows.db`, in WAL mode with
//! `synchronous = FULL`, so a write that returned survives a kill -9 and a power cut (the
//! caller answers only after it returns).
//!
//! Tables:
//! - `documents(thing, name, doc, version, deleted, updated)`: one row per shadow, the classic
//!   one under name `""`; `doc` is the [`StoredShadow`] JSON (a tombstone after a delete, so a
//!   sync can tell "deleted here" from "never existed").
//! - `sync(thing, name, last_synced, cloud_version, pending, last_sync_time, last_error)`: per
//!   synced shadow, the document both sides agreed on last (the base of the three-way merge,
//!   `NULL` = none, `{"deleted":true}` form for an agreed delete) and whether a local change
//!   awaits the cloud. A local write and its `pending` mark are one transaction.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lichen_iot::shadow::StoredShadow;
use lichen_iot::topic::ShadowAddress;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// Why the store failed; names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("shadow store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("shadow store {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("shadow store {path}: stored document of {address} is corrupt: {message}")]
    Corrupt {
        path: PathBuf,
        address: String,
        message: String,
    },
}

/// What the sync table holds for one shadow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncRecord {
    /// `{"state": {desired?, reported?}}` both sides agreed on last; `None` = never synced;
    /// `Some(Value::Null)` = both sides agreed the shadow is deleted.
    pub last_synced: Option<Value>,
    /// The cloud's version when last synced.
    pub cloud_version: u64,
    /// A local change not yet sent.
    pub pending: bool,
    /// Epoch seconds of the last completed sync (0 = never).
    pub last_sync_time: u64,
    pub last_error: Option<String>,
}

pub struct ShadowStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

fn name_key(address: &ShadowAddress) -> &str {
    address.shadow.as_deref().unwrap_or("")
}

impl ShadowStore {
    /// Opens (creating) `<dir>/shadows.db`; `dir` is created 0700.
    pub fn open(dir: &Path) -> Result<ShadowStore, StoreError> {
        let path = dir.join("shadows.db");
        let io = |e: std::io::Error| StoreError::Io {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS documents (
                 thing TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL,
                 version INTEGER NOT NULL, deleted INTEGER NOT NULL, updated INTEGER NOT NULL,
                 PRIMARY KEY (thing, name)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS sync (
                 thing TEXT NOT NULL, name TEXT NOT NULL, last_synced TEXT,
                 cloud_version INTEGER NOT NULL DEFAULT 0, pending INTEGER NOT NULL DEFAULT 0,
                 last_sync_time INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                 PRIMARY KEY (thing, name)) WITHOUT ROWID;",
        )
        .map_err(sql)?;
        Ok(ShadowStore {
            path,
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored document (a tombstone included), or `None` when it never existed.
    pub fn get(&self, address: &ShadowAddress) -> Result<Option<StoredShadow>, StoreError> {
        let conn = self.conn();
        let doc: Option<String> = conn
            .query_row(
                "SELECT doc FROM documents WHERE thing = ?1 AND name = ?2",
                params![address.thing, name_key(address)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        doc.map(|d| {
            serde_json::from_str(&d).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                address: address.prefix(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Writes the document (or removes it with `None`) and, when `pending`, marks it for sync,
    /// in one transaction committed (fsynced) before returning.
    pub fn put(
        &self,
        address: &ShadowAddress,
        doc: Option<&StoredShadow>,
        pending: bool,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        match doc {
            Some(doc) => {
                let text = serde_json::to_string(doc).map_err(|e| StoreError::Io {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
                tx.execute(
                    "INSERT INTO documents (thing, name, doc, version, deleted, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (thing, name) DO UPDATE SET doc = ?3, version = ?4,
                         deleted = ?5, updated = ?6",
                    params![
                        address.thing,
                        name_key(address),
                        text,
                        doc.version as i64,
                        doc.deleted,
                        doc.timestamp as i64
                    ],
                )
                .map_err(|e| self.sql(e))?;
            }
            None => {
                tx.execute(
                    "DELETE FROM documents WHERE thing = ?1 AND name = ?2",
                    params![address.thing, name_key(address)],
                )
                .map_err(|e| self.sql(e))?;
            }
        }
        if pending {
            tx.execute(
                "INSERT INTO sync (thing, name, pending) VALUES (?1, ?2, 1)
                 ON CONFLICT (thing, name) DO UPDATE SET pending = 1",
                params![address.thing, name_key(address)],
            )
            .map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))
    }

    /// Live named shadows of `thing` after `after` (exclusive), by name, at most `limit`.
    pub fn list_named(
        &self,
        thing: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name FROM documents WHERE thing = ?1 AND name > ?2 AND name <> ''
                 AND deleted = 0 ORDER BY name LIMIT ?3",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![thing, after.unwrap_or(""), limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// How many live shadows are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM documents WHERE deleted = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }

    pub fn sync_record(&self, address: &ShadowAddress) -> Result<SyncRecord, StoreError> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT last_synced, cloud_version, pending, last_sync_time, last_error
                 FROM sync WHERE thing = ?1 AND name = ?2",
                params![address.thing, name_key(address)],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        let Some((last, cloud_version, pending, time, error)) = row else {
            return Ok(SyncRecord::default());
        };
        let last_synced = last
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                address: address.prefix(),
                message: format!("last synced document: {e}"),
            })?;
        Ok(SyncRecord {
            last_synced,
            cloud_version: cloud_version.max(0) as u64,
            pending,
            last_sync_time: time.max(0) as u64,
            last_error: error,
        })
    }

    /// Records a completed sync: the agreed document, the cloud's version, pending cleared
    /// unless a local change arrived meanwhile (`local_version` is what the sync read).
    pub fn record_synced(
        &self,
        address: &ShadowAddress,
        agreed: &Value,
        cloud_version: u64,
        now: u64,
        local_version_seen: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let current: Option<i64> = tx
            .query_row(
                "SELECT version FROM documents WHERE thing = ?1 AND name = ?2",
                params![address.thing, name_key(address)],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        // A local write after the sync read its document keeps the shadow pending.
        let still_pending = current.map(|v| v as u64) != local_version_seen;
        tx.execute(
            "INSERT INTO sync (thing, name, last_synced, cloud_version, pending, last_sync_time, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
             ON CONFLICT (thing, name) DO UPDATE SET last_synced = ?3, cloud_version = ?4,
                 pending = (pending AND ?5), last_sync_time = ?6, last_error = NULL",
            params![
                address.thing,
                name_key(address),
                agreed.to_string(),
                cloud_version as i64,
                still_pending,
                now as i64
            ],
        )
        .map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))
    }

    /// Marks a shadow pending (e.g. a cloud change seen) or records why its sync failed.
    pub fn record_sync_error(
        &self,
        address: &ShadowAddress,
        error: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO sync (thing, name, pending, last_error) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (thing, name) DO UPDATE SET pending = 1, last_error = ?3",
                params![address.thing, name_key(address), error],
            )
            .map(|_| ())
            .map_err(|e| self.sql(e))
    }

    /// Every shadow with a sync row that is pending.
    pub fn pending(&self) -> Result<Vec<ShadowAddress>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT thing, name FROM sync WHERE pending = 1 ORDER BY thing, name")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (thing, name) = row.map_err(|e| self.sql(e))?;
            out.push(ShadowAddress {
                thing,
                shadow: (!name.is_empty()).then_some(name),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_tombstones_paging_and_sync_rows_persist() {
        let dir = tempfile::tempdir().unwrap();
        let a = ShadowAddress::new("t1", Some("b")).unwrap();
        {
            let s = ShadowStore::open(dir.path()).unwrap();
            let doc = StoredShadow {
                version: 3,
                timestamp: 10,
                ..Default::default()
            };
            s.put(&a, Some(&doc), true).unwrap();
            for n in ["a", "c"] {
                let other = ShadowAddress::new("t1", Some(n)).unwrap();
                s.put(&other, Some(&doc), false).unwrap();
            }
            s.put(&ShadowAddress::new("t1", None).unwrap(), Some(&doc), false)
                .unwrap();
            let tomb = StoredShadow {
                deleted: true,
                ..doc.clone()
            };
            s.put(
                &ShadowAddress::new("t1", Some("c")).unwrap(),
                Some(&tomb),
                false,
            )
            .unwrap();
        }
        let s = ShadowStore::open(dir.path()).unwrap();
        assert_eq!(s.get(&a).unwrap().unwrap().version, 3);
        assert_eq!(s.list_named("t1", None, 10).unwrap(), ["a", "b"]);
        assert_eq!(s.list_named("t1", Some("a"), 10).unwrap(), ["b"]);
        assert_eq!(s.count().unwrap(), 3);
        assert_eq!(s.pending().unwrap(), std::slice::from_ref(&a));
        s.record_synced(&a, &json!({"state": {}}), 7, 99, Some(3))
            .unwrap();
        let r = s.sync_record(&a).unwrap();
        assert!(!r.pending);
        assert_eq!((r.cloud_version, r.last_sync_time), (7, 99));
        // A write the sync did not see keeps it pending.
        s.put(&a, s.get(&a).unwrap().as_ref(), true).unwrap();
        s.record_synced(&a, &json!({"state": {}}), 8, 100, Some(2))
            .unwrap();
        assert!(s.sync_record(&a).unwrap().pending);
    }
}
