//! How deployments consult components over IPC: configuration validation
//! (SubscribeToValidateConfigurationUpdates / SendConfigurationValidityReport) and component
//! update notices (SubscribeToComponentUpdates / DeferComponentUpdate).
//!
//! Registrations live as long as the IPC stream that made them; each holds a small bounded
//! event queue ([`EVENT_QUEUE`]); events that do not fit are dropped with a warning (a
//! deployment then proceeds after its timeout, as with a silent component).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use lichen_core::DeploymentHooks;
use lichen_core::handle::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::OpError;
use crate::ops::EventSink;

/// Events queued per registration.
pub const EVENT_QUEUE: usize = 16;
/// Longest defer honoured at once (`recheckAfterMs` beyond it is clamped).
pub const MAX_RECHECK: Duration = Duration::from_secs(24 * 3600);
/// While waiting on components, how often to notice that one went away.
const LIVENESS_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq)]
pub enum ValidityReport {
    Accepted,
    Rejected(String),
}

type Registry = Mutex<HashMap<String, Vec<(u64, mpsc::Sender<Value>)>>>;
type Key = (String, String);

#[derive(Default)]
pub struct IpcHooks {
    next_id: AtomicU64,
    validators: Registry,
    update_subscribers: Registry,
    pending_validation: Mutex<HashMap<Key, mpsc::Sender<(String, ValidityReport)>>>,
    pending_updates: Mutex<HashMap<Key, mpsc::Sender<(String, u64)>>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Validator,
    Updates,
}

/// A live registration; dropping it unregisters.
pub(crate) struct Registration {
    rx: mpsc::Receiver<Value>,
    hooks: Weak<IpcHooks>,
    kind: Kind,
    component: String,
    id: u64,
}

impl Registration {
    /// Forwards queued events to the stream until either side goes away.
    pub async fn forward(mut self, sink: EventSink) {
        while let Some(event) = self.rx.recv().await {
            if !sink.send_json(&event).await {
                return;
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(hooks) = self.hooks.upgrade() {
            let mut reg = hooks
                .registry(self.kind)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(list) = reg.get_mut(&self.component) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    reg.remove(&self.component);
                }
            }
        }
    }
}

/// `now + d` without overflowing on absurd durations.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a deployment's pending entries however the wait ends, including when the
/// deployment is canceled and the hook future dropped.
struct PendingGuard<'a, V> {
    map: &'a Mutex<HashMap<Key, V>>,
    deployment_id: &'a str,
}

impl<V> Drop for PendingGuard<'_, V> {
    fn drop(&mut self) {
        lock(self.map).retain(|(_, d), _| d != self.deployment_id);
    }
}

impl IpcHooks {
    pub fn new() -> Arc<Self> {
        Arc::new(IpcHooks::default())
    }

    fn registry(&self, kind: Kind) -> &Registry {
        match kind {
            Kind::Validator => &self.validators,
            Kind::Updates => &self.update_subscribers,
        }
    }

    fn register(self: &Arc<Self>, kind: Kind, component: &str) -> Registration {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(self.registry(kind))
            .entry(component.to_string())
            .or_default()
            .push((id, tx));
        Registration {
            rx,
            hooks: Arc::downgrade(self),
            kind,
            component: component.to_string(),
            id,
        }
    }

    pub(crate) fn register_validator(self: &Arc<Self>, component: &str) -> Registration {
        self.register(Kind::Validator, component)
    }

    pub(crate) fn register_update_subscriber(self: &Arc<Self>, component: &str) -> Registration {
        self.register(Kind::Updates, component)
    }

    fn senders(&self, kind: Kind, component: &str) -> Vec<mpsc::Sender<Value>> {
        lock(self.registry(kind))
            .get(component)
            .map(|l| l.iter().map(|(_, s)| s.clone()).collect())
            .unwrap_or_default()
    }

    fn send(&self, kind: Kind, component: &str, event: &Value) -> bool {
        let senders = self.senders(kind, component);
        for s in &senders {
            if s.try_send(event.clone()).is_err() {
                tracing::warn!(component, "IPC event queue full; event dropped");
            }
        }
        !senders.is_empty()
    }

    /// Whether `component` has a live validation subscription.
    pub fn has_validator(&self, component: &str) -> bool {
        !self.senders(Kind::Validator, component).is_empty()
    }

