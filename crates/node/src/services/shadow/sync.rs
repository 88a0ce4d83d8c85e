//! Cloud sync of the configured shadows (`synchronize`) over the cloud link, against the
//! cloud's shadow service (AWS IoT's MQTT shadow topics, which the lichen cloud's endpoint
//! serves).
//!
//! - **Listening:** one link subscription per synced thing, `$aws/things/<t>/shadow/#`
//!   (restored by the link at every reconnect), made before the first round that needs it;
//!   one the cloud refused (a client device not associated with this core) is asked again
//!   before each later round, so an association made while connected takes effect at the
//!   next retry or change. Answers carrying one of our clientTokens go
//!   to the request waiting for them; another client's `update/accepted` or
//!   `delete/accepted` on a synced shadow marks it dirty.
//! - **A sync of one shadow** is a full reconciliation: read the local document, the last
//!   synced one (the base) and the cloud's (`get`), merge three ways
//!   ([`lichen_shadow::merge::three_way`]: for `betweenDeviceAndCloud` the cloud wins
//!   `desired` and the device wins `reported`; `deviceToCloud` / `cloudToDevice` copy one
//!   side), write what differs to each side (the cloud update carries the cloud version read,
//!   the local one the local version read, so a concurrent change conflicts and the sync runs
//!   again), and record the agreed document and the cloud version. A shadow missing on one
//!   side that the base still holds unchanged on the other was deleted there: the delete is
//!   propagated. First sync (no base): whichever side exists is copied over.
//! - **When:** every synced shadow at every (re)connect and configuration change; then
//!   `realTime`: whenever a local change is committed (the store's `pending` mark is written
//!   in the same transaction as the document, so a kill -9 loses nothing: the next start's
//!   connect syncs it) or a cloud change is seen; `periodic`: every `delay` seconds, the
//!   pending and dirty ones. A round that left failures is retried after [`RETRY_FIRST`],
//!   doubling to [`RETRY_MAX`], without waiting for another change. "Every (re)connect" is
//!   tracked by any change of the link's state seen (a drop and reconnect between two looks
//!   still counts), not by catching the Connected value, so a local change racing the
//!   connect cannot swallow the connect's full round.
//! - `maxOutboundSyncUpdatesPerSecond` bounds the requests sent to the cloud (waiting, not
//!   dropping). `AWSManagedGreengrassV2Deployment` is never synced.
//!
//! Bounds: one request in flight (sync is sequential); an answer is awaited
//! [`REQUEST_TIMEOUT`]; a shadow is retried [`MAX_ATTEMPTS`] times per round (then its error
//! is recorded, it stays pending, and the round is retried as above); the dirty set holds at most the
//! synced shadows; link receivers hold 64 messages (the link's bound; full → dropped by the
//! link, and the next round's full sync catches up).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lichen_iot::topic::{ShadowAddress, ShadowOp, ShadowReply, ShadowTopic};
use lichen_mqtt_client::QoS;
use lichen_shadow::merge::{State, patch, three_way};
use lichen_shadow::rate::Bucket;
use lichen_shadow::{Direction, Failure, Origin, ShadowManager, Strategy};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use super::Shared;
use crate::services::cloud::{CloudLink, CloudService, LinkState};

pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_ATTEMPTS: usize = 3;
/// A round that left shadows failed (kept pending) is retried after this, doubling to
/// [`RETRY_MAX`], even when nothing else changes (realTime; periodic retries every tick).
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Wakes the sync: a local change, a cloud change, or a new configuration.
#[derive(Default)]
pub(crate) struct SyncSignal {
    notify: Notify,
    generation: AtomicU64,
    dirty: Mutex<BTreeSet<ShadowAddress>>,
}

impl SyncSignal {
    pub(crate) fn notify(&self) {
        self.notify.notify_one();
    }

