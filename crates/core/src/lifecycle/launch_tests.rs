//! The actor drives a component through any [`Runner`]: here one that starts no process,
//! as a Lambda or WASM runner would not.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lichen_recipe::{Lifecycle, Step};

use super::cgroup::CgroupSupport;
use super::launch::*;
use super::orphans::GroupRegistry;
use super::process::RunAs;
use super::state::LifecycleState;
use super::supervisor::{ComponentSpec, Slot, Supervisor};
use crate::logs::RotatingLog;

/// Finishes every step at once with the exit code written as its script.
struct ScriptedRunner {
    launched: Mutex<Vec<(String, String)>>,
}

struct Done(i32);

impl Launched for Done {
    fn wait(&mut self) -> BoxFuture<'_, std::io::Result<ExitStatus>> {
        let code = self.0;
        Box::pin(async move { Ok(ExitStatus::from_raw(code << 8)) })
    }
    fn end(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl Runner for ScriptedRunner {
    fn launch(
        &self,
        _ctx: &dyn LaunchContext,
        launch: StepLaunch<'_>,
    ) -> Result<Box<dyn Launched>, String> {
        self.launched
            .lock()
            .unwrap()
            .push((launch.step_name.to_string(), launch.step.script.clone()));
        let code = launch
            .step
            .script
            .parse()
            .map_err(|_| "not a number".to_string())?;
        Ok(Box::new(Done(code)))
    }
}

struct Context {
    dir: PathBuf,
    groups: GroupRegistry,
    runner: Arc<ScriptedRunner>,
    supervisor: Arc<Mutex<Option<Arc<Supervisor>>>>,
    events: Mutex<Vec<(String, LifecycleState)>>,
}

impl LaunchContext for Context {
    fn render_lifecycle(&self, spec: &ComponentSpec) -> Result<Lifecycle, String> {
        Ok(spec.lifecycle.clone())
    }
    fn step_env(&self, _spec: &ComponentSpec, step: &Step) -> BTreeMap<String, String> {
        step.setenv.clone()
    }
    fn run_as(&self, _spec: &ComponentSpec) -> Result<Option<RunAs>, String> {
        Ok(None)
    }
    fn prepare_work_dir(&self, name: &str, _run_as: Option<&RunAs>) -> Result<PathBuf, String> {
        Ok(self.dir.join(name))
    }
    fn open_log(&self, name: &str) -> Result<RotatingLog, String> {
        RotatingLog::open(&self.dir.join(format!("{name}.log")), 1 << 20, 1)
            .map_err(|e| e.to_string())
    }
    fn groups(&self) -> &GroupRegistry {
        &self.groups
    }
    fn component(&self, name: &str) -> Option<Arc<Slot>> {
        self.supervisor.lock().unwrap().as_ref()?.slot(name)
    }
    fn publish_state(&self, component: &str, state: LifecycleState) {
        self.events
            .lock()
            .unwrap()
            .push((component.to_string(), state));
    }
    fn runner_for(&self, _spec: &ComponentSpec) -> Arc<dyn Runner> {
        self.runner.clone()
    }
}

fn step(script: &str) -> Option<Step> {
    Some(Step {
        script: script.into(),
        ..Default::default()
    })
}

fn spec(name: &str, install: &str, run: &str) -> ComponentSpec {
    ComponentSpec {
        name: name.into(),
        version: "1.0.0".into(),
        recipe: None,
        lifecycle: Lifecycle {
            install: step(install),
            run: step(run),
            ..Default::default()
        },
        dependencies: Vec::new(),
        root: true,
        builtin: false,
        run_with: Default::default(),
    }
}

async fn wait_for(slot: &Slot, state: LifecycleState) {
    let mut watch = slot.watch();
    tokio::time::timeout(Duration::from_secs(20), async {
        while watch.borrow_and_update().state != state {
            watch.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} never reached {state}: {:?}", slot.name, slot.status()));
}

#[tokio::test]
async fn the_actor_runs_steps_through_its_runner_without_processes() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(ScriptedRunner {
        launched: Mutex::new(Vec::new()),
    });
    let supervisor = Arc::new(Supervisor::new(CgroupSupport::probe(
        &dir.path().join("no-cgroup"),
    )));
    let ctx = Arc::new(Context {
        dir: dir.path().to_path_buf(),
        groups: GroupRegistry::new(dir.path().join("groups")),
        runner: runner.clone(),
        supervisor: Arc::new(Mutex::new(Some(supervisor.clone()))),
        events: Mutex::new(Vec::new()),
    });

    let ok = supervisor
        .upsert(ctx.clone(), spec("fn.Ok", "0", "0"))
        .unwrap();
    supervisor.start("fn.Ok").unwrap();
    wait_for(&ok, LifecycleState::Finished).await;
    assert_eq!(
        *runner.launched.lock().unwrap(),
        [
            ("install".to_string(), "0".to_string()),
            ("run".into(), "0".into())
        ]
    );

    // A function that fails three times is BROKEN, as a process would be; the exit status
    // reaches the reason.
    let bad = supervisor
        .upsert(ctx.clone(), spec("fn.Bad", "0", "3"))
        .unwrap();
    supervisor.start("fn.Bad").unwrap();
    wait_for(&bad, LifecycleState::Broken).await;
    let reason = bad.status().reason.unwrap();
    assert!(reason.contains("exit status: 3"), "{reason}");
    assert_eq!(bad.errors_seen().0, 3);
    let events = ctx.events.lock().unwrap();
    assert!(events.contains(&("fn.Ok".to_string(), LifecycleState::Installed)));
    assert!(events.contains(&("fn.Bad".to_string(), LifecycleState::Errored)));
}
