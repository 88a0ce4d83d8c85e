//! [`ShadowManager`]: the local shadow service's operations over the store, with
//! lichen-iot's semantics, the local rate limits, and the local pub/sub messages every
//! operation produces (`accepted`/`rejected`, `update/delta`, `update/documents`), which
//! the caller publishes whatever started the operation (IPC, the bus, the CLI, sync).
//!
//! Read-modify-write is serialized by one lock: the store has one writer, so versions are
//! checked against what is stored (no lost update), and the reply is built only after the
//! transaction committed.

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use lichen_iot::shadow::{
    self, ErrorCode, ShadowError, ShadowLimits, StoredShadow, VersionAfterDelete,
};
use lichen_iot::topic::{ShadowAddress, ShadowOp, ShadowReply, ShadowTopic};
use serde_json::{Value, json};

use crate::config::ShadowManagerConfig;
use crate::rate::LocalLimiter;
use crate::store::{ShadowStore, StoreError, SyncRecord};

/// Default and largest `pageSize` of ListNamedShadowsForThing.
pub const DEFAULT_PAGE_SIZE: usize = 25;
pub const MAX_PAGE_SIZE: usize = 100;
/// The message rate-limited requests get (IPC ServiceError; `rejected` code 429).
pub const THROTTLED_MESSAGE: &str = "Too Many Requests";

/// Who asked: local requests are rate limited and mark synced shadows pending; the sync's
/// own writes do neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Sync,
}

/// A message to publish on the local bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Rejected(#[from] ShadowError),
    #[error("{THROTTLED_MESSAGE}")]
    Throttled,
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An operation's answer and what to publish about it.
#[derive(Debug)]
pub struct Executed {
    /// `get`/`update`: the accepted document; `delete`: `{version, timestamp}`.
    pub result: Result<Value, Failure>,
    pub publications: Vec<Publication>,
    /// A local write to a synced shadow: the sync should run.
    pub sync_needed: bool,
}

/// One page of ListNamedShadowsForThing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub results: Vec<String>,
    pub next_token: Option<String>,
}

pub struct ShadowManager {
    store: ShadowStore,
    limits: RwLock<ShadowLimits>,
    limiter: LocalLimiter,
    synced: RwLock<BTreeSet<ShadowAddress>>,
    write: Mutex<()>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn limits_for(config: &ShadowManagerConfig) -> ShadowLimits {
    ShadowLimits {
        max_document_bytes: config.document_size_limit,
        version_after_delete: VersionAfterDelete::Restart,
        ..ShadowLimits::default()
    }
}

impl ShadowManager {
    pub fn new(store: ShadowStore, config: &ShadowManagerConfig) -> ShadowManager {
        ShadowManager {
            store,
            limits: RwLock::new(limits_for(config)),
            limiter: LocalLimiter::new(
                config.max_total_local_rate,
                config.max_per_thing_local_rate,
            ),
            synced: RwLock::new(BTreeSet::new()),
            write: Mutex::new(()),
        }
    }

    /// Applies a new configuration: limits, rates, and the set of synced shadows (`synced`,
    /// already resolved against the core's thing name).
    pub fn configure(&self, config: &ShadowManagerConfig, synced: BTreeSet<ShadowAddress>) {
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = limits_for(config);
        self.limiter
            .reconfigure(config.max_total_local_rate, config.max_per_thing_local_rate);
        *self.synced.write().unwrap_or_else(|p| p.into_inner()) = synced;
    }

    pub fn store(&self) -> &ShadowStore {
        &self.store
    }

    pub fn is_synced(&self, address: &ShadowAddress) -> bool {
        self.synced
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(address)
    }

