//! The runner of `aws.greengrass.lambda` components: the recipe's `lambda-launcher start`
//! step starts the function's pool instead of AWS's launcher binary, and ending that step
//! stops it. `lambda-launcher stop`/`clean` steps do nothing (ending the startup step did
//! it); any other step runs as a process, like a generic component's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;

use lichen_core::CoreHandle;
use lichen_core::handle::BoxFuture;
use lichen_core::lifecycle::launch::{LaunchContext, Launched, Runner, StepLaunch};
use lichen_core::lifecycle::orphans::GroupRegistry;
use lichen_core::lifecycle::process::{self, RunAs, StepCommand};
use lichen_core::logs::RotatingLog;
use lichen_lambda::{FunctionConfig, InstanceLauncher, Pool, PoolOptions};
use tokio::process::Child;

use super::Functions;

/// The interpreter instances run under, unless the step environment names another in
/// `LICHEN_LAMBDA_PYTHON` (e.g. a virtualenv's python with `awslambdaric` installed).
pub const DEFAULT_PYTHON: &str = "python3";

/// Which runtime interface client runs a function, from the recipe's
/// `AWS_GREENGRASS_LAMBDA_RUNTIME` (`python3.x` — the default — or `nodejsNN.x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// `python -m awslambdaric <handler>`.
    Python { python: String },
    /// `aws-lambda-ric <handler>` (npm `aws-lambda-ric`): `LICHEN_LAMBDA_NODE_RIC` names its
    /// `bin/index.mjs` (run with `LICHEN_LAMBDA_NODE`, default `node`); without it the
    /// `aws-lambda-ric` command on PATH (a global npm install).
    Node { ric: Option<String> },
}

impl Runtime {
    pub fn from_env(env: &BTreeMap<String, String>) -> Runtime {
        let runtime = env
            .get("AWS_GREENGRASS_LAMBDA_RUNTIME")
            .map(|r| r.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if runtime.starts_with("nodejs") {
            return Runtime::Node {
                ric: env
                    .get("LICHEN_LAMBDA_NODE_RIC")
                    .filter(|r| !r.is_empty())
                    .cloned(),
            };
        }
        Runtime::Python {
            python: env
                .get("LICHEN_LAMBDA_PYTHON")
                .cloned()
                .unwrap_or_else(|| DEFAULT_PYTHON.to_string()),
        }
    }

    /// The instance's command (names come from the environment, nothing is quoted in).
    fn script(&self) -> &'static str {
        match self {
            Runtime::Python { .. } => {
                "exec \"$LICHEN_LAMBDA_PYTHON\" -m awslambdaric \"$_HANDLER\""
            }
            Runtime::Node { ric: Some(_) } => {
                "exec \"${LICHEN_LAMBDA_NODE:-node}\" \"$LICHEN_LAMBDA_NODE_RIC\" \"$_HANDLER\""
            }
            Runtime::Node { ric: None } => "exec aws-lambda-ric \"$_HANDLER\"",
        }
    }
}

pub struct LambdaRunner {
    pub(super) core: CoreHandle,
    pub(super) functions: Arc<Functions>,
}

impl Runner for LambdaRunner {
    fn launch(
        &self,
        ctx: &dyn LaunchContext,
        launch: StepLaunch<'_>,
    ) -> Result<Box<dyn Launched>, String> {
        let script = launch.step.script.as_str();
        if script.contains("lambda-launcher") {
            if launch.step_name == "startup" && script.contains("lambda-launcher start") {
                return self.start_function(ctx, launch);
            }
            // stop / clean: ending the startup step stopped the pool already.
            return Ok(Box::new(Done(true)));
        }
        self.core.process_runner().launch(ctx, launch)
    }
}

