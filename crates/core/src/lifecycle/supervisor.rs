//! The set of components the core runs: one [`Slot`] (state, spec, log, command channel) per
//! component, each driven by its own [`Actor`] task.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lichen_recipe::DependencyType;
use tokio::sync::{mpsc, oneshot, watch};

use super::actor::{Actor, Command};
use super::cgroup::CgroupSupport;
use super::launch::LaunchContext;
use super::process;
use super::state::{LifecycleState, ReportedState};
use crate::deployment::model::RunWith;
use crate::error::{CoreError, Result};
use crate::logs::RotatingLog;

/// Commands waiting for a component's task; senders beyond it wait (stop/restart) or are
/// dropped (reported states, which the component can repeat).
pub const COMMAND_QUEUE: usize = 32;

/// How often [`Supervisor::wait_stable`] looks at the components it watches.
const STABILITY_POLL: Duration = Duration::from_millis(50);

/// What a component runs, decided by a deployment (or reloaded at start-up).
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    pub name: String,
    pub version: String,
    /// `None` for built-in components.
    pub recipe: Option<Arc<lichen_recipe::Recipe>>,
    /// The lifecycle as rendered when the spec was made; used to notice changes. The actor
    /// renders it again at every start.
    pub lifecycle: lichen_recipe::Lifecycle,
    pub dependencies: Vec<(String, DependencyType)>,
    pub root: bool,
    /// Served by the core itself (e.g. aws.greengrass.Nucleus): no processes.
    pub builtin: bool,
    pub run_with: RunWith,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub state: LifecycleState,
    pub reason: Option<String>,
}

pub struct Slot {
    pub name: String,
    spec: RwLock<Arc<ComponentSpec>>,
    status: watch::Sender<Status>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) needs_install: AtomicBool,
    /// Set by a deployment that brings a new component or version: Bootstrap runs before
    /// the next Install. Not set when a core restarts with the same versions.
    pub(crate) needs_bootstrap: AtomicBool,
    pub(crate) log: RotatingLog,
    pid: Mutex<Option<i32>>,
    cgroup: Mutex<Option<PathBuf>>,
    /// What happened to the requested resource limits.
    limits_note: Mutex<Option<String>>,
    /// Errors since the slot was made, and the last one's reason: a deployment compares
    /// the count before it starts a component with the count during its stability window,
    /// so an error is seen even when the component recovered in between.
    errors_seen: Mutex<(u64, Option<String>)>,
}

impl Slot {
    /// The component's own log (its processes' output goes here).
    pub fn log(&self) -> &RotatingLog {
        &self.log
    }