    pub(crate) fn reconfigured(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn mark_dirty(&self, address: ShadowAddress) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address);
        self.notify.notify_one();
    }

    fn take_dirty(&self) -> BTreeSet<ShadowAddress> {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<(ShadowReply, Value)>>>>;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn connected(state: &watch::Receiver<LinkState>) -> bool {
    matches!(*state.borrow(), LinkState::Connected)
}

/// The sync task: idle without a cloud link or a `synchronize` section.
pub(crate) async fn run(shared: Arc<Shared>, cloud: Arc<CloudService>) {
    let Some(link) = cloud.link() else {
        tracing::debug!("no cloud link: local shadows are not synced");
        return;
    };
    let waiters: Waiters = Arc::default();
    let mut listeners: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut state = link.state();
    let mut outbound = Bucket::new(1, Instant::now());
    let mut seen_generation = u64::MAX;
    // Every synced shadow is reconciled once per connection: set whenever the link's state
    // is seen to change (a drop and reconnect between two looks is still a change), cleared
    // by a full round while connected.
    let mut full_round = true;
    // After a round that left shadows failed (kept pending), when to try them again without
    // waiting for another change.
    let mut retry: Option<Duration> = None;
    loop {
        let Some(manager) = shared.manager().cloned() else {
            return;
        };
        let (synced, direction, strategy, rate) = {
            let c = shared.config.lock().unwrap_or_else(|p| p.into_inner());
            (
                manager.synced(),
                c.synchronize
                    .as_ref()
                    .map(|s| s.direction)
                    .unwrap_or_default(),
                c.strategy,
                c.max_outbound_sync_rate,
            )
        };
        let generation = shared.sync.generation.load(Ordering::SeqCst);
        if generation != seen_generation {
            seen_generation = generation;
            outbound = Bucket::new(rate, Instant::now());
            let things: BTreeSet<String> = synced.iter().map(|a| a.thing.clone()).collect();
            listeners.retain(|thing, task| {
                let keep = things.contains(thing);
                if !keep {
                    task.abort();
                }
                keep
            });
            // A new configuration: everything synced is reconciled again.
            full_round = true;
        }
        if synced.is_empty() {
            shared.sync.notify.notified().await;
            continue;
        }
        if !connected(&state) {
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() { return; }
                    full_round = true;
                }
                _ = shared.sync.notify.notified() => {}
            }
            continue;
        }
        if full_round {
            // Every synced shadow at every connect and reconfiguration: what changed on
            // either side while apart is merged now.
            state.borrow_and_update();
            full_round = false;
            shared.sync.take_dirty();
            subscribe_missing(&link, &synced, &mut listeners, &waiters, &shared).await;
            let ok = sync_all(
                &shared,
                &manager,
                &link,
                &waiters,
                &mut outbound,
                direction,
                synced.iter(),
            )
            .await;
            retry = next_retry(ok, retry);
            continue;
        }
        let wake = async {
            match (strategy, retry) {
                (Strategy::RealTime, None) => shared.sync.notify.notified().await,
                (Strategy::RealTime, Some(after)) => {
                    tokio::select! {
                        _ = shared.sync.notify.notified() => {}
                        _ = tokio::time::sleep(after) => {}
                    }
                }
                (Strategy::Periodic { delay_secs }, _) => {
                    tokio::time::sleep(Duration::from_secs(delay_secs)).await
                }
            }
        };
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() { return; }
                full_round = true;
                continue;
            }
            _ = wake => {}
        }
        if shared.sync.generation.load(Ordering::SeqCst) != seen_generation {
            continue;
        }
        let mut targets = shared.sync.take_dirty();
        let pending = {
            let m = manager.clone();
            tokio::task::spawn_blocking(move || m.store().pending())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        targets.extend(pending);
        targets.retain(|a| synced.contains(a));
        subscribe_missing(&link, &synced, &mut listeners, &waiters, &shared).await;
        let ok = sync_all(
            &shared,
            &manager,
            &link,
            &waiters,
            &mut outbound,
            direction,
            targets.iter(),
        )
        .await;
        retry = next_retry(ok, retry);
    }
}

