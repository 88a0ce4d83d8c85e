//! `lichen`: runs a core and manages it.

mod cmd_check;
mod cmd_cloud;
mod cmd_cloud_certs;
mod cmd_cloud_component;
mod cmd_cloud_core;
mod cmd_cloud_deployment;
mod cmd_cloud_device;
mod cmd_cloud_job;
mod cmd_cloud_registry;
mod cmd_cloud_stream;
mod cmd_completions;
mod cmd_component;
mod cmd_core;
mod cmd_core_install;
mod cmd_deployment;
mod cmd_device;
mod cmd_function;
mod cmd_logs;
mod cmd_ml;
mod cmd_recipe;
mod cmd_shadow;
mod logging;
mod output;
mod quickstart;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `lichen --version`: the version, the commit it was built from and the enabled features.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LICHEN_GIT_COMMIT"),
    ", features: ",
    env!("LICHEN_FEATURES"),
    ")"
);

/// lichen: a Greengrass v2 compatible edge runtime.
///
/// Start a core with `lichen core run --root DIR`, then deploy Greengrass recipes to it with
/// `lichen deployment create`. `lichen quickstart` does both with example components.
#[derive(Parser)]
#[command(name = "lichen", version = VERSION, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, before or after the subcommand.
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// The core's state root. Defaults to $LICHEN_ROOT, then /var/lib/lichen.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print machine-readable JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log lines as `text` or `json` (JSON lines); overrides the config's `logging.format`.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<logging::LogFormat>,
    /// Show the core's INFO logs on the terminal too (`-vv`: DEBUG), not only in its log file.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    pub fn root(&self) -> PathBuf {
        lichen_core::paths::resolve_root(self.root.as_deref())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the core (the device runtime).
    Core {
        #[command(subcommand)]
        command: cmd_core::CoreCommand,
    },
    /// Start a demo cloud and core in ./lichen-demo, the example components deployed from
    /// the one to the other (`--local`: a core alone).
    Quickstart(quickstart::QuickstartArgs),
    /// Create, inspect and cancel deployments.
    Deployment {
        #[command(subcommand)]
        command: cmd_deployment::DeploymentCommand,
    },
    /// List, inspect, restart and stop components.
    Component {
        #[command(subcommand)]
        command: cmd_component::ComponentCommand,
    },
    /// Register and list client devices of the embedded MQTT broker.
    Device {
        #[command(subcommand)]
        command: cmd_device::DeviceCommand,
    },
    /// Show the core's log or a component's log.
    Logs(cmd_logs::LogsArgs),
    /// Work with recipes offline.
    Recipe {
        #[command(subcommand)]
        command: cmd_recipe::RecipeCommand,
    },
    // The help (with examples) is CloudArgs' own doc comment.
    Cloud(cmd_cloud::CloudArgs),
    /// Diagnose this device: configuration, state root, clock, cgroups, the component user,
    /// the sockets, the broker, the cloud endpoint, the spool, BROKEN components.
    Check(cmd_check::CheckArgs),
    /// Print a shell completion script: `lichen completions bash > /etc/bash_completion.d/lichen`.
    Completions(cmd_completions::CompletionsArgs),
    /// Run inferences on the core's ML models and list them.
    Ml {
        #[command(subcommand)]
        command: cmd_ml::MlCommand,
    },
    /// Invoke function components (Lambda, WASM).
    Function {
        #[command(subcommand)]
        command: cmd_function::FunctionCommand,
    },
    /// Get, update, delete and list the core's local shadows.
    Shadow {
        #[command(subcommand)]
        command: cmd_shadow::ShadowCommand,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Core { command } => cmd_core::run(&cli.global, command),
        Command::Quickstart(args) => quickstart::run(&cli.global, args),
        Command::Deployment { command } => cmd_deployment::run(&cli.global, command),
        Command::Component { command } => cmd_component::run(&cli.global, command),
        Command::Device { command } => cmd_device::run(&cli.global, command),
        Command::Logs(args) => cmd_logs::run(&cli.global, args),
        Command::Recipe { command } => cmd_recipe::run(&cli.global, command),
        Command::Cloud(args) => cmd_cloud::run(&cli.global, args),
        Command::Check(args) => cmd_check::run(&cli.global, args),
        Command::Completions(args) => cmd_completions::run::<Cli>(args),
        Command::Ml { command } => cmd_ml::run(&cli.global, command),
        Command::Function { command } => cmd_function::run(&cli.global, command),
        Command::Shadow { command } => cmd_shadow::run(&cli.global, command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