    pub fn synced(&self) -> BTreeSet<ShadowAddress> {
        self.synced
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn limits(&self) -> ShadowLimits {
        *self.limits.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a local request for `thing` under the rate limits.
    pub fn admit(&self, thing: &str) -> bool {
        self.limiter.admit(thing)
    }

    /// Runs `op` on `address` with the request `payload` (JSON; may be empty for get/delete).
    pub fn execute(
        &self,
        op: ShadowOp,
        address: &ShadowAddress,
        payload: &[u8],
        origin: Origin,
    ) -> Executed {
        let topic = ShadowTopic::request(address, op);
        let now = now_secs();
        if origin == Origin::Local && !self.admit(&address.thing) {
            let rejected = json!({"code": 429, "message": THROTTLED_MESSAGE, "timestamp": now});
            return Executed {
                result: Err(Failure::Throttled),
                publications: vec![Publication {
                    topic: topic.with_reply(ShadowReply::Rejected).to_string(),
                    payload: json_bytes(&rejected),
                }],
                sync_needed: false,
            };
        }
        let limits = self.limits();
        let mut publications = Vec::new();
        let mut sync_needed = false;
        let result = (|| -> Result<Value, Failure> {
            match op {
                ShadowOp::Get => {
                    let stored = self.store.get(address)?;
                    Ok(shadow::get(
                        stored.as_ref(),
                        payload,
                        address,
                        now,
                        &limits,
                    )?)
                }
                ShadowOp::Update => {
                    let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
                    let stored = self.store.get(address)?;
                    let outcome = shadow::apply_update(stored.as_ref(), payload, now, &limits)?;
                    let pending = origin == Origin::Local && self.is_synced(address);
                    self.store.put(address, Some(&outcome.stored), pending)?;
                    sync_needed = pending;
                    if let Some(delta) = &outcome.delta {
                        publications.push(Publication {
                            topic: topic.with_reply(ShadowReply::Delta).to_string(),
                            payload: json_bytes(delta),
                        });
                    }
                    publications.push(Publication {
                        topic: topic.with_reply(ShadowReply::Documents).to_string(),
                        payload: json_bytes(&outcome.documents),
                    });
                    Ok(outcome.accepted)
                }
                ShadowOp::Delete => {
                    let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
                    let stored = self.store.get(address)?;
                    let outcome = shadow::delete(stored.as_ref(), payload, address, now, &limits)?;
                    let pending = origin == Origin::Local && self.is_synced(address);
                    // The tombstone stays: sync tells "deleted here" from "never existed".
                    self.store.put(address, Some(&outcome.tombstone), pending)?;
                    sync_needed = pending;
                    Ok(outcome.accepted)
                }
            }
        })();
        let result = result.map_err(|e| local_message(e, address));
        let reply = match &result {
            Ok(doc) => Some((ShadowReply::Accepted, json_bytes(doc))),
            Err(Failure::Rejected(e)) => Some((ShadowReply::Rejected, json_bytes(&e.payload(now)))),
            Err(Failure::Store(e)) => {
                tracing::error!(error = %e, shadow = %address.prefix(), "shadow store failed");
                let body =
                    json!({"code": 500, "message": "Internal service failure", "timestamp": now});
                Some((ShadowReply::Rejected, json_bytes(&body)))
            }
            Err(_) => None,
        };
        if let Some((reply, payload)) = reply {
            // accepted/rejected come before delta/documents, as AWS IoT orders them.
            publications.insert(
                0,
                Publication {
                    topic: topic.with_reply(reply).to_string(),
                    payload,
                },
            );
        }
        Executed {
            result,
            publications,
            sync_needed,
        }
    }

    /// ListNamedShadowsForThing: names after the token's position, `page_size` (1–100,
    /// default 25) at most; a token is returned whenever a full page came back. The token is
    /// opaque (base64url of thing + last name) and refused for another thing.
    pub fn list_named(
        &self,
        thing: &str,
        page_size: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Page, Failure> {
        lichen_iot::topic::validate_thing_name(thing)
            .map_err(|e| Failure::Invalid(e.to_string()))?;
        let size = match page_size {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if (1..=MAX_PAGE_SIZE as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(Failure::Invalid(format!(
                    "pageSize must be between 1 and {MAX_PAGE_SIZE}, not {n}"
                )));
            }
        };
        let after = match next_token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(decode_token(thing, t)?),
        };
        let results = self.store.list_named(thing, after.as_deref(), size)?;
        let next_token = (results.len() == size)
            .then(|| results.last().map(|last| encode_token(thing, last)))
            .flatten();
        Ok(Page {
            results,
            next_token,
        })
    }

    pub fn sync_record(&self, address: &ShadowAddress) -> Result<SyncRecord, StoreError> {
        self.store.sync_record(address)
    }

    /// The live document, as the sync reads it (`None` when absent or deleted).
    pub fn live(&self, address: &ShadowAddress) -> Result<Option<StoredShadow>, StoreError> {
        Ok(self.store.get(address)?.filter(|s| !s.deleted))
    }
}

/// The Greengrass shadow manager's wording where it differs from AWS IoT's (lichen-iot
/// speaks the cloud's): a missing shadow is "No shadow exists with name: <name>", unquoted,
/// and "Unnamed Shadow" for the classic one (SHM `ErrorMessage.createShadowNotFoundMessage`).
fn local_message(failure: Failure, address: &ShadowAddress) -> Failure {
    match failure {
        Failure::Rejected(mut e) if e.code == ErrorCode::NotFound => {
            let name = address.shadow.as_deref().unwrap_or("Unnamed Shadow");
            e.message = format!("No shadow exists with name: {name}");
            Failure::Rejected(e)
        }
        other => other,
    }
}

fn encode_token(thing: &str, last: &str) -> String {
    B64.encode(format!("v1\n{thing}\n{last}"))
}

fn decode_token(thing: &str, token: &str) -> Result<String, Failure> {
    let bad = || Failure::Invalid("nextToken is not valid for this thing".to_string());
    let bytes = B64.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(t), Some(last)) if t == thing => Ok(last.to_string()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