/// Subscribes, before a round, each synced thing's shadow filter that has no listener: new in
/// the configuration, or refused by the cloud before (a client device not yet associated with
/// this core there), so an association made meanwhile takes effect at this round.
async fn subscribe_missing(
    link: &CloudLink,
    synced: &BTreeSet<ShadowAddress>,
    listeners: &mut HashMap<String, JoinHandle<()>>,
    waiters: &Waiters,
    shared: &Arc<Shared>,
) {
    let things: BTreeSet<&str> = synced.iter().map(|a| a.thing.as_str()).collect();
    for thing in things {
        if listeners.contains_key(thing) {
            continue;
        }
        let filter = format!("$aws/things/{thing}/shadow/#");
        match link.subscribe(&filter, QoS::AtLeastOnce).await {
            Ok(rx) => {
                listeners.insert(
                    thing.to_string(),
                    tokio::spawn(listen(rx, waiters.clone(), shared.clone())),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, filter, "shadow sync cannot subscribe");
            }
        }
    }
}

/// The wait before retrying a round that left failures: [`RETRY_FIRST`] doubling to
/// [`RETRY_MAX`]; none after a clean round.
fn next_retry(ok: bool, previous: Option<Duration>) -> Option<Duration> {
    if ok {
        return None;
    }
    Some(previous.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX)))
}

async fn listen(
    mut rx: tokio::sync::mpsc::Receiver<lichen_mqtt_client::Publish>,
    waiters: Waiters,
    shared: Arc<Shared>,
) {
    while let Some(p) = rx.recv().await {
        let Ok(topic) = ShadowTopic::parse(&p.topic) else {
            continue;
        };
        let Some(reply) = topic.reply else { continue };
        let Ok(body) = serde_json::from_slice::<Value>(&p.payload) else {
            continue;
        };
        let token = body.get("clientToken").and_then(Value::as_str);
        if let Some(token) = token {
            let waiter = waiters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(token);
            if let Some(w) = waiter {
                if matches!(reply, ShadowReply::Accepted | ShadowReply::Rejected) {
                    let _ = w.send((reply, body));
                }
                continue;
            }
            if token.starts_with(TOKEN_PREFIX) {
                // Our own request's other messages (delta, documents) or a late answer.
                continue;
            }
        }
        let change = reply == ShadowReply::Accepted
            && matches!(topic.op, ShadowOp::Update | ShadowOp::Delete);
        if change {
            let address = topic.address();
            if shared.manager().is_some_and(|m| m.is_synced(&address)) {
                shared.sync.mark_dirty(address);
            }
        }
    }
}

const TOKEN_PREFIX: &str = "lichen-sync-";
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// One request to the cloud's shadow service and its answer.
async fn request(
    link: &CloudLink,
    waiters: &Waiters,
    outbound: &mut Bucket,
    address: &ShadowAddress,
    op: ShadowOp,
    mut body: Value,
) -> Result<(ShadowReply, Value), String> {
    loop {
        let wait = outbound.wait_time(Instant::now());
        if wait.is_zero() {
            break;
        }
        tokio::time::sleep(wait).await;
    }
    outbound.try_take(Instant::now());
    let token = format!(
        "{TOKEN_PREFIX}{}",
        NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)
    );
    body["clientToken"] = json!(token);
    let (tx, rx) = oneshot::channel();
    waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), tx);
    let topic = ShadowTopic::request(address, op).to_string();
    let payload = serde_json::to_vec(&body).unwrap_or_default();
    let sent = link.publish(&topic, payload, QoS::AtLeastOnce).await;
    let answer = match sent {
        Ok(_) => tokio::time::timeout(REQUEST_TIMEOUT, rx).await,
        Err(e) => {
            waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&token);
            return Err(format!("cloud {topic}: {e}"));
        }
    };
    waiters
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&token);
    match answer {
        Ok(Ok(a)) => Ok(a),
        _ => Err(format!(
            "cloud {topic}: no answer within {REQUEST_TIMEOUT:?}"
        )),
    }
}

