//! One task per component drives its lifecycle: wait for dependencies, Install, Startup or
//! Run, Shutdown, Recover, and the BROKEN rule. Commands (start, stop, restart, reported
//! state) arrive on a channel and are handled at every wait point, so a component stuck in a
//! step can always be stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use lichen_recipe::{DependencyType, Step};
use tokio::sync::{mpsc, oneshot};

use super::launch::{LaunchContext, Launched, StepLaunch};
use super::process;
use super::state::{LifecycleState, ReportedState};
use super::supervisor::Slot;

pub const DEFAULT_INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_RECOVER_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(120);
/// Greengrass `errorResetTime` default.
pub const DEFAULT_ERROR_RESET_TIME: Duration = Duration::from_secs(3600);
/// Errors in one state that make a component BROKEN.
pub const MAX_CONTINUAL_ERRORS: u32 = 3;
/// Pause between an error and the next attempt.
const RETRY_DELAY: Duration = Duration::from_millis(500);

pub enum Command {
    Start,
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
    Reported(ReportedState),
    /// Stop and end the task (component removed or core shutting down).
    Exit(oneshot::Sender<()>),
}

/// Why an active phase ended.
enum Interrupt {
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
    Exit(oneshot::Sender<()>),
}

enum StepOutcome {
    Ok,
    Failed(String),
    Interrupted(Interrupt),
}

pub(crate) struct Actor {
    pub ctx: Arc<dyn LaunchContext>,
    pub slot: Arc<Slot>,
    pub rx: mpsc::Receiver<Command>,
    /// Errors per originating state: (count, time of last error).
    errors: HashMap<LifecycleState, (u32, Instant)>,
    /// The process group of the Run or Startup step, kept until the component stops.
    main: Option<Box<dyn Launched>>,
    /// The lifecycle with recipe variables rendered, refreshed at every (re)start so that
    /// configuration changes reach the scripts.
    lifecycle: lichen_recipe::Lifecycle,
}

impl Actor {
    pub fn new(ctx: Arc<dyn LaunchContext>, slot: Arc<Slot>, rx: mpsc::Receiver<Command>) -> Self {
        Actor {
            ctx,
            slot,
            rx,
            errors: HashMap::new(),
            main: None,
            lifecycle: Default::default(),
        }
    }

    fn state(&self) -> LifecycleState {
        self.slot.status().state
    }

    fn set_state(&mut self, to: LifecycleState, reason: Option<String>) {
        let from = self.state();
        if to != LifecycleState::Errored && to != LifecycleState::Broken {
            self.errors.remove(&from);
        }
        self.slot.set_status(to, reason);
        self.ctx.publish_state(&self.slot.name, to);
        tracing::info!(component = %self.slot.name, from = %from, to = %to, "state change");
    }

    pub async fn run(mut self) {
        loop {
            let Some(cmd) = self.rx.recv().await else {
                return;
            };
            let reply = match cmd {
                Command::Start => None,
                Command::Restart(r) => Some(r),
                Command::Stop(r) => {
                    let _ = r.send(());
                    continue;
                }
                Command::Exit(r) => {
                    let _ = r.send(());
                    return;
                }
                Command::Reported(_) => continue,
            };
            if let Some(r) = reply {
                let _ = r.send(());
            }
            if self.slot.spec().builtin {
                self.set_state(LifecycleState::Running, None);
                continue;
            }
            match self.active().await {
                Some(Interrupt::Exit(r)) => {
                    let _ = r.send(());
                    return;
                }
                Some(Interrupt::Stop(r)) => {
                    let _ = r.send(());
                }
                Some(Interrupt::Restart(r)) => {
                    let _ = r.send(());
                    // Re-queue a start for ourselves: the idle loop picks it up.
                    let _ = self.slot.commands.try_send(Command::Start);
                }
                None => {}
            }
        }
    }

