//! `lichen shadow get|update|delete|list THING [--name N]`: the core's local shadows, over the
//! `shadow.*` control operations (served by the node's shadow service).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use lichen_core::control::client::ControlClient;
use lichen_core::control::{ControlReply, ControlRequest};

use crate::Global;
use crate::output;

#[derive(Subcommand)]
pub enum ShadowCommand {
    /// Print a shadow's document (state with delta, metadata, version).
    Get {
        thing: String,
        /// A named shadow (default: the classic one).
        #[arg(long)]
        name: Option<String>,
    },
    /// Apply an update request, e.g. '{"state":{"desired":{"color":"red"}}}' (`-` reads stdin).
    Update {
        thing: String,
        document: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a shadow.
    Delete {
        thing: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List a thing's shadows with their versions and cloud sync state.
    List { thing: String },
}

pub fn run(global: &Global, command: ShadowCommand) -> anyhow::Result<ExitCode> {
    let request = match &command {
        ShadowCommand::Get { thing, name } => ControlRequest::ShadowGet {
            thing: thing.clone(),
            name: name.clone(),
        },
        ShadowCommand::Update {
            thing,
            document,
            name,
        } => {
            let text = if document == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("reading the document from stdin")?
            } else {
                document.clone()
            };
            let document: serde_json::Value =
                serde_json::from_str(&text).context("the update document is not JSON")?;
            ControlRequest::ShadowUpdate {
                thing: thing.clone(),
                name: name.clone(),
                document,
            }
        }
        ShadowCommand::Delete { thing, name } => ControlRequest::ShadowDelete {
            thing: thing.clone(),
            name: name.clone(),
        },
        ShadowCommand::List { thing } => ControlRequest::ShadowList {
            thing: thing.clone(),
        },
    };
    let mut client = ControlClient::connect(&global.root())?;
    let reply = client.request(&request)?;
    if global.json {
        output::json(&reply);
        return Ok(ExitCode::SUCCESS);
    }
    match reply {
        ControlReply::ShadowDocument(doc) => match command {
            ShadowCommand::Delete { .. } => {
                println!("Deleted (version {}).", doc["version"]);
            }
            _ => println!(
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
            ),
        },
        ControlReply::Shadows(list) => {
            if list.shadows.is_empty() {
                println!("No shadows for {}.", list.thing);
            }
            for s in list.shadows {
                let name = s.name.as_deref().unwrap_or("(classic)");
                let state = if s.deleted { "deleted" } else { "live" };
                let sync = match &s.sync {
                    None => "not synced".to_string(),
                    Some(y) => format!(
                        "{} {} cloud v{}{}",
                        y.direction,
                        if y.pending { "pending" } else { "in sync" },
                        y.cloud_version,
                        y.last_error
                            .as_deref()
                            .map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default()
                    ),
                };
                println!("{name}  v{}  {state}  {sync}", s.version);
            }
        }
        _ => bail!("the core sent an unexpected reply to {}", request.op()),
    }
    Ok(ExitCode::SUCCESS)
}
