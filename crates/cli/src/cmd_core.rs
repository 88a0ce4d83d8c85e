//! `lichen core run` and `lichen quickstart --local`: run a device (composed by `lichen-node`) until
//! SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use lichen_core::CoreHandle;
use lichen_core::deployment::model::{DeploymentRequest, DeploymentStatus};
use lichen_core::paths::RootLayout;
use lichen_core::settings::Settings;

use crate::Global;
use crate::logging::{LogFormat, Terminal, init_logging};

#[derive(Subcommand)]
pub enum CoreCommand {
    /// Run a core in the foreground on --root. Stop it with SIGTERM or Ctrl-C: components
    /// get their Shutdown steps and every process they started is ended.
    Run(RunArgs),
    /// Show the running core on --root: pid, version, thing name, components, the cloud
    /// connection (endpoint, thing, connected/connecting/error with the last error), and the
    /// disk state of the root's filesystem (free bytes; a warning when it runs low).
    Status,
    /// Install the core as a systemd service: the unit, ggc_user:ggc_group, the admin group
    /// `lichen`, /etc/lichen (default config.yaml) and /var/lib/lichen (as the .deb does).
    Install(crate::cmd_core_install::InstallArgs),
    /// Reverse `lichen core install` (the config and state root stay unless --purge).
    Uninstall(crate::cmd_core_install::UninstallArgs),
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Core settings (YAML or JSON): thingName, posixUser, logging, ipc, broker, ...
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The device's thing name (overrides the config file; default: the host name).
    #[arg(long, value_name = "NAME")]
    thing_name: Option<String>,
}

fn load_settings(args: &RunArgs) -> anyhow::Result<Settings> {
    let mut settings = match &args.config {
        Some(path) => Settings::load(path)?,
        None => Settings::default(),
    };
    if let Some(name) = &args.thing_name {
        settings.thing_name = name.clone();
    }
    Ok(settings)
}