    /// Runs the component until it finishes, breaks, or is interrupted. Processes are
    /// stopped before this returns an interrupt.
    async fn active(&mut self) -> Option<Interrupt> {
        loop {
            if let Some(i) = self.wait_for_dependencies().await {
                return Some(self.stop_then(i).await);
            }
            let spec = self.slot.spec();
            self.lifecycle = match self.ctx.render_lifecycle(&spec) {
                Ok(l) => l,
                Err(e) => {
                    self.set_state(LifecycleState::Broken, Some(e));
                    return None;
                }
            };
            let lifecycle = self.lifecycle.clone();
            if self.slot.needs_bootstrap.load(Ordering::Acquire) {
                match self.bootstrap(lifecycle.bootstrap.as_ref()).await {
                    StepOutcome::Ok => self.slot.needs_bootstrap.store(false, Ordering::Release),
                    StepOutcome::Failed(reason) => {
                        if self.on_error(format!("bootstrap failed: {reason}")).await {
                            return None;
                        }
                        continue;
                    }
                    StepOutcome::Interrupted(i) => return Some(self.stop_then(i).await),
                }
            }
            if self.slot.needs_install.load(Ordering::Acquire) {
                match self
                    .run_step(
                        "install",
                        lifecycle.install.as_ref(),
                        DEFAULT_INSTALL_TIMEOUT,
                    )
                    .await
                {
                    StepOutcome::Ok => {
                        self.slot.needs_install.store(false, Ordering::Release);
                        self.set_state(LifecycleState::Installed, None);
                    }
                    StepOutcome::Failed(reason) => {
                        if self.on_error(format!("install failed: {reason}")).await {
                            return None;
                        }
                        continue;
                    }
                    StepOutcome::Interrupted(i) => return Some(self.stop_then(i).await),
                }
            }
            let outcome = if let Some(startup) = lifecycle.startup.as_ref() {
                self.startup(startup).await
            } else if let Some(run) = lifecycle.run.as_ref() {
                self.run_main(run).await
            } else {
                self.set_state(LifecycleState::Finished, None);
                return None;
            };
            match outcome {
                StepOutcome::Ok => return None,
                StepOutcome::Failed(reason) => {
                    if self.on_error(reason).await {
                        return None;
                    }
                }
                StepOutcome::Interrupted(i) => return Some(self.stop_then(i).await),
            }
        }
    }