impl LambdaRunner {
    fn start_function(
        &self,
        ctx: &dyn LaunchContext,
        launch: StepLaunch<'_>,
    ) -> Result<Box<dyn Launched>, String> {
        let spec = launch.spec;
        let name = spec.name.clone();
        let env = ctx.step_env(spec, launch.step);
        let handler = env
            .get("AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER")
            .filter(|h| !h.is_empty())
            .cloned()
            .ok_or_else(|| {
                format!("{name}: AWS_GREENGRASS_LAMBDA_FUNCTION_HANDLER is not set by the recipe")
            })?;
        let artifact_dir = PathBuf::from(
            env.get("AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH")
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    format!("{name}: AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH is not set by the recipe")
                })?,
        );
        let runtime = Runtime::from_env(&env);
        check_handler(&handler, &artifact_dir, &runtime)?;
        let config_value = self
            .core
            .get_configuration(&name, &[])
            .unwrap_or(serde_json::Value::Null);
        let config =
            FunctionConfig::from_config(&name, &config_value).map_err(|e| e.to_string())?;
        let log = launch.slot.log().clone();
        if config.container_requested {
            tracing::warn!(component = %name, "{}", lichen_lambda::config::CONTAINER_WARNING);
            log.write_line("lichen", lichen_lambda::config::CONTAINER_WARNING);
        }
        let run_as = ctx.run_as(spec)?;
        // Creates the work directory owned by the component's user, as for processes.
        ctx.prepare_work_dir(&name, run_as.as_ref())?;
        let function_arn = env
            .get("AWS_GREENGRASS_LAMBDA_ARN")
            .cloned()
            .unwrap_or_else(|| format!("arn:aws:lambda:::function:{name}"));
        // The v1 runtime's variables (greengrasssdk), then the function's own.
        let svcuid = env.get("SVCUID").cloned().unwrap_or_default();
        let legacy = self.functions.legacy_env(&name, &function_arn, &svcuid);
        let mut instance_env = env.clone();
        instance_env.extend(legacy.env);
        instance_env.insert(
            "ENCODING_TYPE".into(),
            match config.encoding {
                lichen_lambda::Encoding::Json => "json".into(),
                lichen_lambda::Encoding::Binary => "binary".into(),
            },
        );
        instance_env.extend(config.environment.clone());
        let launcher = Arc::new(RicLauncher {
            component: name.clone(),
            runtime,
            handler,
            artifact_dir,
            runtime_dir: legacy.python_path,
            env: instance_env,
            run_as,
            log,
            groups: self.core.process_groups(),
        });
        let pool = Pool::start(
            PoolOptions {
                component: name.clone(),
                function_arn: function_arn.clone(),
                config,
            },
            launcher,
        );
        self.functions
            .started(&self.core, pool, function_arn, legacy.token);
        Ok(Box::new(RunningFunction {
            name,
            functions: self.functions.clone(),
            reported: false,
        }))
    }
}

/// A handler `pkg.module.function` must exist as `pkg/module.py` (or a package) for Python,
/// `pkg/module.js` / `.mjs` / `.cjs` for Node.js, in the unarchived artifact, so that a ZIP
/// without it fails the deployment naming it.
fn check_handler(handler: &str, artifact_dir: &Path, runtime: &Runtime) -> Result<(), String> {
    let Some((module, function)) = handler.rsplit_once('.') else {
        return Err(format!("handler {handler:?}: expected module.function"));
    };
    if function.is_empty() || module.is_empty() {
        return Err(format!("handler {handler:?}: expected module.function"));
    }
    if let Runtime::Node { .. } = runtime {
        // Node.js handlers name a file path: `dir/app.handler` → dir/app.js.
        let rel = PathBuf::from(module);
        for ext in ["js", "mjs", "cjs"] {
            if artifact_dir.join(&rel).with_extension(ext).is_file() {
                return Ok(());
            }
        }
        return Err(format!(
            "handler {handler}: {}.js (or .mjs, .cjs) not found in the function's artifact {}",
            rel.display(),
            artifact_dir.display()
        ));
    }
    let rel: PathBuf = module.split('.').collect();
    let file = artifact_dir.join(&rel).with_extension("py");
    let package = artifact_dir.join(&rel).join("__init__.py");
    if file.is_file() || package.is_file() {
        return Ok(());
    }
    Err(format!(
        "handler {handler}: {} not found in the function's artifact {}",
        rel.with_extension("py").display(),
        artifact_dir.display()
    ))
}