async fn sync_all<'a>(
    shared: &Shared,
    manager: &Arc<ShadowManager>,
    link: &CloudLink,
    waiters: &Waiters,
    outbound: &mut Bucket,
    direction: Direction,
    targets: impl Iterator<Item = &'a ShadowAddress>,
) -> bool {
    let mut all_ok = true;
    for address in targets {
        let mut last = String::new();
        let mut done = false;
        for _ in 0..MAX_ATTEMPTS {
            match sync_one(shared, manager, link, waiters, outbound, direction, address).await {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(Retry::Conflict(e)) => last = e,
                Err(Retry::Fail(e)) => {
                    last = e;
                    break;
                }
            }
        }
        if !done {
            all_ok = false;
            tracing::warn!(shadow = %address.prefix(), error = %last, "shadow sync failed; kept pending");
            let m = manager.clone();
            let a = address.clone();
            let _ =
                tokio::task::spawn_blocking(move || m.store().record_sync_error(&a, &last)).await;
        }
    }
    all_ok
}

enum Retry {
    /// A version conflict on either side: read both again.
    Conflict(String),
    Fail(String),
}

/// The cloud's document: `Some((state, version))`, or `None` when it has none.
async fn cloud_get(
    link: &CloudLink,
    waiters: &Waiters,
    outbound: &mut Bucket,
    address: &ShadowAddress,
) -> Result<Option<(State, u64)>, Retry> {
    let (reply, body) = request(link, waiters, outbound, address, ShadowOp::Get, json!({}))
        .await
        .map_err(Retry::Fail)?;
    match reply {
        ShadowReply::Accepted => {
            let state = State::from_value(body.get("state").unwrap_or(&Value::Null));
            let version = body.get("version").and_then(Value::as_u64).unwrap_or(0);
            Ok(Some((state, version)))
        }
        _ if body.get("code").and_then(Value::as_u64) == Some(404) => Ok(None),
        _ => Err(Retry::Fail(format!("cloud get rejected: {body}"))),
    }
}

/// Sends an update or delete to the cloud; returns the cloud's version afterwards.
async fn cloud_write(
    link: &CloudLink,
    waiters: &Waiters,
    outbound: &mut Bucket,
    address: &ShadowAddress,
    op: ShadowOp,
    body: Value,
) -> Result<u64, Retry> {
    let (reply, answer) = request(link, waiters, outbound, address, op, body)
        .await
        .map_err(Retry::Fail)?;
    match reply {
        ShadowReply::Accepted => Ok(answer.get("version").and_then(Value::as_u64).unwrap_or(0)),
        _ => match answer.get("code").and_then(Value::as_u64) {
            Some(409) | Some(404) => Err(Retry::Conflict(format!("cloud {op:?}: {answer}"))),
            _ => Err(Retry::Fail(format!("cloud {op:?} rejected: {answer}"))),
        },
    }
}

/// Applies a change locally as the sync (not rate limited, not marked pending), publishing
/// its local messages (the delta a device waits for) like any other operation.
async fn local_write(
    shared: &Shared,
    address: &ShadowAddress,
    op: ShadowOp,
    body: Value,
) -> Result<Value, Retry> {
    shared
        .run(
            op,
            address.clone(),
            serde_json::to_vec(&body).unwrap_or_default(),
            Origin::Sync,
        )
        .await
        .map_err(|e| match e {
            Failure::Rejected(r) if r.code.as_u16() == 409 || r.code.as_u16() == 404 => {
                Retry::Conflict(format!("local {op:?}: {}", r.message))
            }
            e => Retry::Fail(format!("local {op:?}: {e}")),
        })
}