    /// Startup: STARTING until the script exits 0 or the component reports RUNNING; then
    /// RUNNING until a stop, an ERRORED report, or the death of a main process that never
    /// detached.
    async fn startup(&mut self, step: &Step) -> StepOutcome {
        if self.skipped(step) {
            self.set_state(LifecycleState::Running, None);
            return self.hold_running().await;
        }
        self.set_state(LifecycleState::Starting, None);
        let launched = match self.spawn_step("startup", step) {
            Ok(c) => c,
            Err(e) => return StepOutcome::Failed(e),
        };
        self.main = Some(launched);
        let timeout = step.timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let Some(main) = self.main.as_mut() else {
                return StepOutcome::Failed("startup process lost".into());
            };
            tokio::select! {
                status = main.wait() => {
                    return match status {
                        Ok(s) if s.success() => {
                            self.set_state(LifecycleState::Running, None);
                            self.hold_running().await
                        }
                        Ok(s) => StepOutcome::Failed(format!("startup script exited with {s}")),
                        Err(e) => StepOutcome::Failed(format!("waiting for startup script: {e}")),
                    };
                }
                _ = &mut deadline => {
                    return StepOutcome::Failed(format!("startup timed out after {}s", timeout.as_secs()));
                }
                cmd = self.rx.recv() => match self.interrupt_or_report(cmd) {
                    Some(Ok(i)) => return StepOutcome::Interrupted(i),
                    Some(Err(ReportedState::Running)) => {
                        self.set_state(LifecycleState::Running, None);
                        return self.hold_running().await;
                    }
                    Some(Err(ReportedState::Errored)) => {
                        return StepOutcome::Failed("component reported ERRORED".into());
                    }
                    None => {}
                }
            }
        }
    }

    /// Waits in RUNNING (after Startup) for a stop or an ERRORED report.
    async fn hold_running(&mut self) -> StepOutcome {
        loop {
            let cmd = self.rx.recv().await;
            match self.interrupt_or_report(cmd) {
                Some(Ok(i)) => return StepOutcome::Interrupted(i),
                Some(Err(ReportedState::Errored)) => {
                    return StepOutcome::Failed("component reported ERRORED".into());
                }
                _ => {}
            }
        }
    }

    /// Run: RUNNING as soon as the script starts; exit 0 → FINISHED.
    async fn run_main(&mut self, step: &Step) -> StepOutcome {
        if self.skipped(step) {
            self.set_state(LifecycleState::Finished, None);
            return StepOutcome::Ok;
        }
        let launched = match self.spawn_step("run", step) {
            Ok(c) => c,
            Err(e) => return StepOutcome::Failed(e),
        };
        self.main = Some(launched);
        self.set_state(LifecycleState::Running, None);
        loop {
            let Some(main) = self.main.as_mut() else {
                return StepOutcome::Failed("run process lost".into());
            };
            tokio::select! {
                status = main.wait() => {
                    if let Some(main) = self.main.take() {
                        main.end().await;
                    }
                    self.slot.set_pid(None);
                    return match status {
                        Ok(s) if s.success() => {
                            self.set_state(LifecycleState::Finished, None);
                            StepOutcome::Ok
                        }
                        Ok(s) => StepOutcome::Failed(format!("run script exited with {s}")),
                        Err(e) => StepOutcome::Failed(format!("waiting for run script: {e}")),
                    };
                }
                cmd = self.rx.recv() => match self.interrupt_or_report(cmd) {
                    Some(Ok(i)) => return StepOutcome::Interrupted(i),
                    Some(Err(ReportedState::Errored)) => {
                        return StepOutcome::Failed("component reported ERRORED".into());
                    }
                    _ => {}
                }
            }
        }
    }

    /// `Ok(interrupt)` for stop/restart/exit, `Err(state)` for a reported state, `None` for
    /// commands that change nothing here.
    fn interrupt_or_report(
        &self,
        cmd: Option<Command>,
    ) -> Option<Result<Interrupt, ReportedState>> {
        match cmd {
            Some(Command::Stop(r)) => Some(Ok(Interrupt::Stop(r))),
            Some(Command::Restart(r)) => Some(Ok(Interrupt::Restart(r))),
            Some(Command::Exit(r)) => Some(Ok(Interrupt::Exit(r))),
            // The supervisor is gone: treat as exit with nobody waiting.
            None => Some(Ok(Interrupt::Exit(oneshot::channel().0))),
            Some(Command::Reported(s)) => Some(Err(s)),
            Some(Command::Start) => None,
        }
    }

    /// Counts an error; returns true when the component is now BROKEN.
    async fn on_error(&mut self, reason: String) -> bool {
        let from = self.state();
        let reset_after = self
            .lifecycle
            .error_reset_time
            .unwrap_or(DEFAULT_ERROR_RESET_TIME);
        let now = Instant::now();
        let entry = self.errors.entry(from).or_insert((0, now));
        if now.duration_since(entry.1) >= reset_after {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = now;
        let count = entry.0;
        self.kill_main().await;
        self.slot.record_error(&reason);
        tracing::warn!(component = %self.slot.name, error = %reason, count, "component error");
        if count >= MAX_CONTINUAL_ERRORS {
            self.set_state(
                LifecycleState::Broken,
                Some(format!("{count} errors in state {from} (last: {reason})")),
            );
            return true;
        }
        self.set_state(LifecycleState::Errored, Some(reason));
        let recover = self.lifecycle.recover.clone();
        if let Some(step) = recover
            && let StepOutcome::Failed(e) = self
                .run_step("recover", Some(&step), DEFAULT_RECOVER_TIMEOUT)
                .await
        {
            tracing::warn!(component = %self.slot.name, error = %e, "recover step failed");
        }
        tokio::time::sleep(RETRY_DELAY).await;
        false
    }

    /// Waits until every dependency is RUNNING or FINISHED.
    async fn wait_for_dependencies(&mut self) -> Option<Interrupt> {
        let spec = self.slot.spec();
        for (dep, _kind) in &spec.dependencies {
            let Some(dep_slot) = self.ctx.component(dep) else {
                continue;
            };
            let mut watch = dep_slot.watch();
            loop {
                if watch.borrow_and_update().state.is_up() {
                    break;
                }
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { break },
                    cmd = self.rx.recv() => {
                        if let Some(Ok(i)) = self.interrupt_or_report(cmd) {
                            return Some(i);
                        }
                    }
                }
            }
        }
        None
    }

    /// Stops what runs (Shutdown step, then the process groups) and passes the interrupt on.
    async fn stop_then(&mut self, i: Interrupt) -> Interrupt {
        self.stop_processes().await;
        i
    }

    pub async fn stop_processes(&mut self) {
        self.set_state(LifecycleState::Stopping, None);
        let shutdown = self.lifecycle.shutdown.clone();
        if let Some(step) = shutdown.as_ref() {
            // Commands that arrive meanwhile wait in the channel: a stop always completes.
            if let Err(e) = self
                .run_step_uninterruptible("shutdown", step, DEFAULT_SHUTDOWN_TIMEOUT)
                .await
            {
                tracing::warn!(component = %self.slot.name, error = %e, "shutdown step failed");
            }
        }
        self.kill_main().await;
        self.set_state(LifecycleState::Finished, None);
    }

    async fn kill_main(&mut self) {
        if let Some(main) = self.main.take() {
            main.end().await;
        }
        self.slot.set_pid(None);
    }

    fn skipped(&self, step: &Step) -> bool {
        step.skipif.as_ref().is_some_and(|s| {
            let skip = process::should_skip(s, None);
            if skip {
                tracing::info!(component = %self.slot.name, "step skipped by Skipif");
            }
            skip
        })
    }

    /// Bootstrap: exit 0 is success; 100 (restart the nucleus) and 101 (reboot the device)
    /// are Greengrass requests. lichen applies components without restarting itself, so 100
    /// needs nothing; it never reboots a device, so 101 is logged for the operator.
    async fn bootstrap(&mut self, step: Option<&Step>) -> StepOutcome {
        let Some(step) = step else {
            return StepOutcome::Ok;
        };
        if self.skipped(step) {
            return StepOutcome::Ok;
        }
        let mut launched = match self.spawn_step("bootstrap", step) {
            Ok(c) => c,
            Err(e) => return StepOutcome::Failed(e),
        };
        let timeout = step.timeout.unwrap_or(DEFAULT_BOOTSTRAP_TIMEOUT);
        let outcome = tokio::select! {
            status = launched.wait() => match status.map(|s| s.code()) {
                Ok(Some(0)) => StepOutcome::Ok,
                Ok(Some(100)) => {
                    tracing::info!(component = %self.slot.name, "bootstrap asked for a restart of the core; not needed with lichen");
                    StepOutcome::Ok
                }
                Ok(Some(101)) => {
                    tracing::warn!(component = %self.slot.name, "bootstrap asked for a device reboot; lichen does not reboot devices, reboot it yourself if the component needs it");
                    self.slot.log.write_line("bootstrap", "device reboot requested (exit 101): lichen does not reboot devices");
                    StepOutcome::Ok
                }
                Ok(code) => StepOutcome::Failed(format!("bootstrap script exited with {}", code.map(|c| c.to_string()).unwrap_or_else(|| "a signal".into()))),
                Err(e) => StepOutcome::Failed(format!("waiting for bootstrap script: {e}")),
            },
            _ = tokio::time::sleep(timeout) => StepOutcome::Failed(format!("bootstrap timed out after {}s", timeout.as_secs())),
        };
        launched.end().await;
        outcome
    }

    /// Runs a bounded step to completion (Install, Recover); stop requests interrupt it.
    async fn run_step(
        &mut self,
        name: &str,
        step: Option<&Step>,
        default_timeout: Duration,
    ) -> StepOutcome {
        let Some(step) = step else {
            return StepOutcome::Ok;
        };
        if self.skipped(step) {
            return StepOutcome::Ok;
        }
        let mut launched = match self.spawn_step(name, step) {
            Ok(c) => c,
            Err(e) => return StepOutcome::Failed(e),
        };
        let timeout = step.timeout.unwrap_or(default_timeout);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let outcome = loop {
            tokio::select! {
                status = launched.wait() => break match status {
                    Ok(s) if s.success() => StepOutcome::Ok,
                    Ok(s) => StepOutcome::Failed(format!("{name} script exited with {s}")),
                    Err(e) => StepOutcome::Failed(format!("waiting for {name} script: {e}")),
                },
                _ = &mut deadline => {
                    break StepOutcome::Failed(format!("{name} timed out after {}s", timeout.as_secs()));
                }
                cmd = self.rx.recv() => match self.interrupt_or_report(cmd) {
                    Some(Ok(i)) => break StepOutcome::Interrupted(i),
                    _ => continue,
                }
            }
        };
        launched.end().await;
        outcome
    }

    async fn run_step_uninterruptible(
        &mut self,
        name: &str,
        step: &Step,
        default_timeout: Duration,
    ) -> Result<(), String> {
        if self.skipped(step) {
            return Ok(());
        }
        let mut launched = self.spawn_step(name, step)?;
        let timeout = step.timeout.unwrap_or(default_timeout);
        let result = match tokio::time::timeout(timeout, launched.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("{name} script exited with {s}")),
            Ok(Err(e)) => Err(format!("waiting for {name} script: {e}")),
            Err(_) => Err(format!("{name} timed out after {}s", timeout.as_secs())),
        };
        launched.end().await;
        result
    }

    fn spawn_step(&mut self, name: &str, step: &Step) -> Result<Box<dyn Launched>, String> {
        let spec = self.slot.spec();
        let runner = self.ctx.runner_for(&spec);
        runner.launch(
            self.ctx.as_ref(),
            StepLaunch {
                spec: &spec,
                step_name: name,
                step,
                slot: &self.slot,
            },
        )
    }
}

/// Dependencies as (name, kind), for the spec.
pub fn dependency_list(
    deps: &BTreeMap<String, lichen_recipe::Dependency>,
) -> Vec<(String, DependencyType)> {
    deps.iter().map(|(n, d)| (n.clone(), d.kind)).collect()
}