    pub(crate) fn report_validity(
        &self,
        component: &str,
        deployment_id: &str,
        report: ValidityReport,
    ) -> Result<(), OpError> {
        let key = (component.to_string(), deployment_id.to_string());
        let tx = lock(&self.pending_validation).get(&key).cloned();
        match tx {
            Some(tx) if tx.try_send((component.to_string(), report)).is_ok() => Ok(()),
            _ => Err(OpError::invalid(format!(
                "no configuration validation of deployment {deployment_id} is pending for {component}; \
                 it timed out or was never requested"
            ))),
        }
    }

    pub(crate) fn defer(
        &self,
        component: &str,
        deployment_id: &str,
        recheck_after_ms: u64,
    ) -> Result<(), OpError> {
        let key = (component.to_string(), deployment_id.to_string());
        let tx = lock(&self.pending_updates).get(&key).cloned();
        match tx {
            Some(tx)
                if tx
                    .try_send((component.to_string(), recheck_after_ms))
                    .is_ok() =>
            {
                Ok(())
            }
            _ => Err(OpError::invalid(format!(
                "no update of deployment {deployment_id} is pending for {component}"
            ))),
        }
    }

    async fn validate(
        &self,
        deployment_id: &str,
        proposed: &BTreeMap<String, Value>,
        timeout: Duration,
    ) -> Result<(), String> {
        let (tx, mut rx) = mpsc::channel(64);
        let _cleanup = PendingGuard {
            map: &self.pending_validation,
            deployment_id,
        };
        let mut waiting = Vec::new();
        for (component, configuration) in proposed {
            if !self.has_validator(component) {
                continue;
            }
            lock(&self.pending_validation)
                .insert((component.clone(), deployment_id.to_string()), tx.clone());
            let event = json!({"validateConfigurationUpdateEvent": {
                "deploymentId": deployment_id, "configuration": configuration}});
            self.send(Kind::Validator, component, &event);
            waiting.push(component.clone());
        }
        drop(tx);
        let deadline = after(Instant::now(), timeout);
        let mut result = Ok(());
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((component, report))) => {
                    waiting.retain(|c| *c != component);
                    if let ValidityReport::Rejected(message) = report {
                        result = Err(format!(
                            "component {component} rejected the configuration: {message}"
                        ));
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::info!(deployment_id, components = ?waiting,
                        "no configuration validity report in time; proceeding");
                    break;
                }
            }
        }
        result
    }

    async fn pre_update(&self, deployment_id: &str, timeout: Duration) {
        let components: Vec<String> = lock(&self.update_subscribers).keys().cloned().collect();
        if components.is_empty() {
            return;
        }
        let (tx, mut rx) = mpsc::channel(64);
        let _cleanup = PendingGuard {
            map: &self.pending_updates,
            deployment_id,
        };
        let event =
            json!({"preUpdateEvent": {"deploymentId": deployment_id, "isGgcRestarting": false}});
        // Per component: Err(deadline) waits for an answer, Ok(wake) sleeps after a defer.
        let mut state: HashMap<String, Result<Instant, Instant>> = HashMap::new();
        for c in components {
            lock(&self.pending_updates).insert((c.clone(), deployment_id.to_string()), tx.clone());
            if self.send(Kind::Updates, &c, &event) {
                state.insert(c, Err(after(Instant::now(), timeout)));
            }
        }
        drop(tx);
        while !state.is_empty() {
            let next = state
                .values()
                .map(|s| *s.as_ref().unwrap_or_else(|e| e))
                .min()
                .unwrap_or_else(Instant::now)
                .min(Instant::now() + LIVENESS_POLL);
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some((c, 0)) => { state.remove(&c); }
                    Some((c, ms)) => {
                        if let Some(s) = state.get_mut(&c) {
                            tracing::info!(component = %c, deployment_id, recheck_after_ms = ms, "component deferred the update");
                            *s = Ok(Instant::now() + Duration::from_millis(ms).min(MAX_RECHECK));
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    let mut done = Vec::new();
                    for (c, s) in state.iter_mut() {
                        if self.senders(Kind::Updates, c).is_empty() {
                            done.push(c.clone());
                            continue;
                        }
                        match *s {
                            Err(deadline) if deadline <= now => {
                                tracing::info!(component = %c, deployment_id, "no answer to the update notice in time; proceeding");
                                done.push(c.clone());
                            }
                            Ok(wake) if wake <= now => {
                                self.send(Kind::Updates, c, &event);
                                *s = Err(after(now, timeout));
                            }
                            _ => {}
                        }
                    }
                    for c in done {
                        state.remove(&c);
                    }
                }
            }
        }
    }
}

