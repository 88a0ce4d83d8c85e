//! `lichen deployment ...`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest};
use lichen_core::deployment::model::{
    ConfigurationUpdate, DeploymentRecord, DeploymentRequest, DeploymentStatus, FailurePolicy,
};
use serde_json::json;

use crate::Global;
use crate::output;

#[derive(Subcommand)]
pub enum DeploymentCommand {
    /// Deploy components from local recipes and artifacts (like `greengrass-cli deployment create`).
    ///
    /// Example:
    ///   lichen deployment create --recipe-dir recipes --artifact-dir artifacts \
    ///       --merge com.example.Hello=1.0.0 --update-config '{"com.example.Hello":{"MERGE":{"message":"hi"}}}'
    ///
    /// Waits for the result and shows progress; exits non-zero if the deployment fails.
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// Show one deployment, with the reasons for a failure.
    Status {
        /// The deployment id printed by `deployment create`.
        deployment_id: String,
    },
    /// List deployments, newest first.
    List,
    /// Cancel a deployment that has not started yet.
    Cancel { deployment_id: String },
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// Directory of recipe files (*.yaml, *.yml, *.json).
    #[arg(
        long = "recipe-dir",
        visible_alias = "recipeDir",
        short = 'r',
        value_name = "DIR"
    )]
    recipe_dir: Option<PathBuf>,
    /// Directory of artifacts laid out as <component>/<version>/<files>.
    #[arg(
        long = "artifact-dir",
        visible_alias = "artifactDir",
        short = 'a',
        value_name = "DIR"
    )]
    artifact_dir: Option<PathBuf>,
    /// Add or update a root component: NAME=VERSION. Repeatable.
    #[arg(long, short = 'm', value_name = "NAME=VERSION")]
    merge: Vec<String>,
    /// Remove a root component. Repeatable; commas separate several.
    #[arg(long, value_name = "NAME")]
    remove: Vec<String>,
    /// Configuration updates as JSON, or @FILE: {"NAME": {"MERGE": {...}, "RESET": ["/path"]}}.
    #[arg(
        long = "update-config",
        visible_alias = "updateConfig",
        short = 'c',
        value_name = "JSON|@FILE"
    )]
    update_config: Option<String>,
    /// What to do when the deployment fails.
    #[arg(long = "failure-policy", value_enum, default_value = "rollback")]
    failure_policy: PolicyArg,
    /// Deployment group name (default LOCAL_DEPLOYMENT).
    #[arg(long = "group-id", visible_alias = "groupId", short = 'g')]
    group_id: Option<String>,
    /// Run a component as a POSIX user: NAME:posixUser=USER[:GROUP]. Repeatable.
    #[arg(
        long = "run-with",
        visible_alias = "runWith",
        value_name = "NAME:posixUser=USER"
    )]
    run_with: Vec<String>,
    /// Resource limits as JSON: {"NAME": {"memory": KB, "cpus": N}}.
    #[arg(
        long = "system-limits",
        visible_alias = "systemLimits",
        value_name = "JSON"
    )]
    system_limits: Option<String>,
    /// Return as soon as the deployment is queued instead of waiting for its result.
    #[arg(long)]
    no_wait: bool,
    /// With waiting: give up after this many seconds (the deployment continues).
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum PolicyArg {
    Rollback,
    #[value(alias = "do_nothing", alias = "DO_NOTHING")]
    DoNothing,
}

fn parse_request(args: &CreateArgs) -> anyhow::Result<DeploymentRequest> {
    let mut req = DeploymentRequest {
        group_name: args.group_id.clone(),
        failure_policy: match args.failure_policy {
            PolicyArg::Rollback => FailurePolicy::Rollback,
            PolicyArg::DoNothing => FailurePolicy::DoNothing,
        },
        ..Default::default()
    };
    // Paths are resolved here: the core runs in another working directory.
    let absolute = |p: &PathBuf| -> anyhow::Result<PathBuf> {
        std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
    };
    req.recipe_dir = args.recipe_dir.as_ref().map(absolute).transpose()?;
    req.artifact_dir = args.artifact_dir.as_ref().map(absolute).transpose()?;
    for m in &args.merge {
        let (name, version) = m
            .split_once('=')
            .with_context(|| format!("--merge {m:?}: expected NAME=VERSION"))?;
        if name.is_empty() || version.is_empty() {
            bail!("--merge {m:?}: expected NAME=VERSION");
        }
        req.root_components_to_add
            .insert(name.into(), version.into());
    }
    for r in &args.remove {
        req.root_components_to_remove.extend(
            r.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    if let Some(text) = &args.update_config {
        let raw = match text.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("reading --update-config file {file}"))?,
            None => text.clone(),
        };
        let updates: BTreeMap<String, ConfigurationUpdate> = serde_json::from_str(&raw).context(
            "--update-config: expected {\"NAME\": {\"MERGE\": {...}, \"RESET\": [\"/path\"]}}",
        )?;
        req.configuration_updates = updates;
    }
    for rw in &args.run_with {
        let (name, rest) = rw
            .split_once(':')
            .with_context(|| format!("--run-with {rw:?}: expected NAME:posixUser=USER[:GROUP]"))?;
        let user = rest
            .strip_prefix("posixUser=")
            .with_context(|| format!("--run-with {rw:?}: expected NAME:posixUser=USER[:GROUP]"))?;
        req.run_with.entry(name.into()).or_default().posix_user = Some(user.into());
    }
    if let Some(limits) = &args.system_limits {
        let parsed: BTreeMap<String, lichen_core::deployment::model::ResourceLimits> =
            serde_json::from_str(limits)
                .context("--system-limits: expected {\"NAME\": {\"memory\": KB, \"cpus\": N}}")?;
        for (name, l) in parsed {
            req.run_with.entry(name).or_default().system_resource_limits = Some(l);
        }
    }
    if req.root_components_to_add.is_empty()
        && req.root_components_to_remove.is_empty()
        && req.configuration_updates.is_empty()
    {
        bail!("nothing to deploy: give --merge NAME=VERSION, --remove NAME or --update-config");
    }
    Ok(req)
}

