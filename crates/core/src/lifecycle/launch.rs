//! The seam between a component's lifecycle actor and the rest of the core.
//!
//! The actor sees the core only through [`LaunchContext`]: the rendered lifecycle, a step's
//! environment, who it runs as, its working directory and log, the process-group registry,
//! its dependencies' states and where lifecycle events go. It starts each step through a
//! [`Runner`]: [`ProcessRunner`] runs `sh -c` in a process group; a Lambda or WASM runner
//! can sit beside it and be chosen per component by [`LaunchContext::runner_for`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;

use lichen_recipe::{Lifecycle, Step};
use tokio::process::Child;

use super::orphans::GroupRegistry;
use super::process::{self, RunAs, StepCommand};
use super::state::LifecycleState;
use super::supervisor::{ComponentSpec, Slot};
use crate::logs::RotatingLog;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What launching a component's steps needs from the core, and nothing more.
pub trait LaunchContext: Send + Sync + 'static {
    /// The lifecycle to run now, with recipe variables rendered from current configuration.
    fn render_lifecycle(&self, spec: &ComponentSpec) -> Result<Lifecycle, String>;
    /// The environment of one step (Greengrass variables plus Setenv).
    fn step_env(&self, spec: &ComponentSpec, step: &Step) -> BTreeMap<String, String>;
    /// Who the component's unprivileged steps run as (`None`: the core's own user).
    fn run_as(&self, spec: &ComponentSpec) -> Result<Option<RunAs>, String>;
    /// Creates the component's working directory, owned by `run_as`.
    fn prepare_work_dir(&self, name: &str, run_as: Option<&RunAs>) -> Result<PathBuf, String>;
    /// Opens the component's own log file.
    fn open_log(&self, name: &str) -> Result<RotatingLog, String>;
    /// Process groups alive now, so that a crash leaves none behind.
    fn groups(&self) -> &GroupRegistry;
    /// Another component's slot, to wait for it as a dependency.
    fn component(&self, name: &str) -> Option<Arc<Slot>>;
    /// Tells observers (IPC `SubscribeToComponentUpdates`, tests) of a state change.
    fn publish_state(&self, component: &str, state: LifecycleState);
    /// The runner that starts this component's steps.
    fn runner_for(&self, spec: &ComponentSpec) -> Arc<dyn Runner>;
}

/// One step to start.
pub struct StepLaunch<'a> {
    pub spec: &'a ComponentSpec,
    /// `install`, `run`, `startup`, ... as shown in logs.
    pub step_name: &'a str,
    pub step: &'a Step,
    pub slot: &'a Slot,
}

/// Starts steps of one kind of component.
pub trait Runner: Send + Sync {
    fn launch(
        &self,
        ctx: &dyn LaunchContext,
        launch: StepLaunch<'_>,
    ) -> Result<Box<dyn Launched>, String>;
}

/// A step that was started.
pub trait Launched: Send {
    /// Completes when the step's main activity ends. Cancel-safe: may be polled again.
    fn wait(&mut self) -> BoxFuture<'_, std::io::Result<ExitStatus>>;
    /// Ends whatever the step left behind (its process group) and reaps it.
    fn end(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Runs a step as `sh -c <script>` in its own process group, as the component's user, in
/// its work directory, output to its log, inside its cgroup when it has one.
pub struct ProcessRunner {
    pub groups: Arc<GroupRegistry>,
}

struct LaunchedProcess {
    child: Child,
    pgid: i32,
    groups: Arc<GroupRegistry>,
}

impl Launched for LaunchedProcess {
    fn wait(&mut self) -> BoxFuture<'_, std::io::Result<ExitStatus>> {
        Box::pin(self.child.wait())
    }

    fn end(self: Box<Self>) -> BoxFuture<'static, ()> {
        let LaunchedProcess {
            mut child,
            pgid,
            groups,
        } = *self;
        Box::pin(async move {
            groups.terminate(pgid).await;
            let _ = child.wait().await;
        })
    }
}

impl Runner for ProcessRunner {
    fn launch(
        &self,
        ctx: &dyn LaunchContext,
        launch: StepLaunch<'_>,
    ) -> Result<Box<dyn Launched>, String> {
        let StepLaunch {
            spec,
            step_name,
            step,
            slot,
        } = launch;
        let env = ctx.step_env(spec, step);
        let run_as = if step.requires_privilege {
            None
        } else {
            ctx.run_as(spec)?
        };
        let cwd = ctx.prepare_work_dir(&spec.name, run_as.as_ref())?;
        let child = process::spawn(StepCommand {
            component: &spec.name,
            step: step_name,
            script: &step.script,
            cwd: &cwd,
            env: &env,
            run_as: run_as.as_ref(),
            log: &slot.log,
        })
        .map_err(|e| format!("starting {step_name} script: {e}"))?;
        let pid = child.id().unwrap_or_default() as i32;
        self.groups.track(pid, &spec.name);
        slot.attach_to_cgroup(pid as u32);
        if step_name == "run" || step_name == "startup" {
            slot.set_pid(Some(pid));
        }
        Ok(Box::new(LaunchedProcess {
            child,
            pgid: pid,
            groups: self.groups.clone(),
        }))
    }
}