/// A step that did its work at launch.
struct Done(bool);

impl Launched for Done {
    fn wait(&mut self) -> BoxFuture<'_, std::io::Result<ExitStatus>> {
        let code = if self.0 { 0 } else { 1 << 8 };
        Box::pin(async move { Ok(ExitStatus::from_raw(code)) })
    }
    fn end(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// The startup step of a running function: succeeds at once (the component is RUNNING),
/// then stays pending; ending it stops the pool.
struct RunningFunction {
    name: String,
    functions: Arc<Functions>,
    reported: bool,
}

impl Launched for RunningFunction {
    fn wait(&mut self) -> BoxFuture<'_, std::io::Result<ExitStatus>> {
        if !self.reported {
            self.reported = true;
            return Box::pin(async { Ok(ExitStatus::from_raw(0)) });
        }
        Box::pin(std::future::pending())
    }
    fn end(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.functions.stop(&self.name).await })
    }
}

/// Starts instances under their runtime interface client ([`Runtime`]) in the artifact directory, as the
/// component's user, in their own process group (tracked so a crash of the core leaves
/// none), output to the component's log.
struct RicLauncher {
    component: String,
    runtime: Runtime,
    handler: String,
    artifact_dir: PathBuf,
    /// lichen's `greengrass_common` / `greengrass_ipc_python_sdk`, after the artifact on
    /// `PYTHONPATH` (so a ZIP's own copies win, as they would on Greengrass).
    runtime_dir: Option<PathBuf>,
    env: BTreeMap<String, String>,
    run_as: Option<RunAs>,
    log: RotatingLog,
    groups: Arc<GroupRegistry>,
}

impl InstanceLauncher for RicLauncher {
    fn launch(&self, runtime_api: SocketAddr, instance: u64) -> std::io::Result<Child> {
        let mut env = self.env.clone();
        env.insert("AWS_LAMBDA_RUNTIME_API".into(), runtime_api.to_string());
        match &self.runtime {
            Runtime::Python { python } => {
                env.insert("LICHEN_LAMBDA_PYTHON".into(), python.clone());
            }
            Runtime::Node { ric } => {
                if let Some(ric) = ric {
                    env.insert("LICHEN_LAMBDA_NODE_RIC".into(), ric.clone());
                }
                env.insert(
                    "LAMBDA_TASK_ROOT".into(),
                    self.artifact_dir.display().to_string(),
                );
            }
        }
        env.insert("_HANDLER".into(), self.handler.clone());
        env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), self.component.clone());
        env.insert(
            "AWS_GREENGRASS_LAMBDA_WORKER_ID".into(),
            instance.to_string(),
        );
        let mut path = self.artifact_dir.display().to_string();
        if let Some(runtime) = &self.runtime_dir {
            path = format!("{path}:{}", runtime.display());
        }
        if let Some(p) = env.get("PYTHONPATH").filter(|p| !p.is_empty()) {
            path = format!("{path}:{p}");
        }
        env.insert("PYTHONPATH".into(), path);
        let child = process::spawn(StepCommand {
            component: &self.component,
            step: &format!("function[{instance}]"),
            script: self.runtime.script(),
            cwd: &self.artifact_dir,
            env: &env,
            run_as: self.run_as.as_ref(),
            log: &self.log,
        })?;
        if let Some(pid) = child.id() {
            self.groups.track(pid as i32, &self.component);
        }
        Ok(child)
    }

    fn ended(&self, pgid: i32) {
        let groups = self.groups.clone();
        // Already killed and reaped: this only drops it from the journal.
        tokio::spawn(async move { groups.terminate(pgid).await });
    }
}