pub fn run(global: &Global, command: DeploymentCommand) -> anyhow::Result<ExitCode> {
    let root = global.root();
    match command {
        DeploymentCommand::Create(args) => {
            let req = parse_request(&args)?;
            let mut client = ControlClient::connect(&root)?;
            let ControlReply::DeploymentCreated(created) =
                client.request(&ControlRequest::DeploymentCreate(req))?
            else {
                bail!("the core sent an unexpected reply to deployment.create");
            };
            let id = created.deployment_id.clone();
            if args.no_wait {
                if global.json {
                    output::json(&created);
                } else {
                    println!(
                        "Deployment {id} queued. Follow it with: lichen deployment status {id}"
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let record = wait(
                &mut client,
                &id,
                Duration::from_secs(args.timeout),
                !global.json,
            )?;
            if global.json {
                output::json(&record);
            } else {
                output::deployment_details(&record);
            }
            Ok(if record.status == DeploymentStatus::Succeeded {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DeploymentCommand::Status { deployment_id } => {
            let mut client = ControlClient::connect(&root)?;
            let record = deployment_status(&mut client, deployment_id)?;
            if global.json {
                output::json(&record);
            } else {
                output::deployment_details(&record);
            }
            Ok(ExitCode::SUCCESS)
        }
        DeploymentCommand::List => {
            let mut client = ControlClient::connect(&root)?;
            let ControlReply::Deployments(list) =
                client.request(&ControlRequest::DeploymentList {})?
            else {
                bail!("the core sent an unexpected reply to deployment.list");
            };
            if global.json {
                output::json(&list);
            } else {
                if list.is_empty() {
                    println!("No deployments yet.");
                }
                for d in &list {
                    output::deployment_line(d);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeploymentCommand::Cancel { deployment_id } => {
            let mut client = ControlClient::connect(&root)?;
            client.request(&ControlRequest::DeploymentCancel {
                deployment_id: deployment_id.clone(),
            })?;
            if !global.json {
                println!("Deployment {deployment_id} canceled.");
            } else {
                output::json(&json!({ "deploymentId": deployment_id, "status": "CANCELED" }));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Polls until the deployment ends, showing its progress on a terminal.
fn wait(
    client: &mut ControlClient,
    id: &str,
    timeout: Duration,
    show: bool,
) -> anyhow::Result<DeploymentRecord> {
    let bar = if show {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b.set_message(format!("deployment {id} queued"));
        Some(b)
    } else {
        None
    };
    let deadline = std::time::Instant::now() + timeout;
    // Polls every 20 ms for the first 3 s, so that a quick deployment is reported when it
    // ends rather than up to 200 ms later (a status request is one small in-memory read),
    // then every 200 ms.
    let started = std::time::Instant::now();
    loop {
        let record = deployment_status(client, id.to_string())?;
        if record.status.is_final() {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Ok(record);
        }
        if let Some(b) = &bar {
            b.set_message(
                record
                    .progress
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", record.status)),
            );
        }
        if std::time::Instant::now() > deadline {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            bail!(
                "deployment {id} still {:?} after {}s; it continues in the core",
                record.status,
                timeout.as_secs()
            );
        }
        let pause = if started.elapsed() < Duration::from_secs(3) {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(200)
        };
        std::thread::sleep(pause);
    }
}

fn deployment_status(
    client: &mut ControlClient,
    deployment_id: String,
) -> anyhow::Result<DeploymentRecord> {
    match client.request(&ControlRequest::DeploymentStatus { deployment_id })? {
        ControlReply::Deployment(record) => Ok(*record),
        _ => bail!("the core sent an unexpected reply to deployment.status"),
    }
}
