//! `lichen-shadow`: the core's local shadow service (lichen's `aws.greengrass.ShadowManager`),
//! the parts that need no runtime:
//!
//! - [`store`]: the durable store under `<root>/shadows/` (SQLite, WAL, `synchronous = FULL`;
//!   committed before any reply), classic and named shadows per thing, tombstones, and the
//!   per-shadow sync rows (last synced document, cloud version, pending);
//! - [`config`]: the `aws.greengrass.ShadowManager` configuration keys;
//! - [`rate`]: the local rate limits and the outbound sync rate;
//! - [`manager`]: the operations over lichen-iot's shadow semantics (the same the cloud's
//!   endpoint uses), with the local pub/sub messages each produces and list paging;
//! - [`merge`]: the three-way merge the cloud sync reconciles with.
//!
//! The node's shadow service (`lichen-node`, `services/shadow`) serves these over IPC, the
//! bus, the control channel and the cloud link.

pub mod config;
pub mod manager;
pub mod merge;
pub mod rate;
pub mod store;

pub use config::{DEPLOYMENT_SHADOW, Direction, ShadowManagerConfig, Strategy, SyncConfig};
pub use manager::{Executed, Failure, Origin, Page, Publication, ShadowManager};
pub use store::{ShadowStore, StoreError, SyncRecord};
