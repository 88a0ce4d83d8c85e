//! The operations of [`crate::Backend`], written once against [`crate::db::Tx`] and run by
//! either backend inside one transaction each.

pub(crate) mod associations;
pub(crate) mod atomic;
pub(crate) mod certs;
pub(crate) mod components;
pub(crate) mod fleet;
pub(crate) mod jobs;
pub(crate) mod registry;
pub(crate) mod shadows;
pub(crate) mod status;
pub(crate) mod streams;

use std::time::SystemTime;

use crate::db::Value;
use crate::{Page, StoreError};

pub(crate) fn now() -> String {
    lichen_sys::time::format_rfc3339_millis(SystemTime::now())
}

pub(crate) fn not_found(kind: &'static str, key: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        key: key.to_owned(),
    }
}

/// The page's `LIMIT` parameter (bounded by `MAX_PAGE`).
pub(crate) fn limit(page: &Page) -> Value {
    Value::Int(i64::from(page.effective_limit()))
}

/// The page's `after` parameter: `""` (before every key) when absent.
pub(crate) fn after(page: &Page) -> Value {
    Value::Text(page.after.clone().unwrap_or_default())
}