async fn sync_one(
    shared: &Shared,
    manager: &Arc<ShadowManager>,
    link: &CloudLink,
    waiters: &Waiters,
    outbound: &mut Bucket,
    direction: Direction,
    address: &ShadowAddress,
) -> Result<(), Retry> {
    let (local, record) = {
        let m = manager.clone();
        let a = address.clone();
        tokio::task::spawn_blocking(move || {
            Ok::<_, lichen_shadow::StoreError>((m.store().get(&a)?, m.sync_record(&a)?))
        })
        .await
        .map_err(|e| Retry::Fail(e.to_string()))?
        .map_err(|e| Retry::Fail(e.to_string()))?
    };
    let local_version = local.as_ref().map(|s| s.version);
    let local_live = local.filter(|s| !s.deleted).map(|s| State {
        desired: s.state.desired,
        reported: s.state.reported,
    });
    let base = match &record.last_synced {
        Some(Value::Null) | None => None,
        Some(v) => Some(State::from_value(v.get("state").unwrap_or(&Value::Null))),
    };
    let cloud = cloud_get(link, waiters, outbound, address).await?;
    let mut local_seen = local_version;
    let mut cloud_version = cloud.as_ref().map_or(record.cloud_version, |(_, v)| *v);
    let to_cloud = direction != Direction::CloudToDevice;
    let to_local = direction != Direction::DeviceToCloud;
    let agreed: Option<State> = match (local_live, cloud) {
        (None, None) => None,
        (Some(l), None) => {
            let cloud_deleted = base.as_ref().is_some_and(|b| *b == l);
            if cloud_deleted && to_local {
                let v = json!({"version": local_version});
                local_write(shared, address, ShadowOp::Delete, v).await?;
                local_seen = None;
                None
            } else if to_cloud {
                let body = json!({"state": l.to_value()});
                cloud_version =
                    cloud_write(link, waiters, outbound, address, ShadowOp::Update, body).await?;
                Some(l)
            } else {
                Some(l)
            }
        }
        (None, Some((c, cv))) => {
            let local_deleted = base.as_ref().is_some_and(|b| *b == c);
            if local_deleted && to_cloud {
                cloud_write(
                    link,
                    waiters,
                    outbound,
                    address,
                    ShadowOp::Delete,
                    json!({"version": cv}),
                )
                .await?;
                None
            } else if to_local {
                let body = json!({"state": c.to_value()});
                let accepted = local_write(shared, address, ShadowOp::Update, body).await?;
                local_seen = accepted.get("version").and_then(Value::as_u64);
                Some(c)
            } else {
                Some(c)
            }
        }
        (Some(l), Some((c, cv))) => {
            let empty = State::default();
            let merged = three_way(base.as_ref().unwrap_or(&empty), &l, &c, direction);
            if to_cloud && let Some(state) = patch(&c, &merged) {
                let body = json!({"state": state, "version": cv});
                cloud_version =
                    cloud_write(link, waiters, outbound, address, ShadowOp::Update, body).await?;
            }
            if to_local && let Some(state) = patch(&l, &merged) {
                let body = json!({"state": state, "version": local_version});
                let accepted = local_write(shared, address, ShadowOp::Update, body).await?;
                local_seen = accepted.get("version").and_then(Value::as_u64);
            }
            Some(merged)
        }
    };
    let agreed = match agreed {
        Some(s) => json!({"state": s.to_value()}),
        None => Value::Null,
    };
    // The tombstone a local delete left has the version the sync saw.
    if local_seen.is_none() {
        local_seen = {
            let m = manager.clone();
            let a = address.clone();
            tokio::task::spawn_blocking(move || m.store().get(&a))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .map(|s| s.version)
        };
    }
    let m = manager.clone();
    let a = address.clone();
    tokio::task::spawn_blocking(move || {
        m.store()
            .record_synced(&a, &agreed, cloud_version, now_secs(), local_seen)
    })
    .await
    .map_err(|e| Retry::Fail(e.to_string()))?
    .map_err(|e| Retry::Fail(e.to_string()))?;
    tracing::debug!(shadow = %address.prefix(), cloud_version, "shadow synced");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_rounds_back_off_to_the_maximum_and_a_clean_round_resets() {
        assert_eq!(next_retry(true, None), None);
        let mut r = next_retry(false, None);
        assert_eq!(r, Some(RETRY_FIRST));
        for _ in 0..10 {
            r = next_retry(false, r);
        }
        assert_eq!(r, Some(RETRY_MAX));
        assert_eq!(next_retry(true, r), None);
    }
}