    pub fn spec(&self) -> Arc<ComponentSpec> {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub(crate) fn set_status(&self, state: LifecycleState, reason: Option<String>) {
        self.status.send_replace(Status { state, reason });
    }

    pub fn pid(&self) -> Option<i32> {
        *self.pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_pid(&self, pid: Option<i32>) {
        *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = pid;
    }

    pub(crate) fn record_error(&self, reason: &str) {
        let mut seen = self.errors_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.0 += 1;
        seen.1 = Some(reason.to_string());
    }

    /// (errors so far, last reason).
    pub(crate) fn errors_seen(&self) -> (u64, Option<String>) {
        self.errors_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn limits_note(&self) -> Option<String> {
        self.limits_note
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Moves `pid` into the component's cgroup, when it has one (resource limits).
    pub fn attach_to_cgroup(&self, pid: u32) {
        let group = self
            .cgroup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(group) = group
            && let Err(e) = CgroupSupport::attach(&group, pid)
        {
            tracing::warn!(component = %self.name, error = %e, "could not apply resource limits");
            *self.limits_note.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("not applied: {e}"));
        }
    }
}

pub struct Supervisor {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    pub(crate) cgroups: CgroupSupport,
}

impl Supervisor {
    pub fn new(cgroups: CgroupSupport) -> Self {
        Supervisor {
            slots: RwLock::new(BTreeMap::new()),
            cgroups,
        }
    }

    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Creates the component's slot and task, or replaces its spec. A new version (or a new
    /// component) is reinstalled on its next start. The component is not started here.
    pub fn upsert(&self, ctx: Arc<dyn LaunchContext>, spec: ComponentSpec) -> Result<Arc<Slot>> {
        if let Some(slot) = self.slot(&spec.name) {
            let old = slot.spec();
            if old.version != spec.version || old.lifecycle != spec.lifecycle {
                slot.needs_install.store(true, Ordering::Release);
            }
            self.apply_limits(&slot, &spec.run_with);
            *slot.spec.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(spec);
            return Ok(slot);
        }
        let log = ctx.open_log(&spec.name).map_err(CoreError::Other)?;
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (status, _) = watch::channel(Status {
            state: LifecycleState::New,
            reason: None,
        });
        let slot = Arc::new(Slot {
            name: spec.name.clone(),
            spec: RwLock::new(Arc::new(spec.clone())),
            status,
            commands: tx,
            needs_install: AtomicBool::new(true),
            needs_bootstrap: AtomicBool::new(false),
            log,
            pid: Mutex::new(None),
            cgroup: Mutex::new(None),
            limits_note: Mutex::new(None),
            errors_seen: Mutex::new((0, None)),
        });
        self.apply_limits(&slot, &spec.run_with);
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.name.clone(), slot.clone());
        tokio::spawn(Actor::new(ctx, slot.clone(), rx).run());
        Ok(slot)
    }

    fn apply_limits(&self, slot: &Slot, run_with: &RunWith) {
        let note = match &run_with.system_resource_limits {
            None => None,
            Some(limits) => match self.cgroups.prepare(&slot.name, limits) {
                Ok(dir) => {
                    *slot.cgroup.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
                    Some(format!(
                        "applied: memory {} KB, cpus {}",
                        limits
                            .memory
                            .map(|m| m.to_string())
                            .unwrap_or("unlimited".into()),
                        limits
                            .cpus
                            .map(|c| c.to_string())
                            .unwrap_or("unlimited".into())
                    ))
                }
                Err(reason) => {
                    tracing::warn!(
                        component = %slot.name,
                        %reason,
                        "resource limits requested but cgroup v2 is unusable; running without limits"
                    );
                    Some(format!("not applied: {reason}"))
                }
            },
        };
        *slot.limits_note.lock().unwrap_or_else(|p| p.into_inner()) = note;
    }

    /// Starts a component that is idle (NEW, FINISHED or BROKEN) from scratch: its state is
    /// reset to NEW first, so that waiting for RUNNING/FINISHED observes the new run and not
    /// the state left by the previous one.
    pub fn start_fresh(&self, name: &str) -> Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| CoreError::ComponentNotFound(name.into()))?;
        let state = slot.status().state;
        if matches!(
            state,
            LifecycleState::New | LifecycleState::Finished | LifecycleState::Broken
        ) {
            slot.set_status(LifecycleState::New, None);
        }
        self.start(name)
    }

    /// Marks a component new or changed by a deployment, so its Bootstrap step runs.
    pub fn request_bootstrap(&self, name: &str) {
        if let Some(slot) = self.slot(name) {
            slot.needs_bootstrap.store(true, Ordering::Release);
        }
    }