/// `lichen core status`: the core's own status, with the cloud service's when it runs one.
fn status(global: &Global) -> anyhow::Result<ExitCode> {
    use lichen_core::control::client::{ClientError, ControlClient};
    use lichen_core::control::{ControlReply, ControlRequest};
    let mut client = ControlClient::connect(&global.root())?;
    let mut status = match client.request(&ControlRequest::CoreStatus {})? {
        ControlReply::CoreStatus(s) => s,
        other => anyhow::bail!("unexpected reply to core.status: {other:?}"),
    };
    status.cloud = match client.request(&ControlRequest::CloudStatus {}) {
        Ok(ControlReply::Cloud(cloud)) => Some(cloud),
        Ok(other) => anyhow::bail!("unexpected reply to cloud.status: {other:?}"),
        // No cloud section, or a core without the cloud service.
        Err(ClientError::Remote { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if global.json {
        crate::output::json(&status);
    } else {
        crate::output::core_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Two workers are enough for the control plane and keep the idle footprint small.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(512 * 1024)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A device on `root`, composed by `lichen-node` with its default services.
pub(crate) async fn start_node(
    root: &Path,
    settings: Settings,
) -> anyhow::Result<lichen_node::Node> {
    let options = lichen_node::NodeOptions {
        root: root.to_path_buf(),
        settings,
    };
    Ok(lichen_node::Node::start(options, lichen_node::default_services()).await?)
}

/// SIGTERM and SIGINT, installed before anything starts so that a signal arriving during
/// start-up still leads to a clean stop.
pub(crate) struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub(crate) fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    pub(crate) async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

pub fn run(global: &Global, command: CoreCommand) -> anyhow::Result<ExitCode> {
    let args = match command {
        CoreCommand::Run(args) => args,
        CoreCommand::Status => return status(global),
        CoreCommand::Install(args) => return crate::cmd_core_install::install(args),
        CoreCommand::Uninstall(args) => return crate::cmd_core_install::uninstall(args),
    };
    let started = Instant::now();
    let root = global.root();
    let settings = load_settings(&args)?;
    let layout = RootLayout::new(&root);
    let format = LogFormat::resolve(global.log_format, &settings)?;
    init_logging(
        &layout,
        &settings,
        format,
        Terminal::Service,
        global.verbose,
    )?;
    runtime()?.block_on(async {
        let mut signals = StopSignals::install()?;
        let node = start_node(&root, settings).await?;
        tracing::info!(
            root = %layout.root().display(),
            pid = std::process::id(),
            ready_ms = started.elapsed().as_millis() as u64,
            "lichen core ready"
        );
        let signal = signals.wait().await;
        tracing::info!(%signal, "stopping");
        node.shutdown().await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// The user running the CLI, from the owner of `/proc/self`; `None` (the core's default
/// user then applies) when /proc is not there.
pub(crate) fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Example components, compiled in so quickstart works from any directory.
pub(crate) const EXAMPLES: &[(&str, &str)] = &[
    (
        "com.example.HelloWorld-1.0.0.yaml",
        include_str!("../../../examples/recipes/com.example.HelloWorld-1.0.0.yaml"),
    ),
    (
        "com.example.Heartbeat-1.0.0.yaml",
        include_str!("../../../examples/recipes/com.example.Heartbeat-1.0.0.yaml"),
    ),
    (
        "com.example.Dashboard-1.0.0.yaml",
        include_str!("../../../examples/recipes/com.example.Dashboard-1.0.0.yaml"),
    ),
];
const EXAMPLE_ARTIFACTS: &[(&str, &str)] = &[(
    "com.example.HelloWorld/1.0.0/hello.sh",
    include_str!("../../../examples/artifacts/com.example.HelloWorld/1.0.0/hello.sh"),
)];

pub(crate) fn write_examples(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let recipes = dir.join("recipes");
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&recipes)?;
    for (name, text) in EXAMPLES {
        std::fs::write(recipes.join(name), text)?;
    }
    for (path, text) in EXAMPLE_ARTIFACTS {
        let p = artifacts.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text)?;
    }
    Ok((recipes, artifacts))
}

/// `lichen quickstart --local`: one core on `root`, the examples deployed to it locally (no
/// cloud).
pub fn quickstart_local(global: &Global, root: PathBuf) -> anyhow::Result<ExitCode> {
    let layout = RootLayout::new(&root);
    // The demo runs in the user's own directory, which the default component user (as root:
    // ggc_user or nobody) may not be able to reach: its components run as whoever ran it.
    let settings = Settings {
        posix_user: current_uid().map(|u| u.to_string()).unwrap_or_default(),
        ..Settings::default()
    };
    // The terminal shows the summary; the core's INFO logs go to its file (unless -v).
    let format = LogFormat::resolve(global.log_format, &settings)?;
    init_logging(&layout, &settings, format, Terminal::Quiet, global.verbose)?;
    runtime()?.block_on(async {
        let mut signals = StopSignals::install()?;
        let node = start_node(layout.root(), settings).await?;
        let handle = node.handle().clone();
        let (recipes, artifacts) = write_examples(&layout.root().join("quickstart"))?;
        let mut request = DeploymentRequest {
            recipe_dir: Some(recipes),
            artifact_dir: Some(artifacts),
            ..Default::default()
        };
        for (file, _) in EXAMPLES {
            if let Some((name, version)) = file.trim_end_matches(".yaml").rsplit_once('-') {
                request
                    .root_components_to_add
                    .insert(name.to_string(), version.to_string());
            }
        }
        let id = handle.create_deployment(request).await?;
        let outcome = wait_deployment(&handle, &id).await;
        print_summary(&handle, &layout, &root, &id, outcome);
        let signal = signals.wait().await;
        println!("\n{signal}: stopping the demo core…");
        node.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

async fn wait_deployment(
    handle: &CoreHandle,
    id: &str,
) -> Option<lichen_core::deployment::model::DeploymentRecord> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    for _ in 0..3000 {
        if let Ok(r) = handle.deployment(id) {
            if r.status.is_final() {
                bar.finish_and_clear();
                return Some(r);
            }
            bar.set_message(r.progress.unwrap_or_else(|| "queued".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bar.finish_and_clear();
    None
}

fn print_summary(
    handle: &CoreHandle,
    layout: &RootLayout,
    root: &Path,
    id: &str,
    outcome: Option<lichen_core::deployment::model::DeploymentRecord>,
) {
    match outcome {
        Some(r) if r.status == DeploymentStatus::Succeeded => {
            println!("lichen demo core is running in {}", layout.root().display());
        }
        Some(r) => println!(
            "the example deployment {id} ended {:?}: {}",
            r.status,
            r.failure_cause.unwrap_or_default()
        ),
        None => println!("the example deployment {id} is still running"),
    }
    println!();
    crate::output::component_table(&handle.list_components());
    println!();
    println!(
        "Logs:        {}/<component>.log  (core: {})",
        layout.logs_dir().display(),
        layout.core_log().display()
    );
    println!(
        "Try:         lichen --root {} component list",
        root.display()
    );
    println!(
        "             lichen --root {} logs com.example.HelloWorld --follow",
        root.display()
    );
    println!("Stop:        Ctrl-C");
}