/// The hooks the core calls during deployments.
pub struct HooksAdapter(pub Arc<IpcHooks>);

impl DeploymentHooks for HooksAdapter {
    fn validate_configuration<'a>(
        &'a self,
        deployment_id: &'a str,
        proposed: &'a BTreeMap<String, Value>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.0.validate(deployment_id, proposed, timeout))
    }

    fn notify_pre_update<'a>(
        &'a self,
        deployment_id: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.0.pre_update(deployment_id, timeout))
    }

    fn notify_post_update(&self, deployment_id: &str) {
        let event = json!({"postUpdateEvent": {"deploymentId": deployment_id}});
        let components: Vec<String> = lock(&self.0.update_subscribers).keys().cloned().collect();
        for c in components {
            self.0.send(Kind::Updates, &c, &event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn validation_accept_reject_and_timeout() {
        let hooks = IpcHooks::new();
        let adapter = HooksAdapter(hooks.clone());
        let mut reg = hooks.register_validator("a");
        let proposed =
            BTreeMap::from([("a".to_string(), json!({"k": 1})), ("b".into(), json!({}))]);

        let h2 = hooks.clone();
        let answer = tokio::spawn(async move {
            let ev = reg.rx.recv().await.unwrap();
            assert_eq!(
                ev["validateConfigurationUpdateEvent"]["configuration"],
                json!({"k": 1})
            );
            h2.report_validity("a", "d1", ValidityReport::Rejected("bad k".into()))
                .unwrap();
            reg
        });
        let r = adapter
            .validate_configuration("d1", &proposed, Duration::from_secs(20))
            .await;
        assert!(r.unwrap_err().contains("bad k"));
        let reg = answer.await.unwrap();
        // No answer: proceeds after the timeout; late reports are refused.
        assert!(
            adapter
                .validate_configuration("d2", &proposed, Duration::from_secs(5))
                .await
                .is_ok()
        );
        assert!(
            hooks
                .report_validity("a", "d2", ValidityReport::Accepted)
                .is_err()
        );
        drop(reg);
        assert!(!hooks.has_validator("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn defer_then_ack() {
        let hooks = IpcHooks::new();
        let adapter = HooksAdapter(hooks.clone());
        let mut reg = hooks.register_update_subscriber("c");
        let h2 = hooks.clone();
        let comp = tokio::spawn(async move {
            let ev = reg.rx.recv().await.unwrap();
            assert_eq!(ev["preUpdateEvent"]["deploymentId"], "d");
            h2.defer("c", "d", 3_000).unwrap();
            // Absurd values are clamped, never an overflow.
            h2.defer("c", "d", u64::MAX).unwrap();
            h2.defer("c", "d", 3_000).unwrap();
            let t0 = Instant::now();
            let again = reg.rx.recv().await.unwrap();
            assert!(again.get("preUpdateEvent").is_some());
            assert!(t0.elapsed() >= Duration::from_millis(3_000));
            h2.defer("c", "d", 0).unwrap();
            let post = reg.rx.recv().await.unwrap();
            assert_eq!(post["postUpdateEvent"]["deploymentId"], "d");
        });
        let t0 = Instant::now();
        adapter
            .notify_pre_update("d", Duration::from_secs(60))
            .await;
        assert!(t0.elapsed() < Duration::from_secs(60));
        adapter.notify_post_update("d");
        comp.await.unwrap();
        assert!(hooks.defer("c", "d", 0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn canceled_wait_leaves_nothing_pending() {
        let hooks = IpcHooks::new();
        let _reg = hooks.register_update_subscriber("c");
        let adapter = HooksAdapter(hooks.clone());
        let wait = adapter.notify_pre_update("d", Duration::from_secs(60));
        assert!(
            tokio::time::timeout(Duration::from_secs(1), wait)
                .await
                .is_err()
        );
        assert!(hooks.defer("c", "d", 0).is_err());
        assert!(lock(&hooks.pending_updates).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn silent_subscriber_times_out() {
        let hooks = IpcHooks::new();
        let _reg = hooks.register_update_subscriber("c");
        let t0 = Instant::now();
        HooksAdapter(hooks.clone())
            .notify_pre_update("d", Duration::from_secs(60))
            .await;
        assert!(t0.elapsed() >= Duration::from_secs(60));
    }
}