    pub fn start(&self, name: &str) -> Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| CoreError::ComponentNotFound(name.into()))?;
        slot.commands
            .try_send(Command::Start)
            .map_err(|_| CoreError::Other(format!("component {name} is busy; try again")))
    }

    async fn request(
        &self,
        name: &str,
        make: impl FnOnce(oneshot::Sender<()>) -> Command,
    ) -> Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| CoreError::ComponentNotFound(name.into()))?;
        let (tx, rx) = oneshot::channel();
        slot.commands
            .send(make(tx))
            .await
            .map_err(|_| CoreError::Other(format!("component {name} is gone")))?;
        let _ = rx.await;
        Ok(())
    }

    /// Stops the component (Shutdown step, then its process groups). It stays stopped.
    pub async fn stop(&self, name: &str) -> Result<()> {
        self.request(name, Command::Stop).await
    }

    /// Restarts the component, then its HARD dependents.
    pub async fn restart(&self, name: &str) -> Result<()> {
        self.request(name, Command::Restart).await?;
        for dependent in self.hard_dependents(name) {
            if dependent != name {
                let _ = self.request(&dependent, Command::Restart).await;
            }
        }
        Ok(())
    }

    /// Stops the component, ends its task and forgets it.
    pub async fn remove(&self, name: &str) -> Result<()> {
        self.request(name, Command::Exit).await?;
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }

    pub fn report(&self, name: &str, state: ReportedState) -> Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| CoreError::ComponentNotFound(name.into()))?;
        slot.commands
            .try_send(Command::Reported(state))
            .map_err(|_| CoreError::Other(format!("component {name} is busy; report again")))
    }

    /// Components that (transitively) HARD-depend on `name`.
    pub fn hard_dependents(&self, name: &str) -> Vec<String> {
        let specs: Vec<Arc<ComponentSpec>> = self.slots().iter().map(|s| s.spec()).collect();
        let mut out: Vec<String> = Vec::new();
        let mut frontier = vec![name.to_string()];
        while let Some(n) = frontier.pop() {
            for s in &specs {
                let depends = s
                    .dependencies
                    .iter()
                    .any(|(d, k)| d == &n && *k == DependencyType::Hard);
                if depends && !out.contains(&s.name) && s.name != name {
                    out.push(s.name.clone());
                    frontier.push(s.name.clone());
                }
            }
        }
        out
    }

    /// Names ordered so that every component comes after its dependencies (iterative).
    pub fn dependency_order(&self) -> Vec<String> {
        let deps: BTreeMap<String, Vec<String>> = self
            .slots()
            .iter()
            .map(|s| {
                let spec = s.spec();
                let list = spec.dependencies.iter().map(|(d, _)| d.clone()).collect();
                (s.name.clone(), list)
            })
            .collect();
        crate::deployment::planner::dependency_order(&deps)
    }

    /// Stops everything, dependents first.
    pub async fn stop_all(&self) {
        let mut order = self.dependency_order();
        order.reverse();
        for name in order {
            let _ = self.remove(&name).await;
        }
    }

    /// Waits until every named component is RUNNING or FINISHED. Fails early on BROKEN.
    pub async fn wait_up(
        &self,
        names: &[String],
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        for name in names {
            let Some(slot) = self.slot(name) else {
                return Err(format!("component {name} is not running on this core"));
            };
            let mut watch = slot.watch();
            loop {
                let status = watch.borrow_and_update().clone();
                if status.state.is_up() {
                    break;
                }
                if status.state == LifecycleState::Broken {
                    return Err(format!(
                        "component {name} is BROKEN: {}",
                        status.reason.unwrap_or_default()
                    ));
                }
                match tokio::time::timeout_at(deadline, watch.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(format!("component {name} was removed")),
                    Err(_) => {
                        return Err(format!(
                            "component {name} did not reach RUNNING or FINISHED within {}s (state {}{})",
                            timeout.as_secs(),
                            status.state,
                            status.reason.map(|r| format!(": {r}")).unwrap_or_default()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Error counts of the named components now, to compare against in
    /// [`Supervisor::wait_stable`].
    pub fn error_baseline(&self, names: &[String]) -> BTreeMap<String, u64> {
        names
            .iter()
            .filter_map(|n| self.slot(n).map(|s| (n.clone(), s.errors_seen().0)))
            .collect()
    }

    /// Fails as soon as one of `baseline`'s components has an error (beyond its count in
    /// `baseline`) or is BROKEN or gone, before `window` ends; succeeds when the window ends
    /// with none. Polls, because hundreds of watch receivers would cost more than a glance
    /// at each slot every [`STABILITY_POLL`].
    pub async fn wait_stable(
        &self,
        baseline: &BTreeMap<String, u64>,
        window: Duration,
    ) -> std::result::Result<(), String> {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            for (name, before) in baseline {
                let Some(slot) = self.slot(name) else {
                    return Err(format!("component {name} was removed"));
                };
                let (count, reason) = slot.errors_seen();
                let status = slot.status();
                if count > *before || status.state == LifecycleState::Broken {
                    let reason = reason.or(status.reason).unwrap_or_default();
                    return Err(format!(
                        "component {name} failed within the {}s stability window: {reason}",
                        window.as_secs_f32()
                    ));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + STABILITY_POLL))
                .await;
        }
    }

    /// Freezes or thaws a component: cgroup freezer when it has a group, else SIGSTOP /
    /// SIGCONT to its main process group.
    pub fn pause(&self, name: &str, pause: bool) -> Result<()> {
        let slot = self
            .slot(name)
            .ok_or_else(|| CoreError::ComponentNotFound(name.into()))?;
        let status = slot.status();
        if pause
            && status.state != LifecycleState::Running
            && status.state != LifecycleState::Starting
        {
            return Err(CoreError::InvalidArgument(format!(
                "component {name} is {} and cannot be paused",
                status.state
            )));
        }
        let group = slot
            .cgroup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let frozen = match group {
            Some(g) => CgroupSupport::freeze(&g, pause).is_ok(),
            None => false,
        };
        if !frozen {
            let pid = slot.pid().ok_or_else(|| {
                CoreError::InvalidArgument(format!("component {name} has no running process"))
            })?;
            let sig = if pause {
                nix::sys::signal::Signal::SIGSTOP
            } else {
                nix::sys::signal::Signal::SIGCONT
            };
            process::signal_group(pid, sig);
        }
        Ok(())
    }
}
